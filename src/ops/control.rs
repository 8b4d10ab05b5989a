//! The control socket (SPEC §8): a local socket where the running host answers
//! `live-crew health` and `live-crew status`.
//!
//! Protocol: the client writes one JSON line (`{"command":"health","max_age_ms":N}`), the
//! host answers with one JSON line (a `HealthReport`) and closes. The socket file is
//! created owner-only (0600) and removed when the host exits. A socket file whose host
//! is gone (nobody accepts) is stale and replaced; one with a live host is left alone.

use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use interprocess::local_socket::tokio::prelude::*;
use interprocess::local_socket::tokio::{Listener, Stream};
use interprocess::local_socket::{GenericFilePath, ListenerOptions};
use interprocess::os::unix::local_socket::ListenerOptionsExt;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use super::health::{self, HostState};

/// How long a client waits for the host, and the host for a client's request.
const TIMEOUT: Duration = Duration::from_secs(3);
/// How many slices of calls `state` gives: as many as `monitor` can draw on a wide
/// terminal.
const MONITOR_SLICES: usize = 200;
/// Longest request line the host reads.
const MAX_REQUEST_BYTES: u64 = 4096;

#[derive(Debug, Serialize, Deserialize)]
struct Request {
    command: String,
    #[serde(default)]
    max_age_ms: Option<u64>,
}

/// The served socket; the file is removed when this is dropped.
pub struct ControlSocket {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Why the control socket cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error(
        "control socket {0}: another live-crew host answers there; stop it or set control_socket"
    )]
    InUse(PathBuf),
    #[error(
        "control socket {0}: the path exists and is not a socket; remove it or set control_socket"
    )]
    NotASocket(PathBuf),
    #[error("control socket {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// Serves `state` at `path`, replacing a stale socket file.
/// Serves the configured socket (`control_socket`), else the default one; a default one
/// that cannot be bound (another host has it) only costs a warning.
pub async fn serve_configured(
    configured: Option<&Path>,
    state: HostState,
) -> Result<Option<ControlSocket>, BindError> {
    let Some(path) = configured else {
        let path = health::default_socket(|name| std::env::var(name).ok());
        return Ok(match serve(&path, state).await {
            Ok(served) => Some(served),
            Err(err) => {
                tracing::warn!("{err}; this host runs without a control socket");
                None
            }
        });
    };
    serve(path, state).await.map(Some)
}

pub async fn serve(path: &Path, state: HostState) -> Result<ControlSocket, BindError> {
    let io_error = |source| BindError::Io {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(BindError::NotASocket(path.to_path_buf()));
        }
        Ok(_) => {
            if connect(path).await.is_ok() {
                return Err(BindError::InUse(path.to_path_buf()));
            }
            tracing::info!(socket = %path.display(), "replacing a stale control socket");
            std::fs::remove_file(path).map_err(io_error)?;
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(io_error(err)),
    }
    let name = path.to_fs_name::<GenericFilePath>().map_err(io_error)?;
    let listener = ListenerOptions::new()
        .name(name)
        .mode(0o600)
        .reclaim_name(false)
        .create_tokio()
        .map_err(|err| match err.kind() {
            io::ErrorKind::AddrInUse => BindError::InUse(path.to_path_buf()),
            _ => io_error(err),
        })?;
    tracing::info!(socket = %path.display(), "control socket ready");
    let task = tokio::spawn(accept_loop(listener, state));
    Ok(ControlSocket {
        path: path.to_path_buf(),
        task,
    })
}

async fn accept_loop(listener: Listener, state: HostState) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                let state = state.clone();
                tokio::spawn(async move {
                    if let Err(err) = tokio::time::timeout(TIMEOUT, answer(stream, &state))
                        .await
                        .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
                    {
                        tracing::debug!("control socket client: {err}");
                    }
                });
            }
            Err(err) => {
                tracing::warn!("control socket: {err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn answer(stream: Stream, state: &HostState) -> io::Result<()> {
    let mut line = String::new();
    BufReader::new((&stream).take(MAX_REQUEST_BYTES))
        .read_line(&mut line)
        .await?;
    let reply = match serde_json::from_str::<Request>(&line) {
        Ok(request) if matches!(request.command.as_str(), "health" | "status") => {
            let max_age = request.max_age_ms.map(Duration::from_millis);
            serde_json::to_string(&state.report(max_age)).expect("reports serialise")
        }
        // What the web page's /api/state serves, for `monitor`.
        Ok(request) if request.command == "state" => state.state(MONITOR_SLICES),
        Ok(request) => {
            serde_json::json!({"error": format!("unknown command '{}'", request.command)})
                .to_string()
        }
        Err(err) => serde_json::json!({"error": format!("bad request: {err}")}).to_string(),
    };
    let mut write = &stream;
    write.write_all(reply.as_bytes()).await?;
    write.write_all(b"\n").await?;
    write.flush().await
}

async fn connect(path: &Path) -> io::Result<Stream> {
    let name = path.to_fs_name::<GenericFilePath>()?;
    tokio::time::timeout(TIMEOUT, Stream::connect(name))
        .await
        .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
}

/// The client: asks the host at `path` and returns its report as JSON.
pub async fn query(
    path: &Path,
    command: &str,
    max_age: Option<u64>,
) -> io::Result<serde_json::Value> {
    let stream = connect(path).await?;
    let mut write = &stream;
    let request = Request {
        command: command.into(),
        max_age_ms: max_age,
    };
    let mut line = serde_json::to_string(&request).expect("requests serialise");
    line.push('\n');
    let exchange = async {
        write.write_all(line.as_bytes()).await?;
        write.flush().await?;
        let mut answer = String::new();
        BufReader::new(&stream).read_line(&mut answer).await?;
        Ok::<_, io::Error>(answer)
    };
    let answer = tokio::time::timeout(TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))?;
    let value: serde_json::Value = serde_json::from_str(&answer)
        .map_err(|err| io::Error::new(io::ErrorKind::InvalidData, err))?;
    match value.get("error").and_then(|e| e.as_str()) {
        Some(error) => Err(io::Error::other(error.to_owned())),
        None => Ok(value),
    }
}

/// `status` as a table, one crew per line.
pub fn status_table(report: &serde_json::Value) -> String {
    let host = &report["host"];
    let mut out = format!(
        "host pid {} ({} mode, up {} s): {}\n",
        host["pid"],
        host["mode"].as_str().unwrap_or("?"),
        host["uptime_ms"].as_u64().unwrap_or(0) / 1000,
        if report["healthy"] == true {
            "healthy"
        } else {
            "UNHEALTHY"
        }
    );
    let nats = &report["nats"];
    if nats.is_object() {
        let committed: Vec<String> = nats["committed"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(stream, slice)| format!("{stream}@{slice}"))
            .collect();
        let role = match (nats["role"].as_str(), nats["active_host"].as_str()) {
            (Some("standby"), Some(active)) => format!("standby for {active}"),
            (role, _) => role.unwrap_or("?").to_owned(),
        };
        out += &format!(
            "nats {}, {role} (server {}, {} reconnects); committed: {}\n",
            if nats["connected"] == true {
                "connected"
            } else {
                "DISCONNECTED"
            },
            nats["server_version"].as_str().unwrap_or("?"),
            nats["reconnects"],
            if committed.is_empty() {
                "-".to_owned()
            } else {
                committed.join(", ")
            }
        );
    }
    let rows: Vec<[String; 9]> = report["crews"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|crew| {
            let text = |v: &serde_json::Value| match v {
                serde_json::Value::Null => "-".to_owned(),
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let layers: Vec<String> = crew["sandbox_layers"]
                .as_array()
                .into_iter()
                .flatten()
                .map(text)
                .collect();
            [
                text(&crew["crew"]),
                text(&crew["state"]),
                text(&crew["pid"]),
                crew["last_heartbeat_ms"]
                    .as_u64()
                    .map_or("-".into(), |ms| format!("{ms} ms")),
                text(&crew["restarts"]),
                text(&crew["errors"]),
                text(&crew["version"]),
                text(&crew["start_mode"]),
                layers.join(","),
            ]
        })
        .collect();
    let header = [
        "CREW",
        "STATE",
        "PID",
        "HEARTBEAT",
        "RESTARTS",
        "ERRORS",
        "VERSION",
        "START",
        "SANDBOX",
    ]
    .map(String::from);
    let widths: Vec<usize> = (0..9)
        .map(|i| {
            rows.iter()
                .chain([&header])
                .map(|r| r[i].len())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}
