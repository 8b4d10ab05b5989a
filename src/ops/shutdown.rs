//! Graceful shutdown (SPEC §8 operations): SIGTERM or SIGINT stops the input, so the
//! scheduler finishes the open slices, flushes every output and the runners shut down in
//! protocol order. A second signal, or the drain timeout, stops the host at once; the
//! caller then drops the run, which kills every runner, and reaps them.

use std::io;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

/// Why the host stops at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HardStop {
    SecondSignal,
    DrainTimeout,
}

/// Stop requests (SIGTERM and SIGINT), counted.
#[derive(Clone)]
pub struct Shutdown {
    /// `None`: nothing ever asks to stop.
    requests: Option<watch::Receiver<u32>>,
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
        Ok(Shutdown {
            requests: Some(requests),
        })
    }

    /// Stops are asked for by hand: `requests` counts them (for embedding and tests).
    pub fn from_requests(requests: watch::Receiver<u32>) -> Shutdown {
        Shutdown {
            requests: Some(requests),
        }
    }

    /// A host without signal handlers: a signal stops it at once.
    pub fn never() -> Shutdown {
        Shutdown { requests: None }
    }

    async fn requested(&mut self, times: u32) {
        let asked = match &mut self.requests {
            Some(requests) => requests.wait_for(|n| *n >= times).await.is_ok(),
            None => false,
        };
        if !asked {
            // No more requests can come.
            std::future::pending::<()>().await;
        }
    }

    /// Resolves on the first stop request: the run's input ends there.
    pub async fn stop_requested(mut self) {
        self.requested(1).await;
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
