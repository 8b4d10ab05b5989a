//! One scheduling host at a time (SPEC §12): the active host holds the key `lock.sched`
//! of the `live_ctx` bucket and rewrites it every third of `failover_ms`; a standby
//! watches it and takes it over with a compare-and-swap once its revision has not moved
//! for `failover_ms` on the standby's own clock (no clocks are compared across hosts).
//! The key has a `.`, which no stream id has, so it never names a stream. The streams'
//! own compare-and-swap writes stay the fence: a host that lost the lock but still
//! commits loses those.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::kv::{self, CreateErrorKind};
use tokio::time::Instant;

use crate::ops::health::{BrokerLink, Role, lock};

/// The key of the scheduler's lock.
pub const LOCK_KEY: &str = "lock.sched";

/// The lock could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("cannot take the scheduler's lock in the KV bucket: {reason}")]
pub struct LockError {
    pub reason: String,
}

fn lock_error(err: impl std::fmt::Display) -> LockError {
    LockError {
        reason: err.to_string(),
    }
}

/// Waits until this host holds the lock; returns its revision. A host that finds it
/// held waits as a standby and says so, in its log and in `link` (for `health`).
pub async fn acquire(
    bucket: &kv::Store,
    host: &str,
    failover: Duration,
    link: &BrokerLink,
) -> Result<u64, LockError> {
    let revision = wait_for_lock(bucket, host, failover, link).await?;
    *lock(&link.role) = Role::Active;
    Ok(revision)
}

async fn wait_for_lock(
    bucket: &kv::Store,
    host: &str,
    failover: Duration,
    link: &BrokerLink,
) -> Result<u64, LockError> {
    let mut standby_since: Option<(u64, Instant)> = None;
    loop {
        match bucket
            .create(LOCK_KEY, host.to_owned().into_bytes().into())
            .await
        {
            Ok(revision) => return Ok(revision),
            Err(err) if err.kind() == CreateErrorKind::AlreadyExists => {}
            Err(err) => return Err(lock_error(err)),
        }
        let Some(entry) = bucket.entry(LOCK_KEY).await.map_err(lock_error)? else {
            continue; // deleted meanwhile: try to create it again
        };
        match standby_since {
            Some((revision, since)) if revision == entry.revision => {
                if since.elapsed() >= failover {
                    let taken = bucket
                        .update(LOCK_KEY, host.to_owned().into_bytes().into(), revision)
                        .await;
                    if let Ok(revision) = taken {
                        let holder = String::from_utf8_lossy(&entry.value);
                        tracing::warn!(
                            previous = %holder,
                            "the active scheduler stopped renewing its lock for {failover:?}: taking over"
                        );
                        return Ok(revision);
                    }
                    // Another standby was quicker; watch the new holder.
                    standby_since = None;
                    continue;
                }
            }
            _ => {
                let holder = String::from_utf8_lossy(&entry.value).into_owned();
                if standby_since.is_none() {
                    tracing::info!(active = %holder, "another host schedules these streams: waiting as a standby");
                }
                *lock(&link.role) = Role::Standby {
                    active_host: holder,
                };
                standby_since = Some((entry.revision, Instant::now()));
            }
        }
        tokio::time::sleep(failover / 4).await;
    }
}

/// The lock, held and renewed.
pub struct Held {
    bucket: kv::Store,
    revision: Arc<AtomicU64>,
    renewal: tokio::task::JoinHandle<()>,
}

impl Held {
    /// Gives the lock up at a clean stop, so a host started next need not wait out
    /// `failover_ms`; only if it is still this host's.
    pub async fn release(self) {
        self.renewal.abort();
        let revision = self.revision.load(Ordering::Relaxed);
        let _ = self
            .bucket
            .delete_expect_revision(LOCK_KEY, Some(revision))
            .await;
    }
}

/// Renews the lock every third of `failover` for as long as the host runs. Losing it
/// (a standby took over after this host stalled) ends the process: the other host
/// serves the streams now, and this one must stop at once.
pub fn renew(bucket: kv::Store, host: String, revision: u64, failover: Duration) -> Held {
    let current = Arc::new(AtomicU64::new(revision));
    let renewed = current.clone();
    let lock = bucket.clone();
    let renewal = tokio::spawn(async move {
        loop {
            tokio::time::sleep(failover / 3).await;
            let revision = renewed.load(Ordering::Relaxed);
            match lock
                .update(LOCK_KEY, host.clone().into_bytes().into(), revision)
                .await
            {
                Ok(next) => renewed.store(next, Ordering::Relaxed),
                Err(err) if err.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    tracing::error!(
                        "another host took over the scheduler's lock; this host stops serving the streams"
                    );
                    std::process::exit(1);
                }
                // NATS away: the next renewal tries again; a standby may take over.
                Err(err) => tracing::warn!("cannot renew the scheduler's lock: {err}"),
            }
        }
    });
    Held {
        bucket,
        revision: current,
        renewal,
    }
}
