//! Host heartbeats: a `__hb` record every `heartbeat_ms`, to the log, to
//! `--heartbeats FILE` and in distributed mode to `live.<stream>.heartbeats`, counted in
//! `heartbeats_total`.
//! Each record carries the state and runner heartbeat age of every crew, so a reader of
//! the file alone sees whether the crews are alive.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::io::AsyncWriteExt;

use super::health::HostState;
use super::metrics::Metrics;
use crate::model::Timestamp;
use crate::pool::CrewState;

#[derive(Serialize)]
struct Record<'a> {
    ts: Timestamp,
    kind: &'static str,
    seq: u64,
    pid: u32,
    uptime_ms: u64,
    crews: Vec<CrewBeat<'a>>,
}

#[derive(Serialize)]
struct CrewBeat<'a> {
    crew: &'a str,
    state: CrewState,
    last_heartbeat_ms: Option<u64>,
}

/// Where else a heartbeat record (one JSON object) goes, e.g. NATS subjects.
pub type Forward = Box<dyn Fn(&[u8]) + Send + Sync>;

/// Emits heartbeats until the task is aborted. `file` is the `--heartbeats` file,
/// already created, and its path for messages.
pub fn spawn(
    every: Duration,
    host: HostState,
    metrics: Arc<Metrics>,
    file: Option<(std::fs::File, PathBuf)>,
    forward: Option<Forward>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut file = file.map(|(file, path)| (tokio::fs::File::from_std(file), path));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for seq in 1.. {
            tick.tick().await;
            let crews = host.crews.snapshot();
            let record = Record {
                ts: Timestamp::now(),
                kind: "__hb",
                seq,
                pid: std::process::id(),
                uptime_ms: host.started.elapsed().as_millis() as u64,
                crews: crews
                    .iter()
                    .map(|c| CrewBeat {
                        crew: &c.crew,
                        state: c.state,
                        last_heartbeat_ms: c.last_heartbeat_ms,
                    })
                    .collect(),
            };
            metrics.heartbeat();
            let up = crews.iter().filter(|c| c.state.is_up()).count();
            // Not at info: a line a second says nothing the metrics and health do not.
            tracing::debug!(
                target: "live_crew::heartbeat",
                seq,
                crews = crews.len(),
                crews_up = up,
                "__hb"
            );
            let json = serde_json::to_vec(&record).expect("heartbeats serialise");
            if let Some(forward) = &forward {
                forward(&json);
            }
            if let Some((out, path)) = &mut file {
                let mut line = json;
                line.push(b'\n');
                let written = async {
                    out.write_all(&line).await?;
                    out.flush().await
                };
                if let Err(err) = written.await {
                    tracing::error!(
                        "cannot write heartbeats to {}: {err}; stopped writing them",
                        path.display()
                    );
                    file = None;
                }
            }
        }
    })
}
