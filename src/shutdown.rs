//! Graceful shutdown (SPEC §8 operations): SIGTERM or SIGINT stops the input, so the
//! scheduler finishes the open slices, flushes every output and the runners shut down in
//! protocol order. A second signal, or the drain timeout, stops the host at once; the
//! caller then drops the run, which kills every runner, and reaps them.

use std::io;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, watch};

use crate::input::InputItem;

/// Why the host stops at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HardStop {
    SecondSignal,
    DrainTimeout,
}

/// Stop requests (SIGTERM and SIGINT), counted.
#[derive(Clone)]
pub struct Shutdown {
    requests: watch::Receiver<u32>,
}

impl Shutdown {
    /// Installs the handlers; they stay installed until the host exits, so no signal
    /// during the drain is lost.
    pub fn install() -> io::Result<Shutdown> {
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        let (count, requests) = watch::channel(0u32);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = terminate.recv() => {}
                    _ = interrupt.recv() => {}
                }
                let n = *count.borrow() + 1;
                if n == 1 {
                    tracing::warn!(
                        "stop requested: finishing open slices; signal again to stop at once"
                    );
                }
                if count.send(n).is_err() {
                    return;
                }
            }
        });
        Ok(Shutdown { requests })
    }

    async fn requested(&mut self, times: u32) {
        let _ = self.requests.wait_for(|n| *n >= times).await;
    }

    /// Forwards `input` until the first stop request; then the scheduler sees the end
    /// of its input.
    pub fn cut_input(
        &self,
        mut input: mpsc::Receiver<Vec<InputItem>>,
    ) -> mpsc::Receiver<Vec<InputItem>> {
        let mut stop = self.clone();
        let (forward, batches) = mpsc::channel(1);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    batch = input.recv() => match batch {
                        Some(batch) => tokio::select! {
                            sent = forward.send(batch) => if sent.is_err() { return },
                            () = stop.requested(1) => return,
                        },
                        None => return,
                    },
                    () = stop.requested(1) => return,
                }
            }
        });
        batches
    }

    /// Resolves on a second stop request, or when `drain` has passed since the first.
    pub async fn hard_stop(mut self, drain: Duration) -> HardStop {
        self.requested(1).await;
        let mut second = self.clone();
        tokio::select! {
            () = second.requested(2) => HardStop::SecondSignal,
            () = tokio::time::sleep(drain) => HardStop::DrainTimeout,
        }
    }
}
