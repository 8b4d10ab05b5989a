//! Helpers shared by the tests that run the hostile fixture runner. Each test binary
//! uses a different subset.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_live-crew");

const HOSTILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/hostile/hostile_runner.py"
);

/// Writes crew folder `root/name` running the hostile runner, with extra runtime-file
/// lines; returns its runtime file.
pub fn write_hostile_crew(root: &Path, name: &str, extra: &str) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(HOSTILE, dir.join("hostile_runner.py")).unwrap();
    let file = dir.join("runtime.yaml");
    std::fs::write(
        &file,
        format!(
            "crew: {name}\ntriggers: ['*']\nrunner: {{kind: command, command: [\"./hostile_runner.py\"]}}\n{extra}"
        ),
    )
    .unwrap();
    file
}

/// Whether a process no longer runs. A zombie waiting for init to reap it counts as gone.
pub fn process_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

/// Waits up to 5 s for every process in `pids` to be gone; fails the test otherwise.
pub fn wait_all_gone(pids: &[i32]) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !pids.iter().all(|pid| process_gone(*pid)) {
        assert!(
            std::time::Instant::now() < deadline,
            "crew processes survived: {pids:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A crews folder of hostile-runner crews, each with extra runtime-file lines.
pub fn crews(root: &Path, crews: &[(&str, &str)]) -> PathBuf {
    let dir = root.join("crews");
    for (name, extra) in crews {
        write_hostile_crew(&dir, name, extra);
    }
    dir
}

/// The actions a run printed, and the slices each crew answered.
pub struct Actions(pub Vec<serde_json::Value>);

impl Actions {
    pub fn parse(stdout: &[u8]) -> Self {
        Actions(
            std::str::from_utf8(stdout)
                .unwrap()
                .lines()
                .map(|line| serde_json::from_str(line).unwrap())
                .collect(),
        )
    }

    pub fn slices_of(&self, crew: &str) -> Vec<i64> {
        self.0
            .iter()
            .filter(|a| a["crew"] == crew)
            .map(|a| a["slice"].as_i64().unwrap())
            .collect()
    }
}

pub fn event(ms: u64, payload: &str) -> String {
    format!(
        r#"{{"ts":"2025-01-01T00:00:{:02}.{:03}Z","kind":"tick","stream_id":"s","payload":{payload}}}"#,
        ms / 1000,
        ms % 1000
    ) + "\n"
}

/// The interpreter for bundled-runner crews: `$LIVE_CREW_PYTHON` (scripts/test.sh sets
/// it to the project venv, which has crewai), else the venv's own.
pub fn python() -> String {
    std::env::var("LIVE_CREW_PYTHON")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python").to_owned())
}

pub fn live_crew() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_live-crew"));
    command
        .env("LIVE_CREW_HEARTBEAT_MS", "250")
        .env("LIVE_CREW_KILL_GRACE_MS", "300")
        .env("LIVE_CREW_LOG", "info");
    command
}

/// Runs the host over an events file to the end, with error records to `errors`.
pub fn run_batch(crews: &Path, events: &Path, errors: &Path) -> std::process::Output {
    live_crew()
        .args(["run", "--crews"])
        .arg(crews)
        .arg("--events")
        .arg(events)
        .arg("--errors")
        .arg(errors)
        .output()
        .unwrap()
}

pub fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// An event of stream `s` stamped with the current wall-clock time.
pub fn event_now(kind: &str, payload: &str) -> String {
    let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    format!(r#"{{"ts":"{ts}","kind":"{kind}","stream_id":"s","payload":{payload}}}"#) + "\n"
}

/// A host reading events from its stdin, with its log in `dir/log`.
pub struct Host {
    pub child: Child,
    pub dir: PathBuf,
    pub socket: PathBuf,
}

impl Host {
    pub fn start(dir: &Path, crews: &Path, env: &[(&str, &str)], args: &[&str]) -> Host {
        let socket = dir.join("control.sock");
        let log = std::fs::File::create(dir.join("log")).unwrap();
        let mut command = Command::new(BIN);
        command
            .args(["run", "--log-format", "json", "--events", "-", "--crews"])
            .arg(crews)
            .args(args)
            .env("LIVE_CREW_CONTROL_SOCKET", &socket)
            .env("LIVE_CREW_HEARTBEAT_MS", "250")
            .env("LIVE_CREW_KILL_GRACE_MS", "300")
            .env("LIVE_CREW_LOG", "info")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(log);
        for (name, value) in env {
            command.env(name, value);
        }
        Host {
            child: command.spawn().unwrap(),
            dir: dir.to_path_buf(),
            socket,
        }
    }

    pub fn send(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(line.as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap()
    }

    /// Waits until `check` holds for the health report, or fails after 20 s.
    pub fn wait_health(
        &self,
        what: &str,
        check: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (_, report) = health(&["--socket", self.socket.to_str().unwrap()]);
            if let Some(report) = report.filter(|r| check(r)) {
                return report;
            }
            assert!(
                Instant::now() < deadline,
                "never {what}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the log holds `text`, or fails after 10 s.
    pub fn wait_log(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.log().contains(text) {
            assert!(Instant::now() < deadline, "no {text:?} in:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    /// Waits for the host to exit (at most `secs`); returns its exit code.
    pub fn wait_exit(&mut self, secs: u64) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "host did not exit; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `live-crew health ARGS`; returns the exit code and the parsed report.
pub fn health(args: &[&str]) -> (i32, Option<serde_json::Value>) {
    let out = Command::new(BIN).arg("health").args(args).output().unwrap();
    let report = serde_json::from_slice(&out.stdout).ok();
    (out.status.code().unwrap(), report)
}

pub fn state_of<'a>(report: &'a serde_json::Value, crew: &str) -> &'a serde_json::Value {
    report["crews"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["crew"] == crew)
        .unwrap_or_else(|| panic!("no crew {crew} in {report}"))
}

pub fn all_ready(report: &serde_json::Value) -> bool {
    report["crews"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["state"] == "ready")
}

pub fn runner_pids(report: &serde_json::Value) -> Vec<i32> {
    report["crews"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["pid"].as_i64())
        .map(|pid| pid as i32)
        .collect()
}
