//! Actions as JSON Lines on stdout or a file.
//!
//! Actions are serialised into a buffer on the scheduler task and written by a dedicated
//! thread, so slow disks or pipes never block the runtime; the bounded hand-over gives
//! back-pressure. A closed pipe on stdout ends output quietly, as in ripgrep.

use std::io::{self, Write};
use std::path::PathBuf;

use tokio::sync::{mpsc, oneshot};

use super::{ActionSink, OutputError, SinkError};
use crate::model::{Action, ActionId, Timestamp, push_json_timestamp};

/// Actions are handed to the writer thread in chunks of about this size.
const CHUNK_BYTES: usize = 64 * 1024;
/// Chunks in flight to the writer thread.
const CHUNKS_IN_FLIGHT: usize = 8;

/// What the writer thread is asked to do.
enum Request {
    Chunk(Vec<u8>),
    /// Flush the destination, then say so: every chunk before is written.
    Sync(oneshot::Sender<()>),
}

/// Writes actions as JSON Lines on a background thread. The action ids are not written:
/// the line already names stream, slice and crew, and the order gives the rest.
pub struct JsonLinesSink {
    buf: Vec<u8>,
    /// The JSON of the last action's timestamp: consecutive actions mostly share it.
    ts_json: (Option<Timestamp>, Vec<u8>),
    /// `None` once the writer stopped (a closed pipe, or an error `finish` reports).
    tx: Option<mpsc::Sender<Request>>,
    thread: std::thread::JoinHandle<io::Result<()>>,
    name: PathBuf,
}

impl JsonLinesSink {
    /// `name` is used in error messages (`<stdout>` or the file).
    pub fn new(writer: Box<dyn io::Write + Send>, name: PathBuf) -> JsonLinesSink {
        let (tx, mut rx) = mpsc::channel::<Request>(CHUNKS_IN_FLIGHT);
        let thread = std::thread::Builder::new()
            .name("live-crew-output".into())
            .spawn(move || {
                let mut writer = writer;
                let result = (|| {
                    while let Some(request) = rx.blocking_recv() {
                        match request {
                            Request::Chunk(chunk) => writer.write_all(&chunk)?,
                            Request::Sync(done) => {
                                writer.flush()?;
                                let _ = done.send(());
                            }
                        }
                    }
                    writer.flush()
                })();
                match result {
                    Err(err) if err.kind() == io::ErrorKind::BrokenPipe => Ok(()),
                    other => other,
                }
            })
            .expect("spawning the output thread");
        JsonLinesSink {
            buf: Vec::with_capacity(CHUNK_BYTES + 4096),
            ts_json: (None, Vec::new()),
            tx: Some(tx),
            thread,
            name,
        }
    }

    /// Hands `request` to the writer; `Closed` if the writer has stopped.
    async fn send(&mut self, request: Request) -> Result<(), SinkError> {
        let sent = match &self.tx {
            Some(tx) => tx.send(request).await.is_ok(),
            None => false,
        };
        if !sent {
            self.tx = None;
            return Err(SinkError::Closed);
        }
        Ok(())
    }

    async fn send_buffer(&mut self) -> Result<(), SinkError> {
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK_BYTES + 4096));
        self.send(Request::Chunk(chunk)).await
    }
}

impl ActionSink for JsonLinesSink {
    fn push(&mut self, action: &Action, _id: ActionId<'_>) {
        if self.ts_json.0 != Some(action.ts) {
            self.ts_json.1.clear();
            push_json_timestamp(&mut self.ts_json.1, action.ts);
            self.ts_json.0 = Some(action.ts);
        }
        action.write_json_stamped(&mut self.buf, &self.ts_json.1);
        self.buf.push(b'\n');
    }

    async fn flush_if_full(&mut self) -> Result<(), SinkError> {
        if self.buf.len() >= CHUNK_BYTES {
            self.send_buffer().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), SinkError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.send_buffer().await?;
        let (done, written) = oneshot::channel();
        self.send(Request::Sync(done)).await?;
        written.await.map_err(|_| SinkError::Closed)
    }

    async fn finish(mut self) -> Result<(), SinkError> {
        // A writer that already stopped says why below.
        let _ = self.send_buffer().await;
        drop(self.tx.take());
        let thread = self.thread;
        let result = tokio::task::spawn_blocking(move || thread.join())
            .await
            .expect("joining the output thread")
            .expect("the output thread does not panic");
        result.map_err(|source| {
            SinkError::Output(OutputError {
                what: "actions",
                path: self.name,
                source,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer whose reader went away.
    struct ClosedPipe;
    impl io::Write for ClosedPipe {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_closed_pipe_is_not_an_error() {
        let mut sink = JsonLinesSink::new(Box::new(ClosedPipe), "<stdout>".into());
        sink.buf.extend_from_slice(&[b'x'; CHUNK_BYTES]);
        // The writer stops at the first chunk; later hand-overs find it gone.
        let _ = sink.flush_if_full().await;
        sink.buf.push(b'x');
        assert!(matches!(sink.flush().await, Err(SinkError::Closed)));
        sink.finish().await.unwrap();
    }

    /// A file sink's flush returns once the actions are in the file.
    #[tokio::test]
    async fn flush_returns_once_the_actions_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("actions");
        let file = super::super::create_private(&path, "actions").unwrap();
        let mut sink = JsonLinesSink::new(Box::new(file), path.clone());
        let action: Action = serde_json::from_str(
            r#"{"ts":"2025-01-01T00:00:00.500000Z","kind":"k","stream_id":"s","payload":1,"ttl_ms":5000,"crew":"c","slice":0}"#,
        )
        .unwrap();
        let id = ActionId {
            stream: "s",
            slice: 0,
            crew: "c",
            index: 0,
        };
        sink.push(&action, id);
        sink.flush().await.unwrap();
        let written = std::fs::read_to_string(&path).unwrap();
        assert!(written.ends_with("\"slice\":0}\n"), "{written}");
        sink.finish().await.unwrap();
    }
}
