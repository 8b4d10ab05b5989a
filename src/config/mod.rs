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

use std::fmt;
use std::path::{Path, PathBuf};

pub use crewai_runner::OUTPUT_SUFFIX;
pub use crews_dir::{Crews, MAX_NEED_OFFSET};
pub use global::{GlobalConfig, LatePolicy, LogFormat, OverflowPolicy, SandboxDefaults};
pub use nats::{NatsSettings, Secret, TlsSettings};
pub use types::{
    BacklogPolicy, ContextAcl, CrewSpec, Need, RunnerSpec, SandboxSettings, Triggers, WaitPolicy,
};

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
    let message = err.to_string();
    ConfigIssue::new(file, "", message)
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
