//! `live-crew replay --expect`: compares a replay's actions with a recorded run's.
//!
//! Both files are JSON Lines of actions in output order, which is deterministic (SPEC
//! §4), so the replay of the same events through the same crews must give the same
//! sequence. Lines are compared as JSON values, so a recording that was reformatted
//! (key order, spacing) still matches.

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::model::Timestamp;

/// The recorded actions cannot be read; a usage error.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the expected actions {path}: {reason}; check --expect")]
pub struct ExpectError {
    pub path: PathBuf,
    pub reason: String,
}

/// The first place where the replay and the recording part ways.
#[derive(Debug, PartialEq)]
pub struct Difference {
    /// 1-based position among the compared actions.
    pub action: usize,
    /// Line of the recording it was compared with, if the recording had one there.
    pub expected_line: Option<usize>,
    pub expected: Option<Value>,
    pub produced: Option<Value>,
}

/// How a replay compared with its recording.
#[derive(Debug, PartialEq)]
pub struct Verdict {
    /// Actions of the recording that were compared.
    pub compared: usize,
    /// Actions of the recording left out: their slices start before --from-timestamp.
    pub left_out: usize,
    pub difference: Option<Difference>,
}

/// Compares the replay's actions (`produced`) with the recording (`expected`). With
/// `from`, the recording's actions of slices that start before it are left out: an
/// action's `ts` is the end of its slice, so its slice started `slice_ms` earlier.
pub fn compare(
    expected: &Path,
    produced: &Path,
    from: Option<Timestamp>,
    slice_ms: u64,
) -> Result<Verdict, ExpectError> {
    let expect_error = |reason: String| ExpectError {
        path: expected.to_path_buf(),
        reason,
    };
    let slice_us = i64::try_from(slice_ms.saturating_mul(1000)).unwrap_or(i64::MAX);
    let mut recorded = Vec::new();
    let mut left_out = 0;
    for (index, line) in lines(expected)
        .map_err(|err| expect_error(err.to_string()))?
        .enumerate()
    {
        let line = line.map_err(|err| expect_error(err.to_string()))?;
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(&line)
            .map_err(|err| expect_error(format!("line {}: {err}", index + 1)))?;
        let slice_start = value["ts"]
            .as_str()
            .and_then(|ts| Timestamp::parse(ts).ok())
            .map(|end| end.as_micros().saturating_sub(slice_us));
        match (from, slice_start) {
            (Some(from), Some(start)) if start < from.as_micros() => left_out += 1,
            _ => recorded.push((index + 1, value)),
        }
    }
    let mut produced_values = Vec::new();
    let produced_lines = lines(produced).map_err(|err| expect_error(err.to_string()))?;
    for line in produced_lines {
        let line = line.map_err(|err| expect_error(err.to_string()))?;
        let value: Value = serde_json::from_str(&line)
            .map_err(|err| expect_error(format!("the replay's own output: {err}")))?;
        produced_values.push(value);
    }
    let compared = recorded.len();
    let mut recorded = recorded.into_iter();
    let mut produced = produced_values.into_iter();
    let mut action = 0;
    let difference = loop {
        action += 1;
        match (recorded.next(), produced.next()) {
            (None, None) => break None,
            (Some((_, expected)), Some(produced)) if expected == produced => continue,
            (expected, produced) => {
                break Some(Difference {
                    action,
                    expected_line: expected.as_ref().map(|(line, _)| *line),
                    expected: expected.map(|(_, value)| value),
                    produced,
                });
            }
        }
    };
    Ok(Verdict {
        compared,
        left_out,
        difference,
    })
}

/// Compares as [`compare`] does and logs the verdict: the number of actions that match,
/// or the first difference. True when they match.
pub fn report(
    expected: &Path,
    produced: &Path,
    from: Option<Timestamp>,
    slice_ms: u64,
) -> Result<bool, ExpectError> {
    let verdict = compare(expected, produced, from, slice_ms)?;
    let left_out = match verdict.left_out {
        0 => String::new(),
        n => format!("; {n} recorded actions of earlier slices left out"),
    };
    match verdict.difference {
        None => {
            tracing::info!(
                actions = verdict.compared,
                "replay matches {} ({} actions{left_out})",
                expected.display(),
                verdict.compared
            );
            Ok(true)
        }
        Some(difference) => {
            tracing::error!(
                "replay differs from {} at {difference}{left_out}",
                expected.display()
            );
            Ok(false)
        }
    }
}

fn lines(path: &Path) -> io::Result<io::Lines<BufReader<File>>> {
    Ok(BufReader::new(File::open(path)?).lines())
}

/// An action for a message, cut to a readable length.
fn excerpt(value: &Option<Value>) -> String {
    const MAX: usize = 300;
    match value {
        None => "nothing (the sequence ends)".into(),
        Some(value) => {
            let text = value.to_string();
            match text.char_indices().nth(MAX) {
                Some((cut, _)) => format!("{}…", &text[..cut]),
                None => text,
            }
        }
    }
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let line = match self.expected_line {
            Some(line) => format!(" (line {line} of the recording)"),
            None => String::new(),
        };
        write!(
            f,
            "action {}{line}: expected {}, replay gave {}",
            self.action,
            excerpt(&self.expected),
            excerpt(&self.produced)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(slice: i64, kind: &str) -> String {
        // slice_ms 500 from 2025-01-01T00:00:00Z: slice n ends at (n+1) * 0.5 s.
        let end = Timestamp::parse("2025-01-01T00:00:00Z")
            .unwrap()
            .as_micros()
            + (slice + 1) * 500_000;
        format!(
            r#"{{"ts":"{}","kind":"{kind}","stream_id":"s","payload":null,"ttl_ms":5000,"crew":"c","slice":{slice}}}"#,
            Timestamp::from_micros(end)
        )
    }

    fn files(expected: &[String], produced: &[String]) -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let (e, p) = (dir.path().join("expected"), dir.path().join("produced"));
        std::fs::write(&e, expected.join("\n") + "\n").unwrap();
        std::fs::write(&p, produced.join("\n")).unwrap();
        (dir, e, p)
    }

    #[test]
    fn the_same_actions_match_whatever_the_formatting() {
        let produced = [action(0, "a"), action(1, "b")];
        let reformatted: Vec<String> = produced
            .iter()
            .map(|line| {
                let value: Value = serde_json::from_str(line).unwrap();
                serde_json::to_string_pretty(&value)
                    .unwrap()
                    .replace('\n', " ")
            })
            .collect();
        let (_dir, e, p) = files(&reformatted, &produced);
        let verdict = compare(&e, &p, None, 500).unwrap();
        assert_eq!(verdict.compared, 2);
        assert_eq!(verdict.difference, None);
    }

    #[test]
    fn the_first_difference_is_named_with_its_line() {
        let (_dir, e, p) = files(
            &[action(0, "a"), action(1, "b"), action(2, "c")],
            &[action(0, "a"), action(1, "x")],
        );
        let difference = compare(&e, &p, None, 500).unwrap().difference.unwrap();
        assert_eq!((difference.action, difference.expected_line), (2, Some(2)));
        assert!(
            difference.to_string().contains(r#""kind":"x""#),
            "{difference}"
        );
        // A replay that stops early differs where it stops.
        let (_dir, e, p) = files(&[action(0, "a"), action(1, "b")], &[action(0, "a")]);
        let difference = compare(&e, &p, None, 500).unwrap().difference.unwrap();
        assert_eq!(difference.action, 2);
        assert_eq!(difference.produced, None);
        assert!(difference.to_string().contains("nothing"), "{difference}");
    }

    #[test]
    fn slices_before_from_are_left_out_of_the_recording() {
        let from = Timestamp::parse("2025-01-01T00:00:01Z").unwrap(); // slice 2's start
        let (_dir, e, p) = files(
            &[
                action(0, "a"),
                action(1, "b"),
                action(2, "c"),
                action(3, "d"),
            ],
            &[action(2, "c"), action(3, "d")],
        );
        let verdict = compare(&e, &p, Some(from), 500).unwrap();
        assert_eq!((verdict.compared, verdict.left_out), (2, 2));
        assert_eq!(verdict.difference, None);
    }

    #[test]
    fn a_recording_that_is_not_json_lines_is_an_error_with_its_line() {
        let (_dir, e, p) = files(&[action(0, "a"), "not json".into()], &[]);
        let error = compare(&e, &p, None, 500).unwrap_err();
        assert!(error.to_string().contains("line 2"), "{error}");
    }
}
