//! The crews a scheduler does not run itself (SPEC §12, `run --selector`): a
//! [`CrewPool`] whose calls go out as work on `LIVE_WORK` and whose outcomes come back
//! from worker hosts on `LIVE_DONE`, so scheduling, dependencies, context and output
//! order are those of local crews.
//!
//! A call's `deadline_ms` holds end to end: a call no worker answers in time fails with
//! `timeout`, and the first result per message id wins (later ones find nobody waiting).
//! A crew whose work consumer has no worker pulling and nothing in flight has no worker:
//! its calls fail at once with `no_worker` rather than hold up their slice, and health
//! says so. The active scheduler publishes each crew's digest in `live_ctx`, which
//! workers check before they serve the crew.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::kv;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use futures_util::StreamExt;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::connection::Connection;
use super::work::{
    DONE_STREAM, WORK_STREAM, WireOutcome, WorkCall, WorkResult, crew_digest, digest_key,
    done_subject, ready_subject, work_consumer,
};
use crate::config::CrewSpec;
use crate::ops::health::lock;
use crate::pool::{
    CallFailure, CallOutcome, CrewPool, CrewState, CrewStatus, FailureReason, StatusHandle,
};
use crate::protocol::Call;

/// How often the scheduler looks whether each remote crew has a worker.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// The remote crews could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the crews on worker hosts: {reason}")]
pub struct RemoteError {
    pub reason: String,
}

fn remote_error(err: impl std::fmt::Display) -> RemoteError {
    RemoteError {
        reason: err.to_string(),
    }
}

struct RemoteCrew {
    digest: String,
    /// Some worker pulls its calls, or has one in flight.
    served: AtomicBool,
    errors: AtomicU64,
}

/// What a waiting call gets: a worker's outcome, or the server's word that no worker
/// answered it in `nats.work_max_deliver` deliveries.
struct Answer {
    worker: String,
    outcome: WireOutcome,
}

impl From<WorkResult> for Answer {
    fn from(result: WorkResult) -> Answer {
        Answer {
            worker: result.worker,
            outcome: result.outcome,
        }
    }
}

/// The server's advisory that a call reached its consumer's `max_deliver`.
#[derive(serde::Deserialize)]
struct MaxDeliveries {
    stream_seq: u64,
    deliveries: u64,
}

struct Shared {
    jetstream: async_nats::jetstream::Context,
    bucket: kv::Store,
    crews: HashMap<String, RemoteCrew>,
    /// Crew names in the order they were given, for status.
    order: Vec<String>,
    /// Calls waiting for their result, by message id.
    waiting: Mutex<HashMap<String, oneshot::Sender<Answer>>>,
    /// The message ids of the calls on `LIVE_WORK`, by stream sequence.
    queued: Mutex<HashMap<u64, String>>,
    /// Per stream: the KV revision its calls are made on (read at its first call).
    revisions: Mutex<HashMap<String, u64>>,
}

/// The crews that run on worker hosts.
pub struct RemoteCrews {
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for RemoteCrews {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl RemoteCrews {
    /// Subscribes to results and starts watching whether each crew has a worker.
    pub async fn start(
        connection: &Connection,
        bucket: kv::Store,
        specs: &[&CrewSpec],
    ) -> Result<RemoteCrews, RemoteError> {
        let mut crews = HashMap::new();
        for spec in specs {
            let digest = crew_digest(spec).map_err(|err| RemoteError {
                reason: format!("cannot read {}: {err}", spec.file.display()),
            })?;
            crews.insert(
                spec.name.clone(),
                RemoteCrew {
                    digest,
                    served: AtomicBool::new(false),
                    errors: AtomicU64::new(0),
                },
            );
        }
        let results = connection
            .client
            .subscribe("live.*.slice.*.*.done")
            .await
            .map_err(remote_error)?;
        let advisories = connection
            .client
            .subscribe(format!(
                "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{WORK_STREAM}.*"
            ))
            .await
            .map_err(remote_error)?;
        let shared = Arc::new(Shared {
            jetstream: connection.jetstream.clone(),
            bucket,
            order: specs.iter().map(|spec| spec.name.clone()).collect(),
            crews,
            waiting: Mutex::new(HashMap::new()),
            queued: Mutex::new(HashMap::new()),
            revisions: Mutex::new(HashMap::new()),
        });
        shared.watch_workers().await;
        let watcher = shared.clone();
        let watch = tokio::spawn(async move {
            loop {
                tokio::time::sleep(WATCH_EVERY).await;
                watcher.watch_workers().await;
            }
        });
        let receiver = shared.clone();
        let receive = tokio::spawn(async move { receiver.receive(results).await });
        let advised = shared.clone();
        let advise = tokio::spawn(async move { advised.given_up(advisories).await });
        Ok(RemoteCrews {
            shared,
            tasks: vec![watch, receive, advise],
        })
    }

    /// Whether `crew` runs on worker hosts.
    pub fn has(&self, crew: &str) -> bool {
        self.shared.crews.contains_key(crew)
    }

    /// The crews' digests, to publish once this host schedules.
    pub fn digests(&self) -> CrewDigests {
        CrewDigests {
            bucket: self.shared.bucket.clone(),
            digests: (self.shared.crews.iter())
                .map(|(name, crew)| (name.clone(), crew.digest.clone()))
                .collect(),
        }
    }
}

/// Each remote crew's digest, for `live_ctx`.
pub struct CrewDigests {
    bucket: kv::Store,
    digests: Vec<(String, String)>,
}

impl CrewDigests {
    /// Publishes them, where workers check theirs against them; the active scheduler
    /// does this once it holds the lock, so a standby with other crews does not
    /// overwrite them.
    pub async fn publish(self) -> Result<(), RemoteError> {
        for (name, digest) in self.digests {
            self.bucket
                .put(digest_key(&name), digest.into_bytes().into())
                .await
                .map_err(remote_error)?;
        }
        Ok(())
    }
}

impl Shared {
    /// Hands each result to the call waiting for it; results nobody waits for (repeats,
    /// late or stale ones) are dropped.
    async fn receive(&self, mut results: async_nats::Subscriber) {
        while let Some(message) = results.next().await {
            let result: WorkResult = match serde_json::from_slice(&message.payload) {
                Ok(result) => result,
                Err(err) => {
                    tracing::warn!(subject = %message.subject, "a result that is not one: {err}");
                    continue;
                }
            };
            let waiter = lock(&self.waiting).remove(&result.message_id());
            if let Some(waiter) = waiter {
                let _ = waiter.send(result.into());
            }
        }
    }

    /// Fails each call the server gave up on after `max_deliver` deliveries (every
    /// worker that took it died, or none answered), and takes it off the work queue.
    async fn given_up(&self, mut advisories: async_nats::Subscriber) {
        while let Some(message) = advisories.next().await {
            let Ok(advisory) = serde_json::from_slice::<MaxDeliveries>(&message.payload) else {
                continue;
            };
            let Some(id) = lock(&self.queued).remove(&advisory.stream_seq) else {
                continue;
            };
            if let Some(waiter) = lock(&self.waiting).remove(&id) {
                let _ = waiter.send(Answer {
                    worker: "-".into(),
                    outcome: WireOutcome::Error {
                        reason: FailureReason::Crash.as_str().into(),
                        message: format!(
                            "call {id} was delivered to workers {} times \
                             (nats.work_max_deliver) and none answered it",
                            advisory.deliveries
                        ),
                    },
                });
            }
            if let Ok(work) = self.jetstream.get_stream(WORK_STREAM).await {
                let _ = work.delete_message(advisory.stream_seq).await;
            }
        }
    }

    /// Refreshes each crew's `served` flag from its work consumer.
    async fn watch_workers(&self) {
        let Ok(work) = self.jetstream.get_stream(WORK_STREAM).await else {
            return; // NATS away: keep the last view
        };
        for (name, crew) in &self.crews {
            let served = match work.consumer_info(work_consumer(name)).await {
                Ok(info) => info.num_waiting > 0 || info.num_ack_pending > 0,
                Err(_) => false,
            };
            let was = crew.served.swap(served, Ordering::Relaxed);
            if was != served {
                if served {
                    tracing::info!(crew = %name, "a worker host serves crew '{name}'");
                } else {
                    tracing::warn!(crew = %name, "no worker host serves crew '{name}': its calls fail with no_worker");
                }
            }
        }
    }

    /// The KV revision `stream`'s calls are made on in this session.
    async fn revision(&self, stream: &str) -> u64 {
        if let Some(&rev) = lock(&self.revisions).get(stream) {
            return rev;
        }
        let rev = match self.bucket.entry(stream).await {
            Ok(Some(entry)) => entry.revision,
            _ => 0,
        };
        *lock(&self.revisions)
            .entry(stream.to_owned())
            .or_insert(rev)
    }

    /// A result for message `id` that is already on `LIVE_DONE`: one that came before
    /// this host was listening, or that it missed while NATS was away.
    async fn published_result(&self, call: &Call, crew: &str, id: &str) -> Option<Answer> {
        let done = self.jetstream.get_stream(DONE_STREAM).await.ok()?;
        let subject = done_subject(&call.stream_id, call.slice, crew);
        match done.get_last_raw_message_by_subject(&subject).await {
            Ok(message) => serde_json::from_slice::<WorkResult>(&message.payload)
                .ok()
                .filter(|result| result.message_id() == id)
                .map(Answer::from),
            Err(err) if err.kind() == LastRawMessageErrorKind::NoMessageFound => None,
            Err(err) => {
                tracing::warn!("cannot look for an earlier result of {id}: {err}");
                None
            }
        }
    }

    async fn call(&self, crew: &str, call: Call) -> CallOutcome {
        let remote = &self.crews[crew];
        let failure = |reason, message: String| {
            remote.errors.fetch_add(1, Ordering::Relaxed);
            Err(CallFailure { reason, message })
        };
        if !remote.served.load(Ordering::Relaxed) {
            return failure(
                FailureReason::NoWorker,
                format!("crew '{crew}' runs on worker hosts, and no worker serves it"),
            );
        }
        let deadline = Instant::now() + Duration::from_millis(call.deadline_ms);
        let rev = self.revision(&call.stream_id).await;
        let subject = ready_subject(&call.stream_id, call.slice, crew);
        let work = WorkCall {
            call_id: call.call_id.clone(),
            rev,
            crew: crew.to_owned(),
            digest: remote.digest.clone(),
            call,
        };
        let id = work.message_id();
        let (sender, answer) = oneshot::channel();
        lock(&self.waiting).insert(id.clone(), sender);
        let payload = serde_json::to_vec(&work).expect("calls serialise");
        let message = PublishMessage::build()
            .payload(payload.into())
            .message_id(&id);
        let published = async {
            self.jetstream
                .send_publish(subject, message)
                .await
                .map_err(|err| err.to_string())?
                .await
                .map_err(|err| err.to_string())
        };
        let call = work.call;
        let answered = |answer| async move {
            let answer = tokio::time::timeout_at(deadline, answer).await;
            answer.ok().and_then(Result::ok).ok_or(())
        };
        let outcome = match tokio::time::timeout_at(deadline, published).await {
            Ok(Ok(ack)) if ack.duplicate => {
                // Published before, by this host's previous run on the same state.
                match self.published_result(&call, crew, &id).await {
                    Some(result) => Ok(result),
                    None => answered(answer).await,
                }
            }
            Ok(Ok(ack)) => {
                lock(&self.queued).insert(ack.sequence, id.clone());
                let outcome = answered(answer).await;
                lock(&self.queued).remove(&ack.sequence);
                outcome
            }
            Ok(Err(reason)) => {
                lock(&self.waiting).remove(&id);
                return failure(
                    FailureReason::RunnerError,
                    format!("cannot publish crew '{crew}''s call to the worker hosts: {reason}"),
                );
            }
            Err(_) => Err(()),
        };
        lock(&self.waiting).remove(&id);
        let result = match outcome {
            Ok(result) => result,
            // The last look: a result this host missed.
            Err(()) => match self.published_result(&call, crew, &id).await {
                Some(result) => result,
                None => {
                    return failure(
                        FailureReason::Timeout,
                        format!(
                            "crew '{crew}' on the worker hosts did not answer call {id} \
                             within its deadline of {} ms",
                            call.deadline_ms
                        ),
                    );
                }
            },
        };
        let outcome = result.outcome.into_outcome(crew, &result.worker);
        if outcome.is_err() {
            remote.errors.fetch_add(1, Ordering::Relaxed);
        }
        outcome
    }
}

impl CrewPool for RemoteCrews {
    fn call(&self, crew: &str, call: Call) -> impl Future<Output = CallOutcome> + Send + 'static {
        let shared = self.shared.clone();
        let crew = crew.to_owned();
        async move { shared.call(&crew, call).await }
    }

    /// Counted where it is seen; a remote crew is not disabled from here (its workers'
    /// supervisors count their own failures).
    fn count_failure(&self, crew: &str, _failure: CallFailure) {
        if let Some(remote) = self.shared.crews.get(crew) {
            remote.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn status(&self) -> StatusHandle {
        let shared = self.shared.clone();
        StatusHandle::new(move || {
            shared
                .order
                .iter()
                .map(|name| {
                    let crew = &shared.crews[name];
                    CrewStatus {
                        crew: name.clone(),
                        state: if crew.served.load(Ordering::Relaxed) {
                            CrewState::Remote
                        } else {
                            CrewState::NoWorker
                        },
                        pid: None,
                        last_heartbeat_ms: None,
                        restarts: 0,
                        errors: crew.errors.load(Ordering::Relaxed),
                        sandbox_layers: Vec::new(),
                        version: None,
                        loaded_at: None,
                        start_mode: None,
                        start_ms: None,
                    }
                })
                .collect()
        })
    }
}
