//! Hand-written JSON for the hot path: every event and action passes through here, and
//! `fmt`'s and serde's per-field machinery cost a measurable share of the host's time.

use super::Timestamp;

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
