//! One crew's actor: it owns the runner process and the crew's queue of calls, runs one
//! call at a time, and restarts the runner with backoff after a failure until
//! `max_errors` consecutive failures disable the crew.

use std::sync::Arc;
use std::time::Duration;

use live_crew_sandbox::{Launcher, Sandbox, SpawnSpec};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::CallRequest;
use super::process::{RunnerLimits, RunnerProcess};
use super::status::CrewMonitor;
use crate::llm::{Gateway, OnExceed};
use crate::pool::{CallFailure, CrewState, FailureReason};
use crate::protocol::HostMessage;

/// Restart delays: `initial`, doubling per consecutive failure, capped at `max`.
#[derive(Debug, Clone)]
pub(super) struct Backoff {
    pub(super) initial: Duration,
    pub(super) max: Duration,
}

impl Backoff {
    fn delay(&self, consecutive_failures: u32) -> Duration {
        let doublings = consecutive_failures.saturating_sub(1).min(16);
        (self.initial * 2u32.pow(doublings)).min(self.max)
    }
}

/// A new version of a crew (hot reload): what its next runner starts from.
#[derive(Debug)]
pub(super) struct Version {
    pub(super) spawn: SpawnSpec,
    pub(super) hello: Vec<u8>,
    pub(super) max_errors: u32,
    pub(super) startup_timeout: Duration,
}

pub(super) struct CrewActor {
    pub(super) crew: Arc<str>,
    pub(super) monitor: Arc<CrewMonitor>,
    pub(super) max_errors: u32,
    pub(super) spawn: SpawnSpec,
    pub(super) hello: Vec<u8>,
    pub(super) sandbox: Arc<Sandbox>,
    pub(super) launcher: Arc<dyn Launcher>,
    /// Where the runner's LLM requests go (SPEC §14).
    pub(super) gateway: Arc<Gateway>,
    pub(super) limits: RunnerLimits,
    pub(super) backoff: Backoff,
}

/// An actor's record of consecutive failures.
#[derive(Default)]
struct Failures {
    consecutive: u32,
    /// The count the latest successful calls reset, restored when one of them turns out
    /// to have failed after all (a rejected context patch).
    before_success: u32,
    last: Option<CallFailure>,
}

impl CrewActor {
    pub(super) async fn run(
        mut self,
        mut queue: mpsc::Receiver<CallRequest>,
        mut reported: mpsc::UnboundedReceiver<CallFailure>,
        mut versions: mpsc::UnboundedReceiver<Version>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut failures = Failures::default();
        let mut runner: Option<RunnerProcess> = None;
        let mut started_before = false;
        // A `disable` budget was spent: the crew stays down for the rest of the run.
        let mut budget_spent = false;
        loop {
            let disabled = failures.consecutive >= self.max_errors || budget_spent;
            if runner.is_none() && !disabled {
                match self.start_runner(&failures, &mut stop).await {
                    Some(Ok(started)) => {
                        if std::mem::replace(&mut started_before, true) {
                            self.monitor.count_restart();
                        }
                        self.monitor.set_pid(Some(started.pid()));
                        self.monitor.set_state(CrewState::Ready);
                        runner = Some(started);
                    }
                    Some(Err(failure)) => {
                        self.record(&mut failures, failure);
                        continue;
                    }
                    None => break,
                }
            }
            // Wait for a call, the stop signal, a failure found after a call, or an idle
            // runner failing.
            let request = tokio::select! {
                biased;
                _ = stopping(&mut stop) => break,
                Some(version) = versions.recv() => {
                    // Between calls: the old runner has answered its last one. It stops
                    // in protocol order; the next start is the new version's.
                    if let Some(process) = runner.take() {
                        process.shutdown().await;
                    }
                    self.spawn = version.spawn;
                    self.hello = version.hello;
                    self.max_errors = version.max_errors;
                    self.limits.startup_timeout = version.startup_timeout;
                    failures = Failures::default();
                    self.monitor.set_pid(None);
                    tracing::info!(crew = %self.crew, "crew reloaded: its next runner starts from the new version");
                    continue;
                }
                Some(failure) = reported.recv() => {
                    // The call that had reset the count failed after all. The runner
                    // answered, so it stays up unless the crew is now disabled.
                    failures.consecutive = failures.consecutive.max(failures.before_success);
                    self.record(&mut failures, failure);
                    failures.before_success = failures.consecutive;
                    if failures.consecutive >= self.max_errors {
                        self.stop_runner(runner.take()).await;
                    }
                    continue;
                }
                request = queue.recv() => match request {
                    Some(request) => request,
                    None => break,
                },
                failure = idle(runner.as_mut()) => {
                    self.record(&mut failures, failure);
                    self.stop_runner(runner.take()).await;
                    continue;
                }
            };
            let (call, reply) = request;
            match self.gateway.over_budget(&self.crew, Some(&call.stream_id)) {
                Some((OnExceed::Model(_), _)) | None => {}
                Some((on_exceed, why)) => {
                    let _ = reply.send(Err(CallFailure {
                        reason: FailureReason::Budget,
                        message: why.clone(),
                    }));
                    if on_exceed == OnExceed::Disable && !std::mem::replace(&mut budget_spent, true)
                    {
                        tracing::warn!(crew = %self.crew, %why, "crew disabled: its LLM budget is spent");
                        self.monitor.set_state(CrewState::Disabled);
                        if let Some(process) = runner.take() {
                            process.shutdown().await;
                        }
                        self.monitor.set_pid(None);
                    }
                    continue;
                }
            }
            let Some(process) = runner.as_mut() else {
                let _ = reply.send(Err(self.disabled_failure(&failures)));
                continue;
            };
            let id = call.id;
            // The scheduler set the deadline (the crew's `timeout_ms`); the runner sees
            // the same budget in `deadline_ms`.
            let deadline = Instant::now() + Duration::from_millis(call.deadline_ms);
            let line = HostMessage::Call(call).encode();
            self.monitor.set_state(CrewState::Busy);
            let outcome = process.call(&line, id, deadline, &self.gateway).await;
            match outcome {
                Ok(output) => {
                    failures = Failures {
                        before_success: failures.consecutive,
                        ..Failures::default()
                    };
                    self.monitor.set_state(CrewState::Ready);
                    let _ = reply.send(Ok(output));
                }
                Err(failure) => {
                    let _ = reply.send(Err(failure.clone()));
                    // A runner that answered with `error` is healthy; any other failure
                    // leaves it in an unknown state, so it is replaced.
                    let keep = failure.reason == FailureReason::RunnerError;
                    self.record(&mut failures, failure);
                    if !keep || failures.consecutive >= self.max_errors {
                        self.stop_runner(runner.take()).await;
                    } else {
                        self.monitor.set_state(CrewState::Ready);
                    }
                }
            }
        }
        if let Some(process) = runner {
            process.shutdown().await;
        }
        self.monitor.set_pid(None);
        self.monitor.set_state(CrewState::Stopped);
    }

    /// Kills a failed runner's process group; the crew is then restarting or disabled.
    async fn stop_runner(&self, runner: Option<RunnerProcess>) {
        if let Some(failed) = runner {
            failed.kill().await;
        }
        self.monitor.set_pid(None);
        if self.monitor.state() != CrewState::Disabled {
            self.monitor.set_state(CrewState::Restarting);
        }
    }

    /// Starts the runner after the backoff that `failures` calls for. `None` if the host
    /// is stopping.
    async fn start_runner(
        &self,
        failures: &Failures,
        stop: &mut watch::Receiver<bool>,
    ) -> Option<Result<RunnerProcess, CallFailure>> {
        let delay = if failures.consecutive == 0 {
            Duration::ZERO
        } else {
            self.monitor.set_state(CrewState::Restarting);
            self.backoff.delay(failures.consecutive)
        };
        let start = async {
            // Not even a zero sleep: tokio's timer would round it up to its next
            // millisecond tick, and a first start needs no delay.
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            self.monitor.set_state(CrewState::Starting);
            let started = Instant::now();
            let result = RunnerProcess::start(
                &self.crew,
                &self.monitor,
                &self.spawn,
                &self.sandbox,
                &*self.launcher,
                &self.hello,
                &self.limits,
            )
            .await;
            if let Ok(process) = &result {
                let took = started.elapsed();
                self.monitor.started(process.start_mode(), took);
                tracing::info!(
                    crew = %self.crew,
                    pid = process.pid(),
                    start = process.start_mode().name(),
                    t_ms = took.as_secs_f64() * 1000.0,
                    "runner ready"
                );
            }
            result
        };
        tokio::select! {
            biased;
            _ = stopping(stop) => None,
            result = start => Some(result),
        }
    }

    fn record(&self, failures: &mut Failures, failure: CallFailure) {
        failures.consecutive += 1;
        self.monitor.count_error();
        let again = failures.last.as_ref() == Some(&failure);
        if again {
            // A runner that fails its start the same way on every restart says why once.
            tracing::warn!(
                crew = %self.crew,
                reason = %failure.reason,
                consecutive = failures.consecutive,
                "crew '{}' failed again as before ({})",
                self.crew,
                failure.reason
            );
        } else {
            tracing::warn!(
                crew = %self.crew,
                reason = %failure.reason,
                consecutive = failures.consecutive,
                "{}",
                failure.message
            );
        }
        if failures.consecutive == self.max_errors {
            self.monitor.set_state(CrewState::Disabled);
            tracing::error!(
                crew = %self.crew,
                "crew disabled after {} consecutive failures",
                self.max_errors
            );
        }
        failures.last = Some(failure);
    }

    fn disabled_failure(&self, failures: &Failures) -> CallFailure {
        let last = failures
            .last
            .as_ref()
            .map(|f| format!(" (last: {}: {})", f.reason, f.message))
            .unwrap_or_default();
        CallFailure {
            reason: FailureReason::Disabled,
            message: format!(
                "crew '{}' is disabled after {} consecutive failures{last}",
                self.crew, failures.consecutive
            ),
        }
    }
}

/// Resolves once the host is stopping (or the supervisor is gone).
async fn stopping(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopping| *stopping).await;
}

/// Resolves when an idle runner fails; never resolves without a runner.
async fn idle(runner: Option<&mut RunnerProcess>) -> CallFailure {
    match runner {
        Some(runner) => runner.watch_idle().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let backoff = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(1000),
        };
        let delays: Vec<u128> = (1..=6).map(|n| backoff.delay(n).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
    }
}
