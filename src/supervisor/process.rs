//! One live runner process: handshake, calls, watchdogs and teardown.
//!
//! Everything the runner writes on stdout goes through [`Incoming::next_message`], which
//! also watches the heartbeat, the call deadline and the process itself, so every way a
//! runner can misbehave ends in exactly one [`CallFailure`].

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use live_crew_sandbox::{
    Child, ChildStderr, ChildStdin, ChildStdout, Launcher, Sandbox, SpawnSpec, StartMode,
};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep, sleep_until};

use super::status::CrewMonitor;
use crate::llm::{Gateway, LlmUsage};
use crate::ops::health::lock;
use crate::pool::{CallFailure, CallOutput, FailureReason};
use crate::protocol::{
    FrameError, HostMessage, LineReader, LlmError, PROTOCOL_VERSION, RunnerMessage,
};

/// Timing and size limits that apply to every runner of a host.
#[derive(Debug, Clone)]
pub(crate) struct RunnerLimits {
    pub heartbeat: Duration,
    pub startup_timeout: Duration,
    pub kill_grace: Duration,
    pub max_line_bytes: usize,
    pub stderr_lines_per_s: u32,
    /// See `busy_poll_us` in the global config.
    pub busy_poll: Duration,
}

impl RunnerLimits {
    /// A runner that has not sent a heartbeat for this long has failed.
    fn heartbeat_window(&self) -> Duration {
        self.heartbeat * 3
    }
}

/// The runner's side of the pipes that the host reads, plus the process itself.
struct Incoming {
    crew: Arc<str>,
    monitor: Arc<CrewMonitor>,
    child: Child,
    stdout: LineReader<ChildStdout>,
    heartbeat_deadline: Pin<Box<Sleep>>,
    heartbeat_window: Duration,
}

pub(crate) struct RunnerProcess {
    stdin: ChildStdin,
    incoming: Incoming,
    kill_grace: Duration,
    busy_poll: Duration,
    /// How long the previous call took; a call that quick is worth spinning for.
    last_call: Duration,
}

/// Calls in flight across every runner of this process. Busy polling blocks the host's
/// one thread, so it only pays while no other runner's answer could be waiting.
static CALLS_IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// Counts one call in [`CALLS_IN_FLIGHT`] for as long as it lives, also when the call's
/// future is dropped.
struct InFlight;

impl InFlight {
    fn enter() -> Self {
        CALLS_IN_FLIGHT.fetch_add(1, Ordering::Relaxed);
        Self
    }

    /// True when no other call is in flight beside the caller's.
    fn alone() -> bool {
        CALLS_IN_FLIGHT.load(Ordering::Relaxed) == 1
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        CALLS_IN_FLIGHT.fetch_sub(1, Ordering::Relaxed);
    }
}

fn failure(reason: FailureReason, message: String) -> CallFailure {
    CallFailure { reason, message }
}

impl RunnerProcess {
    /// Plans the runner's sandbox, starts it through `launcher` and completes the
    /// `hello`/`ready` handshake.
    pub async fn start(
        crew: &Arc<str>,
        monitor: &Arc<CrewMonitor>,
        spawn: &SpawnSpec,
        sandbox: &Sandbox,
        launcher: &dyn Launcher,
        hello: &[u8],
        limits: &RunnerLimits,
    ) -> Result<RunnerProcess, CallFailure> {
        let startup_failure =
            |err: live_crew_sandbox::SandboxError| failure(FailureReason::Startup, err.to_string());
        let planned = sandbox.plan(spawn).map_err(startup_failure)?;
        let mut child = launcher.launch(planned).await.map_err(startup_failure)?;
        // A bundled runner joins its cgroups while its interpreter starts; `hello`, and
        // with it the crew's code, waits for that.
        child.join_cgroups().await.map_err(|err| {
            failure(
                FailureReason::Startup,
                format!("crew '{crew}': cannot move the runner into its cgroups: {err}"),
            )
        })?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            unreachable!("the sandbox always pipes stdin, stdout and stderr");
        };
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let mut relay = tokio::spawn(relay_stderr(
            crew.clone(),
            stderr,
            limits.stderr_lines_per_s,
            tail.clone(),
        ));
        let startup_deadline = Instant::now() + limits.startup_timeout;
        let mut process = RunnerProcess {
            stdin,
            incoming: Incoming {
                crew: crew.clone(),
                monitor: monitor.clone(),
                child,
                stdout: LineReader::new(stdout, limits.max_line_bytes),
                // The heartbeat clock starts at `ready`; until then the startup timeout rules.
                heartbeat_deadline: Box::pin(sleep_until(far_future())),
                heartbeat_window: limits.heartbeat_window(),
            },
            kill_grace: limits.kill_grace,
            busy_poll: limits.busy_poll,
            last_call: Duration::MAX,
        };
        match process.handshake(hello, startup_deadline).await {
            Ok(()) => Ok(process),
            Err(mut err) => {
                process.kill().await;
                // Why it died is usually in what it last wrote; its stderr closes with it.
                let _ = tokio::time::timeout(STDERR_DRAIN, &mut relay).await;
                let tail = std::mem::take(&mut *lock(&tail));
                if !tail.is_empty() {
                    let lines: Vec<String> = tail.into_iter().collect();
                    err.message += &format!("; its last stderr lines: {}", lines.join(" | "));
                }
                Err(err)
            }
        }
    }

    async fn handshake(&mut self, hello: &[u8], deadline: Instant) -> Result<(), CallFailure> {
        let crew = self.incoming.crew.clone();
        // A runner that dies before reading `hello` shows up below as a crash.
        let _ = self.stdin.write_all(hello).await;
        let message = self.incoming.next_message(Some(deadline)).await;
        match message {
            Ok(RunnerMessage::Ready(ready)) if ready.protocol == PROTOCOL_VERSION => {
                self.incoming.beat();
                Ok(())
            }
            Ok(RunnerMessage::Ready(ready)) => Err(failure(
                FailureReason::Protocol,
                format!(
                    "crew '{crew}': runner speaks protocol {}, the host speaks {PROTOCOL_VERSION}",
                    ready.protocol
                ),
            )),
            Ok(other) => Err(failure(
                FailureReason::Protocol,
                format!(
                    "crew '{crew}': expected 'ready' after 'hello', got '{}'",
                    message_type(&other)
                ),
            )),
            Err(err) if err.reason == FailureReason::Timeout => Err(failure(
                FailureReason::Startup,
                format!(
                    "crew '{crew}': no 'ready' within the startup timeout; check that the \
                     runner answers 'hello' (see the crew's stderr in the log)"
                ),
            )),
            Err(err) => Err(failure(
                if err.reason == FailureReason::Crash {
                    FailureReason::Startup
                } else {
                    err.reason
                },
                err.message,
            )),
        }
    }

    /// Sends one call (an encoded `call` line with id `id`) and waits for its answer,
    /// completing the runner's LLM requests through `gateway` meanwhile (SPEC §14).
    /// stdin is written while stdout is read, so neither pipe can deadlock the other.
    pub async fn call(
        &mut self,
        line: &[u8],
        id: u64,
        deadline: Instant,
        gateway: &Arc<Gateway>,
    ) -> Result<CallOutput, CallFailure> {
        let crew = self.incoming.crew.clone();
        let started = Instant::now();
        let _in_flight = InFlight::enter();
        let spin = (self.last_call <= self.busy_poll).then_some(self.busy_poll);
        // The call line, then the answers to LLM requests, in the order they finish.
        let (answers, mut to_write) = mpsc::unbounded_channel::<Vec<u8>>();
        let (call_written, mut written) = oneshot::channel();
        let stdin = &mut self.stdin;
        let writer = async move {
            stdin.write_all(line).await?;
            let _ = call_written.send(());
            while let Some(answer) = to_write.recv().await {
                stdin.write_all(&answer).await?;
            }
            std::io::Result::Ok(())
        };
        let mut writer = std::pin::pin!(writer);
        let (mut writing, mut call_sent) = (true, false);
        // Requests end with the call: dropping the set aborts those still running.
        let mut requests: JoinSet<(Vec<u8>, LlmUsage)> = JoinSet::new();
        let mut llm = Vec::new();
        let answer = loop {
            tokio::select! {
                biased;
                // A failed write means the runner is gone or stopped reading; the
                // process watch or the deadline reports which.
                _ = &mut writer, if writing => writing = false,
                sent = &mut written, if !call_sent => {
                    call_sent = true;
                    if let (Ok(()), Some(budget)) = (sent, spin.filter(|_| InFlight::alone())) {
                        self.incoming.stdout.spin_for_line(budget);
                    }
                }
                Some(done) = requests.join_next(), if !requests.is_empty() => {
                    if let Ok((line, usage)) = done {
                        let _ = answers.send(line);
                        llm.push(usage);
                    }
                }
                message = self.incoming.next_message(Some(deadline)) => match message? {
                    RunnerMessage::LlmRequest(request) => {
                        let (gateway, crew) = (gateway.clone(), crew.clone());
                        requests.spawn(async move {
                            gateway.complete(&crew, request, deadline).await
                        });
                    }
                    other => break other,
                },
            }
        };
        self.last_call = started.elapsed();
        match answer {
            RunnerMessage::Result(result) if result.id == id => {
                if let Some(bad) = result.actions.iter().find_map(|a| a.check().err()) {
                    return Err(failure(
                        FailureReason::InvalidAction,
                        format!("crew '{crew}': {bad}"),
                    ));
                }
                Ok(CallOutput {
                    actions: result.actions,
                    context_patch: result.context_patch,
                    runner_time: self.last_call,
                    llm,
                })
            }
            RunnerMessage::Error(error) if error.id == id => Err(failure(
                FailureReason::RunnerError,
                truncate(error.message, MAX_RUNNER_MESSAGE),
            )),
            RunnerMessage::Result(crate::protocol::CallResult { id: other, .. })
            | RunnerMessage::Error(crate::protocol::CallError { id: other, .. }) => Err(failure(
                FailureReason::Protocol,
                format!("crew '{crew}': answer for call {other} while call {id} is in flight"),
            )),
            other => Err(failure(
                FailureReason::Protocol,
                format!(
                    "crew '{crew}': unexpected '{}' during a call",
                    message_type(&other)
                ),
            )),
        }
    }

    /// Watches an idle runner; returns only when it fails. An LLM request from a call
    /// that has ended gets an `llm_error` and nothing more. Cancel-safe.
    pub async fn watch_idle(&mut self) -> CallFailure {
        let crew = self.incoming.crew.clone();
        loop {
            match self.incoming.next_message(None).await {
                Err(failure) => return failure,
                Ok(RunnerMessage::LlmRequest(request)) => {
                    tracing::warn!(%crew, model = %request.model, "LLM request outside a call; refused");
                    let refusal = HostMessage::LlmError(LlmError {
                        id: request.id,
                        reason: "no_call".to_owned(),
                        message: "the call that made this request has ended".to_owned(),
                        retry_after_ms: None,
                    });
                    let _ = self.stdin.write_all(&refusal.encode()).await;
                }
                Ok(other) => {
                    return failure(
                        FailureReason::Protocol,
                        format!(
                            "crew '{crew}': unexpected '{}' while no call is in flight",
                            message_type(&other)
                        ),
                    );
                }
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.incoming.child.id()
    }

    pub fn start_mode(&self) -> StartMode {
        self.incoming.child.start_mode()
    }

    /// Stops the runner in protocol order: `shutdown`, close stdin, grace, then the
    /// SIGTERM–grace–SIGKILL sequence of [`RunnerProcess::kill`].
    pub async fn shutdown(mut self) {
        let shutdown = HostMessage::Shutdown.encode();
        let _ = self.stdin.write_all(&shutdown).await;
        let _ = self.stdin.shutdown().await;
        drop(self.stdin);
        let exited = tokio::time::timeout(self.kill_grace, self.incoming.child.wait()).await;
        if exited.is_err() {
            tracing::warn!(crew = %self.incoming.crew, "runner ignored 'shutdown'; terminating it");
        }
        let _ = self.incoming.child.terminate(self.kill_grace).await;
    }

    /// Terminates the whole process group: SIGTERM, grace, SIGKILL, and reaps.
    pub async fn kill(mut self) {
        let _ = self.incoming.child.terminate(self.kill_grace).await;
    }
}

/// Longest runner-supplied error message kept in an error record.
const MAX_RUNNER_MESSAGE: usize = 2000;

fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

fn message_type(message: &RunnerMessage) -> &'static str {
    match message {
        RunnerMessage::Ready(_) => "ready",
        RunnerMessage::Heartbeat => "heartbeat",
        RunnerMessage::Result(_) => "result",
        RunnerMessage::Error(_) => "error",
        RunnerMessage::Log(_) => "log",
        RunnerMessage::LlmRequest(_) => "llm_request",
    }
}

impl Incoming {
    fn beat(&mut self) {
        self.monitor.heartbeat();
        let next = Instant::now() + self.heartbeat_window;
        self.heartbeat_deadline.as_mut().reset(next);
    }

    /// The next message that needs an answer. Heartbeats and logs are handled here.
    /// Fails on a missed heartbeat, the `deadline`, a protocol violation or the process
    /// exiting. Cancel-safe.
    async fn next_message(
        &mut self,
        deadline: Option<Instant>,
    ) -> Result<RunnerMessage, CallFailure> {
        let crew = self.crew.clone();
        let call_deadline = sleep_until(deadline.unwrap_or_else(far_future));
        tokio::pin!(call_deadline);
        loop {
            tokio::select! {
                biased;
                line = self.stdout.next_line() => {
                    let line = match line {
                        Ok(Some(line)) => line,
                        Ok(None) => return Err(self.exited("closed its stdout").await),
                        Err(FrameError::TooLong { limit }) => {
                            return Err(failure(
                                FailureReason::Protocol,
                                format!("crew '{crew}': stdout line longer than {limit} bytes"),
                            ));
                        }
                        Err(FrameError::Io(err)) => {
                            return Err(failure(
                                FailureReason::Crash,
                                format!("crew '{crew}': cannot read stdout: {err}"),
                            ));
                        }
                    };
                    match RunnerMessage::decode(line) {
                        Ok(RunnerMessage::Heartbeat) => self.beat(),
                        Ok(RunnerMessage::Log(log)) => relay_log(&crew, &log.level, &log.msg),
                        Ok(message) => return Ok(message),
                        Err(err) => {
                            return Err(failure(
                                FailureReason::Protocol,
                                format!(
                                    "crew '{crew}': invalid line on stdout ({err}): {}",
                                    preview(line)
                                ),
                            ));
                        }
                    }
                }
                _ = &mut self.heartbeat_deadline => {
                    return Err(failure(
                        FailureReason::Heartbeat,
                        format!(
                            "crew '{crew}': no heartbeat for {} ms",
                            self.heartbeat_window.as_millis()
                        ),
                    ));
                }
                _ = &mut call_deadline, if deadline.is_some() => {
                    return Err(failure(
                        FailureReason::Timeout,
                        format!("crew '{crew}': call missed its deadline"),
                    ));
                }
                _ = self.child.wait() => return Err(self.exited("exited").await),
            }
        }
    }

    /// Describes how the process ended. Waits briefly: stdout can close a moment before
    /// the exit is visible.
    async fn exited(&mut self, what: &str) -> CallFailure {
        let crew = &self.crew;
        let status = tokio::time::timeout(Duration::from_millis(200), self.child.wait()).await;
        let how = match status {
            Ok(Ok(status)) => describe_exit(status),
            _ => "is still running".to_owned(),
        };
        let reason = if self.child.oom_killed() {
            FailureReason::Oom
        } else {
            FailureReason::Crash
        };
        failure(
            reason,
            format!("crew '{crew}': runner {what}; process {how}"),
        )
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
}

fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        _ => "ended".to_owned(),
    }
}

/// The start of an offending line, for an error message.
fn preview(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(&line[..line.len().min(80)]);
    let ellipsis = if line.len() > 80 { "…" } else { "" };
    format!("{text:?}{ellipsis}")
}

fn relay_log(crew: &str, level: &str, msg: &str) {
    match level {
        "error" => tracing::error!(crew, "{msg}"),
        "warn" | "warning" => tracing::warn!(crew, "{msg}"),
        "debug" => tracing::debug!(crew, "{msg}"),
        _ => tracing::info!(crew, "{msg}"),
    }
}

/// Longest stderr line relayed whole; longer lines are cut.
const MAX_STDERR_LINE: usize = 8 * 1024;

/// How many of a runner's last stderr lines a startup error quotes, and how much of each.
const STDERR_TAIL_LINES: usize = 5;
const STDERR_TAIL_CHARS: usize = 300;
/// How long a failed start waits for the rest of the runner's stderr.
const STDERR_DRAIN: Duration = Duration::from_millis(500);

/// Relays the runner's stderr into the host log, line by line, at most `per_second` lines
/// a second, keeping the last few lines in `tail` for a startup error to quote. It always
/// keeps reading, so a runner that floods stderr never blocks on a
/// full pipe; what is over the cap is counted and summarised instead of logged.
async fn relay_stderr(
    crew: Arc<str>,
    stderr: ChildStderr,
    per_second: u32,
    tail: Arc<Mutex<VecDeque<String>>>,
) {
    let mut lines = LineReader::new(stderr, MAX_STDERR_LINE);
    let mut window_start = Instant::now();
    let mut in_window = 0u32;
    let mut suppressed = 0u64;
    loop {
        let line = lines.next_line().await;
        if matches!(line, Ok(None) | Err(FrameError::Io(_))) {
            break;
        }
        if window_start.elapsed() >= Duration::from_secs(1) {
            if suppressed > 0 {
                tracing::warn!(crew = %crew, suppressed, "stderr over {per_second} lines/s; lines dropped");
                suppressed = 0;
            }
            window_start = Instant::now();
            in_window = 0;
        }
        if in_window == per_second {
            suppressed += 1;
            continue;
        }
        in_window += 1;
        match line {
            Ok(Some(line)) => {
                let line = String::from_utf8_lossy(line);
                tracing::info!(crew = %crew, source = "stderr", "{line}");
                let mut tail = lock(&tail);
                if tail.len() == STDERR_TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(line.chars().take(STDERR_TAIL_CHARS).collect());
            }
            _ => {
                tracing::info!(crew = %crew, source = "stderr", "<line over {MAX_STDERR_LINE} bytes cut>")
            }
        }
    }
    if suppressed > 0 {
        tracing::warn!(crew = %crew, suppressed, "stderr over {per_second} lines/s; lines dropped");
    }
}
