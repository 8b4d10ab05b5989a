//! A worker host (SPEC §12, `live-crew worker`): runs the calls of its crews from one
//! durable work-queue consumer per crew (`work_<crew>`), shared by every worker of that
//! crew. Each slot takes one call at a time, keeps it alive with in-progress acks while
//! the crew works, publishes the result on `.done` with the call's message id, and only
//! then acknowledges it, so a worker that dies mid-call leaves the call to be delivered
//! to another worker after `ack_wait`.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::{AckPolicy, PullConsumer, pull};
use async_nats::jetstream::kv;
use async_nats::jetstream::message::PublishMessage;
use futures_util::StreamExt;

use super::connection::Connection;
use super::work::{
    WORK_STREAM, WireOutcome, WorkCall, WorkResult, crew_digest, crew_ready_filter, digest_key,
    done_subject, work_consumer,
};
use crate::config::{CrewSpec, NatsSettings};
use crate::ops::health::{BrokerLink, lock};
use crate::pool::{CallOutcome, CrewPool};

/// How long one pull request waits for a call before the next one is made.
const PULL_EXPIRES: Duration = Duration::from_secs(5);

/// A worker cannot serve its crews.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(
        "crew '{crew}' here differs from the scheduler's copy (runtime file digest {here}, \
         the scheduler's {scheduler}); deploy the same crews folder to both"
    )]
    Differs {
        crew: String,
        here: String,
        scheduler: String,
    },
    #[error("cannot set up the work of crew '{crew}' on NATS: {reason}")]
    Setup { crew: String, reason: String },
}

/// One crew this worker serves.
pub struct ServedCrew {
    pub name: String,
    digest: String,
    consumer: PullConsumer,
}

/// Checks each crew against the digest the scheduler published, and opens (or makes)
/// its work consumer.
pub async fn serve_crews(
    connection: &Connection,
    bucket: &kv::Store,
    specs: &[CrewSpec],
    settings: &NatsSettings,
) -> Result<Vec<ServedCrew>, WorkerError> {
    let work = connection
        .jetstream
        .get_stream(WORK_STREAM)
        .await
        .map_err(|err| WorkerError::Setup {
            crew: "*".into(),
            reason: err.to_string(),
        })?;
    let mut served = Vec::new();
    for spec in specs {
        let setup = |reason: String| WorkerError::Setup {
            crew: spec.name.clone(),
            reason,
        };
        let digest = crew_digest(spec).map_err(|err| setup(err.to_string()))?;
        match bucket.get(digest_key(&spec.name)).await {
            Ok(Some(published)) if published.as_ref() != digest.as_bytes() => {
                return Err(WorkerError::Differs {
                    crew: spec.name.clone(),
                    here: digest,
                    scheduler: String::from_utf8_lossy(&published).into_owned(),
                });
            }
            Ok(Some(_)) => {}
            Ok(None) => tracing::warn!(
                crew = %spec.name,
                "no scheduler has published crew '{}''s digest yet; calls carry it, and \
                 this worker refuses those made for another version",
                spec.name
            ),
            Err(err) => return Err(setup(err.to_string())),
        }
        let consumer = work
            .get_or_create_consumer(
                &work_consumer(&spec.name),
                pull::Config {
                    durable_name: Some(work_consumer(&spec.name)),
                    filter_subject: crew_ready_filter(&spec.name),
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: Duration::from_millis(settings.work_ack_wait_ms.max(1)),
                    max_deliver: settings.work_max_deliver,
                    ..Default::default()
                },
            )
            .await
            .map_err(|err| setup(err.to_string()))?;
        served.push(ServedCrew {
            name: spec.name.clone(),
            digest,
            consumer,
        });
    }
    Ok(served)
}

/// What every slot of a worker shares.
struct Slots<P> {
    jetstream: async_nats::jetstream::Context,
    pool: P,
    link: Arc<BrokerLink>,
    worker: String,
    ack_wait: Duration,
}

/// Runs `slots` calls at a time per crew until `stop` resolves; then takes no new calls
/// and returns the pool once the calls in flight are answered.
pub async fn run<P: CrewPool>(
    connection: &Connection,
    crews: Vec<ServedCrew>,
    pool: P,
    slots: u32,
    settings: &NatsSettings,
    worker: String,
    stop: impl Future<Output = ()>,
) -> P {
    let shared = Arc::new(Slots {
        jetstream: connection.jetstream.clone(),
        pool,
        link: connection.link.clone(),
        worker,
        ack_wait: Duration::from_millis(settings.work_ack_wait_ms.max(1)),
    });
    let (stopping, stopped) = tokio::sync::watch::channel(false);
    let mut running = tokio::task::JoinSet::new();
    let crews: Vec<Arc<ServedCrew>> = crews.into_iter().map(Arc::new).collect();
    for crew in &crews {
        for _ in 0..slots.max(1) {
            let (shared, crew, stopped) = (shared.clone(), crew.clone(), stopped.clone());
            running.spawn(async move { shared.slot(&crew, stopped).await });
        }
    }
    tracing::info!(
        crews = %crews.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(","),
        slots,
        "worker ready: taking calls"
    );
    stop.await;
    tracing::info!("stopping: finishing the calls in flight, taking no new ones");
    let _ = stopping.send(true);
    while running.join_next().await.is_some() {}
    match Arc::try_unwrap(shared) {
        Ok(slots) => slots.pool,
        Err(_) => unreachable!("every slot has ended"),
    }
}

impl<P: CrewPool> Slots<P> {
    /// Takes one call at a time from `crew`'s consumer until told to stop.
    async fn slot(&self, crew: &ServedCrew, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            if *stop.borrow() {
                return;
            }
            let batch = crew
                .consumer
                .batch()
                .max_messages(1)
                .expires(PULL_EXPIRES)
                .messages();
            let mut batch = tokio::select! {
                batch = batch => match batch {
                    Ok(batch) => batch,
                    Err(err) => {
                        tracing::warn!(crew = %crew.name, "cannot ask for calls: {err}");
                        tokio::time::sleep(Duration::from_millis(250)).await;
                        continue;
                    }
                },
                _ = stop.changed() => return,
            };
            let message = tokio::select! {
                message = batch.next() => message,
                _ = stop.changed() => return,
            };
            match message {
                Some(Ok(message)) => self.take(crew, message).await,
                Some(Err(err)) => tracing::warn!(crew = %crew.name, "receiving a call: {err}"),
                None => {} // the pull request expired: ask again
            }
        }
    }

    /// Runs one call, answers it on `.done`, then acknowledges it.
    async fn take(&self, crew: &ServedCrew, message: async_nats::jetstream::Message) {
        let work: WorkCall = match serde_json::from_slice(&message.payload) {
            Ok(work) => work,
            Err(err) => {
                tracing::error!(subject = %message.subject, "a call that is not one: {err}; dropped");
                let _ = message.ack_with(AckKind::Term).await;
                return;
            }
        };
        let id = work.message_id();
        let subject = done_subject(&work.call.stream_id, work.call.slice, &crew.name);
        lock(&self.link.calls_in_flight).insert(id.clone());
        let outcome = if work.digest == crew.digest {
            self.keep_alive(&message, self.pool.call(&crew.name, work.call))
                .await
        } else {
            Err(crate::pool::CallFailure {
                reason: crate::pool::FailureReason::RunnerError,
                message: format!(
                    "crew '{}' on worker {} is another version than the scheduler's \
                     (runtime file digest {}, the call's {}); deploy the same crews folder",
                    crew.name, self.worker, crew.digest, work.digest
                ),
            })
        };
        let result = WorkResult {
            call_id: work.call_id,
            rev: work.rev,
            worker: self.worker.clone(),
            outcome: WireOutcome::from(outcome),
        };
        let payload = serde_json::to_vec(&result).expect("results serialise");
        let published = super::retrying(
            "publishing a call's result",
            &self.link,
            |_| true,
            || async {
                let message = PublishMessage::build()
                    .payload(payload.clone().into())
                    .message_id(&id);
                self.jetstream
                    .send_publish(subject.clone(), message)
                    .await
                    .map_err(|err| err.to_string())?
                    .await
                    .map_err(|err| err.to_string())
            },
        )
        .await;
        match published {
            // Answered: the call is done, whoever else may have answered it too.
            Ok(_) => {
                if let Err(err) = message.double_ack().await {
                    tracing::warn!(call = %id, "cannot acknowledge a call (it may run again): {err}");
                }
            }
            // Not acknowledged: the call goes to a worker again after ack_wait.
            Err(err) => tracing::error!(call = %id, "cannot publish a call's result: {err}"),
        }
        lock(&self.link.calls_in_flight).remove(&id);
    }

    /// Awaits `call`, telling the server every third of `ack_wait` that it is in progress.
    async fn keep_alive(
        &self,
        message: &async_nats::jetstream::Message,
        call: impl Future<Output = CallOutcome>,
    ) -> CallOutcome {
        let mut call = pin!(call);
        let mut ticks = tokio::time::interval(self.ack_wait / 3);
        ticks.tick().await;
        loop {
            tokio::select! {
                outcome = &mut call => return outcome,
                _ = ticks.tick() => {
                    let _ = message.ack_with(AckKind::Progress).await;
                }
            }
        }
    }
}
