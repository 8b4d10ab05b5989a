//! Calls for crews on worker hosts (SPEC §12), as they travel: the scheduler publishes a
//! [`WorkCall`] on `live.<stream>.slice.<n>.<crew>.ready` (`LIVE_WORK`, a work queue),
//! a worker answers with a [`WorkResult`] on the same subject ending in `.done`
//! (`LIVE_DONE`).
//!
//! A call's id is `<stream>:<slice>:<crew>`: the same for every run of that slice, so
//! crews that call external systems can use it as an idempotency key. The message ids
//! add the stream's KV revision the scheduler opened the stream on (`<call id>:<rev>`):
//! a scheduler that restarts on the same committed state publishes the same ids, so its
//! repeated work is dropped as a duplicate and the earlier result stands; one that
//! restarts after further commits publishes new ids, and results for the old revision
//! are stale.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::CrewSpec;
use crate::model::{JsonObject, ProposedAction};
use crate::pool::{CallFailure, CallOutcome, CallOutput, FailureReason};
use crate::protocol::Call;

/// The work queue of calls for worker hosts.
pub const WORK_STREAM: &str = "LIVE_WORK";
/// Their results.
pub const DONE_STREAM: &str = "LIVE_DONE";

/// The durable consumer every worker of `crew` pulls its calls from.
pub fn work_consumer(crew: &str) -> String {
    format!("work_{crew}")
}

pub fn ready_subject(stream: &str, slice: i64, crew: &str) -> String {
    format!("live.{stream}.slice.{slice}.{crew}.ready")
}

pub fn done_subject(stream: &str, slice: i64, crew: &str) -> String {
    format!("live.{stream}.slice.{slice}.{crew}.done")
}

/// The calls of one crew, whatever their stream and slice.
pub fn crew_ready_filter(crew: &str) -> String {
    format!("live.*.slice.*.{crew}.ready")
}

/// The message id of a call and of its result.
pub fn message_id(call_id: &str, rev: u64) -> String {
    format!("{call_id}:{rev}")
}

/// The KV key (in `live_ctx`) under which the scheduler publishes a crew's digest.
/// The `.` keeps it apart from stream ids.
pub fn digest_key(crew: &str) -> String {
    format!("crew.{crew}")
}

/// SHA-256 of a crew's runtime file, in hex: scheduler and workers compare it so that
/// two hosts never run two versions of one crew.
pub fn crew_digest(spec: &CrewSpec) -> std::io::Result<String> {
    let bytes = std::fs::read(&spec.file)?;
    Ok(Sha256::digest(&bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect())
}

/// A call for a worker.
#[derive(Debug, Serialize, Deserialize)]
pub struct WorkCall {
    pub call_id: String,
    pub rev: u64,
    pub crew: String,
    /// The scheduler's digest of the crew's runtime file.
    pub digest: String,
    pub call: Call,
}

impl WorkCall {
    pub fn message_id(&self) -> String {
        message_id(&self.call_id, self.rev)
    }
}

/// A worker's answer to a call: its output, or why it failed.
#[derive(Debug, Serialize, Deserialize)]
pub struct WorkResult {
    pub call_id: String,
    pub rev: u64,
    /// The worker host that ran it.
    pub worker: String,
    /// Not flattened: serde's flatten buffers its input, which the actions' raw JSON
    /// payloads do not survive.
    pub outcome: WireOutcome,
}

impl WorkResult {
    pub fn message_id(&self) -> String {
        message_id(&self.call_id, self.rev)
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireOutcome {
    Result {
        actions: Vec<ProposedAction>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        context_patch: Option<JsonObject>,
        runner_us: u64,
        /// The call's LLM requests, accounted by the scheduler (SPEC §14).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        llm: Vec<crate::llm::LlmUsage>,
    },
    Error {
        reason: String,
        message: String,
    },
}

impl From<CallOutcome> for WireOutcome {
    fn from(outcome: CallOutcome) -> WireOutcome {
        match outcome {
            Ok(output) => WireOutcome::Result {
                actions: output.actions,
                context_patch: output.context_patch,
                runner_us: u64::try_from(output.runner_time.as_micros()).unwrap_or(u64::MAX),
                llm: output.llm,
            },
            Err(failure) => WireOutcome::Error {
                reason: failure.reason.as_str().to_owned(),
                message: failure.message,
            },
        }
    }
}

impl WireOutcome {
    /// The outcome as the scheduler takes it: actions are checked again (they crossed
    /// the network), and an unknown reason is a runner error.
    pub fn into_outcome(self, crew: &str, worker: &str) -> CallOutcome {
        match self {
            WireOutcome::Result {
                actions,
                context_patch,
                runner_us,
                llm,
            } => {
                if let Some(why) = actions.iter().find_map(|action| action.check().err()) {
                    return Err(CallFailure {
                        reason: FailureReason::InvalidAction,
                        message: format!("crew '{crew}' on worker {worker}: {why}"),
                    });
                }
                Ok(CallOutput {
                    actions,
                    context_patch,
                    runner_time: Duration::from_micros(runner_us),
                    llm,
                })
            }
            WireOutcome::Error { reason, message } => Err(CallFailure {
                reason: FailureReason::parse(&reason).unwrap_or(FailureReason::RunnerError),
                message: format!("{message} (on worker {worker})"),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::call_id;

    #[test]
    fn outcomes_cross_the_wire_and_come_back_checked() {
        let action: ProposedAction =
            serde_json::from_str(r#"{"kind":"seen","payload":{"n":1}}"#).unwrap();
        let output = CallOutput {
            actions: vec![action],
            context_patch: None,
            runner_time: Duration::from_micros(1500),
            llm: Vec::new(),
        };
        let result = WorkResult {
            call_id: call_id("s", 3, "vision"),
            rev: 7,
            worker: "w1".into(),
            outcome: WireOutcome::from(Ok(output)),
        };
        let json = serde_json::to_string(&result).unwrap();
        assert!(json.contains(r#""call_id":"s:3:vision","rev":7"#), "{json}");
        let back: WorkResult = serde_json::from_str(&json).unwrap();
        assert_eq!(back.message_id(), "s:3:vision:7");
        let output = back.outcome.into_outcome("vision", "w1").unwrap();
        assert_eq!(output.actions[0].kind, "seen");
        assert_eq!(output.runner_time, Duration::from_micros(1500));

        let reserved: WireOutcome = serde_json::from_str(
            r#"{"result":{"actions":[{"kind":"__hb","payload":1}],"runner_us":1}}"#,
        )
        .unwrap();
        let failure = reserved.into_outcome("vision", "w1").unwrap_err();
        assert_eq!(failure.reason, FailureReason::InvalidAction);

        let timeout = WireOutcome::from(Err(CallFailure {
            reason: FailureReason::Timeout,
            message: "crew 'vision' missed its deadline".into(),
        }));
        let failure = timeout.into_outcome("vision", "w1").unwrap_err();
        assert_eq!(failure.reason, FailureReason::Timeout);
        assert!(
            failure.message.ends_with("(on worker w1)"),
            "{}",
            failure.message
        );
    }
}
