//! Events from JetStream (SPEC §12): a durable pull consumer on `LIVE_EVENTS`, one
//! message per event. Every message is checked as an event; one that is not becomes an
//! `invalid_event` record with its stream sequence and is acknowledged with the rest.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy};
use async_nats::jetstream::consumer::{PullConsumer, pull};
use async_nats::jetstream::message::Acker;
use futures_util::{FutureExt, StreamExt};

use super::connection::Connection;
use super::topology::{EVENTS_STREAM, events_subject, stream_of_subject};
use crate::ops::health::BrokerLink;
use crate::source::{Delivery, EventSource, InputError, InputPlace, SourceError, parse_event};

/// The durable consumer the scheduling host reads through.
pub const SCHEDULER_CONSUMER: &str = "sched";
/// Most messages one `next` hands over at once.
const MAX_BATCH: usize = 512;
/// How long the server waits for an acknowledgement before it delivers a message again.
/// A slice is acknowledged once it commits, which a slow crew can delay; a redelivery in
/// the same session is recognised by its sequence and dropped.
const ACK_WAIT: Duration = Duration::from_secs(300);

/// The consumer could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cannot read events from NATS stream {EVENTS_STREAM}: {reason}")]
pub struct ConsumerError {
    pub reason: String,
}

pub struct JetStreamSource {
    messages: pull::Stream,
    /// Acknowledgement handles of delivered messages not yet acknowledged, by sequence.
    unacked: BTreeMap<u64, Acker>,
    /// The highest sequence delivered in this session.
    delivered_through: u64,
    max_event_bytes: usize,
    /// True while the consumer has nothing pending.
    caught_up: Arc<AtomicBool>,
    link: Arc<BrokerLink>,
}

impl JetStreamSource {
    /// The consumer `sched` on the events of `streams` (all streams when empty).
    ///
    /// The consumer is made anew at every start, delivering from just after its old ack
    /// floor: the events an earlier host received but did not acknowledge come again at
    /// once, instead of after their ack wait. Acknowledgements only ever cover events
    /// whose every effect is committed, so nothing below the floor is needed, and the
    /// scheduler skips what a stream committed above it.
    /// `caught_up` is set while the consumer has no backlog: the scheduler's clock then
    /// closes slices on the wall clock instead of by event time.
    pub async fn open(
        connection: &Connection,
        streams: &[String],
        max_event_bytes: usize,
        caught_up: Arc<AtomicBool>,
    ) -> Result<JetStreamSource, ConsumerError> {
        let error = |err: &dyn std::fmt::Display| ConsumerError {
            reason: err.to_string(),
        };
        let stream = connection
            .jetstream
            .get_stream(EVENTS_STREAM)
            .await
            .map_err(|err| error(&err))?;
        // No consumer yet: this is the first start, and every event is new.
        let start_seq = match stream.consumer_info(SCHEDULER_CONSUMER).await {
            Ok(info) => info.ack_floor.stream_sequence + 1,
            Err(_) => 1,
        };
        let _ = stream.delete_consumer(SCHEDULER_CONSUMER).await;
        let filter_subjects = if streams.is_empty() {
            vec!["live.*.events".to_owned()]
        } else {
            streams.iter().map(|s| events_subject(s)).collect()
        };
        let consumer: PullConsumer = stream
            .get_or_create_consumer(
                SCHEDULER_CONSUMER,
                pull::Config {
                    durable_name: Some(SCHEDULER_CONSUMER.to_owned()),
                    filter_subjects,
                    ack_policy: AckPolicy::All,
                    deliver_policy: DeliverPolicy::ByStartSequence {
                        start_sequence: start_seq.max(1),
                    },
                    ack_wait: ACK_WAIT,
                    max_ack_pending: -1,
                    ..Default::default()
                },
            )
            .await
            .map_err(|err| error(&err))?;
        let messages = consumer.messages().await.map_err(|err| error(&err))?;
        Ok(JetStreamSource {
            messages,
            unacked: BTreeMap::new(),
            delivered_through: 0,
            max_event_bytes,
            caught_up,
            link: connection.link.clone(),
        })
    }

    /// One message as a delivery; `None` for a redelivery already delivered.
    fn delivery(&mut self, message: async_nats::jetstream::Message) -> Option<Delivery> {
        let (seq, pending) = match message.info() {
            Ok(info) => (info.stream_sequence, info.pending),
            Err(err) => {
                tracing::warn!("a NATS message without JetStream metadata: {err}");
                return None;
            }
        };
        self.caught_up.store(pending == 0, Ordering::Relaxed);
        if seq <= self.delivered_through {
            return None;
        }
        self.delivered_through = seq;
        let (message, acker) = message.split();
        self.unacked.insert(seq, acker);
        let stream = stream_of_subject(message.subject.as_str())
            .unwrap_or_default()
            .to_owned();
        let payload = &message.payload;
        let item = parse_event(payload, self.max_event_bytes, payload.len())
            .and_then(|event| {
                if event.stream_id == stream {
                    Ok(event)
                } else {
                    Err(format!(
                        "field 'stream_id': '{}' differs from the stream of its subject {}",
                        event.stream_id, message.subject
                    ))
                }
            })
            .map_err(|message| InputError {
                at: InputPlace::Message { seq, stream },
                message,
            });
        Some(Delivery { seq, item })
    }
}

impl EventSource for JetStreamSource {
    async fn next(&mut self) -> Option<Vec<Delivery>> {
        loop {
            let first = self.messages.next().await?;
            let mut batch = Vec::new();
            let mut received = vec![first];
            while received.len() < MAX_BATCH {
                match self.messages.next().now_or_never() {
                    Some(Some(message)) => received.push(message),
                    _ => break,
                }
            }
            for message in received {
                match message {
                    Ok(message) => batch.extend(self.delivery(message)),
                    Err(err) => tracing::warn!("reading events from NATS: {err}"),
                }
            }
            if !batch.is_empty() {
                return Some(batch);
            }
        }
    }

    async fn ack_through(&mut self, seq: u64) -> Result<(), SourceError> {
        // AckAll: acknowledging the newest message up to `seq` acknowledges them all.
        let newer = self.unacked.split_off(&(seq + 1));
        let done = std::mem::replace(&mut self.unacked, newer);
        let Some((&last, acker)) = done.iter().next_back() else {
            return Ok(());
        };
        // Not waited for: an acknowledgement that is lost costs a redelivery, which the
        // stream's committed `events_through_seq` makes the scheduler skip, and waiting
        // would add a round trip to every commit.
        super::retrying("acknowledging events", &self.link, |_| true, || acker.ack())
            .await
            .map_err(|err| SourceError {
                seq: last,
                reason: err.to_string(),
            })?;
        super::fault::crash_point("after_ack");
        Ok(())
    }

    fn wants_acks(&self) -> bool {
        true
    }
}
