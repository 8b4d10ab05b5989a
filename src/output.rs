//! Outputs (SPEC §8): actions as JSON Lines, error records, the end-of-run summary and a
//! progress line.
//!
//! Actions are serialised into a buffer on the scheduler task and written by a dedicated
//! thread, so slow disks or pipes never block the runtime; the bounded hand-over gives
//! back-pressure. A closed pipe on stdout ends output quietly, as in ripgrep.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, IsTerminal, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;

use crate::input::Progress;
use crate::metrics::Metrics;
use crate::model::{Action, Timestamp, push_json_timestamp};

/// Actions are handed to the writer thread in chunks of about this size.
const CHUNK_BYTES: usize = 64 * 1024;
/// Chunks in flight to the writer thread.
const CHUNKS_IN_FLIGHT: usize = 8;

/// An output file could not be opened or written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {what} to {path}: {source}")]
pub struct OutputError {
    pub what: &'static str,
    pub path: PathBuf,
    pub source: io::Error,
}

/// Creates (or truncates) a file readable only by its owner.
pub fn create_private(path: &Path, what: &'static str) -> Result<File, OutputError> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| OutputError {
            what,
            path: path.to_path_buf(),
            source,
        })
}

/// Writes actions as JSON Lines on a background thread.
pub struct ActionSink {
    buf: Vec<u8>,
    /// The JSON of the last action's timestamp: consecutive actions mostly share it.
    ts_json: (Option<Timestamp>, Vec<u8>),
    tx: Option<mpsc::Sender<Vec<u8>>>,
    closed: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<io::Result<()>>,
    name: PathBuf,
}

impl ActionSink {
    /// `name` is used in error messages (`<stdout>` or the file).
    pub fn new(writer: Box<dyn Write + Send>, name: PathBuf) -> ActionSink {
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(CHUNKS_IN_FLIGHT);
        let closed = Arc::new(AtomicBool::new(false));
        let thread_closed = closed.clone();
        let thread = std::thread::Builder::new()
            .name("live-crew-output".into())
            .spawn(move || {
                let mut writer = writer;
                let result = (|| {
                    while let Some(chunk) = rx.blocking_recv() {
                        writer.write_all(&chunk)?;
                    }
                    writer.flush()
                })();
                match result {
                    Err(err) if err.kind() == io::ErrorKind::BrokenPipe => {
                        thread_closed.store(true, Ordering::Relaxed);
                        Ok(())
                    }
                    other => other,
                }
            })
            .expect("spawning the output thread");
        ActionSink {
            buf: Vec::with_capacity(CHUNK_BYTES + 4096),
            ts_json: (None, Vec::new()),
            tx: Some(tx),
            closed,
            thread,
            name,
        }
    }

    pub fn push(&mut self, action: &Action) {
        if self.ts_json.0 != Some(action.ts) {
            self.ts_json.1.clear();
            push_json_timestamp(&mut self.ts_json.1, action.ts);
            self.ts_json.0 = Some(action.ts);
        }
        action.write_json_stamped(&mut self.buf, &self.ts_json.1);
        self.buf.push(b'\n');
    }

    /// Hands a full buffer to the writer, waiting if it lags.
    pub async fn flush_if_full(&mut self) {
        if self.buf.len() >= CHUNK_BYTES {
            self.send().await;
        }
    }

    async fn send(&mut self) {
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK_BYTES + 4096));
        if let Some(tx) = &self.tx
            && tx.send(chunk).await.is_err()
        {
            // The writer stopped (closed pipe or an error that `finish` reports).
            self.tx = None;
            self.closed.store(true, Ordering::Relaxed);
        }
    }

    /// Hands whatever is buffered to the writer (live mode: after every commit).
    pub async fn flush(&mut self) {
        if !self.buf.is_empty() {
            self.send().await;
        }
    }

    /// Whether nobody reads the output any more; the run may stop early.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Writes what is left and waits for the writer thread.
    pub async fn finish(mut self) -> Result<(), OutputError> {
        self.send().await;
        drop(self.tx.take());
        let thread = self.thread;
        let result = tokio::task::spawn_blocking(move || thread.join())
            .await
            .expect("joining the output thread")
            .expect("the output thread does not panic");
        result.map_err(|source| OutputError {
            what: "actions",
            path: self.name,
            source,
        })
    }
}

/// One error record (SPEC §8). Input errors carry the `line` (and array `index`) of the
/// bad event; the other fields are null when unknown.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorRecord {
    pub ts: Option<Timestamp>,
    pub stream_id: Option<String>,
    pub slice: Option<i64>,
    pub crew: Option<String>,
    pub reason: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<u64>,
}

/// Reasons that describe rejected or late input, which `--allow-invalid` accepts.
pub const INPUT_REASONS: [&str; 3] = ["invalid_event", "late_event", "slice_overflow"];

/// Logs error records, appends them to `--errors FILE`, and counts them by reason.
pub struct ErrorSink {
    file: Option<(BufWriter<Box<dyn Write + Send>>, PathBuf)>,
    counts: BTreeMap<&'static str, u64>,
    metrics: Option<Arc<Metrics>>,
}

impl ErrorSink {
    /// `file` is the `--errors` destination and its name for messages.
    pub fn new(file: Option<(Box<dyn Write + Send>, PathBuf)>) -> ErrorSink {
        ErrorSink {
            file: file.map(|(file, path)| (BufWriter::new(file), path)),
            counts: BTreeMap::new(),
            metrics: None,
        }
    }

    /// Also counts every record in `errors_total{crew,reason}`.
    pub fn count_into(&mut self, metrics: Arc<Metrics>) {
        self.metrics = Some(metrics);
    }

    pub fn report(&mut self, record: ErrorRecord) -> Result<(), OutputError> {
        *self.counts.entry(record.reason).or_default() += 1;
        if let Some(metrics) = &self.metrics {
            metrics.error(record.crew.as_deref(), record.reason);
        }
        tracing::warn!(
            reason = record.reason,
            stream = record.stream_id.as_deref(),
            slice = record.slice,
            crew = record.crew.as_deref(),
            line = record.line,
            "{}",
            record.message
        );
        if let Some((file, path)) = &mut self.file {
            let written = serde_json::to_writer(&mut *file, &record)
                .map_err(io::Error::from)
                .and_then(|()| file.write_all(b"\n"));
            written.map_err(|source| OutputError {
                what: "errors",
                path: path.clone(),
                source,
            })?;
        }
        Ok(())
    }

    /// Writes buffered records to the file (live mode: as they happen).
    pub fn flush(&mut self) -> Result<(), OutputError> {
        if let Some((file, path)) = &mut self.file {
            file.flush().map_err(|source| OutputError {
                what: "errors",
                path: path.clone(),
                source,
            })?;
        }
        Ok(())
    }

    pub fn counts(&self) -> &BTreeMap<&'static str, u64> {
        &self.counts
    }

    pub fn finish(mut self) -> Result<(), OutputError> {
        self.flush()
    }
}

/// Per-crew call statistics.
#[derive(Debug, Clone, Default)]
pub struct CrewStats {
    pub calls: u64,
    pub failures: u64,
    /// Call durations in microseconds.
    pub durations_us: Vec<u64>,
}

impl CrewStats {
    /// The `p`-th percentile (0..=100) of call time, by nearest rank.
    pub fn percentile_ms(&self, p: usize) -> f64 {
        let mut sorted = self.durations_us.clone();
        sorted.sort_unstable();
        if sorted.is_empty() {
            return 0.0;
        }
        let rank = (p * sorted.len()).div_ceil(100).clamp(1, sorted.len());
        sorted[rank - 1] as f64 / 1000.0
    }
}

/// What a run did; printed on stderr at the end.
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    pub events: u64,
    /// Slices that held at least one event, over all streams.
    pub slices: u64,
    pub actions: u64,
    pub late_events: u64,
    pub context_conflicts: u64,
    /// Events over `max_events_per_slice`, dropped or collapsed.
    pub overflowed_events: u64,
    /// `replay --from-timestamp`: events of slices before it, not run.
    pub skipped_events: u64,
    /// Error records by reason.
    pub errors: BTreeMap<&'static str, u64>,
    /// Per crew, in run order.
    pub crews: Vec<(String, CrewStats)>,
    pub elapsed: Duration,
}

impl RunSummary {
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Errors that are not about the input.
    pub fn run_errors(&self) -> u64 {
        self.errors
            .iter()
            .filter(|(reason, _)| !INPUT_REASONS.contains(reason))
            .map(|(_, count)| count)
            .sum()
    }
}

impl fmt::Display for RunSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        let rate = if secs > 0.0 {
            self.events as f64 / secs
        } else {
            0.0
        };
        writeln!(
            f,
            "live-crew: {} events, {} slices, {} actions, {} errors in {secs:.2}s ({rate:.0} events/s)",
            self.events,
            self.slices,
            self.actions,
            self.error_count()
        )?;
        if !self.errors.is_empty() {
            let by_reason: Vec<String> = self
                .errors
                .iter()
                .map(|(reason, count)| format!("{reason}: {count}"))
                .collect();
            writeln!(f, "  errors: {}", by_reason.join(", "))?;
        }
        if self.late_events > 0 || self.context_conflicts > 0 {
            writeln!(
                f,
                "  late events: {}, context conflicts: {}",
                self.late_events, self.context_conflicts
            )?;
        }
        if self.skipped_events > 0 {
            writeln!(
                f,
                "  events in slices before --from-timestamp (not replayed): {}",
                self.skipped_events
            )?;
        }
        if self.overflowed_events > 0 {
            writeln!(
                f,
                "  events over max_events_per_slice (dropped or collapsed): {}",
                self.overflowed_events
            )?;
        }
        for (name, stats) in &self.crews {
            writeln!(
                f,
                "  crew {name}: {} calls, {} failed, p50 {:.1} ms, p99 {:.1} ms",
                stats.calls,
                stats.failures,
                stats.percentile_ms(50),
                stats.percentile_ms(99)
            )?;
        }
        Ok(())
    }
}

/// Shows how much of the input file has been read, on a terminal only. Stops when the
/// returned handle is dropped.
pub fn show_progress(progress: Option<Arc<Progress>>) -> Option<ProgressLine> {
    let progress = progress.filter(|p| p.total_bytes > 0 && io::stderr().is_terminal())?;
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tick.tick().await;
            let read = progress.bytes_read.load(Ordering::Relaxed);
            let percent = read.saturating_mul(100) / progress.total_bytes;
            let filled = (percent / 5) as usize;
            eprint!(
                "\r[{}{}] {percent:>3}% of {} KiB",
                "#".repeat(filled),
                " ".repeat(20 - filled.min(20)),
                progress.total_bytes / 1024
            );
        }
    });
    Some(ProgressLine(task))
}

pub struct ProgressLine(tokio::task::JoinHandle<()>);

impl Drop for ProgressLine {
    fn drop(&mut self) {
        self.0.abort();
        eprint!("\r\x1b[2K");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let stats = CrewStats {
            calls: 100,
            failures: 0,
            durations_us: (1..=100).map(|ms| ms * 1000).collect(),
        };
        assert_eq!(stats.percentile_ms(50), 50.0);
        assert_eq!(stats.percentile_ms(99), 99.0);
        assert_eq!(CrewStats::default().percentile_ms(99), 0.0);
    }

    #[test]
    fn error_records_have_the_documented_fields() {
        let record = ErrorRecord {
            ts: None,
            stream_id: None,
            slice: None,
            crew: None,
            reason: "invalid_event",
            message: "line 3: bad".into(),
            line: Some(3),
            index: None,
        };
        assert_eq!(
            serde_json::to_string(&record).unwrap(),
            r#"{"ts":null,"stream_id":null,"slice":null,"crew":null,"reason":"invalid_event","message":"line 3: bad","line":3}"#
        );
    }

    /// A writer whose reader went away.
    struct ClosedPipe;
    impl Write for ClosedPipe {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_closed_pipe_is_not_an_error() {
        let mut sink = ActionSink::new(Box::new(ClosedPipe), "<stdout>".into());
        sink.buf.extend_from_slice(&[b'x'; CHUNK_BYTES]);
        sink.flush_if_full().await;
        sink.finish().await.unwrap();
    }
}
