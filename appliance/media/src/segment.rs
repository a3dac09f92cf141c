//! Cuts a continuous capture (a sound card's line-in tap) into calls, sans-IO: the caller hands in each
//! frame's time and level and polls for call starts and ends. Two ways to cut: by level (a call starts once
//! the line has been loud for a while and ends after a stretch of quiet, or at a maximum length) or by
//! schedule (back-to-back segments of a fixed length, aligned to the wall clock). Time is a parameter —
//! the wall-clock time of a frame's first sample as a `Duration` since the Unix epoch — so tests run hours
//! of line in milliseconds. The [`level_dbfs`] of a frame is computed here too.

use std::collections::VecDeque;
use std::time::Duration;

/// How a capture is cut into calls.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Segmentation {
    Level(LevelConfig),
    /// Back-to-back calls of this length, cut where the wall clock passes a multiple of it (a 900 s schedule
    /// cuts at :00, :15, :30 and :45 of every hour, UTC).
    Schedule {
        segment: Duration,
    },
}

/// Level segmentation: what counts as a call on the line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LevelConfig {
    /// A frame at or above this level (dBFS, RMS) is loud.
    pub start_dbfs: f32,
    /// The line must stay loud this long (without a quiet frame) before a call starts; the call starts
    /// where the loud run began.
    pub start_after: Duration,
    /// Quiet this long ends the call (the quiet stays in the recording).
    pub end_after: Duration,
    /// A call this long ends and, the line being in use, the next one starts at once.
    pub max_call: Duration,
}

/// Why a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The line was quiet for `end_after`.
    Silence,
    /// The call reached `max_call`; another one starts at the same time.
    MaxLength,
    /// The schedule's segment ended; the next one starts at the same time.
    Schedule,
    /// The capture was interrupted (device lost, or the appliance stops).
    Interrupted,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Silence => "silence",
            EndReason::MaxLength => "max_length",
            EndReason::Schedule => "schedule",
            EndReason::Interrupted => "interrupted",
        }
    }
}

/// What the caller must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentEvent {
    /// Open a call whose audio begins at `at` (for level segmentation, earlier than the frame just handed
    /// in: the caller keeps the last `start_after` of audio to put at the call's start).
    Start { at: Duration },
    /// Finish the open call at `at`: after the frame just handed in, which is the call's last (for an
    /// interruption, where the capture stopped). After `MaxLength` and `Schedule` a `Start` at the same time
    /// follows.
    End { at: Duration, reason: EndReason },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    /// No call: `loud_since` is where the current loud run began.
    Idle { loud_since: Option<Duration> },
    /// A call since `started`; `quiet_since` is where the current quiet run began. `boundary` is when a
    /// scheduled segment ends.
    InCall {
        started: Duration,
        quiet_since: Option<Duration>,
        boundary: Option<Duration>,
    },
}

/// The segmenter of one capture.
#[derive(Debug)]
pub struct Segmenter {
    mode: Segmentation,
    state: State,
    events: VecDeque<SegmentEvent>,
}

impl Segmenter {
    pub fn new(mode: Segmentation) -> Segmenter {
        Segmenter {
            mode,
            state: State::Idle { loud_since: None },
            // At most an end and a start per frame.
            events: VecDeque::with_capacity(2),
        }
    }

    /// Whether a call is open.
    pub fn in_call(&self) -> bool {
        matches!(self.state, State::InCall { .. })
    }

    /// One frame of capture: its first sample at `at`, lasting `length`, at `level` dBFS. Frames must come in
    /// time order; a frame before the previous one is handled as if it came at the same time.
    pub fn handle_frame(&mut self, at: Duration, length: Duration, level: f32) {
        match self.mode {
            Segmentation::Level(config) => self.level_frame(config, at, length, level),
            Segmentation::Schedule { segment } => self.schedule_frame(segment, at, length),
        }
    }

    /// The capture stopped at `at` (device lost, shutdown): the open call, if any, ends.
    pub fn handle_interruption(&mut self, at: Duration) {
        if self.in_call() {
            self.events.push_back(SegmentEvent::End {
                at,
                reason: EndReason::Interrupted,
            });
        }
        self.state = State::Idle { loud_since: None };
    }

    /// The next thing to do, in order.
    pub fn poll(&mut self) -> Option<SegmentEvent> {
        self.events.pop_front()
    }

    fn level_frame(&mut self, config: LevelConfig, at: Duration, length: Duration, level: f32) {
        let loud = level >= config.start_dbfs;
        let end = at.saturating_add(length);
        match self.state {
            State::Idle { loud_since } => {
                let loud_since = match (loud, loud_since) {
                    (false, _) => None,
                    (true, None) => Some(at),
                    (true, Some(since)) => Some(since),
                };
                match loud_since {
                    Some(since) if end.saturating_sub(since) >= config.start_after => {
                        self.events.push_back(SegmentEvent::Start { at: since });
                        self.state = State::InCall {
                            started: since,
                            quiet_since: None,
                            boundary: None,
                        };
                    }
                    _ => self.state = State::Idle { loud_since },
                }
            }
            State::InCall {
                started,
                quiet_since,
                boundary,
            } => {
                if end.saturating_sub(started) >= config.max_call {
                    self.events.push_back(SegmentEvent::End {
                        at: end,
                        reason: EndReason::MaxLength,
                    });
                    self.events.push_back(SegmentEvent::Start { at: end });
                    self.state = State::InCall {
                        started: end,
                        quiet_since: if loud { None } else { Some(at) },
                        boundary,
                    };
                    return;
                }
                let quiet_since = match (loud, quiet_since) {
                    (true, _) => None,
                    (false, None) => Some(at),
                    (false, Some(since)) => Some(since),
                };
                match quiet_since {
                    Some(since) if end.saturating_sub(since) >= config.end_after => {
                        // The frame completing the quiet stretch is the call's last.
                        self.events.push_back(SegmentEvent::End {
                            at: end,
                            reason: EndReason::Silence,
                        });
                        self.state = State::Idle { loud_since: None };
                    }
                    _ => {
                        self.state = State::InCall {
                            started,
                            quiet_since,
                            boundary,
                        }
                    }
                }
            }
        }
    }

    fn schedule_frame(&mut self, segment: Duration, at: Duration, length: Duration) {
        let end = at.saturating_add(length);
        match self.state {
            State::Idle { .. } => {
                self.events.push_back(SegmentEvent::Start { at });
                self.state = State::InCall {
                    started: at,
                    quiet_since: None,
                    boundary: Some(next_boundary(at, segment)),
                };
            }
            State::InCall {
                boundary: Some(boundary),
                ..
            } if end >= boundary => {
                self.events.push_back(SegmentEvent::End {
                    at: end,
                    reason: EndReason::Schedule,
                });
                self.events.push_back(SegmentEvent::Start { at: end });
                self.state = State::InCall {
                    started: end,
                    quiet_since: None,
                    boundary: Some(next_boundary(end, segment)),
                };
            }
            State::InCall { .. } => {}
        }
    }
}

/// The first multiple of `segment` (since the epoch) after `at`.
fn next_boundary(at: Duration, segment: Duration) -> Duration {
    let segment_ns = segment.as_nanos().max(1);
    let next = (at.as_nanos() / segment_ns + 1) * segment_ns;
    let secs = u64::try_from(next / 1_000_000_000).unwrap_or(u64::MAX);
    // The remainder of a division by 10^9 fits in u32.
    let nanos = u32::try_from(next % 1_000_000_000).unwrap_or(0);
    Duration::new(secs, nanos)
}

/// The RMS level of 16-bit samples in dBFS (a full-scale square wave is 0 dBFS); silence and an empty frame
/// are -120 dBFS.
pub fn level_dbfs(samples: &[i16]) -> f32 {
    const FLOOR: f32 = -120.0;
    if samples.is_empty() {
        return FLOOR;
    }
    let sum: f64 = samples
        .iter()
        .map(|&s| {
            let s = f64::from(s) / 32768.0;
            s * s
        })
        .sum();
    let rms = (sum / samples.len() as f64).sqrt();
    if rms <= 0.0 {
        return FLOOR;
    }
    (20.0 * rms.log10()).max(f64::from(FLOOR)) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: Duration = Duration::from_millis(20);
    const LOUD: f32 = -20.0;
    const QUIET: f32 = -70.0;

    fn level() -> Segmenter {
        Segmenter::new(Segmentation::Level(LevelConfig {
            start_dbfs: -45.0,
            start_after: Duration::from_millis(200),
            end_after: Duration::from_secs(3),
            max_call: Duration::from_secs(4 * 3600),
        }))
    }

    /// Feeds `frames` 20 ms frames of `level` from `*at`, collecting the events.
    fn feed(seg: &mut Segmenter, at: &mut Duration, frames: u64, level: f32) -> Vec<SegmentEvent> {
        let mut events = Vec::new();
        for _ in 0..frames {
            seg.handle_frame(*at, FRAME, level);
            *at += FRAME;
            while let Some(event) = seg.poll() {
                events.push(event);
            }
        }
        events
    }

    const T0: Duration = Duration::from_secs(1_800_000_000);

    #[test]
    fn speech_starts_a_call_where_it_began_and_silence_ends_it() {
        let mut seg = level();
        let mut at = T0;
        assert!(feed(&mut seg, &mut at, 100, QUIET).is_empty());
        let speech_at = at;
        // 180 ms of loud line is not yet a call; the tenth frame (200 ms) is.
        assert!(feed(&mut seg, &mut at, 9, LOUD).is_empty());
        assert_eq!(
            feed(&mut seg, &mut at, 1, LOUD),
            vec![SegmentEvent::Start { at: speech_at }]
        );
        assert!(seg.in_call());
        // Pauses shorter than end_after do not end it.
        assert!(feed(&mut seg, &mut at, 100, QUIET).is_empty());
        assert!(feed(&mut seg, &mut at, 50, LOUD).is_empty());
        let quiet_at = at;
        assert!(feed(&mut seg, &mut at, 149, QUIET).is_empty());
        assert_eq!(
            feed(&mut seg, &mut at, 1, QUIET),
            vec![SegmentEvent::End {
                at: quiet_at + Duration::from_secs(3),
                reason: EndReason::Silence
            }]
        );
        assert!(!seg.in_call());
    }

    #[test]
    fn a_loud_click_is_not_a_call() {
        let mut seg = level();
        let mut at = T0;
        for _ in 0..1000 {
            assert!(feed(&mut seg, &mut at, 5, LOUD).is_empty());
            assert!(feed(&mut seg, &mut at, 1, QUIET).is_empty());
        }
        assert!(!seg.in_call());
    }

    #[test]
    fn a_four_hour_busy_line_is_cut_at_max_length_without_a_gap() {
        let mut seg = level();
        let mut at = T0;
        let events = feed(&mut seg, &mut at, 9 * 3600 * 50, LOUD);
        let starts: Vec<_> = events
            .iter()
            .filter_map(|event| match event {
                SegmentEvent::Start { at } => Some(*at),
                SegmentEvent::End { .. } => None,
            })
            .collect();
        assert_eq!(
            starts,
            vec![
                T0,
                T0 + Duration::from_secs(4 * 3600),
                T0 + Duration::from_secs(8 * 3600)
            ]
        );
        assert_eq!(
            events[1],
            SegmentEvent::End {
                at: T0 + Duration::from_secs(4 * 3600),
                reason: EndReason::MaxLength
            }
        );
        assert_eq!(events.len(), 5);
    }

    #[test]
    fn schedule_cuts_on_wall_clock_multiples() {
        let mut seg = Segmenter::new(Segmentation::Schedule {
            segment: Duration::from_secs(900),
        });
        // Start 100 s after a quarter hour: the first call is 800 s, the next ones 900 s.
        let mut at = Duration::from_secs(1_800_000_000 + 100);
        let events = feed(&mut seg, &mut at, 2000 * 50, QUIET);
        let first = Duration::from_secs(1_800_000_000 + 100);
        let cut = Duration::from_secs(1_800_000_900);
        assert_eq!(events[0], SegmentEvent::Start { at: first });
        assert_eq!(
            events[1],
            SegmentEvent::End {
                at: cut,
                reason: EndReason::Schedule
            }
        );
        assert_eq!(events[2], SegmentEvent::Start { at: cut });
        assert_eq!(
            events[3],
            SegmentEvent::End {
                at: cut + Duration::from_secs(900),
                reason: EndReason::Schedule
            }
        );
        assert_eq!(events.len(), 5);
    }

    #[test]
    fn an_interruption_ends_the_open_call_only() {
        let mut seg = level();
        let mut at = T0;
        seg.handle_interruption(at);
        assert_eq!(seg.poll(), None);
        feed(&mut seg, &mut at, 20, LOUD);
        seg.handle_interruption(at);
        assert_eq!(
            seg.poll(),
            Some(SegmentEvent::End {
                at,
                reason: EndReason::Interrupted
            })
        );
        assert!(!seg.in_call());
        // After the device is back, a schedule would start at once, level waits for loudness again.
        assert!(feed(&mut seg, &mut at, 5, LOUD).is_empty());
        let mut sched = Segmenter::new(Segmentation::Schedule {
            segment: Duration::from_secs(60),
        });
        sched.handle_frame(at, FRAME, QUIET);
        sched.handle_interruption(at + FRAME);
        sched.handle_frame(at + Duration::from_secs(5), FRAME, QUIET);
        let events: Vec<_> = std::iter::from_fn(|| sched.poll()).collect();
        assert_eq!(events.len(), 3);
        assert_eq!(
            events[2],
            SegmentEvent::Start {
                at: at + Duration::from_secs(5)
            }
        );
    }

    #[test]
    fn levels_in_dbfs() {
        assert_eq!(level_dbfs(&[]), -120.0);
        assert_eq!(level_dbfs(&[0; 160]), -120.0);
        let square: Vec<i16> = (0..160)
            .map(|i| if i % 2 == 0 { 32767 } else { -32768 })
            .collect();
        assert!(level_dbfs(&square).abs() < 0.01);
        let tenth: Vec<i16> = (0..160).map(|i| if i % 2 == 0 { 3277 } else { -3277 }).collect();
        assert!((level_dbfs(&tenth) + 20.0).abs() < 0.01);
        assert!(level_dbfs(&[1, -1, 1, -1]) < -90.0);
    }
}
