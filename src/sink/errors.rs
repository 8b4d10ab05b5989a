//! Error records (SPEC §8): logged, appended to `--errors FILE`, counted by reason.

use std::collections::BTreeMap;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

use super::OutputError;
use crate::model::Timestamp;
use crate::ops::metrics::Metrics;

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
    /// A broker message's stream sequence (distributed mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
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

#[cfg(test)]
mod tests {
    use super::*;

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
            seq: None,
        };
        assert_eq!(
            serde_json::to_string(&record).unwrap(),
            r#"{"ts":null,"stream_id":null,"slice":null,"crew":null,"reason":"invalid_event","message":"line 3: bad","line":3}"#
        );
    }
}
