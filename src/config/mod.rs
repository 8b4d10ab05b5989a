//! Configuration: the global `live-config.yaml` and each crew's runtime file (SPEC §3).
//!
//! Files parse into raw serde types first, then validate into typed structs, so a
//! checked value cannot be invalid. Every problem is reported with its file and field.

mod crew;
mod crewai_runner;
pub(crate) mod crews_dir;
mod global;
mod nats;
mod paths;
mod types;
mod version;

use std::fmt;
use std::path::{Path, PathBuf};

pub use crewai_runner::OUTPUT_SUFFIX;
pub use crews_dir::{Crews, MAX_NEED_OFFSET};
pub use global::{GlobalConfig, LatePolicy, LogFormat, OverflowPolicy, SandboxDefaults};
pub use nats::{NatsSettings, Secret, TlsSettings};
pub use types::{
    BacklogPolicy, ContextAcl, CrewSpec, Need, RunnerSpec, SandboxSettings, Triggers, WaitPolicy,
};
pub use version::{crew_files, crew_version};

/// One problem in a configuration file, located by file and field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    pub file: PathBuf,
    /// Dotted path of the field (`runner.module`, `needs[1].offset`), or empty for the
    /// file as a whole.
    pub field: String,
    pub message: String,
}

impl ConfigIssue {
    pub fn new(file: &Path, field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigIssue {
            file: file.to_path_buf(),
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(
                f,
                "{}: {}: {}",
                self.file.display(),
                self.field,
                self.message
            )
        }
    }
}

/// Several configuration problems, reported together.
#[derive(Debug, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigIssue>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{issue}")?;
        }
        Ok(())
    }
}

/// Turns a YAML parse error into an issue that carries its line and column.
fn yaml_issue(file: &Path, err: &serde_saphyr::Error) -> ConfigIssue {
    let mut message = err.to_string();
    if let Some(hint) = unknown_field_hint(&message) {
        // On the first line, where the reader looks, before the excerpt.
        let end = message.find('\n').unwrap_or(message.len());
        message.insert_str(end, &hint);
    }
    ConfigIssue::new(file, "", message)
}

/// For serde's "unknown field `trigers`, expected one of ...": "; did you mean
/// `triggers`?" when one known name is a near miss.
fn unknown_field_hint(message: &str) -> Option<String> {
    let rest = message.split_once("unknown field `")?.1;
    let (unknown, rest) = rest.split_once('`')?;
    let line = rest.lines().next()?;
    let known = line
        .split_once("expected one of ")
        .or_else(|| line.split_once("expected "))?
        .1;
    let nearest = known
        .split([',', ' '])
        .map(|name| name.trim_matches('`'))
        .filter(|name| !name.is_empty() && *name != "or")
        .map(|name| (edit_distance(unknown, name), name))
        .min()?;
    let (distance, name) = nearest;
    (distance <= (unknown.chars().count() / 3).max(1)).then(|| format!("; did you mean `{name}`?"))
}

/// Levenshtein distance, by characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let replaced = diagonal + usize::from(ca != cb);
            diagonal = row[j + 1];
            row[j + 1] = replaced.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

/// Sandbox layer names from `sandbox.require` or `sandbox.disable`; on error, the index
/// of the first unknown name and why.
fn parse_layers(names: &[String]) -> Result<Vec<live_crew_sandbox::Layer>, (usize, String)> {
    names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            live_crew_sandbox::Layer::from_name(name).ok_or_else(|| {
                let known: Vec<&str> = live_crew_sandbox::Layer::ALL
                    .iter()
                    .map(|layer| layer.name())
                    .collect();
                (
                    i,
                    format!(
                        "'{name}' is not a sandbox layer; known: {}",
                        known.join(", ")
                    ),
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_near_miss_of_a_field_name_gets_a_suggestion() {
        let serde = "line 2 column 1: unknown field `trigers`, expected one of crew, triggers, needs\n --> x";
        assert_eq!(
            unknown_field_hint(serde).as_deref(),
            Some("; did you mean `triggers`?")
        );
        let two = "unknown field `sandbx`, expected `sandbox` or `context`";
        assert_eq!(
            unknown_field_hint(two).as_deref(),
            Some("; did you mean `sandbox`?")
        );
        let far = "unknown field `colour`, expected one of crew, triggers, needs";
        assert_eq!(unknown_field_hint(far), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
