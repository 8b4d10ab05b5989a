//! Input events (SPEC §1), validated once where they are parsed.

use std::borrow::Cow;
use std::sync::Arc;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

use super::{
    Timestamp, check_kind, check_stream_id, is_reserved_kind, push_json_str, push_json_timestamp,
};

/// An input event, validated. Immutable once made: one event goes to many crews, so its
/// JSON is made once, where it is parsed (the input thread), and kept.
#[derive(Debug, Clone)]
pub struct Event {
    pub ts: Timestamp,
    pub kind: String,
    pub stream_id: String,
    pub payload: Box<RawValue>,
    json: Box<str>,
}

/// The length of an event's JSON text without its kind, stream id and payload:
/// `{"ts":"YYYY-MM-DDTHH:MM:SS.ffffffZ","kind":"","stream_id":"","payload":}`.
const EVENT_JSON_FIXED_BYTES: usize = 72;

/// The event as it appears on the wire, before validation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireEvent<'a> {
    /// Borrowed from the line where it can be: it is parsed, not kept.
    #[serde(borrow)]
    ts: Cow<'a, str>,
    kind: String,
    stream_id: String,
    payload: Box<RawValue>,
}

/// Why an input event was rejected; names the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field '{field}': {message}")]
pub struct EventError {
    /// The offending field, or `event` when the line as a whole is bad.
    pub field: String,
    pub message: String,
}

impl Event {
    /// An event from fields that are already valid (see [`Event::from_json`]).
    pub fn new(ts: Timestamp, kind: String, stream_id: String, payload: Box<RawValue>) -> Event {
        // A pretty-printed payload (from a JSON array file, or a NATS message) would break
        // the one-line protocol messages and JSON Lines outputs it is copied into.
        let payload = if payload.get().contains(['\n', '\r']) {
            RawValue::from_string(compact(payload.get())).expect("compacted JSON stays valid")
        } else {
            payload
        };
        // Sized exactly for a timestamp within years 0..=9999 and names without escapes
        // (which is every valid event), so the text is never regrown or shrunk.
        let mut json = Vec::with_capacity(
            EVENT_JSON_FIXED_BYTES + kind.len() + stream_id.len() + payload.get().len(),
        );
        json.extend_from_slice(b"{\"ts\":");
        push_json_timestamp(&mut json, ts);
        json.extend_from_slice(b",\"kind\":");
        push_json_str(&mut json, &kind);
        json.extend_from_slice(b",\"stream_id\":");
        push_json_str(&mut json, &stream_id);
        json.extend_from_slice(b",\"payload\":");
        json.extend_from_slice(payload.get().as_bytes());
        json.push(b'}');
        let json = String::from_utf8(json).expect("JSON made of UTF-8 parts");
        Event {
            ts,
            kind,
            stream_id,
            payload,
            json: json.into_boxed_str(),
        }
    }

    /// The event as one JSON object, `{"ts", "kind", "stream_id", "payload"}`: the bytes
    /// its `Serialize` writes.
    pub fn json(&self) -> &str {
        &self.json
    }

    /// Parses and validates one event from JSON text.
    pub fn from_json(text: &str) -> Result<Event, EventError> {
        let wire: WireEvent =
            serde_json::from_str(text).map_err(|err| locate_json_error(text, err))?;
        Event::try_from(wire)
    }
}

/// Valid JSON `text` without the whitespace between its tokens.
fn compact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in text.chars() {
        if in_string {
            out.push(c);
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            in_string = c == '"';
            out.push(c);
        }
    }
    out
}

/// Names the field behind a serde error. Runs on the error path only, so parsing the line
/// a second time costs nothing on valid input.
fn locate_json_error(text: &str, err: serde_json::Error) -> EventError {
    let whole = |message: String| EventError {
        field: "event".into(),
        message,
    };
    let fields = match serde_json::from_str(text) {
        Ok(serde_json::Value::Object(fields)) => fields,
        Ok(other) => {
            let what = match other {
                serde_json::Value::Array(_) => "an array",
                serde_json::Value::String(_) => "a string",
                serde_json::Value::Number(_) => "a number",
                serde_json::Value::Bool(_) => "a boolean",
                _ => "null",
            };
            return whole(format!(
                "an event is a JSON object with {}, not {what}",
                EVENT_FIELDS.join(", ")
            ));
        }
        Err(_) => return whole(err.to_string()),
    };
    if let Some(unknown) = fields.keys().find(|k| !EVENT_FIELDS.contains(&k.as_str())) {
        return EventError {
            field: unknown.clone(),
            message: format!(
                "unknown field; an event has only {}",
                EVENT_FIELDS.join(", ")
            ),
        };
    }
    for field in EVENT_FIELDS {
        match fields.get(field) {
            None => {
                return EventError {
                    field: field.to_string(),
                    message: "missing".into(),
                };
            }
            Some(value) if field != "payload" && !value.is_string() => {
                return EventError {
                    field: field.to_string(),
                    message: format!("must be a string, not {value}"),
                };
            }
            Some(_) => {}
        }
    }
    whole(err.to_string())
}

const EVENT_FIELDS: [&str; 4] = ["ts", "kind", "stream_id", "payload"];

impl TryFrom<WireEvent<'_>> for Event {
    type Error = EventError;

    fn try_from(wire: WireEvent<'_>) -> Result<Self, Self::Error> {
        let field_error = |field: &'static str| {
            move |message: String| EventError {
                field: field.into(),
                message,
            }
        };
        let ts = Timestamp::parse(&wire.ts).map_err(field_error("ts"))?;
        check_kind(&wire.kind).map_err(field_error("kind"))?;
        if is_reserved_kind(&wire.kind) {
            return Err(field_error("kind")(format!(
                "kind '{}' starts with '__', which is reserved for the system",
                wire.kind
            )));
        }
        check_stream_id(&wire.stream_id).map_err(field_error("stream_id"))?;
        Ok(Event::new(ts, wire.kind, wire.stream_id, wire.payload))
    }
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Fields<'a> {
            ts: Timestamp,
            kind: &'a str,
            stream_id: &'a str,
            payload: &'a RawValue,
        }
        Fields {
            ts: self.ts,
            kind: &self.kind,
            stream_id: &self.stream_id,
            payload: &self.payload,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = WireEvent::deserialize(deserializer)?;
        Event::try_from(wire).map_err(D::Error::custom)
    }
}
/// Shared, immutable events: one event is handed to several crews without copying.
pub type SharedEvent = Arc<Event>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_that_is_not_an_object_says_so() {
        let error = Event::from_json("42").unwrap_err();
        assert_eq!(error.field, "event");
        assert_eq!(
            error.message,
            "an event is a JSON object with ts, kind, stream_id, payload, not a number"
        );
    }

    #[test]
    fn event_json_is_sized_exactly() {
        let event = Event::from_json(
            r#"{"ts":"2025-01-01T00:00:00+01:00","kind":"goal","stream_id":"m-1","payload":[1, 2]}"#,
        )
        .unwrap();
        assert_eq!(
            event.json(),
            r#"{"ts":"2024-12-31T23:00:00.000000Z","kind":"goal","stream_id":"m-1","payload":[1, 2]}"#
        );
        assert_eq!(
            event.json().len(),
            EVENT_JSON_FIXED_BYTES + "goal".len() + "m-1".len() + "[1, 2]".len()
        );
    }

    #[test]
    fn a_pretty_printed_payload_is_kept_on_one_line() {
        let pretty = "{\"ts\":\"2025-01-01T00:00:00Z\",\"kind\":\"k\",\"stream_id\":\"s\",\
                      \"payload\": {\n  \"name\": \"A \\\"quoted\\\" \\\\ one\",\r\n  \"xs\": [\n 1,\n 2.50\n ]\n}}";
        let event = Event::from_json(pretty).unwrap();
        assert_eq!(
            event.payload.get(),
            r#"{"name":"A \"quoted\" \\ one","xs":[1,2.50]}"#
        );
        assert!(!event.json().contains(['\n', '\r']), "{}", event.json());
        // Spaces inside strings stay; a payload on one line is kept as it is.
        let one_line = Event::from_json(
            r#"{"ts":"2025-01-01T00:00:00Z","kind":"k","stream_id":"s","payload":{"a b": [1, 2]}}"#,
        )
        .unwrap();
        assert_eq!(one_line.payload.get(), r#"{"a b": [1, 2]}"#);
    }

    #[test]
    fn events_validate_each_field() {
        let ok =
            r#"{"ts":"2025-01-01T00:00:00Z","kind":"goal","stream_id":"m-1","payload":{"a":1}}"#;
        let event = Event::from_json(ok).unwrap();
        assert_eq!(event.payload.get(), r#"{"a":1}"#);

        let cases = [
            (
                r#"{"ts":"2025-01-01T00:00:00Z","kind":"go al","stream_id":"m","payload":1}"#,
                "kind",
            ),
            (
                r#"{"ts":"2025-01-01T00:00:00Z","kind":"__hb","stream_id":"m","payload":1}"#,
                "kind",
            ),
            (
                r#"{"ts":"2025-01-01T00:00:00Z","kind":"g","stream_id":"m/1","payload":1}"#,
                "stream_id",
            ),
            (
                r#"{"ts":"2025-13-01T00:00:00Z","kind":"g","stream_id":"m","payload":1}"#,
                "ts",
            ),
            (
                r#"{"ts":"2025-01-01T00:00:00Z","kind":"g","stream_id":"m"}"#,
                "payload",
            ),
            (
                r#"{"ts":"2025-01-01T00:00:00Z","kind":"g","stream_id":"m","payload":1,"x":2}"#,
                "x",
            ),
            (
                r#"{"ts":"2025-01-01T00:00:00Z","kind":7,"stream_id":"m","payload":1}"#,
                "kind",
            ),
            (r#"{"ts":"2025-01-01T00:00:00Z","kind":"g","#, "event"),
        ];
        for (text, field) in cases {
            let err = Event::from_json(text).unwrap_err();
            assert_eq!(err.field, field, "{text}: {err}");
        }
    }
}
