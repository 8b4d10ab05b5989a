//! One event's text to an event or a located error, with the host's input limits.

use std::sync::Arc;

use super::{InputError, InputItem};
use crate::model::{Event, SharedEvent};

/// Deepest nesting of arrays and objects accepted in one event (the event object itself
/// is level 1), so that hostile input cannot make a crew's JSON parser recurse without
/// bound.
pub const MAX_EVENT_DEPTH: usize = 64;

/// The nesting depth of `text` if it exceeds [`MAX_EVENT_DEPTH`]; brackets inside
/// strings do not count.
fn too_deep(text: &[u8]) -> Option<usize> {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for &byte in text {
        match (in_string, byte) {
            (true, _) if escaped => escaped = false,
            (true, b'\\') => escaped = true,
            (true, b'"') | (false, b'"') => in_string = !in_string,
            (false, b'{' | b'[') => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            (false, b'}' | b']') => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    (deepest > MAX_EVENT_DEPTH).then_some(deepest)
}

/// The event at `line` (and array element `index`) of a file; `len` is its full length,
/// of which `text` may hold only the first `max_bytes + 1` bytes.
pub(super) fn parse(
    text: &[u8],
    line: u64,
    index: Option<u64>,
    max_bytes: usize,
    len: usize,
) -> InputItem {
    parse_event(text, max_bytes, len).map_err(|message| InputError::at_line(line, index, message))
}

/// One event's text, checked against the host's input limits; the error says what is
/// wrong, for the caller to locate.
pub fn parse_event(text: &[u8], max_bytes: usize, len: usize) -> Result<SharedEvent, String> {
    if len > max_bytes {
        return Err(format!(
            "event is {len} bytes, over max_event_bytes ({max_bytes}); \
             shrink the payload or raise max_event_bytes"
        ));
    }
    if let Some(depth) = too_deep(text) {
        return Err(format!(
            "event nests {depth} levels deep, over the limit of {MAX_EVENT_DEPTH}; \
             flatten the payload"
        ));
    }
    let text = std::str::from_utf8(text).map_err(|err| format!("not UTF-8: {err}"))?;
    Event::from_json(text)
        .map(Arc::new)
        .map_err(|err| err.to_string())
}
