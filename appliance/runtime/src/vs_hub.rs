//! Joins VoiceStream legs into calls: owns the sans-IO `CallJoiner` and the queue of every open call's
//! recorder task (`vs_call`). A leg that starts asks the hub for its call (new, or one that is open or still
//! lingering for late and reconnecting legs); a leg that ends tells it. A timer task finishes calls whose
//! legs all ended and whose linger passed, and on shutdown every open call is finished.
//!
//! Webhook data (CTI events, stream status) is matched to open calls by the Five9 call id; data for a call
//! that has not opened yet (CTI events usually come first) waits in a bounded queue (`MAX_PENDING_NOTES`,
//! oldest dropped first, each kept at most `PENDING_NOTE_TTL`) and is applied when the call opens.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use airlock_telemetry::Pii;
use airlock_voicestream::{CallJoiner, CallKey, JoinDecision, JoinRefusal, JoinerConfig};
use airlock_voicestream::{CallLeg, LegInfo};
use tokio::sync::mpsc;

use crate::call::CallEnvironment;
use crate::vs_call::{self, LegFinish, LegId, VsCallInput};

/// How often lingering calls are checked for their end.
const JOINER_TICK: Duration = Duration::from_millis(200);
/// Webhook notes waiting for their call to open, at most.
const MAX_PENDING_NOTES: usize = 1024;
/// How long a webhook note waits for its call.
const PENDING_NOTE_TTL: Duration = Duration::from_secs(600);

/// Recording format of VoiceStream calls.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CallFormat {
    pub channels: usize,
}

/// Webhook data about a call that has not opened (yet).
struct PendingNote {
    received: Instant,
    call_id: Pii<String>,
    metadata_json: Pii<String>,
}

struct HubState {
    joiner: CallJoiner,
    calls: HashMap<CallKey, mpsc::Sender<VsCallInput>>,
    /// Five9 call id → the open calls carrying it (one per domain).
    by_call_id: HashMap<String, Vec<CallKey>>,
    pending_notes: std::collections::VecDeque<PendingNote>,
    next_leg: u64,
    shutting_down: bool,
}

/// A leg's place in a call: where its audio goes.
#[derive(Debug, Clone)]
pub(crate) struct LegAttachment {
    pub leg: LegId,
    pub call: CallKey,
    pub inputs: mpsc::Sender<VsCallInput>,
}

/// Shared by every leg task; cheap to clone.
#[derive(Clone)]
pub(crate) struct Hub {
    state: Arc<Mutex<HubState>>,
    environment: CallEnvironment,
    format: CallFormat,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").finish_non_exhaustive()
    }
}

impl Hub {
    pub(crate) fn new(
        joiner: JoinerConfig,
        environment: CallEnvironment,
        format: CallFormat,
        seed: u64,
    ) -> Hub {
        let hub = Hub {
            state: Arc::new(Mutex::new(HubState {
                joiner: CallJoiner::new(joiner, seed),
                calls: HashMap::new(),
                by_call_id: HashMap::new(),
                pending_notes: std::collections::VecDeque::new(),
                next_leg: 0,
                shutting_down: false,
            })),
            environment,
            format,
        };
        let ticker = hub.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(JOINER_TICK);
            loop {
                tick.tick().await;
                if !ticker.finish_due().await {
                    return;
                }
            }
        });
        hub
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Attaches a started leg to its call (opening the call's recording for the first leg).
    pub(crate) async fn attach(&self, info: &LegInfo) -> Result<LegAttachment, JoinRefusal> {
        let (attachment, new_call) = {
            let mut state = self.lock();
            if state.shutting_down {
                return Err(JoinRefusal::TooManyCalls);
            }
            let mut decision = state.joiner.leg_started(Instant::now(), info);
            // A call whose recorder stopped (its recording failed; its legs were asked to reconnect) is
            // dropped, so the reconnecting leg starts a new recording under the same call id.
            if let JoinDecision::Joined { call } = decision
                && state.calls.get(&call).is_some_and(mpsc::Sender::is_closed)
            {
                state.forget_call(call);
                decision = state.joiner.leg_started(Instant::now(), info);
            }
            let (call, new_call) = match decision {
                JoinDecision::NewCall { call } if !self.environment.data_dir.outbox().admission_open() => {
                    state.joiner.leg_ended(Instant::now(), call);
                    return Err(JoinRefusal::OutboxFull);
                }
                JoinDecision::NewCall { call } => (call, true),
                JoinDecision::Joined { call } => (call, false),
                JoinDecision::Refused(refusal) => return Err(refusal),
            };
            let (inputs, notes) = match state.calls.get(&call) {
                Some(inputs) => (inputs.clone(), Vec::new()),
                None => {
                    let Some(inputs) = vs_call::spawn(
                        vs_call::StreamSource::VoiceStream,
                        call.to_string(),
                        Some(info.vcc_call_id.expose()),
                        self.environment.clone(),
                        info.sample_rate,
                        self.format.channels,
                    ) else {
                        state.joiner.leg_ended(Instant::now(), call);
                        return Err(JoinRefusal::TooManyCalls);
                    };
                    state.calls.insert(call, inputs.clone());
                    let call_id = info.vcc_call_id.expose().clone();
                    let notes = state.take_pending_notes(&call_id);
                    state.by_call_id.entry(call_id).or_default().push(call);
                    (inputs, notes)
                }
            };
            state.next_leg += 1;
            let leg = LegId(state.next_leg);
            (LegAttachment { leg, call, inputs }, (new_call, notes))
        };
        let (new_call, notes) = new_call;
        let metadata = serde_json::json!({
            "vcc_call_id": info.vcc_call_id.expose(),
            "domain_id": info.domain_id.expose(),
            "campaign_id": info.campaign_id.expose(),
            "agent_id": info.agent_id.expose(),
            "skill_id": info.skill_id.expose(),
            "subscription_id": info.subscription_id,
            "call_leg": info.call_leg.as_str(),
        });
        let input = VsCallInput::Attach {
            leg: attachment.leg,
            role: role_label(info),
            sample_rate: info.sample_rate,
            metadata_json: Pii::new(metadata.to_string()),
            from_start: false,
        };
        if attachment.inputs.send(input).await.is_err() {
            // The recorder stopped between the decision and now: undo the join; the notes are lost with
            // the call they were for.
            self.lock().joiner.leg_ended(Instant::now(), attachment.call);
            return Err(JoinRefusal::TooManyCalls);
        }
        for metadata_json in notes {
            let _ = attachment
                .inputs
                .send(VsCallInput::Annotate { metadata_json })
                .await;
        }
        if new_call {
            tracing::info!(call = %attachment.call, "VoiceStream call opened");
        }
        Ok(attachment)
    }

    /// Webhook data about the call with Five9 call id `call_id`: sealed into every open call carrying that
    /// id, or kept until such a call opens. Returns whether an open call took it.
    pub(crate) async fn annotate(&self, call_id: &str, metadata_json: String) -> bool {
        let targets: Vec<mpsc::Sender<VsCallInput>> = {
            let mut state = self.lock();
            let targets: Vec<_> = state
                .by_call_id
                .get(call_id)
                .into_iter()
                .flatten()
                .filter_map(|call| state.calls.get(call).cloned())
                .collect();
            if targets.is_empty() {
                let now = Instant::now();
                state
                    .pending_notes
                    .retain(|note| now.duration_since(note.received) < PENDING_NOTE_TTL);
                if state.pending_notes.len() >= MAX_PENDING_NOTES {
                    state.pending_notes.pop_front();
                }
                state.pending_notes.push_back(PendingNote {
                    received: now,
                    call_id: Pii::new(call_id.to_owned()),
                    metadata_json: Pii::new(metadata_json.clone()),
                });
            }
            targets
        };
        for inputs in &targets {
            let input = VsCallInput::Annotate {
                metadata_json: Pii::new(metadata_json.clone()),
            };
            let _ = inputs.send(input).await;
        }
        !targets.is_empty()
    }

    /// A leg ended: tells its call, and the joiner (which starts the linger once every leg has ended).
    pub(crate) async fn detach(&self, attachment: &LegAttachment, how: LegFinish) {
        let _ = attachment
            .inputs
            .send(VsCallInput::Detach {
                leg: attachment.leg,
                how,
            })
            .await;
        self.lock().joiner.leg_ended(Instant::now(), attachment.call);
    }

    /// Finishes the calls the joiner says are over; false once shutdown has finished everything.
    async fn finish_due(&self) -> bool {
        let due: Vec<mpsc::Sender<VsCallInput>> = {
            let mut state = self.lock();
            if state.shutting_down {
                return false;
            }
            state.joiner.handle_timeout(Instant::now());
            let mut due = Vec::new();
            while let Some(call) = state.joiner.poll_finished() {
                if let Some(inputs) = state.calls.remove(&call) {
                    due.push(inputs);
                }
                state.forget_call_id(call);
            }
            due
        };
        for inputs in due {
            let _ = inputs.send(VsCallInput::Finish { shutdown: false }).await;
        }
        true
    }

    /// Stops taking calls and finishes every open one as `shutdown`; waits for their recordings to close.
    pub(crate) async fn shutdown(&self) {
        let calls: Vec<mpsc::Sender<VsCallInput>> = {
            let mut state = self.lock();
            state.shutting_down = true;
            state.calls.drain().map(|(_, inputs)| inputs).collect()
        };
        for inputs in &calls {
            let _ = inputs.send(VsCallInput::Finish { shutdown: true }).await;
        }
        for inputs in calls {
            inputs.closed().await;
        }
    }
}

/// The channel label of a leg's role; legs of a role Five9 may add later are `other`.
impl HubState {
    /// Drops a call whose recorder stopped: from the joiner and from the hub's maps.
    fn forget_call(&mut self, call: CallKey) {
        self.joiner.abandon(call);
        self.calls.remove(&call);
        self.forget_call_id(call);
    }

    fn forget_call_id(&mut self, call: CallKey) {
        self.by_call_id.retain(|_, calls| {
            calls.retain(|open| *open != call);
            !calls.is_empty()
        });
    }

    /// Removes and returns the waiting webhook notes for `call_id`.
    fn take_pending_notes(&mut self, call_id: &str) -> Vec<Pii<String>> {
        let mut taken = Vec::new();
        self.pending_notes.retain(|note| {
            let matches = note.call_id.expose() == call_id;
            if matches {
                taken.push(note.metadata_json.clone());
            }
            !matches
        });
        taken
    }
}

fn role_label(info: &LegInfo) -> &'static str {
    match info.call_leg {
        CallLeg::Agent => "agent",
        CallLeg::Customer => "customer",
        CallLeg::Supervisor => "supervisor",
        CallLeg::Other(_) => "other",
    }
}
