//! Starting crews from a fork server, the zygote of SPEC §13.
//!
//! A zygote is a long-lived process that has done the expensive part of every crew's
//! start once (for the bundled Python runner: importing it and CrewAI) and forks each
//! crew from there. The host starts it cold, with its capabilities kept (it gives the
//! crews it forks their namespaces) and a minimal environment, and talks to it over a
//! `SOCK_SEQPACKET` socket pair, its fd 0; each message is one JSON object, file
//! descriptors travel with it as `SCM_RIGHTS`:
//!
//! - zygote → host, once its imports are done: `{"type": "ready", "pid", "import_s"}`;
//! - host → zygote: `{"type": "spawn", "id", ...}`, the crew's [`LaunchPlan`] as data
//!   but for its environment, with the crew's stdin, stdout and stderr, a pipe holding
//!   its environment, the empty network namespace and the Landlock ruleset (built here)
//!   attached. Only the forked child reads the environment pipe: a crew's secrets never
//!   pass through the zygote's memory, which every later crew starts as a copy of;
//! - zygote → host: `{"type": "spawned", "id", "pid"}` with the crew's pidfd attached,
//!   or `{"type": "refused", "id", "reason"}`;
//! - zygote → host, whenever it reaps a crew: `{"type": "exited", "pid", "status"}`.
//!
//! The forked child applies the whole pre-exec sequence of `preexec.rs` itself, in the
//! same order, except the cgroups: the host moves it in before its first input
//! ([`Child::join_cgroups`]). The host signals and polls the crew by its pidfd; the
//! zygote is its parent, so the crew dies with the zygote, which dies with the host.
//!
//! A zygote that dies is replaced at the next launch; after [`MAX_FAILURES`] zygotes in
//! a row that served no crew, the launcher starts its crews cold and says so.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg,
    sendmsg, socketpair,
};
use nix::unistd::pipe2;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncBufReadExt;
use tokio::sync::{Notify, oneshot};

use crate::child::{Pipes, StartMode};
use crate::filesystem::PreparedRuleset;
use crate::launcher::{ColdLauncher, Launch, Launcher};
use crate::plan::Resource;
use crate::{Child, Planned, Sandbox, SandboxError, SpawnSpec, User};

/// Zygotes in a row that may fail (exit, refuse or not answer before serving a crew)
/// before the launcher gives up on them.
pub const MAX_FAILURES: u32 = 3;

/// How long a launch waits for the zygote's answer; it answers once its imports are
/// done, which for CrewAI takes seconds on a busy machine.
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the exit status of a crew that has exited may take to arrive.
const REPORT_TIMEOUT: Duration = Duration::from_secs(2);

/// The biggest message either side sends; a spawn request is a few KiB.
const MAX_MESSAGE: usize = 1 << 20;

/// The most environment a crew's pipe takes without a reader (Linux's default pipe
/// buffer is 64 KiB); a crew with more starts cold.
const ENV_PIPE_BYTES: usize = 16 << 10;

/// A [`Launcher`] that starts crews from a zygote, started on first use (or by
/// [`ZygoteLauncher::prestart`]) from `server`, the zygote's own spawn spec.
#[derive(Debug)]
pub struct ZygoteLauncher {
    server: SpawnSpec,
    sandbox: Sandbox,
    cold: ColdLauncher,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    running: Option<Arc<Zygote>>,
    /// Zygotes in a row that died or failed before serving a crew.
    failures: u32,
}

impl ZygoteLauncher {
    /// A launcher whose zygote is started from `server`, under `sandbox`: with the
    /// layers it asks for (none of the optional ones, as a rule: every crew gets its
    /// own after the fork) and the capabilities of the host.
    pub fn new(sandbox: &Sandbox, server: SpawnSpec) -> Self {
        ZygoteLauncher {
            server,
            sandbox: sandbox.clone(),
            cold: sandbox.cold_launcher(),
            state: Mutex::new(State::default()),
        }
    }

    /// Starts the zygote now, so that its imports overlap with the host's own start.
    /// Within a tokio runtime.
    pub fn prestart(&self) {
        let _ = self.zygote();
    }

    /// Whether the launcher gave up on its zygote and starts its crews cold.
    pub fn fell_back(&self) -> bool {
        self.lock().failures >= MAX_FAILURES
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// The running zygote, started if there is none; `None` once it failed too often.
    fn zygote(&self) -> Option<Arc<Zygote>> {
        let mut state = self.lock();
        if let Some(zygote) = state.running.as_ref().filter(|z| !z.reports.closed()) {
            return Some(zygote.clone());
        }
        if let Some(gone) = state.running.take() {
            if gone.served.load(Ordering::Relaxed) {
                tracing::warn!(program = %self.server.program.display(), "the fork server is gone; starting a new one");
            } else {
                state.count_failure(&self.server, "it exited before it served a crew");
            }
        }
        if state.failures >= MAX_FAILURES {
            return None;
        }
        match Zygote::start(&self.server, &self.sandbox, &self.cold) {
            Ok(zygote) => Some(state.running.insert(Arc::new(zygote)).clone()),
            Err(error) => {
                state.count_failure(&self.server, &error);
                None
            }
        }
    }

    /// Counts a failure of `zygote` and drops it, unless another launch did already.
    fn failed(&self, zygote: &Arc<Zygote>, error: &str) {
        let mut state = self.lock();
        if state
            .running
            .take_if(|running| Arc::ptr_eq(running, zygote))
            .is_some()
        {
            state.count_failure(&self.server, error);
        }
    }
}

impl State {
    fn count_failure(&mut self, server: &SpawnSpec, error: &str) {
        self.failures += 1;
        let program = server.program.display();
        if self.failures >= MAX_FAILURES {
            tracing::error!(
                %program, %error, failures = self.failures,
                "the fork server keeps failing; its crews start cold from now on"
            );
        } else {
            tracing::warn!(%program, %error, "the fork server failed; its crews start cold until a new one serves");
        }
    }
}

impl Launcher for ZygoteLauncher {
    fn launch(&self, planned: Planned) -> Launch<'_> {
        Box::pin(async move {
            let Some(request) = Request::new(&planned, &self.server.env)? else {
                // A plan the zygote cannot serve as a cold start would: cold, then.
                return self.cold.start(planned, None, StartMode::Cold);
            };
            let Some(zygote) = self.zygote() else {
                return self.cold.start(planned, None, StartMode::ColdFallback);
            };
            match zygote.spawn(request, planned, self.sandbox.netns()).await {
                Ok(child) => {
                    zygote.served.store(true, Ordering::Relaxed);
                    self.lock().failures = 0;
                    Ok(child)
                }
                Err(Refused::Launch(error)) => Err(error),
                Err(Refused::Zygote(planned, reason)) => {
                    self.failed(&zygote, &reason);
                    self.cold.start(*planned, None, StartMode::ColdFallback)
                }
            }
        })
    }
}

/// Why a zygote did not start a crew.
enum Refused {
    /// The crew cannot start however it is forked.
    Launch(SandboxError),
    /// The zygote failed; the plan is handed back for a cold start.
    Zygote(Box<Planned>, String),
}

/// A spawn request, ready to send but for its id.
struct Request {
    body: SpawnBody,
    /// The crew's whole environment, `[[name, value], ...]` as JSON, for its own pipe.
    env: Vec<u8>,
    ruleset: Option<PreparedRuleset>,
}

/// The plan as the zygote reads it; see `runners/python/live_crew_runner/zygote.py`.
#[derive(Serialize)]
struct SpawnBody {
    #[serde(rename = "type")]
    kind: &'static str,
    id: u64,
    crew: String,
    workdir: String,
    netns: bool,
    pid_namespace: bool,
    rlimits: Vec<(Resource, u64, u64)>,
    user: Option<User>,
    landlock: bool,
    /// Each filter as the hex of its `struct sock_filter` array, native-endian.
    seccomp: Vec<String>,
}

impl Request {
    /// The request for `planned`, with its Landlock ruleset built here (an error as in a
    /// cold start). `None` for a plan with text that is not UTF-8, an environment too
    /// big for one pipe buffer, or one that sets a `PYTHON*` variable other than the
    /// zygote's (`server_env`): the interpreter reads those when it starts, which a
    /// forked crew never does.
    fn new(
        planned: &Planned,
        server_env: &[(OsString, OsString)],
    ) -> Result<Option<Request>, SandboxError> {
        let plan = &planned.plan;
        let read_at_start = |(name, value): &&(OsString, OsString)| {
            name.as_bytes().starts_with(b"PYTHON")
                && !server_env.iter().any(|(n, v)| n == name && v == value)
        };
        if plan.env.iter().any(|pair| read_at_start(&pair)) {
            return Ok(None);
        }
        let text = |os: &std::ffi::OsStr| os.to_str().map(str::to_owned);
        let env: Option<Vec<(String, String)>> = plan
            .env
            .iter()
            .map(|(name, value)| Some((text(name)?, text(value)?)))
            .collect();
        let (Some(env), Some(workdir)) = (env, text(plan.workdir.as_os_str())) else {
            return Ok(None);
        };
        let env = serde_json::to_vec(&env).expect("strings serialize");
        if env.len() > ENV_PIPE_BYTES {
            return Ok(None);
        }
        // Last: a plan that starts cold builds its own.
        let ruleset = PreparedRuleset::for_plan(plan)?;
        let seccomp = plan
            .seccomp
            .iter()
            .map(|filter| {
                filter
                    .iter()
                    .flat_map(|instruction| {
                        let mut bytes = [0u8; 8];
                        bytes[..2].copy_from_slice(&instruction.code.to_ne_bytes());
                        bytes[2] = instruction.jt;
                        bytes[3] = instruction.jf;
                        bytes[4..].copy_from_slice(&instruction.k.to_ne_bytes());
                        bytes
                    })
                    .map(|byte| format!("{byte:02x}"))
                    .collect()
            })
            .collect();
        Ok(Some(Request {
            body: SpawnBody {
                kind: "spawn",
                id: 0,
                crew: plan.crew.clone(),
                workdir,
                netns: plan.empty_netns,
                pid_namespace: plan.new_pid_namespace,
                rlimits: plan
                    .rlimits
                    .iter()
                    .map(|limit| (limit.resource, limit.soft, limit.hard))
                    .collect(),
                user: plan.user,
                landlock: ruleset.is_some(),
                seccomp,
            },
            env,
            ruleset,
        }))
    }
}

/// What the zygote sends.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Message {
    Ready {
        pid: u32,
        import_s: f64,
        #[serde(default)]
        preload_error: Option<String>,
    },
    Spawned {
        id: u64,
        pid: u32,
    },
    Refused {
        id: u64,
        reason: String,
    },
    Exited {
        pid: u32,
        status: i32,
    },
}

/// A zygote's answer to one spawn request: the crew's pid and pidfd, or why not.
type Reply = Result<(u32, OwnedFd), String>;

/// One running zygote.
#[derive(Debug)]
struct Zygote {
    /// The host's end of the socket pair.
    socket: OwnedFd,
    reports: Arc<ExitReports>,
    replies: Arc<Mutex<HashMap<u64, oneshot::Sender<Reply>>>>,
    next_id: AtomicU64,
    /// It started a crew: losing it later is no failure to count.
    served: AtomicBool,
    /// The zygote's own process; dropping it kills the zygote, and with it its crews.
    _process: Child,
}

impl Zygote {
    /// Starts a zygote from `server` and the thread that reads what it sends. Its
    /// stdout and stderr go to the host's log.
    fn start(server: &SpawnSpec, sandbox: &Sandbox, cold: &ColdLauncher) -> Result<Self, String> {
        let started = Instant::now();
        let mut planned = sandbox.plan(server).map_err(|error| error.to_string())?;
        planned.plan.keep_capabilities = true;
        let (socket, zygote_end) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|errno| format!("cannot make the fork server's socket: {errno}"))?;
        let mut process = cold
            .start(planned, Some(zygote_end), StartMode::Cold)
            .map_err(|error| error.to_string())?;
        let program = server.program.display().to_string();
        for output in [process.stdout.take(), process.stderr.take()]
            .into_iter()
            .flatten()
        {
            tokio::spawn(relay_output(output, program.clone()));
        }
        let reports = Arc::new(ExitReports::default());
        let replies = Arc::new(Mutex::new(HashMap::new()));
        let reader = Reader {
            socket: socket
                .try_clone()
                .map_err(|error| format!("cannot share the fork server's socket: {error}"))?,
            reports: reports.clone(),
            replies: replies.clone(),
            program,
            started,
        };
        std::thread::Builder::new()
            .name("live-crew-zygote".to_owned())
            .spawn(move || reader.run())
            .map_err(|error| format!("cannot start the fork server's reader: {error}"))?;
        tracing::info!(pid = process.id(), program = %server.program.display(), "fork server started");
        Ok(Zygote {
            socket,
            reports,
            replies,
            next_id: AtomicU64::new(1),
            served: AtomicBool::new(false),
            _process: process,
        })
    }

    /// Asks the zygote to fork the crew of `planned` and waits for its answer.
    async fn spawn(
        &self,
        mut request: Request,
        planned: Planned,
        netns: Option<&OwnedFd>,
    ) -> Result<Child, Refused> {
        let (crew_ends, host_ends) = match crew_pipes(&request.env) {
            Ok(pipes) => pipes,
            Err(error) => {
                let reason = format!("cannot make the crew's pipes: {error}");
                return Err(Refused::Zygote(Box::new(planned), reason));
            }
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        request.body.id = id;
        let mut fds: Vec<RawFd> = crew_ends.iter().map(AsRawFd::as_raw_fd).collect();
        if request.body.netns {
            match netns {
                Some(netns) => fds.push(netns.as_raw_fd()),
                None => {
                    return Err(Refused::Launch(SandboxError::Launcher {
                        crew: request.body.crew,
                        layer: crate::Layer::Netns,
                    }));
                }
            }
        }
        if let Some(ruleset) = &request.ruleset {
            fds.push(ruleset.fd().as_raw_fd());
        }
        let (reply, answer) = oneshot::channel();
        lock(&self.replies).insert(id, reply);
        let body = serde_json::to_vec(&request.body).expect("a spawn request serializes");
        if let Err(error) = self.send(&body, &fds) {
            lock(&self.replies).remove(&id);
            return Err(Refused::Zygote(
                Box::new(planned),
                format!("cannot send to the fork server: {error}"),
            ));
        }
        // The zygote holds its own copies now; the child gets them from it.
        drop((crew_ends, request.ruleset));
        let answer = tokio::time::timeout(REPLY_TIMEOUT, answer).await;
        let spawned = match answer {
            Ok(Ok(Ok(spawned))) => spawned,
            Ok(Ok(Err(reason))) => return Err(Refused::Zygote(Box::new(planned), reason)),
            Ok(Err(_gone)) => {
                return Err(Refused::Zygote(
                    Box::new(planned),
                    "the fork server exited before it answered".to_owned(),
                ));
            }
            Err(_elapsed) => {
                lock(&self.replies).remove(&id);
                return Err(Refused::Zygote(
                    Box::new(planned),
                    format!("the fork server did not answer within {REPLY_TIMEOUT:?}"),
                ));
            }
        };
        Child::forked_by_zygote(planned, spawned, self.reports.clone(), host_ends).map_err(
            |error| {
                Refused::Launch(SandboxError::Spawn {
                    crew: request.body.crew,
                    program: "the fork server".to_owned(),
                    source: error,
                })
            },
        )
    }

    /// Sends one message, never blocking: a zygote so far behind that its socket is
    /// full is treated as failed.
    fn send(&self, body: &[u8], fds: &[RawFd]) -> io::Result<()> {
        let rights = [ControlMessage::ScmRights(fds)];
        sendmsg::<()>(
            self.socket.as_raw_fd(),
            &[IoSlice::new(body)],
            &rights,
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
            None,
        )?;
        Ok(())
    }
}

/// A crew's pipes: its ends (stdin, stdout, stderr, and the read end of one that holds
/// `env`), in the order the zygote takes them, and the host's.
fn crew_pipes(env: &[u8]) -> io::Result<([OwnedFd; 4], Pipes)> {
    let (crew_stdin, host_stdin) = pipe2(OFlag::O_CLOEXEC)?;
    let (host_stdout, crew_stdout) = pipe2(OFlag::O_CLOEXEC)?;
    let (host_stderr, crew_stderr) = pipe2(OFlag::O_CLOEXEC)?;
    let crew_env = env_pipe(env)?;
    let host = Pipes {
        stdin: Some(host_stdin),
        stdout: Some(host_stdout),
        stderr: Some(host_stderr),
    };
    Ok(([crew_stdin, crew_stdout, crew_stderr, crew_env], host))
}

/// The read end of a pipe that holds `env` and is closed for writing.
fn env_pipe(env: &[u8]) -> io::Result<OwnedFd> {
    let (read, write) = pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
    // Within one pipe buffer (`ENV_PIPE_BYTES`), so one write takes it all.
    let written = nix::unistd::write(&write, env)?;
    if written < env.len() {
        return Err(io::Error::other("the environment does not fit the pipe"));
    }
    Ok(read)
}

/// The exit statuses a zygote reported for the crews it reaped, until their [`Child`]
/// asks.
#[derive(Debug, Default)]
pub(crate) struct ExitReports {
    inner: Mutex<Reports>,
    changed: Notify,
}

#[derive(Debug, Default)]
struct Reports {
    exits: HashMap<u32, ExitStatus>,
    /// Crews whose `Child` is gone: their report is dropped when it comes.
    forgotten: HashSet<u32>,
    /// The zygote is gone: no more reports will come.
    closed: bool,
}

impl ExitReports {
    fn closed(&self) -> bool {
        lock(&self.inner).closed
    }

    /// The exit status of `pid`, which has exited: as the zygote reports it, or SIGKILL
    /// if the zygote is gone or says nothing (its crews die of SIGKILL with it).
    pub(crate) async fn status_of(&self, pid: u32) -> ExitStatus {
        let killed = ExitStatus::from_raw(libc::SIGKILL);
        let deadline = tokio::time::sleep(REPORT_TIMEOUT);
        tokio::pin!(deadline);
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let mut inner = lock(&self.inner);
                if let Some(status) = inner.exits.remove(&pid) {
                    return status;
                }
                if inner.closed {
                    return killed;
                }
            }
            tokio::select! {
                () = &mut changed => {}
                () = &mut deadline => {
                    tracing::warn!(pid, "the fork server reported no exit status for a crew that exited");
                    return killed;
                }
            }
        }
    }

    /// Nobody will ask for the status of `pid`.
    pub(crate) fn forget(&self, pid: u32) {
        let mut inner = lock(&self.inner);
        if inner.exits.remove(&pid).is_none() {
            inner.forgotten.insert(pid);
        }
    }

    fn exited(&self, pid: u32, status: ExitStatus) {
        let mut inner = lock(&self.inner);
        if !inner.forgotten.remove(&pid) {
            inner.exits.insert(pid, status);
        }
        drop(inner);
        self.changed.notify_waiters();
    }

    fn close(&self) {
        lock(&self.inner).closed = true;
        self.changed.notify_waiters();
    }
}

/// Reads what a zygote sends, on a thread of its own, until it is gone.
struct Reader {
    socket: OwnedFd,
    reports: Arc<ExitReports>,
    replies: Arc<Mutex<HashMap<u64, oneshot::Sender<Reply>>>>,
    program: String,
    started: Instant,
}

impl Reader {
    fn run(self) {
        let mut buffer = vec![0u8; MAX_MESSAGE];
        loop {
            match self.receive(&mut buffer) {
                Ok(Some((length, fds))) => self.handle(&buffer[..length], fds),
                Ok(None) => break,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    tracing::warn!(program = %self.program, %error, "cannot read from the fork server");
                    break;
                }
            }
        }
        self.reports.close();
        // Dropping the senders tells every waiting launch that no answer will come.
        lock(&self.replies).clear();
    }

    /// One message and the fds that came with it; `None` at end of stream.
    fn receive(&self, buffer: &mut [u8]) -> io::Result<Option<(usize, Vec<OwnedFd>)>> {
        let mut space = nix::cmsg_space!([RawFd; 4]);
        let mut iov = [IoSliceMut::new(buffer)];
        let message = recvmsg::<()>(
            self.socket.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )?;
        let mut fds = Vec::new();
        for cmsg in message.cmsgs()? {
            if let ControlMessageOwned::ScmRights(received) = cmsg {
                // SAFETY: the kernel just installed these fds in this process for this
                // message, and nothing else owns them.
                fds.extend(
                    received
                        .into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        let length = message.bytes;
        Ok((length > 0).then_some((length, fds)))
    }

    fn handle(&self, body: &[u8], mut fds: Vec<OwnedFd>) {
        let program = &self.program;
        let message = match serde_json::from_slice::<Message>(body) {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!(%program, %error, message = %String::from_utf8_lossy(body), "the fork server sent a message the host cannot read");
                return;
            }
        };
        match message {
            Message::Ready {
                pid,
                import_s,
                preload_error,
            } => {
                let ready_s = self.started.elapsed().as_secs_f64();
                tracing::info!(%program, pid, import_s, ready_s, "fork server ready");
                if let Some(error) = preload_error {
                    tracing::warn!(%program, %error, "the fork server could not preload a module; its crews import it themselves");
                }
            }
            Message::Spawned { id, pid } => {
                let reply = match fds.pop() {
                    Some(pidfd) => Ok((pid, pidfd)),
                    None => Err("the fork server sent no pidfd with the crew's pid".to_owned()),
                };
                self.reply(id, reply);
            }
            Message::Refused { id, reason } => self.reply(id, Err(reason)),
            Message::Exited { pid, status } => {
                self.reports.exited(pid, ExitStatus::from_raw(status));
            }
        }
    }

    fn reply(&self, id: u64, reply: Reply) {
        if let Some(waiting) = lock(&self.replies).remove(&id) {
            // A launch that timed out is not waiting any more; its crew is orphaned and
            // exits when it reads the end of its stdin.
            let _ = waiting.send(reply);
        }
    }
}

/// Relays one of the zygote's output pipes into the host's log, line by line.
async fn relay_output(pipe: crate::ChildStdout, program: String) {
    let mut lines = tokio::io::BufReader::new(pipe).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::warn!(%program, line = %line, "fork server output");
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Sandbox {
    /// The empty network namespace crews without network join, if the host has one.
    fn netns(&self) -> Option<&OwnedFd> {
        self.netns.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BpfInstruction, LaunchPlan};

    #[test]
    fn a_request_carries_the_plan_and_the_filters_as_kernel_bytes() {
        let sandbox = Sandbox::default();
        let spec = SpawnSpec {
            name: "zygote_request".to_owned(),
            program: "/usr/bin/python3".into(),
            args: Vec::new(),
            env: vec![("GREETING".into(), "hello".into())],
            limits: crate::Limits {
                open_files: Some(64),
                ..Default::default()
            },
            user: None,
            isolation: crate::Isolation::default(),
        };
        let mut planned = sandbox.plan(&spec).unwrap();
        planned.plan.seccomp = vec![vec![BpfInstruction {
            code: 0x15,
            jt: 1,
            jf: 2,
            k: 0x0102_0304,
        }]];
        let request = Request::new(&planned, &[]).unwrap().unwrap();
        let body = serde_json::to_value(&request.body).unwrap();
        let LaunchPlan { workdir, .. } = &planned.plan;
        assert_eq!(body["type"], "spawn");
        assert_eq!(body["workdir"], workdir.to_str().unwrap());
        assert!(
            body.get("env").is_none(),
            "the environment has a pipe of its own"
        );
        let env: Vec<(String, String)> = serde_json::from_slice(&request.env).unwrap();
        assert!(env.contains(&("GREETING".to_owned(), "hello".to_owned())));
        assert!(
            body["rlimits"]
                .as_array()
                .unwrap()
                .contains(&serde_json::json!(["RLIMIT_NOFILE", 64, 64]))
        );
        let expected: String = [
            0x15u16.to_ne_bytes().as_slice(),
            &[1, 2],
            &0x0102_0304u32.to_ne_bytes(),
        ]
        .concat()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
        assert_eq!(body["seccomp"], serde_json::json!([expected]));
        assert_eq!(
            (body["netns"].as_bool(), body["landlock"].as_bool()),
            (Some(false), Some(false))
        );
    }

    #[test]
    fn a_plan_with_an_environment_that_is_not_text_is_not_for_the_zygote() {
        use std::os::unix::ffi::OsStringExt;
        let spec = SpawnSpec {
            name: "zygote_bytes".to_owned(),
            program: "/usr/bin/python3".into(),
            args: Vec::new(),
            env: vec![(
                "BYTES".into(),
                std::ffi::OsString::from_vec(vec![0xff, 0xfe]),
            )],
            limits: crate::Limits::default(),
            user: None,
            isolation: crate::Isolation::default(),
        };
        let planned = Sandbox::default().plan(&spec).unwrap();
        assert!(Request::new(&planned, &[]).unwrap().is_none());
    }

    #[test]
    fn a_plan_that_sets_what_python_reads_at_start_is_not_for_the_zygote() {
        let spec = |env: &[(&str, &str)]| SpawnSpec {
            name: "zygote_python_env".to_owned(),
            program: "/usr/bin/python3".into(),
            args: Vec::new(),
            env: env.iter().map(|(n, v)| (n.into(), v.into())).collect(),
            limits: crate::Limits::default(),
            user: None,
            isolation: crate::Isolation::default(),
        };
        let server = [("PYTHONPATH".into(), "/runners".into())];
        let sandbox = Sandbox::default();
        let same = sandbox.plan(&spec(&[("PYTHONPATH", "/runners")])).unwrap();
        assert!(Request::new(&same, &server).unwrap().is_some());
        let other = sandbox
            .plan(&spec(&[("PYTHONPATH", "/elsewhere")]))
            .unwrap();
        assert!(Request::new(&other, &server).unwrap().is_none());
        let unbuffered = sandbox.plan(&spec(&[("PYTHONUNBUFFERED", "1")])).unwrap();
        assert!(Request::new(&unbuffered, &server).unwrap().is_none());
    }
}
