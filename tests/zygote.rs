//! The fork server of SPEC §13 through the real binary: `python` and `crewai` crews
//! forked from their interpreter's zygote, each as isolated from the others as a cold
//! start makes it; a crew that crashes, runs out of memory or forks without end leaves
//! its sibling and the zygote alone; a killed zygote is replaced and its crews come
//! back; a killed host leaves no process behind.
//!
//! Needs root on a kernel with the sandbox layers (as CI has).

mod common;
mod support;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{
    Host, event, event_now, lines, live_crew, process_gone, python, runner_pids, wait_all_gone,
};
use serde_json::Value;
use support::output_within;

const PROBER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/zygote/prober.py"
);

/// A TCP port on loopback that accepts: a crew without network must not reach it.
static LISTENER: std::sync::LazyLock<TcpListener> =
    std::sync::LazyLock::new(|| TcpListener::bind("127.0.0.1:0").unwrap());

/// How long a batch run of these tests may take.
const RUN_WITHIN: Duration = Duration::from_secs(180);

/// `live-crew run` of `crews` over `events`, on the project's interpreter, JSON logs.
fn batch(crews: &Path, events: &Path) -> std::process::Command {
    let mut run = live_crew();
    run.args(["run", "--log-format", "json", "--crews"])
        .arg(crews)
        .arg("--events")
        .arg(events)
        .env("LIVE_CREW_PYTHON", python());
    run
}

/// Crew `name`, the prober, on events of kind `trigger`, with `SECRET` set to
/// `secret-of-<name>` and `sibling` to reach; it may write to `shared` and `writes`,
/// and `sandbox` adds to its sandbox section (`, network: true`).
fn prober(
    crews: &Path,
    shared: &Path,
    name: &str,
    sibling: &str,
    trigger: &str,
    writes: &[&Path],
    sandbox: &str,
) {
    let writes: Vec<String> = std::iter::once(shared)
        .chain(writes.iter().copied())
        .map(|path| format!("'{}'", path.display()))
        .collect();
    let dir = crews.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(PROBER, dir.join("prober.py")).unwrap();
    let runtime = format!(
        "crew: {name}\ntriggers: [{trigger}]\nmax_errors: 100\n\
         runner: {{kind: python, module: \"prober:react\"}}\n\
         sandbox: {{write: [{writes}]{sandbox}}}\n\
         env: {{ME: {name}, SIBLING: {sibling}, SIBLING_DIR: '{sibling_dir}', SHARED: '{shared}', \
         SECRET: secret-of-{name}, PORT: '{port}', OUTSIDE: '{outside}'}}\n",
        writes = writes.join(", "),
        port = LISTENER.local_addr().unwrap().port(),
        outside = shared.with_file_name("outside.txt").display(),
        shared = shared.display(),
        sibling_dir = crews.join(sibling).display(),
    );
    std::fs::write(dir.join("runtime.yaml"), runtime).unwrap();
}

/// The JSON log records with this message.
fn records<'a>(log: &'a str, message: &'a str) -> impl Iterator<Item = Value> + 'a {
    log.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(move |record| record["msg"] == message)
}

/// Each crew's start mode, from its "runner ready" records.
fn start_modes(log: &str) -> Vec<(String, String)> {
    let mut modes: Vec<(String, String)> = records(log, "runner ready")
        .map(|r| {
            let field = |name: &str| r[name].as_str().unwrap_or_default().to_owned();
            (field("crew"), field("start"))
        })
        .collect();
    modes.sort();
    modes
}

/// The probes of a batch run of `crews` over two `tick`s, by crew; and the log.
fn probe_run(crews: &Path, zygote: &str) -> (Vec<(String, Value)>, String) {
    let root = crews.parent().unwrap();
    let events = root.join("events.jsonl");
    std::fs::write(&events, [event(0, "1"), event(500, "2")].concat()).unwrap();
    let out = output_within(
        batch(crews, &events).env("LIVE_CREW_ZYGOTE", zygote),
        RUN_WITHIN,
    );
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{log}");
    let probes = std::str::from_utf8(&out.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .map(|action| {
            (
                action["crew"].as_str().unwrap().to_owned(),
                action["payload"].clone(),
            )
        })
        .collect();
    (probes, log)
}

#[test]
fn forked_crews_are_as_isolated_from_each_other_as_cold_ones() {
    let root = tempfile::tempdir().unwrap();
    let shared = root.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    let crews = root.path().join("crews");
    prober(&crews, &shared, "alpha", "beta", "tick", &[], "");
    prober(&crews, &shared, "beta", "alpha", "tick", &[], "");

    for zygote in ["true", "false"] {
        for pid_file in std::fs::read_dir(&shared).unwrap() {
            std::fs::remove_file(pid_file.unwrap().path()).unwrap();
        }
        let (probes, log) = probe_run(&crews, zygote);
        let mode = if zygote == "true" { "zygote" } else { "cold" };
        assert_eq!(
            start_modes(&log),
            [
                ("alpha".to_owned(), mode.to_owned()),
                ("beta".to_owned(), mode.to_owned())
            ],
            "{log}"
        );
        assert_eq!(probes.len(), 4, "two ticks, two crews: {probes:?}");
        for (crew, probe) in &probes {
            let context = format!("{mode} {crew}: {probe}");
            assert_eq!(probe["pid"], 1, "its own pid namespace; {context}");
            assert_eq!(probe["secret"], format!("secret-of-{crew}"), "{context}");
            assert_eq!(probe["home"], probe["cwd"], "{context}");
            let home = probe["home"].as_str().unwrap();
            assert!(home.contains("live-crew-"), "a private workdir; {context}");
            assert_eq!(probe["signal_sibling"], "ESRCH", "{context}");
            assert_eq!(probe["ptrace_sibling"], "EPERM", "{context}");
            assert_eq!(probe["sibling_environ"], "EACCES", "{context}");
            assert_eq!(probe["sibling_folder"], "EACCES", "{context}");
            assert_eq!(probe["connect"], "ENETUNREACH", "{context}");
            assert_eq!(probe["unix_socket"], "EPERM", "{context}");
            assert_eq!(probe["write_outside"], "EACCES", "{context}");
            let env: Vec<&str> = probe["env"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            for host_only in [
                "PYTHON_DOTENV_DISABLED",
                "OPENBLAS_NUM_THREADS",
                "CARGO_MANIFEST_DIR",
            ] {
                assert!(!env.contains(&host_only), "{host_only} leaked; {context}");
            }
        }
        // Every crew draws its own random numbers, also when forked from one process.
        let draws: std::collections::HashSet<String> = probes
            .iter()
            .flat_map(|(_, p)| [p["random"].to_string(), p["urandom"].to_string()])
            .collect();
        assert_eq!(draws.len(), 8, "{probes:?}");
    }
}

#[test]
fn the_probes_succeed_where_the_sandbox_allows_it() {
    let root = tempfile::tempdir().unwrap();
    let shared = root.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    let crews = root.path().join("crews");
    // Its own folder as the sibling's; the outside file's folder granted; network on.
    let outside = [root.path()];
    prober(
        &crews,
        &shared,
        "open",
        "open",
        "tick",
        &outside,
        ", network: true",
    );
    let (probes, log) = probe_run(&crews, "true");
    assert_eq!(
        start_modes(&log),
        [("open".to_owned(), "zygote".to_owned())]
    );
    for (_, probe) in &probes {
        assert_eq!(probe["sibling_folder"], "ok", "{probe}");
        assert_eq!(probe["connect"], "ok", "{probe}");
        assert_eq!(probe["write_outside"], "ok", "{probe}");
        // seccomp and the pid namespace stay on for every crew.
        assert_eq!(probe["unix_socket"], "EPERM", "{probe}");
        assert_eq!(probe["pid"], 1, "{probe}");
    }
}

/// The crew `victim` triggers on `trouble`; `steady` on `tick`.
fn trouble_crews(root: &Path) -> PathBuf {
    let shared = root.join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    let crews = root.join("crews");
    // Each its own sibling: the probe then needs nobody else's pid file.
    prober(&crews, &shared, "steady", "steady", "tick", &[], "");
    let limits = ", memory_mb: 128, processes: 24";
    prober(&crews, &shared, "victim", "victim", "trouble", &[], limits);
    crews
}

/// The parent of `pid` as the host sees it.
fn parent_of(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_comm = stat.rsplit(')').next().unwrap();
    after_comm
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap()
}

fn crew<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["crews"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["crew"] == name)
        .unwrap()
}

/// Waits up to 30 s for `actions` to hold an action of `crew` of kind `kind` beyond the
/// first `seen`; returns it.
fn next_action(actions: &Path, crew: &str, kind: &str, seen: usize, host: &Host) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let matching: Vec<Value> = lines(actions)
            .into_iter()
            .filter(|a| a["crew"] == crew && a["kind"] == kind)
            .collect();
        if matching.len() > seen {
            return matching[seen].clone();
        }
        assert!(
            Instant::now() < deadline,
            "no {kind} action of {crew}; log:\n{}",
            host.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_misbehaving_forked_crew_harms_neither_its_sibling_nor_the_zygote_and_a_killed_zygote_is_replaced()
 {
    let root = tempfile::tempdir().unwrap();
    let crews = trouble_crews(root.path());
    let actions = root.path().join("actions.jsonl");
    let errors = root.path().join("errors.jsonl");
    let python = python();
    let mut host = Host::start(
        root.path(),
        &crews,
        &[
            ("LIVE_CREW_PYTHON", python.as_str()),
            ("LIVE_CREW_SLICE_MS", "100"),
        ],
        &[
            "--output",
            actions.to_str().unwrap(),
            "--errors",
            errors.to_str().unwrap(),
        ],
    );
    let report = host.wait_health("both crews ready from the zygote", |r| {
        ["steady", "victim"].iter().all(|name| {
            crew(r, name)["state"] == "ready" && crew(r, name)["start_mode"] == "zygote"
        })
    });
    let steady = crew(&report, "steady")["pid"].as_i64().unwrap() as i32;
    let victim = crew(&report, "victim")["pid"].as_i64().unwrap() as i32;
    let zygote = parent_of(steady);
    assert_eq!(parent_of(victim), zygote, "one zygote forks both");
    assert_ne!(zygote, host.child.id() as i32);
    // The kernel's view of a crew's environment holds no other crew's secret.
    let environ = std::fs::read(format!("/proc/{steady}/environ")).unwrap();
    assert!(!String::from_utf8_lossy(&environ).contains("secret-of-victim"));

    let mut ticks = 0;
    let mut tick = |host: &mut Host| {
        host.send(&event_now("tick", "{}"));
        let probe = next_action(&actions, "steady", "probe", ticks, host);
        ticks += 1;
        probe
    };
    assert_eq!(tick(&mut host)["payload"]["host_pid"], steady);

    // A crash, then memory until the kernel kills the crew, then a fork bomb.
    for (trouble, reason) in [("crash", "crash"), ("oom", "oom")] {
        host.send(&event_now("trouble", &format!(r#"{{"do":"{trouble}"}}"#)));
        let deadline = Instant::now() + Duration::from_secs(30);
        while !lines(&errors)
            .iter()
            .any(|e| e["reason"] == reason && e["crew"] == "victim")
        {
            assert!(
                Instant::now() < deadline,
                "no {reason} error; log:\n{}",
                host.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(
            tick(&mut host)["payload"]["host_pid"],
            steady,
            "after {trouble}"
        );
        assert!(
            !process_gone(zygote),
            "the zygote survives a crew's {trouble}"
        );
    }
    let report = host.wait_health("the victim back", |r| crew(r, "victim")["state"] == "ready");
    let victim = crew(&report, "victim")["pid"].as_i64().unwrap() as i32;
    assert_eq!(parent_of(victim), zygote, "restarted from the same zygote");
    host.send(&event_now("trouble", r#"{"do":"fork_bomb"}"#));
    let bomb = next_action(&actions, "victim", "bomb", 0, &host);
    let stopped = bomb["payload"].as_str().unwrap();
    assert!(stopped.starts_with("stopped after "), "{bomb}");
    let forks: u32 = stopped["stopped after ".len()..]
        .split(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(forks < 24, "the pids limit holds: {bomb}");

    // The zygote killed: its crews die with it, and come back from a new one.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(zygote),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let report = host.wait_health("both crews back from a new zygote", |r| {
        ["steady", "victim"].iter().all(|name| {
            let c = crew(r, name);
            c["state"] == "ready"
                && c["pid"]
                    .as_i64()
                    .is_some_and(|pid| pid as i32 != steady && pid as i32 != victim)
        })
    });
    let steady = crew(&report, "steady")["pid"].as_i64().unwrap() as i32;
    let new_zygote = parent_of(steady);
    assert_ne!(new_zygote, zygote);
    assert_eq!(crew(&report, "steady")["start_mode"], "zygote");
    assert_eq!(tick(&mut host)["payload"]["host_pid"], steady);

    // The host killed: the zygote and every crew go with it.
    let mut pids = runner_pids(&report);
    pids.push(new_zygote);
    host.signal(nix::sys::signal::Signal::SIGKILL);
    let _ = host.wait_exit(5);
    wait_all_gone(&pids);
}

#[test]
fn ten_crewai_crews_start_from_one_zygote_and_answer() {
    let root = tempfile::tempdir().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/crewai");
    let crews = root.path().join("crews");
    let names: Vec<String> = (0..10).map(|n| format!("keeper_{n}")).collect();
    for name in &names {
        let dir = crews.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for file in ["agents.yaml", "tasks.yaml"] {
            std::fs::copy(fixture.join("steady").join(file), dir.join(file)).unwrap();
        }
        let runtime = std::fs::read_to_string(fixture.join("steady/runtime.yaml")).unwrap();
        std::fs::write(
            dir.join("runtime.yaml"),
            runtime.replace("crew: steady", &format!("crew: {name}")),
        )
        .unwrap();
    }
    let out = output_within(
        &mut batch(&crews, &fixture.join("events.jsonl")),
        RUN_WITHIN,
    );
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{log}");
    let modes = start_modes(&log);
    let expected: Vec<(String, String)> = names
        .iter()
        .map(|n| (n.clone(), "zygote".to_owned()))
        .collect();
    assert_eq!(modes, expected, "{log}");
    assert_eq!(records(&log, "fork server started").count(), 1, "{log}");
    let actions: Vec<Value> = std::str::from_utf8(&out.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    for name in &names {
        let slices: Vec<&Value> = actions
            .iter()
            .filter(|a| a["crew"] == name.as_str() && a["kind"] == "note")
            .map(|a| &a["slice"])
            .collect();
        assert_eq!(slices, [0, 1, 2], "{name} noted every goal: {actions:?}");
    }
}

/// An interpreter whose fork server always fails: a wrapper that execs `python` for
/// everything but the zygote.
fn python_without_zygote(dir: &Path) -> PathBuf {
    let wrapper = dir.join("python");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\ncase \"$*\" in *live_crew_runner.zygote*) echo 'no zygote here' >&2; exit 1;; esac\nexec {} \"$@\"\n",
            python()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    wrapper
}

#[test]
fn a_zygote_that_keeps_failing_makes_its_crews_start_cold_and_says_so() {
    let root = tempfile::tempdir().unwrap();
    let wrapper = python_without_zygote(root.path());
    // The wrapper execs the real interpreter, whose installation the crew may then read.
    let real = PathBuf::from(python()).canonicalize().unwrap();
    let installation = real.parent().unwrap().parent().unwrap();
    let venv = Path::new(&python())
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let crews = root.path().join("crews");
    let dir = crews.join("crasher");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(PROBER, dir.join("prober.py")).unwrap();
    std::fs::write(
        dir.join("runtime.yaml"),
        format!(
            "crew: crasher\ntriggers: [tick]\nmax_errors: 100\n\
             runner: {{kind: python, module: \"prober:react\", python: '{}'}}\n\
             sandbox: {{read: ['{}', '{}']}}\n",
            wrapper.display(),
            venv.display(),
            installation.display()
        ),
    )
    .unwrap();
    let events = root.path().join("events.jsonl");
    let crash = r#"{"do":"crash"}"#;
    std::fs::write(
        &events,
        (0..4).map(|n| event(n * 500, crash)).collect::<String>(),
    )
    .unwrap();
    let out = output_within(
        batch(&crews, &events).env("LIVE_CREW_RESTART_BACKOFF_MS", "1"),
        RUN_WITHIN,
    );
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    let modes: Vec<String> = start_modes(&log)
        .into_iter()
        .map(|(_, mode)| mode)
        .collect();
    assert_eq!(modes.len(), 4, "a start per event: {log}");
    assert!(
        modes.iter().all(|mode| mode == "cold_fallback"),
        "{modes:?}"
    );
    assert_eq!(
        records(
            &log,
            "the fork server keeps failing; its crews start cold from now on"
        )
        .count(),
        1,
        "{log}"
    );
    // Three zygotes were tried, then no more.
    assert_eq!(records(&log, "fork server started").count(), 3, "{log}");
    assert!(
        log.contains("no zygote here"),
        "the zygote's stderr reaches the log"
    );
}
