//! Runner protocol v1 (SPEC §6): the messages between host and runner, and their framing.
//!
//! One JSON object per line, UTF-8. Messages serialise through serde tagged enums. Decoding
//! first peeks at `type` and then parses the message's own struct, because payloads are
//! kept as raw JSON and serde cannot buffer raw values inside a tagged enum.
//! See `docs/PROTOCOL.md` for the full contract.

mod framing;

pub use framing::{FrameError, LineReader};

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::{
    JsonObject, ProposedAction, SharedAction, SharedEvent, Timestamp, push_int, push_json_str,
    push_json_timestamp, push_uint,
};

/// The runner protocol's version; the Python runner's copy is in
/// `live_crew_runner/constants.py`.
pub const PROTOCOL_VERSION: u32 = 1;
/// Default maximum length of one protocol line, newline excluded.
pub const DEFAULT_MAX_LINE_BYTES: usize = 1 << 20;

/// Host → runner.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HostMessage {
    Hello(Hello),
    Call(Call),
    Shutdown,
    /// The answer to an `llm_request` (SPEC §14): the provider's chat-completions body.
    LlmResponse(LlmResponse),
    /// An `llm_request` the host could not complete.
    LlmError(LlmError),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmResponse {
    pub id: u64,
    pub body: Value,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmError {
    pub id: u64,
    /// `unknown_provider`, `no_key`, `provider`, `rate_limited`, `too_large`, `no_call`...
    pub reason: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hello {
    pub protocol: u32,
    pub crew: String,
    pub crew_dir: String,
    /// The crew's runtime file as JSON.
    pub config: Value,
    pub heartbeat_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Call {
    pub id: u64,
    /// `<stream>:<slice>:<crew>`: the same for every run of this slice by this crew, on
    /// any host, so a crew can use it as an idempotency key toward external systems.
    #[serde(default)]
    pub call_id: String,
    pub stream_id: String,
    pub slice: i64,
    pub slice_start: Timestamp,
    pub slice_end: Timestamp,
    pub events: Vec<SharedEvent>,
    pub context: std::sync::Arc<JsonObject>,
    pub deps: BTreeMap<String, DepItems>,
    /// Milliseconds the call has left when it is sent.
    pub deadline_ms: u64,
}

/// The `call_id` of `crew`'s call for `slice` of `stream`.
pub fn call_id(stream: &str, slice: i64, crew: &str) -> String {
    format!("{stream}:{slice}:{crew}")
}

/// What a dependency delivers: the actions of a crew, or the events of a kind.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum DepItems {
    Actions(Vec<SharedAction>),
    Events(Vec<SharedEvent>),
}

impl<'de> Deserialize<'de> for DepItems {
    /// Items with the provenance fields are actions, the rest events. (serde's untagged
    /// enums buffer their input, which raw JSON payloads do not survive.)
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let items = Vec::<Box<serde_json::value::RawValue>>::deserialize(deserializer)?;
        let actions: Result<Vec<SharedAction>, _> = items
            .iter()
            .map(|item| serde_json::from_str(item.get()))
            .collect();
        if let Ok(actions) = actions {
            return Ok(DepItems::Actions(actions));
        }
        items
            .iter()
            .map(|item| serde_json::from_str(item.get()))
            .collect::<Result<_, _>>()
            .map(DepItems::Events)
            .map_err(D::Error::custom)
    }
}

/// Runner → host.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RunnerMessage {
    Ready(Ready),
    Heartbeat,
    Result(CallResult),
    Error(CallError),
    Log(Log),
    /// A completion the crew asks the host's LLM gateway for (SPEC §14).
    LlmRequest(LlmRequest),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ready {
    pub protocol: u32,
    pub runner: String,
    /// Protocol additions the runner speaks: `llm` (SPEC §14).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LlmRequest {
    /// The runner's id for the request, unique while it waits.
    pub id: u64,
    /// The `call_id` of the call that asks.
    #[serde(default)]
    pub call: Option<String>,
    /// `<provider>/<model>`.
    pub model: String,
    /// An OpenAI-compatible chat-completions request body.
    pub body: Value,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CallResult {
    pub id: u64,
    pub actions: Vec<ProposedAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_patch: Option<JsonObject>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CallError {
    pub id: u64,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Log {
    pub level: String,
    pub msg: String,
}

/// A line that is not a valid message.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not a JSON object with a string 'type': {0}")]
    Envelope(serde_json::Error),
    #[error("unknown message type '{0}'")]
    UnknownType(String),
    #[error("invalid '{kind}' message: {source}")]
    Invalid {
        kind: &'static str,
        source: serde_json::Error,
    },
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
}

fn parse<'a, T: Deserialize<'a>>(kind: &'static str, line: &'a [u8]) -> Result<T, DecodeError> {
    serde_json::from_slice(line).map_err(|source| DecodeError::Invalid { kind, source })
}

/// The fields of every runner message at once, so that one pass decodes any of them.
#[derive(Deserialize)]
struct AnyRunnerMessage<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    id: Option<u64>,
    actions: Option<Vec<ProposedAction>>,
    context_patch: Option<JsonObject>,
    message: Option<String>,
    protocol: Option<u32>,
    runner: Option<String>,
    level: Option<String>,
    msg: Option<String>,
    #[serde(default)]
    features: Vec<String>,
    call: Option<String>,
    model: Option<String>,
    body: Option<Value>,
}

impl AnyRunnerMessage<'_> {
    /// The message its type calls for; `Err` when a field that type needs is missing.
    fn into_message(self) -> Result<RunnerMessage, ()> {
        Ok(match (self.kind.as_ref(), self.id) {
            ("result", Some(id)) => RunnerMessage::Result(CallResult {
                id,
                actions: self.actions.ok_or(())?,
                context_patch: self.context_patch,
            }),
            ("heartbeat", _) => RunnerMessage::Heartbeat,
            ("error", Some(id)) => RunnerMessage::Error(CallError {
                id,
                message: self.message.ok_or(())?,
            }),
            ("ready", _) => RunnerMessage::Ready(Ready {
                protocol: self.protocol.ok_or(())?,
                runner: self.runner.ok_or(())?,
                features: self.features,
            }),
            ("llm_request", Some(id)) => RunnerMessage::LlmRequest(LlmRequest {
                id,
                call: self.call,
                model: self.model.ok_or(())?,
                body: self.body.ok_or(())?,
            }),
            ("log", _) => RunnerMessage::Log(Log {
                level: self.level.ok_or(())?,
                msg: self.msg.ok_or(())?,
            }),
            _ => return Err(()),
        })
    }
}

/// Messages whose only field is `type`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Bare {
    #[serde(rename = "type")]
    _kind: String,
}

/// Parses a message struct that denies unknown fields, so without its `type` field.
/// Parses twice; only tests and Rust-written runners decode host messages.
fn parse_untyped<T: serde::de::DeserializeOwned>(
    kind: &'static str,
    line: &[u8],
) -> Result<T, DecodeError> {
    let invalid = |source| DecodeError::Invalid { kind, source };
    let mut fields: BTreeMap<String, Box<serde_json::value::RawValue>> =
        serde_json::from_slice(line).map_err(invalid)?;
    fields.remove("type");
    let text = serde_json::to_string(&fields).map_err(invalid)?;
    serde_json::from_str(&text).map_err(invalid)
}

impl RunnerMessage {
    /// Decodes one line from a runner. Unknown fields are ignored for forward
    /// compatibility, except inside actions, which must be exact (SPEC §1).
    pub fn decode(line: &[u8]) -> Result<Self, DecodeError> {
        // One pass over the line in the common case (UTF-8 checked once for the whole
        // line, not string by string); a line that fails it is decoded again step by
        // step, for an error that says which part is wrong.
        let any = std::str::from_utf8(line)
            .ok()
            .and_then(|text| serde_json::from_str::<AnyRunnerMessage>(text).ok());
        match any.map(AnyRunnerMessage::into_message) {
            Some(Ok(message)) => Ok(message),
            _ => Self::decode_stepwise(line),
        }
    }

    fn decode_stepwise(line: &[u8]) -> Result<Self, DecodeError> {
        let envelope: Envelope = serde_json::from_slice(line).map_err(DecodeError::Envelope)?;
        Ok(match envelope.kind.as_ref() {
            "ready" => RunnerMessage::Ready(parse("ready", line)?),
            "heartbeat" => RunnerMessage::Heartbeat,
            "result" => RunnerMessage::Result(parse("result", line)?),
            "error" => RunnerMessage::Error(parse("error", line)?),
            "log" => RunnerMessage::Log(parse("log", line)?),
            "llm_request" => RunnerMessage::LlmRequest(parse("llm_request", line)?),
            other => return Err(DecodeError::UnknownType(other.to_owned())),
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        encode_line(self, 256)
    }
}

impl HostMessage {
    /// Decodes one line from the host; used by tests and Rust-written runners.
    pub fn decode(line: &[u8]) -> Result<Self, DecodeError> {
        let envelope: Envelope = serde_json::from_slice(line).map_err(DecodeError::Envelope)?;
        Ok(match envelope.kind.as_ref() {
            "hello" => HostMessage::Hello(parse_untyped("hello", line)?),
            "call" => HostMessage::Call(parse_untyped("call", line)?),
            "shutdown" => {
                parse::<Bare>("shutdown", line)?;
                HostMessage::Shutdown
            }
            "llm_response" => HostMessage::LlmResponse(parse_untyped("llm_response", line)?),
            "llm_error" => HostMessage::LlmError(parse_untyped("llm_error", line)?),
            other => return Err(DecodeError::UnknownType(other.to_owned())),
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        match self {
            HostMessage::Call(call) => call.encode(),
            _ => encode_line(self, 256),
        }
    }
}

impl Call {
    /// The `call` line: the bytes serde writes for `HostMessage::Call`, with each event's
    /// JSON (made once, however many crews it goes to) copied in.
    fn encode(&self) -> Vec<u8> {
        let events: usize = self.events.iter().map(|e| e.json().len() + 1).sum();
        let mut line = Vec::with_capacity(512 + events);
        line.extend_from_slice(b"{\"type\":\"call\",\"id\":");
        push_uint(&mut line, self.id);
        line.extend_from_slice(b",\"call_id\":");
        push_json_str(&mut line, &self.call_id);
        line.extend_from_slice(b",\"stream_id\":");
        push_json_str(&mut line, &self.stream_id);
        line.extend_from_slice(b",\"slice\":");
        push_int(&mut line, self.slice);
        line.extend_from_slice(b",\"slice_start\":");
        push_json_timestamp(&mut line, self.slice_start);
        line.extend_from_slice(b",\"slice_end\":");
        push_json_timestamp(&mut line, self.slice_end);
        line.extend_from_slice(b",\"events\":[");
        for (i, event) in self.events.iter().enumerate() {
            if i > 0 {
                line.push(b',');
            }
            line.extend_from_slice(event.json().as_bytes());
        }
        line.extend_from_slice(b"],\"context\":");
        serde_json::to_writer(&mut line, &*self.context).expect("contexts always serialise");
        line.extend_from_slice(b",\"deps\":");
        serde_json::to_writer(&mut line, &self.deps).expect("dependencies always serialise");
        line.extend_from_slice(b",\"deadline_ms\":");
        push_uint(&mut line, self.deadline_ms);
        line.extend_from_slice(b"}\n");
        line
    }
}

/// Serialises a message as one line, newline included.
fn encode_line<T: Serialize>(message: &T, capacity: usize) -> Vec<u8> {
    let mut line = Vec::with_capacity(capacity);
    serde_json::to_writer(&mut line, message).expect("protocol messages always serialise");
    line.push(b'\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn fixture_dir() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/protocol")
    }

    /// Every message type has a golden fixture that decodes and re-encodes byte for byte.
    #[test]
    fn golden_fixtures_round_trip() {
        let host = ["hello", "call", "shutdown", "llm_response", "llm_error"];
        let runner = [
            "ready",
            "heartbeat",
            "result",
            "error",
            "log",
            "llm_request",
        ];
        for name in host.iter().chain(runner.iter()) {
            let path = fixture_dir().join(format!("{name}.json"));
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|err| panic!("{}: {err}", path.display()));
            let line = text.trim_end().as_bytes();
            let encoded = if host.contains(name) {
                HostMessage::decode(line).unwrap().encode()
            } else {
                RunnerMessage::decode(line).unwrap().encode()
            };
            assert_eq!(
                std::str::from_utf8(&encoded).unwrap().trim_end(),
                text.trim_end(),
                "{name} does not round-trip"
            );
        }
    }

    /// The hand-written `call` line is the one serde writes, escapes and all.
    #[test]
    fn call_lines_are_what_serde_writes() {
        use crate::model::{Action, Event};
        use serde_json::value::RawValue;
        use std::sync::Arc;
        let ts = Timestamp::from_micros(-1_500_001);
        let payload = || RawValue::from_string(r#"{"a":["x\n",1.5]}"#.into()).unwrap();
        let event = |kind: &str| Arc::new(Event::new(ts, kind.into(), "s\"1".into(), payload()));
        let action = Arc::new(Action {
            ts,
            kind: "k\u{1}".into(),
            stream_id: "s\"1".into(),
            payload: payload(),
            ttl_ms: 7,
            crew: "c".into(),
            slice: -2,
        });
        let context = serde_json::json!({"score": {"home": 1}, "é": null});
        let serde_json::Value::Object(context) = context else {
            unreachable!()
        };
        let call = Call {
            id: u64::MAX,
            call_id: "s\"1:-2:c".into(),
            stream_id: "s\"1".into(),
            slice: -2,
            slice_start: ts,
            slice_end: Timestamp::from_micros(i64::MAX),
            events: vec![event("a"), event("b\\")],
            context: Arc::new(context),
            deps: BTreeMap::from([
                ("crew:c@-1".to_owned(), DepItems::Actions(vec![action])),
                ("event:a@0".to_owned(), DepItems::Events(vec![event("a")])),
            ]),
            deadline_ms: 30_000,
        };
        let message = HostMessage::Call(call);
        assert_eq!(
            String::from_utf8(message.encode()).unwrap(),
            String::from_utf8(encode_line(&message, 0)).unwrap()
        );
    }

    #[test]
    fn decoding_rejects_bad_lines() {
        assert!(matches!(
            RunnerMessage::decode(b"not json"),
            Err(DecodeError::Envelope(_))
        ));
        assert!(matches!(
            RunnerMessage::decode(br#"{"type":"bogus"}"#),
            Err(DecodeError::UnknownType(_))
        ));
        assert!(matches!(
            RunnerMessage::decode(br#"{"type":"result","actions":[]}"#),
            Err(DecodeError::Invalid { kind: "result", .. })
        ));
        let extra_action_field =
            br#"{"type":"result","id":1,"actions":[{"kind":"k","payload":1,"colour":"red"}]}"#;
        assert!(RunnerMessage::decode(extra_action_field).is_err());
        let future_field = br#"{"type":"heartbeat","load":0.5}"#;
        assert!(matches!(
            RunnerMessage::decode(future_field),
            Ok(RunnerMessage::Heartbeat)
        ));
    }
}
