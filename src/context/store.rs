//! Where committed contexts live (`kv_backend`): one object per stream, with a revision
//! for checked updates.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::model::{JsonObject, Timestamp};

/// Where committed contexts live: the `kv_backend` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KvBackend {
    /// In the host's memory, for as long as it runs.
    Memory,
    /// In the `live_ctx` KV bucket on NATS (`nats:`), where it outlives the host.
    Jetstream,
}

/// A context store failed, or another writer got there first.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "context of stream '{stream}' changed underneath (revision {found}, expected \
         {expected}); is another host running the same streams?"
    )]
    Conflict {
        stream: String,
        expected: u64,
        found: u64,
    },
    /// A shared store's compare-and-swap failed: another host committed first.
    #[error(
        "another host committed stream '{stream}' first (its revision is past {expected}); \
         this host stops serving it"
    )]
    Taken { stream: String, expected: u64 },
    #[error("the context store failed for stream '{stream}': {reason}")]
    Backend { stream: String, reason: String },
}

/// A stream's state after a run of slices, as the scheduler commits it.
#[derive(Debug, Clone, Copy)]
pub struct StreamCommit<'a> {
    /// The context after `last_slice`.
    pub context: &'a JsonObject,
    /// The stream's first event's time: slice numbers count from it.
    pub epoch0: Timestamp,
    pub last_slice: i64,
    /// Every event of the stream up to this source sequence is in this state.
    pub events_through: u64,
}

/// Where a stream committed before (by an earlier host) goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resume {
    /// Its slices still count from this.
    pub epoch0: Timestamp,
    pub last_slice: i64,
    /// Its events up to this source sequence are in the committed state.
    pub events_through: u64,
}

/// A stream's committed state as a store holds it.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Stored {
    pub context: JsonObject,
    /// 0 for a stream never committed.
    pub revision: u64,
    /// Where a stream this store committed before goes on; `None` for a new stream, and
    /// always for a store that does not outlive its host.
    pub resume: Option<Resume>,
}

/// Where committed contexts live: one object per stream, with a revision for checked
/// updates.
pub trait ContextStore: Send + Sync + 'static {
    /// The committed state of a stream (empty, at revision 0, when new), in one read.
    fn load(&self, stream: &str) -> impl Future<Output = Result<Stored, StoreError>> + Send;

    /// Stores `commit` if the stored revision is still `expected`; returns the new one.
    fn commit(
        &self,
        stream: &str,
        expected: u64,
        commit: StreamCommit<'_>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Whether the store keeps each commit's actions with it (an outbox, published after
    /// the commit), so that it is told of every slice, changed context or not, and
    /// before the sink makes the actions durable on its own.
    fn keeps_outbox(&self) -> bool {
        false
    }
}

/// The `memory` backend: contexts live as long as the process.
#[derive(Debug, Default)]
pub struct MemoryStore {
    streams: Mutex<HashMap<String, (JsonObject, u64)>>,
}

impl ContextStore for MemoryStore {
    fn load(&self, stream: &str) -> impl Future<Output = Result<Stored, StoreError>> + Send {
        let (context, revision) = self
            .streams
            .lock()
            .expect("context store lock")
            .get(stream)
            .cloned()
            .unwrap_or_default();
        std::future::ready(Ok(Stored {
            context,
            revision,
            resume: None,
        }))
    }

    fn commit(
        &self,
        stream: &str,
        expected: u64,
        commit: StreamCommit<'_>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send {
        let mut streams = self.streams.lock().expect("context store lock");
        let entry = streams.entry(stream.to_owned()).or_default();
        let result = if entry.1 == expected {
            *entry = (commit.context.clone(), expected + 1);
            Ok(entry.1)
        } else {
            Err(StoreError::Conflict {
                stream: stream.to_owned(),
                expected,
                found: entry.1,
            })
        };
        std::future::ready(result)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[tokio::test]
    async fn memory_store_checks_revisions() {
        let store = MemoryStore::default();
        assert_eq!(store.load("s").await.unwrap(), Stored::default());
        let serde_json::Value::Object(context) = json!({"a": 1}) else {
            unreachable!()
        };
        let commit = StreamCommit {
            context: &context,
            epoch0: Timestamp::from_micros(0),
            last_slice: 0,
            events_through: 0,
        };
        assert_eq!(store.commit("s", 0, commit).await.unwrap(), 1);
        assert!(store.commit("s", 0, commit).await.is_err());
        let stored = store.load("s").await.unwrap();
        assert_eq!((stored.context, stored.revision), (context, 1));
    }
}
