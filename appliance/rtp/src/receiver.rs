//! The receive side of one RTP stream, sans-IO: sequence and timestamp unwrapping, a bounded reorder
//! buffer, duplicate/late/loss accounting, SSRC changes and sequence restarts, RFC 4733 telephone-events
//! and an inactivity timer. Time only enters as the `now` the caller passes in.
//!
//! Playout positions: the first packet of the stream is placed at the wall time between
//! [`Receiver::new`] and its arrival, in RTP clock units; after that, positions follow the RTP timestamps
//! (so silence suppression and timestamp jumps simply move the position). When a new timeline begins (a
//! new SSRC, or the same SSRC restarting its sequence numbers), its first packet is placed by the wall
//! time elapsed since the previous timeline's last packet arrived, so audio after a transfer or a hold
//! lands where it belongs in time; if that puts it within [`CONTINUITY_SNAP`] of where the previous
//! timeline ended (or before it), it is placed exactly there instead, so a seamless hand-over stays
//! seamless despite network jitter and sender clock drift.

use std::time::{Duration, Instant};

use crate::packet::{RtpError, RtpPacket};
use crate::telephone_event::EventBlock;

/// Packets the reorder buffer holds while waiting for a gap to fill. When full, the oldest is released
/// at once and the gap before it counted as lost.
pub const REORDER_CAPACITY: usize = 32;
/// Outputs queued until [`Receiver::poll_output`] takes them. One packet or timeout releases at most
/// `REORDER_CAPACITY + 3` outputs, so a caller that drains after every call never fills it; if it is full
/// anyway, the oldest output is dropped and counted in [`RtpStats::dropped_outputs`].
pub const OUTPUT_CAPACITY: usize = 64;
/// A new timeline starting this close to where the previous one ended is joined to it seamlessly.
pub const CONTINUITY_SNAP: Duration = Duration::from_millis(100);
/// For this long after an SSRC change, old-numbered packets of the previous SSRC are stragglers (late).
const STRAGGLER_WINDOW: Duration = Duration::from_secs(1);
/// Sequence numbers further ahead than this (RFC 3550 A.1's MAX_DROPOUT) start a restart probation.
const MAX_DROPOUT: i64 = 3000;
/// Sequence numbers further behind than this (RFC 3550 A.1's MAX_MISORDER) start a restart probation.
const MAX_MISORDER: i64 = 100;
/// How many recent sequence numbers are remembered to tell duplicates from late packets.
const DUPLICATE_WINDOW: i64 = 128;
/// Packet duration assumed until two consecutive media packets show the real one.
const DEFAULT_PACKET_TIME: Duration = Duration::from_millis(20);

/// How one stream is received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiverConfig {
    /// RTP clock rate of the stream's codec in Hz (positions and durations count in these units).
    pub clock_rate: u32,
    /// Payload type negotiated for RFC 4733 telephone-event, if any.
    pub telephone_event_pt: Option<u8>,
    /// How long a packet waits in the reorder buffer for an earlier missing one.
    pub reorder_delay: Duration,
    /// Silence (no RTP or RTCP packet at all) after which [`ReceiverOutput::Inactive`] is reported.
    pub inactivity_timeout: Duration,
}

/// What the receiver hands on, in playout order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReceiverOutput {
    /// One media packet's payload; `position` is where its first sample plays, in RTP clock units since
    /// the stream started.
    Media {
        payload_type: u8,
        position: u64,
        payload: Vec<u8>,
    },
    /// One RFC 4733 event, reported once, when it ends (or when the next packet shows it is over although
    /// its end packets were lost: then `ended` is false). `duration` is in RTP clock units.
    TelephoneEvent {
        event: u8,
        position: u64,
        duration: u16,
        volume: u8,
        ended: bool,
    },
    /// The stream switched to a new SSRC (a transfer or re-anchoring at the SRC).
    SsrcChanged,
    /// No packet arrived for the configured inactivity timeout. Reported once; the next packet re-arms it.
    Inactive,
}

/// Packet counters of one stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RtpStats {
    /// Well-formed RTP packets (including duplicates, late and telephone-event packets).
    pub received: u64,
    /// Datagram bytes of `received` packets.
    pub bytes: u64,
    /// Sequence numbers skipped because they had not arrived within the reorder delay (or buffer).
    pub lost: u64,
    /// Packets dropped because they arrived after their place in the sequence had been played out (or,
    /// numbered far from the stream, did not turn out to start a sequence restart).
    pub late: u64,
    /// Packets dropped because the same sequence number was already received.
    pub duplicate: u64,
    /// Packets that arrived after a later-numbered one and were put back in order.
    pub reordered: u64,
    /// Switches to a new SSRC.
    pub ssrc_changes: u64,
    /// Times the SRC restarted its sequence numbers without changing SSRC.
    pub sequence_restarts: u64,
    /// Telephone-events reported.
    pub telephone_events: u64,
    /// Datagrams that were not valid RTP (and telephone-event payloads too short to parse).
    pub malformed: u64,
    /// RTCP packets multiplexed on the port (ignored apart from keeping the stream active).
    pub rtcp: u64,
    /// Outputs dropped because the caller let the output queue fill.
    pub dropped_outputs: u64,
}

/// A packet as the receiver keeps it (payload copied out of the datagram).
#[derive(Debug, Clone)]
struct Incoming {
    sequence_number: u16,
    timestamp: u32,
    payload_type: u8,
    payload: Vec<u8>,
    arrival: Instant,
}

/// A packet waiting in the reorder buffer, with its unwrapped sequence number and timestamp.
#[derive(Debug, Clone)]
struct Buffered {
    sequence: i64,
    timestamp: i64,
    payload_type: u8,
    payload: Vec<u8>,
    arrival: Instant,
}

/// The numbering of one source: one SSRC from its first packet, or until it restarts its sequence.
#[derive(Debug, Clone)]
struct Timeline {
    ssrc: u32,
    /// Unwrapped sequence number the reorder buffer releases next; everything below is played or lost.
    next_release: i64,
    /// Highest unwrapped sequence number accepted.
    highest_sequence: i64,
    /// Bit i set: sequence `highest_sequence - i` was accepted.
    seen: u128,
    /// Unwrapped timestamp of the highest-numbered packet (the reference for unwrapping the next).
    reference_timestamp: i64,
    /// Position = unwrapped timestamp + this.
    position_offset: i64,
    /// When the last accepted packet arrived.
    last_arrival: Instant,
    /// A packet numbered far from the sequence, kept in case the next one confirms a restart.
    restart_candidate: Option<Incoming>,
    /// Unwrapped sequence number and timestamp of the last media packet released.
    last_media: Option<(i64, i64)>,
    /// Timestamp of the last telephone-event reported (its retransmitted end packets are ignored).
    finished_event: Option<i64>,
}

/// A telephone-event whose end has not been seen yet.
#[derive(Debug, Clone, Copy)]
struct OpenEvent {
    timestamp: i64,
    position: u64,
    block: EventBlock,
}

/// Receives one RTP stream. Feed it every datagram of the stream's port with [`Receiver::handle_packet`],
/// call [`Receiver::handle_timeout`] at [`Receiver::poll_timeout`], and drain [`Receiver::poll_output`]
/// after each call. Memory is bounded: at most `REORDER_CAPACITY + OUTPUT_CAPACITY` payload copies (plus
/// one sequence-restart candidate), each no larger than the datagrams the caller passes in.
#[derive(Debug)]
pub struct Receiver {
    config: ReceiverConfig,
    started: Instant,
    timeline: Option<Timeline>,
    /// The SSRC the stream switched away from, its highest sequence number and the end of its straggler
    /// window.
    retired: Option<(u32, i64, Instant)>,
    /// Sorted by descending sequence number: the next to release is last.
    reorder: heapless::Vec<Buffered, REORDER_CAPACITY>,
    outputs: heapless::Deque<ReceiverOutput, OUTPUT_CAPACITY>,
    last_activity: Instant,
    inactive_reported: bool,
    /// Position just after the last media or event released.
    end_position: i64,
    /// RTP clock units per media packet, as last observed.
    packet_span: i64,
    open_event: Option<OpenEvent>,
    stats: RtpStats,
}

impl Receiver {
    /// A receiver for a stream that starts at `now` (position 0).
    pub fn new(config: ReceiverConfig, now: Instant) -> Receiver {
        let mut receiver = Receiver {
            config,
            started: now,
            timeline: None,
            retired: None,
            reorder: heapless::Vec::new(),
            outputs: heapless::Deque::new(),
            last_activity: now,
            inactive_reported: false,
            end_position: 0,
            packet_span: 1,
            open_event: None,
            stats: RtpStats::default(),
        };
        receiver.packet_span = receiver.clock_units(DEFAULT_PACKET_TIME).max(1);
        receiver
    }

    /// Takes one datagram received at `now`. RTCP is counted and ignored (`Ok`); anything else that is not
    /// valid RTP is counted as malformed and returned as the error.
    pub fn handle_packet(&mut self, now: Instant, datagram: &[u8]) -> Result<(), RtpError> {
        self.release_expired(now);
        let packet = match RtpPacket::parse(datagram) {
            Ok(packet) => packet,
            Err(RtpError::Rtcp { .. }) => {
                self.stats.rtcp += 1;
                self.mark_active(now);
                return Ok(());
            }
            Err(error) => {
                self.stats.malformed += 1;
                return Err(error);
            }
        };
        self.mark_active(now);
        self.stats.received += 1;
        self.stats.bytes = self.stats.bytes.saturating_add(datagram.len() as u64);
        let incoming = Incoming {
            sequence_number: packet.sequence_number,
            timestamp: packet.timestamp,
            payload_type: packet.payload_type,
            payload: packet.payload.to_vec(),
            arrival: now,
        };
        if self.is_straggler(now, &packet) {
            self.stats.late += 1;
            return Ok(());
        }
        match &self.timeline {
            None => self.begin_timeline(packet.ssrc, &incoming, None),
            Some(timeline) if timeline.ssrc != packet.ssrc => {
                let previous_arrival = timeline.last_arrival;
                let window_end = now.checked_add(STRAGGLER_WINDOW).unwrap_or(now);
                self.retired = Some((timeline.ssrc, timeline.highest_sequence, window_end));
                self.flush();
                self.stats.ssrc_changes += 1;
                self.push(ReceiverOutput::SsrcChanged);
                self.begin_timeline(packet.ssrc, &incoming, Some(previous_arrival));
            }
            Some(_) => {}
        }
        self.accept(incoming);
        Ok(())
    }

    /// Does the time-driven work due at `now`: releases packets whose reorder delay has passed and reports
    /// inactivity.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.release_expired(now);
        let inactive_since = self.last_activity.checked_add(self.config.inactivity_timeout);
        if !self.inactive_reported && inactive_since.is_some_and(|deadline| now >= deadline) {
            self.close_open_event();
            self.push(ReceiverOutput::Inactive);
            self.inactive_reported = true;
        }
    }

    /// When [`Receiver::handle_timeout`] next has work to do, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let inactivity = if self.inactive_reported {
            None
        } else {
            self.last_activity.checked_add(self.config.inactivity_timeout)
        };
        [self.reorder_deadline(), inactivity].into_iter().flatten().min()
    }

    /// Position of the telephone-event whose end has not been seen yet, if any (it is reported as
    /// [`ReceiverOutput::TelephoneEvent`] when it ends).
    pub fn telephone_event_in_progress_since(&self) -> Option<u64> {
        self.open_event.map(|open| open.position)
    }

    /// The next output, in playout order.
    pub fn poll_output(&mut self) -> Option<ReceiverOutput> {
        self.outputs.pop_front()
    }

    pub fn stats(&self) -> RtpStats {
        self.stats
    }

    /// A packet of the SSRC the stream just switched away from, arriving soon after the switch and
    /// numbered at or before the last one seen from it: delayed in the network, not a switch back.
    fn is_straggler(&self, now: Instant, packet: &RtpPacket<'_>) -> bool {
        self.retired.is_some_and(|(ssrc, highest, window_end)| {
            ssrc == packet.ssrc
                && now < window_end
                && packet.sequence_number.wrapping_sub(highest as u16) as i16 <= 0
        })
    }

    fn mark_active(&mut self, now: Instant) {
        self.last_activity = self.last_activity.max(now);
        self.inactive_reported = false;
    }

    /// `duration` in RTP clock units.
    fn clock_units(&self, duration: Duration) -> i64 {
        let units = duration
            .as_nanos()
            .saturating_mul(u128::from(self.config.clock_rate))
            / 1_000_000_000;
        // Beyond ~10^15 units (years at any clock rate) precision no longer matters; staying far from
        // i64::MAX keeps later additions from overflowing.
        i64::try_from(units).unwrap_or(i64::MAX).min(1 << 50)
    }

    /// Starts numbering afresh at `first` and places it on the playout timeline (see the module docs).
    fn begin_timeline(&mut self, ssrc: u32, first: &Incoming, previous_arrival: Option<Instant>) {
        let position = match previous_arrival {
            None => self.clock_units(first.arrival.saturating_duration_since(self.started)),
            Some(previous) => {
                let contiguous = self.end_position;
                let elapsed = self.clock_units(first.arrival.saturating_duration_since(previous));
                let by_wall_clock = contiguous
                    .saturating_sub(self.packet_span)
                    .saturating_add(elapsed);
                if by_wall_clock.saturating_sub(contiguous) <= self.clock_units(CONTINUITY_SNAP) {
                    contiguous
                } else {
                    by_wall_clock
                }
            }
        };
        let sequence = i64::from(first.sequence_number);
        let timestamp = i64::from(first.timestamp);
        self.timeline = Some(Timeline {
            ssrc,
            next_release: sequence,
            highest_sequence: sequence,
            seen: 0,
            reference_timestamp: timestamp,
            position_offset: position.saturating_sub(timestamp),
            last_arrival: first.arrival,
            restart_candidate: None,
            last_media: None,
            finished_event: None,
        });
    }

    /// Classifies a packet of the current timeline and buffers or releases it.
    fn accept(&mut self, incoming: Incoming) {
        let Some(timeline) = self.timeline.as_mut() else {
            return;
        };
        let highest = timeline.highest_sequence;
        let sequence = highest + i64::from(incoming.sequence_number.wrapping_sub(highest as u16) as i16);
        let behind = highest - sequence;
        if behind > MAX_MISORDER || -behind > MAX_DROPOUT {
            self.consider_restart(incoming);
            return;
        }
        let seen_before = (0..DUPLICATE_WINDOW).contains(&behind) && timeline.seen & (1u128 << behind) != 0;
        if seen_before {
            self.stats.duplicate += 1;
            return;
        }
        if sequence < timeline.next_release {
            self.stats.late += 1;
            return;
        }
        if timeline.restart_candidate.take().is_some() {
            self.stats.late += 1;
        }
        let reference = timeline.reference_timestamp;
        let timestamp = reference + i64::from(incoming.timestamp.wrapping_sub(reference as u32) as i32);
        if behind > 0 {
            self.stats.reordered += 1;
            timeline.seen |= 1u128 << behind.min(DUPLICATE_WINDOW - 1);
        } else {
            let ahead = -behind;
            timeline.seen = if ahead >= DUPLICATE_WINDOW {
                0
            } else {
                timeline.seen << ahead
            } | 1;
            timeline.highest_sequence = sequence;
            timeline.reference_timestamp = timestamp;
        }
        timeline.last_arrival = timeline.last_arrival.max(incoming.arrival);
        let buffered = Buffered {
            sequence,
            timestamp,
            payload_type: incoming.payload_type,
            payload: incoming.payload,
            arrival: incoming.arrival,
        };
        if sequence == timeline.next_release {
            timeline.next_release += 1;
            self.release(buffered);
        } else {
            if self.reorder.is_full() {
                self.release_oldest_early();
            }
            let index = self
                .reorder
                .partition_point(|waiting| waiting.sequence > sequence);
            if let Err(rejected) = self.reorder.insert(index, buffered) {
                // Unreachable (room was just made), but never lose a packet silently.
                self.stats.lost += 1;
                drop(rejected);
            }
        }
        self.release_in_order();
    }

    /// A packet numbered far from the sequence: either garbage/stale, or the first of a restarted sequence.
    /// Two consecutive such packets confirm a restart (RFC 3550 A.1's probation, without dropping them).
    fn consider_restart(&mut self, incoming: Incoming) {
        let Some(timeline) = self.timeline.as_mut() else {
            return;
        };
        let confirmed = timeline
            .restart_candidate
            .as_ref()
            .is_some_and(|candidate| candidate.sequence_number.wrapping_add(1) == incoming.sequence_number);
        let previous = timeline.restart_candidate.replace(incoming.clone());
        if !confirmed {
            if previous.is_some() {
                self.stats.late += 1;
            }
            return;
        }
        let ssrc = timeline.ssrc;
        let previous_arrival = timeline.last_arrival;
        timeline.restart_candidate = None;
        let Some(candidate) = previous else { return };
        self.flush();
        self.stats.sequence_restarts += 1;
        self.begin_timeline(ssrc, &candidate, Some(previous_arrival));
        self.accept(candidate);
        self.accept(incoming);
    }

    /// When the oldest packet in the reorder buffer stops waiting.
    fn reorder_deadline(&self) -> Option<Instant> {
        let oldest_arrival = self.reorder.iter().map(|waiting| waiting.arrival).min()?;
        oldest_arrival.checked_add(self.config.reorder_delay)
    }

    fn release_expired(&mut self, now: Instant) {
        while self.reorder_deadline().is_some_and(|deadline| now >= deadline) {
            self.release_oldest_early();
            self.release_in_order();
        }
    }

    /// Gives up on the gap before the lowest buffered packet and releases that packet.
    fn release_oldest_early(&mut self) {
        let (Some(timeline), Some(lowest)) = (self.timeline.as_mut(), self.reorder.pop()) else {
            return;
        };
        let skipped = lowest.sequence - timeline.next_release;
        self.stats.lost = self.stats.lost.saturating_add(skipped.max(0) as u64);
        timeline.next_release = lowest.sequence + 1;
        self.release(lowest);
    }

    /// Releases buffered packets while they continue the sequence.
    fn release_in_order(&mut self) {
        loop {
            let Some(timeline) = self.timeline.as_mut() else {
                return;
            };
            if self
                .reorder
                .last()
                .is_none_or(|lowest| lowest.sequence != timeline.next_release)
            {
                return;
            }
            let Some(lowest) = self.reorder.pop() else { return };
            timeline.next_release += 1;
            self.release(lowest);
        }
    }

    /// Ends the current timeline: releases everything buffered (gaps count as lost) and closes any event.
    fn flush(&mut self) {
        while !self.reorder.is_empty() {
            self.release_oldest_early();
            self.release_in_order();
        }
        self.close_open_event();
        if let Some(timeline) = self.timeline.as_mut()
            && timeline.restart_candidate.take().is_some()
        {
            self.stats.late += 1;
        }
    }

    /// Turns one packet, in sequence order, into output.
    fn release(&mut self, packet: Buffered) {
        let Some(timeline) = self.timeline.as_mut() else {
            return;
        };
        let position = packet.timestamp.saturating_add(timeline.position_offset).max(0);
        if self.config.telephone_event_pt == Some(packet.payload_type) {
            self.release_event(packet.timestamp, position, &packet.payload);
            return;
        }
        if let Some((sequence, timestamp)) = timeline.last_media {
            let span = packet.timestamp - timestamp;
            if packet.sequence == sequence + 1 && (1..=i64::from(self.config.clock_rate)).contains(&span) {
                self.packet_span = span;
            }
        }
        timeline.last_media = Some((packet.sequence, packet.timestamp));
        self.close_open_event();
        self.end_position = self.end_position.max(position.saturating_add(self.packet_span));
        self.push(ReceiverOutput::Media {
            payload_type: packet.payload_type,
            position: position as u64,
            payload: packet.payload,
        });
    }

    fn release_event(&mut self, timestamp: i64, position: i64, payload: &[u8]) {
        let Some(block) = EventBlock::parse(payload) else {
            self.stats.malformed += 1;
            return;
        };
        if self
            .timeline
            .as_ref()
            .is_some_and(|timeline| timeline.finished_event == Some(timestamp))
        {
            return;
        }
        if self.open_event.is_some_and(|open| open.timestamp != timestamp) {
            self.close_open_event();
        }
        let open = self.open_event.get_or_insert(OpenEvent {
            timestamp,
            position: position as u64,
            block,
        });
        open.block = EventBlock {
            duration: open.block.duration.max(block.duration),
            ..block
        };
        self.end_position = self
            .end_position
            .max(position.saturating_add(i64::from(open.block.duration)));
        if block.end {
            self.close_open_event();
        }
    }

    /// Reports the event in progress, if any, with what is known of it.
    fn close_open_event(&mut self) {
        let Some(open) = self.open_event.take() else {
            return;
        };
        if let Some(timeline) = self.timeline.as_mut() {
            timeline.finished_event = Some(open.timestamp);
        }
        self.stats.telephone_events += 1;
        self.push(ReceiverOutput::TelephoneEvent {
            event: open.block.event,
            position: open.position,
            duration: open.block.duration,
            volume: open.block.volume,
            ended: open.block.end,
        });
    }

    fn push(&mut self, output: ReceiverOutput) {
        if self.outputs.is_full() {
            self.outputs.pop_front();
            self.stats.dropped_outputs += 1;
        }
        // Cannot fail: there is room now.
        let _ = self.outputs.push_back(output);
    }
}
