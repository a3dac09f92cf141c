//! Spool throughput against the simplest durable alternative, side by side in one run:
//!
//! - `spool`: append N inline records of SIZE bytes (each: write, fsync, rename, directory fsync), then read and
//!   acknowledge them all oldest first (delete + directory fsync), as a sink draining after an outage does;
//! - `reference`: append the same N payloads as lines to one file with an fsync (`sync_data`) after each — the
//!   event log's durability before the outbox, which cannot acknowledge or delete individual records.
//!
//! Rounds alternate the two. Also: append and acknowledge of file records (artifacts moved in, hashed once).
//!
//! `cargo run --release -p airlock-outbox --example spool_bench -- [DIR] [N] [SIZE] [ROUNDS]`
//! (default DIR ./airlock-data/spool-bench, on the disk the data directory uses; N 2000; SIZE 1024; ROUNDS 3)
#![allow(clippy::print_stdout)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use airlock_outbox::{NewRecord, Payload, Sink, Spool, SpoolConfig};

fn spool_round(dir: &Path, n: usize, size: usize) -> (f64, f64) {
    let _ = std::fs::remove_dir_all(dir);
    let (mut spool, _) = Spool::open(SpoolConfig {
        dir: dir.to_path_buf(),
        max_bytes: u64::MAX,
        reserve_bytes: 0,
    })
    .expect("open the spool");
    let body = vec![b'x'; size];
    let started = Instant::now();
    for i in 0..n {
        spool
            .append(
                NewRecord {
                    sink: Sink::Events,
                    key: "evt/transcript".into(),
                    content_type: "application/json".into(),
                    payload: Payload::Inline(body.clone()),
                    retention: None,
                },
                i as u64,
            )
            .expect("append");
    }
    let append = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let seqs: Vec<u64> = spool.pending(Sink::Events).map(|meta| meta.seq).collect();
    for seq in seqs {
        spool.read(seq).expect("read");
        spool.ack(seq).expect("ack");
    }
    let drain = started.elapsed().as_secs_f64();
    (n as f64 / append, n as f64 / drain)
}

fn reference_round(path: &Path, n: usize, size: usize) -> f64 {
    let _ = std::fs::remove_file(path);
    let mut line = vec![b'x'; size];
    line.push(b'\n');
    let started = Instant::now();
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open the reference log");
    for _ in 0..n {
        file.write_all(&line).expect("write");
        file.sync_data().expect("sync");
    }
    n as f64 / started.elapsed().as_secs_f64()
}

fn file_round(dir: &Path, n: usize, size: usize) -> (f64, f64, f64) {
    let _ = std::fs::remove_dir_all(dir);
    let staging = dir.join("staging");
    std::fs::create_dir_all(&staging).expect("staging");
    let (mut spool, _) = Spool::open(SpoolConfig {
        dir: dir.join("spool"),
        max_bytes: u64::MAX,
        reserve_bytes: 0,
    })
    .expect("open the spool");
    let content = vec![7u8; size];
    let paths: Vec<PathBuf> = (0..n)
        .map(|i| {
            let path = staging.join(format!("artifact-{i}"));
            std::fs::write(&path, &content).expect("artifact");
            path
        })
        .collect();
    let started = Instant::now();
    for path in paths {
        spool
            .append(
                NewRecord {
                    sink: Sink::Objects,
                    key: "site/call/recording.wav.age".into(),
                    content_type: "application/octet-stream".into(),
                    payload: Payload::File(path),
                    retention: None,
                },
                0,
            )
            .expect("append");
    }
    let append = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let seqs: Vec<u64> = spool.pending(Sink::Objects).map(|meta| meta.seq).collect();
    for seq in seqs {
        spool.ack(seq).expect("ack");
    }
    let ack = started.elapsed().as_secs_f64();
    let mb = (n * size) as f64 / 1e6;
    (n as f64 / append, mb / append, n as f64 / ack)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().unwrap_or_else(|| "airlock-data/spool-bench".into()));
    let n: usize = args.next().map_or(2000, |v| v.parse().expect("N"));
    let size: usize = args.next().map_or(1024, |v| v.parse().expect("SIZE"));
    let rounds: usize = args.next().map_or(3, |v| v.parse().expect("ROUNDS"));
    std::fs::create_dir_all(&dir).expect("bench directory");
    let (mut appends, mut drains, mut references) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds {
        let (append, drain) = spool_round(&dir.join("spool"), n, size);
        let reference = reference_round(&dir.join("reference.jsonl"), n, size);
        println!(
            "round {round}: spool append {append:.0}/s, read+ack {drain:.0}/s; reference fsynced line append {reference:.0}/s"
        );
        appends.push(append);
        drains.push(drain);
        references.push(reference);
    }
    let (append, drain, reference) = (median(&mut appends), median(&mut drains), median(&mut references));
    println!(
        "median of {rounds}: {n} records of {size} B — spool append {append:.0}/s, read+ack {drain:.0}/s, \
         reference {reference:.0}/s; spool append / reference = {:.2}",
        append / reference
    );
    let (files, mb, acks) = file_round(&dir.join("files"), 50, 4 << 20);
    println!(
        "file records: 50 × 4 MiB — append {files:.1}/s ({mb:.0} MB/s hashed and moved in), ack {acks:.0}/s"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
