//! The real `live-crew` binary against misbehaving crews and a misbehaving world: the
//! host is killed, stopped, fed secrets. Crews are the hostile fixture runner, so each
//! test can choose what the crew does per event (`{"do": MODE}`).

mod common;

use common::{Actions, crews, event, lines, live_crew, run_batch, wait_all_gone};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Starts the host reading events from its stdin; returns it with stdin open.
fn start_on_stdin(crews: &Path, output: &Path, errors: &Path) -> Child {
    live_crew()
        .args(["run", "--events", "-", "--crews"])
        .arg(crews)
        .arg("--output")
        .arg(output)
        .arg("--errors")
        .arg(errors)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Reads the host's log until `times` lines contain `needle`.
fn wait_for_log(
    host: &mut Child,
    needle: &str,
    times: usize,
) -> BufReader<std::process::ChildStderr> {
    let mut log = BufReader::new(host.stderr.take().unwrap());
    let mut line = String::new();
    let mut seen = 0;
    while seen < times {
        line.clear();
        assert!(
            log.read_line(&mut line).unwrap() > 0,
            "host log ended before '{needle}'"
        );
        seen += usize::from(line.contains(needle));
    }
    log
}

fn drain(log: BufReader<std::process::ChildStderr>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || std::io::read_to_string(log).unwrap_or_default())
}

/// Processes whose parent is `pid`.
fn children_of(pid: u32) -> Vec<i32> {
    let output = Command::new("pgrep")
        .args(["-P", &pid.to_string()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| line.parse().unwrap())
        .collect()
}

#[test]
fn host_killed_with_sigkill_leaves_no_crew_process() {
    let root = tempfile::tempdir().unwrap();
    let crews = crews(root.path(), &[("busy", ""), ("idle", "")]);
    let (output, errors) = (root.path().join("out"), root.path().join("err"));
    let mut host = start_on_stdin(&crews, &output, &errors);
    let log = drain(wait_for_log(&mut host, "runner ready", 2));
    let stdin = host.stdin.as_mut().unwrap();
    // Slice 0 hangs the busy crew mid-call; slice 1 closes slice 0.
    stdin
        .write_all(event(0, r#"{"do":"hang"}"#).as_bytes())
        .unwrap();
    stdin.write_all(event(600, "{}").as_bytes()).unwrap();
    stdin.flush().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let crew_pids = children_of(host.id());
    assert_eq!(crew_pids.len(), 2, "both crews run as children of the host");
    host.kill().unwrap();
    host.wait().unwrap();
    log.join().unwrap();
    wait_all_gone(&crew_pids);
}

#[test]
fn sigterm_finishes_open_slices_flushes_outputs_and_stops_every_crew() {
    let root = tempfile::tempdir().unwrap();
    let crews = crews(root.path(), &[("echo", ""), ("other", "")]);
    let (output, errors) = (root.path().join("out"), root.path().join("err"));
    let mut host = start_on_stdin(&crews, &output, &errors);
    let log = drain(wait_for_log(&mut host, "runner ready", 2));
    let stdin = host.stdin.as_mut().unwrap();
    for (ms, n) in [(0, 1), (100, 2), (700, 3)] {
        stdin
            .write_all(event(ms, &format!(r#"{{"n":{n}}}"#)).as_bytes())
            .unwrap();
    }
    stdin.flush().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let crew_pids = children_of(host.id());
    assert_eq!(crew_pids.len(), 2);
    // stdin stays open: the host must stop on the signal, not on the end of input.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(host.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = host.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "host did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    let log = log.join().unwrap();
    assert!(status.success(), "exit {status}; log:\n{log}");
    // Slice 1 was still open when the signal came; it ran before the host exited.
    let actions = lines(&output);
    let seen: Vec<(String, i64)> = actions
        .iter()
        .map(|a| {
            (
                a["crew"].as_str().unwrap().to_owned(),
                a["slice"].as_i64().unwrap(),
            )
        })
        .collect();
    let want: Vec<(String, i64)> = [
        ("echo", 0),
        ("echo", 0),
        ("other", 0),
        ("other", 0),
        ("echo", 1),
        ("other", 1),
    ]
    .iter()
    .map(|(c, s)| (c.to_string(), *s))
    .collect();
    assert_eq!(seen, want, "log:\n{log}");
    assert!(lines(&errors).is_empty());
    wait_all_gone(&crew_pids);
}

#[test]
fn host_secrets_never_reach_a_crew() {
    let root = tempfile::tempdir().unwrap();
    let crews = crews(
        root.path(),
        &[(
            "nosy",
            "env: {GREETING: hi}\nenv_passthrough: [SHARED_TOKEN]\n",
        )],
    );
    let events = root.path().join("events.jsonl");
    std::fs::write(&events, event(0, r#"{"do":"environment"}"#)).unwrap();
    let output = live_crew()
        .env("LIVE_CREW_TEST_SECRET", "hunter2")
        .env("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI")
        .env("SHARED_TOKEN", "passed-on-purpose")
        .args(["run", "--crews"])
        .arg(&crews)
        .arg("--events")
        .arg(&events)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let action: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let env = action["payload"].as_object().unwrap();
    let text = serde_json::to_string(env).unwrap();
    assert!(
        !text.contains("hunter2") && !text.contains("wJalrXUtnFEMI"),
        "{text}"
    );
    assert!(!env.contains_key("LIVE_CREW_HEARTBEAT_MS"), "{text}");
    assert_eq!(env["GREETING"], "hi");
    assert_eq!(env["SHARED_TOKEN"], "passed-on-purpose");
    assert_eq!(env["HOME"], env["TMPDIR"]);
    assert!(
        env["LIVE_CREW_CREW_DIR"]
            .as_str()
            .unwrap()
            .ends_with("crews/nosy")
    );
}

#[test]
fn a_crashing_crew_is_reported_while_the_others_finish_the_run() {
    let root = tempfile::tempdir().unwrap();
    let crews = crews(
        root.path(),
        &[
            ("fragile", "max_errors: 2\n"),
            ("steady", "env: {IGNORE_DO: \"1\"}\n"),
        ],
    );
    let events = root.path().join("events.jsonl");
    let text: String = (0..6)
        .map(|i| {
            event(
                i * 500,
                if i % 2 == 0 {
                    r#"{"do":"crash"}"#
                } else {
                    r#"{"do":"echo"}"#
                },
            )
        })
        .collect();
    std::fs::write(&events, text).unwrap();
    let errors = root.path().join("errors.jsonl");
    let output = run_batch(&crews, &events, &errors);
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let actions = Actions::parse(&output.stdout);
    // The steady crew answered every slice; the fragile one crashed on even slices and
    // was restarted in time for each odd one (a success resets its failure count).
    assert_eq!(actions.slices_of("steady"), [0, 1, 2, 3, 4, 5]);
    assert_eq!(actions.slices_of("fragile"), [1, 3, 5]);
    let reasons: Vec<(i64, String)> = lines(&errors)
        .iter()
        .map(|e| {
            assert_eq!(e["crew"], "fragile");
            assert_eq!(e["stream_id"], "s");
            assert!(e["message"].as_str().unwrap().contains("fragile"), "{e}");
            (
                e["slice"].as_i64().unwrap(),
                e["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let crash = |slice| (slice, "crash".to_owned());
    assert_eq!(reasons, [crash(0), crash(2), crash(4)]);
}

/// Every kind of misbehaving crew at once, through the real binary: each fails its
/// slice-0 call with the right reason, is restarted, and answers slices 1 and 2; the
/// healthy crew beside them answers every slice; the run ends with exit status 1.
#[test]
fn each_misbehaving_crew_fails_alone_with_its_reason() {
    let cases = [
        ("crasher", "crash", "crash"),
        ("hanger", "hang", "timeout"),
        ("silent", "stop_heartbeats", "heartbeat"),
        ("garbler", "garbage", "protocol"),
        ("longliner", "long_line", "protocol"),
        ("liar", "bad_action", "invalid_action"),
        ("confused", "wrong_id", "protocol"),
        ("hog", "allocate", "runner_error"),
    ];
    let root = tempfile::tempdir().unwrap();
    let mut specs: Vec<(String, String)> = cases
        .iter()
        .map(|(crew, mode, _)| {
            let extra = format!(
                "timeout_ms: 1500\nsandbox: {{memory_mb: 256, processes: 32}}\nenv: {{SLICE0_MODE: {mode}}}\n"
            );
            (crew.to_string(), extra)
        })
        .collect();
    specs.push(("chatty".into(), "env: {SLICE0_MODE: stderr_flood}\n".into()));
    specs.push((
        "bomber".into(),
        "sandbox: {processes: 32}\nenv: {SLICE0_MODE: fork_bomb}\n".into(),
    ));
    specs.push(("healthy".into(), String::new()));
    let refs: Vec<(&str, &str)> = specs
        .iter()
        .map(|(c, e)| (c.as_str(), e.as_str()))
        .collect();
    let crews = crews(root.path(), &refs);
    let events = root.path().join("events.jsonl");
    std::fs::write(
        &events,
        [event(0, "1"), event(500, "2"), event(1000, "3")].concat(),
    )
    .unwrap();
    let errors = root.path().join("errors.jsonl");
    let started = Instant::now();
    let output = run_batch(&crews, &events, &errors);
    let log = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{log}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    let actions = Actions::parse(&output.stdout);
    for (crew, _, _) in cases {
        assert_eq!(
            actions.slices_of(crew),
            [1, 2],
            "{crew} recovers after its failure"
        );
    }
    // These misbehave without failing a call: the stderr flood is drained and the fork
    // bomb is contained. (The grandchild that outlives its runner is in
    // tests/supervisor.rs, which can watch the grandchild's pid.)
    assert_eq!(actions.slices_of("chatty"), [0, 1, 2]);
    assert_eq!(actions.slices_of("bomber"), [0, 1, 2]);
    assert_eq!(actions.slices_of("healthy"), [0, 1, 2]);
    let forked = actions
        .0
        .iter()
        .find(|a| a["crew"] == "bomber" && a["slice"] == 0)
        .map(|a| a["payload"].as_i64().unwrap())
        .unwrap();
    assert!(forked < 32, "{forked} forks got past processes: 32");
    let mut reported: Vec<(String, String)> = lines(&errors)
        .iter()
        .map(|e| {
            assert_eq!(e["slice"], 0, "{e}");
            (
                e["crew"].as_str().unwrap().to_owned(),
                e["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    reported.sort();
    let mut expected: Vec<(String, String)> = cases
        .iter()
        .map(|(crew, _, reason)| (crew.to_string(), reason.to_string()))
        .collect();
    expected.sort();
    assert_eq!(reported, expected, "{log}");
}

/// A crew whose context patches the host keeps rejecting is disabled after `max_errors`
/// of them, as if its calls had failed (SPEC §5), while the other crew keeps answering.
#[test]
fn rejected_context_patches_count_toward_max_errors() {
    let root = tempfile::tempdir().unwrap();
    let crews = crews(root.path(), &[("steady", "")]);
    let writer = crews.join("writer");
    std::fs::create_dir_all(&writer).unwrap();
    std::fs::write(
        writer.join("runtime.yaml"),
        "crew: writer\ntriggers: ['*']\nmax_errors: 2\ncontext: {read: [score], write: [score]}\n\
         runner: {kind: python, module: \"handlers:react\"}\n",
    )
    .unwrap();
    std::fs::write(
        writer.join("handlers.py"),
        "def react(events, ctx, deps):\n    ctx['secret'] = 1\n    return []\n",
    )
    .unwrap();
    let events = root.path().join("events.jsonl");
    let feed: String = (0..5).map(|n| event(n * 600, "{}")).collect();
    std::fs::write(&events, feed).unwrap();
    let errors = root.path().join("errors.jsonl");
    let output = run_batch(&crews, &events, &errors);
    let log = String::from_utf8_lossy(&output.stderr);
    let reasons: Vec<(i64, String)> = lines(&errors)
        .iter()
        .filter(|record| record["crew"] == "writer")
        .map(|r| {
            (
                r["slice"].as_i64().unwrap(),
                r["reason"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        reasons,
        [
            (0, "ctx_acl".into()),
            (1, "ctx_acl".into()),
            (2, "disabled".into()),
            (3, "disabled".into()),
            (4, "disabled".into()),
        ],
        "{log}"
    );
    assert!(
        log.contains("crew disabled after 2 consecutive failures"),
        "{log}"
    );
    assert_eq!(
        Actions::parse(&output.stdout).slices_of("steady"),
        [0, 1, 2, 3, 4]
    );
}

/// `command: [<absolute interpreter>, "{crew_dir}/runner.py"]` runs from the private temp
/// folder; one whose script is missing fails its start quoting the runner's stderr, and
/// says so once however often it is restarted.
#[test]
fn command_crews_take_absolute_programs_and_crew_dir_and_quote_a_failed_start() {
    let root = tempfile::tempdir().unwrap();
    let crews = root.path().join("crews");
    let scaffold = live_crew()
        .args(["new", "crew", "talker", "--kind", "command", "--crews"])
        .arg(&crews)
        .output()
        .unwrap();
    assert!(scaffold.status.success(), "{scaffold:?}");
    let python = std::env::var("LIVE_CREW_PYTHON").unwrap_or_else(|_| "/usr/bin/python3".into());
    let python = std::fs::canonicalize(&python).unwrap();
    let runtime = crews.join("talker/talker.runtime.yaml");
    let text = std::fs::read_to_string(&runtime).unwrap().replace(
        "command: [\"./runner.py\"]",
        &format!(
            "command: [\"{}\", \"{{crew_dir}}/runner.py\"]",
            python.display()
        ),
    );
    std::fs::write(&runtime, text).unwrap();
    let missing = crews.join("broken");
    std::fs::create_dir_all(&missing).unwrap();
    std::fs::write(
        missing.join("runtime.yaml"),
        format!(
            "crew: broken\ntriggers: ['*']\nmax_errors: 3\n\
             runner: {{kind: command, command: [\"{}\", \"{{crew_dir}}/missing.py\"]}}\n",
            python.display()
        ),
    )
    .unwrap();
    let events = root.path().join("events.jsonl");
    std::fs::write(
        &events,
        event(0, "{}") + &event(600, "{}") + &event(1200, "{}"),
    )
    .unwrap();
    let errors = root.path().join("errors.jsonl");
    let out = run_batch(&crews, &events, &errors);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let actions = Actions::parse(&out.stdout);
    assert!(!actions.slices_of("talker").is_empty(), "{stderr}");
    let quoted: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("its last stderr lines") && line.contains("level"))
        .filter(|line| !line.contains("\"reason\":\"disabled\""))
        .collect();
    assert_eq!(quoted.len(), 1, "quoted once:\n{stderr}");
    assert!(quoted[0].contains("can't open file"), "{}", quoted[0]);
    assert!(quoted[0].contains("missing.py"), "{}", quoted[0]);
    assert!(stderr.contains("failed again as before"), "{stderr}");
}

/// A JSON array file as `json.dumps(events, indent=2)` writes it: payloads over several
/// lines reach the crew whole, and the protocol's one-line messages stay one line.
#[test]
fn pretty_printed_json_array_events_reach_a_python_crew() {
    let root = tempfile::tempdir().unwrap();
    let crews = root.path().join("crews");
    let greeter = crews.join("greeter");
    std::fs::create_dir_all(&greeter).unwrap();
    std::fs::write(
        greeter.join("runtime.yaml"),
        "crew: greeter\ntriggers: ['*']\nrunner: {kind: python, module: \"handlers:react\"}\n",
    )
    .unwrap();
    std::fs::write(
        greeter.join("handlers.py"),
        "def react(events, ctx, deps):\n    \
         return [{'kind': 'greeting', 'payload': 'Welcome ' + e['payload']['name']} for e in events]\n",
    )
    .unwrap();
    let events = root.path().join("events.json");
    std::fs::write(
        &events,
        "[\n  {\n    \"ts\": \"2025-01-01T00:00:00Z\",\n    \"kind\": \"user_signup\",\n    \
         \"stream_id\": \"s\",\n    \"payload\": {\n      \"name\": \"Alice\"\n    }\n  },\n  \
         {\n    \"ts\": \"2025-01-01T00:00:01Z\",\n    \"kind\": \"user_signup\",\n    \
         \"stream_id\": \"s\",\n    \"payload\": {\n      \"name\": \"Bob\"\n    }\n  }\n]\n",
    )
    .unwrap();
    let errors = root.path().join("errors.jsonl");
    let out = run_batch(&crews, &events, &errors);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let payloads: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap()["payload"].to_string())
        .collect();
    assert_eq!(payloads, ["\"Welcome Alice\"", "\"Welcome Bob\""]);
    assert!(lines(&errors).is_empty());
}
