//! Output actions (SPEC §1): what a runner proposes, and the action the host stamps.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{
    Timestamp, check_kind, is_reserved_kind, push_int, push_json_str, push_json_timestamp,
    push_uint,
};

/// Default `ttl_ms` of an action.
pub const DEFAULT_TTL_MS: u32 = 5000;
/// Largest accepted `ttl_ms`; the Python runner's copy is in `live_crew_runner/constants.py`.
pub const MAX_TTL_MS: u32 = 300_000;

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

/// An action's deterministic id, `<stream>:<slice>:<crew>:<i>` with `i` its place among
/// the actions of its crew's call: the same events through the same crews give every
/// action the same id, so a durable sink can recognise a repeat after a restart (NATS
/// message ids, SPEC §12).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActionId<'a> {
    pub stream: &'a str,
    pub slice: i64,
    pub crew: &'a str,
    pub index: usize,
}

impl std::fmt::Display for ActionId<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}:{}",
            self.stream, self.slice, self.crew, self.index
        )
    }
}

/// Shared, immutable actions, handed to dependent crews without copying.
pub type SharedAction = Arc<Action>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Event;

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
