//! The data that crosses every stage: events in, actions out (SPEC §1), and the JSON
//! writers they share.
//!
//! Payloads stay as raw JSON text (`RawValue`): the host validates them once on input and
//! then only copies bytes, which keeps JSON work off the hot path.

mod action;
mod event;
mod json;
mod names;
mod timestamp;

pub use action::{Action, ActionId, DEFAULT_TTL_MS, MAX_TTL_MS, ProposedAction, SharedAction};
pub use event::{Event, EventError, SharedEvent};
pub use json::{push_int, push_json_str, push_json_timestamp, push_uint};
pub use names::{check_crew_name, check_kind, check_stream_id, is_reserved_kind};
pub use timestamp::Timestamp;

/// A JSON object: contexts, context patches, a crew's dependency data.
pub type JsonObject = serde_json::Map<String, serde_json::Value>;
