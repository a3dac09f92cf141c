//! Entry point for the `srtp_unprotect` fuzz target: everything SRTP peer bytes can reach in this crate,
//! in one call. Lives here so the fuzz crate stays a thin wrapper.

use std::time::{Duration, Instant};

use crate::{SrtpConfig, SrtpContext, SrtpError, SrtpInbound, SrtpMasterKey, SrtpSuite};

/// Reads `data` as `[suite, flags, ...]`:
/// - the rest is split into `[length, datagram…]` records, each unprotected as arbitrary bytes by an
///   inbound side (which is rekeyed half-way) — nothing may panic and the stats must add up;
/// - the same bytes then shape a genuine RTP packet (header fields, CSRCs, extension, payload), which is
///   protected and mutated by input-chosen `[position, xor]` pairs: unprotecting the mutated packet must
///   fail unless no byte changed, in which case it must give back exactly the original; after that the
///   genuine packet must still unprotect (state untouched by failures), and its replay must be refused.
pub fn srtp_unprotect(start: Instant, data: &[u8]) {
    let [selector, flags, rest @ ..] = data else {
        return;
    };
    let suite = SrtpSuite::ALL[usize::from(*selector) % SrtpSuite::ALL.len()];
    let key_len = suite.master_key_len() + suite.master_salt_len();
    let material: Vec<u8> = (0..key_len)
        .map(|i| (i as u8).wrapping_mul(37) ^ selector)
        .collect();
    let Ok(key) = SrtpMasterKey::new(suite, &material) else {
        panic!("key of the suite's own length refused");
    };
    let config = SrtpConfig {
        replay_window: u16::from(*flags) * 64,
        max_ssrcs: usize::from(flags % 4),
    };

    // Arbitrary bytes.
    let mut inbound = SrtpInbound::new(&key, config);
    let mut out = Vec::new();
    let mut now = start;
    let mut calls = 0u64;
    let mut records = rest;
    while let [length, tail @ ..] = records {
        let (datagram, next) = tail.split_at(usize::from(*length).min(tail.len()));
        now += Duration::from_millis(u64::from(*length));
        if calls == 4 {
            let Ok(other) = SrtpMasterKey::new(suite, &material.iter().map(|b| !b).collect::<Vec<_>>())
            else {
                panic!("key of the suite's own length refused");
            };
            inbound.rekey(now, &other, Duration::from_millis(500));
        }
        match inbound.unprotect(now, datagram, &mut out) {
            Ok(()) => assert!(out.len() < datagram.len()),
            Err(_) => assert!(out.is_empty()),
        }
        calls += 1;
        records = next;
    }
    let stats = inbound.stats();
    assert!(stats.authenticated + stats.auth_failures + stats.replays + stats.malformed <= calls);

    // Mutated genuine packets.
    let byte = |at: usize| rest.get(at).copied().unwrap_or(0);
    let csrcs = byte(0) % 4;
    let extension_words = byte(1) % 3;
    let mut plain = vec![
        0x80 | csrcs | if extension_words > 0 { 0x10 } else { 0 },
        byte(2) & 0x7F,
    ];
    plain.extend([byte(3), byte(4)]); // sequence number
    plain.extend([byte(5), byte(6), byte(7), byte(8)]); // timestamp
    plain.extend([byte(9), byte(10), byte(11), byte(12)]); // SSRC
    plain.extend((0..4 * usize::from(csrcs)).map(|i| byte(13 + i)));
    if extension_words > 0 {
        plain.extend([0xBE, 0xDE, 0, extension_words]);
        plain.extend((0..4 * usize::from(extension_words)).map(|i| byte(30 + i)));
    }
    let payload_len = usize::from(byte(40));
    plain.extend(rest.iter().copied().cycle().take(payload_len.min(rest.len() * 4)));

    let mut sender = SrtpContext::new(&key, config);
    let mut receiver = SrtpContext::new(&key, config);
    let mut genuine = Vec::new();
    if let Err(error) = sender.protect_rtp(&plain, &mut genuine) {
        panic!("a well-formed RTP packet could not be protected: {error}");
    }
    let mut tampered = genuine.clone();
    for pair in rest.get(41..).unwrap_or_default().chunks_exact(2).take(8) {
        let position = usize::from(pair[0]) % tampered.len();
        if let Some(target) = tampered.get_mut(position) {
            *target ^= pair[1];
        }
    }
    match receiver.unprotect_rtp(&tampered, &mut out) {
        Ok(()) => {
            assert_eq!(tampered, genuine, "a tampered packet was accepted");
            assert_eq!(out, plain);
        }
        Err(error) => {
            assert_ne!(tampered, genuine, "a genuine packet was refused: {error}");
            assert!(out.is_empty());
            assert_eq!(receiver.unprotect_rtp(&genuine, &mut out), Ok(()));
            assert_eq!(out, plain);
        }
    }
    assert!(matches!(
        receiver.unprotect_rtp(&genuine, &mut out),
        Err(SrtpError::Replayed)
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn srtp_unprotect_holds_its_invariants_on_sample_inputs() {
        let start = Instant::now();
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        for len in [0, 1, 2, 3, 20, 45, 60, 120, 400] {
            for _ in 0..20 {
                let input: Vec<u8> = (0..len)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        seed as u8
                    })
                    .collect();
                srtp_unprotect(start, &input);
            }
        }
    }
}
