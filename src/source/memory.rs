//! A source fed from memory, for tests of the scheduler: events go in through a
//! [`MemoryFeed`], and every acknowledgement is recorded.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::{Delivery, EventSource, InputItem, SourceError};

/// The sending side of a [`MemorySource`]; dropping it ends the input.
pub struct MemoryFeed {
    tx: mpsc::Sender<Vec<Delivery>>,
    next_seq: AtomicU64,
}

impl MemoryFeed {
    /// Delivers `items` as one batch, numbered after the ones before.
    pub async fn send(&self, items: Vec<InputItem>) {
        let batch = items
            .into_iter()
            .map(|item| Delivery {
                seq: self.next_seq.fetch_add(1, Ordering::Relaxed),
                item,
            })
            .collect();
        // A run that already stopped takes nothing more.
        let _ = self.tx.send(batch).await;
    }
}

/// Delivers what its feed sends, and records the acknowledgements; by default it wants
/// them, as a durable source does.
pub struct MemorySource {
    batches: mpsc::Receiver<Vec<Delivery>>,
    /// Every `ack_through` argument, in order.
    pub acks: Arc<Mutex<Vec<u64>>>,
    wants_acks: bool,
}

impl MemorySource {
    /// A source and its feed; deliveries are numbered from 1.
    pub fn new(capacity: usize) -> (MemoryFeed, MemorySource) {
        let (tx, batches) = mpsc::channel(capacity);
        let feed = MemoryFeed {
            tx,
            next_seq: AtomicU64::new(1),
        };
        let source = MemorySource {
            batches,
            acks: Arc::default(),
            wants_acks: true,
        };
        (feed, source)
    }

    /// The same source without acknowledgements, as a file is read.
    pub fn without_acks(self) -> MemorySource {
        MemorySource {
            wants_acks: false,
            ..self
        }
    }
}

impl EventSource for MemorySource {
    async fn next(&mut self) -> Option<Vec<Delivery>> {
        self.batches.recv().await
    }

    async fn ack_through(&mut self, seq: u64) -> Result<(), SourceError> {
        self.acks.lock().expect("memory source lock").push(seq);
        Ok(())
    }

    fn wants_acks(&self) -> bool {
        self.wants_acks
    }
}
