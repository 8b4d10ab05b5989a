//! The bundled sources: a JSON array file, a JSON Lines file, or JSON Lines on stdin.
//!
//! A dedicated thread reads and validates events and hands them to the scheduler in small
//! batches over a bounded channel, so input is streamed (never loaded whole), parsing runs
//! beside the scheduler, and a lagging scheduler stops the reader (back-pressure). A bad
//! event becomes an [`InputError`] with its line number and the rest keeps flowing.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tokio::sync::mpsc;

use super::json_array::ArrayReader;
use super::pacer::Pacer;
use super::parse::parse;
use super::{
    Delivery, EventSource, InputArg, InputError, InputItem, OpenError, Progress, SourceError,
};

/// Events read by the reader thread. Nothing to acknowledge: a file or stdin cannot
/// deliver an event again.
pub struct ReaderSource {
    batches: mpsc::Receiver<Vec<Delivery>>,
    /// Bytes read so far and the file's size, for a progress display.
    pub progress: Option<Arc<Progress>>,
}

impl EventSource for ReaderSource {
    async fn next(&mut self) -> Option<Vec<Delivery>> {
        self.batches.recv().await
    }

    async fn ack_through(&mut self, _seq: u64) -> Result<(), SourceError> {
        Ok(())
    }

    fn wants_acks(&self) -> bool {
        false
    }
}

/// Batches in flight between the reader thread and the scheduler.
const CHANNEL_BATCHES: usize = 4;
/// Largest batch; smaller batches go out whenever the reader would block.
const MAX_BATCH: usize = 512;

/// Opens the source and starts the reader thread. With `paced`, a regular file is read
/// at the pace of its timestamps (see [`Pacer`]); other sources deliver events as they
/// come anyway.
pub fn open(
    source: &InputArg,
    max_event_bytes: usize,
    paced: bool,
) -> Result<ReaderSource, OpenError> {
    let (tx, batches) = mpsc::channel(CHANNEL_BATCHES);
    let mut pacer = None;
    let (reader, progress): (Box<dyn Read + Send>, _) = match source {
        InputArg::Stdin => (Box::new(io::stdin()), None),
        InputArg::File(path) => {
            let open_error = |reason| OpenError {
                path: path.clone(),
                reason,
            };
            let file = File::open(path).map_err(open_error)?;
            let metadata = file.metadata().map_err(open_error)?;
            if metadata.is_dir() {
                // Opening a folder works; only the first read fails.
                return Err(open_error(io::Error::new(
                    io::ErrorKind::IsADirectory,
                    "a folder, not a file",
                )));
            }
            if paced && metadata.is_file() {
                pacer = Some(Pacer::default());
            }
            let total_bytes = metadata.len();
            let progress = Arc::new(Progress {
                bytes_read: AtomicU64::new(0),
                total_bytes,
            });
            let counted = Counted {
                inner: file,
                progress: progress.clone(),
            };
            (Box::new(counted), Some(progress))
        }
    };
    let allow_array = matches!(source, InputArg::File(_));
    std::thread::Builder::new()
        .name("live-crew-input".into())
        .spawn(move || {
            let mut out = Batcher {
                tx,
                batch: Vec::new(),
                pacer,
                seq: 1,
            };
            let mut reader = BufReader::with_capacity(64 * 1024, reader);
            let result = read_events(&mut reader, max_event_bytes, allow_array, &mut out);
            if let Err(err) = result {
                // A read error ends the input; report it like a bad line so it is seen.
                out.push(
                    Err(InputError::at_line(
                        0,
                        None,
                        format!("reading stopped: {err}"),
                    )),
                    true,
                );
            }
            out.flush();
        })
        .expect("spawning the input thread");
    Ok(ReaderSource { batches, progress })
}

/// Counts bytes for the progress display.
struct Counted<R> {
    inner: R,
    progress: Arc<Progress>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress
            .bytes_read
            .fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Collects items and sends them in batches; a closed channel means the run is over.
struct Batcher {
    tx: mpsc::Sender<Vec<Delivery>>,
    batch: Vec<Delivery>,
    pacer: Option<Pacer>,
    /// The next delivery's sequence number.
    seq: u64,
}

impl Batcher {
    /// Adds an item; `idle` says the reader would block next, so waiting is pointless.
    /// Returns false when nobody listens any more.
    fn push(&mut self, item: InputItem, idle: bool) -> bool {
        if let (Some(pacer), Ok(event)) = (&mut self.pacer, &item)
            && let Some(hold) = pacer.hold(event.ts, Instant::now())
        {
            // What is due now goes out before the wait.
            if !self.flush() {
                return false;
            }
            std::thread::sleep(hold);
        }
        self.batch.push(Delivery {
            seq: self.seq,
            item,
        });
        self.seq += 1;
        if idle || self.batch.len() >= MAX_BATCH {
            return self.flush();
        }
        true
    }

    fn flush(&mut self) -> bool {
        if self.batch.is_empty() {
            return true;
        }
        let batch = std::mem::take(&mut self.batch);
        self.tx.blocking_send(batch).is_ok()
    }
}

/// Reads the whole input: a JSON array if the first non-blank byte is `[` (files only),
/// otherwise JSON Lines.
fn read_events<R: Read>(
    reader: &mut BufReader<R>,
    max_bytes: usize,
    allow_array: bool,
    out: &mut Batcher,
) -> io::Result<()> {
    // Editors on Windows start UTF-8 files with a byte order mark; it is not JSON.
    if reader.fill_buf()?.starts_with(UTF8_BOM) {
        reader.consume(UTF8_BOM.len());
    }
    if allow_array && first_non_blank(reader)? == Some(b'[') {
        ArrayReader::new(max_bytes).read(reader, &mut |item, idle| out.push(item, idle))
    } else {
        read_lines(reader, max_bytes, out)
    }
}

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

fn first_non_blank<R: BufRead>(reader: &mut R) -> io::Result<Option<u8>> {
    let buf = reader.fill_buf()?;
    Ok(buf.iter().copied().find(|b| !b.is_ascii_whitespace()))
}

/// JSON Lines: one event per line; blank lines and `#` comments are skipped.
fn read_lines<R: Read>(
    reader: &mut BufReader<R>,
    max_bytes: usize,
    out: &mut Batcher,
) -> io::Result<()> {
    let mut line = Vec::new();
    let mut number = 0u64;
    while let Some(len) = read_line_capped(reader, &mut line, max_bytes)? {
        number += 1;
        let text = line.trim_ascii();
        if len <= max_bytes && (text.is_empty() || text.starts_with(b"#")) {
            continue;
        }
        let item = parse(text, number, None, max_bytes, len);
        if !out.push(item, reader.buffer().is_empty()) {
            return Ok(());
        }
    }
    Ok(())
}

/// Reads one line into `line` (without its newline), keeping at most `cap + 1` bytes so a
/// huge line costs no memory. Returns the line's full length, or `None` at end of input.
fn read_line_capped<R: BufRead>(
    reader: &mut R,
    line: &mut Vec<u8>,
    cap: usize,
) -> io::Result<Option<usize>> {
    line.clear();
    let mut len = 0usize;
    let mut any = false;
    loop {
        let buf = match reader.fill_buf() {
            Ok(buf) => buf,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        if buf.is_empty() {
            return Ok(any.then_some(len));
        }
        any = true;
        let (chunk, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(pos) => (&buf[..pos], true),
            None => (buf, false),
        };
        let room = (cap + 1).saturating_sub(line.len());
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        len += chunk.len();
        let used = chunk.len() + usize::from(done);
        reader.consume(used);
        if done {
            return Ok(Some(len));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(text: &str, max_bytes: usize, allow_array: bool) -> Vec<Result<String, String>> {
        let (tx, mut rx) = mpsc::channel(1000);
        let mut out = Batcher {
            tx,
            batch: Vec::new(),
            pacer: None,
            seq: 1,
        };
        let mut reader = BufReader::with_capacity(7, text.as_bytes());
        read_events(&mut reader, max_bytes, allow_array, &mut out).unwrap();
        out.flush();
        drop(out);
        let mut items = Vec::new();
        while let Ok(batch) = rx.try_recv() {
            items.extend(batch.into_iter().map(|delivery| match delivery.item {
                Ok(event) => Ok(event.kind.clone()),
                Err(err) => Err(err.to_string()),
            }));
        }
        items
    }

    fn event(kind: &str) -> String {
        format!(r#"{{"ts":"2025-01-01T00:00:00Z","kind":"{kind}","stream_id":"s","payload":{{}}}}"#)
    }

    #[test]
    fn a_byte_order_mark_and_crlf_line_ends_are_not_errors() {
        let lines = format!("\u{feff}{}\r\n{}\r\n", event("a"), event("b"));
        assert_eq!(
            read_all(&lines, 1024, true),
            [Ok("a".into()), Ok("b".into())]
        );
        let array = format!("\u{feff}[{},\r\n{}]", event("a"), event("b"));
        assert_eq!(
            read_all(&array, 1024, true),
            [Ok("a".into()), Ok("b".into())]
        );
    }

    #[test]
    fn json_lines_skip_blanks_and_comments_and_report_line_numbers() {
        let text = format!(
            "{}\n\n# a comment\n{}\nnot json\n{}",
            event("a"),
            event("bad kind"),
            event("c")
        );
        let items = read_all(&text, 1024, true);
        assert_eq!(items.len(), 4);
        assert_eq!(items[0], Ok("a".into()));
        assert!(
            items[1]
                .as_ref()
                .unwrap_err()
                .starts_with("line 4: field 'kind'")
        );
        assert!(
            items[2]
                .as_ref()
                .unwrap_err()
                .starts_with("line 5: field 'event'")
        );
        assert_eq!(items[3], Ok("c".into()));
    }

    #[test]
    fn deep_nesting_is_rejected_with_its_line_and_reading_goes_on() {
        let nested = |levels: usize| {
            format!(
                r#"{{"ts":"2025-01-01T00:00:00Z","kind":"k","stream_id":"s","payload":{}"[{{\"x\""{}}}"#,
                "[".repeat(levels),
                "]".repeat(levels)
            )
        };
        let text = format!("{}\n{}\n{}\n", nested(63), nested(64), event("ok"));
        let got = read_all(&text, 1 << 20, false);
        assert!(got[0].is_ok(), "{:?}", got[0]);
        let err = got[1].as_ref().unwrap_err();
        assert!(
            err.starts_with("line 2: event nests 65 levels deep, over the limit of 64"),
            "{err}"
        );
        assert!(got[2].is_ok());
    }

    #[test]
    fn oversize_lines_are_rejected_and_reading_goes_on() {
        let big = format!(
            r#"{{"ts":"2025-01-01T00:00:00Z","kind":"k","stream_id":"s","payload":"{}"}}"#,
            "x".repeat(5000)
        );
        let text = format!("{big}\n{}\n", event("after"));
        let items = read_all(&text, 200, true);
        let err = items[0].as_ref().unwrap_err();
        assert!(
            err.starts_with("line 1: event is 5069 bytes, over max_event_bytes (200)"),
            "{err}"
        );
        assert_eq!(items[1], Ok("after".into()));
    }

    #[test]
    fn json_arrays_split_into_events_with_index_and_line() {
        let text = format!(
            "  [\n  {},\n  {{\"ts\": \"x\", \"kind\": \"k\",\n \"stream_id\": \"s\", \"payload\": \"a,]}}\"}},\n  {}\n]\n",
            event("a"),
            event("c")
        );
        let items = read_all(&text, 1024, true);
        assert_eq!(items[0], Ok("a".into()));
        let err = items[1].as_ref().unwrap_err();
        assert!(err.starts_with("line 3 (element 1): field 'ts'"), "{err}");
        assert_eq!(items[2], Ok("c".into()));
        assert_eq!(items.len(), 3);
    }

    #[test]
    fn broken_arrays_are_reported() {
        assert_eq!(read_all("[]", 1024, true), vec![]);
        let items = read_all(&format!("[{}", event("a")), 1024, true);
        assert_eq!(items.len(), 1);
        assert!(items[0].as_ref().unwrap_err().contains("missing ']'"));
        let items = read_all(&format!("[{}] x", event("a")), 1024, true);
        assert_eq!(items[0], Ok("a".into()));
        assert!(
            items[1]
                .as_ref()
                .unwrap_err()
                .contains("outside the JSON array")
        );
    }

    #[test]
    fn stdin_is_always_json_lines() {
        let items = read_all(&format!("[{}]", event("a")), 1024, false);
        assert!(
            items[0]
                .as_ref()
                .unwrap_err()
                .starts_with("line 1: field 'event'")
        );
    }
}
