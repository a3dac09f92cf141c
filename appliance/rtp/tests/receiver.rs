//! Virtual-time scenarios for the receiver: time is an `Instant` plus `Duration`s, so hours of a call run
//! in milliseconds.

use std::time::{Duration, Instant};

use airlock_rtp::{REORDER_CAPACITY, Receiver, ReceiverConfig, ReceiverOutput, RtpError, RtpStats};

const PCMU: u8 = 0;
const EVENT_PT: u8 = 101;
const SSRC: u32 = 0x1122_3344;
/// 20 ms of 8 kHz audio.
const SPAN: u32 = 160;
const PTIME: Duration = Duration::from_millis(20);
const REORDER_DELAY: Duration = Duration::from_millis(60);
const INACTIVITY: Duration = Duration::from_secs(5);

fn config() -> ReceiverConfig {
    ReceiverConfig {
        clock_rate: 8000,
        telephone_event_pt: Some(EVENT_PT),
        reorder_delay: REORDER_DELAY,
        inactivity_timeout: INACTIVITY,
    }
}

fn rtp(payload_type: u8, sequence: u16, timestamp: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut packet = vec![0x80, payload_type];
    packet.extend(sequence.to_be_bytes());
    packet.extend(timestamp.to_be_bytes());
    packet.extend(ssrc.to_be_bytes());
    packet.extend(payload);
    packet
}

/// A 160-byte PCMU payload tagged with `tag` so tests can tell packets apart.
fn audio(tag: u16) -> Vec<u8> {
    let mut payload = vec![0xFF; SPAN as usize];
    payload[..2].copy_from_slice(&tag.to_be_bytes());
    payload
}

fn event(event: u8, end: bool, duration: u16) -> Vec<u8> {
    let mut payload = vec![event, if end { 0x80 | 10 } else { 10 }];
    payload.extend(duration.to_be_bytes());
    payload
}

fn drain(receiver: &mut Receiver) -> Vec<ReceiverOutput> {
    std::iter::from_fn(|| receiver.poll_output()).collect()
}

/// (tag, position) of each media output.
fn media(outputs: &[ReceiverOutput]) -> Vec<(u16, u64)> {
    outputs
        .iter()
        .filter_map(|output| match output {
            ReceiverOutput::Media {
                position, payload, ..
            } => Some((u16::from_be_bytes([payload[0], payload[1]]), *position)),
            _ => None,
        })
        .collect()
}

/// A sender of one stream with a sequence/timestamp base, sending packet `n` at `start + n × 20 ms`.
struct Stream {
    start: Instant,
    ssrc: u32,
    sequence_base: u16,
    timestamp_base: u32,
}

impl Stream {
    fn new(start: Instant) -> Stream {
        Stream {
            start,
            ssrc: SSRC,
            sequence_base: 1000,
            timestamp_base: 50_000,
        }
    }

    fn at(&self, n: u32) -> Instant {
        self.start + PTIME * n
    }

    fn packet(&self, n: u32) -> Vec<u8> {
        rtp(
            PCMU,
            self.sequence_base.wrapping_add(n as u16),
            self.timestamp_base.wrapping_add(n * SPAN),
            self.ssrc,
            &audio(n as u16),
        )
    }

    fn send(&self, receiver: &mut Receiver, n: u32) {
        receiver
            .handle_packet(self.at(n), &self.packet(n))
            .expect("valid RTP");
    }
}

#[test]
fn in_order_stream_plays_at_timestamp_positions() {
    let start = Instant::now();
    let mut receiver = Receiver::new(config(), start);
    let stream = Stream::new(start);
    let mut outputs = Vec::new();
    for n in 0..50 {
        stream.send(&mut receiver, n);
        outputs.extend(drain(&mut receiver));
    }
    let expected: Vec<(u16, u64)> = (0..50).map(|n| (n as u16, u64::from(n * SPAN))).collect();
    assert_eq!(media(&outputs), expected);
    assert_eq!(outputs.len(), 50);
    let stats = receiver.stats();
    assert_eq!(stats.received, 50);
    assert_eq!(stats.bytes, 50 * 172);
    assert_eq!(
        RtpStats {
            received: 0,
            bytes: 0,
            ..stats
        },
        RtpStats::default()
    );
}

#[test]
fn first_packet_is_placed_at_its_wall_clock_offset() {
    let start = Instant::now();
    let mut receiver = Receiver::new(config(), start);
    let stream = Stream::new(start + Duration::from_millis(300));
    stream.send(&mut receiver, 0);
    stream.send(&mut receiver, 1);
    assert_eq!(media(&drain(&mut receiver)), [(0, 2400), (1, 2560)]);
}

#[test]
fn reordered_packets_are_released_in_sequence_order() {
    let start = Instant::now();
    let mut receiver = Receiver::new(config(), start);
    let stream = Stream::new(start);
    stream.send(&mut receiver, 0);
    receiver
        .handle_packet(stream.at(1), &stream.packet(2))
        .expect("valid");
    assert_eq!(media(&drain(&mut receiver)), [(0, 0)]);
    assert_eq!(receiver.poll_timeout(), Some(stream.at(1) + REORDER_DELAY));
    receiver
        .handle_packet(stream.at(2), &stream.packet(1))
        .expect("valid");
    stream.send(&mut receiver, 3);
    assert_eq!(media(&drain(&mut receiver)), [(1, 160), (2, 320), (3, 480)]);
    assert_eq!(receiver.poll_timeout(), Some(stream.at(3) + INACTIVITY));
    let stats = receiver.stats();
    assert_eq!((stats.reordered, stats.lost, stats.late), (1, 0, 0));
}

#[test]
fn a_gap_not_filled_within_the_reorder_delay_is_lost() {
    let start = Instant::now();
    let mut receiver = Receiver::new(config(), start);
    let stream = Stream::new(start);
    for n in [0, 1, 4, 5] {
        stream.send(&mut receiver, n);
    }
    assert_eq!(media(&drain(&mut receiver)), [(0, 0), (1, 160)]);
    let deadline = receiver.poll_timeout().expect("reorder deadline");
    assert_eq!(deadline, stream.at(4) + REORDER_DELAY);
    receiver.handle_timeout(deadline - Duration::from_millis(1));
    assert!(drain(&mut receiver).is_empty());
    receiver.handle_timeout(deadline);
    assert_eq!(media(&drain(&mut receiver)), [(4, 640), (5, 800)]);
    assert_eq!(receiver.stats().lost, 2);
}

#[test]
fn packets_behind_the_release_point_are_late() {
    let start = Instant::now();
    let mut receiver = Receiver::new(config(), start);
    let stream = Stream::new(start);
    for n in [0, 2, 3] {
        stream.send(&mut receiver, n);
    }
    receiver.handle_timeout(stream.at(2) + REORDER_DELAY);
    receiver
        .handle_packet(stream.at(6), &stream.packet(1))
        .expect("valid");
    stream.send(&mut receiver, 4);
    assert_eq!(
        media(&drain(&mut receiver)),
        [(0, 0), (2, 320), (3, 480), (4, 640)]
    );
    let stats = receiver.stats();
    assert_eq!((stats.received, stats.lost, stats.late), (5, 1, 1));
}

#[test]
fn duplicates_are_counted_and_dropped() {
    let start = Instant::now();
    let mut receiver = Receiver::new(config(), start);
    let stream = Stream::new(start);
    for n in [0, 1, 1, 3, 3, 2, 0, 4] {
        stream.send(&mut receiver, n);
    }
    let expected: Vec<(u16, u64)> = (0..5).map(|n| (n, u64::from(n) * 160)).collect();
    assert_eq!(media(&drain(&mut receiver)), expected);
    let stats = receiver.stats();
    assert_eq!(
        (stats.received, stats.duplicate, stats.reordered, stats.lost),
        (8, 3, 1, 0)
    );
}

#[test]
fn a_full_reorder_buffer_releases_its_oldest_early() {
    let start = Instant::now();
    let mut receiver = Receiver::new(config(), start);
    let stream = Stream::new(start);
    stream.send(&mut receiver, 0);
    let capacity = REORDER_CAPACITY as u32;
    for n in 2..(2 + capacity) {
        receiver
            .handle_packet(stream.at(1), &stream.packet(n))
            .expect("valid");
    }
    assert_eq!(media(&drain(&mut receiver)), [(0, 0)]);
    receiver
        .handle_packet(stream.at(1), &stream.packet(2 + capacity))
        .expect("valid");
    let released = media(&drain(&mut receiver));
    assert_eq!(released.len(), capacity as usize + 1);
    assert_eq!(released.first(), Some(&(2, 320)));
    assert_eq!(receiver.stats().lost, 1);
}

#[test]
fn sequence_numbers_wrap_over_a_long_run() {
    let start = Instant::now();
    let mut receiver = Receiver::new(config(), start);
    let stream = Stream {
        sequence_base: 65_000,
        ..Stream::new(start)
    };
    let mut positions = Vec::new();
    // 200 000 packets: the sequence wraps four times; swap the pair 65535, 0 at each wrap.
    let mut n = 0u32;
    while n < 200_000 {
        let sequence = stream.sequence_base.wrapping_add(n as u16);
        if sequence == 65_535 {
            stream.send(&mut receiver, n + 1);
            receiver
                .handle_packet(stream.at(n + 1), &stream.packet(n))
                .expect("valid");
            n += 2;
        } else {
            stream.send(&mut receiver, n);
            n += 1;
        }
        positions.extend(
            media(&drain(&mut receiver))
                .into_iter()
                .map(|(_, position)| position),
        );
    }
    assert_eq!(positions.len(), 200_000);
    assert!(
        positions
            .iter()
            .enumerate()
            .all(|(i, &position)| position == i as u64 * 160)
    );
    let stats = receiver.stats();
    assert_eq!(
        (stats.lost, stats.late, stats.duplicate, stats.reordered),
        (0, 0, 0, 4)
    );
}

#[test]
fn timestamps_wrap_without_moving_the_timeline() {
    let start = Instant::now();
    let mut receiver = Receiver::new(config(), start);
    let stream = Stream {
        timestamp_base: u32::MAX - 5 * SPAN + 7,
        ..Stream::new(start)
    };
    for n in 0..20 {
        stream.send(&mut receiver, n);
    }
    let expected: Vec<(u16, u64)> = (0..20).map(|n| (n as u16, u64::from(n * SPAN))).collect();
    assert_eq!(media(&drain(&mut receiver)), expected);
}

#[test]
fn silence_suppression_moves_the_position() {
    let start = Instant::now();
    let mut receiver = Receiver::new(config(), start);
    let stream = Stream::new(start);
    stream.send(&mut receiver, 0);
    stream.send(&mut receiver, 1);
    // Talk spurt after 2 s of suppressed silence: next sequence number, timestamp 2 s on, marker set.
    let mut packet = rtp(PCMU, 1002, 50_000 + 160 + 16_000, SSRC, &audio(2));
    packet[1] |= 0x80;
    receiver.handle_packet(stream.at(101), &packet).expect("valid");
    assert_eq!(media(&drain(&mut receiver)), [(0, 0), (1, 160), (2, 16_160)]);
    assert_eq!(receiver.stats().lost, 0);
}

#[test]
fn a_new_ssrc_continues_the_timeline_seamlessly() {
    let start = Instant::now();
    let mut receiver = Receiver::new(config(), start);
    let first = Stream::new(start);
    let mut outputs = Vec::new();
    for n in 0..50 {
        first.send(&mut receiver, n);
        outputs.extend(drain(&mut receiver));
    }
    // A transfer: new SSRC, unrelated sequence and timestamp bases, 23 ms after the last packet (jitter).
    let second = Stream {
        start: first.at(50) + Duration::from_millis(3),
        ssrc: 0xCAFE_F00D,
        sequence_base: 7,
        timestamp_base: 3_000_000_000,
    };
    for n in 0..50 {
        second.send(&mut receiver, n);
        outputs.extend(drain(&mut receiver));
    }
    let changed_at = outputs
        .iter()
        .position(|output| *output == ReceiverOutput::SsrcChanged);
    assert_eq!(changed_at, Some(50));
    let positions: Vec<u64> = media(&outputs)
        .into_iter()
        .map(|(_, position)| position)
        .collect();
    let expected: Vec<u64> = (0..100).map(|n| n * 160).collect();
    assert_eq!(positions, expected);
    let stats = receiver.stats();
    assert_eq!((stats.ssrc_changes, stats.lost, stats.late), (1, 0, 0));
}

#[test]
fn a_new_ssrc_after_a_gap_lands_at_its_wall_clock_time() {
    let start = Instant::now();
    let mut receiver = Receiver::new(config(), start);
    let first = Stream::new(start);
    for n in 0..10 {
        first.send(&mut receiver, n);
    }
    // Last packet at 180 ms; the new source starts 3 s later.
    let second = Stream {
        start: first.at(9) + Duration::from_secs(3),
        ssrc: 99,
        ..Stream::new(start)
    };
    second.send(&mut receiver, 0);
    second.send(&mut receiver, 1);
    let positions = media(&drain(&mut receiver));
    assert_eq!(&positions[10..], [(0, 1440 + 24_000), (1, 1440 + 24_160)]);
}

#[test]
fn old_ssrc_stragglers_are_late_and_buffered_packets_are_flushed() {
    let start = Instant::now();
    let mut receiver = Receiver::new(config(), start);
    let first = Stream::new(start);
    first.send(&mut receiver, 0);
    first.send(&mut receiver, 2);
    let second = Stream {
        start: first.at(3),
        ssrc: 5,
        sequence_base: 40_000,
        ..Stream::new(start)
    };
    second.send(&mut receiver, 0);
    receiver
        .handle_packet(second.at(1), &first.packet(1))
        .expect("valid");
    second.send(&mut receiver, 1);
    let outputs = drain(&mut receiver);
    assert_eq!(outputs.get(2), Some(&ReceiverOutput::SsrcChanged));
    assert_eq!(media(&outputs), [(0, 0), (2, 320), (0, 480), (1, 640)]);
    let stats = receiver.stats();
    assert_eq!((stats.ssrc_changes, stats.lost, stats.late), (1, 1, 1));
}

#[test]
fn switching_back_to_the_previous_ssrc_is_a_change_too() {
    let start = Instant::now();
    let mut receiver = Receiver::new(config(), start);
    let first = Stream::new(start);
    first.send(&mut receiver, 0);
    let second = Stream {
        ssrc: 5,
        ..Stream::new(start)
    };
    second.send(&mut receiver, 1);
    // The first source comes back (a retrieved hold), numbering on from where it was.
    first.send(&mut receiver, 2);
    let outputs = drain(&mut receiver);
    assert_eq!(media(&outputs), [(0, 0), (1, 160), (2, 320)]);
    assert_eq!(receiver.stats().ssrc_changes, 2);
    // Long after a switch, even an old-numbered packet of the previous SSRC is a switch (back), not a
    // straggler: a source that restarted its numbering must not be ignored forever.
    let third = Stream {
        start: first.at(2) + Duration::from_secs(2),
        ssrc: 5,
        ..Stream::new(start)
    };
    third.send(&mut receiver, 0);
    assert!(drain(&mut receiver).contains(&ReceiverOutput::SsrcChanged));
    assert_eq!((receiver.stats().ssrc_changes, receiver.stats().late), (3, 0));
}

#[test]
fn a_sequence_restart_on_the_same_ssrc_is_followed() {
    let start = Instant::now();
    let mut receiver = Receiver::new(config(), start);
    let stream = Stream::new(start);
    for n in 0..10 {
        stream.send(&mut receiver, n);
    }
    // Same SSRC, sequence numbers jump back by 900 and timestamps by 10^6 (an SBC re-anchoring).
    let restarted = Stream {
        sequence_base: 100,
        timestamp_base: 1_000,
        ..Stream::new(start)
    };
    for n in 10..20 {
        receiver
            .handle_packet(stream.at(n), &restarted.packet(n))
            .expect("valid");
    }
    let positions: Vec<u64> = media(&drain(&mut receiver))
        .into_iter()
        .map(|(_, position)| position)
        .collect();
    let expected: Vec<u64> = (0..20).map(|n| n * 160).collect();
    assert_eq!(positions, expected);
    let stats = receiver.stats();
    assert_eq!((stats.sequence_restarts, stats.late, stats.lost), (1, 0, 0));
}

#[test]
fn a_lone_far_packet_is_dropped_as_late() {
    let start = Instant::now();
    let mut receiver = Receiver::new(config(), start);
    let stream = Stream::new(start);
    stream.send(&mut receiver, 0);
    receiver
        .handle_packet(stream.at(1), &stream.packet(20_000))
        .expect("valid");
    stream.send(&mut receiver, 1);
    assert_eq!(media(&drain(&mut receiver)), [(0, 0), (1, 160)]);
    assert_eq!(receiver.stats().late, 1);
}

/// Sends one RFC 4733 event the way SRCs do: one packet per 20 ms with a growing duration, all with the
/// event's start timestamp, then the end packet three times (each with its own sequence number).
fn send_event(receiver: &mut Receiver, stream: &Stream, first_slot: u32, slots: u32, digit: u8) -> u32 {
    let timestamp = stream.timestamp_base + first_slot * SPAN;
    let mut sequence = stream.sequence_base.wrapping_add(first_slot as u16);
    for k in 0..slots {
        let end = k + 1 == slots;
        let payload = event(digit, end, ((k + 1) * SPAN) as u16);
        for _ in 0..if end { 3 } else { 1 } {
            let packet = rtp(EVENT_PT, sequence, timestamp, stream.ssrc, &payload);
            receiver
                .handle_packet(stream.at(first_slot + k), &packet)
                .expect("valid");
            sequence = sequence.wrapping_add(1);
        }
    }
    u32::from(sequence.wrapping_sub(stream.sequence_base))
}

#[test]
fn a_telephone_event_is_reported_once_and_never_as_media() {
    let start = Instant::now();
    let mut receiver = Receiver::new(config(), start);
    let stream = Stream::new(start);
    stream.send(&mut receiver, 0);
    let next_sequence = send_event(&mut receiver, &stream, 1, 5, 7);
    // Audio resumes after the event's five slots.
    let packet = rtp(
        PCMU,
        1000 + next_sequence as u16,
        50_000 + 6 * SPAN,
        SSRC,
        &audio(6),
    );
    receiver.handle_packet(stream.at(6), &packet).expect("valid");
    let outputs = drain(&mut receiver);
    let events: Vec<&ReceiverOutput> = outputs
        .iter()
        .filter(|output| matches!(output, ReceiverOutput::TelephoneEvent { .. }))
        .collect();
    assert_eq!(
        events,
        [&ReceiverOutput::TelephoneEvent {
            event: 7,
            position: 160,
            duration: 800,
            volume: 10,
            ended: true
        }]
    );
    assert_eq!(media(&outputs), [(0, 0), (6, 960)]);
    let stats = receiver.stats();
    assert_eq!(
        (
            stats.telephone_events,
            stats.received,
            stats.lost,
            stats.duplicate
        ),
        (1, 9, 0, 0)
    );
}

#[test]
fn an_event_is_in_progress_from_its_first_released_packet_until_its_end() {
    let start = Instant::now();
    let mut receiver = Receiver::new(config(), start);
    let stream = Stream::new(start);
    stream.send(&mut receiver, 0);
    let timestamp = stream.timestamp_base + SPAN;
    for k in 0..3u32 {
        let payload = event(4, false, ((k + 1) * SPAN) as u16);
        let packet = rtp(EVENT_PT, 1001 + k as u16, timestamp, SSRC, &payload);
        receiver.handle_packet(stream.at(1 + k), &packet).expect("valid");
    }
    receiver.handle_timeout(stream.at(3) + REORDER_DELAY);
    drain(&mut receiver);
    assert_eq!(receiver.telephone_event_in_progress_since(), Some(160));
    let end = rtp(
        EVENT_PT,
        1004,
        timestamp,
        SSRC,
        &event(4, true, (4 * SPAN) as u16),
    );
    receiver.handle_packet(stream.at(4), &end).expect("valid");
    receiver.handle_timeout(stream.at(4) + REORDER_DELAY);
    assert!(
        drain(&mut receiver)
            .iter()
            .any(|output| matches!(output, ReceiverOutput::TelephoneEvent { event: 4, .. }))
    );
    assert_eq!(receiver.telephone_event_in_progress_since(), None);
}

#[test]
fn an_event_whose_end_packets_are_lost_is_reported_when_audio_resumes() {
    let start = Instant::now();
    let mut receiver = Receiver::new(config(), start);
    let stream = Stream::new(start);
    for k in 0..3u16 {
        let packet = rtp(EVENT_PT, 1000 + k, 50_000, SSRC, &event(11, false, (k + 1) * 160));
        receiver
            .handle_packet(stream.at(u32::from(k)), &packet)
            .expect("valid");
    }
    assert!(drain(&mut receiver).is_empty());
    let packet = rtp(PCMU, 1003, 50_000 + 480, SSRC, &audio(3));
    receiver.handle_packet(stream.at(3), &packet).expect("valid");
    assert_eq!(
        drain(&mut receiver).first(),
        Some(&ReceiverOutput::TelephoneEvent {
            event: 11,
            position: 0,
            duration: 480,
            volume: 10,
            ended: false
        })
    );
    assert_eq!(receiver.stats().telephone_events, 1);
}

#[test]
fn back_to_back_events_are_reported_separately() {
    let start = Instant::now();
    let mut receiver = Receiver::new(config(), start);
    let stream = Stream::new(start);
    let used = send_event(&mut receiver, &stream, 0, 3, 1);
    let later = Stream {
        sequence_base: 1000 + used as u16 - 3,
        ..Stream::new(start)
    };
    send_event(&mut receiver, &later, 3, 3, 2);
    let events: Vec<(u8, u64)> = drain(&mut receiver)
        .into_iter()
        .filter_map(|output| match output {
            ReceiverOutput::TelephoneEvent { event, position, .. } => Some((event, position)),
            _ => None,
        })
        .collect();
    assert_eq!(events, [(1, 0), (2, 480)]);
}

#[test]
fn without_an_event_payload_type_events_are_media() {
    let start = Instant::now();
    let mut receiver = Receiver::new(
        ReceiverConfig {
            telephone_event_pt: None,
            ..config()
        },
        start,
    );
    receiver
        .handle_packet(start, &rtp(EVENT_PT, 1, 0, SSRC, &event(1, true, 160)))
        .expect("valid");
    assert!(matches!(
        drain(&mut receiver).as_slice(),
        [ReceiverOutput::Media {
            payload_type: EVENT_PT,
            ..
        }]
    ));
}

#[test]
fn inactivity_is_reported_once_and_rearmed_by_the_next_packet() {
    let start = Instant::now();
    let mut receiver = Receiver::new(config(), start);
    assert_eq!(receiver.poll_timeout(), Some(start + INACTIVITY));
    receiver.handle_timeout(start + INACTIVITY - Duration::from_millis(1));
    assert!(drain(&mut receiver).is_empty());
    receiver.handle_timeout(start + INACTIVITY);
    assert_eq!(drain(&mut receiver), [ReceiverOutput::Inactive]);
    assert_eq!(receiver.poll_timeout(), None);
    receiver.handle_timeout(start + INACTIVITY * 3);
    assert!(drain(&mut receiver).is_empty());

    let stream = Stream::new(start + Duration::from_secs(20));
    stream.send(&mut receiver, 0);
    assert_eq!(media(&drain(&mut receiver)), [(0, 160_000)]);
    assert_eq!(receiver.poll_timeout(), Some(stream.at(0) + INACTIVITY));
    receiver.handle_timeout(stream.at(0) + INACTIVITY);
    assert_eq!(drain(&mut receiver), [ReceiverOutput::Inactive]);
}

#[test]
fn multiplexed_rtcp_is_ignored_but_keeps_the_stream_alive() {
    let start = Instant::now();
    let mut receiver = Receiver::new(config(), start);
    let sender_report = [0x80, 200, 0, 6, 0x11, 0x22, 0x33, 0x44, 0, 0, 0, 0, 0, 0, 0, 0];
    let later = start + Duration::from_secs(4);
    assert_eq!(receiver.handle_packet(later, &sender_report), Ok(()));
    assert!(drain(&mut receiver).is_empty());
    assert_eq!(receiver.poll_timeout(), Some(later + INACTIVITY));
    let stats = receiver.stats();
    assert_eq!((stats.rtcp, stats.received, stats.malformed), (1, 0, 0));
}

#[test]
fn malformed_datagrams_are_counted_and_returned() {
    let start = Instant::now();
    let mut receiver = Receiver::new(config(), start);
    assert_eq!(
        receiver.handle_packet(start, &[0x80, 0]),
        Err(RtpError::TooShort { len: 2 })
    );
    let mut bad_padding = rtp(PCMU, 1, 0, SSRC, &[1, 2, 9]);
    bad_padding[0] |= 0x20;
    assert!(matches!(
        receiver.handle_packet(start, &bad_padding),
        Err(RtpError::BadPadding { .. })
    ));
    // A telephone-event too short to parse is counted too, and produces nothing.
    receiver
        .handle_packet(start, &rtp(EVENT_PT, 1, 0, SSRC, &[1, 2]))
        .expect("valid RTP");
    assert!(drain(&mut receiver).is_empty());
    let stats = receiver.stats();
    assert_eq!((stats.malformed, stats.received), (3, 1));
}

#[test]
fn an_undrained_output_queue_drops_its_oldest_and_counts_it() {
    let start = Instant::now();
    let mut receiver = Receiver::new(config(), start);
    let stream = Stream::new(start);
    for n in 0..(airlock_rtp::OUTPUT_CAPACITY as u32 + 10) {
        stream.send(&mut receiver, n);
    }
    let outputs = media(&drain(&mut receiver));
    assert_eq!(outputs.len(), airlock_rtp::OUTPUT_CAPACITY);
    assert_eq!(outputs.first(), Some(&(10, 1600)));
    assert_eq!(receiver.stats().dropped_outputs, 10);
}

/// A 4-hour call: 720 000 packets at 20 ms, with a scripted pattern of swaps, duplicates and losses every
/// 1000 packets; the stats must come out exact and every position must follow the timestamps.
#[test]
fn four_hour_stream_keeps_exact_stats() {
    const PACKETS: u32 = 720_000;
    let start = Instant::now();
    let mut receiver = Receiver::new(config(), start);
    let stream = Stream {
        sequence_base: 60_000,
        timestamp_base: u32::MAX - 1_000_000,
        ..Stream::new(start)
    };
    let (mut swapped, mut duplicated, mut dropped) = (0u64, 0u64, 0u64);
    let mut released = 0u64;
    let mut n = 0;
    while n < PACKETS {
        match n % 1000 {
            100 if n + 1 < PACKETS => {
                stream.send(&mut receiver, n + 1);
                receiver
                    .handle_packet(stream.at(n + 1), &stream.packet(n))
                    .expect("valid");
                swapped += 1;
                n += 2;
                continue;
            }
            200 => {
                stream.send(&mut receiver, n);
                stream.send(&mut receiver, n);
                duplicated += 1;
            }
            300 => dropped += 1,
            _ => stream.send(&mut receiver, n),
        }
        n += 1;
        if n % 50 == 0 {
            receiver.handle_timeout(stream.at(n));
        }
        while let Some(output) = receiver.poll_output() {
            if let ReceiverOutput::Media {
                position, payload, ..
            } = output
            {
                let tag = u16::from_be_bytes([payload[0], payload[1]]);
                assert_eq!(
                    position % (u64::from(SPAN) * 65_536),
                    u64::from(tag) * u64::from(SPAN)
                );
                released += 1;
            }
        }
    }
    receiver.handle_timeout(stream.at(PACKETS) + REORDER_DELAY);
    released += media(&drain(&mut receiver)).len() as u64;
    let stats = receiver.stats();
    assert_eq!(released, u64::from(PACKETS) - dropped);
    assert_eq!(stats.received, u64::from(PACKETS) - dropped + duplicated);
    assert_eq!(stats.lost, dropped);
    assert_eq!(stats.duplicate, duplicated);
    assert_eq!(stats.reordered, swapped);
    assert_eq!(
        (
            stats.late,
            stats.ssrc_changes,
            stats.sequence_restarts,
            stats.malformed
        ),
        (0, 0, 0, 0)
    );
}

#[test]
fn random_datagrams_never_panic() {
    let start = Instant::now();
    let mut receiver = Receiver::new(config(), start);
    let mut seed = 0xDEAD_BEEF_u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut now = start;
    for _ in 0..100_000 {
        now += Duration::from_micros(next() % 50_000);
        let choice = next() % 4;
        let ssrc = if next() % 50 == 0 { next() as u32 } else { SSRC };
        let sequence = (next() % 200) as u16;
        let datagram = match choice {
            0 => (0..next() % 40).map(|_| next() as u8).collect(),
            1 => rtp(
                EVENT_PT,
                sequence,
                (next() % 4) as u32 * 160,
                ssrc,
                &event(1, next() % 3 == 0, 160),
            ),
            _ => rtp(PCMU, sequence, (next() as u32) % 100_000, ssrc, &audio(0)),
        };
        let _ = receiver.handle_packet(now, &datagram);
        if next() % 10 == 0 {
            receiver.handle_timeout(now);
        }
        drain(&mut receiver);
    }
}
