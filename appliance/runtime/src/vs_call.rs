//! One task per streamed call: the legs of one Five9 call (agent, customer, supervisor; one gRPC stream
//! each) — or the channels of one local-capture segment (`capture`) — write their PCM into one encrypted
//! recording, a channel per role, placed on the call's timeline by when each leg's audio arrived.
//! Hold/resume become pause intervals; the legs' config metadata is sealed into the manifest. The hub
//! (`vs_hub`, or the capture task) decides when the call is over and sends `Finish`.
//!
//! Placement: a leg's audio is contiguous from the moment it attached; when a leg falls more than
//! `MAX_BEHIND` behind its messages' arrival times (it stopped sending, e.g. on hold) it is re-anchored at
//! the arrival time, leaving silence, so the legs stay aligned. Arrival is stamped by the leg task, so a
//! busy recorder does not shift audio. A reconnecting leg of the same role continues on its channel.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use airlock_telemetry::{CallOutcome, Pii, RequestSource};
use tokio::sync::mpsc;

use crate::audio_redaction::{Decisions, DtmfFound, KeyedDigits, ToneWatch, decisions_of, dtmf_undecided};
use crate::call::{
    CallEnvironment, Recording, audio_hold_max, call_sample_at, open_recording, save_manifest,
};
use crate::manifest::{ChannelReport, Manifest, PauseInterval, StreamReport};
use crate::requests::{CallHandle, PauseReply, Registration, RequestedPause};
use crate::transcript::CallTranscript;

/// Inputs queued toward one call task. Bound: `CALL_QUEUE`; leg tasks wait when it is full (back-pressure
/// on the gRPC stream, never dropped audio).
pub(crate) const CALL_QUEUE: usize = 256;
/// How often audio older than the write-behind window is written and checkpointed.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(750);
/// Audio is written once it is this old, so chunks arriving a little late still land in place.
const WRITE_BEHIND: Duration = Duration::from_millis(1500);
/// A leg further behind the wall clock than this is re-anchored (it stopped sending for a while).
const MAX_BEHIND: Duration = Duration::from_millis(1000);

/// Where a streamed call comes from: names its directory, its manifest `source` and its start event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamSource {
    /// Five9 VoiceStream legs over gRPC (`vs_hub`).
    VoiceStream,
    /// A sound card's channels (`capture`).
    LocalCapture,
}

impl StreamSource {
    /// The manifest's `source` and the `call_started` event's.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            StreamSource::VoiceStream => "voicestream",
            StreamSource::LocalCapture => "local_capture",
        }
    }

    /// Tag in the call's directory name, after its start time.
    fn dir_tag(self) -> &'static str {
        match self {
            StreamSource::VoiceStream => "vs",
            StreamSource::LocalCapture => "cap",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            StreamSource::VoiceStream => "VoiceStream call",
            StreamSource::LocalCapture => "local-capture call",
        }
    }
}

/// Identifies one leg (one gRPC stream, one captured channel) inside the runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct LegId(pub u64);

/// How a leg ended, as far as the call's end reason is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LegFinish {
    /// Call ended, disconnect, or the client closed its side.
    Normal,
    /// Broken stream or idle timeout.
    Lost,
}

#[derive(Debug)]
pub(crate) enum VsCallInput {
    /// A leg joined: its role label, PCM rate, and its config metadata as JSON (sealed into the manifest).
    /// `from_start`: its audio begins at the call's start rather than when it attached (the channels of one
    /// capture device share a clock and must stay sample-aligned).
    Attach {
        leg: LegId,
        role: &'static str,
        sample_rate: u32,
        metadata_json: Pii<String>,
        from_start: bool,
    },
    /// PCM of a leg, stamped with when its message arrived (placement must not depend on how long the
    /// input waited in this task's queue).
    Audio {
        leg: LegId,
        samples: Vec<i16>,
        arrived: Instant,
    },
    Hold {
        leg: LegId,
    },
    Resume {
        leg: LegId,
    },
    Detach {
        leg: LegId,
        how: LegFinish,
    },
    /// Data about the call from a Five9 webhook (CTI event, stream status) as JSON, sealed into the manifest.
    Annotate {
        metadata_json: Pii<String>,
    },
    /// Finalise now (all legs ended and the linger passed, or shutdown).
    Finish {
        shutdown: bool,
    },
    /// Pause the whole call on request (`requests`); answers whether it is paused.
    PauseRequest {
        by: RequestSource,
        reply: PauseReply,
    },
    /// Resume a call paused on request.
    ResumeRequest {
        reply: PauseReply,
    },
}

struct LegState {
    role: &'static str,
    channel: usize,
    sample_rate: u32,
    /// Call-timeline position (at the recording rate) of the leg's next sample.
    next_sample: u64,
    paused_since: Option<Duration>,
    chunks: u64,
    samples: u64,
    attached: bool,
    /// The leg's index in the call's transcript.
    transcript_leg: usize,
    /// In-band DTMF detection on the leg's audio.
    tones: ToneWatch,
}

struct VsCall {
    source: StreamSource,
    dir_name: String,
    environment: CallEnvironment,
    started: Instant,
    recording: Recording,
    manifest: Manifest,
    legs: HashMap<LegId, LegState>,
    lost: bool,
    /// The call's transcript, one transcript leg per VoiceStream leg; `None` when transcription is off.
    transcript: Option<CallTranscript>,
    /// Transcript legs handed out so far (the next one's index).
    transcript_legs: usize,
    /// DTMF silences found since the last write, and the digits keyed so far (in memory only).
    dtmf: DtmfFound,
    keyed: KeyedDigits,
    /// The call's place in the registry of pausable calls.
    registration: Registration,
    requested_pause: RequestedPause,
}

/// Opens the recording of a streamed call from `source` at `sample_rate` with `channels` channels and starts
/// its task; returns its queue, or `None` when the recording cannot be created (the leg is then refused, so
/// no audio is taken that could not be kept). Pause requests reach the call by `source_call_id` too (the
/// Five9 call id), when there is one.
pub(crate) fn spawn(
    source: StreamSource,
    call_name: String,
    source_call_id: Option<&str>,
    environment: CallEnvironment,
    sample_rate: u32,
    channels: usize,
) -> Option<mpsc::Sender<VsCallInput>> {
    let (sender, inputs) = mpsc::channel(CALL_QUEUE);
    let handle = match source {
        StreamSource::VoiceStream => CallHandle::VoiceStream(sender.downgrade()),
        StreamSource::LocalCapture => CallHandle::LocalCapture(sender.downgrade()),
    };
    let call = VsCall::open(source, call_name, environment, (sample_rate, channels), handle)?;
    call.registration.add_ids(source_call_id);
    tokio::spawn(call.run(inputs));
    Some(sender)
}

impl VsCall {
    fn open(
        source: StreamSource,
        call_name: String,
        environment: CallEnvironment,
        (sample_rate, channels): (u32, usize),
        handle: CallHandle,
    ) -> Option<VsCall> {
        let started_wall = SystemTime::now();
        let dir_name = format!(
            "{}-{}{call_name}",
            crate::clock::compact(started_wall),
            source.dir_tag()
        );
        let dir = environment.data_dir.active_call(&dir_name);
        let hold_max = audio_hold_max(&environment);
        let opened = tokio::task::block_in_place(|| {
            open_recording(&dir, &environment, (sample_rate, channels), hold_max)
        });
        let recording = match opened {
            Ok(recording) => recording,
            Err(error) => {
                tracing::error!(%error, call = source.describe(), "cannot create the recording");
                environment.metrics.call_ended(CallOutcome::RecordingFailed);
                return None;
            }
        };
        tokio::task::block_in_place(|| {
            crate::call_started(&environment.data_dir, &dir_name, source.as_str(), started_wall)
        });
        let manifest =
            Manifest::for_stream(source.as_str(), &dir_name, started_wall, (sample_rate, channels));
        environment.metrics.active_calls.inc();
        let transcript = environment.transcription.as_ref().map(|transcription| {
            CallTranscript::open(transcription, &dir_name, started_wall, &environment.data_dir)
        });
        let registration = environment.registry.register(&dir_name, handle);
        let call = VsCall {
            source,
            registration,
            requested_pause: RequestedPause::default(),
            dir_name,
            environment,
            started: Instant::now(),
            recording,
            manifest,
            legs: HashMap::new(),
            lost: false,
            transcript,
            transcript_legs: 0,
            dtmf: DtmfFound::default(),
            keyed: KeyedDigits::default(),
        };
        call.save_manifest();
        Some(call)
    }

    async fn run(mut self, mut inputs: mpsc::Receiver<VsCallInput>) {
        let mut tick = tokio::time::interval(CHECKPOINT_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                // Queued input first: audio stamped before a flush point must be placed before it is written.
                biased;
                input = inputs.recv() => match input {
                    Some(VsCallInput::Finish { shutdown }) => {
                        let outcome = if shutdown {
                            CallOutcome::Shutdown
                        } else if self.lost {
                            CallOutcome::StreamLost
                        } else {
                            CallOutcome::StreamsEnded
                        };
                        return self.finish(outcome).await;
                    }
                    Some(input) => self.on_input(input),
                    None => return self.finish(CallOutcome::Shutdown).await,
                },
                _ = tick.tick() => {
                    let now = Instant::now();
                    let until = self.sample_at(now.checked_sub(WRITE_BEHIND).unwrap_or(self.started));
                    let decisions = self.decisions();
                    if let Err(error) = self.recording.flush_until(until, decisions).await {
                        tracing::error!(%error, "VoiceStream recording write failed; ending the call");
                        return self.finish(CallOutcome::RecordingFailed).await;
                    }
                }
            }
        }
    }

    /// What is known about the audio not yet written (see `call::CallTask::decisions`).
    fn decisions(&mut self) -> Decisions {
        let rate = self.recording.sample_rate;
        let mut decisions = decisions_of(self.transcript.as_ref(), rate, &mut self.dtmf);
        for state in self.legs.values() {
            if let Some(since) = state.tones.in_progress_since(u64::from(rate)) {
                decisions
                    .undecided
                    .push(dtmf_undecided(state.channel, since, u64::from(rate)));
            }
        }
        decisions
    }

    fn sample_at(&self, now: Instant) -> u64 {
        call_sample_at(self.started, now, u64::from(self.recording.sample_rate))
    }

    fn on_input(&mut self, input: VsCallInput) {
        let now = Instant::now();
        let at = now.duration_since(self.started);
        match input {
            VsCallInput::Attach {
                leg,
                role,
                sample_rate,
                metadata_json,
                from_start,
            } => {
                let channel = self.channel_for(role);
                // A reconnecting leg continues where its role left off, never over it.
                let previous_end = self
                    .legs
                    .values()
                    .filter(|other| other.role == role)
                    .map(|other| other.next_sample)
                    .max()
                    .unwrap_or(0);
                let attached_at = if from_start { 0 } else { self.sample_at(now) };
                let next_sample = attached_at.max(previous_end);
                self.manifest.channels.push(ChannelReport::new(channel, role, at));
                // Each leg is a leg of its own in the transcript (legs may share a channel).
                let transcript_leg = self.transcript_legs;
                self.transcript_legs += 1;
                if let Some(transcript) = &self.transcript {
                    transcript.name_leg(transcript_leg, role, channel);
                }
                self.manifest
                    .seal_metadata(metadata_json.expose(), &self.environment.recipients);
                self.manifest.choose_retention_by_json(
                    self.environment.data_dir.outbox().policy(),
                    metadata_json.expose(),
                );
                self.legs.insert(
                    leg,
                    LegState {
                        role,
                        channel,
                        sample_rate,
                        next_sample,
                        paused_since: None,
                        chunks: 0,
                        samples: 0,
                        attached: true,
                        transcript_leg,
                        tones: ToneWatch::default(),
                    },
                );
                self.refresh_streams();
                self.save_manifest();
            }
            VsCallInput::Audio {
                leg,
                mut samples,
                arrived,
            } => self.place(leg, arrived, &mut samples),
            VsCallInput::Hold { leg } => {
                if let Some(state) = self.legs.get_mut(&leg)
                    && state.paused_since.is_none()
                {
                    state.paused_since = Some(at);
                }
            }
            VsCallInput::Resume { leg } => {
                if let Some(state) = self.legs.get_mut(&leg)
                    && let Some(since) = state.paused_since.take()
                {
                    self.manifest
                        .pauses
                        .push(PauseInterval::new(state.role, since, at));
                    self.save_manifest();
                }
            }
            VsCallInput::Detach { leg, how } => {
                if how == LegFinish::Lost {
                    self.lost = true;
                }
                if let Some(state) = self.legs.get_mut(&leg) {
                    state.attached = false;
                    if let Some(since) = state.paused_since.take() {
                        self.manifest
                            .pauses
                            .push(PauseInterval::new(state.role, since, at));
                    }
                }
                self.refresh_streams();
                self.save_manifest();
            }
            VsCallInput::Annotate { metadata_json } => {
                self.manifest
                    .seal_metadata(metadata_json.expose(), &self.environment.recipients);
                self.manifest.choose_retention_by_json(
                    self.environment.data_dir.outbox().policy(),
                    metadata_json.expose(),
                );
                self.save_manifest();
            }
            VsCallInput::PauseRequest { by, reply } => {
                let sample = self.sample_at(now);
                let paused = self.requested_pause.pause(sample, at, by);
                if paused.is_some() {
                    tracing::info!(by = by.as_str(), "call paused on request");
                }
                let _ = reply.send(paused);
            }
            VsCallInput::ResumeRequest { reply } => {
                let sample = self.sample_at(now);
                let rate = self.recording.sample_rate;
                if let Some(interval) = self.requested_pause.resume(sample, at, rate) {
                    tracing::info!("call resumed on request");
                    self.manifest.pauses.push(interval);
                    self.save_manifest();
                }
                let _ = reply.send(Some(self.requested_pause.is_paused()));
            }
            VsCallInput::Finish { .. } => {}
        }
    }

    /// The channel of a role: agent 0, customer 1, supervisor 2 (when there are three channels); anything
    /// else shares the channel with the fewest attached legs (mixed there, as the manifest says).
    fn channel_for(&self, role: &str) -> usize {
        let fixed = match role {
            "agent" => Some(0),
            "customer" => Some(1),
            "supervisor" => Some(2),
            _ => None,
        };
        match fixed {
            Some(channel) if channel < self.recording.channels => channel,
            _ => (0..self.recording.channels)
                .min_by_key(|channel| {
                    self.legs
                        .values()
                        .filter(|leg| leg.attached && leg.channel == *channel)
                        .count()
                })
                .unwrap_or(0),
        }
    }

    fn place(&mut self, leg: LegId, arrived: Instant, samples: &mut [i16]) {
        let rate = self.recording.sample_rate;
        let wall = self.sample_at(arrived);
        let max_behind = u64::try_from(MAX_BEHIND.as_millis()).unwrap_or(u64::MAX) * u64::from(rate) / 1000;
        let shared = self.legs.get(&leg).is_some_and(|state| {
            self.legs
                .values()
                .filter(|other| other.attached && other.channel == state.channel)
                .count()
                > 1
        });
        let Some(state) = self.legs.get_mut(&leg) else {
            return;
        };
        let mut resampled = airlock_media::resample(samples, state.sample_rate, rate).into_owned();
        let length = resampled.len() as u64;
        if state
            .next_sample
            .saturating_add(length)
            .saturating_add(max_behind)
            < wall
        {
            state.next_sample = wall.saturating_sub(length);
        }
        state.chunks += 1;
        state.samples += samples.len() as u64;
        // Paused on request: the timeline moves on, but nothing of the pause is recorded or transcribed.
        let pause = &self.requested_pause;
        // Whatever arrives while paused is muted, wherever the leg's timeline places it.
        let audible = !pause.is_paused()
            && pause.mute(state.next_sample, rate, state.sample_rate, samples)
            && pause.mute(state.next_sample, rate, rate, &mut resampled);
        if !audible {
            state.next_sample = state.next_sample.saturating_add(length);
            return;
        }
        if shared {
            self.recording
                .interleaver
                .mix(state.channel, state.next_sample, &resampled);
        } else {
            self.recording
                .interleaver
                .push(state.channel, state.next_sample, &resampled);
        }
        // The leg's own PCM at its own rate, positioned where the recording placed it.
        let position =
            state.next_sample.saturating_mul(u64::from(state.sample_rate)) / u64::from(rate.max(1));
        // Transcription gets it with DTMF silenced.
        let transcript = &self.transcript;
        let transcript_leg = state.transcript_leg;
        state
            .tones
            .push(state.sample_rate, position, samples, |rate, position, masked| {
                if let Some(transcript) = transcript {
                    transcript.push(transcript_leg, rate, position, masked);
                }
            });
        state
            .tones
            .take_masks(state.channel, u64::from(rate), &mut self.keyed, &mut self.dtmf);
        state.next_sample = state.next_sample.saturating_add(length);
    }

    fn refresh_streams(&mut self) {
        let mut legs: Vec<&LegState> = self.legs.values().collect();
        legs.sort_by_key(|leg| (leg.channel, leg.role));
        self.manifest.streams = legs
            .into_iter()
            .map(|leg| StreamReport {
                label: leg.role.to_string(),
                channel: leg.channel,
                codec: Some(format!("L16/{}", leg.sample_rate)),
                packets_received: leg.chunks,
                packets_lost: 0,
                packets_late: 0,
                packets_duplicate: 0,
                ssrc_changes: 0,
                srtp: None,
            })
            .collect();
    }

    fn dir(&self) -> PathBuf {
        self.environment.data_dir.active_call(&self.dir_name)
    }

    fn save_manifest(&self) {
        save_manifest(&self.dir(), &self.manifest);
    }

    async fn finish(mut self, outcome: CallOutcome) {
        self.registration.close();
        let rate = u64::from(self.recording.sample_rate);
        for state in self.legs.values_mut() {
            state.tones.finish(
                self.transcript.as_ref(),
                (state.transcript_leg, state.channel),
                rate,
                &mut self.keyed,
                &mut self.dtmf,
            );
        }
        // The transcript first: its last words decide what of the held audio is silenced (taken out before
        // the DTMF decisions, so its stale in-call verdicts are not among them).
        let transcript = self.transcript.take();
        let mut decisions = self.decisions();
        if let Some(transcript) = transcript {
            let shutting_down = outcome == CallOutcome::Shutdown;
            let (report, release) = transcript.finish(&self.dir(), shutting_down).await;
            self.manifest.transcript = report;
            decisions.add_final(release, self.recording.sample_rate);
        }
        let flushed = self.recording.flush_all(decisions).await;
        self.manifest.note_audio_redaction(&self.recording.redactor);
        let at = Instant::now().duration_since(self.started);
        let end = self.recording.interleaver.end_position();
        let rate = self.recording.sample_rate;
        if let Some(interval) = self.requested_pause.resume(end, at, rate) {
            self.manifest.pauses.push(interval);
        }
        for state in self.legs.values_mut() {
            if let Some(since) = state.paused_since.take() {
                self.manifest
                    .pauses
                    .push(PauseInterval::new(state.role, since, at));
            }
        }
        self.refresh_streams();
        let outcome = self.recording.close_and_publish(
            flushed,
            outcome,
            &mut self.manifest,
            &self.environment,
            &self.dir_name,
        );
        self.environment.metrics.active_calls.dec();
        self.environment.metrics.call_ended(outcome);
        tracing::info!(
            outcome = outcome.as_str(),
            call = self.source.describe(),
            "call recorded"
        );
    }
}
