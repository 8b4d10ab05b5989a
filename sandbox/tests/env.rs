//! The environment allowlist. Alone in its binary because it changes the test
//! process's own environment.

mod common;

use common::{sh, stdout};
use live_crew_sandbox::Sandbox;

#[tokio::test]
async fn host_environment_is_cleared_except_the_allowlist() {
    // SAFETY: this binary has this one test, and nothing else reads the environment
    // while it is being set.
    unsafe { std::env::set_var("LIVE_CREW_TEST_SECRET", "hunter2") };
    let mut spec = sh("env", "env");
    spec.env = vec![
        ("LANGUAGE".into(), "en".into()),
        ("HOME".into(), "/root".into()),
    ];
    let mut child = Sandbox::probe().spawn(&spec).unwrap();
    let workdir = child.workdir().display().to_string();
    let out = stdout(&mut child).await;
    let mut names: Vec<&str> = out
        .lines()
        .filter_map(|line| line.split_once('=').map(|(name, _)| name))
        .collect();
    names.sort_unstable();
    // PWD is set by sh itself.
    assert_eq!(
        names,
        ["HOME", "LANG", "LANGUAGE", "PATH", "PWD", "TMPDIR"],
        "{out}"
    );
    assert!(!out.contains("hunter2"), "{out}");
    assert!(out.contains("LANGUAGE=en\n"), "{out}");
    assert!(out.contains(&format!("HOME={workdir}\n")), "{out}");
    assert!(out.contains(&format!("TMPDIR={workdir}\n")), "{out}");
    assert!(child.wait().await.unwrap().success());
}
