//! The crew dies with its host. The host here is this test binary, run again as a
//! helper process that spawns a crew and is then SIGKILLed.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{eventually, is_dead, is_root, sh};
use live_crew_sandbox::{Sandbox, User};

/// Set to `root` or `nobody` when this binary runs as the helper host.
const HELPER: &str = "LIVE_CREW_SANDBOX_PDEATHSIG_HOST";

/// The helper host: spawns a crew, reports its pid and cgroups, and waits to be killed.
/// Does nothing in a normal test run.
#[tokio::test]
async fn helper_host() {
    let Some(mode) = std::env::var_os(HELPER) else {
        return;
    };
    let mut spec = sh("orphan", "echo $$; exec sleep 1000");
    if mode == "nobody" {
        spec.user = Some(User {
            uid: 65534,
            gid: 65534,
        });
    }
    let mut child = Sandbox::probe().spawn(&spec).unwrap();
    let pid = common::stdout_line(&mut child).await;
    println!("WORKDIR {}", child.workdir().display());
    for group in child.cgroups() {
        println!("CGROUP {}", group.display());
    }
    println!("CREW {pid}");
    tokio::time::sleep(Duration::from_secs(60)).await;
}

/// Runs the helper host, SIGKILLs it, and checks its crew dies too, and that the next
/// host cleans up what it left.
async fn crew_dies_with_host(mode: &str) {
    let mut host = Command::new(std::env::current_exe().unwrap())
        .args(["helper_host", "--exact", "--nocapture", "--test-threads=1"])
        .env(HELPER, mode)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut leftovers = Vec::new();
    let mut crew = None;
    // The test harness may print "test helper_host ... " in front of a line.
    for line in BufReader::new(host.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some((_, path)) = line
            .split_once("CGROUP ")
            .or_else(|| line.split_once("WORKDIR "))
        {
            leftovers.push(PathBuf::from(path));
        } else if let Some((_, pid)) = line.split_once("CREW ") {
            crew = Some(pid.parse::<i32>().unwrap());
            break;
        }
    }
    let crew = crew.expect("the helper host reported its crew");
    assert!(!is_dead(crew));

    host.kill().unwrap();
    host.wait().unwrap();
    assert!(
        eventually(Duration::from_secs(5), || is_dead(crew)).await,
        "crew {crew} outlived its host"
    );
    // The killed host could not remove its cgroups and workdir; the next host does.
    assert_eq!(
        leftovers.len(),
        2,
        "a workdir and a pids group: {leftovers:?}"
    );
    assert!(leftovers.iter().all(|path| path.exists()));
    let _next_host = Sandbox::probe();
    for path in leftovers {
        assert!(!path.exists(), "{} was left behind", path.display());
    }
}

/// Both modes in one test: the next host's probe in one would clean up after the other
/// and hide a crew that survived.
#[tokio::test]
async fn crew_dies_when_its_host_is_killed() {
    crew_dies_with_host("root").await;
    if is_root() {
        crew_dies_with_host("nobody").await;
    } else {
        eprintln!("skipped the run as another user: needs root");
    }
}
