//! Helpers shared by the tests that run the hostile fixture runner. Each test binary
//! uses a different subset.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

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
