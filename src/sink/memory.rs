//! An action sink in memory, for tests of the scheduler: it keeps the actions as the
//! JSON Lines sink would write them, records which were made durable, and can be told to
//! fail its flushes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::{ActionSink, OutputError, SinkError};
use crate::model::{Action, ActionId};

/// What a [`MemorySink`] saw; shared with the test that reads it.
#[derive(Debug, Default)]
pub struct MemorySinkLog {
    /// The actions pushed, as JSON Lines.
    pub json_lines: Vec<u8>,
    /// Their ids, in order.
    pub ids: Vec<String>,
    /// How many of them a successful flush made durable.
    pub durable: usize,
    /// Flushes that failed.
    pub failed_flushes: usize,
}

/// Keeps actions in memory; a `flush` with actions to make durable fails while
/// `fail_flush` is set.
#[derive(Debug, Clone, Default)]
pub struct MemorySink {
    pub log: Arc<Mutex<MemorySinkLog>>,
    pub fail_flush: Arc<AtomicBool>,
}

impl MemorySink {
    fn sync(&self) -> Result<(), SinkError> {
        let mut log = self.log.lock().expect("memory sink lock");
        if log.durable == log.ids.len() {
            return Ok(()); // nothing new to make durable
        }
        if self.fail_flush.load(Ordering::Relaxed) {
            log.failed_flushes += 1;
            return Err(SinkError::Output(OutputError {
                what: "actions",
                path: "<memory>".into(),
                source: std::io::Error::other("flush failed on purpose"),
            }));
        }
        log.durable = log.ids.len();
        Ok(())
    }
}

impl ActionSink for MemorySink {
    fn push(&mut self, action: &Action, id: ActionId<'_>) {
        let mut log = self.log.lock().expect("memory sink lock");
        action.write_json(&mut log.json_lines);
        log.json_lines.push(b'\n');
        log.ids.push(id.to_string());
    }

    async fn flush_if_full(&mut self) -> Result<(), SinkError> {
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), SinkError> {
        self.sync()
    }

    async fn finish(self) -> Result<(), SinkError> {
        self.sync()
    }
}
