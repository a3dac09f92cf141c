//! MQTT commands `cmd/pause` and `cmd/resume` under the appliance's topic root (`outbox.mqtt.commands`):
//! the MQTT sink subscribes to them on its own connection and hands each message to this task through a
//! bounded queue (`COMMAND_QUEUE`; when full the message is dropped and counted as `busy` — the desktop gets
//! no answer and retries, requests are idempotent). Commands are carried out one at a time, in order.
//!
//! Payload: `{"call_id": "...", "request_id": "..."}` (see `requests` for the ids a call answers to).
//! Every command is answered on `evt/cmd/result` through the outbox spool, like any event:
//! `{"event": "cmd_result", "command", "request_id", "outcome": ok | bad_request | not_found | busy,
//! "state": paused | recording | null, "call": our call name | null, "reason": text | null, "at"}`. A
//! payload that is not such JSON is answered `bad_request` (with `request_id` null when it cannot be read).
//! The broker's ACL is what authenticates the integration: only it may publish to `.../cmd/#`.

use std::time::SystemTime;

use airlock_telemetry::{Metrics, RequestAction, RequestOutcome, RequestSource};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::requests::Registry;
use crate::storage::DataDir;

/// Commands waiting for this task before the MQTT sink drops new ones.
pub(crate) const COMMAND_QUEUE: usize = 64;
/// Longest accepted `request_id`.
const MAX_REQUEST_ID: usize = 64;
/// Topic of the answers.
const RESULT_TOPIC: &str = "evt/cmd/result";

/// One command message as received.
#[derive(Debug)]
pub(crate) struct MqttCommand {
    pub action: RequestAction,
    pub payload: Vec<u8>,
}

#[derive(Deserialize)]
struct Payload {
    call_id: String,
    request_id: String,
}

/// The answer published on `evt/cmd/result`.
#[derive(Debug, Serialize, PartialEq, Eq)]
struct CommandResult {
    event: &'static str,
    command: &'static str,
    request_id: Option<String>,
    outcome: &'static str,
    state: Option<&'static str>,
    call: Option<String>,
    reason: Option<String>,
    at: String,
}

/// Most digits a request id without a letter may hold: it is echoed in an event, and the last gate holds
/// back numbers that look like card numbers or SSNs (an id with a letter is an identifier to it).
const MAX_REQUEST_ID_DIGITS: usize = 8;

/// The request id, when it is 1–64 letters, digits or `-_.:`, and has a letter or at most 8 digits (it is
/// echoed in an event).
fn request_id(payload: &serde_json::Value) -> Option<String> {
    let id = payload.get("request_id")?.as_str()?;
    let identifier = id.bytes().any(|b| b.is_ascii_alphabetic())
        || id.bytes().filter(u8::is_ascii_digit).count() <= MAX_REQUEST_ID_DIGITS;
    let valid = !id.is_empty()
        && id.len() <= MAX_REQUEST_ID
        && identifier
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    valid.then(|| id.to_string())
}

/// Parses a command payload; on failure the reason and whatever request id could be read.
fn parse(payload: &[u8]) -> Result<Payload, (Option<String>, String)> {
    let value: serde_json::Value =
        serde_json::from_slice(payload).map_err(|_| (None, "the payload is not JSON".to_string()))?;
    let request = request_id(&value);
    if request.is_none() {
        return Err((
            None,
            "request_id must be 1-64 letters, digits, '-', '_', '.' or ':' (without a letter, at most 8 digits)"
                .to_string(),
        ));
    }
    let parsed: Payload = serde_json::from_value(value).map_err(|_| {
        (
            request.clone(),
            "the payload must be {\"call_id\": string, \"request_id\": string}".to_string(),
        )
    })?;
    crate::requests::check_id(&parsed.call_id).map_err(|error| (request, error.reason().to_string()))?;
    Ok(parsed)
}

/// Carries out commands until the sink's sender is gone.
pub(crate) async fn serve(
    mut commands: mpsc::Receiver<MqttCommand>,
    registry: Registry,
    data_dir: DataDir,
    metrics: Metrics,
) {
    while let Some(command) = commands.recv().await {
        let result = carry_out(&registry, &command).await;
        metrics
            .requests
            .request(RequestSource::Mqtt, command.action, outcome_of(result.outcome));
        if let Err(error) = tokio::task::block_in_place(|| data_dir.append_event(RESULT_TOPIC, &result)) {
            tracing::error!(%error, "cannot spool the answer to an MQTT command");
        }
    }
}

fn outcome_of(label: &str) -> RequestOutcome {
    match label {
        "ok" => RequestOutcome::Ok,
        "not_found" => RequestOutcome::NotFound,
        "busy" => RequestOutcome::Busy,
        _ => RequestOutcome::BadRequest,
    }
}

async fn carry_out(registry: &Registry, command: &MqttCommand) -> CommandResult {
    let mut result = CommandResult {
        event: "cmd_result",
        command: command.action.as_str(),
        request_id: None,
        outcome: RequestOutcome::BadRequest.as_str(),
        state: None,
        call: None,
        reason: None,
        at: crate::clock::rfc3339(SystemTime::now()),
    };
    let payload = match parse(&command.payload) {
        Ok(payload) => payload,
        Err((request_id, reason)) => {
            result.request_id = request_id;
            result.reason = Some(reason);
            return result;
        }
    };
    result.request_id = Some(payload.request_id);
    match registry
        .request(&payload.call_id, command.action, RequestSource::Mqtt)
        .await
    {
        Ok(state) => {
            result.outcome = RequestOutcome::Ok.as_str();
            result.state = Some(state.state());
            result.call = Some(state.call);
        }
        Err(error) => {
            result.outcome = error.outcome().as_str();
            result.reason = Some(error.reason().to_string());
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_checked_and_the_request_id_kept_when_it_can_be() {
        let ok = parse(br#"{"call_id": "b10a223b", "request_id": "r-1", "extra": 1}"#);
        assert!(ok.is_ok_and(|p| p.call_id == "b10a223b" && p.request_id == "r-1"));
        assert_eq!(parse(b"not json").err().map(|e| e.0), Some(None));
        assert_eq!(parse(br#"{"call_id": "x"}"#).err().map(|e| e.0), Some(None));
        assert_eq!(
            parse(br#"{"call_id": "x", "request_id": "4111 1111 1111 1111"}"#)
                .err()
                .map(|e| e.0),
            Some(None)
        );
        // A long digit run would make the answer look like card data to the last gate.
        for digits in ["4111111111111111", "123-45-6789", "1732900000123"] {
            let payload = format!(r#"{{"call_id": "x", "request_id": "{digits}"}}"#);
            assert_eq!(
                parse(payload.as_bytes()).err().map(|e| e.0),
                Some(None),
                "{digits}"
            );
        }
        assert!(parse(br#"{"call_id": "x", "request_id": "job-1732900000123"}"#).is_ok());
        assert!(parse(br#"{"call_id": "x", "request_id": "12345678"}"#).is_ok());
        let no_call = parse(br#"{"request_id": "r-2"}"#).err();
        assert_eq!(no_call.map(|e| e.0), Some(Some("r-2".to_string())));
        let empty = parse(br#"{"call_id": "", "request_id": "r-3"}"#).err();
        assert_eq!(
            empty,
            Some((Some("r-3".to_string()), "the call id is empty".to_string()))
        );
    }

    #[tokio::test]
    async fn unknown_calls_and_bad_payloads_get_an_error_outcome() {
        let registry = Registry::new();
        let command = MqttCommand {
            action: RequestAction::Pause,
            payload: br#"{"call_id": "nope", "request_id": "r-9"}"#.to_vec(),
        };
        let result = carry_out(&registry, &command).await;
        assert_eq!(
            (result.outcome, result.request_id.as_deref()),
            ("not_found", Some("r-9"))
        );
        assert_eq!(result.command, "pause");
        let command = MqttCommand {
            action: RequestAction::Resume,
            payload: b"\xff".to_vec(),
        };
        let result = carry_out(&registry, &command).await;
        assert_eq!((result.outcome, result.request_id), ("bad_request", None));
        assert_eq!(outcome_of(result.outcome), RequestOutcome::BadRequest);
    }
}
