//! Fuzzes RTP parsing and the per-stream receiver. The input is parsed whole as one datagram, then read
//! as a sequence of `[length, milliseconds-to-advance, datagram…]` records fed to one `Receiver`, so the
//! reorder buffer, timeline changes, telephone-events and timers all see hostile input.

#![no_main]

use std::time::{Duration, Instant};

use airlock_rtp::{Receiver, ReceiverConfig, RtpPacket};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = RtpPacket::parse(data);

    let start = Instant::now();
    let config = ReceiverConfig {
        clock_rate: 8000,
        telephone_event_pt: Some(101),
        reorder_delay: Duration::from_millis(60),
        inactivity_timeout: Duration::from_secs(2),
    };
    let mut receiver = Receiver::new(config, start);
    let mut now = start;
    let mut rest = data;
    while let [length, step, tail @ ..] = rest {
        let (datagram, next) = tail.split_at(usize::from(*length).min(tail.len()));
        now += Duration::from_millis(u64::from(*step) * 4);
        let _ = receiver.handle_packet(now, datagram);
        if step % 2 == 0 {
            receiver.handle_timeout(now);
        }
        while receiver.poll_output().is_some() {}
        rest = next;
    }
    if let Some(deadline) = receiver.poll_timeout() {
        receiver.handle_timeout(deadline);
    }
});
