//! Event input (SPEC §1): where events come from, as the scheduler sees it.
//!
//! An [`EventSource`] delivers validated events (or the errors of rejected ones) with a
//! sequence number, and is told through [`EventSource::ack_through`] when everything up to
//! a sequence is processed and its effects are durable. The bundled sources read a JSON
//! array file, a JSON Lines file, or JSON Lines on stdin (`reader.rs`).

mod json_array;
mod memory;
mod pacer;
mod parse;
mod reader;

pub use memory::{MemoryFeed, MemorySource};
pub use parse::{MAX_EVENT_DEPTH, parse_event};
pub use reader::{ReaderSource, open};

use std::fmt;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;

use crate::model::SharedEvent;

/// One event (or the error of a rejected one) as a source delivers it.
#[derive(Debug)]
pub struct Delivery {
    /// Increases with every delivery of a source; what [`EventSource::ack_through`] names.
    pub seq: u64,
    pub item: InputItem,
}

/// Where the scheduler's events come from.
pub trait EventSource: Send {
    /// The next events in delivery order; `None` once the input has ended. Cancel-safe:
    /// the scheduler polls it beside its other work, and drops the future when that work
    /// comes first.
    fn next(&mut self) -> impl Future<Output = Option<Vec<Delivery>>> + Send;

    /// Every delivery up to and including `seq` is processed, and what it caused (actions,
    /// context, error records) is durable: a durable source may forget it.
    fn ack_through(&mut self, seq: u64) -> impl Future<Output = Result<(), SourceError>> + Send;

    /// Whether acknowledgements matter. A source that cannot deliver again (a file,
    /// stdin) says no, so the scheduler need not make its outputs durable slice by slice.
    fn wants_acks(&self) -> bool;
}

/// A source could not take an acknowledgement.
#[derive(Debug, thiserror::Error)]
#[error("cannot acknowledge events through {seq}: {reason}")]
pub struct SourceError {
    pub seq: u64,
    pub reason: String,
}

/// The `--events` argument: a file, or `-` for stdin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputArg {
    File(PathBuf),
    /// JSON Lines on standard input.
    Stdin,
}

impl InputArg {
    /// `-` means stdin.
    pub fn from_arg(arg: &Path) -> InputArg {
        if arg == Path::new("-") {
            InputArg::Stdin
        } else {
            InputArg::File(arg.to_path_buf())
        }
    }
}

/// An input event that was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    pub at: InputPlace,
    pub message: String,
}

/// Where a rejected event was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputPlace {
    /// In a file or on stdin: the 1-based line where the event starts, and the 0-based
    /// element index in a JSON array file.
    Line { line: u64, index: Option<u64> },
    /// A broker's message: its stream sequence, and the stream its subject names.
    Message { seq: u64, stream: String },
}

impl InputError {
    /// An error at `line` (and array element `index`).
    pub fn at_line(line: u64, index: Option<u64>, message: String) -> InputError {
        InputError {
            at: InputPlace::Line { line, index },
            message,
        }
    }
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.at {
            InputPlace::Line {
                line,
                index: Some(index),
            } => write!(f, "line {line} (element {index}): {}", self.message),
            InputPlace::Line { line, index: None } => write!(f, "line {line}: {}", self.message),
            InputPlace::Message { seq, stream } => {
                write!(f, "message {seq} of stream '{stream}': {}", self.message)
            }
        }
    }
}

pub type InputItem = Result<SharedEvent, InputError>;

/// The input cannot be opened at all; a usage error.
#[derive(Debug, thiserror::Error)]
#[error("cannot read events from {path}: {reason}; check --events")]
pub struct OpenError {
    pub path: PathBuf,
    /// Not a `source`: the message already says it, and error chains would repeat it.
    pub reason: io::Error,
}

/// How much of an input file has been read, for a progress display.
#[derive(Debug, Default)]
pub struct Progress {
    pub bytes_read: AtomicU64,
    pub total_bytes: u64,
}
