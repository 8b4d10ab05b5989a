//! The progress line on a terminal: how much of the input file has been read.

use std::io::{self, IsTerminal};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::source::Progress;

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
