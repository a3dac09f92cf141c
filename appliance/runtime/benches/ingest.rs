//! Benchmark of the whole recording path of one core: RTP datagrams → `rtp::Receiver` → G.711 decode →
//! `Interleaver` → `RecordingWriter` (age encryption, body appends, one checkpoint per second of audio),
//! side by side with a reference run in the same process that only encrypts the same PCM with the same
//! checkpoint cadence (the floor of the path), and with the same path behind SRTP unprotection
//! (`AES_CM_128_HMAC_SHA1_80` and `AEAD_AES_128_GCM`, one `SrtpInbound` per leg). Run with
//! `cargo bench -p airlock-runtime --bench ingest -- [DIR]`; DIR (default: the system temp dir) is where
//! the recordings are written, so tmpfs (/dev/shm) measures CPU and a disk directory adds fsync costs.

#![allow(clippy::print_stdout, reason = "a benchmark reports on stdout")]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use airlock_media::{Codec, Decoder, g711};
use airlock_recording::{DevIdentity, Interleaver, RecordingWriter, WavFormat};
use airlock_rtp::{
    Receiver, ReceiverConfig, ReceiverOutput, SrtpConfig, SrtpContext, SrtpInbound, SrtpMasterKey, SrtpSuite,
};

/// Two legs, 20 ms PCMU packets: 2 × 50 packets per second of audio.
const LEGS: usize = 2;
const SECONDS_OF_AUDIO: usize = 600;
const PACKETS_PER_SECOND: usize = 50;
const SAMPLES_PER_PACKET: usize = 160;
const ROUNDS: usize = 3;
/// The SRTP suites measured next to the plain path.
const SRTP_SUITES: [SrtpSuite; 2] = [SrtpSuite::AesCm128HmacSha1_80, SrtpSuite::AeadAes128Gcm];

/// One leg's datagrams as they arrive, and the key to unprotect them with when they are SRTP.
struct Leg {
    datagrams: Vec<Vec<u8>>,
    key: Option<SrtpMasterKey>,
}

fn main() {
    let base = std::env::args()
        .skip(1)
        .find(|arg| !arg.starts_with('-'))
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let recipient = match DevIdentity::generate() {
        Ok(identity) => identity.recipient(),
        Err(error) => panic!("cannot generate a key: {error}"),
    };
    let plain: Vec<Leg> = (0..LEGS)
        .map(|leg| Leg {
            datagrams: datagrams(leg as u32),
            key: None,
        })
        .collect();
    let srtp: Vec<(SrtpSuite, Vec<Leg>)> = SRTP_SUITES
        .iter()
        .map(|&suite| (suite, plain.iter().map(|leg| protect(suite, leg)).collect()))
        .collect();
    let total_packets = LEGS * SECONDS_OF_AUDIO * PACKETS_PER_SECOND;
    println!(
        "{LEGS} legs × {SECONDS_OF_AUDIO} s of 20 ms PCMU ({total_packets} packets), checkpoint per audio second, in {}",
        base.display()
    );
    let rate = |elapsed: Duration| total_packets as f64 / elapsed.as_secs_f64();
    for round in 1..=ROUNDS {
        let full = time_it(&base, "full", |dir| full_path(dir, &recipient, &plain));
        let reference = time_it(&base, "ref", |dir| encrypt_only(dir, &recipient));
        println!(
            "round {round}: full path {:>10.0} packets/s ({:.2} µs/packet) | encrypt-only reference \
             {:>10.0} packets/s | full/reference time ratio {:.2}",
            rate(full),
            1e6 / rate(full),
            rate(reference),
            full.as_secs_f64() / reference.as_secs_f64()
        );
        for (suite, legs) in &srtp {
            let secured = time_it(&base, "srtp", |dir| full_path(dir, &recipient, legs));
            println!(
                "round {round}: SRTP unprotect + full path, {:<23} {:>10.0} packets/s ({:.2} µs/packet) | \
                 SRTP/plain time ratio {:.2}",
                suite.sdes_name(),
                rate(secured),
                1e6 / rate(secured),
                secured.as_secs_f64() / full.as_secs_f64()
            );
        }
    }
}

/// `leg` protected under a fresh key of `suite`.
fn protect(suite: SrtpSuite, leg: &Leg) -> Leg {
    let key = SrtpMasterKey::generate(suite).unwrap_or_else(|error| panic!("cannot generate a key: {error}"));
    let mut sender = SrtpContext::new(&key, SrtpConfig::default());
    let datagrams = leg
        .datagrams
        .iter()
        .map(|datagram| {
            let mut protected = Vec::new();
            sender
                .protect_rtp(datagram, &mut protected)
                .unwrap_or_else(|error| panic!("protect: {error}"));
            protected
        })
        .collect();
    Leg {
        datagrams,
        key: Some(key),
    }
}

fn time_it(base: &Path, name: &str, run: impl FnOnce(&Path)) -> Duration {
    let dir = base.join(format!("airlock-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|error| panic!("{}: {error}", dir.display()));
    let started = Instant::now();
    run(&dir);
    let elapsed = started.elapsed();
    let _ = std::fs::remove_dir_all(&dir);
    elapsed
}

/// One leg's datagrams: a tone, sequence-numbered, 20 ms apart in RTP time.
fn datagrams(leg: u32) -> Vec<Vec<u8>> {
    (0..SECONDS_OF_AUDIO * PACKETS_PER_SECOND)
        .map(|n| {
            let mut packet = vec![0x80, 0];
            packet.extend((n as u16).to_be_bytes());
            packet.extend((n as u32 * SAMPLES_PER_PACKET as u32).to_be_bytes());
            packet.extend((0xA000 + leg).to_be_bytes());
            packet.extend((0..SAMPLES_PER_PACKET).map(|i| {
                let t = (n * SAMPLES_PER_PACKET + i) as f64 / 8000.0;
                g711::linear_to_ulaw(
                    (6000.0 * (2.0 * std::f64::consts::PI * (300.0 + 200.0 * f64::from(leg)) * t).sin())
                        as i16,
                )
            }));
            packet
        })
        .collect()
}

/// Receive (unprotecting first when the legs are SRTP) → decode → interleave → age encrypt.
fn full_path(dir: &Path, recipient: &airlock_recording::Recipient, legs: &[Leg]) {
    let start = Instant::now();
    let config = ReceiverConfig {
        clock_rate: 8000,
        telephone_event_pt: Some(101),
        reorder_delay: Duration::from_millis(60),
        inactivity_timeout: Duration::from_secs(30),
    };
    let mut receivers: Vec<Receiver> = legs.iter().map(|_| Receiver::new(config, start)).collect();
    let mut decoders: Vec<Decoder> = legs.iter().map(|_| Decoder::new(Codec::Pcmu)).collect();
    let mut inbounds: Vec<Option<SrtpInbound>> = legs
        .iter()
        .map(|leg| {
            leg.key
                .as_ref()
                .map(|key| SrtpInbound::new(key, SrtpConfig::default()))
        })
        .collect();
    let mut unprotected = Vec::with_capacity(2048);
    let mut interleaver = Interleaver::new(LEGS);
    let format = WavFormat {
        sample_rate: 8000,
        channels: LEGS as u16,
    };
    let mut writer = RecordingWriter::create(dir, std::slice::from_ref(recipient), format)
        .unwrap_or_else(|error| panic!("create: {error}"));
    let mut pcm = Vec::with_capacity(SAMPLES_PER_PACKET);
    for second in 0..SECONDS_OF_AUDIO {
        for n in second * PACKETS_PER_SECOND..(second + 1) * PACKETS_PER_SECOND {
            let now = start + Duration::from_millis(20 * n as u64);
            for (leg, ((receiver, inbound), input)) in
                receivers.iter_mut().zip(&mut inbounds).zip(legs).enumerate()
            {
                let Some(datagram) = input.datagrams.get(n) else {
                    continue;
                };
                let datagram = match inbound {
                    Some(inbound) => match inbound.unprotect(now, datagram, &mut unprotected) {
                        Ok(()) => &unprotected,
                        Err(error) => panic!("unprotect: {error}"),
                    },
                    None => datagram,
                };
                let _ = receiver.handle_packet(now, datagram);
                while let Some(output) = receiver.poll_output() {
                    if let ReceiverOutput::Media {
                        position, payload, ..
                    } = output
                    {
                        pcm.clear();
                        if let Some(decoder) = decoders.get_mut(leg) {
                            let _ = decoder.decode(&payload, &mut pcm);
                        }
                        interleaver.push(leg, position, &pcm);
                    }
                }
            }
        }
        let frames = interleaver.drain_ready(((second + 1) * 8000) as u64);
        writer
            .write_interleaved(&frames)
            .unwrap_or_else(|error| panic!("write: {error}"));
        writer
            .checkpoint()
            .unwrap_or_else(|error| panic!("checkpoint: {error}"));
    }
    writer.finish().unwrap_or_else(|error| panic!("finish: {error}"));
}

fn encrypt_only(dir: &Path, recipient: &airlock_recording::Recipient) {
    let format = WavFormat {
        sample_rate: 8000,
        channels: LEGS as u16,
    };
    let mut writer = RecordingWriter::create(dir, std::slice::from_ref(recipient), format)
        .unwrap_or_else(|error| panic!("create: {error}"));
    let second_of_frames: Vec<i16> = (0..8000 * LEGS).map(|i| (i % 2000) as i16).collect();
    for _ in 0..SECONDS_OF_AUDIO {
        writer
            .write_interleaved(&second_of_frames)
            .unwrap_or_else(|error| panic!("write: {error}"));
        writer
            .checkpoint()
            .unwrap_or_else(|error| panic!("checkpoint: {error}"));
    }
    writer.finish().unwrap_or_else(|error| panic!("finish: {error}"));
}
