//! The commands of distributed mode (SPEC §12): `run --nats` as the scheduler (with its
//! standby wait, and `--selector` sending crews to worker hosts), and `worker`.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use regex::Regex;

use super::args::WorkerArgs;
use super::{CommandError, Status, host_id, load_global};
use crate::config::{CrewSpec, Crews, GlobalConfig};
use crate::distributed::commit::commit_ports;
use crate::distributed::connection::{self, Connection};
use crate::distributed::leader;
use crate::distributed::remote::RemoteCrews;
use crate::distributed::source::JetStreamSource;
use crate::distributed::topology;
use crate::distributed::worker;
use crate::host::{Backend, Finished, Host, HostConfig, JetStreamPorts};
use crate::ops::control;
use crate::ops::health::{HostState, Role, lock};
use crate::ops::shutdown::Shutdown;
use crate::pool::CrewPool;
use crate::scheduler::RunError;
use crate::source::MemorySource;
use crate::supervisor::{self, Supervisor};

/// `nats.urls` from `--nats URL,URL`, where it is given.
fn use_urls(global: &mut GlobalConfig, urls: Option<String>) {
    if let Some(urls) = urls {
        global.nats.urls = urls.split(',').map(|url| url.trim().to_owned()).collect();
    }
}

/// The crew selector of `--selector`, else of the settings.
fn selector(flag: Option<String>, global: &GlobalConfig) -> Result<Option<Regex>, CommandError> {
    flag.or_else(|| global.selector.clone())
        .map(|pattern| {
            Regex::new(&pattern)
                .map_err(|err| CommandError::Usage(format!("--selector '{pattern}': {err}")))
        })
        .transpose()
}

/// `run --nats`: waits as a standby until this host holds the scheduler's lock, then
/// schedules `streams` (all when empty) from the durable consumer until the input ends
/// or `shutdown` says so. Crews the selector does not match run on worker hosts.
pub(super) async fn schedule(
    mut config: HostConfig,
    urls: Option<String>,
    streams: &[String],
    selector_flag: Option<String>,
    shutdown: Shutdown,
) -> Result<Finished, CommandError> {
    use_urls(&mut config.global, urls);
    let selector = selector(selector_flag, &config.global)?;
    let nats = &config.global.nats;
    let connection = connection::connect(nats).await?;
    let bucket = topology::ensure(&connection, nats).await?;
    let name = host_id();
    let failover = Duration::from_millis(nats.failover_ms);
    let max_event_bytes = config.global.max_event_bytes;
    let remote_specs: Vec<&CrewSpec> = match &selector {
        Some(selector) => (config.crews.as_slice().iter())
            .filter(|spec| !selector.is_match(&spec.name))
            .collect(),
        None => Vec::new(),
    };
    let remote = match remote_specs.is_empty() {
        true => None,
        false => Some(RemoteCrews::start(&connection, bucket.clone(), &remote_specs).await?),
    };
    let digests = remote.as_ref().map(RemoteCrews::digests);
    let slice_ms = config.global.slice_ms;
    let (store, sink) = commit_ports(&connection, bucket.clone(), slice_ms, name.clone());
    let outboxes = store.clone();
    let caught_up = Arc::new(AtomicBool::new(false));
    let backend = Backend::JetStream(Box::new(JetStreamPorts {
        store,
        sink,
        remote,
        caught_up: caught_up.clone(),
        link: connection.link.clone(),
        client: connection.client.clone(),
    }));
    // Crews start and `health` answers while the host waits as a standby, so a takeover
    // does not wait for them.
    let host = Host::build(config, backend).await?;
    let link = &connection.link;
    let lock = tokio::select! {
        lock = leader::acquire(&bucket, &name, failover, link) => lock?,
        () = shutdown.clone().stop_requested() => {
            tracing::info!("stopped while waiting as a standby");
            // No events: the run only shuts the crews down in protocol order.
            let (_, no_events) = MemorySource::new(1);
            return Ok(host.run(no_events, shutdown).await?);
        }
    };
    let held = leader::renew(bucket, name, lock, failover);
    if let Some(digests) = digests {
        digests.publish().await?;
    }
    let source = JetStreamSource::open(&connection, streams, max_event_bytes, caught_up).await?;
    outboxes
        .finish_outboxes(streams)
        .await
        .map_err(RunError::from)?;
    let finished = host.run(source, shutdown).await;
    held.release().await;
    Ok(finished?)
}

/// `worker`: serves the calls of the crews the selector matches until SIGTERM, then
/// finishes the calls in flight and stops.
pub async fn worker(args: WorkerArgs) -> Result<Status, CommandError> {
    let mut global = load_global(args.config.as_deref())?;
    use_urls(&mut global, args.nats);
    let Some(selector) = selector(args.selector, &global)? else {
        return Err(CommandError::Usage(
            "worker needs --selector REGEX (or `selector:` in the settings, or \
             LIVE_CREW_SELECTOR): the crews this host runs"
                .into(),
        ));
    };
    let crews = Crews::load(&args.crews, &global)?;
    let mine: Vec<CrewSpec> = (crews.as_slice().iter())
        .filter(|spec| selector.is_match(&spec.name))
        .cloned()
        .collect();
    if mine.is_empty() {
        return Err(CommandError::Usage(format!(
            "no crew in {} matches --selector '{selector}'",
            args.crews.display()
        )));
    }
    let connection = connection::connect(&global.nats).await?;
    let bucket = topology::ensure(&connection, &global.nats).await?;
    let served = worker::serve_crews(&connection, &bucket, &mine, &global.nats).await?;
    let started = tokio::time::Instant::now();
    let supervisor = Supervisor::start(&mine, &global).map_err(crate::host::HostError::Crews)?;
    let status = supervisor.status();
    *lock(&connection.link.role) = Role::Worker;
    let _control = serve_control(&global, &connection, status.clone(), started).await?;
    let shutdown = Shutdown::install().unwrap_or_else(|err| {
        tracing::warn!("cannot catch SIGTERM/SIGINT ({err}); a signal stops the worker at once");
        Shutdown::never()
    });
    let drain = Duration::from_millis(global.drain_timeout_ms);
    let working = worker::run(
        &connection,
        served,
        supervisor,
        args.slots,
        &global.nats,
        host_id(),
        shutdown.clone().stop_requested(),
    );
    tokio::select! {
        supervisor = working => {
            supervisor.shutdown().await;
            Ok(Status::Clean)
        }
        _ = shutdown.hard_stop(drain) => {
            tracing::error!("stopping now: the calls in flight are left to other workers");
            supervisor::reap_runners(&status).await;
            Ok(Status::Interrupted)
        }
    }
}

/// The worker's control socket, for `health` and `status`.
async fn serve_control(
    global: &GlobalConfig,
    connection: &Connection,
    crews: crate::pool::StatusHandle,
    started: tokio::time::Instant,
) -> Result<Option<control::ControlSocket>, CommandError> {
    let state = HostState {
        crews,
        mode: "worker",
        started,
        broker: Some(connection.link.clone()),
        calls: None,
    };
    let socket: Option<&Path> = global.control_socket.as_deref();
    Ok(control::serve_configured(socket, state)
        .await
        .map_err(crate::host::HostError::from)?)
}
