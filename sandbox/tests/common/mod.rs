//! Helpers shared by the integration tests. Each test binary uses a different subset.
#![allow(dead_code)]

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use live_crew_sandbox::{Child, Isolation, Limits, Sandbox, SpawnSpec};
use tokio::io::AsyncReadExt;

/// A spec that runs `sh -c script`.
pub fn sh(name: &str, script: &str) -> SpawnSpec {
    SpawnSpec {
        name: name.to_owned(),
        program: PathBuf::from("/bin/sh"),
        args: vec!["-c".into(), script.into()],
        env: Vec::new(),
        limits: Limits::default(),
        user: None,
        isolation: Isolation::default(),
    }
}

/// A spec that runs `python3 -c code`, with the interpreter's real path (the pyenv shim
/// on PATH needs more than the sandbox's environment gives it).
pub fn python(name: &str, code: &str) -> SpawnSpec {
    let executable = std::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3 must be on PATH for this test");
    let executable = String::from_utf8(executable.stdout).unwrap();
    SpawnSpec {
        name: name.to_owned(),
        program: PathBuf::from(executable.trim()),
        args: vec![OsString::from("-c"), code.into()],
        env: Vec::new(),
        limits: Limits::default(),
        user: None,
        isolation: Isolation::default(),
    }
}

/// Everything the child writes to stdout until EOF.
pub async fn stdout(child: &mut Child) -> String {
    let mut out = String::new();
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_to_string(&mut out)
        .await
        .unwrap();
    out
}

/// Whether `pid` no longer runs: gone, or a zombie (no code runs, no fds are held; a
/// process whose parent died is reaped by init whenever init gets to it).
pub fn is_dead(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    if unsafe { libc::kill(pid, 0) } != 0 {
        return std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
    }
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
        let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
        state.is_some_and(|rest| rest.starts_with('Z') || rest.starts_with('X'))
    })
}

/// Polls `check` for up to `limit`.
pub async fn eventually(limit: Duration, check: impl Fn() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check()
}

/// Whether the tests that need `layer` can run. They need root and writable cgroups;
/// as root a missing layer is a failure, unless LIVE_CREW_SANDBOX_ALLOW_NO_CGROUP is set.
pub fn has_layer(sandbox: &Sandbox, layer: &str) -> bool {
    if sandbox.active_layers().contains(&layer) {
        return true;
    }
    let root = nix::unistd::geteuid().is_root();
    if root && std::env::var_os("LIVE_CREW_SANDBOX_ALLOW_NO_CGROUP").is_none() {
        panic!(
            "running as root, but the sandbox has no {layer} layer: check that /sys/fs/cgroup \
             is writable, or set LIVE_CREW_SANDBOX_ALLOW_NO_CGROUP=1 to skip this test"
        );
    }
    eprintln!("skipped: no {layer} layer here");
    false
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The first line the child writes to stdout.
pub async fn stdout_line(child: &mut Child) -> String {
    use tokio::io::AsyncBufReadExt;
    let mut line = String::new();
    tokio::io::BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .await
        .unwrap();
    line.trim().to_owned()
}
