//! The commit sequence of SPEC §12: per stream, one compare-and-swap write of its KV value
//! (context, `last_slice`, `events_through_seq`, and the outbox of the actions of the
//! slices it covers), then those actions published with their ids as message ids, each
//! publish acknowledged; the scheduler acknowledges the events after that.
//!
//! [`JetStreamStore`] (the `ContextStore`) and [`JetStreamSink`] (the `ActionSink`) share
//! one [`Pending`]: the sink collects the actions the scheduler pushes, the store's commit
//! moves them into the KV value's outbox, and the sink's flush publishes them. The
//! scheduler calls them in that order because the store says it keeps an outbox.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_nats::jetstream::kv;
use async_nats::jetstream::kv::{CreateErrorKind, UpdateErrorKind};
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::fault::{self, crash_point};
use super::topology::{ACTIONS_STREAM, actions_subject, errors_subject};
use crate::context::{ContextStore, Resume, StoreError, Stored, StreamCommit};
use crate::model::{Action, ActionId, JsonObject, Timestamp};
use crate::ops::health::{BrokerLink, lock};
use crate::sink::{ActionSink, ErrorRecord, OutputError, SinkError};

/// The KV value of one stream.
#[derive(Debug, Serialize, Deserialize)]
pub struct StreamValue {
    pub v: u32,
    pub epoch0: Timestamp,
    pub slice_ms: u64,
    pub last_slice: i64,
    pub events_through_seq: u64,
    pub ctx: JsonObject,
    pub outbox: Option<Outbox>,
    /// The host that wrote it.
    pub host: String,
}

/// The actions of the slices a commit covers, until they are published.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outbox {
    /// The last slice they belong to.
    pub slice: i64,
    pub actions: Vec<OutboxAction>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutboxAction {
    /// `<stream>:<slice>:<crew>:<i>`, the message id it is published with.
    pub id: String,
    pub action: Box<RawValue>,
}

/// What the store and the sink of one host share.
#[derive(Debug, Default)]
struct Pending {
    /// Actions pushed and not yet in a commit, by stream.
    pushed: HashMap<String, Vec<OutboxAction>>,
    /// Committed outboxes to publish, with their stream.
    committed: Vec<(String, Vec<OutboxAction>)>,
    /// Error records to publish on `live.<stream>.errors`.
    errors: Vec<ErrorRecord>,
}

/// The store and the sink of a distributed host, sharing their pending actions.
pub fn commit_ports(
    connection: &super::connection::Connection,
    bucket: kv::Store,
    slice_ms: u64,
    host: String,
) -> (JetStreamStore, JetStreamSink) {
    let jetstream = connection.jetstream.clone();
    let pending = Arc::new(Mutex::new(Pending::default()));
    let store = JetStreamStore {
        link: connection.link.clone(),
        distributed: true,
        bucket,
        jetstream: jetstream.clone(),
        pending: pending.clone(),
        slice_ms,
        host,
    };
    let sink = JetStreamSink {
        jetstream,
        link: connection.link.clone(),
        pending,
    };
    (store, sink)
}

/// Contexts in the `live_ctx` bucket, written with their outbox. A clone shares the
/// pending actions with the original.
#[derive(Clone)]
pub struct JetStreamStore {
    bucket: kv::Store,
    /// Distributed mode: an outbox with every commit, and streams resumed where they
    /// were. Off for file input (`kv_backend: jetstream`), where only the contexts carry
    /// over from run to run.
    distributed: bool,
    /// Where health reads each stream's last committed slice.
    link: Arc<BrokerLink>,
    jetstream: async_nats::jetstream::Context,
    pending: Arc<Mutex<Pending>>,
    slice_ms: u64,
    host: String,
}

impl JetStreamStore {
    /// The stored value of `stream`, with its revision.
    pub async fn value(&self, stream: &str) -> Result<Option<(StreamValue, u64)>, StoreError> {
        let backend = |reason: String| StoreError::Backend {
            stream: stream.to_owned(),
            reason,
        };
        let Some(entry) = self
            .bucket
            .entry(stream)
            .await
            .map_err(|err| backend(err.to_string()))?
        else {
            return Ok(None);
        };
        if entry.value.is_empty() {
            return Ok(None);
        }
        let value: StreamValue = serde_json::from_slice(&entry.value)
            .map_err(|err| backend(format!("the stored value is not live-crew's: {err}")))?;
        Ok(Some((value, entry.revision)))
    }
}

impl JetStreamStore {
    /// The store of `kv_backend: jetstream` for a run over a file: contexts are loaded
    /// from the bucket and committed to it, nothing else is.
    pub fn contexts_only(
        connection: &super::connection::Connection,
        bucket: kv::Store,
        slice_ms: u64,
        host: String,
    ) -> JetStreamStore {
        JetStreamStore {
            bucket,
            distributed: false,
            jetstream: connection.jetstream.clone(),
            link: connection.link.clone(),
            pending: Arc::default(),
            slice_ms,
            host,
        }
    }

    /// At a host's start: publishes what an earlier host committed in the outboxes of
    /// `streams` (all when empty) but had not published, the actions after the last one
    /// `live.<stream>.actions` holds. The message ids would drop a repeat within
    /// `LIVE_ACTIONS`' duplicate window anyway; the check keeps a restart after the
    /// window from publishing an action twice. Done at once, not when a stream's next
    /// event comes: it may never come.
    pub async fn finish_outboxes(&self, streams: &[String]) -> Result<(), StoreError> {
        let backend = |reason: String| StoreError::Backend {
            stream: "*".into(),
            reason,
        };
        let mut keys = self
            .bucket
            .keys()
            .await
            .map_err(|err| backend(err.to_string()))?;
        let mut names = Vec::new();
        while let Some(key) = futures_util::StreamExt::next(&mut keys).await {
            names.push(key.map_err(|err| backend(err.to_string()))?);
        }
        // Keys with a '.' (the scheduler's lock) name no stream.
        let served = |s: &&String| !s.contains('.') && (streams.is_empty() || streams.contains(s));
        for stream in names.iter().filter(served) {
            let Some((value, _)) = self.value(stream).await? else {
                continue;
            };
            let Some(outbox) = &value.outbox else {
                continue;
            };
            let last = self.last_published(stream).await?;
            let published = last
                .and_then(|id| outbox.actions.iter().position(|action| action.id == id))
                .map_or(0, |at| at + 1);
            let rest = &outbox.actions[published..];
            tracing::info!(
                stream = %stream,
                slice = outbox.slice,
                published,
                publishing = rest.len(),
                "finishing the outbox of the last commit"
            );
            let outbox = [(stream.clone(), rest.to_vec())];
            JetStreamSink::publish(&self.jetstream, &self.link, &outbox)
                .await
                .map_err(|err| StoreError::Backend {
                    stream: stream.clone(),
                    reason: err.to_string(),
                })?;
        }
        Ok(())
    }

    /// The message id of the last action published for `stream`, if any.
    async fn last_published(&self, stream: &str) -> Result<Option<String>, StoreError> {
        let backend = |reason: String| StoreError::Backend {
            stream: stream.to_owned(),
            reason,
        };
        let actions = self
            .jetstream
            .get_stream(ACTIONS_STREAM)
            .await
            .map_err(|err| backend(err.to_string()))?;
        match actions
            .get_last_raw_message_by_subject(&actions_subject(stream))
            .await
        {
            Ok(message) => Ok(message.headers.get("Nats-Msg-Id").map(|id| id.to_string())),
            // Nothing published on the subject yet.
            Err(err) if err.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(err) => Err(backend(err.to_string())),
        }
    }

    /// One compare-and-swap write of `stream`'s value.
    async fn write(&self, stream: &str, expected: u64, bytes: Vec<u8>) -> Result<u64, StoreError> {
        let taken = || StoreError::Taken {
            stream: stream.to_owned(),
            expected,
        };
        let backend = |reason: String| StoreError::Backend {
            stream: stream.to_owned(),
            reason,
        };
        if expected == 0 {
            self.bucket
                .create(stream, bytes.into())
                .await
                .map_err(|err| match err.kind() {
                    CreateErrorKind::AlreadyExists => taken(),
                    _ => backend(err.to_string()),
                })
        } else {
            self.bucket
                .update(stream, bytes.into(), expected)
                .await
                .map_err(|err| match err.kind() {
                    UpdateErrorKind::WrongLastRevision => taken(),
                    _ => backend(err.to_string()),
                })
        }
    }

    /// The revision at which `stream`'s value is `bytes`, if it is.
    async fn holds(&self, stream: &str, bytes: &[u8]) -> Option<u64> {
        let entry = self.bucket.entry(stream).await.ok()??;
        (entry.value.as_ref() == bytes).then_some(entry.revision)
    }
}

impl ContextStore for JetStreamStore {
    async fn load(&self, stream: &str) -> Result<Stored, StoreError> {
        let Some((value, revision)) = self.value(stream).await? else {
            return Ok(Stored::default());
        };
        // File input's runs carry only the contexts over (`contexts_only`).
        let resume = self.distributed.then_some(Resume {
            epoch0: value.epoch0,
            last_slice: value.last_slice,
            events_through: value.events_through_seq,
        });
        Ok(Stored {
            context: value.ctx,
            revision,
            resume,
        })
    }

    async fn commit(
        &self,
        stream: &str,
        expected: u64,
        commit: StreamCommit<'_>,
    ) -> Result<u64, StoreError> {
        let actions = lock(&self.pending)
            .pushed
            .remove(stream)
            .unwrap_or_default();
        let value = StreamValue {
            v: 1,
            epoch0: commit.epoch0,
            slice_ms: self.slice_ms,
            last_slice: commit.last_slice,
            events_through_seq: commit.events_through,
            ctx: commit.context.clone(),
            outbox: (!actions.is_empty()).then(|| Outbox {
                slice: commit.last_slice,
                actions: actions.clone(),
            }),
            host: self.host.clone(),
        };
        let bytes: Vec<u8> = serde_json::to_vec(&value).expect("stream values serialise");
        crash_point("before_kv");
        let what = format!("committing stream '{stream}' to the KV bucket");
        let written = super::retrying(
            &what,
            &self.link,
            |err| matches!(err, StoreError::Backend { .. }),
            || self.write(stream, expected, bytes.clone()),
        )
        .await;
        let revision = match written {
            Ok(revision) => revision,
            // A retry after a write whose answer was lost finds its own value there.
            Err(err @ StoreError::Taken { .. }) => match self.holds(stream, &bytes).await {
                Some(revision) => revision,
                None => return Err(err),
            },
            Err(err) => return Err(err),
        };
        crash_point("after_kv");
        self.link.committed(stream, commit.last_slice);
        if !actions.is_empty() {
            lock(&self.pending)
                .committed
                .push((stream.to_owned(), actions));
        }
        Ok(revision)
    }

    fn keeps_outbox(&self) -> bool {
        self.distributed
    }
}

/// Publishes committed actions on `live.<stream>.actions` and error records on
/// `live.<stream>.errors`.
pub struct JetStreamSink {
    jetstream: async_nats::jetstream::Context,
    link: Arc<BrokerLink>,
    pending: Arc<Mutex<Pending>>,
}

impl JetStreamSink {
    /// Publishes the outboxes `(stream, actions)` with their ids and waits for every ack,
    /// all sent before any ack is awaited; tries again while NATS is away (the ids make a
    /// repeat harmless).
    pub async fn publish(
        jetstream: &async_nats::jetstream::Context,
        link: &BrokerLink,
        outboxes: &[(String, Vec<OutboxAction>)],
    ) -> Result<(), SinkError> {
        super::retrying(
            "publishing actions",
            link,
            |_| true,
            || Self::publish_once(jetstream, outboxes),
        )
        .await
    }

    async fn publish_once(
        jetstream: &async_nats::jetstream::Context,
        outboxes: &[(String, Vec<OutboxAction>)],
    ) -> Result<(), SinkError> {
        let mut acks = Vec::new();
        for (stream, actions) in outboxes {
            let subject = actions_subject(stream);
            for action in actions {
                let message = async_nats::jetstream::message::PublishMessage::build()
                    .payload(action.action.get().as_bytes().to_vec().into())
                    .message_id(&action.id);
                let ack = jetstream
                    .send_publish(subject.clone(), message)
                    .await
                    .map_err(|err| publish_error(&subject, err.to_string()))?;
                if fault::armed("mid_publish") {
                    // The recovery tests' crash right after one action is published.
                    ack.await
                        .map_err(|err| publish_error(&subject, err.to_string()))?;
                    crash_point("mid_publish");
                    continue;
                }
                acks.push((ack, stream));
            }
        }
        for (ack, stream) in acks {
            ack.await
                .map_err(|err| publish_error(&actions_subject(stream), err.to_string()))?;
        }
        Ok(())
    }
}

fn publish_error(subject: &str, reason: String) -> SinkError {
    SinkError::Output(OutputError {
        what: "actions",
        path: subject.into(),
        source: std::io::Error::other(reason),
    })
}

impl ActionSink for JetStreamSink {
    fn push(&mut self, action: &Action, id: ActionId<'_>) {
        let mut json = Vec::with_capacity(256);
        action.write_json(&mut json);
        let json = String::from_utf8(json).expect("actions are UTF-8");
        let action_json = RawValue::from_string(json).expect("actions are JSON");
        lock(&self.pending)
            .pushed
            .entry(id.stream.to_owned())
            .or_default()
            .push(OutboxAction {
                id: id.to_string(),
                action: action_json,
            });
    }

    fn push_error(&mut self, record: &ErrorRecord) {
        lock(&self.pending).errors.push(record.clone());
    }

    async fn flush_if_full(&mut self) -> Result<(), SinkError> {
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), SinkError> {
        let (committed, errors) = {
            let mut pending = lock(&self.pending);
            (
                std::mem::take(&mut pending.committed),
                std::mem::take(&mut pending.errors),
            )
        };
        if !committed.is_empty() {
            JetStreamSink::publish(&self.jetstream, &self.link, &committed).await?;
            crash_point("after_publish");
        }
        for record in errors {
            let stream = record.stream_id.as_deref().unwrap_or("_");
            let subject = errors_subject(stream);
            let json = serde_json::to_vec(&record).expect("error records serialise");
            let publish = || async {
                let ack = self
                    .jetstream
                    .publish(subject.clone(), json.clone().into())
                    .await
                    .map_err(|err| publish_error(&subject, err.to_string()))?;
                ack.await
                    .map_err(|err| publish_error(&subject, err.to_string()))
                    .map(drop)
            };
            super::retrying("publishing an error record", &self.link, |_| true, publish).await?;
        }
        Ok(())
    }

    async fn finish(mut self) -> Result<(), SinkError> {
        self.flush().await
    }
}
