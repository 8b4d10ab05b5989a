//! Operations through the real binary: live mode on a slow stdin feed, `health` and
//! `status` over the control socket, a `/metrics` scrape, JSON logs, and stopping.

mod common;
mod support;

use common::{
    Host, all_ready, event_now, health, lines, runner_pids, state_of, wait_all_gone,
    write_hostile_crew,
};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};
use support::{http_get, output_within};

const BIN: &str = env!("CARGO_BIN_EXE_live-crew");

#[test]
fn live_stdin_slices_close_on_time_and_their_actions_are_flushed_at_once() {
    let root = tempfile::tempdir().unwrap();
    let crews = root.path().join("crews");
    write_hostile_crew(&crews, "echo", "env: {IGNORE_DO: \"1\"}\n");
    let output = root.path().join("actions.jsonl");
    let mut host = Host::start(
        root.path(),
        &crews,
        &[],
        &["--output", output.to_str().unwrap()],
    );
    host.wait_health("ready", all_ready);
    // One event, then nothing: slice 0 closes 500 + 50 ms after it arrived.
    let sent = Instant::now();
    host.send(&event_now("tick", "1"));
    let mut waited = Duration::ZERO;
    while lines(&output).is_empty() {
        waited = sent.elapsed();
        assert!(
            waited < Duration::from_secs(5),
            "no action; log:\n{}",
            host.log()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        waited >= Duration::from_millis(540),
        "slice 0 closed early: {waited:?}"
    );
    let first = lines(&output);
    assert_eq!(
        (first.len(), &first[0]["slice"]),
        (1, &serde_json::json!(0))
    );
    // A second event two slices later lands in slice 2 (slice 1 ticked empty).
    std::thread::sleep(Duration::from_millis(1100).saturating_sub(sent.elapsed()));
    host.send(&event_now("tick", "2"));
    while lines(&output).len() < 2 {
        assert!(
            sent.elapsed() < Duration::from_secs(6),
            "log:\n{}",
            host.log()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(lines(&output)[1]["slice"], 2);
    drop(host.child.stdin.take());
    assert_eq!(host.wait_exit(10), Some(0), "log:\n{}", host.log());
}

#[test]
fn health_reports_every_crew_state_and_exits_0_1_or_2() {
    let root = tempfile::tempdir().unwrap();
    let crews = root.path().join("crews");
    write_hostile_crew(&crews, "steady", "env: {IGNORE_DO: \"1\"}\n");
    write_hostile_crew(
        &crews,
        "stuck",
        "timeout_ms: 60000\nenv: {SLICE0_MODE: hang}\n",
    );
    write_hostile_crew(&crews, "crasher", "env: {SLICE0_MODE: crash}\n");
    write_hostile_crew(
        &crews,
        "fragile",
        "max_errors: 1\nenv: {SLICE0_MODE: crash}\n",
    );
    // Never answers `hello`, so it stays starting for the whole (long) startup timeout.
    let mute = crews.join("mute");
    std::fs::create_dir_all(&mute).unwrap();
    std::fs::write(
        mute.join("runtime.yaml"),
        "crew: mute\ntriggers: [never]\nrunner: {kind: command, command: [sleep, \"60\"]}\n",
    )
    .unwrap();
    let mut host = Host::start(
        root.path(),
        &crews,
        &[
            ("LIVE_CREW_STARTUP_TIMEOUT_MS", "60000"),
            ("LIVE_CREW_RESTART_BACKOFF_MS", "60000"),
            ("LIVE_CREW_RESTART_BACKOFF_MAX_MS", "60000"),
        ],
        &[],
    );
    let socket = host.socket.to_str().unwrap().to_owned();
    host.wait_health("steady ready", |r| {
        state_of(r, "steady")["state"] == "ready"
    });
    host.send(&event_now("tick", "{}"));
    // Each crew reaches its state in its own time: a crash is noticed a moment after
    // its call starts.
    let report = host.wait_health("every state", |r| {
        [
            ("stuck", "busy"),
            ("crasher", "restarting"),
            ("fragile", "disabled"),
        ]
        .iter()
        .all(|(crew, state)| state_of(r, crew)["state"] == *state)
    });
    let states: Vec<(&str, &str, bool)> = report["crews"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["crew"].as_str().unwrap(),
                c["state"].as_str().unwrap(),
                c["healthy"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            ("crasher", "restarting", false),
            ("fragile", "disabled", false),
            ("mute", "starting", false),
            ("steady", "ready", true),
            ("stuck", "busy", true),
        ],
        "{report}"
    );
    assert_eq!(report["healthy"], false);
    assert_eq!(state_of(&report, "fragile")["problem"], "crew is disabled");
    assert_eq!(state_of(&report, "crasher")["errors"], 1);
    assert!(state_of(&report, "stuck")["pid"].as_i64().is_some());
    assert!(state_of(&report, "fragile")["pid"].is_null());
    assert!(
        !state_of(&report, "steady")["sandbox_layers"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(health(&["--socket", &socket]).0, 1);
    let status = Command::new(BIN)
        .args(["status", "--socket", &socket])
        .output()
        .unwrap();
    assert_eq!(status.status.code(), Some(1));
    let table = String::from_utf8(status.stdout).unwrap();
    assert!(table.contains("UNHEALTHY"), "{table}");
    for (crew, state) in [
        ("steady", "ready"),
        ("stuck", "busy"),
        ("mute", "starting"),
        ("fragile", "disabled"),
    ] {
        let row = table
            .lines()
            .find(|l| l.starts_with(crew))
            .unwrap_or_else(|| panic!("{table}"));
        assert!(row.contains(state), "{row}");
    }
    host.signal(nix::sys::signal::Signal::SIGKILL);
    host.wait_exit(5);
    // A killed host leaves its socket file behind, but nobody answers there.
    assert!(host.socket.exists());
    assert_eq!(health(&["--socket", &socket]), (2, None));
}

#[test]
fn a_healthy_host_exits_0_until_heartbeats_are_older_than_max_age() {
    let root = tempfile::tempdir().unwrap();
    let crews = root.path().join("crews");
    write_hostile_crew(&crews, "steady", "");
    let socket = root.path().join("control.sock");
    // A stale socket from a host that was killed: replaced, not an error.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert_eq!(health(&["--socket", socket.to_str().unwrap()]).0, 2);
    let config = root.path().join("live-config.yaml");
    std::fs::write(&config, format!("control_socket: {}\n", socket.display())).unwrap();
    let mut host = Host::start(
        root.path(),
        &crews,
        &[("LIVE_CREW_HEARTBEAT_MS", "30000")],
        &[],
    );
    let report = host.wait_health("ready", all_ready);
    assert_eq!(report["healthy"], true);
    assert_eq!(report["host"]["mode"], "live");
    let mode = std::fs::metadata(&socket).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );
    // `--config` finds the socket the same way the host did.
    let config = config.to_str().unwrap();
    assert_eq!(health(&["--config", config]).0, 0);
    std::thread::sleep(Duration::from_millis(300));
    let (code, report) = health(&["--config", config, "--max-age", "100"]);
    assert_eq!(code, 1, "{report:?}");
    let problem = state_of(report.as_ref().unwrap(), "steady")["problem"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(problem.starts_with("last heartbeat"), "{problem}");
    assert_eq!(health(&["--config", config, "--max-age", "60000"]).0, 0);
    drop(host.child.stdin.take());
    assert_eq!(host.wait_exit(10), Some(0), "log:\n{}", host.log());
    assert!(!socket.exists(), "the socket file is removed on exit");
    assert_eq!(health(&["--config", config]).0, 2);
}

#[test]
fn metrics_scrape_has_every_metric_and_every_log_line_is_json() {
    let root = tempfile::tempdir().unwrap();
    let crews = root.path().join("crews");
    write_hostile_crew(&crews, "failer", "env: {SLICE0_MODE: fail}\n");
    let writer = crews.join("writer");
    std::fs::create_dir_all(&writer).unwrap();
    std::fs::write(
        writer.join("runtime.yaml"),
        "crew: writer\ntriggers: ['*']\nrunner: {kind: python, module: \"handlers:react\"}\n",
    )
    .unwrap();
    std::fs::write(
        writer.join("handlers.py"),
        "def react(events, ctx, deps):\n    ctx['seen'] = len(events)\n    return [{'kind': 'noted', 'payload': len(events)}]\n",
    )
    .unwrap();
    let output = root.path().join("actions.jsonl");
    let heartbeats = root.path().join("heartbeats.jsonl");
    let mut host = Host::start(
        root.path(),
        &crews,
        &[
            ("LIVE_CREW_LOG", "info,live_crew::lag=debug"),
            // Every call counts as slow, so the writer's too has an info record.
            ("LIVE_CREW_SLOW_CALL_MS", "0"),
        ],
        &[
            "--metrics-addr",
            "127.0.0.1:0",
            "--output",
            output.to_str().unwrap(),
            "--heartbeats",
            heartbeats.to_str().unwrap(),
        ],
    );
    host.wait_health("ready", all_ready);
    let addr = logged_addr(&host);
    let first = event_now("tick", "{}");
    host.send(&first);
    // Slice 0 closes at 550 ms; the same event again at 700 ms is late.
    std::thread::sleep(Duration::from_millis(700));
    host.send(&first);
    let deadline = Instant::now() + Duration::from_secs(10);
    while lines(&output).len() < 2 {
        assert!(Instant::now() < deadline, "log:\n{}", host.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    let (code, text) = http_get(&addr, "/metrics");
    assert_eq!(code, 200);
    for sample in [
        "slice_lag_seconds_bucket{le=\"0.0005\",crew=\"writer\"}",
        "slice_host_seconds_bucket{le=\"0.00025\",crew=\"writer\"}",
        "actions_sent_total{kind=\"noted\"} ",
        "errors_total{crew=\"failer\",reason=\"runner_error\"} 1",
        // Known label values are exported at 0 before anything happens to them.
        "errors_total{crew=\"writer\",reason=\"timeout\"} 0",
        "errors_total{crew=\"writer\",reason=\"dependency_timeout\"} 0",
        "errors_total{crew=\"\",reason=\"invalid_event\"} 0",
        "heartbeats_total ",
        "crew_up{crew=\"writer\"} 1",
        "crew_restarts_total{crew=\"failer\"} 0",
        "crew_call_seconds_count{crew=\"failer\"} ",
        "events_received_total{stream=\"s\"} 2",
        "late_events_total 1",
        "events_overflowed_total 0",
        "context_bytes{stream=\"s\"} 10",
        "context_max_bytes 4096",
    ] {
        assert!(text.contains(sample), "no {sample} in:\n{text}");
    }
    assert!(text.ends_with("# EOF\n"));
    assert_eq!(http_get(&addr, "/healthz").0, 200);
    let (code, ready) = http_get(&addr, "/readyz");
    assert_eq!(code, 200, "{ready}");
    assert_eq!(http_get(&addr, "/nope").0, 404);
    drop(host.child.stdin.take());
    assert_eq!(
        host.wait_exit(10),
        Some(1),
        "a runner_error makes the exit status 1"
    );
    let log = host.log();
    let records: Vec<serde_json::Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    for record in &records {
        assert!(
            record["ts"].is_string() && record["level"].is_string() && record["msg"].is_string(),
            "{record}"
        );
    }
    // Crews with the same sandbox: one startup record names them all and their layers.
    let startup = records
        .iter()
        .find(|r| r["msg"].as_str().unwrap().starts_with("2 crews: "))
        .unwrap_or_else(|| panic!("no startup record in:\n{log}"));
    let text = startup["msg"].as_str().unwrap();
    assert!(
        text.contains("failer (command, cold)") && text.contains("writer (python, zygote)"),
        "{text}"
    );
    assert!(
        text.contains("sandbox layers of every crew: ") && text.contains("seccomp"),
        "{text}"
    );
    let ready = records.iter().find(|r| r["msg"] == "runner ready").unwrap();
    assert!(
        ready["crew"].is_string() && ready["t_ms"].is_number(),
        "{ready}"
    );
    let late = records
        .iter()
        .find(|r| r["reason"] == "late_event")
        .unwrap();
    assert_eq!(
        (&late["stream"], &late["slice"]),
        (&serde_json::json!("s"), &serde_json::json!(0))
    );
    // The host's own heartbeats go to --heartbeats and metrics, not the info log.
    assert!(!records.iter().any(|r| r["msg"] == "__hb"));
    // One record per finished call: at info for the failed one.
    let failed = records
        .iter()
        .find(|r| r["msg"] == "call failed")
        .unwrap_or_else(|| panic!("no call record in:\n{log}"));
    assert_eq!(
        (&failed["stream"], &failed["slice"], &failed["crew"]),
        (
            &serde_json::json!("s"),
            &serde_json::json!(0),
            &serde_json::json!("failer")
        )
    );
    assert!(failed["t_ms"].as_f64().is_some(), "{failed}");
    assert_eq!(failed["reason"], "runner_error");
    let slow = records
        .iter()
        .find(|r| r["msg"] == "slow call" && r["crew"] == "writer")
        .unwrap_or_else(|| panic!("no slow call record in:\n{log}"));
    assert!(
        slow["t_ms"].as_f64().is_some() && slow["slice"] == 0,
        "{slow}"
    );
    // Per-call lag records, when their target is at debug.
    let lag = records
        .iter()
        .find(|r| r["msg"] == "slice lag" && r["crew"] == "writer")
        .unwrap_or_else(|| panic!("no slice lag record in:\n{log}"));
    assert_eq!(
        (&lag["stream"], &lag["slice"]),
        (&serde_json::json!("s"), &serde_json::json!(0))
    );
    let (lag_ms, runner_ms) = (
        lag["lag_ms"].as_f64().unwrap(),
        lag["runner_ms"].as_f64().unwrap(),
    );
    assert!(0.0 < runner_ms && runner_ms <= lag_ms, "{lag}");
    assert!(
        records
            .iter()
            .any(|r| r["msg"].as_str().unwrap().contains("2 events"))
    );
    let beats = lines(&heartbeats);
    assert!(!beats.is_empty());
    assert_eq!(beats[0]["kind"], "__hb");
    assert_eq!(beats.last().unwrap()["crews"].as_array().unwrap().len(), 2);
}

#[test]
fn a_second_signal_stops_at_once_and_leaves_no_crew_process() {
    let root = tempfile::tempdir().unwrap();
    let crews = root.path().join("crews");
    write_hostile_crew(&crews, "stuck", "timeout_ms: 60000\n");
    write_hostile_crew(&crews, "idle", "env: {IGNORE_DO: \"1\"}\n");
    let mut host = Host::start(root.path(), &crews, &[], &[]);
    let report = host.wait_health("ready", all_ready);
    let pids = runner_pids(&report);
    assert_eq!(pids.len(), 2);
    host.send(&event_now("tick", r#"{"do":"hang"}"#));
    host.wait_health("busy", |r| state_of(r, "stuck")["state"] == "busy");
    host.signal(nix::sys::signal::Signal::SIGTERM);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        host.child.try_wait().unwrap().is_none(),
        "draining waits for the stuck call"
    );
    let stopped = Instant::now();
    host.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(host.wait_exit(5), Some(130), "log:\n{}", host.log());
    assert!(stopped.elapsed() < Duration::from_secs(3));
    wait_all_gone(&pids);
    assert!(!host.socket.exists());
}

#[test]
fn the_drain_timeout_stops_a_stuck_drain() {
    let root = tempfile::tempdir().unwrap();
    let crews = root.path().join("crews");
    write_hostile_crew(&crews, "stuck", "timeout_ms: 60000\n");
    let mut host = Host::start(
        root.path(),
        &crews,
        &[("LIVE_CREW_DRAIN_TIMEOUT_MS", "500")],
        &[],
    );
    let pids = runner_pids(&host.wait_health("ready", all_ready));
    host.send(&event_now("tick", r#"{"do":"hang"}"#));
    host.wait_health("busy", |r| state_of(r, "stuck")["state"] == "busy");
    host.signal(nix::sys::signal::Signal::SIGINT);
    assert_eq!(host.wait_exit(5), Some(1), "log:\n{}", host.log());
    assert!(host.log().contains("drain_timeout_ms"));
    wait_all_gone(&pids);
}

/// The web page of the running host (`/` on the metrics address) in a real headless
/// Chromium (Debian's `chromium`, which scripts/test.sh installs): every crew is listed, the
/// timeline shows their calls, and a screenshot is taken.
#[test]
fn the_web_page_shows_every_crew_and_their_calls_in_headless_chromium() {
    let root = tempfile::tempdir().unwrap();
    let crews = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/hello_world/crews");
    let output = root.path().join("actions.jsonl");
    let mut host = Host::start(
        root.path(),
        &crews,
        &[],
        &[
            "--metrics-addr",
            "127.0.0.1:0",
            "--output",
            output.to_str().unwrap(),
        ],
    );
    host.wait_health("ready", all_ready);
    let addr = logged_addr(&host);
    host.send(&event_now("hello", r#"{"name": "Ada"}"#));
    let deadline = Instant::now() + Duration::from_secs(10);
    while lines(&output).is_empty() {
        assert!(Instant::now() < deadline, "log:\n{}", host.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    let (code, state) = http_get(&addr, "/api/state");
    assert_eq!(code, 200, "{state}");
    let state: serde_json::Value = serde_json::from_str(&state).unwrap();
    assert!(!state["calls"].as_array().unwrap().is_empty(), "{state}");
    let chromium = |args: &[&str]| chromium(&addr, args);
    let dom = chromium(&["--dump-dom"]);
    let dom = String::from_utf8_lossy(&dom.stdout);
    for crew in ["counter", "greeter", "shouter"] {
        assert!(
            dom.contains(&format!("data-crew=\"{crew}\"")),
            "{crew} missing:\n{dom}"
        );
    }
    assert!(
        dom.contains("class=\"cell ran\""),
        "no call in the timeline:\n{dom}"
    );
    assert!(dom.contains(">healthy<"), "{dom}");
    let screenshot = root.path().join("page.png");
    chromium(&[&format!("--screenshot={}", screenshot.display())]);
    let png = std::fs::read(&screenshot).expect("a screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 5000,
        "{} bytes",
        png.len()
    );
    drop(host.child.stdin.take());
    assert_eq!(host.wait_exit(10), Some(0), "{}", host.log());
}

/// Runs Debian's headless Chromium (scripts/test.sh installs it) on the page at `addr`.
fn chromium(addr: &str, args: &[&str]) -> std::process::Output {
    assert!(
        Command::new("chromium").arg("--version").output().is_ok(),
        "the web page's test runs Debian's chromium; scripts/test.sh installs it"
    );
    let mut command = Command::new("chromium");
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
        ])
        .args(["--window-size=1280,700", "--virtual-time-budget=3000"])
        .args(args)
        .arg(format!("http://{addr}/"));
    output_within(&mut command, Duration::from_secs(60))
}

/// The metrics address a host logged.
fn logged_addr(host: &Host) -> String {
    host.log()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|l| l["addr"].as_str().map(str::to_owned))
        .expect("the metrics address is logged")
}

/// A python crew `name` in `crews` whose handler body is `body` (indented, with
/// `events`, `ctx` and `deps` in scope), with extra runtime-file lines.
fn python_crew(crews: &Path, name: &str, extra: &str, body: &str) {
    let folder = crews.join(name);
    std::fs::create_dir_all(&folder).unwrap();
    let runtime = format!(
        "crew: {name}\ntriggers: ['*']\nrunner: {{kind: python, module: \"handlers:react\"}}\n{extra}"
    );
    std::fs::write(folder.join("runtime.yaml"), runtime).unwrap();
    let handler = format!("import time\n\ndef react(events, ctx, deps):\n{body}\n");
    std::fs::write(folder.join("handlers.py"), handler).unwrap();
}

/// The page's timeline tells each kind of call apart, and gives each stream's slice lag:
/// a crew that keeps up ran, one slower than a slice is late, one that raises failed, and
/// one whose needs never come is skipped; `/api/state` says the same.
#[test]
fn the_web_page_shows_late_failed_and_skipped_calls_and_the_slice_lag() {
    let root = tempfile::tempdir().unwrap();
    let crews = root.path().join("crews");
    let answer = "    return [{'kind': 'ok', 'payload': {}}]";
    python_crew(&crews, "steady", "", answer);
    python_crew(
        &crews,
        "slow",
        "",
        &format!("    time.sleep(0.3)\n{answer}"),
    );
    python_crew(
        &crews,
        "broken",
        "",
        "    raise RuntimeError('broken on purpose')",
    );
    python_crew(
        &crews,
        "waiter",
        "needs: [{type: event, event: never, offset: 0}]\n",
        answer,
    );
    let mut host = Host::start(
        root.path(),
        &crews,
        &[("LIVE_CREW_MAX_WAIT_SLICES", "1")],
        &["--metrics-addr", "127.0.0.1:0", "--slice-ms", "100"],
    );
    host.wait_health("ready", all_ready);
    let addr = logged_addr(&host);
    host.send(&event_now("tick", "{}"));
    let states = || -> BTreeMap<String, String> {
        let (_, state) = http_get(&addr, "/api/state");
        let state: serde_json::Value = serde_json::from_str(&state).unwrap();
        (state["calls"].as_array().unwrap().iter())
            .map(|call| {
                let crew = call["crew"].as_str().unwrap().to_owned();
                (crew, call["state"].as_str().unwrap().to_owned())
            })
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while states().len() < 4 {
        assert!(Instant::now() < deadline, "{:?}\n{}", states(), host.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let expected = [
        ("broken", "failed"),
        ("slow", "late"),
        ("steady", "ran"),
        ("waiter", "skipped"),
    ];
    let expected: BTreeMap<String, String> = (expected.iter())
        .map(|(crew, state)| (crew.to_string(), state.to_string()))
        .collect();
    assert_eq!(states(), expected);
    let dom = chromium(&addr, &["--dump-dom"]);
    let dom = String::from_utf8_lossy(&dom.stdout);
    for state in ["ran", "late", "failed", "skipped"] {
        assert!(
            dom.contains(&format!("class=\"cell {state}\"")),
            "no {state} call in the timeline:\n{dom}"
        );
    }
    let lag = (dom.split("data-lag=").nth(1))
        .and_then(|rest| rest.split('<').next())
        .unwrap_or_else(|| panic!("no slice lag line:\n{dom}"));
    assert!(
        lag.contains("slice lag: last ") && lag.contains(" ms"),
        "{lag}"
    );
    drop(host.child.stdin.take());
    host.wait_exit(10);
}

/// `live-crew monitor --socket S` under a pseudo-terminal: its output so far, read on a
/// thread, and the process.
struct Monitor {
    child: Child,
    master: std::fs::File,
    screen: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl Monitor {
    fn start(socket: &Path) -> Monitor {
        let size = nix::pty::Winsize {
            ws_row: 30,
            ws_col: 110,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(Some(&size), None).unwrap();
        let slave = std::fs::File::from(pty.slave);
        let child = Command::new(BIN)
            .args(["monitor", "--socket"])
            .arg(socket)
            .env("TERM", "xterm-256color")
            .stdin(slave.try_clone().unwrap())
            .stdout(slave.try_clone().unwrap())
            .stderr(slave)
            .spawn()
            .unwrap();
        let master = std::fs::File::from(pty.master);
        let screen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (mut reader, seen) = (master.try_clone().unwrap(), screen.clone());
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(n @ 1..) = reader.read(&mut buffer) {
                seen.lock().unwrap().extend_from_slice(&buffer[..n]);
            }
        });
        Monitor {
            child,
            master,
            screen,
        }
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.screen.lock().unwrap()).into_owned()
    }

    fn wait_for(&self, texts: &[&str]) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !texts.iter().all(|text| self.screen().contains(text)) {
            assert!(
                Instant::now() < deadline,
                "never showed {texts:?}:\n{}",
                self.screen()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_exit(&mut self) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "monitor did not exit:\n{}",
                self.screen()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `monitor` shows every crew of the running host and the timeline of its last slices
/// with their lag, refreshes, leaves on `q` with the terminal restored, and stops with a
/// word when the host goes away.
#[test]
fn monitor_shows_the_running_host_and_leaves_on_q_or_when_the_host_goes() {
    let root = tempfile::tempdir().unwrap();
    let crews = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/hello_world/crews");
    let mut host = Host::start(root.path(), &crews, &[], &[]);
    host.wait_health("ready", all_ready);
    let mut monitor = Monitor::start(&host.socket);
    monitor.wait_for(&[
        "counter",
        "greeter",
        "shouter",
        "ready",
        "healthy",
        "no calls yet",
        "q to quit",
    ]);
    host.send(&event_now("hello", r#"{"name": "Ada"}"#));
    // The calls reach the timeline at a later refresh, with the stream's lag.
    monitor.wait_for(&["slice lag: last "]);
    monitor.master.write_all(b"q").unwrap();
    assert_eq!(monitor.wait_exit(), Some(0), "{}", monitor.screen());
    // Left the alternate screen it drew on.
    assert!(
        monitor.screen().contains("\x1b[?1049l"),
        "{:?}",
        monitor.screen()
    );
    let mut watching = Monitor::start(&host.socket);
    watching.wait_for(&["counter"]);
    drop(host.child.stdin.take());
    assert_eq!(host.wait_exit(10), Some(0));
    assert_eq!(watching.wait_exit(), Some(1), "{}", watching.screen());
    assert!(
        watching.screen().contains("went away"),
        "{}",
        watching.screen()
    );
}

/// `run --watch`: an edited handler answers the next slices with no failed call and the
/// context kept; an invalid edit is reported with file and field, and the version that
/// runs keeps answering.
#[test]
fn a_crew_edited_while_the_host_runs_takes_its_new_version_with_the_context_kept() {
    let root = tempfile::tempdir().unwrap();
    let crews = root.path().join("crews");
    let crew = crews.join("counter");
    std::fs::create_dir_all(&crew).unwrap();
    let runtime = "crew: counter\ntriggers: ['*']\nrunner: {kind: python, module: \"handlers:react\"}\n\
                   context: {read: [n], write: [n]}\n";
    std::fs::write(crew.join("runtime.yaml"), runtime).unwrap();
    let handler = |version: u32| {
        format!(
            "def react(events, ctx, deps):\n    ctx['n'] = ctx.get('n', 0) + len(events)\n    \
             return [{{'kind': 'seen', 'payload': {{'v': {version}, 'n': ctx['n']}}}}]\n"
        )
    };
    // Written whole and renamed, as editors save.
    let save = |name: &str, text: &str| {
        let temporary = crew.join(format!(".{name}.tmp"));
        std::fs::write(&temporary, text).unwrap();
        std::fs::rename(&temporary, crew.join(name)).unwrap();
    };
    save("handlers.py", &handler(1));
    let output = root.path().join("actions.jsonl");
    let errors = root.path().join("errors.jsonl");
    let mut host = Host::start(
        root.path(),
        &crews,
        &[],
        &[
            "--watch",
            "--output",
            output.to_str().unwrap(),
            "--errors",
            errors.to_str().unwrap(),
        ],
    );
    host.wait_health("ready", all_ready);
    let answered = |host: &mut Host, count: usize| {
        host.send(&event_now("tick", "{}"));
        let deadline = Instant::now() + Duration::from_secs(15);
        while lines(&output).len() < count {
            assert!(Instant::now() < deadline, "log:\n{}", host.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        lines(&output)[count - 1]["payload"].clone()
    };
    assert_eq!(answered(&mut host, 1), serde_json::json!({"v": 1, "n": 1}));
    let version = |host: &Host| {
        let report = host.wait_health("ready", all_ready);
        let crew = state_of(&report, "counter");
        assert!(crew["loaded_at"].is_string(), "{crew}");
        crew["version"].as_str().unwrap().to_owned()
    };
    let before = version(&host);
    save("handlers.py", &handler(2));
    host.wait_log("takes its new version");
    assert_ne!(version(&host), before, "health shows the new version");
    assert_eq!(
        answered(&mut host, 2),
        serde_json::json!({"v": 2, "n": 2}),
        "the new version, on the context the old one left"
    );
    save("runtime.yaml", &format!("{runtime}trigers: [x]\n"));
    host.wait_log("did you mean `triggers`");
    assert!(
        host.log().contains("the running versions stay"),
        "{}",
        host.log()
    );
    assert_eq!(answered(&mut host, 3), serde_json::json!({"v": 2, "n": 3}));
    drop(host.child.stdin.take());
    assert_eq!(host.wait_exit(10), Some(0), "{}", host.log());
    assert!(
        lines(&errors).is_empty(),
        "no call failed: {:?}",
        lines(&errors)
    );
}

/// `run --watch`: a crew folder added during a live run starts answering, a crew whose
/// triggers change is scheduled by the new ones with its context kept, and a removed
/// crew stops after its last call and leaves `health`; no call fails on the way.
#[test]
fn crews_added_rescheduled_and_removed_while_the_host_runs() {
    let root = tempfile::tempdir().unwrap();
    let crews = root.path().join("crews");
    let write_crew = |name: &str, runtime: &str, handler: &str| {
        // Made beside the folder and renamed in, as a deploy would.
        let staging = root.path().join(format!(".{name}"));
        std::fs::create_dir_all(&staging).unwrap();
        std::fs::write(staging.join("runtime.yaml"), runtime).unwrap();
        std::fs::write(staging.join("handlers.py"), handler).unwrap();
        let _ = std::fs::remove_dir_all(crews.join(name));
        std::fs::rename(&staging, crews.join(name)).unwrap();
    };
    let counter = |triggers: &str| {
        format!(
            "crew: counter\ntriggers: {triggers}\nrunner: {{kind: python, module: \"handlers:react\"}}\n\
             context: {{read: [n], write: [n]}}\n"
        )
    };
    let counting = "def react(events, ctx, deps):\n    ctx['n'] = ctx.get('n', 0) + len(events)\n    \
                    return [{'kind': 'counted', 'payload': {'n': ctx['n']}}]\n";
    std::fs::create_dir_all(&crews).unwrap();
    write_crew("counter", &counter("['*']"), counting);
    let output = root.path().join("actions.jsonl");
    let errors = root.path().join("errors.jsonl");
    let mut host = Host::start(
        root.path(),
        &crews,
        &[],
        &[
            "--watch",
            "--metrics-addr",
            "127.0.0.1:0",
            "--output",
            output.to_str().unwrap(),
            "--errors",
            errors.to_str().unwrap(),
        ],
    );
    host.wait_health("ready", all_ready);
    let addr = logged_addr(&host);
    let reloads = |crew: &str, result: &str| -> Option<u64> {
        let (_, text) = http_get(&addr, "/metrics");
        let sample = format!("crew_reloads_total{{crew=\"{crew}\",result=\"{result}\"}} ");
        let line = text.lines().find(|line| line.starts_with(&sample))?;
        line[sample.len()..].parse().ok()
    };
    assert_eq!(
        reloads("counter", "applied"),
        Some(0),
        "exported at 0 from the start"
    );
    assert_eq!(reloads("", "invalid"), Some(0));
    // Sends an event and returns `crew:kind` of the actions it brought, once `count`
    // actions are out in all.
    let answered = |host: &mut Host, kind: &str, count: usize| -> Vec<String> {
        let before = lines(&output).len();
        host.send(&event_now(kind, "{}"));
        let deadline = Instant::now() + Duration::from_secs(15);
        while lines(&output).len() < before + count {
            assert!(Instant::now() < deadline, "log:\n{}", host.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        // Another slice, so nothing else was on its way.
        std::thread::sleep(Duration::from_millis(300));
        let all = lines(&output);
        assert_eq!(all.len(), before + count, "{all:?}");
        (all[before..].iter())
            .map(|a| format!("{}:{}", a["crew"].as_str().unwrap(), a["payload"]))
            .collect()
    };
    assert_eq!(answered(&mut host, "tick", 1), [r#"counter:{"n":1}"#]);

    write_crew(
        "echo",
        "crew: echo\ntriggers: [tick]\nrunner: {kind: python, module: \"handlers:react\"}\n",
        "def react(events, ctx, deps):\n    return [{'kind': 'echo', 'payload': {'echoed': len(events)}}]\n",
    );
    host.wait_log("crew 'echo' starts");
    host.wait_health("echo ready", |report| {
        all_ready(report) && report["crews"].as_array().unwrap().len() == 2
    });
    let mut both = answered(&mut host, "tick", 2);
    both.sort();
    assert_eq!(both, [r#"counter:{"n":2}"#, r#"echo:{"echoed":1}"#]);

    write_crew("counter", &counter("[goal]"), counting);
    host.wait_log("crew 'counter' takes its new version");
    host.wait_health("ready", all_ready);
    assert_eq!(
        answered(&mut host, "tick", 1),
        [r#"echo:{"echoed":1}"#],
        "counter no longer takes ticks"
    );
    assert_eq!(
        answered(&mut host, "goal", 1),
        [r#"counter:{"n":3}"#],
        "counter takes goals, on the context it had"
    );

    std::fs::remove_dir_all(crews.join("echo")).unwrap();
    host.wait_log("crew 'echo' ran its last call and stops");
    host.wait_health("echo gone", |report| {
        report["crews"].as_array().unwrap().len() == 1
    });
    assert_eq!(answered(&mut host, "goal", 1), [r#"counter:{"n":4}"#]);
    assert_eq!(reloads("echo", "added"), Some(1));
    assert_eq!(reloads("echo", "removed"), Some(1));
    assert_eq!(reloads("echo", "failed"), Some(0));
    assert_eq!(reloads("counter", "applied"), Some(1));
    host.send(&event_now("tick", "{}"));
    drop(host.child.stdin.take());
    assert_eq!(host.wait_exit(10), Some(0), "{}", host.log());
    assert_eq!(lines(&output).len(), 6, "the last tick has no crew");
    assert!(
        lines(&errors).is_empty(),
        "no call failed: {:?}",
        lines(&errors)
    );
}
