//! One call's outcome: what a crew produced, or why it failed (SPEC §8 reasons).

use std::fmt;
use std::time::Duration;

use crate::model::{JsonObject, ProposedAction};

/// Why a call failed; the `reason` of its error record (SPEC §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FailureReason {
    /// The runner did not answer `hello` with `ready` in time, or could not be started.
    Startup,
    /// The call missed its deadline.
    Timeout,
    /// The runner process exited.
    Crash,
    /// The runner process was killed for exceeding its memory limit.
    Oom,
    /// No heartbeat for 3 × `heartbeat_ms`.
    Heartbeat,
    /// A line that breaks the protocol: too long, not JSON, wrong id, unexpected message.
    Protocol,
    /// The runner returned an action that is not valid (SPEC §1).
    InvalidAction,
    /// The runner answered the call with an `error` message.
    RunnerError,
    /// The crew was disabled after `max_errors` consecutive failures.
    Disabled,
    /// The call's context patch wrote a key outside the crew's `context.write`.
    ContextAcl,
    /// The call's context patch would have grown the context past `context_max_bytes`.
    ContextSize,
    /// The crew runs on worker hosts (SPEC §12), and none serves it.
    NoWorker,
    /// The crew spent its LLM budget (SPEC §14).
    Budget,
}

impl FailureReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::Startup => "startup",
            FailureReason::Timeout => "timeout",
            FailureReason::Crash => "crash",
            FailureReason::Oom => "oom",
            FailureReason::Heartbeat => "heartbeat",
            FailureReason::Protocol => "protocol",
            FailureReason::InvalidAction => "invalid_action",
            FailureReason::RunnerError => "runner_error",
            FailureReason::Disabled => "disabled",
            FailureReason::ContextAcl => "ctx_acl",
            FailureReason::ContextSize => "ctx_size",
            FailureReason::NoWorker => "no_worker",
            FailureReason::Budget => "budget",
        }
    }

    /// Every reason.
    pub const ALL: [FailureReason; 13] = [
        FailureReason::Startup,
        FailureReason::Timeout,
        FailureReason::Crash,
        FailureReason::Oom,
        FailureReason::Heartbeat,
        FailureReason::Protocol,
        FailureReason::InvalidAction,
        FailureReason::RunnerError,
        FailureReason::Disabled,
        FailureReason::ContextAcl,
        FailureReason::ContextSize,
        FailureReason::NoWorker,
        FailureReason::Budget,
    ];

    /// The reason named `name` (as [`FailureReason::as_str`] writes it).
    pub fn parse(name: &str) -> Option<FailureReason> {
        FailureReason::ALL
            .into_iter()
            .find(|reason| reason.as_str() == name)
    }
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed call. The message names the crew and never carries host paths or traces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallFailure {
    pub reason: FailureReason,
    pub message: String,
}

/// What a successful call produced. Pools hand over only actions that passed
/// [`ProposedAction::check`].
#[derive(Debug, Clone, Default)]
pub struct CallOutput {
    pub actions: Vec<ProposedAction>,
    pub context_patch: Option<JsonObject>,
    /// How long the runner had the call: from the host starting to write the call line
    /// to the host reading the answer.
    pub runner_time: Duration,
    /// What each of the call's LLM requests used (SPEC §14).
    pub llm: Vec<crate::llm::LlmUsage>,
}

pub type CallOutcome = Result<CallOutput, CallFailure>;
