//! The supervisor against real runner processes that misbehave on purpose
//! (`tests/fixtures/hostile/hostile_runner.py`). Each test shows the failure is reported
//! with the right reason, nothing hangs, and the crew (or another crew) keeps working.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use common::{process_gone, write_hostile_crew};
use live_crew::config::{CrewSpec, GlobalConfig};
use live_crew::model::{Event, Timestamp};
use live_crew::pool::{CallOutcome, CrewPool, FailureReason};
use live_crew::protocol::Call;
use live_crew::supervisor::Supervisor;

fn global() -> GlobalConfig {
    GlobalConfig {
        // Generous enough that healthy runners never miss a beat while the whole test
        // suite competes for two cores.
        heartbeat_ms: 250,
        kill_grace_ms: 300,
        restart_backoff_ms: 10,
        startup_timeout_ms: 5000,
        ..GlobalConfig::default()
    }
}

fn hostile_crew(root: &Path, name: &str, extra: &str) -> CrewSpec {
    CrewSpec::load(&write_hostile_crew(root, name, extra), &global()).unwrap()
}

/// A call with `deadline_ms` (the scheduler sets it from the crew's `timeout_ms`).
fn call(id: u64, payload: &str, deadline_ms: u64) -> Call {
    let event = Event::from_json(&format!(
        r#"{{"ts":"2025-01-01T00:00:00Z","kind":"tick","stream_id":"s","payload":{payload}}}"#
    ))
    .unwrap();
    Call {
        id,
        call_id: format!("s:0:crew-{id}"),
        stream_id: "s".into(),
        slice: 0,
        slice_start: Timestamp::from_micros(0),
        slice_end: Timestamp::from_micros(500_000),
        events: vec![Arc::new(event)],
        context: Arc::default(),
        deps: Default::default(),
        deadline_ms,
    }
}

/// A call with the default `timeout_ms`.
async fn ask(pool: &Supervisor, crew: &str, id: u64, payload: &str) -> CallOutcome {
    ask_within(pool, crew, id, payload, 30_000).await
}

async fn ask_within(
    pool: &Supervisor,
    crew: &str,
    id: u64,
    payload: &str,
    deadline_ms: u64,
) -> CallOutcome {
    let call = call(id, payload, deadline_ms);
    tokio::time::timeout(Duration::from_secs(30), pool.call(crew, call))
        .await
        .expect("the supervisor answers every call")
}

fn failure_reason(outcome: CallOutcome) -> FailureReason {
    match outcome {
        Ok(output) => panic!("expected a failure, got {} actions", output.actions.len()),
        Err(failure) => {
            // Runner-supplied messages are the runner's own words; the host's name the crew.
            let named = failure.message.contains("crew '");
            assert!(
                named || failure.reason == FailureReason::RunnerError,
                "{failure:?}"
            );
            failure.reason
        }
    }
}

fn echoed(outcome: CallOutcome) -> String {
    let output = outcome.expect("a successful call");
    assert_eq!(output.actions.len(), 1);
    output.actions[0].payload.get().to_owned()
}

/// Runs `mode` on a hostile crew next to a healthy one, checks the reason, then shows
/// both crews still answer.
async fn misbehave(mode: &str, extra: &str, want: FailureReason) {
    let root = tempfile::tempdir().unwrap();
    let crews = [
        hostile_crew(root.path(), "hostile", extra),
        hostile_crew(root.path(), "healthy", ""),
    ];
    let pool = Supervisor::start(&crews, &global()).unwrap();
    assert_eq!(
        echoed(ask(&pool, "healthy", 1, r#"{"n":1}"#).await),
        r#"{"n":1}"#
    );
    let payload = format!(r#"{{"do":"{mode}"}}"#);
    let deadline_ms = crews[0].timeout_ms;
    assert_eq!(
        failure_reason(ask_within(&pool, "hostile", 2, &payload, deadline_ms).await),
        want,
        "{mode}"
    );
    assert_eq!(
        echoed(ask(&pool, "healthy", 3, r#"{"n":3}"#).await),
        r#"{"n":3}"#
    );
    assert_eq!(
        echoed(ask(&pool, "hostile", 4, r#"{"n":4}"#).await),
        r#"{"n":4}"#
    );
    pool.shutdown().await;
}

#[tokio::test]
async fn crash_in_the_middle_of_a_call() {
    misbehave("crash", "", FailureReason::Crash).await;
}

#[tokio::test]
async fn call_that_hangs_past_its_timeout() {
    misbehave("hang", "timeout_ms: 300\n", FailureReason::Timeout).await;
}

#[tokio::test]
async fn heartbeats_stop_while_the_process_lives() {
    misbehave("stop_heartbeats", "", FailureReason::Heartbeat).await;
}

#[tokio::test]
async fn non_json_line_on_stdout() {
    misbehave("garbage", "", FailureReason::Protocol).await;
}

#[tokio::test]
async fn twenty_megabyte_line_without_newline() {
    misbehave("long_line", "", FailureReason::Protocol).await;
}

#[tokio::test]
async fn invalid_action() {
    misbehave("bad_action", "", FailureReason::InvalidAction).await;
}

#[tokio::test]
async fn answer_with_the_wrong_id() {
    misbehave("wrong_id", "", FailureReason::Protocol).await;
}

#[tokio::test]
async fn eight_gib_allocation_under_256_mib() {
    misbehave(
        "allocate",
        "sandbox: {memory_mb: 256}\n",
        FailureReason::RunnerError,
    )
    .await;
}

#[tokio::test]
async fn fifty_megabytes_on_stderr_in_one_call() {
    let root = tempfile::tempdir().unwrap();
    let crews = [hostile_crew(root.path(), "chatty", "")];
    let pool = Supervisor::start(&crews, &global()).unwrap();
    let started = Instant::now();
    let outcome = ask(&pool, "chatty", 1, r#"{"do":"stderr_flood"}"#).await;
    assert_eq!(echoed(outcome), r#"{"do":"stderr_flood"}"#);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    pool.shutdown().await;
}

#[tokio::test]
async fn consecutive_failures_disable_only_that_crew() {
    let root = tempfile::tempdir().unwrap();
    let crews = [
        hostile_crew(root.path(), "flaky", "max_errors: 2\n"),
        hostile_crew(root.path(), "healthy", ""),
    ];
    let pool = Supervisor::start(&crews, &global()).unwrap();
    // A success in between resets the count.
    assert_eq!(
        failure_reason(ask(&pool, "flaky", 1, r#"{"do":"fail"}"#).await),
        FailureReason::RunnerError
    );
    assert!(ask(&pool, "flaky", 2, "{}").await.is_ok());
    assert_eq!(
        failure_reason(ask(&pool, "flaky", 3, r#"{"do":"fail"}"#).await),
        FailureReason::RunnerError
    );
    assert_eq!(
        failure_reason(ask(&pool, "flaky", 4, r#"{"do":"crash"}"#).await),
        FailureReason::Crash
    );
    for id in 5..8 {
        assert_eq!(
            failure_reason(ask(&pool, "flaky", id, "{}").await),
            FailureReason::Disabled
        );
    }
    assert!(ask(&pool, "healthy", 9, "{}").await.is_ok());
    pool.shutdown().await;
}

#[tokio::test]
async fn a_runner_that_never_starts_is_disabled() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("broken");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("run"),
        "#!/bin/sh\necho 'cannot start' >&2\nexit 7\n",
    )
    .unwrap();
    std::fs::set_permissions(
        dir.join("run"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let file = dir.join("runtime.yaml");
    std::fs::write(&file, "crew: broken\ntriggers: ['*']\nmax_errors: 2\nrunner: {kind: command, command: [\"./run\"]}\n").unwrap();
    let crews = [CrewSpec::load(&file, &global()).unwrap()];
    let pool = Supervisor::start(&crews, &global()).unwrap();
    let outcome = ask(&pool, "broken", 1, "{}").await;
    let failure = outcome.unwrap_err();
    assert_eq!(failure.reason, FailureReason::Disabled);
    assert!(failure.message.contains("startup"), "{}", failure.message);
    pool.shutdown().await;
}

#[tokio::test]
async fn grandchild_that_ignores_sigterm_and_holds_stdout() {
    let root = tempfile::tempdir().unwrap();
    let crews = [hostile_crew(root.path(), "parent", "")];
    let pool = Supervisor::start(&crews, &global()).unwrap();
    let pid: i32 = echoed(ask(&pool, "parent", 1, r#"{"do":"grandchild"}"#).await)
        .parse()
        .unwrap();
    // The parent exits while its grandchild keeps stdout open: the host must notice the
    // exit itself, kill the whole group, and restart the crew.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !process_gone(pid) {
        assert!(
            Instant::now() < deadline,
            "grandchild {pid} survived its crew"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // In a pid namespace the grandchild dies with its parent, possibly before the host
    // has seen the exit: wait for the restart before the next call.
    while pool.status().snapshot()[0].restarts == 0 {
        assert!(Instant::now() < deadline, "the crew was not restarted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ask(&pool, "parent", 2, "{}").await.is_ok());
    pool.shutdown().await;
}

#[tokio::test]
async fn fork_bomb_under_a_process_limit_of_32() {
    let root = tempfile::tempdir().unwrap();
    let crews = [
        hostile_crew(root.path(), "bomb", "sandbox: {processes: 32}\n"),
        hostile_crew(root.path(), "healthy", ""),
    ];
    let pool = Supervisor::start(&crews, &global()).unwrap();
    let forked: u32 = echoed(ask(&pool, "bomb", 1, r#"{"do":"fork_bomb"}"#).await)
        .parse()
        .unwrap();
    // The runner and its heartbeat thread count too, so fewer than 32 forks succeed.
    assert!(forked < 32, "{forked} forks got past a limit of 32");
    assert!(ask(&pool, "healthy", 2, "{}").await.is_ok());
    let bomb_pid = pool.status().snapshot()[0]
        .pid
        .expect("the bomb's runner is up");
    pool.shutdown().await;
    assert!(process_gone(bomb_pid as i32));
    let group = std::process::Command::new("pgrep")
        .args(["-g", &bomb_pid.to_string()])
        .output()
        .unwrap();
    let running: Vec<&str> = std::str::from_utf8(&group.stdout)
        .unwrap()
        .lines()
        .filter(|pid| !process_gone(pid.parse().unwrap()))
        .collect();
    assert!(
        running.is_empty(),
        "fork bomb processes survived: {running:?}"
    );
}

#[tokio::test]
async fn status_shows_the_layers_each_crew_really_gets() {
    let root = tempfile::tempdir().unwrap();
    let crews = [
        hostile_crew(root.path(), "offline", ""),
        hostile_crew(
            root.path(),
            "online",
            "sandbox: {network: true, pid_namespace: false}\n",
        ),
    ];
    let mut config = global();
    config.sandbox.disable = vec!["seccomp".into()];
    let pool = Supervisor::start(&crews, &config).unwrap();
    let status = pool.status().snapshot();
    let layers = |i: usize| &status[i].sandbox_layers;
    for layer in ["netns", "pid_namespace", "landlock", "pids_cgroup"] {
        assert!(
            layers(0).contains(&layer),
            "offline lacks {layer}: {status:?}"
        );
    }
    assert!(layers(1).contains(&"landlock"), "{status:?}");
    for layer in ["netns", "pid_namespace"] {
        assert!(
            !layers(1).contains(&layer),
            "online has {layer}: {status:?}"
        );
    }
    assert!(
        status
            .iter()
            .all(|s| !s.sandbox_layers.contains(&"seccomp"))
    );
    pool.shutdown().await;
}
