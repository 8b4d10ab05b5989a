//! A JSON array of events, split into elements by a streaming scanner: the file is never
//! loaded whole, and an error names the element's index and the line it starts on.

use std::io::{self, BufRead, BufReader, Read};

use super::parse::parse;
use super::{InputError, InputItem};

/// Splits a JSON array into its elements without parsing the whole document, tracking
/// line numbers. Each element is then parsed as one event.
pub(super) struct ArrayReader {
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
    pub(super) fn new(max_bytes: usize) -> Self {
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

    /// Reads the whole array, handing each element's event (or error) to `out` with
    /// whether the reader would block next; stops when `out` returns false.
    pub(super) fn read<R: Read>(
        mut self,
        reader: &mut BufReader<R>,
        out: &mut dyn FnMut(InputItem, bool) -> bool,
    ) -> io::Result<()> {
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
                if !out(item, idle && i + 1 == count) {
                    return Ok(());
                }
            }
            if let Err(error) = result {
                out(Err(error), true);
                return Ok(());
            }
        }
        if self.state != ArrayState::Done {
            out(
                Err(InputError::at_line(
                    self.line,
                    Some(self.index),
                    "the JSON array ends early: missing ']'".into(),
                )),
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
                    let message = format!(
                        "unexpected '{}' outside the JSON array",
                        char::from(b).escape_default()
                    );
                    return Err(InputError::at_line(self.line, None, message));
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
