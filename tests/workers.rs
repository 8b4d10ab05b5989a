//! Worker hosts (SPEC §12): a scheduler (`run --nats --selector`) that sends the calls
//! of some crews to `live-crew worker` processes through `LIVE_WORK` and `LIVE_DONE`, on
//! a real `nats-server -js` on loopback, with the real binary and real Python crews.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use serde_json::Value;
use support::*;

/// A stateless `python` crew on every event that answers one action per event, naming
/// its `n`, after `delay_s`; `extra` adds runtime settings.
fn echo_crew(folder: &Path, name: &str, delay_s: f64, extra: &str) {
    let dir = folder.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("runtime.yaml"),
        format!(
            "crew: {name}\ntriggers: ['*']\nrunner: {{kind: python, module: \"handlers:react\"}}\n\
             context: {{read: [], write: []}}\n{extra}"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("handlers.py"),
        format!(
            "import time\n\
             def react(events, ctx, deps):\n    \
                 time.sleep({delay_s})\n    \
                 return [{{'kind': 'echo', 'payload': {{'n': e['payload']['n']}}}} for e in events]\n"
        ),
    )
    .unwrap();
}

/// `live-crew worker` for the crews `selector` matches.
fn worker(server: &NatsServer, crews: &Path, selector: &str, socket: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_live-crew"));
    command
        .args([
            "worker",
            "--nats",
            &server.url,
            "--selector",
            selector,
            "--crews",
        ])
        .arg(crews)
        .env("LIVE_CREW_HEARTBEAT_MS", "200")
        .env("LIVE_CREW_NATS_WORK_ACK_WAIT_MS", "1000")
        .env("LIVE_CREW_CONTROL_SOCKET", socket)
        .env("LIVE_CREW_LOG", "info")
        .env("LIVE_CREW_LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

/// The scheduler: `crews` matching `selector` run on it, the others on workers.
fn scheduler(server: &NatsServer, crews: &Path, selector: &str, socket: &Path) -> Command {
    let mut command = host(server, crews);
    command
        .args(["--selector", selector])
        .env("LIVE_CREW_CONTROL_SOCKET", socket);
    command
}

/// Publishes events `range` of stream `a`, `gap` apart.
async fn publish_spread(js: &jetstream::Context, range: std::ops::Range<u64>, gap: Duration) {
    for n in range {
        publish(js, "a", n).await;
        tokio::time::sleep(gap).await;
    }
}

/// Waits until every crew of `crews` has actions for events `0..n` of stream `a`; the
/// actions then on `LIVE_ACTIONS`.
async fn wait_for_crews(js: &jetstream::Context, crews: &[&str], n: u64) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let actions: Vec<Value> = read_all(js, "LIVE_ACTIONS")
            .await
            .into_iter()
            .map(|(_, action)| action)
            .collect();
        let covered = |crew: &str| -> BTreeSet<u64> {
            (actions.iter())
                .filter(|action| action["crew"] == crew)
                .map(|action| action["payload"]["n"].as_u64().unwrap())
                .collect()
        };
        if crews.iter().all(|crew| covered(crew).len() as u64 >= n) {
            return actions;
        }
        let counts: Vec<(&str, usize)> = crews.iter().map(|c| (*c, covered(c).len())).collect();
        assert!(
            Instant::now() < deadline,
            "events with actions, by crew: {counts:?} of {n}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Each crew of `crews` answered every event `0..n` exactly once, under unique ids.
fn assert_each_once(js_actions: &[(Option<String>, Value)], crews: &[&str], n: u64) {
    let ids: Vec<&str> = js_actions
        .iter()
        .map(|(id, _)| id.as_deref().expect("actions carry message ids"))
        .collect();
    let unique: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "an action id appears twice");
    for crew in crews {
        let mut seen: BTreeMap<u64, usize> = BTreeMap::new();
        for (_, action) in js_actions.iter().filter(|(_, a)| a["crew"] == *crew) {
            *seen
                .entry(action["payload"]["n"].as_u64().unwrap())
                .or_default() += 1;
        }
        let expected: BTreeMap<u64, usize> = (0..n).map(|n| (n, 1)).collect();
        assert_eq!(
            seen, expected,
            "crew {crew}: events and how often they were answered"
        );
    }
}

/// Waits for the first error records on `LIVE_ERRORS`.
async fn wait_for_errors(js: &jetstream::Context) -> Vec<(Option<String>, Value)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let errors = read_all(js, "LIVE_ERRORS").await;
        if !errors.is_empty() {
            return errors;
        }
        assert!(Instant::now() < deadline, "no error record");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The results on `LIVE_DONE` for the call with message id `id`.
async fn answers_to(js: &jetstream::Context, id: &str) -> Vec<Value> {
    read_all(js, "LIVE_DONE")
        .await
        .into_iter()
        .filter(|(message_id, _)| message_id.as_deref() == Some(id))
        .map(|(_, result)| result)
        .collect()
}

/// The workers that answered calls, by the results on `LIVE_DONE`.
async fn workers_that_answered(js: &jetstream::Context) -> BTreeSet<String> {
    read_all(js, "LIVE_DONE")
        .await
        .into_iter()
        .map(|(_, result)| result["worker"].as_str().unwrap().to_owned())
        .collect()
}

/// Waits until the host on `socket` reports `crew` in `state`.
fn wait_for_crew_state(socket: &Path, crew: &str, state: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, report) = health(socket);
        let found = report["crews"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["crew"] == crew && c["state"] == state);
        if found {
            return report;
        }
        assert!(Instant::now() < deadline, "{crew} never {state}: {report}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Cluster {
    server: NatsServer,
    _root: tempfile::TempDir,
    crews: PathBuf,
    sockets: PathBuf,
}

/// A server and a crews folder with `local` (on the scheduler) and `remote` (on workers,
/// `delay_s` per call, `extra` runtime settings).
fn cluster(delay_s: f64, extra: &str) -> Cluster {
    let root = tempfile::tempdir().unwrap();
    let crews = root.path().join("crews");
    echo_crew(&crews, "local", 0.0, "");
    echo_crew(&crews, "remote", delay_s, extra);
    Cluster {
        server: NatsServer::start(&[]),
        sockets: root.path().to_path_buf(),
        crews,
        _root: root,
    }
}

impl Cluster {
    fn socket(&self, name: &str) -> PathBuf {
        self.sockets.join(format!("{name}.sock"))
    }

    fn scheduler(&self) -> Running {
        Running::start(&mut scheduler(
            &self.server,
            &self.crews,
            "^local$",
            &self.socket("scheduler"),
        ))
    }

    fn worker(&self, name: &str) -> Running {
        let socket = self.socket(name);
        let running = Running::start(&mut worker(&self.server, &self.crews, "^remote$", &socket));
        wait_healthy(&socket);
        running
    }
}

#[test]
fn a_local_crew_and_a_remote_one_on_two_workers_answer_every_event_once() {
    let cluster = cluster(0.02, "");
    let scheduler = cluster.scheduler();
    wait_for_crew_state(&cluster.socket("scheduler"), "remote", "no_worker");
    let (one, two) = (cluster.worker("w1"), cluster.worker("w2"));
    wait_for_crew_state(&cluster.socket("scheduler"), "remote", "remote");
    let rt = runtime();
    rt.block_on(async {
        let js = client(&cluster.server).await;
        publish_spread(&js, 0..200, Duration::from_millis(5)).await;
        wait_for_crews(&js, &["local", "remote"], 200).await;
        assert_each_once(
            &read_all(&js, "LIVE_ACTIONS").await,
            &["local", "remote"],
            200,
        );
        let answered = workers_that_answered(&js).await;
        assert_eq!(answered.len(), 2, "both workers took calls: {answered:?}");
        // The call id a crew sees is `<stream>:<slice>:<crew>`.
        let done = read_all(&js, "LIVE_DONE").await;
        let (id, result) = &done[0];
        let call_id = result["call_id"].as_str().unwrap();
        assert!(
            call_id.starts_with("a:") && call_id.ends_with(":remote"),
            "{call_id}"
        );
        assert_eq!(
            id.as_deref(),
            Some(&*format!("{call_id}:{}", result["rev"]))
        );
    });
    for running in [scheduler, one, two] {
        let (code, stderr) = stop(running);
        assert_eq!(code, 0, "{stderr}");
    }
}

#[test]
fn a_killed_workers_calls_go_to_the_other_one_and_every_action_appears_once() {
    let cluster = cluster(0.6, "");
    let scheduler = cluster.scheduler();
    let mut first = cluster.worker("w1");
    wait_for_crew_state(&cluster.socket("scheduler"), "remote", "remote");
    let rt = runtime();
    let js = rt.block_on(async {
        let js = client(&cluster.server).await;
        publish_spread(&js, 0..10, Duration::from_millis(30)).await;
        js
    });
    // The first worker has a call when it dies; only then does the second one start.
    let lost = wait_for_call(&cluster.socket("w1"));
    let first_pid = first.child.id();
    first.kill();
    let killed = Instant::now();
    let _second = cluster.worker("w2");
    rt.block_on(async {
        wait_for_crews(&js, &["local", "remote"], 10).await;
        let taken_over = killed.elapsed();
        assert_each_once(
            &read_all(&js, "LIVE_ACTIONS").await,
            &["local", "remote"],
            10,
        );
        // The dead worker's call was answered by the other one.
        let answers = answers_to(&js, &lost).await;
        assert_eq!(answers.len(), 1, "{answers:?}");
        let answered_by = answers[0]["worker"].as_str().unwrap();
        assert!(
            !answered_by.ends_with(&format!("-{first_pid}")),
            "{answers:?}"
        );
        // ack_wait (1 s here) plus the call itself and the second worker's start.
        assert!(taken_over < Duration::from_secs(15), "{taken_over:?}");
    });
    let (code, stderr) = stop(scheduler);
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn a_call_past_its_deadline_times_out_and_the_late_answer_is_ignored() {
    // The crew needs 2 s a call, and has 500 ms.
    let cluster = cluster(2.0, "timeout_ms: 500\n");
    let scheduler = cluster.scheduler();
    let _worker = cluster.worker("w1");
    wait_for_crew_state(&cluster.socket("scheduler"), "remote", "remote");
    let rt = runtime();
    rt.block_on(async {
        let js = client(&cluster.server).await;
        publish(&js, "a", 0).await;
        wait_for_crews(&js, &["local"], 1).await;
        let errors = wait_for_errors(&js).await;
        let (_, record) = &errors[0];
        assert_eq!(record["reason"], "timeout", "{record}");
        assert_eq!(record["crew"], "remote", "{record}");
        // Give the worker's own answer time to come, and be ignored.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let actions = read_all(&js, "LIVE_ACTIONS").await;
        assert!(
            actions.iter().all(|(_, action)| action["crew"] != "remote"),
            "{actions:?}"
        );
        assert_eq!(read_all(&js, "LIVE_ERRORS").await.len(), 1);
    });
    let (code, stderr) = stop(scheduler);
    assert_eq!(code, 1, "a timed-out call is a run error: {stderr}");
}

#[test]
fn a_crew_no_worker_serves_is_reported_and_the_other_crews_keep_their_output() {
    let cluster = cluster(0.0, "");
    let scheduler = cluster.scheduler();
    let socket = cluster.socket("scheduler");
    let report = wait_for_crew_state(&socket, "remote", "no_worker");
    assert_eq!(report["healthy"], false, "{report}");
    let rt = runtime();
    rt.block_on(async {
        let js = client(&cluster.server).await;
        publish_spread(&js, 0..20, Duration::from_millis(10)).await;
        let actions = wait_for_crews(&js, &["local"], 20).await;
        assert!(actions.iter().all(|action| action["crew"] == "local"));
        let errors = read_all(&js, "LIVE_ERRORS").await;
        assert!(!errors.is_empty());
        for (_, record) in &errors {
            assert_eq!(record["reason"], "no_worker", "{record}");
            assert_eq!(record["crew"], "remote", "{record}");
        }
    });
    let (code, _) = health(&socket);
    assert_eq!(code, 1, "unhealthy while a crew has no worker");
    let (code, stderr) = stop(scheduler);
    assert_eq!(code, 1, "{stderr}");
}

#[test]
fn a_worker_whose_crew_differs_from_the_schedulers_refuses_to_start() {
    let cluster = cluster(0.0, "");
    let _scheduler = cluster.scheduler();
    let rt = runtime();
    rt.block_on(async {
        let js = client(&cluster.server).await;
        wait_for_topology(&js).await;
        // The digest is published once the scheduler holds its lock.
        let bucket = js.get_key_value("live_ctx").await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while bucket.get("crew.remote").await.unwrap().is_none() {
            assert!(Instant::now() < deadline, "no digest published");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let elsewhere = tempfile::tempdir().unwrap();
    let other = elsewhere.path().join("crews");
    echo_crew(&other, "remote", 0.0, "timeout_ms: 1234\n");
    let refused = output_within(
        &mut worker(&cluster.server, &other, "^remote$", &cluster.socket("w1")),
        Duration::from_secs(30),
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("crew 'remote' here differs from the scheduler's copy"),
        "{stderr}"
    );
    // The same crews folder is served.
    let _same = cluster.worker("w2");
}

#[test]
fn a_scheduler_killed_mid_run_with_two_workers_loses_nothing_and_repeats_nothing() {
    let cluster = cluster(0.05, "");
    let mut first = cluster.scheduler();
    let (_one, _two) = (cluster.worker("w1"), cluster.worker("w2"));
    wait_for_crew_state(&cluster.socket("scheduler"), "remote", "remote");
    let rt = runtime();
    let js = rt.block_on(async {
        let js = client(&cluster.server).await;
        publish_spread(&js, 0..60, Duration::from_millis(5)).await;
        js
    });
    // Killed while it works through them.
    std::thread::sleep(Duration::from_millis(300));
    first.kill();
    rt.block_on(publish_spread(&js, 60..100, Duration::from_millis(5)));
    let second = cluster.scheduler();
    rt.block_on(async {
        wait_for_crews(&js, &["local", "remote"], 100).await;
        assert_each_once(
            &read_all(&js, "LIVE_ACTIONS").await,
            &["local", "remote"],
            100,
        );
    });
    let (code, stderr) = stop(second);
    assert_eq!(code, 0, "{stderr}");
}

/// Waits until the worker on `socket` has a call in flight; its message id.
fn wait_for_call(socket: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, report) = health(socket);
        if let Some(call) = report["nats"]["calls_in_flight"][0].as_str() {
            return call.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "the worker never took a call: {report}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_call_every_worker_dies_on_fails_after_max_deliver() {
    let cluster = cluster(30.0, "timeout_ms: 60000\n");
    let scheduler = cluster.scheduler();
    let start = |name: &str| {
        let socket = cluster.socket(name);
        let mut command = worker(&cluster.server, &cluster.crews, "^remote$", &socket);
        let running = Running::start(command.env("LIVE_CREW_NATS_WORK_MAX_DELIVER", "2"));
        wait_healthy(&socket);
        running
    };
    let mut first = start("w1");
    wait_for_crew_state(&cluster.socket("scheduler"), "remote", "remote");
    let rt = runtime();
    let js = rt.block_on(async {
        let js = client(&cluster.server).await;
        publish(&js, "a", 0).await;
        js
    });
    let call = wait_for_call(&cluster.socket("w1"));
    first.kill();
    let mut second = start("w2");
    assert_eq!(wait_for_call(&cluster.socket("w2")), call, "redelivered");
    second.kill();
    let asked = Instant::now();
    // The server gives up on the call when it would deliver it a third time.
    let _third = start("w3");
    rt.block_on(async {
        let errors = wait_for_errors(&js).await;
        let (_, record) = &errors[0];
        assert_eq!(record["reason"], "crash", "{record}");
        let message = record["message"].as_str().unwrap();
        assert!(
            message.contains("delivered to workers 2 times"),
            "{message}"
        );
        // Long before the call's own deadline of 60 s.
        assert!(
            asked.elapsed() < Duration::from_secs(15),
            "{:?}",
            asked.elapsed()
        );
        wait_for_crews(&js, &["local"], 1).await;
    });
    let (code, stderr) = stop(scheduler);
    assert_eq!(code, 1, "{stderr}");
}

#[test]
fn a_worker_stopped_with_sigterm_answers_its_call_first() {
    let cluster = cluster(1.0, "");
    let scheduler = cluster.scheduler();
    let working = cluster.worker("w1");
    wait_for_crew_state(&cluster.socket("scheduler"), "remote", "remote");
    let rt = runtime();
    let js = rt.block_on(async {
        let js = client(&cluster.server).await;
        publish(&js, "a", 0).await;
        js
    });
    let call = wait_for_call(&cluster.socket("w1"));
    let worker_pid = working.child.id();
    let (code, stderr) = stop(working);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("finishing the calls in flight"), "{stderr}");
    rt.block_on(async {
        let answers = answers_to(&js, &call).await;
        assert_eq!(answers.len(), 1, "answered before it stopped: {answers:?}");
        let by = answers[0]["worker"].as_str().unwrap();
        assert!(by.ends_with(&format!("-{worker_pid}")), "{by}");
        wait_for_crews(&js, &["local", "remote"], 1).await;
    });
    let (code, stderr) = stop(scheduler);
    assert_eq!(code, 0, "{stderr}");
}
