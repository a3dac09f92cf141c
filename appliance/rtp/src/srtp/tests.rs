//! Behaviour of contexts and of the inbound side: round trips, wrap, reordering, tampering, replay, rekey.

use std::time::{Duration, Instant};

use super::*;

fn key(suite: SrtpSuite) -> SrtpMasterKey {
    SrtpMasterKey::generate(suite).unwrap_or_else(|error| panic!("{error}"))
}

/// An RTP packet of `ssrc` with sequence number `seq`; odd sequence numbers also carry two CSRCs, a
/// header extension and padding.
fn rtp(ssrc: u32, seq: u16) -> Vec<u8> {
    let fancy = seq % 2 == 1;
    let mut packet = vec![if fancy { 0xB2 } else { 0x80 }, 0];
    packet.extend(seq.to_be_bytes());
    packet.extend((u32::from(seq) * 160).to_be_bytes());
    packet.extend(ssrc.to_be_bytes());
    if fancy {
        packet.extend([0, 0, 0, 1, 0, 0, 0, 2, 0xBE, 0xDE, 0, 1, 0x10, 0xAA, 0, 0]);
    }
    packet.extend((0..160).map(|i| (i as u16 ^ seq) as u8));
    if fancy {
        packet.extend([0, 0, 3]);
    }
    packet
}

fn protect(sender: &mut SrtpContext, packet: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    sender
        .protect_rtp(packet, &mut out)
        .unwrap_or_else(|error| panic!("{error}"));
    out
}

#[test]
fn suite_names_and_lengths() {
    for suite in SrtpSuite::ALL {
        assert_eq!(SrtpSuite::from_sdes_name(suite.sdes_name()), Some(suite));
        assert_eq!(suite.to_string(), suite.sdes_name());
        let key = key(suite);
        assert_eq!(
            key.key_and_salt().len(),
            suite.master_key_len() + suite.master_salt_len()
        );
        assert_eq!(key.suite(), suite);
    }
    assert_eq!(SrtpSuite::from_sdes_name("aes_cm_128_hmac_sha1_80"), None);
    assert_eq!(SrtpSuite::from_sdes_name("AES_256_CM_HMAC_SHA1_80"), None);
    assert_eq!(
        (
            SrtpSuite::AeadAes256Gcm.master_key_len(),
            SrtpSuite::AeadAes256Gcm.master_salt_len()
        ),
        (32, 12)
    );
    assert_eq!(
        SrtpMasterKey::new(SrtpSuite::AeadAes128Gcm, &[7; 30]),
        Err(SrtpError::BadKeyLength {
            suite: SrtpSuite::AeadAes128Gcm,
            expected: 28,
            actual: 30
        })
    );
    let key =
        SrtpMasterKey::new(SrtpSuite::AesCm128HmacSha1_80, &[0xAB; 30]).unwrap_or_else(|e| panic!("{e}"));
    let debug = format!("{key:?}");
    assert!(
        !debug.contains("171") && !debug.to_lowercase().contains("ab,"),
        "{debug}"
    );
    assert_ne!(
        SrtpMasterKey::generate(SrtpSuite::AeadAes128Gcm),
        SrtpMasterKey::generate(SrtpSuite::AeadAes128Gcm)
    );
}

#[test]
fn round_trips_across_the_sequence_wrap_with_reordering() {
    for suite in SrtpSuite::ALL {
        let key = key(suite);
        let mut sender = SrtpContext::new(&key, SrtpConfig::default());
        let mut receiver = SrtpContext::new(&key, SrtpConfig::default());
        // Four times over the wrap (ROC 0 → 4), every packet near each wrap, big strides in between.
        let mut seqs: Vec<u16> = (65_000..=65_535).collect();
        for _ in 0..3 {
            seqs.extend(0..600);
            seqs.extend([16_000, 32_000, 48_000, 64_000]);
            seqs.extend(65_000..=65_535);
        }
        seqs.extend(0..100);
        let mut packets: Vec<(Vec<u8>, Vec<u8>)> = seqs
            .iter()
            .map(|&seq| {
                let plain = rtp(0x1234_5678, seq);
                let protected = protect(&mut sender, &plain);
                (plain, protected)
            })
            .collect();
        // Reorder across each wrap (65535 arrives after 0 and 1) and elsewhere.
        for wrap in (0..packets.len()).filter(|&n| seqs[n] == 0) {
            packets.swap(wrap - 1, wrap + 1);
        }
        for chunk in packets.chunks_mut(50).filter(|chunk| chunk.len() > 12) {
            chunk.swap(10, 12);
        }
        let mut out = Vec::new();
        for (plain, protected) in &packets {
            assert_eq!(receiver.unprotect_rtp(protected, &mut out), Ok(()), "{suite}");
            assert_eq!(&out, plain);
        }
        // The ROC is 3 by now: a packet encrypted under ROC 0 with a current sequence number fails.
        let mut stale_sender = SrtpContext::new(&key, SrtpConfig::default());
        let late = protect(&mut stale_sender, &rtp(0x1234_5678, 200));
        assert!(
            receiver
                .unprotect_rtp(&late, &mut out)
                .is_err_and(|e| e.is_auth_failure())
        );
    }
}

#[test]
fn any_flipped_bit_fails_and_leaves_state_alone() {
    for suite in SrtpSuite::ALL {
        let key = key(suite);
        let mut sender = SrtpContext::new(&key, SrtpConfig::default());
        let mut receiver = SrtpContext::new(&key, SrtpConfig::default());
        let mut out = Vec::new();
        for seq in [65_534, 65_535] {
            let protected = protect(&mut sender, &rtp(9, seq));
            assert_eq!(receiver.unprotect_rtp(&protected, &mut out), Ok(()));
        }
        let plain = rtp(9, 1); // ROC 1
        let genuine = protect(&mut sender, &plain);
        for byte in 0..genuine.len() {
            for bit in 0..8 {
                let mut tampered = genuine.clone();
                tampered[byte] ^= 1 << bit;
                let result = receiver.unprotect_rtp(&tampered, &mut out);
                assert!(result.is_err(), "{suite} byte {byte} bit {bit}");
                assert!(out.is_empty());
            }
        }
        assert_eq!(receiver.unprotect_rtp(&genuine, &mut out), Ok(()));
        assert_eq!(out, plain);
    }
}

#[test]
fn replays_and_stale_packets_are_refused() {
    for suite in SrtpSuite::ALL {
        let key = key(suite);
        let config = SrtpConfig {
            replay_window: 64,
            max_ssrcs: 8,
        };
        let mut sender = SrtpContext::new(&key, config);
        let mut receiver = SrtpContext::new(&key, config);
        let mut out = Vec::new();
        let packets: Vec<Vec<u8>> = (1000..1200)
            .map(|seq| protect(&mut sender, &rtp(5, seq)))
            .collect();
        assert_eq!(receiver.unprotect_rtp(&packets[0], &mut out), Ok(()));
        assert_eq!(
            receiver.unprotect_rtp(&packets[0], &mut out),
            Err(SrtpError::Replayed)
        );
        assert!(out.is_empty());
        assert_eq!(receiver.unprotect_rtp(&packets[150], &mut out), Ok(()));
        // 1001 is 149 behind 1150: outside a 64-packet window.
        assert_eq!(
            receiver.unprotect_rtp(&packets[1], &mut out),
            Err(SrtpError::TooOld)
        );
        // 1100 is within it and new.
        assert_eq!(receiver.unprotect_rtp(&packets[100], &mut out), Ok(()));
        assert_eq!(
            receiver.unprotect_rtp(&packets[100], &mut out),
            Err(SrtpError::Replayed)
        );
        assert!(SrtpError::TooOld.is_replay() && SrtpError::Replayed.is_replay());
    }
}

#[test]
fn truncated_and_garbage_packets_are_errors() {
    for suite in SrtpSuite::ALL {
        let key = key(suite);
        let mut sender = SrtpContext::new(&key, SrtpConfig::default());
        let mut receiver = SrtpContext::new(&key, SrtpConfig::default());
        let mut out = Vec::new();
        let genuine = protect(&mut sender, &rtp(3, 7));
        for len in 0..genuine.len() {
            assert!(
                receiver.unprotect_rtp(&genuine[..len], &mut out).is_err(),
                "{suite} {len}"
            );
        }
        assert!(matches!(
            receiver.unprotect_rtp(&genuine[..12], &mut out),
            Err(SrtpError::TooShort { .. } | SrtpError::Malformed(_))
        ));
        assert!(matches!(
            receiver.unprotect_rtp(&[0x81, 200, 0, 1], &mut out),
            Err(SrtpError::Malformed(RtpError::TooShort { len: 4 }))
        ));
        assert_eq!(receiver.unprotect_rtp(&genuine, &mut out), Ok(()));
        assert!(sender.protect_rtp(&[0x80, 0], &mut out).is_err());
    }
}

#[test]
fn ssrcs_are_tracked_separately_and_evicted_least_recent_first() {
    let key = key(SrtpSuite::AesCm128HmacSha1_32);
    let config = SrtpConfig {
        replay_window: 1024,
        max_ssrcs: 2,
    };
    let mut sender = SrtpContext::new(&key, config);
    let mut receiver = SrtpContext::new(&key, config);
    let mut out = Vec::new();
    let a = protect(&mut sender, &rtp(1, 10));
    let b = protect(&mut sender, &rtp(2, 10));
    let c = protect(&mut sender, &rtp(3, 10));
    for packet in [&a, &b, &c] {
        assert_eq!(receiver.unprotect_rtp(packet, &mut out), Ok(()));
    }
    // SSRC 1 was evicted by 3: its replay state is gone; 3 is still known.
    assert_eq!(receiver.unprotect_rtp(&a, &mut out), Ok(()));
    assert_eq!(receiver.unprotect_rtp(&c, &mut out), Err(SrtpError::Replayed));
    assert_eq!(
        format!("{receiver:?}"),
        "SrtpContext { suite: AesCm128HmacSha1_32, ssrcs: 2, .. }"
    );
}

#[test]
fn rekey_keeps_the_old_key_for_its_grace_period() {
    let start = Instant::now();
    let grace = Duration::from_secs(2);
    let old_key = key(SrtpSuite::AesCm128HmacSha1_80);
    let new_key = key(SrtpSuite::AeadAes128Gcm);
    let mut old_sender = SrtpContext::new(&old_key, SrtpConfig::default());
    let mut new_sender = SrtpContext::new(&new_key, SrtpConfig::default());
    let mut inbound = SrtpInbound::new(&old_key, SrtpConfig::default());
    let mut out = Vec::new();

    let first = protect(&mut old_sender, &rtp(8, 1));
    assert_eq!(inbound.unprotect(start, &first, &mut out), Ok(()));
    // Re-offers repeat the key: state (here, the replay window) is kept.
    inbound.rekey(start, &old_key.clone(), grace);
    assert_eq!(
        inbound.unprotect(start, &first, &mut out),
        Err(SrtpError::Replayed)
    );

    inbound.rekey(start, &new_key, grace);
    let in_flight = protect(&mut old_sender, &rtp(8, 2));
    let late = protect(&mut old_sender, &rtp(8, 3));
    let fresh = protect(&mut new_sender, &rtp(8, 4));
    assert_eq!(
        inbound.unprotect(start + Duration::from_millis(10), &fresh, &mut out),
        Ok(())
    );
    assert_eq!(out, rtp(8, 4));
    assert_eq!(
        inbound.unprotect(start + Duration::from_millis(20), &in_flight, &mut out),
        Ok(())
    );
    assert_eq!(out, rtp(8, 2));
    // A replay under the old key is reported as such, not as an authentication failure.
    assert_eq!(
        inbound.unprotect(start + Duration::from_millis(30), &in_flight, &mut out),
        Err(SrtpError::Replayed)
    );
    assert_eq!(
        inbound.unprotect(start + grace, &late, &mut out),
        Err(SrtpError::AuthenticationFailed)
    );
    assert_eq!(
        inbound
            .unprotect(start + grace, &[0x80, 0], &mut out)
            .map_err(|e| e.is_auth_failure()),
        Err(false)
    );
    let mut rtcp = vec![0x81, 200, 0, 6];
    rtcp.extend([0; 24]);
    assert!(matches!(
        inbound.unprotect(start + grace, &rtcp, &mut out),
        Err(SrtpError::Malformed(RtpError::Rtcp { packet_type: 200 }))
    ));
    assert_eq!(
        inbound.stats(),
        SrtpStats {
            authenticated: 3,
            auth_failures: 1,
            replays: 2,
            malformed: 1,
        }
    );
}

#[test]
fn rekey_back_to_the_previous_key_keeps_its_replay_state() {
    let start = Instant::now();
    let grace = Duration::from_secs(5);
    let key_a = key(SrtpSuite::AesCm128HmacSha1_80);
    let key_b = key(SrtpSuite::AesCm128HmacSha1_32);
    let mut sender_a = SrtpContext::new(&key_a, SrtpConfig::default());
    let mut inbound = SrtpInbound::new(&key_a, SrtpConfig::default());
    let mut out = Vec::new();
    let captured = protect(&mut sender_a, &rtp(8, 1));
    assert_eq!(inbound.unprotect(start, &captured, &mut out), Ok(()));
    inbound.rekey(start, &key_b, grace);
    inbound.rekey(start + Duration::from_secs(1), &key_a, grace);
    // A→B→A: the packet captured under A is still a replay, not a fresh packet.
    assert_eq!(
        inbound.unprotect(start + Duration::from_secs(2), &captured, &mut out),
        Err(SrtpError::Replayed)
    );
    let next = protect(&mut sender_a, &rtp(8, 2));
    assert_eq!(
        inbound.unprotect(start + Duration::from_secs(2), &next, &mut out),
        Ok(())
    );
}
