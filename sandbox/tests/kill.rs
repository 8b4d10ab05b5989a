//! Terminating a crew: grace, then SIGKILL to everything it started.

mod common;

use std::time::{Duration, Instant};

use common::{eventually, has_layer, is_dead, sh, stdout};
use live_crew_sandbox::Sandbox;
use nix::sys::signal::Signal;
use std::os::unix::process::ExitStatusExt;
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test]
async fn cooperative_child_stops_within_the_grace_period() {
    let mut child = Sandbox::probe()
        .spawn(&sh("cooperative", "echo up; exec sleep 1000"))
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next_line().await.unwrap().as_deref(), Some("up"));
    let start = Instant::now();
    let status = child.terminate(Duration::from_secs(10)).await.unwrap();
    assert_eq!(status.signal(), Some(Signal::SIGTERM as i32));
    assert!(start.elapsed() < Duration::from_secs(5));
}

/// A crew whose grandchild leaves the crew's session and process group (double fork
/// and setsid), ignores SIGTERM and keeps stdout open; so does the leader, apart from
/// leaving. Returns the child, its stdout and the grandchild's pid.
async fn spawn_escapee(
    sandbox: &Sandbox,
) -> (
    live_crew_sandbox::Child,
    BufReader<live_crew_sandbox::ChildStdout>,
    i32,
) {
    let script = r#"
        trap '' TERM
        ( setsid sh -c 'trap "" TERM; echo $$; exec sleep 1000' & )
        sleep 1000
    "#;
    let mut child = sandbox.spawn(&sh("escapee", script)).unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).await.unwrap();
    let grandchild: i32 = line.trim().parse().unwrap();
    let sid = nix::unistd::getsid(Some(nix::unistd::Pid::from_raw(grandchild))).unwrap();
    assert_ne!(
        sid.as_raw(),
        child.id() as i32,
        "the grandchild left the session"
    );
    (child, out, grandchild)
}

#[tokio::test]
async fn setsid_grandchild_that_ignores_sigterm_is_killed() {
    let sandbox = Sandbox::probe();
    if !has_layer(&sandbox, "pids_cgroup") {
        return;
    }
    let (mut child, mut out, grandchild) = spawn_escapee(&sandbox).await;

    let start = Instant::now();
    let status = child.terminate(Duration::from_millis(300)).await.unwrap();
    assert_eq!(status.signal(), Some(Signal::SIGKILL as i32));
    assert!(start.elapsed() >= Duration::from_millis(300));
    assert!(eventually(Duration::from_secs(5), || is_dead(grandchild)).await);
    let mut rest = String::new();
    let eof = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read_to_string(&mut out, &mut rest),
    )
    .await;
    assert!(matches!(eof, Ok(Ok(_))), "stdout did not reach EOF");
}

/// Without cgroups (the default sandbox), so that only the process group reaches the
/// background process.
#[tokio::test]
async fn dropping_the_child_kills_its_process_group() {
    let mut child = Sandbox::default()
        .spawn(&sh("dropped_group", "sleep 1000 & echo $!; wait"))
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let sleeper: i32 = lines.next_line().await.unwrap().unwrap().parse().unwrap();
    let leader = child.id() as i32;
    drop(child);
    assert!(
        eventually(Duration::from_secs(5), || is_dead(sleeper)
            && is_dead(leader))
        .await
    );
}

#[tokio::test]
async fn kill_all_reaches_processes_that_left_the_group() {
    let sandbox = Sandbox::probe();
    if !has_layer(&sandbox, "pids_cgroup") {
        return;
    }
    let (mut child, _out, grandchild) = spawn_escapee(&sandbox).await;
    child.kill_all();
    assert!(eventually(Duration::from_secs(5), || is_dead(grandchild)).await);
    let status = child.wait().await.unwrap();
    assert_eq!(status.signal(), Some(Signal::SIGKILL as i32));
}

#[tokio::test]
async fn exit_status_comes_from_wait() {
    let mut child = Sandbox::probe().spawn(&sh("exit", "exit 7")).unwrap();
    assert_eq!(child.wait().await.unwrap().code(), Some(7));
    assert_eq!(stdout(&mut child).await, "");
}

/// The host forks its crews with std, which reaps nothing by itself: a dropped child's
/// leader must not stay a zombie.
#[tokio::test]
async fn dropping_the_child_reaps_its_leader() {
    let mut child = Sandbox::default()
        .spawn(&sh("dropped_leader", "echo up; exec sleep 1000"))
        .unwrap();
    assert_eq!(common::stdout_line(&mut child).await, "up");
    let leader = child.id();
    drop(child);
    let reaped = || !std::path::Path::new(&format!("/proc/{leader}")).exists();
    assert!(
        eventually(Duration::from_secs(5), reaped).await,
        "leader {leader} was not reaped"
    );
}

/// PID 1 of a pid namespace ignores a SIGTERM it has no handler for, so waiting out the
/// grace would be for nothing.
#[tokio::test]
async fn a_pid_namespace_leader_without_a_sigterm_handler_is_killed_at_once() {
    let sandbox = Sandbox::probe();
    if !has_layer(&sandbox, "pid_namespace") {
        return;
    }
    let mut spec = sh("init_no_handler", "echo up; exec sleep 1000");
    spec.isolation.pid_namespace = true;
    let mut child = sandbox.spawn(&spec).unwrap();
    assert_eq!(common::stdout_line(&mut child).await, "up");
    let start = Instant::now();
    let status = child.terminate(Duration::from_secs(30)).await.unwrap();
    assert_eq!(status.signal(), Some(Signal::SIGKILL as i32));
    assert!(start.elapsed() < Duration::from_secs(5));
}
