//! Supervisor benchmark (issue: sandboxed crew runner host). Run with
//! `cargo bench --bench supervisor`. Prints a Markdown table for the README.
//!
//! - call round trip through the host to the bundled Python runner, side by side with a
//!   bare pipe echo of a stdlib Python child fed the same line;
//! - spawn-to-ready of a stdlib Python runner: plain, then with the sandbox's optional
//!   layers switched on one after another (interleaved, so drift hits all alike), and
//!   the one-time `Sandbox::probe` at host start;
//! - how far past its deadline a stopped heartbeat is detected.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::goal_call;
use live_crew::config::{CrewSpec, GlobalConfig};
use live_crew::model::Event;
use live_crew::pool::CrewPool;
use live_crew::pool::CrewState;
use live_crew::protocol::HostMessage;
use live_crew::supervisor::Supervisor;

const ROUND_TRIPS: usize = 5000;
const WARMUP: usize = 500;
const BLOCK: usize = 250;
const SPAWNS: usize = 30;
const HEARTBEAT_STOPS: usize = 10;

fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LIVE_CREW_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .init();
    // The same runtime as the `live-crew` binary: one thread.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let python = std::env::var("LIVE_CREW_PYTHON").unwrap_or_else(|_| "python3".into());
    let line = HostMessage::Call(goal_call(0)).encode();

    println!("| measurement | p50 | p99 |");
    println!("|---|---|---|");
    if std::env::args().any(|arg| arg == "spawn") {
        spawn_rows(&runtime, &python);
        println!("\n({SPAWNS} spawns per variant)");
        return;
    }
    let trips = runtime.block_on(round_trips(&python, &line));
    row("bare Python echo round trip", &trips.bare);
    row(
        &format!("bare Python echo, {BUSY_US} µs of work per line"),
        &trips.bare_busy,
    );
    row("host → minimal protocol runner round trip", &trips.minimal);
    row(
        &format!("host → minimal runner, {BUSY_US} µs of work per call"),
        &trips.minimal_busy,
    );
    row("host → bundled Python runner round trip", &trips.bundled);
    let p50_minus = |samples: &[Duration], base: &[Duration]| {
        micros(percentile(samples, 50.0)) - micros(percentile(base, 50.0))
    };
    println!(
        "| host share per call: minimal runner − bare echo (p50) | {:.1} µs | |",
        p50_minus(&trips.minimal, &trips.bare)
    );
    println!(
        "| host share with {BUSY_US} µs of work: minimal − bare echo, both working (p50) | {:.1} µs | |",
        p50_minus(&trips.minimal_busy, &trips.bare_busy)
    );
    println!(
        "| whole overhead per call: bundled runner − bare echo (p50) | {:.1} µs | |",
        p50_minus(&trips.bundled, &trips.bare)
    );
    spawn_rows(&runtime, &python);
    let heartbeat = runtime.block_on(heartbeat_detection());
    row(
        "stopped heartbeat: detection past the 3 × heartbeat_ms deadline",
        &heartbeat,
    );
    println!(
        "\n(message: {} bytes; {ROUND_TRIPS} round trips, {SPAWNS} spawns, {HEARTBEAT_STOPS} heartbeat stops)",
        line.len()
    );
}

/// Spawn-to-ready per sandbox variant, and the one-time probe.
fn spawn_rows(runtime: &tokio::runtime::Runtime, python: &str) {
    let (plain, forked, layered) = runtime.block_on(spawn_to_ready(python));
    let probe: Vec<Duration> = (0..SPAWNS)
        .map(|_| {
            let started = Instant::now();
            let _ = live_crew_sandbox::Sandbox::probe();
            started.elapsed()
        })
        .collect();
    row("spawn-to-ready, plain spawn (no sandbox)", &plain);
    row(
        "spawn-to-ready, plain spawn through fork (empty pre-exec)",
        &forked,
    );
    for (name, samples) in &layered {
        row(&format!("spawn-to-ready, {name}"), samples);
    }
    row("Sandbox::probe, once at host start", &probe);
}

/// A stdlib Python child that echoes each line back, driven over blocking pipes.
struct BareEcho {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: BufReader<std::process::ChildStdout>,
    answer: Vec<u8>,
}

impl BareEcho {
    /// An echo that first spins for `busy_us` per line.
    fn start(python: &str, busy_us: u32) -> Self {
        let script = "import sys, time\nr, w = sys.stdin.buffer, sys.stdout.buffer\n\
                      busy = int(sys.argv[1]) / 1e6\nfor line in r:\n    \
                      if busy:\n        end = time.perf_counter() + busy\n        \
                      while time.perf_counter() < end: pass\n    \
                      w.write(line)\n    w.flush()\n";
        let mut child = Command::new(python)
            .args(["-c", script, &busy_us.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        BareEcho {
            stdin: child.stdin.take().unwrap(),
            stdout: BufReader::new(child.stdout.take().unwrap()),
            child,
            answer: Vec::new(),
        }
    }

    fn round_trip(&mut self, line: &[u8]) -> Duration {
        let started = Instant::now();
        self.stdin.write_all(line).unwrap();
        self.answer.clear();
        self.stdout.read_until(b'\n', &mut self.answer).unwrap();
        started.elapsed()
    }
}

/// Busy work per line in the `_busy` variants: about what the bundled runner spends
/// decoding a call and encoding its answer.
const BUSY_US: u32 = 15;

/// Round-trip samples of each variant.
#[derive(Default)]
struct RoundTrips {
    bare: Vec<Duration>,
    bare_busy: Vec<Duration>,
    minimal: Vec<Duration>,
    minimal_busy: Vec<Duration>,
    bundled: Vec<Duration>,
}

/// Round trips of the bare echo, the host with the minimal runner, and the host with the
/// bundled runner, measured in alternating blocks so that this VM's drift in timing
/// affects all alike. The `_busy` variants spin for [`BUSY_US`] per line: on this VM a
/// waiting side whose vCPU goes idle for that long pays a wake-up far larger than the
/// wait, with or without the host in between.
async fn round_trips(python: &str, line: &[u8]) -> RoundTrips {
    let mut bare = BareEcho::start(python, 0);
    let mut bare_busy = BareEcho::start(python, BUSY_US);
    let crews = [
        crew(&fixture("benches/fixtures/crews/echo/runtime.yaml")),
        crew(&fixture("benches/fixtures/crews/minimal/runtime.yaml")),
        crew(&fixture("benches/fixtures/crews/minimal/busy.runtime.yaml")),
    ];
    let pool = Supervisor::start(&crews, &global()).unwrap();
    for crew in ["echo", "minimal", "minimal_busy"] {
        pool.wait_for_state(crew, CrewState::Ready).await;
    }
    let mut trips = RoundTrips::default();
    let mut id = 0;
    for block in 0..(WARMUP + ROUND_TRIPS) / BLOCK {
        let keep = block * BLOCK >= WARMUP;
        for (echo, samples) in [
            (&mut bare, &mut trips.bare),
            (&mut bare_busy, &mut trips.bare_busy),
        ] {
            for _ in 0..BLOCK {
                let sample = echo.round_trip(line);
                if keep {
                    samples.push(sample);
                }
            }
        }
        for (crew, samples) in [
            ("minimal", &mut trips.minimal),
            ("minimal_busy", &mut trips.minimal_busy),
            ("echo", &mut trips.bundled),
        ] {
            for _ in 0..BLOCK {
                id += 1;
                let started = Instant::now();
                pool.call(crew, goal_call(id))
                    .await
                    .expect("the crew answers");
                if keep {
                    samples.push(started.elapsed());
                }
            }
        }
    }
    for echo in [bare, bare_busy] {
        drop(echo.stdin);
        let mut child = echo.child;
        child.wait().unwrap();
    }
    pool.shutdown().await;
    trips
}

fn global() -> GlobalConfig {
    GlobalConfig {
        heartbeat_ms: 100,
        kill_grace_ms: 500,
        restart_backoff_ms: 10,
        restart_backoff_max_ms: 10,
        ..GlobalConfig::default()
    }
}

fn crew(file: &Path) -> CrewSpec {
    CrewSpec::load(file, &global()).expect("benchmark crew is valid")
}

fn fixture(relative: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// Sandbox variants, each adding one optional layer to the one before: the layers the
/// variant switches off (`sandbox.disable`).
const VARIANTS: [(&str, &[&str]); 6] = [
    (
        "basic layers only (session, pdeathsig, rlimits, close_fds, env)",
        &[
            "pids_cgroup",
            "memory_cgroup",
            "netns",
            "pid_namespace",
            "landlock",
            "seccomp",
        ],
    ),
    (
        "+ pids and memory cgroups",
        &["netns", "pid_namespace", "landlock", "seccomp"],
    ),
    ("+ netns", &["pid_namespace", "landlock", "seccomp"]),
    ("+ pid_namespace", &["landlock", "seccomp"]),
    ("+ landlock", &["seccomp"]),
    ("+ seccomp = full sandbox", &[]),
];

/// Spawn-to-ready: from the moment the crew's actor may run (the single-thread runtime
/// runs it only once this task waits) to `ready`. `Supervisor::start`, which probes
/// the sandbox and extracts the bundled runner once per host, is not timed.
/// Samples of the plain spawn, the plain spawn through `fork`, and each variant.
type SpawnSamples = (
    Vec<Duration>,
    Vec<Duration>,
    Vec<(&'static str, Vec<Duration>)>,
);

async fn spawn_to_ready(python: &str) -> SpawnSamples {
    let crews = [crew(&fixture("benches/fixtures/crews/echo/runtime.yaml"))];
    // The plain spawn loads the same runner copy (with its build-time bytecode) the host
    // would.
    let runners = live_crew::supervisor::bundled::BundledRunners::extract().unwrap();
    let mut plain = Vec::with_capacity(SPAWNS);
    let mut forked = Vec::with_capacity(SPAWNS);
    let mut layered: Vec<(&str, Vec<Duration>)> = VARIANTS
        .iter()
        .map(|(name, _)| (*name, Vec::new()))
        .collect();
    for _ in 0..SPAWNS {
        plain.push(plain_spawn_to_ready(python, runners.python_path(), false).await);
        forked.push(plain_spawn_to_ready(python, runners.python_path(), true).await);
        for ((_, off), (_, samples)) in VARIANTS.iter().zip(&mut layered) {
            let mut config = global();
            config.sandbox.disable = off.iter().map(|layer| layer.to_string()).collect();
            let pool = Supervisor::start(&crews, &config).unwrap();
            let started = Instant::now();
            pool.wait_for_state("echo", CrewState::Ready).await;
            samples.push(started.elapsed());
            pool.shutdown().await;
        }
    }
    (plain, forked, layered)
}

/// The bundled runner started with a plain `tokio::process::Command` (environment
/// cleared as the sandbox does, so no host PYTHON* variable changes its start), `hello`
/// to `ready`.
///
/// With `forked`, an empty pre-exec closure makes std `fork` instead of `posix_spawn`,
/// as it must for the sandbox's pre-exec sequence.
async fn plain_spawn_to_ready(python: &str, runner_path: &Path, forked: bool) -> Duration {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let spec = crew(&fixture("benches/fixtures/crews/echo/runtime.yaml"));
    let hello = HostMessage::Hello(live_crew::protocol::Hello {
        protocol: live_crew::protocol::PROTOCOL_VERSION,
        crew: spec.name.clone(),
        crew_dir: spec.dir.display().to_string(),
        config: spec.document.clone(),
        heartbeat_ms: 1000,
    })
    .encode();
    let started = Instant::now();
    let mut command = tokio::process::Command::new(python);
    command
        .args(["-c", "from live_crew_runner.serve import main; main()"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("PYTHONPATH", runner_path)
        .env("LIVE_CREW_CREW_DIR", &spec.dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    if forked {
        // SAFETY: the closure does nothing, so it is trivially async-signal-safe.
        unsafe {
            command.pre_exec(|| Ok(()));
        }
    }
    let mut child = command.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&hello).await.unwrap();
    let mut ready = String::new();
    tokio::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut ready)
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert!(ready.contains("ready"), "{ready}");
    drop(stdin);
    let _ = child.wait().await;
    elapsed
}

/// The hostile runner sends one last heartbeat and stops; the host must fail the call
/// 3 × heartbeat_ms later. What is measured is the time beyond that deadline.
async fn heartbeat_detection() -> Vec<Duration> {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("silent");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        fixture("tests/fixtures/hostile/hostile_runner.py"),
        dir.join("hostile_runner.py"),
    )
    .unwrap();
    std::fs::write(
        dir.join("runtime.yaml"),
        "crew: silent\ntriggers: ['*']\nmax_errors: 1000\nrunner: {kind: command, command: [\"./hostile_runner.py\"]}\n",
    )
    .unwrap();
    let config = global();
    let window = Duration::from_millis(3 * config.heartbeat_ms);
    let crews = [crew(&dir.join("runtime.yaml"))];
    let pool = Supervisor::start(&crews, &config).unwrap();
    let mut samples = Vec::with_capacity(HEARTBEAT_STOPS);
    for i in 0..HEARTBEAT_STOPS {
        pool.wait_for_state("silent", CrewState::Ready).await;
        let mut call = goal_call(i as u64);
        let stop = Event::from_json(
            r#"{"ts":"2025-06-01T18:00:01Z","kind":"k","stream_id":"match-1","payload":{"do":"stop_heartbeats"}}"#,
        )
        .unwrap();
        call.events = vec![Arc::new(stop)];
        let started = Instant::now();
        let failure = pool
            .call("silent", call)
            .await
            .expect_err("heartbeat failure");
        samples.push(started.elapsed().saturating_sub(window));
        assert_eq!(failure.reason.as_str(), "heartbeat");
    }
    pool.shutdown().await;
    samples
}

fn percentile(samples: &[Duration], p: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn row(name: &str, samples: &[Duration]) {
    let show = |d: Duration| {
        if d >= Duration::from_millis(1) {
            format!("{:.2} ms", d.as_secs_f64() * 1e3)
        } else {
            format!("{:.1} µs", micros(d))
        }
    };
    println!(
        "| {name} | {} | {} |",
        show(percentile(samples, 50.0)),
        show(percentile(samples, 99.0))
    );
}
