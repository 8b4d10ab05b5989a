//! The per-process layers: session, fds, working directory, rlimits.

mod common;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use common::{sh, stdout};
use live_crew_sandbox::{Layer, Limits, Sandbox, SandboxError};

#[tokio::test]
async fn child_leads_its_own_session_and_process_group() {
    let mut child = Sandbox::probe()
        .spawn(&sh("session", "cat /proc/$$/stat"))
        .unwrap();
    let stat = stdout(&mut child).await;
    // pid (comm) state ppid pgrp session ...
    let (pid, rest) = stat.split_once(' ').unwrap();
    let fields: Vec<&str> = rest
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let (pgrp, session) = (fields[2], fields[3]);
    assert_eq!(pid, child.id().to_string());
    assert_eq!(pgrp, pid);
    assert_eq!(session, pid);
    assert!(child.wait().await.unwrap().success());
}

#[tokio::test]
async fn only_stdin_stdout_and_stderr_are_inherited() {
    // An fd without close-on-exec, as a careless library might leave one.
    // SAFETY: F_DUPFD duplicates stderr to a new fd that nothing else owns.
    let leaked = unsafe { libc::fcntl(2, libc::F_DUPFD, 100) };
    assert!(leaked >= 100);
    // SAFETY: `leaked` is a fresh fd that only this test owns.
    let leaked = unsafe { OwnedFd::from_raw_fd(leaked) };
    let mut child = Sandbox::probe()
        .spawn(&sh("fds", "ls /proc/self/fd"))
        .unwrap();
    let fds = stdout(&mut child).await;
    // 3 is the directory `ls` opens to list /proc/self/fd.
    assert_eq!(
        fds.split_whitespace().collect::<Vec<_>>(),
        ["0", "1", "2", "3"]
    );
    assert!(!fds.contains(&leaked.as_raw_fd().to_string()));
    assert!(child.wait().await.unwrap().success());
}

#[tokio::test]
async fn private_workdir_is_home_and_tmpdir_and_is_removed_on_drop() {
    let mut child = Sandbox::probe()
        .spawn(&sh("workdir", "pwd; echo $HOME; echo $TMPDIR; touch file"))
        .unwrap();
    let workdir = child.workdir().to_owned();
    let out = stdout(&mut child).await;
    let expected = workdir.display().to_string();
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [&*expected, &*expected, &*expected]
    );
    assert!(child.wait().await.unwrap().success());
    assert!(workdir.join("file").exists());
    let mode = std::os::unix::fs::PermissionsExt::mode(&workdir.metadata().unwrap().permissions());
    assert_eq!(mode & 0o777, 0o700, "private to the crew");
    drop(child);
    assert!(!workdir.exists(), "{} survived the drop", workdir.display());
}

#[tokio::test]
async fn rlimits_are_applied_and_core_dumps_are_off() {
    let mut spec = sh("rlimits", "ulimit -c; ulimit -n; ulimit -t; ulimit -v");
    spec.limits = Limits {
        memory_mb: Some(512),
        cpu_s: Some(30),
        open_files: Some(64),
        processes: None,
    };
    let sandbox = Sandbox::probe();
    let mut child = sandbox.spawn(&spec).unwrap();
    let out = stdout(&mut child).await;
    // With the memory cgroup limiting what is used, the address space gets twice that.
    let address_space = if sandbox.has(Layer::MemoryCgroup) {
        "1048576"
    } else {
        "524288"
    };
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["0", "64", "30", address_space]
    );
    assert!(child.wait().await.unwrap().success());
}

#[tokio::test]
async fn without_a_pids_cgroup_the_process_limit_falls_back_to_rlimit_nproc() {
    let sandbox = Sandbox::default();
    assert!(sandbox.weak_process_limit());
    assert!(!sandbox.active_layers().contains(&"pids_cgroup"));
    let mut spec = sh(
        "nproc",
        "awk '/Max processes/ { print $3 }' /proc/self/limits",
    );
    spec.limits.processes = Some(40);
    let mut child = sandbox.spawn(&spec).unwrap();
    assert_eq!(stdout(&mut child).await.trim(), "40");
    assert!(child.wait().await.unwrap().success());
}

#[tokio::test]
async fn with_a_pids_cgroup_rlimit_nproc_is_left_alone() {
    let sandbox = Sandbox::probe();
    if !common::has_layer(&sandbox, "pids_cgroup") {
        return;
    }
    assert!(!sandbox.weak_process_limit());
    let mut spec = sh(
        "nproc",
        "awk '/Max processes/ { print $3 }' /proc/self/limits",
    );
    spec.limits.processes = Some(40);
    let mut child = sandbox.spawn(&spec).unwrap();
    assert_ne!(stdout(&mut child).await.trim(), "40");
    assert!(child.wait().await.unwrap().success());
}

#[tokio::test]
async fn spawn_error_names_the_crew_and_gives_a_hint() {
    let mut spec = sh("missing_program", "");
    spec.program = "/nonexistent/runner".into();
    let error = Sandbox::probe().spawn(&spec).unwrap_err();
    assert!(matches!(error, SandboxError::Spawn { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("'missing_program'"), "{message}");
    assert!(message.contains("/nonexistent/runner"), "{message}");
    assert!(message.contains("hint:"), "{message}");
}

#[tokio::test]
async fn basic_layers_are_always_active() {
    let layers = Sandbox::probe().active_layers();
    for layer in ["session", "pdeathsig", "close_fds", "env_clear", "rlimits"] {
        assert!(layers.contains(&layer), "{layer} missing from {layers:?}");
    }
}

#[tokio::test]
async fn a_crew_has_no_capabilities_even_as_root() {
    let spec = sh(
        "nocaps",
        "grep -E '^(CapEff|CapPrm|CapBnd|CapAmb|NoNewPrivs)' /proc/self/status; ulimit -H -n 100000 2>/dev/null || echo 'cannot raise'",
    );
    let mut spec = spec;
    spec.limits.open_files = Some(64);
    let mut child = Sandbox::probe().spawn(&spec).unwrap();
    let out = stdout(&mut child).await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "CapPrm:\t0000000000000000",
            "CapEff:\t0000000000000000",
            "CapBnd:\t0000000000000000",
            "CapAmb:\t0000000000000000",
            "NoNewPrivs:\t1",
            "cannot raise"
        ]
    );
}
