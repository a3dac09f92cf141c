//! Pause and resume of a live call on request from an agent-desktop integration (the `[control_api]`
//! HTTPS listener, `control_api`, and MQTT `cmd/pause` / `cmd/resume`, `mqtt_commands`).
//!
//! [`Registry`]: the live calls, each reachable by several ids — our own call name (the manifest's `call`,
//! as in `evt/call/started`), and the contact centre's ids: for SIPREC every `sipSessionID` UUID of the
//! metadata and vendor call ids in its extension data (`ucid`, `callid`, …, see [`siprec_call_ids`]); for
//! VoiceStream the Five9 `callId`. Ids are held only as salted SHA-256 digests (the salt is random per
//! process), so the registry holds no contact-centre id in clear. Bounded: at most `MAX_CALLS` calls and
//! `MAX_IDS_PER_CALL` ids each; a call beyond that is recorded but not addressable (logged, without ids). An
//! id two calls share belongs to the newer one.
//!
//! [`RequestedPause`]: the call task's side. While paused, decoded audio of every stream is replaced by
//! silence before it reaches the recording or the transcript, by call-timeline position (so a packet the
//! reorder buffer releases late still lands on the right side of the boundary); the recording keeps its
//! timeline, and RFC 4733 digits keyed meanwhile are not kept. Idempotent: pausing a paused call or
//! resuming a recording one changes nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use airlock_telemetry::{RequestAction, RequestOutcome, RequestSource};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

use crate::call::CallCommand;
use crate::manifest::PauseInterval;
use crate::vs_call::VsCallInput;

/// Live calls the registry holds at most.
const MAX_CALLS: usize = 4096;
/// Ids one call may be reached by.
const MAX_IDS_PER_CALL: usize = 8;
/// Longest call id a request may name (bytes).
pub(crate) const MAX_ID_BYTES: usize = 256;
/// How long a request waits for the call task to take and answer it.
const CALL_ANSWER_TIMEOUT: Duration = Duration::from_secs(3);
/// Request pauses one call may have; later pause requests are answered `busy` (the manifest stays bounded).
const MAX_PAUSES_PER_CALL: usize = 256;
/// Element names (case-insensitive, any namespace) in SIPREC extension data whose text is a call id.
const CALL_ID_ELEMENTS: &[&str] = &[
    "ucid",
    "callid",
    "call-id",
    "call_id",
    "xrefci",
    "contactid",
    "conversationid",
    "interactionid",
];

/// The reply a call task gives to a pause or resume: whether the call is paused now, or `None` when the
/// request was refused (too many pauses).
pub(crate) type PauseReply = oneshot::Sender<Option<bool>>;

/// How the registry reaches a call task (weakly: a registered call never keeps its task's queue open).
#[derive(Debug, Clone)]
pub(crate) enum CallHandle {
    Siprec(mpsc::WeakSender<CallCommand>),
    VoiceStream(mpsc::WeakSender<VsCallInput>),
    /// A call cut from a sound card's input (`capture`), recorded by the same task as VoiceStream calls.
    LocalCapture(mpsc::WeakSender<VsCallInput>),
}

/// A live call's answer to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CallState {
    /// Our own name of the call (the manifest's `call`).
    pub call: String,
    pub paused: bool,
}

impl CallState {
    pub(crate) fn state(&self) -> &'static str {
        if self.paused { "paused" } else { "recording" }
    }
}

/// The live calls in numbers (`Registry::summary`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub(crate) struct CallsSummary {
    pub siprec: usize,
    pub voicestream: usize,
    pub local_capture: usize,
    /// Calls paused by a pause request (HTTPS or MQTT), not by their recording client.
    pub paused_on_request: usize,
    pub longest_running_secs: u64,
}

/// Why a request was not carried out; `reason()` is the text for the requester.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RequestError {
    EmptyId,
    IdTooLong,
    IdControlCharacters,
    UnknownCall,
    CallEnded,
    CallBusy,
    TooManyPauses,
    AmbiguousId,
}

impl RequestError {
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Self::EmptyId => "the call id is empty",
            Self::IdTooLong => "the call id is longer than 256 bytes",
            Self::IdControlCharacters => "the call id contains control characters",
            Self::UnknownCall => "no live call has this id",
            Self::CallEnded => "the call has ended",
            Self::CallBusy => "the call did not answer in time; try again",
            Self::TooManyPauses => "this call has been paused too many times",
            Self::AmbiguousId => "more than one live call has this id; name the call by its own call name",
        }
    }

    pub(crate) fn outcome(self) -> RequestOutcome {
        match self {
            Self::EmptyId | Self::IdTooLong | Self::IdControlCharacters | Self::AmbiguousId => {
                RequestOutcome::BadRequest
            }
            Self::UnknownCall | Self::CallEnded => RequestOutcome::NotFound,
            Self::CallBusy | Self::TooManyPauses => RequestOutcome::Busy,
        }
    }
}

/// Checks the shape of a requested call id.
pub(crate) fn check_id(id: &str) -> Result<(), RequestError> {
    if id.is_empty() {
        Err(RequestError::EmptyId)
    } else if id.len() > MAX_ID_BYTES {
        Err(RequestError::IdTooLong)
    } else if id.chars().any(char::is_control) {
        Err(RequestError::IdControlCharacters)
    } else {
        Ok(())
    }
}

type Digest32 = [u8; 32];

struct Entry {
    call: String,
    handle: CallHandle,
    digests: Vec<Digest32>,
    paused: bool,
    registered: Instant,
}

struct Inner {
    entries: HashMap<u64, Entry>,
    /// The live calls holding each id (two calls may share one: then it names neither).
    by_digest: HashMap<Digest32, Vec<u64>>,
    next: u64,
}

/// The live calls, by id; cheap to clone.
#[derive(Clone)]
pub(crate) struct Registry {
    inner: Arc<Mutex<Inner>>,
    salt: [u8; 16],
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new()
    }
}

impl Registry {
    pub(crate) fn new() -> Registry {
        let mut salt = [0u8; 16];
        if getrandom::fill(&mut salt).is_err() {
            tracing::warn!("no OS randomness for the call registry's salt; ids are hashed unsalted");
        }
        Registry {
            inner: Arc::new(Mutex::new(Inner {
                entries: HashMap::new(),
                by_digest: HashMap::new(),
                next: 0,
            })),
            salt,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn digest(&self, id: &str) -> Digest32 {
        let mut hasher = Sha256::new();
        hasher.update(self.salt);
        hasher.update(id.as_bytes());
        hasher.finalize().into()
    }

    /// Registers a call task, known as `call` (our own name); dropping the registration forgets it.
    pub(crate) fn register(&self, call: &str, handle: CallHandle) -> Registration {
        let mut inner = self.lock();
        if inner.entries.len() >= MAX_CALLS {
            tracing::warn!("the call registry is full: this call cannot be paused on request");
            return Registration {
                registry: self.clone(),
                entry: None,
            };
        }
        inner.next += 1;
        let entry = inner.next;
        inner.entries.insert(
            entry,
            Entry {
                call: call.to_string(),
                handle,
                digests: Vec::new(),
                paused: false,
                registered: Instant::now(),
            },
        );
        drop(inner);
        let registration = Registration {
            registry: self.clone(),
            entry: Some(entry),
        };
        registration.add_ids([call]);
        registration
    }

    /// How many live calls there are by protocol and state, and how long the oldest has run (no ids: this
    /// is what the technician's status page shows).
    pub(crate) fn summary(&self, now: Instant) -> CallsSummary {
        let inner = self.lock();
        let mut summary = CallsSummary::default();
        for entry in inner.entries.values() {
            match entry.handle {
                CallHandle::Siprec(_) => summary.siprec += 1,
                CallHandle::VoiceStream(_) => summary.voicestream += 1,
                CallHandle::LocalCapture(_) => summary.local_capture += 1,
            }
            if entry.paused {
                summary.paused_on_request += 1;
            }
            let running = now.saturating_duration_since(entry.registered).as_secs();
            summary.longest_running_secs = summary.longest_running_secs.max(running);
        }
        summary
    }

    /// Carries out `action` on the call named `id` and returns its state.
    pub(crate) async fn request(
        &self,
        id: &str,
        action: RequestAction,
        by: RequestSource,
    ) -> Result<CallState, RequestError> {
        check_id(id)?;
        let digest = self.digest(id);
        let (entry, call, handle, paused) = {
            let inner = self.lock();
            let entry = match inner.by_digest.get(&digest).map(Vec::as_slice) {
                None | Some([]) => return Err(RequestError::UnknownCall),
                Some([entry]) => *entry,
                Some(_) => return Err(RequestError::AmbiguousId),
            };
            let found = inner.entries.get(&entry).ok_or(RequestError::UnknownCall)?;
            (entry, found.call.clone(), found.handle.clone(), found.paused)
        };
        let pause = match action {
            RequestAction::Status => return Ok(CallState { call, paused }),
            RequestAction::Pause => true,
            RequestAction::Resume => false,
        };
        let (reply, answer) = oneshot::channel();
        let sent = match handle {
            CallHandle::Siprec(commands) => {
                let commands = commands.upgrade().ok_or(RequestError::CallEnded)?;
                let command = if pause {
                    CallCommand::Pause { by, reply }
                } else {
                    CallCommand::Resume { reply }
                };
                offer(&commands, command)
            }
            CallHandle::VoiceStream(inputs) | CallHandle::LocalCapture(inputs) => {
                let inputs = inputs.upgrade().ok_or(RequestError::CallEnded)?;
                let input = if pause {
                    VsCallInput::PauseRequest { by, reply }
                } else {
                    VsCallInput::ResumeRequest { reply }
                };
                offer(&inputs, input)
            }
        };
        sent?;
        let paused = match tokio::time::timeout(CALL_ANSWER_TIMEOUT, answer).await {
            Ok(Ok(Some(paused))) => paused,
            Ok(Ok(None)) => return Err(RequestError::TooManyPauses),
            Ok(Err(_dropped)) => return Err(RequestError::CallEnded),
            Err(_elapsed) => return Err(RequestError::CallBusy),
        };
        if let Some(found) = self.lock().entries.get_mut(&entry) {
            found.paused = paused;
        }
        Ok(CallState { call, paused })
    }
}

/// Slots of a call's command queue a request never takes: they stay free for the control loop (updates,
/// the end of the call), which must not wait behind pause requests.
const CONTROL_RESERVE: usize = 8;

/// Queues `message` for a call without waiting: busy when the queue is down to its reserve.
fn offer<T>(queue: &mpsc::Sender<T>, message: T) -> Result<(), RequestError> {
    if queue.capacity() <= CONTROL_RESERVE {
        return Err(RequestError::CallBusy);
    }
    queue.try_send(message).map_err(|error| match error {
        mpsc::error::TrySendError::Full(_) => RequestError::CallBusy,
        mpsc::error::TrySendError::Closed(_) => RequestError::CallEnded,
    })
}

/// A call's place in the registry; dropping it (when the call is finalised) forgets the call.
#[derive(Debug)]
pub(crate) struct Registration {
    registry: Registry,
    entry: Option<u64>,
}

impl Registration {
    /// Makes the call reachable by `ids` too (empty ones, duplicates and ids beyond `MAX_IDS_PER_CALL` are
    /// ignored).
    pub(crate) fn add_ids<'a>(&self, ids: impl IntoIterator<Item = &'a str>) {
        let Some(entry) = self.entry else {
            return;
        };
        let digests: Vec<Digest32> = ids
            .into_iter()
            .filter(|id| check_id(id).is_ok())
            .map(|id| self.registry.digest(id))
            .collect();
        let mut inner = self.registry.lock();
        for digest in digests {
            let Some(found) = inner.entries.get_mut(&entry) else {
                return;
            };
            if found.digests.contains(&digest) {
                continue;
            }
            if found.digests.len() >= MAX_IDS_PER_CALL {
                tracing::warn!("a call has more ids than the registry keeps; the rest cannot name it");
                return;
            }
            found.digests.push(digest);
            inner.by_digest.entry(digest).or_default().push(entry);
        }
    }

    /// Forgets the call now (it is being finalised: requests from here on find no call).
    pub(crate) fn close(&mut self) {
        let Some(entry) = self.entry.take() else {
            return;
        };
        let mut inner = self.registry.lock();
        if let Some(removed) = inner.entries.remove(&entry) {
            for digest in removed.digests {
                if let Some(holders) = inner.by_digest.get_mut(&digest) {
                    holders.retain(|holder| *holder != entry);
                    if holders.is_empty() {
                        inner.by_digest.remove(&digest);
                    }
                }
            }
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.close();
    }
}

/// The contact centre's ids of a SIPREC call in one rs-metadata document: both UUIDs of every
/// `sipSessionID` (`local;remote=other`), and the text of extension elements named like a call id
/// (`CALL_ID_ELEMENTS`, any namespace prefix, also inside a draft-era `extensiondata` wrapper). A document
/// that does not parse yields nothing.
pub(crate) fn siprec_call_ids(xml: &str) -> Vec<String> {
    let Ok(metadata) = airlock_siprec::metadata::parse(xml) else {
        return Vec::new();
    };
    let mut ids = Vec::new();
    for session in &metadata.sessions {
        for value in &session.sip_session_ids {
            let mut parts = value.split(';');
            if let Some(local) = parts.next() {
                ids.push(local.trim().to_string());
            }
            for parameter in parts {
                if let Some((name, remote)) = parameter.split_once('=')
                    && name.trim().eq_ignore_ascii_case("remote")
                {
                    ids.push(remote.trim().to_string());
                }
            }
        }
    }
    let extensions = metadata
        .extensions
        .iter()
        .chain(metadata.groups.iter().flat_map(|group| &group.extensions))
        .chain(metadata.sessions.iter().flat_map(|session| &session.extensions))
        .chain(
            metadata
                .participants
                .iter()
                .flat_map(|participant| &participant.extensions),
        )
        .chain(metadata.streams.iter().flat_map(|stream| &stream.extensions));
    for extension in extensions {
        ids.extend(call_id_elements(extension.xml.expose()));
    }
    ids.retain(|id| !id.is_empty() && id != "00000000000000000000000000000000");
    ids.dedup();
    ids
}

/// The text of every element in `xml` whose local name is in `CALL_ID_ELEMENTS` and that holds only text.
fn call_id_elements(xml: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = xml;
    while let Some(open) = rest.find('<') {
        rest = rest.get(open + 1..).unwrap_or_default();
        let Some(close) = rest.find('>') else {
            break;
        };
        let tag = rest.get(..close).unwrap_or_default();
        rest = rest.get(close + 1..).unwrap_or_default();
        if tag.starts_with(['/', '?', '!']) || tag.ends_with('/') {
            continue;
        }
        let name = tag.split_whitespace().next().unwrap_or_default();
        let local = name.rsplit(':').next().unwrap_or_default();
        if !CALL_ID_ELEMENTS
            .iter()
            .any(|wanted| wanted.eq_ignore_ascii_case(local))
        {
            continue;
        }
        let text = rest
            .get(..rest.find('<').unwrap_or(rest.len()))
            .unwrap_or_default()
            .trim();
        if check_id(text).is_ok() {
            found.push(text.to_string());
        }
    }
    found
}

/// A call's pause on request, on the call timeline (samples at the recording rate).
#[derive(Debug, Default)]
pub(crate) struct RequestedPause {
    /// The open pause: its first sample, when it began, and who asked.
    open: Option<(u64, Duration, RequestSource)>,
    /// Closed pauses as `[start, end)` samples, kept while audio for them may still arrive.
    closed: Vec<(u64, u64)>,
    /// Pauses this call had (bounded by `MAX_PAUSES_PER_CALL`).
    count: usize,
}

/// Closed pauses are kept this long (in seconds of call timeline) for audio released late.
const CLOSED_PAUSE_MEMORY_SECS: u64 = 30;

impl RequestedPause {
    pub(crate) fn is_paused(&self) -> bool {
        self.open.is_some()
    }

    /// Pauses at `sample` (`at` after the call began); `None` when this call has had too many pauses.
    pub(crate) fn pause(&mut self, sample: u64, at: Duration, by: RequestSource) -> Option<bool> {
        if self.open.is_none() {
            if self.count >= MAX_PAUSES_PER_CALL {
                return None;
            }
            self.count += 1;
            self.open = Some((sample, at, by));
        }
        Some(true)
    }

    /// Resumes at `sample`; returns the manifest interval of the pause that ended, if one was open. `rate`:
    /// samples per second, to forget closed pauses no late audio can reach any more.
    pub(crate) fn resume(&mut self, sample: u64, at: Duration, rate: u32) -> Option<PauseInterval> {
        let (start, since, by) = self.open.take()?;
        let memory = CLOSED_PAUSE_MEMORY_SECS * u64::from(rate);
        self.closed
            .retain(|&(_, end)| end.saturating_add(memory) >= sample);
        self.closed.push((start, sample.max(start)));
        Some(PauseInterval::requested(since, at, by.as_str()))
    }

    /// Whether call-timeline position `sample` lies in a pause.
    pub(crate) fn covers(&self, sample: u64) -> bool {
        let open = self.open.map(|(start, _, _)| (start, u64::MAX));
        self.closed
            .iter()
            .copied()
            .chain(open)
            .any(|(start, end)| (start..end).contains(&sample))
    }

    /// Silences the part of `samples` that falls into a pause. `samples` starts at call-timeline position
    /// `position` (at `rate`) and has `sample_rate` samples per second. Returns whether any of it is outside
    /// every pause (false: drop it entirely).
    pub(crate) fn mute(&self, position: u64, rate: u32, sample_rate: u32, samples: &mut [i16]) -> bool {
        if self.open.is_none() && self.closed.is_empty() {
            return true;
        }
        let rate = u64::from(rate.max(1));
        let sample_rate = u64::from(sample_rate.max(1));
        let length = samples.len();
        let index_of = |at: u64| -> usize {
            let offset = at
                .saturating_sub(position)
                .saturating_mul(sample_rate)
                .div_ceil(rate);
            usize::try_from(offset).unwrap_or(usize::MAX).min(length)
        };
        let mut muted = 0usize;
        let open = self.open.map(|(start, _, _)| (start, u64::MAX));
        for (start, end) in self.closed.iter().copied().chain(open) {
            let (from, to) = (index_of(start), index_of(end));
            if let Some(span) = samples.get_mut(from..to) {
                span.fill(0);
                muted += span.len();
            }
        }
        muted < length
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked() {
        assert_eq!(check_id(""), Err(RequestError::EmptyId));
        assert_eq!(check_id(&"x".repeat(257)), Err(RequestError::IdTooLong));
        assert_eq!(check_id("a\nb"), Err(RequestError::IdControlCharacters));
        assert_eq!(check_id("4f1c-99"), Ok(()));
    }

    #[tokio::test]
    async fn calls_are_found_by_every_id_until_they_end() {
        let registry = Registry::new();
        let (commands, mut inbox) = mpsc::channel(16);
        let mut registration =
            registry.register("20261129T1200Z-ab", CallHandle::Siprec(commands.downgrade()));
        registration.add_ids(["session-uuid", "", "ucid-1"]);
        let task = tokio::spawn(async move {
            while let Some(command) = inbox.recv().await {
                match command {
                    CallCommand::Pause { reply, .. } => drop(reply.send(Some(true))),
                    CallCommand::Resume { reply, .. } => drop(reply.send(Some(false))),
                    _ => {}
                }
            }
        });
        let https = RequestSource::Https;
        let paused = registry.request("ucid-1", RequestAction::Pause, https).await;
        assert_eq!(
            paused,
            Ok(CallState {
                call: "20261129T1200Z-ab".into(),
                paused: true
            })
        );
        let status = registry
            .request("session-uuid", RequestAction::Status, https)
            .await;
        assert!(status.is_ok_and(|state| state.paused && state.state() == "paused"));
        let (vs_inputs, _vs_inbox) = mpsc::channel(4);
        let vs_call = registry.register("vs-1", CallHandle::VoiceStream(vs_inputs.downgrade()));
        let tap_call = registry.register("cap-1", CallHandle::LocalCapture(vs_inputs.downgrade()));
        let later = Instant::now() + Duration::from_secs(90);
        assert_eq!(
            registry.summary(later),
            CallsSummary {
                siprec: 1,
                voicestream: 1,
                local_capture: 1,
                paused_on_request: 1,
                longest_running_secs: 90,
            }
        );
        drop((vs_call, tap_call));
        let resumed = registry
            .request("20261129T1200Z-ab", RequestAction::Resume, https)
            .await;
        assert!(resumed.is_ok_and(|state| !state.paused));
        assert_eq!(
            registry.request("other", RequestAction::Pause, https).await,
            Err(RequestError::UnknownCall)
        );
        assert_eq!(
            registry.request("", RequestAction::Pause, https).await,
            Err(RequestError::EmptyId)
        );
        registration.close();
        assert_eq!(
            registry.request("ucid-1", RequestAction::Status, https).await,
            Err(RequestError::UnknownCall)
        );
        assert!(registry.lock().by_digest.is_empty() && registry.lock().entries.is_empty());
        assert_eq!(registry.summary(later), CallsSummary::default());
        drop(commands);
        task.await.ok();
    }

    #[tokio::test]
    async fn a_call_whose_task_ended_is_reported_ended() {
        let registry = Registry::new();
        let (commands, inbox) = mpsc::channel::<CallCommand>(4);
        let _registration = registry.register("c1", CallHandle::Siprec(commands.downgrade()));
        drop(commands);
        drop(inbox);
        let answer = registry
            .request("c1", RequestAction::Pause, RequestSource::Mqtt)
            .await;
        assert_eq!(answer, Err(RequestError::CallEnded));
        assert_eq!(RequestError::CallEnded.outcome(), RequestOutcome::NotFound);
    }

    #[tokio::test]
    async fn ids_per_call_are_bounded_and_a_shared_id_names_neither_call() {
        let registry = Registry::new();
        let (commands, _inbox) = mpsc::channel::<CallCommand>(16);
        let first = registry.register("c1", CallHandle::Siprec(commands.downgrade()));
        let many: Vec<String> = (0..20).map(|n| format!("id-{n}")).collect();
        first.add_ids(many.iter().map(String::as_str));
        assert_eq!(registry.lock().by_digest.len(), MAX_IDS_PER_CALL);
        let second = registry.register("c2", CallHandle::Siprec(commands.downgrade()));
        second.add_ids(["id-0"]);
        let https = RequestSource::Https;
        assert_eq!(
            registry.request("id-0", RequestAction::Pause, https).await,
            Err(RequestError::AmbiguousId)
        );
        drop(first);
        // Once the older call ends, the id names the newer one alone.
        let inner = registry.lock();
        assert_eq!(inner.by_digest.len(), 2);
        assert_eq!(
            inner.by_digest.get(&registry.digest("id-0")).map(Vec::as_slice),
            second.entry.as_ref().map(std::slice::from_ref)
        );
    }

    #[tokio::test]
    async fn requests_never_take_the_slots_kept_for_the_control_loop() {
        let registry = Registry::new();
        let (commands, _inbox) = mpsc::channel::<CallCommand>(CONTROL_RESERVE + 2);
        let _registration = registry.register("c1", CallHandle::Siprec(commands.downgrade()));
        let mut answers = Vec::new();
        for _ in 0..4 {
            let registry = registry.clone();
            answers.push(tokio::spawn(async move {
                registry
                    .request("c1", RequestAction::Pause, RequestSource::Mqtt)
                    .await
            }));
        }
        let mut busy = 0;
        for answer in answers {
            if answer.await.expect("request task") == Err(RequestError::CallBusy) {
                busy += 1;
            }
        }
        // Two requests fit above the reserve; nobody reads the queue, so the others are refused at once.
        assert_eq!(busy, 4);
        assert_eq!(commands.capacity(), CONTROL_RESERVE);
    }

    #[test]
    fn siprec_ids_come_from_session_ids_and_vendor_extensions() {
        let xml = r#"<?xml version="1.0"?>
<recording xmlns="urn:ietf:params:xml:ns:recording:1">
  <datamode>complete</datamode>
  <session session_id="G32V+mSfRlq2Fc1xQHe2IQ==">
    <sipSessionID>b10a223b54b04a64ad87580288d34e55;remote=8414568401c84f1cb32ca73b33a4be85</sipSessionID>
    <extensiondata xmlns:vx="http://vendor.test/siprec"><vx:ucid>00FA0801</vx:ucid><vx:agent>7</vx:agent></extensiondata>
  </session>
  <participant participant_id="lZDZVq/ESC65x1XxVNlsNA==">
    <nameID aor="sip:+15551230001@carrier.example.net"/>
  </participant>
</recording>"#;
        assert_eq!(
            siprec_call_ids(xml),
            [
                "b10a223b54b04a64ad87580288d34e55",
                "8414568401c84f1cb32ca73b33a4be85",
                "00FA0801"
            ]
        );
        assert!(siprec_call_ids("<not metadata").is_empty());
    }

    #[test]
    fn paused_spans_are_silenced_by_timeline_position() {
        let mut pause = RequestedPause::default();
        let mut audio = vec![7i16; 160];
        assert!(pause.mute(0, 8000, 8000, &mut audio));
        assert!(audio.iter().all(|&s| s == 7));
        assert_eq!(
            pause.pause(1080, Duration::from_millis(135), RequestSource::Https),
            Some(true)
        );
        assert_eq!(
            pause.pause(1200, Duration::from_millis(150), RequestSource::Mqtt),
            Some(true)
        );
        // A 20 ms packet at 1000..1160 straddles the start: its last 80 samples are silenced.
        let mut audio = vec![7i16; 160];
        assert!(pause.mute(1000, 8000, 8000, &mut audio));
        assert!(audio[..80].iter().all(|&s| s == 7) && audio[80..].iter().all(|&s| s == 0));
        // Wholly inside: dropped.
        let mut audio = vec![7i16; 160];
        assert!(!pause.mute(2000, 8000, 8000, &mut audio));
        let interval = pause
            .resume(4000, Duration::from_millis(500), 8000)
            .expect("a pause was open");
        assert_eq!((interval.start_ms, interval.end_ms), (135, 500));
        assert_eq!(
            (interval.reason.as_str(), interval.requested_by.as_deref()),
            ("request", Some("https"))
        );
        assert!(pause.resume(4100, Duration::from_millis(510), 8000).is_none());
        // Late audio of the pause (16 kHz PCM on an 8 kHz timeline) is still silenced; after it, kept.
        assert!(pause.covers(1080) && pause.covers(3999) && !pause.covers(4000) && !pause.covers(1079));
        let mut audio = vec![7i16; 320];
        assert!(pause.mute(3920, 8000, 16000, &mut audio));
        assert!(audio[..160].iter().all(|&s| s == 0) && audio[160..].iter().all(|&s| s == 7));
    }

    #[test]
    fn pauses_per_call_are_bounded() {
        let mut pause = RequestedPause::default();
        for n in 0..MAX_PAUSES_PER_CALL as u64 {
            assert_eq!(
                pause.pause(n * 10, Duration::ZERO, RequestSource::Https),
                Some(true)
            );
            pause.resume(n * 10 + 5, Duration::ZERO, 8000);
        }
        assert_eq!(pause.pause(100_000, Duration::ZERO, RequestSource::Https), None);
        assert!(!pause.is_paused());
    }
}
