//! Throughput of the receive path, packet by packet: parse → `Receiver` → decode, for PCMU and G.722
//! streams of 20 ms packets with one reordered pair per 100 packets, and SRTP unprotection alone for each
//! suite (the same PCMU packets, protected beforehand). Run with
//! `cargo bench -p airlock-rtp --bench pipeline`; prints packets per second for each stage.

#![allow(clippy::print_stdout, reason = "a benchmark reports on stdout")]

use std::hint::black_box;
use std::time::{Duration, Instant};

use airlock_media::g722::G722Encoder;
use airlock_media::{Codec, Decoder, g711};
use airlock_rtp::{
    Receiver, ReceiverConfig, ReceiverOutput, RtpPacket, SrtpConfig, SrtpContext, SrtpMasterKey, SrtpSuite,
};

const PACKETS: usize = 200_000;
const PTIME: Duration = Duration::from_millis(20);

/// 20 ms packets of a 440 Hz tone in `codec`, sequence-ordered except one swapped pair per 100.
fn stream(codec: Codec) -> Vec<Vec<u8>> {
    let samples_per_packet = (codec.pcm_sample_rate() / 50) as usize;
    let clock_per_packet = codec.rtp_clock_rate() / 50;
    let mut encoder = G722Encoder::new();
    let mut packets: Vec<Vec<u8>> = (0..PACKETS)
        .map(|n| {
            let pcm: Vec<i16> = (0..samples_per_packet)
                .map(|i| {
                    let t = (n * samples_per_packet + i) as f64 / f64::from(codec.pcm_sample_rate());
                    (8000.0 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()) as i16
                })
                .collect();
            let mut packet = vec![0x80, if codec == Codec::G722 { 9 } else { 0 }];
            packet.extend((n as u16).to_be_bytes());
            packet.extend((n as u32 * clock_per_packet).to_be_bytes());
            packet.extend(0x5EED_u32.to_be_bytes());
            match codec {
                Codec::G722 => encoder.encode(&pcm, &mut packet),
                _ => packet.extend(pcm.iter().map(|&sample| g711::linear_to_ulaw(sample))),
            }
            packet
        })
        .collect();
    for pair in packets.chunks_mut(100) {
        pair.swap(10, 11);
    }
    packets
}

fn receiver(start: Instant) -> Receiver {
    let config = ReceiverConfig {
        clock_rate: 8000,
        telephone_event_pt: Some(101),
        reorder_delay: Duration::from_millis(60),
        inactivity_timeout: Duration::from_secs(30),
    };
    Receiver::new(config, start)
}

fn report(name: &str, packets: usize, elapsed: Duration) {
    let per_second = packets as f64 / elapsed.as_secs_f64();
    println!(
        "{name:<34} {per_second:>12.0} packets/s  {:>7.3} µs/packet  ≈ {:>7.0} concurrent 20 ms streams per core",
        1e6 / per_second,
        per_second / 50.0
    );
}

fn bench_parse(packets: &[Vec<u8>]) {
    let started = Instant::now();
    let mut payload_bytes = 0usize;
    for datagram in packets {
        if let Ok(packet) = RtpPacket::parse(black_box(datagram)) {
            payload_bytes += packet.payload.len();
        }
    }
    black_box(payload_bytes);
    report("parse", packets.len(), started.elapsed());
}

fn bench_receive(name: &str, packets: &[Vec<u8>], decode_as: Option<Codec>) {
    let start = Instant::now();
    let mut receiver = receiver(start);
    let mut decoder = decode_as.map(Decoder::new);
    let mut pcm = Vec::with_capacity(1024);
    let mut decoded = 0usize;
    let started = Instant::now();
    for (n, datagram) in packets.iter().enumerate() {
        let now = start + PTIME * n as u32;
        let _ = receiver.handle_packet(now, black_box(datagram));
        while let Some(output) = receiver.poll_output() {
            if let (ReceiverOutput::Media { payload, .. }, Some(decoder)) = (output, decoder.as_mut()) {
                pcm.clear();
                if decoder.decode(&payload, &mut pcm).is_ok() {
                    decoded += pcm.len();
                }
            }
        }
    }
    black_box(decoded);
    assert_eq!(receiver.stats().lost, 0);
    report(name, packets.len(), started.elapsed());
}

/// SRTP unprotection alone: `packets` protected under a fresh `suite` key, then unprotected in order.
fn bench_unprotect(suite: SrtpSuite, packets: &[Vec<u8>]) {
    let key = SrtpMasterKey::generate(suite).unwrap_or_else(|error| panic!("{error}"));
    let mut sender = SrtpContext::new(&key, SrtpConfig::default());
    let protected: Vec<Vec<u8>> = packets
        .iter()
        .map(|packet| {
            let mut out = Vec::new();
            sender
                .protect_rtp(packet, &mut out)
                .unwrap_or_else(|error| panic!("{error}"));
            out
        })
        .collect();
    let mut receiver = SrtpContext::new(&key, SrtpConfig::default());
    let mut plain = Vec::with_capacity(2048);
    let mut unprotected = 0usize;
    let started = Instant::now();
    for datagram in &protected {
        if receiver.unprotect_rtp(black_box(datagram), &mut plain).is_ok() {
            unprotected += 1;
        }
    }
    let elapsed = started.elapsed();
    assert_eq!(unprotected, protected.len());
    report(&format!("SRTP unprotect {suite}"), protected.len(), elapsed);
}

fn main() {
    let pcmu = stream(Codec::Pcmu);
    let g722 = stream(Codec::G722);
    for _ in 0..2 {
        bench_parse(&pcmu);
        bench_receive("parse + receiver", &pcmu, None);
        bench_receive("parse + receiver + PCMU decode", &pcmu, Some(Codec::Pcmu));
        bench_receive("parse + receiver + G.722 decode", &g722, Some(Codec::G722));
        for suite in SrtpSuite::ALL {
            bench_unprotect(suite, &pcmu);
        }
        println!();
    }
}
