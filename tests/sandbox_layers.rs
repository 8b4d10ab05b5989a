//! Each kernel sandbox layer through the real binary: a hostile crew tries what the
//! layer forbids, next to a healthy crew whose every action must still arrive. Then the
//! same attempts with the layers switched off by configuration (they succeed, which
//! shows the fallback is real), and `sandbox.require` refusing to start without them.
//!
//! Needs root on a kernel with the layers (as CI has); `has_all_layers` says why not.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};

use common::{Actions, crews, event, lines, live_crew, process_gone};

/// The hostile crews and what each tries in slice 0; `TARGET` is filled in per test.
/// `socket` is a Unix socket the test listens on.
fn attackers(port: u16, socket: &Path, outside: &Path, secret: &Path) -> Vec<(String, String)> {
    let crew = |mode: &str, target: String, sandbox: &str| {
        format!(
            "timeout_ms: 3000\nsandbox: {{{sandbox}}}\nenv: {{SLICE0_MODE: {mode}, TARGET: '{target}'}}\n"
        )
    };
    vec![
        ("offline".into(), crew("connect", port.to_string(), "")),
        (
            "online".into(),
            crew("connect", port.to_string(), "network: true"),
        ),
        (
            "unixer".into(),
            crew("unix_connect", socket.display().to_string(), ""),
        ),
        (
            "writer".into(),
            crew("write_outside", outside.display().to_string(), ""),
        ),
        (
            "reader".into(),
            crew("read_file", secret.display().to_string(), ""),
        ),
        ("tracer".into(), crew("ptrace", String::new(), "")),
        ("escaper".into(), crew("double_fork", String::new(), "")),
        ("healthy".into(), String::new()),
    ]
}

/// Runs the host over three slices of events with the given crews and global config.
fn run(root: &Path, specs: &[(String, String)], config: &str) -> (std::process::Output, Actions) {
    let refs: Vec<(&str, &str)> = specs
        .iter()
        .map(|(crew, extra)| (crew.as_str(), extra.as_str()))
        .collect();
    let crews = crews(root, &refs);
    let events = root.join("events.jsonl");
    std::fs::write(
        &events,
        [event(0, "1"), event(500, "2"), event(1000, "3")].concat(),
    )
    .unwrap();
    let config_file = root.join("live-config.yaml");
    std::fs::write(&config_file, config).unwrap();
    let output = live_crew()
        .arg("run")
        .arg("--config")
        .arg(&config_file)
        .arg("--crews")
        .arg(&crews)
        .arg("--events")
        .arg(&events)
        .arg("--errors")
        .arg(root.join("errors.jsonl"))
        .output()
        .unwrap();
    let actions = Actions::parse(&output.stdout);
    (output, actions)
}

/// What `crew` answered in slice 0.
fn slice0(actions: &Actions, crew: &str) -> serde_json::Value {
    actions
        .0
        .iter()
        .find(|a| a["crew"] == crew && a["slice"] == 0)
        .map(|a| a["payload"].clone())
        .unwrap_or_else(|| panic!("no slice-0 action from {crew}: {:?}", actions.0))
}

/// A Unix socket listener at `path` that accepts in the background.
fn unix_listener(path: &Path) -> &Path {
    let listener = std::os::unix::net::UnixListener::bind(path).unwrap();
    std::thread::spawn(move || for _connection in listener.incoming() {});
    path
}

/// A listener on 127.0.0.1 that accepts in the background.
fn listener() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || for _connection in listener.incoming() {});
    port
}

/// Every attacker crew plus one that allocates past its memory limit, with their targets
/// under `root`; also the path of the file the writer tries to create outside its
/// temp folder.
fn every_attack(root: &Path) -> (Vec<(String, String)>, PathBuf) {
    let outside = root.join("outside.txt");
    let secret = root.join("secret.txt");
    std::fs::write(&secret, "the host's secret").unwrap();
    let socket = root.join("host.sock");
    let mut specs = attackers(listener(), unix_listener(&socket), &outside, &secret);
    specs.push((
        "hog".into(),
        "sandbox: {memory_mb: 256}\nenv: {SLICE0_MODE: oom}\n".into(),
    ));
    (specs, outside)
}

#[test]
fn each_layer_stops_its_attack_while_the_other_crews_keep_going() {
    let root = tempfile::tempdir().unwrap();
    let (specs, outside) = every_attack(root.path());
    let (output, actions) = run(root.path(), &specs, "");
    let log = String::from_utf8_lossy(&output.stderr);

    assert_eq!(slice0(&actions, "offline"), "ENETUNREACH", "{log}");
    assert_eq!(slice0(&actions, "online"), "ok", "{log}");
    assert_eq!(slice0(&actions, "unixer"), "EPERM", "{log}");
    assert_eq!(slice0(&actions, "writer"), "EACCES", "{log}");
    assert!(!outside.exists(), "the crew wrote outside its temp folder");
    assert_eq!(slice0(&actions, "reader"), "EACCES", "{log}");
    assert_eq!(slice0(&actions, "tracer"), "EPERM", "{log}");
    let escapee = slice0(&actions, "escaper").as_i64().unwrap() as i32;
    assert!(
        process_gone(escapee),
        "grandchild {escapee} outlived its crew"
    );
    // The memory hog is OOM-killed, reported as such, and restarted.
    let errors = lines(&root.path().join("errors.jsonl"));
    let reported: Vec<(&str, &str)> = errors
        .iter()
        .map(|e| (e["crew"].as_str().unwrap(), e["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(reported, [("hog", "oom")], "{log}");
    assert_eq!(actions.slices_of("hog"), [1, 2]);
    // Nothing else was lost: every crew answered every slice.
    for (crew, _) in specs.iter().filter(|(crew, _)| crew != "hog") {
        assert_eq!(actions.slices_of(crew), [0, 1, 2], "{crew}: {log}");
    }
    for crew in [
        "offline", "writer", "reader", "tracer", "escaper", "healthy",
    ] {
        assert!(
            log.lines().any(|line| line.contains("sandbox layers:")
                && line.contains(&format!("\"crew\":\"{crew}\""))
                && line.contains("landlock")
                && line.contains("seccomp")
                && line.contains("netns")
                && line.contains("pid_namespace")),
            "{crew}'s layers are not logged in full: {log}"
        );
    }
    assert!(
        log.lines().any(|line| line.contains("\"crew\":\"online\"")
            && line.contains("sandbox layers:")
            && !line.contains("netns")),
        "{log}"
    );
}

#[test]
fn switched_off_layers_fall_back_with_a_warning() {
    let root = tempfile::tempdir().unwrap();
    let (specs, outside) = every_attack(root.path());
    let off = [
        "netns",
        "pid_namespace",
        "landlock",
        "seccomp",
        "memory_cgroup",
    ];
    let config = format!("sandbox:\n  disable: [{}]\n", off.join(", "));
    let (output, actions) = run(root.path(), &specs, &config);
    let log = String::from_utf8_lossy(&output.stderr);
    for layer in off {
        assert!(
            log.lines()
                .any(|line| line.contains("switched off by configuration")
                    && line.contains(&format!("\"layer\":\"{layer}\""))),
            "no warning for {layer}: {log}"
        );
    }
    // Without the layers, the same attempts get through.
    assert_eq!(slice0(&actions, "offline"), "ok", "{log}");
    assert_eq!(slice0(&actions, "unixer"), "ok", "{log}");
    assert_eq!(slice0(&actions, "writer"), "ok", "{log}");
    assert!(outside.exists());
    assert_eq!(slice0(&actions, "reader"), "ok", "{log}");
    assert_eq!(slice0(&actions, "tracer"), "ok", "{log}");
    // The pids cgroup, still on, takes the escapee down without the pid namespace.
    let escapee = slice0(&actions, "escaper").as_i64().unwrap() as i32;
    assert!(
        process_gone(escapee),
        "grandchild {escapee} outlived its crew"
    );
    // Without the memory cgroup, RLIMIT_AS stops the hog: a MemoryError that kills the
    // runner, a crash rather than an OOM kill.
    let reported: Vec<(String, String)> = lines(&root.path().join("errors.jsonl"))
        .iter()
        .map(|e| (e["crew"].to_string(), e["reason"].to_string()))
        .collect();
    assert_eq!(
        reported,
        [("\"hog\"".to_owned(), "\"crash\"".to_owned())],
        "{log}"
    );
    assert_eq!(actions.slices_of("hog"), [1, 2]);
    for (crew, _) in specs.iter().filter(|(crew, _)| crew != "hog") {
        assert_eq!(actions.slices_of(crew), [0, 1, 2], "{crew}: {log}");
    }
}

#[test]
fn the_pid_namespace_alone_takes_the_escapee_down() {
    // Without the pids cgroup, only the pid namespace finds the grandchild.
    let root = tempfile::tempdir().unwrap();
    let specs = vec![(
        "escaper".to_owned(),
        "env: {SLICE0_MODE: double_fork}\n".to_owned(),
    )];
    let config = "sandbox:\n  disable: [pids_cgroup, memory_cgroup]\n";
    let (output, actions) = run(root.path(), &specs, config);
    let log = String::from_utf8_lossy(&output.stderr);
    let escapee = slice0(&actions, "escaper").as_i64().unwrap() as i32;
    assert!(
        process_gone(escapee),
        "grandchild {escapee} survived: {log}"
    );
}

#[test]
fn an_unmet_requirement_fails_the_start_and_names_crew_and_layer() {
    let root = tempfile::tempdir().unwrap();
    let specs = vec![
        (
            "strict".to_owned(),
            "sandbox: {require: [landlock]}\n".to_owned(),
        ),
        ("healthy".to_owned(), String::new()),
    ];
    let (output, actions) = run(root.path(), &specs, "sandbox: {disable: [landlock]}\n");
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{log}");
    assert!(actions.0.is_empty());
    assert!(
        log.contains("crew 'strict'") && log.contains("'landlock'"),
        "{log}"
    );
    // A crew that turns its own layer off cannot require it either.
    let root = tempfile::tempdir().unwrap();
    let specs = vec![(
        "online".to_owned(),
        "sandbox: {network: true, require: [netns]}\n".to_owned(),
    )];
    let (output, _) = run(root.path(), &specs, "");
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{log}");
    assert!(
        log.contains("crew 'online'") && log.contains("'netns'"),
        "{log}"
    );
}

#[test]
fn hostile_input_is_capped_and_everything_else_still_runs() {
    let root = tempfile::tempdir().unwrap();
    let crews = crews(root.path(), &[("healthy", "")]);
    let flood_event = |i: u64| {
        format!(
            r#"{{"ts":"2025-01-01T00:00:00.6{:05}Z","kind":"tick","stream_id":"flood","payload":{i}}}"#,
            i
        ) + "\n"
    };
    let mut input = vec![
        event(0, "1"),
        // Line 2: over the default max_event_bytes (256 KiB).
        event(100, &format!("\"{}\"", "x".repeat(300 << 10))),
        // Line 3: nested past the depth limit.
        event(200, &format!("{}1{}", "[".repeat(100), "]".repeat(100))),
    ];
    input.extend((0..5000).map(flood_event));
    input.push(event(500, "2"));
    input.push(event(1000, "3"));
    let events = root.path().join("events.jsonl");
    std::fs::write(&events, input.concat()).unwrap();
    let errors = root.path().join("errors.jsonl");
    let output = live_crew()
        .env("LIVE_CREW_MAX_EVENTS_PER_SLICE", "100")
        .args(["run", "--crews"])
        .arg(&crews)
        .arg("--events")
        .arg(&events)
        .arg("--errors")
        .arg(&errors)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    // Bad input fails the run, but only after everything else was processed.
    assert_eq!(output.status.code(), Some(1), "{log}");
    let actions = Actions::parse(&output.stdout);
    let on_stream = |stream: &str| {
        actions
            .0
            .iter()
            .filter(|a| a["stream_id"] == stream)
            .count()
    };
    assert_eq!(on_stream("s"), 3, "{log}");
    assert_eq!(on_stream("flood"), 100, "{log}");
    let records = lines(&errors);
    let (overflows, invalid): (Vec<_>, Vec<_>) = records
        .iter()
        .partition(|r| r["reason"] == "slice_overflow");
    let found: Vec<(u64, &str)> = invalid
        .iter()
        .map(|r| {
            assert_eq!(r["reason"], "invalid_event", "{r}");
            (r["line"].as_u64().unwrap(), r["message"].as_str().unwrap())
        })
        .collect();
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(found[0].0, 2);
    assert!(
        found[0].1.contains("over max_event_bytes (262144)"),
        "{found:?}"
    );
    assert_eq!(found[1].0, 3);
    assert!(found[1].1.contains("nests 101 levels deep"), "{found:?}");
    // The flood is one record for its slice, however many events it dropped.
    assert_eq!(overflows.len(), 1, "{overflows:?}");
    assert_eq!(overflows[0]["stream_id"], "flood");
    assert_eq!(overflows[0]["slice"], 0);
    assert!(
        overflows[0]["message"]
            .as_str()
            .unwrap()
            .starts_with("4900 events over max_events_per_slice (100) were dropped"),
        "{overflows:?}"
    );
    assert!(
        log.contains("events over max_events_per_slice (dropped or collapsed): 4900"),
        "{log}"
    );
}
