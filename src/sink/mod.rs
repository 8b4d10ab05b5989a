//! Outputs (SPEC §8): where actions go ([`ActionSink`]), error records, the end-of-run
//! summary.
//!
//! The scheduler pushes each action with its deterministic [`ActionId`] in output order
//! and calls [`ActionSink::flush`] before it acknowledges the events behind them: `Ok`
//! from `flush` means every action pushed so far is durable (written to the file or pipe;
//! for a broker, acknowledged by it).

mod errors;
mod jsonl;
mod memory;
mod summary;

pub use errors::{ErrorRecord, ErrorSink, INPUT_REASONS};
pub use jsonl::JsonLinesSink;
pub use memory::{MemorySink, MemorySinkLog};
pub use summary::{CrewStats, RunSummary};

use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::model::{Action, ActionId};

/// Where a run's actions go.
pub trait ActionSink: Send {
    /// Adds an action after the ones pushed before it.
    fn push(&mut self, action: &Action, id: ActionId<'_>);

    /// An error record the run reported (it is logged and written to `--errors`
    /// anyway); a sink that also carries error records sends it with the next flush.
    fn push_error(&mut self, _record: &ErrorRecord) {}

    /// Hands buffered actions on once enough have gathered, waiting if the destination
    /// lags (back-pressure); durable or not. Batch runs call this between steps.
    fn flush_if_full(&mut self) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// Makes every action pushed so far durable; `Ok` only once it is.
    fn flush(&mut self) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// Flushes and closes the sink at the end of the run.
    fn finish(self) -> impl Future<Output = Result<(), SinkError>> + Send;
}

/// Why actions could not be made durable.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Nobody reads the output any more (a closed pipe): the run may stop early, and
    /// that is not an error of its own.
    #[error("the output was closed")]
    Closed,
    #[error(transparent)]
    Output(#[from] OutputError),
}

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
