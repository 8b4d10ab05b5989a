//! Framing of the runner protocol: newline-terminated lines with a hard cap on their
//! length.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt};

/// A framing failure on a line-oriented stream.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("line longer than {limit} bytes")]
    TooLong { limit: usize },
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Reads newline-terminated lines with a hard cap on their length, so a peer that never
/// sends a newline costs at most `max_line` bytes of memory.
pub struct LineReader<R> {
    inner: R,
    buf: Vec<u8>,
    /// Start of unconsumed data in `buf`.
    start: usize,
    /// End of valid data in `buf`.
    end: usize,
    /// How far past `start` has already been searched for a newline.
    scanned: usize,
    /// Dropping the rest of an overlong line.
    skipping: bool,
    max_line: usize,
}

const READ_CHUNK: usize = 64 * 1024;

impl<R: AsyncRead + Unpin> LineReader<R> {
    pub fn new(inner: R, max_line: usize) -> Self {
        LineReader {
            inner,
            buf: vec![0; READ_CHUNK],
            start: 0,
            end: 0,
            scanned: 0,
            skipping: false,
            max_line,
        }
    }

    /// The next line without its newline, or `None` at end of stream. A line longer than
    /// the cap yields `FrameError::TooLong` once; the next call resumes after that line.
    /// Cancel-safe: no data is lost if the future is dropped.
    pub async fn next_line(&mut self) -> Result<Option<&[u8]>, FrameError> {
        loop {
            let pending = &self.buf[self.start + self.scanned..self.end];
            if let Some(pos) = pending.iter().position(|&b| b == b'\n') {
                let line_start = self.start;
                let line_end = self.start + self.scanned + pos;
                self.start = line_end + 1;
                self.scanned = 0;
                if std::mem::take(&mut self.skipping) {
                    continue;
                }
                return Ok(Some(&self.buf[line_start..line_end]));
            }
            self.scanned = self.end - self.start;
            if self.scanned > self.max_line {
                // Keep nothing of an overlong line: report it once, then drop the rest.
                self.start = self.end;
                self.scanned = 0;
                if !std::mem::replace(&mut self.skipping, true) {
                    return Err(FrameError::TooLong {
                        limit: self.max_line,
                    });
                }
            }
            self.make_room();
            let read = self.inner.read(&mut self.buf[self.end..]).await?;
            if read == 0 {
                return Ok(self.take_partial_line());
            }
            self.end += read;
        }
    }

    /// At end of stream: whatever follows the last newline, if anything.
    fn take_partial_line(&mut self) -> Option<&[u8]> {
        let (start, end) = (self.start, self.end);
        self.start = self.end;
        self.scanned = 0;
        (end > start && !std::mem::take(&mut self.skipping)).then(|| &self.buf[start..end])
    }

    /// Moves unconsumed data to the front and makes sure there is space to read into.
    /// Spins, reading without blocking, until a whole line is buffered (true) or
    /// `budget` has passed (false); the next [`LineReader::next_line`] then returns that
    /// line at once. A reader that spins is awake when the answer comes: on a VM, waking
    /// an idle CPU can cost more than a short call itself.
    pub fn spin_for_line(&mut self, budget: std::time::Duration) -> bool
    where
        R: std::os::fd::AsFd,
    {
        let started = std::time::Instant::now();
        loop {
            if self.buf[self.start + self.scanned..self.end].contains(&b'\n') {
                return true;
            }
            if self.end - self.start > self.max_line {
                return false; // an overlong line: next_line reports it
            }
            self.make_room();
            match nix::unistd::read(self.inner.as_fd(), &mut self.buf[self.end..]) {
                Ok(0) => return false, // end of stream: next_line reports it
                Ok(read) => self.end += read,
                Err(nix::errno::Errno::EAGAIN) if started.elapsed() < budget => {
                    std::hint::spin_loop();
                }
                Err(_) => return false,
            }
        }
    }

    fn make_room(&mut self) {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            let grown = (self.buf.len() * 2).min(self.max_line + READ_CHUNK);
            self.buf.resize(grown.max(self.end + READ_CHUNK), 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines_of(input: &[u8], max_line: usize) -> Vec<Result<String, String>> {
        let mut reader = LineReader::new(input, max_line);
        let mut out = Vec::new();
        loop {
            match reader.next_line().await {
                Ok(Some(line)) => out.push(Ok(String::from_utf8_lossy(line).into_owned())),
                Ok(None) => return out,
                Err(err) => out.push(Err(err.to_string())),
            }
        }
    }

    #[tokio::test]
    async fn line_reader_splits_and_caps_lines() {
        let got = lines_of(b"a\nbb\n\nccc", 8).await;
        let want: Vec<Result<String, String>> = vec![
            Ok("a".into()),
            Ok("bb".into()),
            Ok("".into()),
            Ok("ccc".into()),
        ];
        assert_eq!(got, want);

        let mut input = b"ok\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 300_000));
        input.extend(b"\nafter\n");
        let got = lines_of(&input, 1000).await;
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], Ok("ok".into()));
        assert_eq!(got[1], Err("line longer than 1000 bytes".into()));
        assert_eq!(got[2], Ok("after".into()));
    }

    #[tokio::test]
    async fn line_reader_memory_stays_bounded_without_newlines() {
        let input = vec![b'y'; 5 << 20];
        let mut reader = LineReader::new(&input[..], 4096);
        assert!(matches!(
            reader.next_line().await,
            Err(FrameError::TooLong { limit: 4096 })
        ));
        assert!(reader.buf.len() <= 4096 + 2 * READ_CHUNK);
        assert!(matches!(reader.next_line().await, Ok(None)));
    }

    #[tokio::test]
    async fn spinning_finds_a_line_that_arrives_and_gives_up_without_one() {
        use std::time::Duration;
        use tokio::io::AsyncWriteExt;
        let (mut writer, reader) = tokio::net::UnixStream::pair().unwrap();
        let mut lines = LineReader::new(reader, 64);
        writer.write_all(b"half").await.unwrap();
        assert!(!lines.spin_for_line(Duration::from_micros(200)));
        let finish = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(5));
            let mut writer = writer.into_std().unwrap();
            std::io::Write::write_all(&mut writer, b" a line\nnext").unwrap();
            writer
        });
        assert!(lines.spin_for_line(Duration::from_secs(5)));
        assert_eq!(lines.next_line().await.unwrap(), Some(&b"half a line"[..]));
        drop(finish.join().unwrap());
        assert!(
            !lines.spin_for_line(Duration::from_secs(5)),
            "end of stream"
        );
        assert_eq!(lines.next_line().await.unwrap(), Some(&b"next"[..]));
        assert_eq!(lines.next_line().await.unwrap(), None);
    }
}
