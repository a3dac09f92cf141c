//! One task per recorded call: binds the RTP sockets of its streams, runs each stream's `rtp::Receiver`,
//! decodes the audio, lines the legs up in time and writes them as channels of one encrypted WAV, then
//! finalises the recording and its manifest and publishes the call to `uplink/`.
//!
//! Queue policy: each socket task forwards datagrams into the call's bounded packet queue and waits when it
//! is full (recording never drops); the kernel socket buffer absorbs the wait, and what it cannot absorb is
//! lost before we see it. Audio is written and checkpointed once a second, so a crash loses at most that
//! plus the audio-redaction hold.
//!
//! Audio redaction: before audio is written (encrypted) it passes `audio_redaction`: DTMF (in-band tones
//! found by a detector per stream, RFC 4733 events) and the spans of words the transcript redacted are
//! silenced, and audio is held back until its words are decided (see `audio_redaction` for the limit).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use airlock_media::{Codec, Decoder};
use airlock_recording::{DEFAULT_MAX_PENDING_FRAMES, Interleaver, Recipient, RecordingWriter, WavFormat};
use airlock_rtp::{Receiver, ReceiverConfig, ReceiverOutput, SrtpConfig, SrtpError, SrtpInbound};
use airlock_siprec::sdes::SdesKey;
use airlock_siprec::srs::{CallId, MediaEvent, PlannedStream, RecordingPlan};
use airlock_telemetry::SrtpDropReason;
use airlock_telemetry::{CallOutcome, Metrics, RequestSource};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::audio_redaction::{
    AudioRedactor, Decisions, DtmfFound, KeyedDigits, ToneWatch, decisions_of, dtmf_mask, dtmf_undecided,
    take_frames,
};
use crate::control::ControlInput;
use crate::manifest::{ChannelReport, Manifest, PauseInterval, SrtpReport, StreamReport};
use crate::requests::{CallHandle, PauseReply, Registration, RequestedPause, siprec_call_ids};
use crate::storage::{DataDir, write_json_atomically};
use crate::transcript::CallTranscript;

/// Datagrams queued from the sockets of one call before socket tasks wait.
const PACKET_QUEUE: usize = 4096;
/// How often buffered audio is encrypted to disk and checkpointed. A crash loses at most
/// CHECKPOINT_INTERVAL + the write-behind window + TICK of audio: 0.75 + 0.15 + 0.1 = 1 s with the default
/// reorder delay (60 ms).
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(750);
/// How often receivers are polled for reorder deadlines and inactivity.
const TICK: Duration = Duration::from_millis(100);
/// At the end of a call, at most this many datagrams per stream are still read from its socket.
const LEFTOVER_DATAGRAMS: usize = 1024;
/// Audio this much older than the reorder delay is written; until then late packets still land in place.
const WRITE_BEHIND_BEYOND_REORDER: Duration = Duration::from_millis(90);
/// How far a stream's RTP clock may stray from the wall clock before it is re-anchored.
const MAX_CLOCK_DRIFT: Duration = Duration::from_secs(5);
/// The manifest (with stream statistics) is rewritten every this many checkpoints, so a call
/// recovered after a crash still reports its streams.
const MANIFEST_EVERY_CHECKPOINTS: u64 = 3;
/// Commands queued toward a call task.
const COMMAND_QUEUE: usize = 16;
/// The interleaver buffers this much more than the audio-redaction hold (write-behind, late packets).
const INTERLEAVER_MARGIN: Duration = Duration::from_secs(10);
/// Without transcription, audio is held at most this long for a DTMF tone or event in progress.
const DTMF_HOLD_MAX: Duration = Duration::from_secs(5);

/// What the call task needs from the appliance.
#[derive(Debug, Clone)]
pub struct CallEnvironment {
    pub data_dir: DataDir,
    pub recipients: Arc<Vec<Recipient>>,
    pub bind_ip: IpAddr,
    pub inactivity_timeout: Duration,
    pub reorder_delay: Duration,
    pub metrics: Metrics,
    pub control: mpsc::Sender<ControlInput>,
    /// On-device transcription; `None` when disabled.
    pub transcription: Option<crate::Transcription>,
    /// Live calls by id, for pause/resume requests.
    pub registry: crate::requests::Registry,
}

/// RTP sockets bound by the control loop before it answers, keyed by local port, so the SRC's first
/// packets (sent as soon as it reads our answer) find an open port.
pub type MediaSockets = HashMap<u16, UdpSocket>;

/// Binds a socket for every stream of `plan` whose port is not in `bound` yet.
pub async fn bind_new_streams(
    bind_ip: IpAddr,
    plan: &RecordingPlan,
    bound: &HashSet<u16>,
) -> std::io::Result<MediaSockets> {
    let mut sockets = MediaSockets::new();
    for stream in plan
        .streams
        .iter()
        .filter(|stream| !bound.contains(&stream.local_port))
    {
        let socket = UdpSocket::bind(SocketAddr::new(bind_ip, stream.local_port)).await?;
        sockets.insert(stream.local_port, socket);
    }
    Ok(sockets)
}

/// Instructions from the control loop.
#[derive(Debug)]
pub enum CallCommand {
    /// The SRC changed the session (streams added/removed, pause/resume, metadata); sockets for the
    /// streams it added are already bound.
    Update(RecordingPlan, MediaSockets),
    /// The call is over: finalise with this outcome.
    End(CallOutcome),
    /// Pause the whole call on request (`requests`); answers whether it is paused.
    Pause { by: RequestSource, reply: PauseReply },
    /// Resume a call paused on request.
    Resume { reply: PauseReply },
}

/// Starts the task recording `call` according to `plan`; returns its command queue.
pub fn spawn(
    call: CallId,
    plan: RecordingPlan,
    sockets: MediaSockets,
    environment: CallEnvironment,
) -> mpsc::Sender<CallCommand> {
    let (commands, command_rx) = mpsc::channel(COMMAND_QUEUE);
    let handle = CallHandle::Siprec(commands.downgrade());
    tokio::spawn(async move {
        let control = environment.control.clone();
        let outcome = run(call, plan, sockets, environment, command_rx, handle).await;
        let _ = control.send(ControlInput::CallFinished { call, outcome }).await;
    });
    commands
}

struct Datagram {
    stream: usize,
    received_at: Instant,
    bytes: Vec<u8>,
}

/// One SIPREC stream (one m-line, one `a=label`) as recorded.
struct StreamState {
    label: String,
    channel: usize,
    receiver: Receiver,
    decoders: BTreeMap<u8, (Codec, Decoder)>,
    /// Call-timeline sample at which this receiver's position 0 lies.
    origin_sample: u64,
    /// Decoded PCM samples per RTP clock unit, as a ratio (G.722: 2/1).
    pcm_per_clock: (u64, u64),
    socket_task: Option<JoinHandle<()>>,
    /// The stream's socket (also held by its task), so the end of the call can read what is left in it.
    socket: Option<Arc<UdpSocket>>,
    paused_since: Option<Duration>,
    /// The last valid RTP/RTCP packet, or when the stream was added or resumed.
    last_activity: Instant,
    scratch: Vec<i16>,
    last_codec: Option<Codec>,
    /// SRTP streams: the keys (current, and the previous one for a grace period after a rekey).
    srtp: Option<StreamSrtp>,
    /// In-band DTMF detection on the decoded audio.
    tones: ToneWatch,
}

/// How long packets protected with the previous key are still accepted after a rekey.
const SRTP_REKEY_GRACE: Duration = Duration::from_secs(5);

/// The SRTP side of one stream.
struct StreamSrtp {
    inbound: SrtpInbound,
    /// The key in use (the SDES tag may change without a new key).
    key: SdesKey,
    rekeys: u64,
    /// Decrypted packet, reused.
    plain: Vec<u8>,
}

impl StreamSrtp {
    fn new(key: &SdesKey) -> StreamSrtp {
        StreamSrtp {
            inbound: SrtpInbound::new(&key.key, SrtpConfig::default()),
            key: key.clone(),
            rekeys: 0,
            plain: Vec::with_capacity(2048),
        }
    }
}

/// The drop reason counted for an SRTP error.
fn srtp_drop_reason(error: &SrtpError) -> SrtpDropReason {
    if error.is_auth_failure() {
        SrtpDropReason::AuthFailed
    } else if error.is_replay() {
        SrtpDropReason::Replayed
    } else {
        SrtpDropReason::Malformed
    }
}

/// RTCP multiplexed per RFC 5761 (second byte 192–223). On an SRTP stream it is SRTCP, which the recorder
/// does not authenticate or need: it is dropped and counted, and never counts as activity (unauthenticated
/// packets must not keep a call alive).
fn is_rtcp(datagram: &[u8]) -> bool {
    datagram.get(1).is_some_and(|byte| (192..=223).contains(byte))
}

pub(crate) struct Recording {
    pub(crate) writer: RecordingWriter,
    pub(crate) interleaver: Interleaver,
    pub(crate) sample_rate: u32,
    pub(crate) channels: usize,
    /// Call-timeline position up to which audio has been written.
    written_until: u64,
    /// What is silenced before it is written.
    pub(crate) redactor: AudioRedactor,
    /// The longest audio is held back for undecided words or tones, in samples.
    hold_max: u64,
}

impl Recording {
    /// Writes the interleaved audio before `until` that is not written yet — held back to where `decisions`
    /// say audio is still undecided, for at most the hold — silences what must be, and checkpoints it.
    pub(crate) async fn flush_until(&mut self, until: u64, decisions: Decisions) -> std::io::Result<()> {
        let floor = until.saturating_sub(self.hold_max);
        self.write(decisions, until, floor).await
    }

    /// Writes everything still buffered (the end of the call); what is still undecided is silenced.
    pub(crate) async fn flush_all(&mut self, decisions: Decisions) -> std::io::Result<()> {
        let end = self.interleaver.end_position().max(self.written_until);
        self.write(decisions, end, end).await
    }

    async fn write(&mut self, decisions: Decisions, until: u64, floor: u64) -> std::io::Result<()> {
        let release = self
            .redactor
            .release_point(decisions, until, floor, self.written_until);
        if floor < until {
            let held = until.saturating_sub(release) as f64 / f64::from(self.sample_rate.max(1));
            self.redactor.observe_hold(held);
        }
        if release <= self.written_until {
            return Ok(());
        }
        let (frames, end) = take_frames(
            &mut self.interleaver,
            &mut self.redactor,
            release,
            self.written_until,
        );
        self.written_until = end;
        let writer = &mut self.writer;
        tokio::task::block_in_place(|| {
            writer.write_interleaved(&frames)?;
            writer.checkpoint()
        })
        .map_err(std::io::Error::other)
    }

    /// Closes the recording after the last flush (`flushed`), completes and saves `manifest`, and publishes
    /// the call to `uplink/`. Returns the outcome: `RecordingFailed` when the audio could not all be written.
    pub(crate) fn close_and_publish(
        self,
        flushed: std::io::Result<()>,
        outcome: CallOutcome,
        manifest: &mut Manifest,
        environment: &CallEnvironment,
        dir_name: &str,
    ) -> CallOutcome {
        let outcome = match flushed {
            Ok(()) => outcome,
            Err(_) => CallOutcome::RecordingFailed,
        };
        match tokio::task::block_in_place(|| self.writer.finish()) {
            Ok(finished) => {
                environment.metrics.recorded_bytes.inc_by(finished.bytes);
                manifest.complete(&finished, SystemTime::now(), outcome);
            }
            Err(error) => tracing::error!(%error, "cannot finalise the recording"),
        }
        save_manifest(&environment.data_dir.active_call(dir_name), manifest);
        tokio::task::block_in_place(|| crate::publish_call(&environment.data_dir, dir_name, manifest));
        outcome
    }
}

struct CallTask {
    dir_name: String,
    environment: CallEnvironment,
    started: Instant,
    streams: Vec<StreamState>,
    recording: Recording,
    packets: mpsc::Sender<Datagram>,
    manifest: Manifest,
    checkpoints: u64,
    /// The call's transcript, fed with each stream's decoded audio; `None` when transcription is off.
    transcript: Option<CallTranscript>,
    /// Silences found since the last write (DTMF), and the digits keyed so far (in memory only).
    dtmf: DtmfFound,
    keyed: KeyedDigits,
    /// The call's place in the registry of pausable calls.
    registration: Registration,
    requested_pause: RequestedPause,
}

async fn run(
    call: CallId,
    plan: RecordingPlan,
    sockets: MediaSockets,
    environment: CallEnvironment,
    mut commands: mpsc::Receiver<CallCommand>,
    handle: CallHandle,
) -> CallOutcome {
    let (packets, mut packet_rx) = mpsc::channel(PACKET_QUEUE);
    let started = CallTask::start(call, &plan, sockets, environment, packets, handle).await;
    let mut task = match started {
        Ok(task) => task,
        Err((environment, outcome)) => {
            let _ = environment
                .control
                .send(ControlInput::Media {
                    call,
                    event: media_event_for(outcome),
                })
                .await;
            return outcome;
        }
    };
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_checkpoint = Instant::now() + CHECKPOINT_INTERVAL;
    let mut inactivity_reported = false;
    loop {
        tokio::select! {
            Some(datagram) = packet_rx.recv() => task.on_datagram(datagram),
            command = commands.recv() => match command {
                Some(CallCommand::Update(plan, sockets)) => task.update(&plan, sockets),
                Some(CallCommand::End(outcome)) => return task.finish(outcome, &mut packet_rx).await,
                Some(CallCommand::Pause { by, reply }) => {
                    let _ = reply.send(task.pause_on_request(by));
                }
                Some(CallCommand::Resume { reply }) => {
                    let _ = reply.send(Some(task.resume_on_request()));
                }
                None => return task.finish(CallOutcome::Shutdown, &mut packet_rx).await,
            },
            _ = tick.tick() => {
                let now = Instant::now();
                task.poll_receivers(now);
                if !inactivity_reported && task.all_streams_inactive(now) {
                    inactivity_reported = true;
                    let input = ControlInput::Media { call, event: MediaEvent::RtpInactivityTimeout };
                    let _ = task.environment.control.send(input).await;
                }
                if now >= next_checkpoint {
                    next_checkpoint = now + CHECKPOINT_INTERVAL;
                    if let Err(error) = task.write_and_checkpoint(now).await {
                        tracing::error!(%error, "recording write failed; ending the call");
                        let input = ControlInput::Media { call, event: MediaEvent::RecordingFailed };
                        let _ = task.environment.control.send(input).await;
                    }
                }
            }
        }
    }
}

fn media_event_for(outcome: CallOutcome) -> MediaEvent {
    match outcome {
        CallOutcome::RecordingFailed => MediaEvent::RecordingFailed,
        _ => MediaEvent::MediaBindFailed,
    }
}

impl CallTask {
    async fn start(
        call: CallId,
        plan: &RecordingPlan,
        mut sockets: MediaSockets,
        environment: CallEnvironment,
        packets: mpsc::Sender<Datagram>,
        handle: CallHandle,
    ) -> Result<CallTask, (CallEnvironment, CallOutcome)> {
        let started = Instant::now();
        let started_wall = SystemTime::now();
        let dir_name = format!("{}-{call}", crate::clock::compact(started_wall));
        let registration = environment.registry.register(&dir_name, handle);
        if let Some(xml) = &plan.metadata_xml {
            registration.add_ids(siprec_call_ids(xml.expose()).iter().map(String::as_str));
        }
        let dir = environment.data_dir.active_call(&dir_name);
        let audio_streams: Vec<&PlannedStream> = plan.streams.iter().collect();
        let sample_rate = audio_streams
            .iter()
            .filter_map(|stream| stream.codecs.first().map(|(_, codec)| codec.pcm_sample_rate()))
            .max()
            .unwrap_or(8000);
        // VoiceStream SIP reserves a channel per leg, so a leg that joins later is not mixed into another.
        let channels = audio_streams.len().max(plan.min_channels).max(1);
        let hold_max = audio_hold_max(&environment);
        let opened = tokio::task::block_in_place(|| {
            open_recording(&dir, &environment, (sample_rate, channels), hold_max)
        });
        let recording = match opened {
            Ok(recording) => recording,
            Err(error) => {
                tracing::error!(%error, "cannot create the recording");
                return Err((environment, CallOutcome::RecordingFailed));
            }
        };
        tokio::task::block_in_place(|| {
            crate::call_started(&environment.data_dir, &dir_name, "siprec", started_wall)
        });
        let mut manifest = Manifest::new(
            call,
            &dir_name,
            started_wall,
            (sample_rate, channels),
            plan,
            &environment.recipients,
        );
        manifest.choose_retention_by_plan(environment.data_dir.outbox().policy(), plan);
        let transcript = environment.transcription.as_ref().map(|transcription| {
            CallTranscript::open(transcription, &dir_name, started_wall, &environment.data_dir)
        });
        let mut task = CallTask {
            dir_name,
            environment,
            started,
            streams: Vec::new(),
            recording,
            packets,
            manifest,
            checkpoints: 0,
            transcript,
            dtmf: DtmfFound::default(),
            keyed: KeyedDigits::default(),
            registration,
            requested_pause: RequestedPause::default(),
        };
        for stream in &plan.streams {
            let Some(socket) = sockets.remove(&stream.local_port) else {
                tracing::error!("no RTP socket was bound for a stream");
                for stream in &mut task.streams {
                    if let Some(socket_task) = stream.socket_task.take() {
                        socket_task.abort();
                    }
                }
                return Err((task.environment, CallOutcome::MediaFailed));
            };
            task.add_stream(stream, socket);
        }
        task.manifest.streams = task.streams.iter().map(stream_report).collect();
        task.save_manifest();
        Ok(task)
    }

    fn dir(&self) -> PathBuf {
        self.environment.data_dir.active_call(&self.dir_name)
    }

    fn add_stream(&mut self, planned: &PlannedStream, socket: UdpSocket) {
        let index = self.streams.len();
        let channel = self.free_channel().unwrap_or_else(|| self.least_shared_channel());
        let now = Instant::now();
        let from = now.duration_since(self.started);
        self.manifest
            .channels
            .push(ChannelReport::new(channel, &planned.label, from));
        if let Some(transcript) = &self.transcript {
            transcript.name_leg(index, &planned.label, channel);
        }
        let packets = self.packets.clone();
        let socket = Arc::new(socket);
        let task_socket = socket.clone();
        let socket_task = tokio::spawn(async move {
            let socket = task_socket;
            let mut buf = vec![0u8; 2048];
            while let Ok((len, _peer)) = socket.recv_from(&mut buf).await {
                let datagram = Datagram {
                    stream: index,
                    received_at: Instant::now(),
                    bytes: buf.get(..len).unwrap_or_default().to_vec(),
                };
                if packets.send(datagram).await.is_err() {
                    break;
                }
            }
        });
        let clock_rate = planned
            .codecs
            .first()
            .map(|(_, codec)| codec.rtp_clock_rate())
            .unwrap_or(8000);
        let pcm_rate = planned
            .codecs
            .first()
            .map(|(_, codec)| codec.pcm_sample_rate())
            .unwrap_or(8000);
        let receiver = Receiver::new(
            ReceiverConfig {
                clock_rate,
                telephone_event_pt: planned.telephone_event_pt,
                reorder_delay: self.environment.reorder_delay,
                inactivity_timeout: self.environment.inactivity_timeout,
            },
            now,
        );
        let decoders = planned
            .codecs
            .iter()
            .map(|&(pt, codec)| (pt, (codec, Decoder::new(codec))))
            .collect();
        let origin_sample = self.call_sample_at(now);
        self.streams.push(StreamState {
            label: planned.label.clone(),
            channel,
            receiver,
            decoders,
            origin_sample,
            pcm_per_clock: (u64::from(pcm_rate), u64::from(clock_rate)),
            socket_task: Some(socket_task),
            socket: Some(socket),
            paused_since: planned.paused.then(|| now.duration_since(self.started)),
            last_activity: now,
            scratch: Vec::with_capacity(1024),
            last_codec: None,
            srtp: planned.srtp.as_ref().map(StreamSrtp::new),
            tones: ToneWatch::default(),
        });
    }

    /// A channel no live stream is using (a stream removed earlier frees its channel for a new one).
    fn free_channel(&self) -> Option<usize> {
        (0..self.recording.channels).find(|channel| {
            !self
                .streams
                .iter()
                .any(|s| s.socket_task.is_some() && s.channel == *channel)
        })
    }

    /// The channel carrying the fewest live streams (a stream added when every channel is taken is mixed
    /// into it rather than lost).
    fn least_shared_channel(&self) -> usize {
        (0..self.recording.channels)
            .min_by_key(|channel| self.live_streams_on(*channel))
            .unwrap_or(0)
    }

    fn live_streams_on(&self, channel: usize) -> usize {
        self.streams
            .iter()
            .filter(|s| s.socket_task.is_some() && s.channel == channel)
            .count()
    }

    fn call_sample_at(&self, now: Instant) -> u64 {
        call_sample_at(self.started, now, u64::from(self.recording.sample_rate))
    }

    fn on_datagram(&mut self, datagram: Datagram) {
        let Some(stream) = self.streams.get_mut(datagram.stream) else {
            return;
        };
        let packet: &[u8] = match &mut stream.srtp {
            Some(_) if is_rtcp(&datagram.bytes) => {
                self.environment
                    .metrics
                    .security
                    .srtp_dropped(SrtpDropReason::SrtcpIgnored, 1);
                return;
            }
            Some(srtp) => {
                match srtp
                    .inbound
                    .unprotect(datagram.received_at, &datagram.bytes, &mut srtp.plain)
                {
                    Ok(()) => {
                        self.environment.metrics.security.srtp_packets_authenticated.inc();
                        &srtp.plain
                    }
                    Err(error) => {
                        self.environment
                            .metrics
                            .security
                            .srtp_dropped(srtp_drop_reason(&error), 1);
                        return;
                    }
                }
            }
            _ => &datagram.bytes,
        };
        match stream.receiver.handle_packet(datagram.received_at, packet) {
            Ok(()) => {
                stream.last_activity = datagram.received_at;
                self.environment.metrics.rtp_packets_received.inc();
            }
            Err(_malformed) => {
                self.environment.metrics.rtp_packets_malformed.inc();
            }
        }
        self.drain_stream(datagram.stream, datagram.received_at);
    }

    fn poll_receivers(&mut self, now: Instant) {
        for index in 0..self.streams.len() {
            if let Some(stream) = self.streams.get_mut(index) {
                stream.receiver.handle_timeout(now);
            }
            self.drain_stream(index, now);
        }
    }

    /// Whether every live, unpaused stream has been without RTP for the inactivity timeout (a paused
    /// call is never ended for silence).
    fn all_streams_inactive(&self, now: Instant) -> bool {
        let timeout = self.environment.inactivity_timeout;
        let mut live = self
            .streams
            .iter()
            .filter(|s| s.socket_task.is_some() && s.paused_since.is_none())
            .peekable();
        live.peek().is_some() && live.all(|s| now.saturating_duration_since(s.last_activity) >= timeout)
    }

    /// Moves everything the receiver of stream `index` has released into the interleaver.
    fn drain_stream(&mut self, index: usize, now: Instant) {
        let rate = u64::from(self.recording.sample_rate);
        let started = self.started;
        let shared = self
            .streams
            .get(index)
            .is_some_and(|stream| self.live_streams_on(stream.channel) > 1);
        let Some(stream) = self.streams.get_mut(index) else {
            return;
        };
        while let Some(output) = stream.receiver.poll_output() {
            match output {
                ReceiverOutput::Media {
                    payload_type,
                    position,
                    payload,
                } => {
                    let Some((codec, decoder)) = stream.decoders.get_mut(&payload_type) else {
                        continue;
                    };
                    stream.scratch.clear();
                    if decoder.decode(&payload, &mut stream.scratch).is_err() {
                        self.environment.metrics.rtp_packets_malformed.inc();
                        continue;
                    }
                    stream.last_codec = Some(*codec);
                    let pcm_rate = u64::from(codec.pcm_sample_rate());
                    let (per_clock_num, per_clock_den) = stream.pcm_per_clock;
                    let pcm_position = position.saturating_mul(per_clock_num) / per_clock_den.max(1);
                    let stream_position = pcm_position.saturating_mul(rate) / pcm_rate.max(1);
                    let mut call_position = stream.origin_sample.saturating_add(stream_position);
                    // A timestamp jump by a broken SRC must not make us write hours of silence (or keep a
                    // leg silent forever): if the stream's clock strays from the wall clock by more than
                    // MAX_CLOCK_DRIFT, re-anchor it at the wall clock.
                    let wall_position = call_sample_at(started, now, rate);
                    if call_position.abs_diff(wall_position) > MAX_CLOCK_DRIFT.as_secs() * rate {
                        stream.origin_sample = wall_position.saturating_sub(stream_position);
                        call_position = stream.origin_sample.saturating_add(stream_position);
                    }
                    // Paused on request: nothing that comes while paused reaches the recording or the
                    // transcript, whatever its position (a stream whose clock lags the wall clock would
                    // place it before the pause); after a resume, audio placed inside a pause is muted too.
                    if self.requested_pause.is_paused()
                        || !self.requested_pause.mute(
                            call_position,
                            rate as u32,
                            pcm_rate as u32,
                            &mut stream.scratch,
                        )
                    {
                        continue;
                    }
                    // The leg's own PCM at its codec rate.
                    let leg_position = call_position.saturating_mul(pcm_rate) / rate.max(1);
                    // Transcription gets it with DTMF silenced (the engine converts it for the models).
                    let transcript = &self.transcript;
                    stream.tones.push(
                        pcm_rate as u32,
                        leg_position,
                        &stream.scratch,
                        |rate, position, masked| {
                            if let Some(transcript) = transcript {
                                transcript.push(index, rate, position, masked);
                            }
                        },
                    );
                    stream
                        .tones
                        .take_masks(stream.channel, rate, &mut self.keyed, &mut self.dtmf);
                    let samples = airlock_media::resample(&stream.scratch, pcm_rate as u32, rate as u32);
                    if shared {
                        self.recording
                            .interleaver
                            .mix(stream.channel, call_position, &samples);
                    } else {
                        self.recording
                            .interleaver
                            .push(stream.channel, call_position, &samples);
                    }
                }
                ReceiverOutput::TelephoneEvent {
                    event,
                    position,
                    duration,
                    ..
                } => {
                    // Only counted: the key is card or PIN material, kept in memory for `keyed` and never
                    // written; its audio is silenced.
                    self.environment.metrics.rtp_telephone_events.inc();
                    let clock_rate = stream.pcm_per_clock.1.max(1);
                    let start = stream.origin_sample + position.saturating_mul(rate) / clock_rate;
                    let end = start + u64::from(duration).saturating_mul(rate) / clock_rate;
                    // An event timestamped beyond the clock drift media is allowed is not placed (its
                    // mask would wait for audio that never comes).
                    if start > call_sample_at(started, now, rate) + MAX_CLOCK_DRIFT.as_secs() * rate {
                        self.environment.metrics.rtp_packets_malformed.inc();
                        continue;
                    }
                    let mask = dtmf_mask(stream.channel, start, end, rate);
                    // Digits keyed while paused on request (a card number, say) are neither kept nor
                    // counted, but their audio is silenced all the same (an event may outlast the pause).
                    if self.requested_pause.is_paused() || self.requested_pause.covers(start) {
                        self.dtmf.silence_only(mask);
                        continue;
                    }
                    self.manifest.telephone_event_count += 1;
                    self.keyed
                        .pressed(telephone_event_key(event), mask, rate, &mut self.dtmf);
                }
                // Inactivity is judged per call in `all_streams_inactive`, pauses included.
                ReceiverOutput::Inactive | ReceiverOutput::SsrcChanged => {}
            }
        }
    }

    /// Writes the audio older than the write-behind window (and decided, see `audio_redaction`) and makes
    /// it durable.
    async fn write_and_checkpoint(&mut self, now: Instant) -> std::io::Result<()> {
        let write_behind = self.environment.reorder_delay + WRITE_BEHIND_BEYOND_REORDER;
        let behind = self.call_sample_at(now.checked_sub(write_behind).unwrap_or(self.started));
        let decisions = self.decisions();
        self.recording.flush_until(behind, decisions).await?;
        self.checkpoints += 1;
        if self.checkpoints.is_multiple_of(MANIFEST_EVERY_CHECKPOINTS) {
            self.manifest.streams = self.streams.iter().map(stream_report).collect();
            self.manifest.note_audio_redaction(&self.recording.redactor);
            self.save_manifest();
        }
        Ok(())
    }

    /// What is known about the audio not yet written: spans to silence (redacted words, DTMF) and where each
    /// channel's undecided audio begins (words not yet transcribed, a tone or event not yet ended).
    fn decisions(&mut self) -> Decisions {
        let mut decisions = decisions_of(
            self.transcript.as_ref(),
            self.recording.sample_rate,
            &mut self.dtmf,
        );
        let rate = u64::from(self.recording.sample_rate);
        for stream in &self.streams {
            if let Some(since) = stream.tones.in_progress_since(rate) {
                decisions
                    .undecided
                    .push(dtmf_undecided(stream.channel, since, rate));
            }
            if let Some(since) = stream.receiver.telephone_event_in_progress_since() {
                let since = stream.origin_sample + since.saturating_mul(rate) / stream.pcm_per_clock.1.max(1);
                decisions
                    .undecided
                    .push(dtmf_undecided(stream.channel, since, rate));
            }
        }
        decisions
    }

    fn update(&mut self, plan: &RecordingPlan, mut sockets: MediaSockets) {
        let at = Instant::now().duration_since(self.started);
        for planned in &plan.streams {
            let live = self
                .streams
                .iter_mut()
                .find(|s| s.label == planned.label && s.socket_task.is_some());
            match live {
                Some(stream) => {
                    rekey(stream, planned.srtp.as_ref());
                    match (stream.paused_since, planned.paused) {
                        (None, true) => stream.paused_since = Some(at),
                        (Some(since), false) => {
                            stream.paused_since = None;
                            stream.last_activity = Instant::now();
                            self.manifest
                                .pauses
                                .push(PauseInterval::new(&stream.label, since, at));
                        }
                        _ => {}
                    }
                }
                None => match sockets.remove(&planned.local_port) {
                    Some(socket) => self.add_stream(planned, socket),
                    None => tracing::warn!("no RTP socket was bound for an added stream"),
                },
            }
        }
        for stream in &mut self.streams {
            if !plan.streams.iter().any(|p| p.label == stream.label)
                && let Some(task) = stream.socket_task.take()
            {
                task.abort();
                stream.socket = None;
            }
        }
        if let Some(xml) = &plan.metadata_xml {
            let ids = siprec_call_ids(xml.expose());
            self.registration.add_ids(ids.iter().map(String::as_str));
        }
        self.manifest.apply_plan(plan, at, &self.environment.recipients);
        self.manifest
            .choose_retention_by_plan(self.environment.data_dir.outbox().policy(), plan);
        self.save_manifest();
    }

    /// Pauses the whole call on request from `by`; `None` when it was paused too often already.
    fn pause_on_request(&mut self, by: RequestSource) -> Option<bool> {
        let now = Instant::now();
        let sample = self.call_sample_at(now);
        let paused = self
            .requested_pause
            .pause(sample, now.duration_since(self.started), by);
        if paused.is_some() {
            tracing::info!(by = by.as_str(), "call paused on request");
        }
        paused
    }

    /// Resumes a call paused on request and notes the pause in the manifest; answers false (not paused).
    fn resume_on_request(&mut self) -> bool {
        let now = Instant::now();
        let sample = self.call_sample_at(now);
        let at = now.duration_since(self.started);
        if let Some(interval) = self
            .requested_pause
            .resume(sample, at, self.recording.sample_rate)
        {
            tracing::info!("call resumed on request");
            self.manifest.pauses.push(interval);
            self.save_manifest();
        }
        self.requested_pause.is_paused()
    }

    /// Stops the socket tasks and takes in what had arrived by then: the datagrams they had queued, then
    /// what waits in the sockets' receive buffers. RTP sent just before the BYE is part of the call, however
    /// busy this task was when the BYE came (its queue and the BYE race in the select loop).
    async fn stop_sockets(&mut self, packet_rx: &mut mpsc::Receiver<Datagram>) {
        let tasks: Vec<JoinHandle<()>> = self
            .streams
            .iter_mut()
            .filter_map(|stream| stream.socket_task.take())
            .collect();
        for task in &tasks {
            task.abort();
        }
        // Once they are cancelled nothing more is queued (recv_from is cancel-safe: an unread datagram
        // stays in the socket).
        for task in tasks {
            let _ = task.await;
        }
        while let Ok(datagram) = packet_rx.try_recv() {
            self.on_datagram(datagram);
        }
        let sockets: Vec<(usize, Arc<UdpSocket>)> = self
            .streams
            .iter_mut()
            .enumerate()
            .filter_map(|(index, stream)| stream.socket.take().map(|socket| (index, socket)))
            .collect();
        let mut buf = vec![0u8; 2048];
        for (index, socket) in sockets {
            // Bounded: a source still flooding the port cannot keep the call from ending.
            for _ in 0..LEFTOVER_DATAGRAMS {
                let Ok((len, _peer)) = socket.try_recv_from(&mut buf) else {
                    break;
                };
                self.on_datagram(Datagram {
                    stream: index,
                    received_at: Instant::now(),
                    bytes: buf.get(..len).unwrap_or_default().to_vec(),
                });
            }
        }
    }

    fn save_manifest(&self) {
        save_manifest(&self.dir(), &self.manifest);
    }

    async fn finish(mut self, outcome: CallOutcome, packet_rx: &mut mpsc::Receiver<Datagram>) -> CallOutcome {
        self.registration.close();
        self.stop_sockets(packet_rx).await;
        let now = Instant::now();
        let far = now + self.environment.reorder_delay + Duration::from_millis(1);
        for stream in &mut self.streams {
            stream.receiver.handle_timeout(far);
        }
        for index in 0..self.streams.len() {
            self.drain_stream(index, now);
            let rate = u64::from(self.recording.sample_rate);
            if let Some(stream) = self.streams.get_mut(index) {
                stream.tones.finish(
                    self.transcript.as_ref(),
                    (index, stream.channel),
                    rate,
                    &mut self.keyed,
                    &mut self.dtmf,
                );
            }
        }
        let at = now.duration_since(self.started);
        for stream in &self.streams {
            if let Some(since) = stream.paused_since {
                self.manifest
                    .pauses
                    .push(PauseInterval::new(&stream.label, since, at));
            }
        }
        let end = self.recording.interleaver.end_position();
        let rate = self.recording.sample_rate;
        if let Some(interval) = self.requested_pause.resume(end, at, rate) {
            self.manifest.pauses.push(interval);
        }
        self.manifest.streams = self.streams.iter().map(stream_report).collect();
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
        for report in &self.manifest.streams {
            let metrics = &self.environment.metrics;
            metrics.rtp_packets_lost.inc_by(report.packets_lost);
            metrics.rtp_packets_late.inc_by(report.packets_late);
            metrics.rtp_packets_duplicate.inc_by(report.packets_duplicate);
        }
        self.recording.close_and_publish(
            flushed,
            outcome,
            &mut self.manifest,
            &self.environment,
            &self.dir_name,
        )
    }
}

/// Writes a call's manifest (fsync included) without stalling the other tasks of the async worker.
pub(crate) fn save_manifest(dir: &std::path::Path, manifest: &Manifest) {
    let path = dir.join("manifest.json");
    if let Err(error) = tokio::task::block_in_place(|| write_json_atomically(&path, manifest)) {
        tracing::warn!(%error, "cannot write the call manifest");
    }
}

/// The call-timeline sample (at `rate`) that corresponds to the instant `now`.
pub(crate) fn call_sample_at(started: Instant, now: Instant, rate: u64) -> u64 {
    let elapsed = now.saturating_duration_since(started);
    u64::try_from(elapsed.as_micros())
        .unwrap_or(u64::MAX)
        .saturating_mul(rate)
        / 1_000_000
}

/// How long a call's recording may hold audio back for undecided words or tones.
pub(crate) fn audio_hold_max(environment: &CallEnvironment) -> Duration {
    environment
        .transcription
        .as_ref()
        .map_or(DTMF_HOLD_MAX, |transcription| {
            transcription.audio_hold_max.max(DTMF_HOLD_MAX)
        })
}

pub(crate) fn open_recording(
    dir: &std::path::Path,
    environment: &CallEnvironment,
    (sample_rate, channels): (u32, usize),
    hold_max: Duration,
) -> std::io::Result<Recording> {
    std::fs::create_dir_all(dir)?;
    let writer = RecordingWriter::create(
        dir,
        &environment.recipients,
        WavFormat {
            sample_rate,
            channels: u16::try_from(channels).unwrap_or(u16::MAX),
        },
    )
    .map_err(std::io::Error::other)?;
    Ok(Recording {
        writer,
        // The buffer must hold the audio-redaction hold (and some), or held audio would be forced out.
        interleaver: Interleaver::with_max_pending_frames(
            channels,
            DEFAULT_MAX_PENDING_FRAMES.max(hold_frames(hold_max + INTERLEAVER_MARGIN, sample_rate)),
        ),
        sample_rate,
        channels,
        written_until: 0,
        redactor: AudioRedactor::new(sample_rate, channels, environment.metrics.audio_redaction.clone()),
        hold_max: hold_frames(hold_max, sample_rate),
    })
}

/// `duration` in frames at `rate`.
fn hold_frames(duration: Duration, rate: u32) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .saturating_mul(u64::from(rate))
        / 1000
}

/// The key of an RFC 4733 DTMF event code (0–9, 10 = `*`, 11 = `#`, 12–15 = A–D); other events (flash …)
/// are silenced but never part of a keyed number.
fn telephone_event_key(event: u8) -> char {
    match event {
        0..=9 => char::from(b'0' + event),
        10 => '*',
        11 => '#',
        12..=15 => char::from(b'A' + event - 12),
        _ => '?',
    }
}

/// Applies a stream's SDES key from a re-INVITE/UPDATE: a new key is installed with a grace period for the
/// old one, the same key changes nothing, and a stream re-offered as plain RTP drops its SRTP state.
fn rekey(stream: &mut StreamState, offered: Option<&SdesKey>) {
    match (&mut stream.srtp, offered) {
        (Some(srtp), Some(offered)) => {
            if srtp.key.key != offered.key {
                srtp.inbound.rekey(Instant::now(), &offered.key, SRTP_REKEY_GRACE);
                srtp.rekeys += 1;
            }
            srtp.key = offered.clone();
        }
        (None, Some(key)) => stream.srtp = Some(StreamSrtp::new(key)),
        (Some(_), None) => stream.srtp = None,
        (None, None) => {}
    }
}

fn stream_report(stream: &StreamState) -> StreamReport {
    let stats = stream.receiver.stats();
    StreamReport {
        label: stream.label.clone(),
        channel: stream.channel,
        codec: stream.last_codec.map(|c| c.rtpmap_name().to_string()),
        packets_received: stats.received,
        packets_lost: stats.lost,
        packets_late: stats.late,
        packets_duplicate: stats.duplicate,
        ssrc_changes: stats.ssrc_changes,
        srtp: stream.srtp.as_ref().map(|srtp| {
            let counters = srtp.inbound.stats();
            SrtpReport {
                suite: srtp.key.suite().sdes_name().to_owned(),
                packets_authenticated: counters.authenticated,
                auth_failures: counters.auth_failures,
                replays: counters.replays,
                malformed: counters.malformed,
                rekeys: srtp.rekeys,
            }
        }),
    }
}
