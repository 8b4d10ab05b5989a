//! What the scheduler asks of crews, and what it gets back: one call, one outcome.
//!
//! The scheduler depends only on the [`CrewPool`] trait, so its logic is tested with
//! in-memory pools and a virtual clock; the supervisor implements it with local processes,
//! and a pool of remote workers can implement it the same way.

mod call;
mod status;

pub use call::{CallFailure, CallOutcome, CallOutput, FailureReason};
pub use status::{CrewState, CrewStatus, StatusHandle};

use std::future::Future;

use crate::protocol::Call;

/// Runs calls on named crews. One call per crew is in flight at a time; a pool queues
/// further calls to the same crew.
pub trait CrewPool: Send + Sync + 'static {
    fn call(&self, crew: &str, call: Call) -> impl Future<Output = CallOutcome> + Send + 'static;

    /// Counts a failure found after the crew's call had succeeded (a context patch the
    /// host rejected, SPEC §5) toward the crew's `max_errors`, as a failed call counts.
    fn count_failure(&self, crew: &str, failure: CallFailure);

    /// A live view of every crew's state, for health, metrics and heartbeats. It stays
    /// readable after the pool is gone, so a hard stop can still find the runners to reap.
    fn status(&self) -> StatusHandle;
}
