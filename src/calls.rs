//! What the scheduler asks of crews, and what it gets back: one call, one outcome.
//!
//! The scheduler depends only on the [`CrewPool`] trait, so its logic is tested with
//! in-memory pools and a virtual clock; the supervisor implements it with real processes.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use crate::model::ProposedAction;
use crate::protocol::{Call, JsonObject};

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
        }
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
}

pub type CallOutcome = Result<CallOutput, CallFailure>;

/// Runs calls on named crews. One call per crew is in flight at a time; a pool queues
/// further calls to the same crew.
pub trait CrewPool: Send + Sync + 'static {
    fn call(&self, crew: &str, call: Call) -> impl Future<Output = CallOutcome> + Send + 'static;

    /// Counts a failure found after the crew's call had succeeded (a context patch the
    /// host rejected, SPEC §5) toward the crew's `max_errors`, as a failed call counts.
    fn count_failure(&self, crew: &str, failure: CallFailure);
}
