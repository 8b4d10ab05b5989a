//! The real `live-crew` binary: input validation, crews-folder validation, config
//! precedence, exit codes. These need no crew process, except the `hello_world`
//! determinism test, which runs the example crews through the supervisor.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs the binary with a clean `LIVE_CREW_*` environment plus `env`.
fn live_crew(args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_live-crew"));
    command.args(args).env("LIVE_CREW_LOG", "warn");
    for (name, _) in std::env::vars() {
        if name.starts_with("LIVE_CREW_") {
            command.env_remove(name);
        }
    }
    command.envs(env.iter().copied());
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("the binary starts");
    let mut pipe = child.stdin.take().unwrap();
    pipe.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(pipe);
    let out = child.wait_with_output().unwrap();
    Output {
        code: out.status.code().expect("exited"),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

fn records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// A temp folder with an empty `crews/`: runs only check events.
fn workspace() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let crews = dir.path().join("crews");
    std::fs::create_dir(&crews).unwrap();
    (dir, crews)
}

fn event(ms: u64, kind: &str) -> String {
    format!(
        r#"{{"ts":"2025-06-01T18:00:00.{ms:03}Z","kind":"{kind}","stream_id":"m1","payload":{{}}}}"#
    )
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn bad_events_are_reported_by_line_skipped_and_fail_the_run() {
    let (dir, crews) = workspace();
    let big = format!(
        r#"{{"ts":"2025-06-01T18:00:00Z","kind":"k","stream_id":"m1","payload":"{}"}}"#,
        "x".repeat(300)
    );
    let lines = [
        event(0, "ok"),
        "{not json".to_owned(),
        event(1, "bad kind"),
        r#"{"ts":"2025-06-01T18:00:00Z","kind":"k","stream_id":"m/1","payload":1}"#.to_owned(),
        r#"{"ts":"yesterday","kind":"k","stream_id":"m1","payload":1}"#.to_owned(),
        r#"{"ts":"2025-06-01T18:00:00Z","kind":"k","stream_id":"m1","payload":1,"extra":1}"#
            .to_owned(),
        big,
        r#"{"ts":"2025-06-01T18:00:00Z","kind":"k","stream_id":"m1"}"#.to_owned(),
        String::new(),
        "# comment".to_owned(),
        event(2, "ok"),
    ];
    let events = dir.path().join("events.jsonl");
    std::fs::write(&events, lines.join("\n")).unwrap();
    let errors = dir.path().join("errors.jsonl");
    let args = [
        "run",
        "--crews",
        s(&crews),
        "--events",
        s(&events),
        "--errors",
        s(&errors),
    ];
    let out = live_crew(&args, &[("LIVE_CREW_MAX_EVENT_BYTES", "200")], None);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let found: Vec<(u64, String)> = records(&errors)
        .iter()
        .map(|r| {
            assert_eq!(r["reason"], "invalid_event");
            let message = r["message"].as_str().unwrap();
            (r["line"].as_u64().unwrap(), message.to_owned())
        })
        .collect();
    let lines: Vec<u64> = found.iter().map(|(line, _)| *line).collect();
    assert_eq!(lines, [2, 3, 4, 5, 6, 7, 8]);
    let expect = [
        "field 'event'",
        "field 'kind'",
        "field 'stream_id'",
        "field 'ts'",
        "field 'extra'",
        "over max_event_bytes (200)",
        "field 'payload'",
    ];
    for ((line, message), want) in found.iter().zip(expect) {
        assert!(message.starts_with(&format!("line {line}: ")), "{message}");
        assert!(
            message.contains(want),
            "line {line}: {message} lacks {want}"
        );
    }
    assert!(out.stderr.contains("2 events"), "{}", out.stderr);

    let mut allowed = args.to_vec();
    allowed.push("--allow-invalid");
    assert_eq!(live_crew(&allowed, &[], None).code, 0);
}

#[test]
fn json_array_errors_carry_element_index_and_line() {
    let (dir, crews) = workspace();
    let events = dir.path().join("events.json");
    let text = format!(
        "[\n  {},\n  {},\n  {}\n]\n",
        event(0, "a"),
        event(1, "b c"),
        event(2, "d")
    );
    std::fs::write(&events, text).unwrap();
    let errors = dir.path().join("errors.jsonl");
    let args = [
        "run",
        "--crews",
        s(&crews),
        "--events",
        s(&events),
        "--errors",
        s(&errors),
    ];
    let out = live_crew(&args, &[], None);
    assert_eq!(out.code, 1);
    let found = records(&errors);
    assert_eq!(found.len(), 1);
    assert_eq!(
        (found[0]["line"].as_u64(), found[0]["index"].as_u64()),
        (Some(3), Some(1))
    );
    assert!(
        found[0]["message"]
            .as_str()
            .unwrap()
            .starts_with("line 3 (element 1): ")
    );
}

#[test]
fn stdin_takes_json_lines() {
    let (dir, crews) = workspace();
    let errors = dir.path().join("errors.jsonl");
    let input = format!("{}\nnope\n", event(0, "a"));
    let args = [
        "run",
        "--crews",
        s(&crews),
        "--events",
        "-",
        "--errors",
        s(&errors),
    ];
    let out = live_crew(&args, &[], Some(&input));
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(records(&errors)[0]["line"], 2);
}

#[test]
fn late_events_fail_the_run_unless_allowed() {
    let (dir, crews) = workspace();
    let events = dir.path().join("events.jsonl");
    let late = r#"{"ts":"2025-06-01T17:59:59Z","kind":"a","stream_id":"m1","payload":{}}"#;
    let lines = [
        event(0, "a"),
        late.replace("17:59:59", "18:00:02"),
        late.to_owned(),
    ];
    std::fs::write(&events, lines.join("\n")).unwrap();
    let errors = dir.path().join("errors.jsonl");
    let args = [
        "run",
        "--crews",
        s(&crews),
        "--events",
        s(&events),
        "--errors",
        s(&errors),
    ];
    assert_eq!(live_crew(&args, &[], None).code, 1);
    let found = records(&errors);
    assert_eq!(found[0]["reason"], "late_event");
    assert_eq!(
        (found[0]["slice"].as_i64(), found[0]["stream_id"].as_str()),
        (Some(-2), Some("m1"))
    );
    let mut allowed = args.to_vec();
    allowed.push("--allow-invalid");
    assert_eq!(live_crew(&allowed, &[], None).code, 0);
}

#[test]
fn flags_override_environment_which_overrides_the_config_file() {
    let (dir, crews) = workspace();
    let config = dir.path().join("live-config.yaml");
    std::fs::write(&config, "slice_ms: 1000\n").unwrap();
    // 0 ms, 250 ms, then 150 ms: late only if the 250 ms event closed the 150 ms slice.
    let events = dir.path().join("events.jsonl");
    std::fs::write(
        &events,
        [event(0, "a"), event(250, "b"), event(150, "c")].join("\n"),
    )
    .unwrap();
    let errors = dir.path().join("errors.jsonl");
    let late_slice = |env: &[(&str, &str)], flags: &[&str]| -> Option<i64> {
        let mut args = vec!["run", "--crews", s(&crews), "--events", s(&events)];
        args.extend([
            "--config",
            s(&config),
            "--errors",
            s(&errors),
            "--allow-invalid",
        ]);
        args.extend(flags);
        let out = live_crew(&args, env, None);
        assert_eq!(out.code, 0, "{}", out.stderr);
        records(&errors)
            .first()
            .map(|r| r["slice"].as_i64().unwrap())
    };
    // 1000 ms slices (file): all in slice 0, nothing late.
    assert_eq!(late_slice(&[], &[]), None);
    // 200 ms (environment): 150 ms is slice 0, closed by the event in slice 1.
    assert_eq!(late_slice(&[("LIVE_CREW_SLICE_MS", "200")], &[]), Some(0));
    // 100 ms (flag): 150 ms is slice 1, closed by the event in slice 2.
    assert_eq!(
        late_slice(&[("LIVE_CREW_SLICE_MS", "200")], &["--slice-ms", "100"]),
        Some(1)
    );
}

#[test]
fn config_prints_the_settings_in_effect_as_a_loadable_file() {
    let (dir, _) = workspace();
    let file = dir.path().join("live-config.yaml");
    std::fs::write(&file, "slice_ms: 250\nsandbox: {memory_mb: 512}\n").unwrap();
    let out = live_crew(
        &["config", "--config", s(&file)],
        &[("LIVE_CREW_GRACE_MS", "70")],
        None,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    for line in [
        "slice_ms: 250",
        "grace_ms: 70",
        "  memory_mb: 512",
        "heartbeat_ms: 1000",
    ] {
        assert!(lines.contains(&line), "no {line:?} in:\n{}", out.stdout);
    }
    // What it prints loads back to the same settings.
    let printed = dir.path().join("printed.yaml");
    std::fs::write(&printed, &out.stdout).unwrap();
    let again = live_crew(&["config", "--config", s(&printed)], &[], None);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(again.stdout, out.stdout);
    std::fs::write(&file, "slice_ms: fast\n").unwrap();
    let bad = live_crew(&["config", "--config", s(&file)], &[], None);
    assert_eq!(bad.code, 2);
    assert!(bad.stderr.contains("live-config.yaml"), "{}", bad.stderr);
}

/// config/live-config.yaml documents every knob with its default.
#[test]
fn the_config_template_names_every_setting_with_its_default() {
    let template = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/live-config.yaml");
    let defaults = live_crew(&["config"], &[], None);
    let templated = live_crew(&["config", "--config", s(&template)], &[], None);
    assert_eq!(templated.code, 0, "{}", templated.stderr);
    assert_eq!(
        templated.stdout, defaults.stdout,
        "the template's values are the defaults"
    );
    let text = std::fs::read_to_string(&template).unwrap();
    let documented: Vec<&str> = text
        .lines()
        .filter_map(|line| line.trim_start_matches(['#', ' ']).split_once(':'))
        .map(|(key, _)| key)
        .collect();
    for line in defaults.stdout.lines() {
        let key = line.trim_start().split(':').next().unwrap();
        assert!(
            documented.contains(&key),
            "config/live-config.yaml lacks {key}"
        );
    }
}

#[test]
fn config_and_usage_errors_exit_with_2() {
    let (dir, crews) = workspace();
    let events = dir.path().join("events.jsonl");
    std::fs::write(&events, event(0, "a")).unwrap();
    let config = dir.path().join("live-config.yaml");
    std::fs::write(&config, "slice_ms: 0\nbogus: 1\n").unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec!["run", "--crews", s(&crews)];
        args.extend(extra);
        live_crew(&args, &[], None)
    };
    let out = run(&["--events", s(&events), "--config", s(&config)]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("bogus"), "{}", out.stderr);
    let missing = run(&["--events", "/nonexistent/events.jsonl"]);
    assert_eq!(missing.code, 2);
    assert_eq!(
        missing.stderr.matches("No such file").count(),
        1,
        "said once: {}",
        missing.stderr
    );
    let folder = run(&["--events", s(dir.path())]);
    assert_eq!(folder.code, 2);
    assert!(
        folder.stderr.contains("a folder, not a file"),
        "{}",
        folder.stderr
    );
    assert_eq!(run(&[]).code, 2, "--events is required");
    assert_eq!(run(&["--events", s(&events), "--slice-ms", "0"]).code, 2);
    let out = live_crew(
        &["run", "--crews", "/nonexistent", "--events", s(&events)],
        &[],
        None,
    );
    assert_eq!(out.code, 2);
    assert!(
        live_crew(&["--version"], &[], None)
            .stdout
            .starts_with("live-crew ")
    );
}

#[test]
fn output_files_are_owner_only_and_live_is_accepted() {
    use std::os::unix::fs::PermissionsExt;
    let (dir, crews) = workspace();
    let events = dir.path().join("events.jsonl");
    std::fs::write(&events, event(0, "a")).unwrap();
    let (output, errors) = (
        dir.path().join("actions.jsonl"),
        dir.path().join("errors.jsonl"),
    );
    let args = [
        "run",
        "--crews",
        s(&crews),
        "--events",
        s(&events),
        "--live",
    ];
    let mut args = args.to_vec();
    args.extend(["--output", s(&output), "--errors", s(&errors)]);
    let out = live_crew(&args, &[], None);
    assert_eq!(out.code, 0, "{}", out.stderr);
    for file in [output, errors] {
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", file.display());
    }
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

#[test]
fn validate_reports_every_problem_with_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let crews = dir.path().join("crews");
    let cmd = "runner: {kind: command, command: [cat]}\n";
    write(
        &crews.join("schema/runtime.yaml"),
        &format!("crew: schema\ntriggers: [x]\ncolour: red\n{cmd}"),
    );
    write(
        &crews.join("ghost/runtime.yaml"),
        &format!(
            "crew: ghost\ntriggers: [x]\nneeds: [{{type: crew, crew: nobody, offset: -1}}]\n{cmd}"
        ),
    );
    write(
        &crews.join("loop_a/runtime.yaml"),
        &format!(
            "crew: loop_a\ntriggers: [x]\nneeds: [{{type: crew, crew: loop_b, offset: 0}}]\n{cmd}"
        ),
    );
    write(
        &crews.join("loop_b/runtime.yaml"),
        &format!(
            "crew: loop_b\ntriggers: [x]\nneeds: [{{type: crew, crew: loop_a, offset: 0}}]\n{cmd}"
        ),
    );
    write(
        &crews.join("nomodule/runtime.yaml"),
        "crew: nomodule\ntriggers: [x]\nrunner: {kind: python, module: \"handlers:react\"}\n",
    );
    write(
        &crews.join("escape/runtime.yaml"),
        "crew: escape\ntriggers: [x]\nrunner: {kind: command, command: [\"../../bin/sh\"]}\n",
    );
    write(
        &crews.join("dup1/runtime.yaml"),
        &format!("crew: twin\ntriggers: [x]\n{cmd}"),
    );
    write(
        &crews.join("dup2/twin.runtime.yaml"),
        &format!("crew: twin\ntriggers: [x]\n{cmd}"),
    );
    write(
        &crews.join("typo/runtime.yaml"),
        &format!("crew: typo\ntrigers: [x]\n{cmd}"),
    );
    let out = live_crew(&["validate", "--crews", s(&crews)], &[], None);
    assert_eq!(out.code, 2, "{}", out.stderr);
    let expect = [
        ("schema/runtime.yaml", "colour"),
        ("ghost/runtime.yaml: needs[0].crew", "unknown crew 'nobody'"),
        ("nomodule/runtime.yaml: runner.module", "handlers.py"),
        (
            "escape/runtime.yaml: runner.command[0]",
            "leaves the crew folder",
        ),
        ("dup2/twin.runtime.yaml: crew", "duplicate crew name 'twin'"),
        ("typo/runtime.yaml", "did you mean `triggers`?"),
        // Cycles too, in the same pass as everything else.
        (
            "loop_a/runtime.yaml: needs",
            "dependency cycle loop_a -> loop_b -> loop_a",
        ),
    ];
    for (location, message) in expect {
        let line = out.stderr.lines().find(|l| l.contains(location));
        let line = line.unwrap_or_else(|| panic!("no report for {location}:\n{}", out.stderr));
        assert!(line.contains(message), "{line}");
    }
    for broken in [
        "schema", "ghost", "nomodule", "escape", "dup2", "typo", "loop_b",
    ] {
        std::fs::remove_dir_all(crews.join(broken)).unwrap();
    }
    write(
        &crews.join("loop_b/runtime.yaml"),
        &format!("crew: loop_b\ntriggers: [x]\n{cmd}"),
    );
    let out = live_crew(&["validate", "--crews", s(&crews)], &[], None);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("3 crews OK; run order: loop_b, loop_a, twin"),
        "{}",
        out.stdout
    );
}

/// The examples' READMEs show what a run prints; this keeps them true.
#[test]
fn example_readmes_show_the_real_output() {
    for name in ["hello_world", "match_day"] {
        let example = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples")
            .join(name);
        let readme = std::fs::read_to_string(example.join("README.md")).unwrap();
        let documented = readme
            .split("```jsonl\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .unwrap_or_else(|| panic!("{name}/README.md has no ```jsonl block"));
        let (crews, events) = (example.join("crews"), example.join("events.jsonl"));
        let out = live_crew(
            &["run", "--crews", s(&crews), "--events", s(&events)],
            &[],
            None,
        );
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert_eq!(out.stdout, documented, "{name}/README.md is out of date");
    }
}

#[test]
fn hello_world_runs_are_byte_identical() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/hello_world");
    let (crews, events) = (example.join("crews"), example.join("events.jsonl"));
    let run = || {
        let args = ["run", "--crews", s(&crews), "--events", s(&events)];
        let out = live_crew(&args, &[], None);
        assert_eq!(out.code, 0, "{}", out.stderr);
        out.stdout
    };
    let first = run();
    assert!(!first.is_empty(), "hello_world produces actions");
    assert_eq!(first, run());
}

/// `replay` reruns a recording in batch mode and, with `--expect`, holds it to the
/// recorded actions. greeter and shouter keep no context, so replaying from a time gives
/// the recorded actions of the slices it runs, under the same slice numbers.
#[test]
fn replay_reproduces_a_recorded_run_or_names_the_first_difference() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/hello_world");
    let (dir, crews) = workspace();
    for crew in ["greeter", "shouter"] {
        std::fs::create_dir(crews.join(crew)).unwrap();
        for file in ["runtime.yaml", "handlers.py"] {
            std::fs::copy(
                example.join("crews").join(crew).join(file),
                crews.join(crew).join(file),
            )
            .unwrap();
        }
    }
    let events = example.join("events.jsonl");
    let recording = dir.path().join("recorded.jsonl");
    let recorded = live_crew(
        &["run", "--crews", s(&crews), "--events", s(&events)],
        &[],
        None,
    );
    assert_eq!(recorded.code, 0, "{}", recorded.stderr);
    std::fs::write(&recording, &recorded.stdout).unwrap();
    let info = [("LIVE_CREW_LOG", "info")];
    let replay = |extra: &[&str]| {
        let mut args = vec!["replay", "--crews", s(&crews), "--events", s(&events)];
        args.extend(extra);
        live_crew(&args, &info, None)
    };

    let same = replay(&["--expect", s(&recording)]);
    assert_eq!(same.code, 0, "{}", same.stderr);
    assert!(
        same.stdout.is_empty(),
        "with --expect, actions go nowhere by default"
    );
    assert!(same.stderr.contains("replay matches"), "{}", same.stderr);
    assert!(same.stderr.contains("(8 actions)"), "{}", same.stderr);

    // From 0.5 s on: room-1 runs slices 1 and 3 (Linus, Barbara), room-2 (epoch0 at
    // 0.1 s) its slice 1, which has no hello; room-1's slice 0 and room-2's slice 0
    // (Ada, Grace) start earlier and are left out.
    let output = dir.path().join("replayed.jsonl");
    let from = "2025-06-01T18:00:00.500Z";
    let partial = replay(&[
        "--from-timestamp",
        from,
        "--expect",
        s(&recording),
        "--output",
        s(&output),
    ]);
    assert_eq!(partial.code, 0, "{}", partial.stderr);
    assert!(
        partial
            .stderr
            .contains("(4 actions; 4 recorded actions of earlier slices left out)"),
        "{}",
        partial.stderr
    );
    assert!(
        partial
            .stderr
            .contains("events in slices before --from-timestamp (not replayed): 3"),
        "{}",
        partial.stderr
    );
    let slices: Vec<(String, i64)> = records(&output)
        .iter()
        .map(|a| {
            (
                a["payload"]["text"].as_str().unwrap().to_owned(),
                a["slice"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        slices,
        [
            ("Hello, Linus!".to_owned(), 1),
            ("HELLO, LINUS!".to_owned(), 1),
            ("Hello, Barbara!".to_owned(), 3),
            ("HELLO, BARBARA!".to_owned(), 3),
        ]
    );

    let tampered = dir.path().join("tampered.jsonl");
    std::fs::write(&tampered, recorded.stdout.replacen("Linus", "Linux", 1)).unwrap();
    let differs = replay(&["--expect", s(&tampered)]);
    assert_eq!(differs.code, 1, "{}", differs.stderr);
    let line = recorded
        .stdout
        .lines()
        .position(|l| l.contains("Linus"))
        .unwrap()
        + 1;
    assert!(
        differs.stderr.contains(&format!(
            "replay differs from {} at action {line} (line {line} of the recording)",
            tampered.display()
        )),
        "{}",
        differs.stderr
    );

    let missing = replay(&["--expect", s(&dir.path().join("nope.jsonl"))]);
    assert_eq!(missing.code, 2, "{}", missing.stderr);
    assert!(
        missing.stderr.contains("check --expect"),
        "{}",
        missing.stderr
    );
}

/// `--live` on a regular file plays it at the pace of its timestamps: slices close on
/// the wall clock while later events are still held back.
#[test]
fn live_on_a_recorded_file_plays_it_at_its_own_pace() {
    use std::io::{BufRead, BufReader};
    use std::time::{Duration, Instant};
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/hello_world/crews/greeter");
    let (dir, crews) = workspace();
    std::fs::create_dir(crews.join("greeter")).unwrap();
    for file in ["runtime.yaml", "handlers.py"] {
        std::fs::copy(example.join(file), crews.join("greeter").join(file)).unwrap();
    }
    let hello = |ms: u64, name: &str| {
        format!(
            r#"{{"ts":"2025-06-01T18:00:0{}.{:03}Z","kind":"hello","stream_id":"s","payload":{{"name":"{name}"}}}}"#,
            ms / 1000,
            ms % 1000
        )
    };
    let events = dir.path().join("events.jsonl");
    std::fs::write(
        &events,
        format!("{}\n{}\n", hello(0, "Ada"), hello(2500, "Bo")),
    )
    .unwrap();
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_live-crew"))
        .args([
            "run",
            "--live",
            "-q",
            "--crews",
            s(&crews),
            "--events",
            s(&events),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let arrivals: Vec<(Duration, String)> = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map(|line| (started.elapsed(), line.unwrap()))
        .collect();
    assert!(child.wait().unwrap().success());
    let ended = started.elapsed();
    let texts: Vec<&str> = arrivals.iter().map(|(_, line)| line.as_str()).collect();
    assert_eq!(arrivals.len(), 2, "{texts:?}");
    assert!(
        texts[0].contains("Hello, Ada!") && texts[1].contains("Hello, Bo!"),
        "{texts:?}"
    );
    // Bo's event is 1.5 s into the recording, so the run lasts at least that long...
    assert!(ended >= Duration::from_millis(1450), "{ended:?}");
    // ...and Ada's slice closed on the clock (at ~0.55 s), long before Bo came.
    assert!(
        arrivals[0].0 + Duration::from_millis(500) < arrivals[1].0,
        "{arrivals:?}"
    );
}

/// `deploy --config` checks a production config against this machine: 0 when all it
/// needs is here, 1 with each missing thing named.
#[test]
fn deploy_reports_what_a_config_needs_and_this_machine_lacks() {
    let dir = tempfile::tempdir().unwrap();
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = held.local_addr().unwrap();
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let good = dir.path().join("good.yaml");
    write(
        &good,
        &format!(
            "metrics_addr: {free}\ncontrol_socket: {}\n",
            dir.path().join("control.sock").display()
        ),
    );
    let out = live_crew(&["deploy", "--config", s(&good)], &[], None);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    for row in [
        "sandbox: landlock",
        "cgroup delegation",
        "metrics_addr",
        "control_socket",
    ] {
        assert!(out.stdout.contains(row), "{row}:\n{}", out.stdout);
    }
    assert!(
        out.stdout
            .contains("everything this configuration needs is here")
    );
    let bad = dir.path().join("bad.yaml");
    write(
        &bad,
        &format!(
            "metrics_addr: {busy}\ncontrol_socket: {}\nnats: {{urls: ['nats://{free}']}}\n\
             sandbox: {{require: [seccomp], disable: [seccomp]}}\n",
            dir.path().join("missing/control.sock").display()
        ),
    );
    let out = live_crew(&["deploy", "--config", s(&bad)], &[], None);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let row = |name: &str| {
        out.stdout
            .lines()
            .find(|line| line.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} row:\n{}", out.stdout))
            .to_owned()
    };
    assert!(
        row("sandbox: seccomp").contains("MISSING"),
        "{}",
        out.stdout
    );
    assert!(row("sandbox: seccomp").contains("sandbox.disable"));
    assert!(row("nats").contains("MISSING") && row("nats").contains("cannot connect"));
    assert!(row("metrics_addr").contains("MISSING"), "{}", out.stdout);
    assert!(
        row("control_socket").contains("does not exist"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("4 thing(s) this configuration needs are missing")
    );
    drop(held);
}
