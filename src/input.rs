//! Event input (SPEC §1): a JSON array file, a JSON Lines file, or JSON Lines on stdin.
//!
//! A dedicated thread reads and validates events and hands them to the scheduler in small
//! batches over a bounded channel, so input is streamed (never loaded whole), parsing runs
//! beside the scheduler, and a lagging scheduler stops the reader (back-pressure). A bad
//! event becomes an [`InputError`] with its line number and the rest keeps flowing.

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::model::{Event, SharedEvent, Timestamp};

/// Where events come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    /// JSON Lines on standard input.
    Stdin,
}

impl Source {
    /// `-` means stdin.
    pub fn from_arg(arg: &Path) -> Source {
        if arg == Path::new("-") {
            Source::Stdin
        } else {
            Source::File(arg.to_path_buf())
        }
    }
}

/// An input event that was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    /// 1-based line where the event starts.
    pub line: u64,
    /// 0-based element index, for JSON array files.
    pub index: Option<u64>,
    pub message: String,
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.index {
            Some(index) => write!(f, "line {} (element {index}): {}", self.line, self.message),
            None => write!(f, "line {}: {}", self.line, self.message),
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

/// The reading side, handed to the scheduler.
pub struct Input {
    pub batches: mpsc::Receiver<Vec<InputItem>>,
    /// Bytes read so far and the file's size, for a progress display.
    pub progress: Option<Arc<Progress>>,
}

#[derive(Debug, Default)]
pub struct Progress {
    pub bytes_read: AtomicU64,
    pub total_bytes: u64,
}

/// Batches in flight between the reader thread and the scheduler.
const CHANNEL_BATCHES: usize = 4;
/// Largest batch; smaller batches go out whenever the reader would block.
const MAX_BATCH: usize = 512;

/// Opens the source and starts the reader thread. With `paced`, a regular file is read
/// at the pace of its timestamps (see [`Pacer`]); other sources deliver events as they
/// come anyway.
pub fn spawn(source: &Source, max_event_bytes: usize, paced: bool) -> Result<Input, OpenError> {
    let (tx, batches) = mpsc::channel(CHANNEL_BATCHES);
    let mut pacer = None;
    let (reader, progress): (Box<dyn Read + Send>, _) = match source {
        Source::Stdin => (Box::new(io::stdin()), None),
        Source::File(path) => {
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
    let allow_array = matches!(source, Source::File(_));
    std::thread::Builder::new()
        .name("live-crew-input".into())
        .spawn(move || {
            let mut out = Batcher {
                tx,
                batch: Vec::new(),
                pacer,
            };
            let mut reader = BufReader::with_capacity(64 * 1024, reader);
            let result = read_events(&mut reader, max_event_bytes, allow_array, &mut out);
            if let Err(err) = result {
                // A read error ends the input; report it like a bad line so it is seen.
                out.push(
                    Err(InputError {
                        line: 0,
                        index: None,
                        message: format!("reading stopped: {err}"),
                    }),
                    true,
                );
            }
            out.flush();
        })
        .expect("spawning the input thread");
    Ok(Input { batches, progress })
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

/// Plays a recording at the pace it was recorded (`--live` on a regular file): each
/// event is let through when as much time has passed since the first event was read as
/// its `ts` lies after the first event's. Events that are not later than that (out of
/// order, or the reader fell behind) go at once.
#[derive(Debug, Default)]
pub(crate) struct Pacer {
    /// The first event's `ts` and when it was read.
    start: Option<(Timestamp, Instant)>,
}

impl Pacer {
    /// How long to hold an event of time `ts` that was read at `now`.
    fn hold(&mut self, ts: Timestamp, now: Instant) -> Option<Duration> {
        let &mut (first_ts, started) = self.start.get_or_insert((ts, now));
        let offset = u64::try_from(ts.as_micros().saturating_sub(first_ts.as_micros())).ok()?;
        let due = started + Duration::from_micros(offset);
        (due > now).then(|| due - now)
    }
}

/// Collects items and sends them in batches; a closed channel means the run is over.
pub(crate) struct Batcher {
    tx: mpsc::Sender<Vec<InputItem>>,
    batch: Vec<InputItem>,
    pacer: Option<Pacer>,
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
        self.batch.push(item);
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
        ArrayReader::new(max_bytes).read(reader, out)
    } else {
        read_lines(reader, max_bytes, out)
    }
}

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

fn first_non_blank<R: BufRead>(reader: &mut R) -> io::Result<Option<u8>> {
    let buf = reader.fill_buf()?;
    Ok(buf.iter().copied().find(|b| !b.is_ascii_whitespace()))
}

/// Deepest nesting of arrays and objects accepted in one event (the event object itself
/// is level 1), so that hostile input cannot make a crew's JSON parser recurse without
/// bound.
pub const MAX_EVENT_DEPTH: usize = 64;

/// The nesting depth of `text` if it exceeds [`MAX_EVENT_DEPTH`]; brackets inside
/// strings do not count.
fn too_deep(text: &[u8]) -> Option<usize> {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for &byte in text {
        match (in_string, byte) {
            (true, _) if escaped => escaped = false,
            (true, b'\\') => escaped = true,
            (true, b'"') | (false, b'"') => in_string = !in_string,
            (false, b'{' | b'[') => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            (false, b'}' | b']') => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    (deepest > MAX_EVENT_DEPTH).then_some(deepest)
}

fn parse(text: &[u8], line: u64, index: Option<u64>, max_bytes: usize, len: usize) -> InputItem {
    let error = |message: String| InputError {
        line,
        index,
        message,
    };
    if len > max_bytes {
        return Err(error(format!(
            "event is {len} bytes, over max_event_bytes ({max_bytes}); \
             shrink the payload or raise max_event_bytes"
        )));
    }
    if let Some(depth) = too_deep(text) {
        return Err(error(format!(
            "event nests {depth} levels deep, over the limit of {MAX_EVENT_DEPTH}; \
             flatten the payload"
        )));
    }
    let text = std::str::from_utf8(text).map_err(|err| error(format!("not UTF-8: {err}")))?;
    Event::from_json(text)
        .map(Arc::new)
        .map_err(|err| error(err.to_string()))
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

/// Splits a JSON array into its elements without parsing the whole document, tracking
/// line numbers. Each element is then parsed as one event.
struct ArrayReader {
    max_bytes: usize,
    line: u64,
    element: Vec<u8>,
    element_len: usize,
    element_line: u64,
    index: u64,
    depth: u32,
    in_string: bool,
    escaped: bool,
    state: ArrayState,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ArrayState {
    /// Before the opening `[`.
    Start,
    /// Expecting an element (or `]` right after `[`).
    BeforeElement,
    InElement,
    /// After `]`: only whitespace may follow.
    Done,
}

impl ArrayReader {
    fn new(max_bytes: usize) -> Self {
        ArrayReader {
            max_bytes,
            line: 1,
            element: Vec::new(),
            element_len: 0,
            element_line: 1,
            index: 0,
            depth: 0,
            in_string: false,
            escaped: false,
            state: ArrayState::Start,
        }
    }

    fn read<R: Read>(mut self, reader: &mut BufReader<R>, out: &mut Batcher) -> io::Result<()> {
        loop {
            let buf = reader.fill_buf()?;
            if buf.is_empty() {
                break;
            }
            let len = buf.len();
            let mut items = Vec::new();
            let result = self.scan(buf, &mut items);
            reader.consume(len);
            let idle = reader.buffer().is_empty();
            let count = items.len();
            for (i, item) in items.into_iter().enumerate() {
                if !out.push(item, idle && i + 1 == count) {
                    return Ok(());
                }
            }
            if let Err(error) = result {
                out.push(Err(error), true);
                return Ok(());
            }
        }
        if self.state != ArrayState::Done {
            out.push(
                Err(InputError {
                    line: self.line,
                    index: Some(self.index),
                    message: "the JSON array ends early: missing ']'".into(),
                }),
                true,
            );
        }
        Ok(())
    }

    /// Scans a chunk; structural errors end the input, so they are returned.
    fn scan(&mut self, chunk: &[u8], items: &mut Vec<InputItem>) -> Result<(), InputError> {
        for &b in chunk {
            match self.state {
                ArrayState::Start | ArrayState::BeforeElement | ArrayState::Done
                    if b.is_ascii_whitespace() => {}
                ArrayState::Start if b == b'[' => self.state = ArrayState::BeforeElement,
                ArrayState::BeforeElement if b == b']' && self.index == 0 => {
                    self.state = ArrayState::Done
                }
                ArrayState::BeforeElement => {
                    self.state = ArrayState::InElement;
                    self.element.clear();
                    self.element_len = 0;
                    self.element_line = self.line;
                    self.element_byte(b, items);
                }
                ArrayState::InElement => self.element_byte(b, items),
                ArrayState::Start | ArrayState::Done => {
                    return Err(InputError {
                        line: self.line,
                        index: None,
                        message: format!(
                            "unexpected '{}' outside the JSON array",
                            char::from(b).escape_default()
                        ),
                    });
                }
            }
            if b == b'\n' {
                self.line += 1;
            }
        }
        Ok(())
    }

    fn element_byte(&mut self, b: u8, items: &mut Vec<InputItem>) {
        if self.in_string {
            if self.escaped {
                self.escaped = false;
            } else if b == b'\\' {
                self.escaped = true;
            } else if b == b'"' {
                self.in_string = false;
            }
        } else {
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' if self.depth > 0 => self.depth -= 1,
                b',' | b']' if self.depth == 0 => {
                    let text = self.element.trim_ascii();
                    // A truncated element reports its full length.
                    let len = if self.element_len > self.element.len() {
                        self.element_len
                    } else {
                        text.len()
                    };
                    let item = parse(
                        text,
                        self.element_line,
                        Some(self.index),
                        self.max_bytes,
                        len,
                    );
                    items.push(item);
                    self.index += 1;
                    self.state = if b == b',' {
                        ArrayState::BeforeElement
                    } else {
                        ArrayState::Done
                    };
                    return;
                }
                _ => {}
            }
        }
        self.element_len += 1;
        if self.element.len() <= self.max_bytes {
            self.element.push(b);
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
        };
        let mut reader = BufReader::with_capacity(7, text.as_bytes());
        read_events(&mut reader, max_bytes, allow_array, &mut out).unwrap();
        out.flush();
        drop(out);
        let mut items = Vec::new();
        while let Ok(batch) = rx.try_recv() {
            items.extend(batch.into_iter().map(|item| match item {
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
    fn a_paced_recording_holds_each_event_until_its_offset_from_the_first() {
        let at = |ms: i64| Timestamp::from_micros(1_700_000_000_000_000 + ms * 1000);
        let read = Instant::now();
        let mut pacer = Pacer::default();
        assert_eq!(
            pacer.hold(at(0), read),
            None,
            "the first event plays at once"
        );
        let later = read + Duration::from_millis(100);
        assert_eq!(pacer.hold(at(250), later), Some(Duration::from_millis(150)));
        // Not later than due: out of order, or the reader fell behind.
        assert_eq!(pacer.hold(at(50), later), None);
        assert_eq!(pacer.hold(at(-10), later), None);
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
