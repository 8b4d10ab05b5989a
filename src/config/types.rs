//! A crew as the checked runtime file describes it (SPEC §3): what every later stage
//! reads. A leaf: it imports no other part of `config`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use live_crew_sandbox::Layer;
use serde::Deserialize;
use serde_json::Value;

use crate::context::KeySet;

/// Event kinds that wake a crew.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Triggers {
    /// `"*"`: any kind.
    Any,
    Kinds(Vec<String>),
}

impl Triggers {
    pub fn matches(&self, kind: &str) -> bool {
        match self {
            Triggers::Any => true,
            Triggers::Kinds(kinds) => kinds.iter().any(|k| k == kind),
        }
    }
}

/// A dependency of a crew run in slice `m`, relative to `m`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    Crew { crew: String, offset: i64 },
    Event { kind: String, offset: i64 },
}

impl Need {
    /// The key under which the dependency's data reaches the call (`deps`).
    pub fn deps_key(&self) -> String {
        match self {
            Need::Crew { crew, offset } => format!("crew:{crew}@{offset}"),
            Need::Event { kind, offset } => format!("event:{kind}@{offset}"),
        }
    }

    pub fn offset(&self) -> i64 {
        match self {
            Need::Crew { offset, .. } | Need::Event { offset, .. } => *offset,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitPolicy {
    All,
    Any,
    None,
    /// Wait at most this many milliseconds after the trigger slice closed.
    Timeout(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BacklogPolicy {
    Fifo,
    Latest,
}

/// How the crew's process is started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunnerSpec {
    /// The bundled Python runner; `kind` is `python`, `crewai` or `prompt`, and the
    /// runner reads its own settings from the runtime file.
    BundledPython {
        kind: String,
        /// `runner.python`, if set; else `$LIVE_CREW_PYTHON`, else `python3`.
        python: Option<String>,
        /// `runner.zygote`: start from the interpreter's fork server (default) or cold.
        zygote: bool,
    },
    /// Any executable that speaks the protocol. `program` is resolved already.
    Command { program: PathBuf, args: Vec<String> },
}

impl RunnerSpec {
    /// Whether the runner imports CrewAI: the `crewai` and `prompt` kinds.
    pub fn uses_crewai(&self) -> bool {
        matches!(self, RunnerSpec::BundledPython { kind, .. } if kind == "crewai" || kind == "prompt")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextAcl {
    pub read: KeySet,
    pub write: KeySet,
}

/// The crew's sandbox, with the global defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxSettings {
    pub memory_mb: u64,
    pub cpu_s: u64,
    pub open_files: u64,
    pub processes: u64,
    pub network: bool,
    pub user: Option<live_crew_sandbox::User>,
    /// Extra paths the crew may read and execute (Landlock), absolute and existing.
    pub read: Vec<PathBuf>,
    /// Extra paths the crew may read and write (Landlock), absolute and existing.
    pub write: Vec<PathBuf>,
    pub pid_namespace: bool,
    /// Layers without which the host must not start.
    pub require: Vec<Layer>,
}

/// A validated crew.
#[derive(Debug, Clone, PartialEq)]
pub struct CrewSpec {
    pub name: String,
    /// The crew folder (absolute).
    pub dir: PathBuf,
    /// The runtime file it was loaded from.
    pub file: PathBuf,
    pub triggers: Triggers,
    pub needs: Vec<Need>,
    pub wait_policy: WaitPolicy,
    pub slice_stride: u64,
    pub backlog_policy: BacklogPolicy,
    pub timeout_ms: u64,
    /// How long the runner has to answer `hello` with `ready`.
    pub startup_timeout_ms: u64,
    pub max_errors: u32,
    pub runner: RunnerSpec,
    pub sandbox: SandboxSettings,
    pub context: ContextAcl,
    pub env: BTreeMap<String, String>,
    pub env_passthrough: Vec<String>,
    /// What the crew may spend through the LLM gateway (SPEC §14).
    pub budget: Option<crate::llm::Budget>,
    /// The runtime file as JSON, sent to the runner in `hello`.
    pub document: Value,
}
