//! CrewAI benchmark (issue 4). Run with `cargo bench --bench crewai`, with
//! `LIVE_CREW_PYTHON` naming an interpreter that has crewai (the project venv). Prints a
//! Markdown table for the README.
//!
//! - per-call overhead of a warm CrewAI crew on the `fake` LLM: each round trip through
//!   the host minus CrewAI's own kickoff time for that call, which the benchmark crew
//!   (`benches/fixtures/crews/crewai_timed`) measures in-process around `Crew.kickoff`
//!   and appends to its output;
//! - startup: from `Supervisor::start` to all three crews of `examples/match_day_crewai`
//!   ready, started together, and the runners' resident memory then;
//! - ten CrewAI crews (copies of the benchmark crew) started together, cold: until all
//!   are ready, and the sum of their runners' PSS (`/proc/<pid>/smaps_rollup`) at ready
//!   and after 100 calls each: the baseline of the fork server's targets (SPEC §13).
//!
//! Every crew here starts cold (`zygote: false`); `benches/zygote_start.py` compares
//! cold starts with the fork server's.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::goal_call;
use live_crew::config::{Crews, GlobalConfig};
use live_crew::pool::CrewPool;
use live_crew::pool::CrewState;
use live_crew::supervisor::Supervisor;

const WARMUP: usize = 20;
const CALLS: usize = 300;
const STARTS: usize = 3;

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let python = std::env::var("LIVE_CREW_PYTHON").unwrap_or_else(|_| "python3".into());
    let (host, kickoffs) = runtime.block_on(per_call());
    let overheads: Vec<Duration> = host
        .iter()
        .zip(&kickoffs)
        .map(|(round_trip, kickoff)| round_trip.saturating_sub(*kickoff))
        .collect();
    let (starts, rss_mb) = runtime.block_on(startup());
    let ten = runtime.block_on(ten_crews());
    let import = cold_import(&python);

    println!("| measurement | p50 | p99 |");
    println!("|---|---|---|");
    row(
        "warm CrewAI crew (fake LLM), round trip through the host",
        &host,
    );
    row("its `Crew.kickoff`, timed inside the runner", &kickoffs);
    row(
        "per-call overhead: round trip − kickoff, per call",
        &overheads,
    );
    row(
        "startup: 3 CrewAI crews started together, until all are ready",
        &starts,
    );
    row(
        "startup: 10 CrewAI crews started together (cold), until all are ready",
        &ten.ready,
    );
    row("cold `python -c 'import crewai'` alone", &import);
    println!("| resident memory per CrewAI runner once ready | {rss_mb} | |");
    println!(
        "| 10 CrewAI crews: sum of PSS at ready / after {TEN_CALLS} calls each | {} MB / {} MB | |",
        ten.pss_ready_mb, ten.pss_after_mb
    );
    println!("\n({CALLS} calls after {WARMUP} warm-up calls; {STARTS} starts)");
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn global() -> GlobalConfig {
    GlobalConfig {
        startup_timeout_ms: 120_000,
        zygote: false,
        ..GlobalConfig::default()
    }
}

/// Per call: the host round trip, and the kickoff time the crew measured itself.
async fn per_call() -> (Vec<Duration>, Vec<Duration>) {
    let spec = live_crew::config::CrewSpec::load(
        &root().join("benches/fixtures/crews/crewai_timed/runtime.yaml"),
        &global(),
    )
    .expect("benchmark crew is valid");
    let pool = Supervisor::start(std::slice::from_ref(&spec), &global()).unwrap();
    pool.wait_for_state("crewai_timed", CrewState::Ready).await;
    let mut round_trips = Vec::new();
    let mut kickoffs = Vec::new();
    for id in 0..(WARMUP + CALLS) as u64 {
        let started = Instant::now();
        let output = pool
            .call("crewai_timed", goal_call(id))
            .await
            .expect("the crew answers");
        let elapsed = started.elapsed();
        if id >= WARMUP as u64 {
            round_trips.push(elapsed);
            kickoffs.push(kickoff_time(&output.actions[0].payload));
        }
    }
    pool.shutdown().await;
    (round_trips, kickoffs)
}

/// The `[kickoff <seconds>s]` the benchmark crew appends to its raw output.
fn kickoff_time(payload: &serde_json::value::RawValue) -> Duration {
    let payload: serde_json::Value = serde_json::from_str(payload.get()).unwrap();
    let raw = payload["raw"].as_str().unwrap();
    let seconds = raw
        .rsplit_once("[kickoff ")
        .and_then(|(_, rest)| rest.strip_suffix("s]"))
        .expect("the crew reports its kickoff time");
    Duration::from_secs_f64(seconds.parse().unwrap())
}

/// Time to ready of the three match_day_crewai crews, and their runners' RSS.
async fn startup() -> (Vec<Duration>, String) {
    let crews = Crews::load(&root().join("examples/match_day_crewai/crews"), &global())
        .expect("example crews are valid");
    let mut samples = Vec::new();
    let mut rss = Vec::new();
    for _ in 0..STARTS {
        let started = Instant::now();
        let pool = Supervisor::start(crews.as_slice(), &global()).unwrap();
        for spec in crews.as_slice() {
            pool.wait_for_state(&spec.name, CrewState::Ready).await;
        }
        samples.push(started.elapsed());
        rss = pool
            .status()
            .snapshot()
            .iter()
            .filter_map(|status| status.pid)
            .map(resident_mb)
            .collect();
        pool.shutdown().await;
    }
    let shown: Vec<String> = rss.iter().map(|mb| format!("{mb} MB")).collect();
    (samples, shown.join(", "))
}

const TEN: usize = 10;
const TEN_CALLS: u64 = 100;

/// What starting ten CrewAI crews together costs.
struct TenCrews {
    ready: Vec<Duration>,
    pss_ready_mb: u64,
    pss_after_mb: u64,
}

/// Ten copies of the benchmark crew, started together `STARTS` times.
async fn ten_crews() -> TenCrews {
    let dir = tempfile::tempdir().unwrap();
    let source = root().join("benches/fixtures/crews/crewai_timed");
    for n in 0..TEN {
        let crew = dir.path().join(format!("crewai_{n}"));
        std::fs::create_dir_all(&crew).unwrap();
        std::fs::copy(source.join("timed_crew.py"), crew.join("timed_crew.py")).unwrap();
        let runtime = std::fs::read_to_string(source.join("runtime.yaml")).unwrap();
        let runtime = runtime.replace("crew: crewai_timed", &format!("crew: crewai_{n}"));
        std::fs::write(crew.join("runtime.yaml"), runtime).unwrap();
    }
    let crews = Crews::load(dir.path(), &global()).expect("the copies are valid");
    let mut ten = TenCrews {
        ready: Vec::new(),
        pss_ready_mb: 0,
        pss_after_mb: 0,
    };
    for _ in 0..STARTS {
        let started = Instant::now();
        let pool = Supervisor::start(crews.as_slice(), &global()).unwrap();
        for spec in crews.as_slice() {
            pool.wait_for_state(&spec.name, CrewState::Ready).await;
        }
        ten.ready.push(started.elapsed());
        let pss = |pool: &Supervisor| -> u64 {
            let pids = pool.status().snapshot().into_iter().filter_map(|s| s.pid);
            pids.map(pss_kb).sum::<u64>() / 1024
        };
        ten.pss_ready_mb = pss(&pool);
        for id in 0..TEN_CALLS {
            let calls = crews
                .as_slice()
                .iter()
                .map(|spec| pool.call(&spec.name, goal_call(id)));
            for outcome in futures_util::future::join_all(calls).await {
                outcome.expect("the crew answers");
            }
        }
        ten.pss_after_mb = pss(&pool);
        pool.shutdown().await;
    }
    ten
}

/// A process's proportional set size: its private pages plus its share of shared ones.
fn pss_kb(pid: u32) -> u64 {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    rollup
        .lines()
        .find_map(|line| line.strip_prefix("Pss:"))
        .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
}

fn resident_mb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}

fn cold_import(python: &str) -> Vec<Duration> {
    (0..STARTS)
        .map(|_| {
            let started = Instant::now();
            let status = Command::new(python)
                .args(["-c", "import crewai"])
                .env("HOME", home().path())
                .env("CREWAI_DISABLE_TELEMETRY", "true")
                .status()
                .unwrap();
            assert!(status.success());
            started.elapsed()
        })
        .collect()
}

/// A private HOME for CrewAI's settings and kickoff database, removed afterwards.
fn home() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn percentile(samples: &[Duration], p: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank]
}

fn row(name: &str, samples: &[Duration]) {
    let show = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1e3);
    println!(
        "| {name} | {} | {} |",
        show(percentile(samples, 50.0)),
        show(percentile(samples, 99.0))
    );
}
