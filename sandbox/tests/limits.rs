//! The cgroup layers and the memory rlimit: fork bombs, memory hogs, and cleanup.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{eventually, has_layer, is_dead, python, sh};
use live_crew_sandbox::{Limits, Sandbox};

fn pids_group(groups: &[PathBuf]) -> &Path {
    groups
        .iter()
        .find(|dir| dir.join("pids.max").exists())
        .expect("a pids cgroup")
}

fn read(path: PathBuf) -> String {
    fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

#[tokio::test]
async fn fork_bomb_stays_within_the_process_limit_and_is_cleaned_up() {
    let sandbox = Sandbox::probe();
    if !has_layer(&sandbox, "pids_cgroup") {
        return;
    }
    // Every process forks for ever, and keeps trying when the kernel says no.
    let bomb = "import os, time\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        time.sleep(0.01)";
    let mut spec = python("fork_bomb", bomb);
    spec.limits.processes = Some(32);
    let mut child = sandbox.spawn(&spec).unwrap();
    // Nobody reads the bomb's complaints about failed forks.
    drop(child.stderr.take());
    let groups: Vec<PathBuf> = child.cgroups().map(Path::to_owned).collect();
    let pids = pids_group(&groups).to_owned();
    assert_eq!(read(pids.join("pids.max")).trim(), "32");

    // Until the bomb has run into the limit.
    let hit_limit = || {
        fs::read_to_string(pids.join("pids.events"))
            .is_ok_and(|events| !events.trim().ends_with(" 0"))
    };
    assert!(eventually(Duration::from_secs(10), hit_limit).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let peak = fs::read_to_string(pids.join("pids.peak"))
        .unwrap_or_else(|_| read(pids.join("pids.current")));
    assert!(peak.trim().parse::<u64>().unwrap() <= 32, "peak {peak}");
    let members: Vec<i32> = read(pids.join("cgroup.procs"))
        .lines()
        .map(|line| line.parse().unwrap())
        .collect();
    assert!(!members.is_empty());

    child.terminate(Duration::from_millis(100)).await.unwrap();
    for dir in &groups {
        assert!(!dir.exists(), "{} survived terminate", dir.display());
    }
    assert!(members.iter().all(|&pid| is_dead(pid)), "{members:?}");
}

#[tokio::test]
async fn huge_allocation_fails_fast_under_the_memory_limit() {
    let mut spec = python("memory_hog", "x = bytearray(8 * 1024**3)");
    spec.limits.memory_mb = Some(256);
    let start = Instant::now();
    let mut child = Sandbox::probe().spawn(&spec).unwrap();
    let status = child.wait().await.unwrap();
    let mut stderr = String::new();
    tokio::io::AsyncReadExt::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr)
        .await
        .unwrap();
    assert!(!status.success());
    assert!(stderr.contains("MemoryError"), "{stderr}");
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn crew_over_its_memory_limit_as_a_whole_is_oom_killed() {
    let sandbox = Sandbox::probe();
    if !has_layer(&sandbox, "memory_cgroup") {
        return;
    }
    // Three processes that each stay below RLIMIT_AS, but not together.
    let hog = python(
        "unused",
        "x = b'a' * (150 << 20); import time; time.sleep(30)",
    );
    let python = hog.program.display().to_string();
    let code = hog.args[1].to_str().unwrap().to_owned();
    let mut spec = sh(
        "oom",
        &format!("for i in 1 2 3; do '{python}' -c \"{code}\" & done; wait"),
    );
    spec.limits.memory_mb = Some(256);
    let mut child = sandbox.spawn(&spec).unwrap();
    let mut stderr = child.stderr.take();
    assert!(
        eventually(Duration::from_secs(20), || child.oom_killed()).await,
        "no OOM kill seen; stderr: {:?}",
        read_some(&mut stderr).await
    );
    child.terminate(Duration::from_millis(100)).await.unwrap();
    assert!(
        child.oom_killed(),
        "the OOM kill is remembered after terminate"
    );
}

async fn read_some(stderr: &mut Option<live_crew_sandbox::ChildStderr>) -> String {
    let mut buf = vec![0; 4096];
    let read = tokio::time::timeout(
        Duration::from_millis(200),
        tokio::io::AsyncReadExt::read(stderr.as_mut().unwrap(), &mut buf),
    )
    .await;
    match read {
        Ok(Ok(n)) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        _ => String::new(),
    }
}

#[tokio::test]
async fn cgroups_are_removed_when_the_child_is_dropped() {
    let sandbox = Sandbox::probe();
    if !has_layer(&sandbox, "pids_cgroup") {
        return;
    }
    let mut spec = sh("dropped", "sleep 1000 & sleep 1000 & wait");
    spec.limits = Limits {
        memory_mb: Some(64),
        processes: Some(8),
        ..Limits::default()
    };
    let child = sandbox.spawn(&spec).unwrap();
    let groups: Vec<PathBuf> = child.cgroups().map(Path::to_owned).collect();
    let pids = pids_group(&groups).to_owned();
    assert!(
        eventually(Duration::from_secs(5), || read(pids.join("cgroup.procs"))
            .lines()
            .count()
            == 3)
        .await
    );
    let members: Vec<i32> = read(pids.join("cgroup.procs"))
        .lines()
        .map(|line| line.parse().unwrap())
        .collect();
    assert_eq!(groups.len(), 2, "a pids and a memory group: {groups:?}");
    drop(child);
    for dir in &groups {
        assert!(!dir.exists(), "{} survived the drop", dir.display());
    }
    assert!(
        eventually(Duration::from_secs(5), || members
            .iter()
            .all(|&pid| is_dead(pid)))
        .await
    );
}

#[tokio::test]
async fn a_deferred_join_moves_the_started_child_into_its_cgroups() {
    let sandbox = Sandbox::probe();
    if !has_layer(&sandbox, "pids_cgroup") {
        return;
    }
    // Reads a line before it forks: the host's go-ahead, as `hello` is a runner's.
    let mut spec = sh("deferred", "read go; sleep 1000 & wait");
    spec.limits = Limits {
        memory_mb: Some(64),
        processes: Some(8),
        ..Limits::default()
    };
    spec.isolation.defer_cgroup_join = true;
    let mut child = sandbox.spawn(&spec).unwrap();
    let groups: Vec<PathBuf> = child.cgroups().map(Path::to_owned).collect();
    assert_eq!(groups.len(), 2, "a pids and a memory group: {groups:?}");
    let members = |dir: &Path| read(dir.join("cgroup.procs")).lines().count();
    assert!(
        groups.iter().all(|dir| members(dir) == 0),
        "joined before the host moved it"
    );

    child.join_cgroups().await.unwrap();
    let leader = child.id().to_string();
    for dir in &groups {
        assert_eq!(
            read(dir.join("cgroup.procs")).trim(),
            leader,
            "{}",
            dir.display()
        );
    }
    // What it starts after the go-ahead is inside the groups too.
    use tokio::io::AsyncWriteExt;
    child
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"go\n")
        .await
        .unwrap();
    let pids = pids_group(&groups).to_owned();
    assert!(eventually(Duration::from_secs(5), || members(&pids) == 2).await);
    child.terminate(Duration::from_millis(100)).await.unwrap();
    assert!(groups.iter().all(|dir| !dir.exists()));
}
