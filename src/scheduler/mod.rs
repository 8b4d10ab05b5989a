//! The scheduler (SPEC §4): a pure core (`core.rs`: lanes, plans, decisions, commits,
//! output order) under a thin shell that drives it with the ports: events from an
//! [`EventSource`], calls to a [`CrewPool`], contexts to a [`ContextStore`], actions to an
//! [`ActionSink`], slice closes from a [`SliceClock`]. The shell is the same code in
//! batch, live and replay runs; only the clock and the source differ.
//!
//! The commit order for each step: error records are reported, actions are pushed to the
//! sink and made durable (every step when the clock runs in real time or the source takes
//! acknowledgements, else in large chunks), then the committed contexts of the slices
//! whose actions are written go to the store, and only then is the source acknowledged
//! through the oldest delivery a slice still holds. A sink or store that fails stops the
//! run before anything after it happens; a store that finds another host committed a
//! stream first stops only that stream. `docs/DESIGN.md` explains the choices where SPEC
//! is silent.

mod acks;
pub mod clock;
mod core;
mod decide;
mod lane;
mod plan;
mod records;
mod stream;
pub mod wall_clock;

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use self::core::{Completion, Core};
use crate::config::{CrewSpec, Crews, GlobalConfig};
use crate::context::{ContextStore, StoreError, Stored, StreamCommit};
use crate::model::{SharedEvent, Timestamp};
use crate::ops::metrics::Metrics;
use crate::pool::CrewPool;
use crate::sink::{ActionSink, ErrorRecord, ErrorSink, OutputError, RunSummary, SinkError};
use crate::source::{Delivery, EventSource, SourceError};
use clock::SliceClock;

/// A run could not go on.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error(transparent)]
    Context(#[from] StoreError),
    #[error(transparent)]
    Source(#[from] SourceError),
}

/// The ports one run is driven through.
pub struct Ports<'a, P, S, Src, K, C> {
    pub pool: &'a P,
    pub store: &'a S,
    pub source: Src,
    pub actions: K,
    pub clock: C,
    pub errors: ErrorSink,
    pub metrics: Arc<Metrics>,
    /// New versions of the crews folder while the run goes on (hot reload).
    pub reloads: Option<mpsc::UnboundedReceiver<NewCrews>>,
}

/// What a run asks of its pool when the crews folder changes (hot reload, SPEC §15).
pub trait LoadCrews {
    /// Runs `spec`'s crew from now on: started if the pool does not run it, else in its
    /// new version from its next call. A pool that cannot says why.
    fn load(&self, spec: &CrewSpec) -> Result<(), String>;

    /// Stops a crew that has no call left (its folder is gone).
    fn unload(&self, crew: &str);
}

/// A new version of the crews folder, checked as `run` checks one (hot reload, SPEC
/// §15): it replaces the crews the run has at the next slice boundary.
pub struct NewCrews {
    pub crews: Crews,
    /// Crews whose folder changed (code or runtime file): their next runner starts from
    /// the new version.
    pub changed: BTreeSet<String>,
}

/// Runs the source to its end (or until `stop` resolves, which ends the input the same
/// way), drives every crew through the pool, and writes actions and error records. With
/// `replay_from`, only the slices that start at or after it run. Errors of crews and
/// input are in the summary, not in the `Result`.
pub async fn run<P, S, Src, K, C>(
    crews: &Crews,
    global: &GlobalConfig,
    ports: Ports<'_, P, S, Src, K, C>,
    replay_from: Option<Timestamp>,
    stop: impl Future<Output = ()>,
) -> Result<RunSummary, RunError>
where
    P: CrewPool + LoadCrews,
    S: ContextStore,
    Src: EventSource,
    K: ActionSink,
    C: SliceClock,
{
    let started = std::time::Instant::now();
    let Ports {
        pool,
        store,
        source,
        actions,
        clock,
        mut errors,
        metrics,
        reloads,
    } = ports;
    errors.count_into(metrics.clone());
    let core = Core::new(
        crews,
        global,
        clock.reorder_slices(),
        replay_from,
        metrics.clone(),
        source.wants_acks(),
    );
    let mut shell = Shell {
        durable_each_step: clock.real_time() || source.wants_acks(),
        core,
        pool,
        store,
        source,
        actions,
        clock,
        errors,
        revisions: Vec::new(),
        committed_through: Vec::new(),
        metrics: metrics.clone(),
        calls: JoinSet::new(),
        acked: 0,
        reloads,
        specs: by_name(crews),
    };
    shell.drive(stop).await?;
    let Shell {
        core,
        actions,
        errors,
        ..
    } = shell;
    match actions.finish().await {
        Ok(()) | Err(SinkError::Closed) => {}
        Err(SinkError::Output(error)) => return Err(error.into()),
    }
    let mut summary = core.into_summary();
    summary.errors = errors.counts().clone();
    errors.finish()?;
    summary.elapsed = started.elapsed();
    Ok(summary)
}

/// The I/O around the core: one task owns all state; calls run concurrently as spawned
/// tasks and report back.
struct Shell<'a, P, S, Src, K, C> {
    core: Core,
    pool: &'a P,
    store: &'a S,
    source: Src,
    actions: K,
    clock: C,
    errors: ErrorSink,
    /// The store's revision of each stream's context, by stream index.
    revisions: Vec<u64>,
    /// Per stream: deliveries up to this sequence were committed by an earlier host.
    committed_through: Vec<u64>,
    metrics: Arc<Metrics>,
    calls: JoinSet<Completion>,
    /// Outputs are made durable after every step, not only when a chunk is full.
    durable_each_step: bool,
    /// The source is acknowledged through this delivery.
    acked: u64,
    reloads: Option<mpsc::UnboundedReceiver<NewCrews>>,
    /// The versions of the crews running, by name.
    specs: HashMap<String, CrewSpec>,
}

/// Whether a run goes on after its outputs were settled.
enum Settled {
    Going,
    /// Nobody reads the output any more.
    OutputClosed,
}

impl<P, S, Src, K, C> Shell<'_, P, S, Src, K, C>
where
    P: CrewPool + LoadCrews,
    S: ContextStore,
    Src: EventSource,
    K: ActionSink,
    C: SliceClock,
{
    async fn drive(&mut self, stop: impl Future<Output = ()>) -> Result<(), RunError> {
        let mut stop = pin!(stop);
        let mut input_done = false;
        let mut dirty: BTreeSet<usize> = BTreeSet::new();
        loop {
            for stream in std::mem::take(&mut dirty) {
                self.core.pump(stream, Instant::now());
            }
            self.send_calls();
            for crew in self.core.take_drained() {
                tracing::info!(crew = %crew, "hot reload: crew '{crew}' ran its last call and stops");
                self.pool.unload(&crew);
            }
            let actions = &mut self.actions;
            self.core.emit(&mut |action, id| actions.push(action, id));
            if let Settled::OutputClosed = self.settle().await? {
                tracing::info!("output closed; stopping");
                return Ok(());
            }
            if input_done && self.calls.is_empty() {
                if self.core.all_emitted() {
                    return Ok(());
                }
                if self.core.next_deadline().is_none() {
                    // Nothing can move any more: give up the triggers that still wait.
                    dirty.extend(self.core.drop_waiting_bundles());
                    continue;
                }
            }
            let next_deadline = self.core.next_deadline();
            let idle = self.calls.is_empty() && next_deadline.is_none();
            let take_input = !input_done && (idle || !self.core.window_full());
            let next_close = self.clock.next_close().filter(|_| !input_done);
            tokio::select! {
                biased;
                Some(done) = self.calls.join_next(), if !self.calls.is_empty() => {
                    let mut done = done.expect("call tasks do not panic");
                    done.lag = self
                        .clock
                        .close_time(done.stream, done.slice)
                        .map(|closed| Instant::now().saturating_duration_since(closed));
                    dirty.extend(self.core.complete(done));
                }
                // Before input: a busy feed must not delay a slice's close.
                () = wait_for(&self.clock, next_close), if next_close.is_some() => {
                    let now = Instant::now();
                    for due in self.clock.due(now) {
                        self.core.close_below(due.stream, due.upto, now - due.due, &mut dirty);
                    }
                }
                new = next_reload(&mut self.reloads) => {
                    dirty.extend(self.reload(new));
                }
                () = &mut stop, if !input_done => {
                    input_done = true;
                    self.core.finish_input(&mut dirty);
                }
                batch = self.source.next(), if take_input => match batch {
                    Some(deliveries) => {
                        for delivery in deliveries {
                            self.deliver(delivery, &mut dirty).await?;
                        }
                    }
                    None => {
                        input_done = true;
                        self.core.finish_input(&mut dirty);
                    }
                },
                () = sleep_until(next_deadline), if next_deadline.is_some() => {
                    self.core.deadlines_passed(Instant::now(), &mut dirty);
                }
            }
        }
    }

    /// Files one delivery; a stream's first event loads its context first.
    async fn deliver(
        &mut self,
        delivery: Delivery,
        dirty: &mut BTreeSet<usize>,
    ) -> Result<(), RunError> {
        match delivery.item {
            Ok(event) => {
                let stream = match self.core.stream_id(&event.stream_id) {
                    Some(stream) => stream,
                    None => self.open_stream(&event).await?,
                };
                if delivery.seq <= self.committed_through[stream] {
                    // Redelivered after a restart, and already in the committed state.
                    self.core.skip(stream, delivery.seq);
                    return Ok(());
                }
                let close_on_input = self.clock.input_closes_slices();
                self.core
                    .accept(stream, delivery.seq, event, close_on_input, dirty);
            }
            Err(error) => self.core.reject(delivery.seq, error),
        }
        Ok(())
    }

    async fn open_stream(&mut self, first: &SharedEvent) -> Result<usize, RunError> {
        let name: Arc<str> = first.stream_id.as_str().into();
        let Stored {
            context,
            revision,
            resume,
        } = self.store.load(&name).await?;
        let epoch0 = resume.map_or(first.ts, |resume| resume.epoch0);
        if let Some(resume) = resume {
            tracing::info!(
                stream = %name,
                last_slice = resume.last_slice,
                events_through = resume.events_through,
                "resuming the stream after its last commit"
            );
        }
        let resume_after = resume.map(|resume| resume.last_slice);
        let stream = self
            .core
            .open_stream(name.clone(), epoch0, context, resume_after);
        self.revisions.push(revision);
        self.committed_through
            .push(resume.map_or(0, |resume| resume.events_through));
        self.clock.stream_opened(stream, &name, epoch0);
        Ok(stream)
    }

    /// Sends the calls the core decided on.
    fn send_calls(&mut self) {
        for request in std::mem::take(&mut self.core.out.calls) {
            let (stream, crew, slice) = (request.stream, request.crew, request.slice);
            let pending = self.pool.call(self.core.crew_name(crew), request.call);
            self.calls.spawn(async move {
                let started = Instant::now();
                let outcome = pending.await;
                Completion {
                    stream,
                    crew,
                    slice,
                    outcome,
                    elapsed: started.elapsed(),
                    lag: None,
                }
            });
        }
    }

    /// Takes a new version of the crews folder: the pool starts the new crews and hands
    /// the changed ones their new version, then the core plans with it; the crews gone
    /// from it stop once their last calls are done. Returns the streams that may move.
    fn reload(&mut self, new: NewCrews) -> Vec<usize> {
        let metrics = self.metrics.clone();
        for spec in new.crews.as_slice() {
            let (result, what) = match self.specs.get(&spec.name) {
                None => {
                    metrics.zero_reloads([spec.name.as_str()]);
                    ("added", "starts")
                }
                Some(old) if old != spec || new.changed.contains(&spec.name) => {
                    ("applied", "takes its new version at its next call")
                }
                Some(_) => continue,
            };
            match self.pool.load(spec) {
                Ok(()) => {
                    tracing::info!(crew = %spec.name, "hot reload: crew '{}' {what}", spec.name);
                    metrics.crew_reloaded(&spec.name, result);
                }
                Err(why) => {
                    tracing::error!(crew = %spec.name, "hot reload: {why}");
                    metrics.crew_reloaded(&spec.name, "failed");
                }
            }
        }
        let gone = (self.specs.keys())
            .filter(|name| !new.crews.as_slice().iter().any(|spec| &spec.name == *name));
        for name in gone {
            tracing::info!(crew = %name, "hot reload: crew '{name}' is gone from the folder; it stops after its last call");
            metrics.crew_reloaded(name, "removed");
        }
        self.specs = by_name(&new.crews);
        self.core.reconfigure(&new.crews)
    }

    /// Carries out the rest of the core's outbox, in the commit order (module docs).
    async fn settle(&mut self) -> Result<Settled, RunError> {
        for record in std::mem::take(&mut self.core.out.records) {
            self.report(record)?;
        }
        for (crew, failure) in std::mem::take(&mut self.core.out.failures) {
            self.pool.count_failure(self.core.crew_name(crew), failure);
        }
        let commit_started =
            (self.durable_each_step && !self.core.out.writes.is_empty()).then(Instant::now);
        // A store that keeps the actions with the context commits first: the actions are
        // durable in it, and the sink publishes them after. Otherwise the sink makes them
        // durable first, and only then is the context they lead to stored.
        if self.store.keeps_outbox() {
            self.store_writes().await?;
        }
        let written = if self.durable_each_step {
            self.actions.flush().await
        } else {
            self.actions.flush_if_full().await
        };
        match written {
            Ok(()) => {}
            Err(SinkError::Closed) => return Ok(Settled::OutputClosed),
            Err(SinkError::Output(error)) => return Err(error.into()),
        }
        if self.durable_each_step {
            self.errors.flush()?;
        }
        if !self.store.keeps_outbox() {
            self.store_writes().await?;
        }
        if self.source.wants_acks() {
            let through = self.core.ackable_through();
            if through > self.acked {
                self.source.ack_through(through).await?;
                self.acked = through;
            }
        }
        if let Some(started) = commit_started {
            self.metrics.committed_in(started.elapsed());
        }
        Ok(Settled::Going)
    }

    /// Hands the store the streams' states the core released: those whose context
    /// changed, or all of them for a store that keeps an outbox.
    async fn store_writes(&mut self) -> Result<(), RunError> {
        let every_slice = self.store.keeps_outbox();
        for write in std::mem::take(&mut self.core.out.writes) {
            if !(write.changed || every_slice) {
                continue;
            }
            let stream = write.stream;
            let commit = StreamCommit {
                context: &write.context,
                epoch0: write.epoch0,
                last_slice: write.last_slice,
                events_through: write.events_through,
            };
            if self.core.given_up(stream) {
                continue;
            }
            let name = self.core.stream_name(stream);
            let revision = self.revisions[stream];
            match self.store.commit(name, revision, commit).await {
                Ok(revision) => self.revisions[stream] = revision,
                Err(taken @ StoreError::Taken { .. }) => {
                    // Another host serves the stream now; the others go on here.
                    tracing::error!("{taken}");
                    let record = self
                        .core
                        .give_up(stream, write.last_slice, &taken.to_string());
                    self.report(record)?;
                }
                Err(err) => return Err(err.into()),
            }
        }
        Ok(())
    }

    /// An error record to the error output, and to the sink if it carries them.
    fn report(&mut self, record: ErrorRecord) -> Result<(), RunError> {
        self.actions.push_error(&record);
        self.errors.report(record)?;
        Ok(())
    }
}

async fn wait_for(clock: &impl SliceClock, at: Option<Instant>) {
    match at {
        Some(at) => clock.wait_until(at).await,
        None => std::future::pending().await,
    }
}

fn by_name(crews: &Crews) -> HashMap<String, CrewSpec> {
    (crews.as_slice().iter())
        .map(|spec| (spec.name.clone(), spec.clone()))
        .collect()
}

/// The next new version of the crews folder; pending forever without a watch, or once
/// the watch has ended.
async fn next_reload(reloads: &mut Option<mpsc::UnboundedReceiver<NewCrews>>) -> NewCrews {
    if let Some(channel) = reloads
        && let Some(new) = channel.recv().await
    {
        return new;
    }
    *reloads = None;
    std::future::pending().await
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
