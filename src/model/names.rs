//! The names SPEC §1 and §3 constrain: event and action kinds, stream ids, crew names.

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
