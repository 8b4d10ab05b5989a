//! Where committed contexts live (`kv_backend`): one object per stream, with a revision
//! for checked updates.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::model::JsonObject;

/// Where committed contexts live: the `kv_backend` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KvBackend {
    /// In the host's memory, for as long as it runs.
    Memory,
}

/// The store `kv_backend` names; the host builds its context store from this.
#[derive(Debug)]
pub enum Store {
    Memory(MemoryStore),
}

impl Store {
    pub fn for_backend(backend: KvBackend) -> Store {
        match backend {
            KvBackend::Memory => Store::Memory(MemoryStore::default()),
        }
    }
}

impl ContextStore for Store {
    async fn load(&self, stream: &str) -> Result<(JsonObject, u64), StoreError> {
        match self {
            Store::Memory(store) => store.load(stream).await,
        }
    }

    async fn commit(
        &self,
        stream: &str,
        expected: u64,
        context: &JsonObject,
    ) -> Result<u64, StoreError> {
        match self {
            Store::Memory(store) => store.commit(stream, expected, context).await,
        }
    }
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
}

/// Where committed contexts live: one object per stream, with a revision for checked
/// updates.
pub trait ContextStore: Send + Sync + 'static {
    /// The committed context of a stream and its revision (0 and empty when new).
    fn load(
        &self,
        stream: &str,
    ) -> impl Future<Output = Result<(JsonObject, u64), StoreError>> + Send;

    /// Stores `context` if the stored revision is still `expected`; returns the new one.
    fn commit(
        &self,
        stream: &str,
        expected: u64,
        context: &JsonObject,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

/// The `memory` backend: contexts live as long as the process.
#[derive(Debug, Default)]
pub struct MemoryStore {
    streams: Mutex<HashMap<String, (JsonObject, u64)>>,
}

impl ContextStore for MemoryStore {
    fn load(
        &self,
        stream: &str,
    ) -> impl Future<Output = Result<(JsonObject, u64), StoreError>> + Send {
        let found = self
            .streams
            .lock()
            .expect("context store lock")
            .get(stream)
            .cloned()
            .unwrap_or_default();
        std::future::ready(Ok(found))
    }

    fn commit(
        &self,
        stream: &str,
        expected: u64,
        context: &JsonObject,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send {
        let mut streams = self.streams.lock().expect("context store lock");
        let entry = streams.entry(stream.to_owned()).or_default();
        let result = if entry.1 == expected {
            *entry = (context.clone(), expected + 1);
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
        assert_eq!(store.load("s").await.unwrap(), (JsonObject::new(), 0));
        let serde_json::Value::Object(context) = json!({"a": 1}) else {
            unreachable!()
        };
        assert_eq!(store.commit("s", 0, &context).await.unwrap(), 1);
        assert!(store.commit("s", 0, &context).await.is_err());
        assert_eq!(store.load("s").await.unwrap(), (context, 1));
    }
}
