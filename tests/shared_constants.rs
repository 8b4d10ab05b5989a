//! Constants the host and the bundled Python runner both use are defined once on each
//! side (Rust: where they belong; Python: `live_crew_runner/constants.py`). This checks
//! that the two copies agree, by reading the Python module's assignments.

use std::collections::BTreeMap;
use std::path::Path;

/// `NAME = value` lines of the Python module: strings without their quotes, numbers
/// without the underscores Python allows in them.
fn python_constants() -> BTreeMap<String, String> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("runners/python/live_crew_runner/constants.py");
    let text = std::fs::read_to_string(&path).unwrap();
    text.lines()
        .filter_map(|line| line.split_once(" = "))
        .filter(|(name, _)| name.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        .map(|(name, value)| {
            let value = value.trim();
            let value = match value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
                Some(text) => text.to_owned(),
                None => value.replace('_', ""),
            };
            (name.to_owned(), value)
        })
        .collect()
}

#[test]
fn the_python_runner_agrees_with_the_host() {
    let python = python_constants();
    let rust = BTreeMap::from([
        (
            "PROTOCOL_VERSION".to_owned(),
            live_crew::protocol::PROTOCOL_VERSION.to_string(),
        ),
        (
            "MAX_TTL_MS".to_owned(),
            live_crew::model::MAX_TTL_MS.to_string(),
        ),
        (
            "OUTPUT_SUFFIX".to_owned(),
            live_crew::config::OUTPUT_SUFFIX.to_owned(),
        ),
    ]);
    assert_eq!(python, rust, "runners/python/live_crew_runner/constants.py");
}
