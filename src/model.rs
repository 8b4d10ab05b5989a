//! The data that crosses every stage: events in, actions out (SPEC §1).
//!
//! Payloads stay as raw JSON text (`RawValue`): the host validates them once on input and
//! then only copies bytes, which keeps JSON work off the hot path.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

/// Default `ttl_ms` of an action.
pub const DEFAULT_TTL_MS: u32 = 5000;
/// Largest accepted `ttl_ms`.
pub const MAX_TTL_MS: u32 = 300_000;

/// A UTC instant with microsecond precision, stored as microseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    pub const fn from_micros(micros: i64) -> Self {
        Timestamp(micros)
    }

    pub const fn as_micros(self) -> i64 {
        self.0
    }

    /// Parses an RFC 3339 timestamp that carries an offset (`Z` or `±hh:mm`). Digits past
    /// microseconds are truncated.
    pub fn parse(text: &str) -> Result<Self, String> {
        let parsed = chrono::DateTime::parse_from_rfc3339(text).map_err(|err| {
            format!("'{text}' is not an RFC 3339 timestamp with an offset ({err})")
        })?;
        Ok(Timestamp(parsed.timestamp_micros()))
    }

    /// Current wall-clock time.
    pub fn now() -> Self {
        Timestamp(chrono::Utc::now().timestamp_micros())
    }
}

impl Timestamp {
    /// The text `YYYY-MM-DDTHH:MM:SS.ffffffZ`, or None for a year outside 0..=9999.
    /// Hand-rolled: every event and action passes through here, and chrono's formatter
    /// was a tenth of the host's CPU time.
    fn text(self) -> Option<[u8; 27]> {
        let micros = self.0.rem_euclid(1_000_000);
        let seconds = self.0.div_euclid(1_000_000);
        let (days, second_of_day) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
        let (year, month, day) = civil_from_days(days);
        if !(0..=9999).contains(&year) {
            return None;
        }
        let mut text = *b"0000-00-00T00:00:00.000000Z";
        let mut put = |at: usize, width: usize, mut value: i64| {
            for i in (at..at + width).rev() {
                text[i] = b'0' + (value % 10) as u8;
                value /= 10;
            }
        };
        put(0, 4, year);
        put(5, 2, month);
        put(8, 2, day);
        put(11, 2, second_of_day / 3600);
        put(14, 2, second_of_day / 60 % 60);
        put(17, 2, second_of_day % 60);
        put(20, 6, micros);
        Some(text)
    }
}

impl fmt::Display for Timestamp {
    /// Formats as `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.text() {
            Some(text) => f.write_str(std::str::from_utf8(&text).expect("ASCII digits")),
            None => write!(f, "<out of range: {} µs>", self.0),
        }
    }
}

/// Year, month and day of the proleptic Gregorian calendar for days since 1970-01-01
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.text() {
            Some(text) => {
                serializer.serialize_str(std::str::from_utf8(&text).expect("ASCII digits"))
            }
            None => serializer.collect_str(self),
        }
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Timestamp::parse(&text).map_err(D::Error::custom)
    }
}

/// Checks an event or action kind: `^[A-Za-z0-9_]{1,50}$`. Reserved `__` kinds are
/// checked separately because the system itself may emit them.
pub fn check_kind(kind: &str) -> Result<(), String> {
    check_name(kind, 50, false).map_err(|why| format!("kind '{kind}' {why}"))
}

/// Checks a stream id: `^[A-Za-z0-9_-]{1,100}$`.
pub fn check_stream_id(stream_id: &str) -> Result<(), String> {
    check_name(stream_id, 100, true).map_err(|why| format!("stream_id '{stream_id}' {why}"))
}

/// Checks a crew name: `^[A-Za-z0-9_]{1,50}$`.
pub fn check_crew_name(name: &str) -> Result<(), String> {
    check_name(name, 50, false).map_err(|why| format!("crew name '{name}' {why}"))
}

fn check_name(text: &str, max_len: usize, allow_dash: bool) -> Result<(), String> {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || (allow_dash && b == b'-');
    let pattern = if allow_dash {
        "[A-Za-z0-9_-]"
    } else {
        "[A-Za-z0-9_]"
    };
    if text.is_empty() || text.len() > max_len {
        return Err(format!("must be 1 to {max_len} characters long"));
    }
    if !text.bytes().all(allowed) {
        return Err(format!("may only contain {pattern}"));
    }
    Ok(())
}

/// Whether a kind is reserved for the system (`__hb`, ...).
pub fn is_reserved_kind(kind: &str) -> bool {
    kind.starts_with("__")
}

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

/// An output action with its provenance.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Action {
    pub ts: Timestamp,
    pub kind: String,
    /// Shared with the stream's other actions.
    pub stream_id: Arc<str>,
    pub payload: Box<RawValue>,
    pub ttl_ms: u32,
    /// Shared with the crew's other actions.
    pub crew: Arc<str>,
    pub slice: i64,
}

impl Action {
    /// Appends the action as one JSON object: the bytes `serde_json` writes for it, made
    /// without serde's per-field machinery, since every action passes through here.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let mut ts = Vec::with_capacity(29);
        push_json_timestamp(&mut ts, self.ts);
        self.write_json_stamped(out, &ts);
    }

    /// [`Action::write_json`] with `ts_json`, the JSON of `self.ts`, made by the caller:
    /// a slice's actions share their timestamp.
    pub fn write_json_stamped(&self, out: &mut Vec<u8>, ts_json: &[u8]) {
        out.extend_from_slice(b"{\"ts\":");
        out.extend_from_slice(ts_json);
        out.extend_from_slice(b",\"kind\":");
        push_json_str(out, &self.kind);
        out.extend_from_slice(b",\"stream_id\":");
        push_json_str(out, &self.stream_id);
        out.extend_from_slice(b",\"payload\":");
        out.extend_from_slice(self.payload.get().as_bytes());
        out.extend_from_slice(b",\"ttl_ms\":");
        push_uint(out, self.ttl_ms.into());
        out.extend_from_slice(b",\"crew\":");
        push_json_str(out, &self.crew);
        out.extend_from_slice(b",\"slice\":");
        push_int(out, self.slice);
        out.push(b'}');
    }
}

/// An integer in decimal, without `fmt`'s machinery.
pub fn push_int(out: &mut Vec<u8>, value: i64) {
    if value < 0 {
        out.push(b'-');
    }
    push_uint(out, value.unsigned_abs());
}

/// An unsigned integer in decimal, without `fmt`'s machinery.
pub fn push_uint(out: &mut Vec<u8>, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// A JSON string. Kinds, stream ids and crew names are plain ASCII by validation, so the
/// common case is a copy; anything else is escaped by `serde_json`.
pub fn push_json_str(out: &mut Vec<u8>, text: &str) {
    if text.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    } else {
        serde_json::to_writer(out, text).expect("strings always serialise");
    }
}

pub fn push_json_timestamp(out: &mut Vec<u8>, ts: Timestamp) {
    match ts.text() {
        Some(text) => {
            out.push(b'"');
            out.extend_from_slice(&text);
            out.push(b'"');
        }
        None => serde_json::to_writer(out, &ts).expect("timestamps always serialise"),
    }
}

/// An action as a runner proposes it: the host adds `ts`, `stream_id`, `crew` and `slice`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProposedAction {
    pub kind: String,
    pub payload: Box<RawValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u32>,
}

impl ProposedAction {
    /// Checks the proposal against SPEC §1: a valid, unreserved kind and ttl_ms in range.
    pub fn check(&self) -> Result<(), String> {
        check_kind(&self.kind).map_err(|why| format!("action {why}"))?;
        if is_reserved_kind(&self.kind) {
            return Err(format!(
                "action kind '{}' starts with '__', which is reserved for the system",
                self.kind
            ));
        }
        let ttl_ms = self.ttl_ms.unwrap_or(DEFAULT_TTL_MS);
        if !(1..=MAX_TTL_MS).contains(&ttl_ms) {
            return Err(format!(
                "action '{}' has ttl_ms {ttl_ms}, outside 1..={MAX_TTL_MS}",
                self.kind
            ));
        }
        Ok(())
    }

    /// Stamps a proposal that passed [`ProposedAction::check`] with its provenance.
    pub fn into_action(
        self,
        crew: &Arc<str>,
        stream_id: &Arc<str>,
        slice: i64,
        ts: Timestamp,
    ) -> Action {
        Action {
            ts,
            kind: self.kind,
            stream_id: stream_id.clone(),
            payload: self.payload,
            ttl_ms: self.ttl_ms.unwrap_or(DEFAULT_TTL_MS),
            crew: crew.clone(),
            slice,
        }
    }
}

/// Shared, immutable events: one event is handed to several crews without copying.
pub type SharedEvent = Arc<Event>;
/// Shared, immutable actions, handed to dependent crews without copying.
pub type SharedAction = Arc<Action>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_normalise_to_utc_microseconds() {
        let ts = Timestamp::parse("2025-03-01T12:00:00.1234567+02:00").unwrap();
        assert_eq!(ts.to_string(), "2025-03-01T10:00:00.123456Z");
        assert_eq!(Timestamp::parse(&ts.to_string()).unwrap(), ts);
    }

    proptest::proptest! {
        #[test]
        fn timestamp_formatting_matches_chrono(micros in -62_135_596_800_000_000i64..253_402_300_799_999_999) {
            let ours = Timestamp::from_micros(micros).to_string();
            let chrono = chrono::DateTime::from_timestamp_micros(micros)
                .unwrap()
                .format("%Y-%m-%dT%H:%M:%S%.6fZ")
                .to_string();
            proptest::prop_assert_eq!(ours, chrono);
        }
    }

    #[test]
    fn timestamps_without_offset_are_rejected() {
        assert!(Timestamp::parse("2025-03-01T12:00:00").is_err());
        assert!(Timestamp::parse("yesterday").is_err());
    }

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

    #[test]
    fn proposed_actions_are_validated_and_stamped() {
        let payload = RawValue::from_string("{}".into()).unwrap();
        let proposal = |kind: &str, ttl_ms| ProposedAction {
            kind: kind.into(),
            payload: payload.clone(),
            ttl_ms,
        };
        let ts = Timestamp::from_micros(500_000);
        let (crew, stream): (Arc<str>, Arc<str>) = ("c".into(), "s".into());
        let good = proposal("line", None);
        assert!(good.check().is_ok());
        let action = good.into_action(&crew, &stream, 0, ts);
        assert_eq!(action.ttl_ms, DEFAULT_TTL_MS);
        assert_eq!(
            (&*action.crew, &*action.stream_id, action.slice),
            ("c", "s", 0)
        );
        assert!(proposal("line", Some(0)).check().is_err());
        assert!(proposal("line", Some(300_001)).check().is_err());
        assert!(proposal("__hb", None).check().is_err());
        assert!(proposal("bad kind", None).check().is_err());
    }

    proptest::proptest! {
        /// The hand-written writers give exactly the bytes serde writes, also for text
        /// that needs escaping and for timestamps outside the formatted range.
        #[test]
        fn hand_written_json_matches_serde(
            micros in proptest::num::i64::ANY,
            kind in "\\PC{0,12}",
            stream_id in "[a-z\"\\\\\\x01-]{1,8}",
            ttl_ms in proptest::num::u32::ANY,
            slice in proptest::num::i64::ANY,
        ) {
            let payload = RawValue::from_string(r#"{"a":[1,"x\n"]}"#.into()).unwrap();
            let action = Action {
                ts: Timestamp::from_micros(micros),
                kind: kind.clone(),
                stream_id: stream_id.as_str().into(),
                payload: payload.clone(),
                ttl_ms,
                crew: kind.as_str().into(),
                slice,
            };
            let mut written = Vec::new();
            action.write_json(&mut written);
            proptest::prop_assert_eq!(
                String::from_utf8(written).unwrap(),
                serde_json::to_string(&action).unwrap()
            );
            let event = Event::new(Timestamp::from_micros(micros), kind, stream_id, payload);
            let expected = format!(
                r#"{{"ts":{},"kind":{},"stream_id":{},"payload":{}}}"#,
                serde_json::to_string(&event.ts).unwrap(),
                serde_json::to_string(&event.kind).unwrap(),
                serde_json::to_string(&event.stream_id).unwrap(),
                event.payload.get(),
            );
            proptest::prop_assert_eq!(event.json(), expected.as_str());
            proptest::prop_assert_eq!(serde_json::to_string(&event).unwrap(), expected);
        }
    }
}
