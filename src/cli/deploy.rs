//! `live-crew deploy --config FILE` (SPEC §18): checks a production configuration against
//! the machine it runs on, before a host is started there, and prints what is present and
//! what is missing. Exit 1 if anything the configuration needs is missing.

use std::io::{self, Write};
use std::path::Path;
use std::time::Duration;

use live_crew_sandbox::{Layer, Sandbox, fallback_hint};

use super::{CommandError, Status, load_global};
use crate::config::GlobalConfig;
use crate::distributed::connection;

/// How long the NATS check waits for a server.
const NATS_TIMEOUT: Duration = Duration::from_secs(5);

/// One line of the report.
struct Check {
    name: String,
    state: State,
    detail: String,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Present,
    /// Missing, and the configuration can do without it.
    Optional,
    /// Missing, and the configuration needs it.
    Missing,
}

impl State {
    fn label(self) -> &'static str {
        match self {
            State::Present => "ok",
            State::Optional => "absent (optional)",
            State::Missing => "MISSING",
        }
    }
}

fn check(name: impl Into<String>, state: State, detail: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        state,
        detail: detail.into(),
    }
}

pub async fn deploy(config: &Path) -> Result<Status, CommandError> {
    let global = load_global(Some(config))?;
    let mut checks = sandbox_checks(&global);
    if !global.nats.urls.is_empty() {
        checks.push(nats_check(&global).await);
    }
    if let Some(addr) = &global.metrics_addr {
        checks.push(metrics_check(addr).await);
    }
    checks.push(control_socket_check(&global));
    let report = table(config, &checks);
    // A closed stdout is not an error.
    let _ = io::stdout().write_all(report.as_bytes());
    Ok(if checks.iter().any(|c| c.state == State::Missing) {
        Status::WithErrors
    } else {
        Status::Clean
    })
}

/// Each optional sandbox layer, and the cgroup delegation the cgroup layers need; what
/// `sandbox.require` names is needed.
fn sandbox_checks(global: &GlobalConfig) -> Vec<Check> {
    let disabled = global.sandbox.disabled_layers();
    let sandbox = Sandbox::probe_without(&disabled);
    let required = global.sandbox.require_layers();
    let missing = |layer: Layer| match required.contains(&layer) {
        true => State::Missing,
        false => State::Optional,
    };
    let mut checks: Vec<Check> = Layer::ALL
        .into_iter()
        .map(|layer| match sandbox.has(layer) {
            true => check(format!("sandbox: {layer}"), State::Present, "available"),
            false => check(
                format!("sandbox: {layer}"),
                missing(layer),
                match disabled.contains(&layer) {
                    true => "switched off by sandbox.disable",
                    false => fallback_hint(layer),
                },
            ),
        })
        .collect();
    let cgroup_layers = [Layer::PidsCgroup, Layer::MemoryCgroup];
    let delegated = cgroup_layers.iter().all(|&layer| sandbox.has(layer));
    checks.push(match delegated {
        true => check(
            "cgroup delegation",
            State::Present,
            "pids and memory controllers writable",
        ),
        false => check(
            "cgroup delegation",
            cgroup_layers
                .into_iter()
                .map(missing)
                .max_by_key(|state| *state == State::Missing)
                .unwrap_or(State::Optional),
            "give the host a delegated cgroup subtree (systemd: Delegate=yes; \
             deploy/live-crew.service)",
        ),
    });
    checks
}

/// NATS reachable with these credentials, and new enough.
async fn nats_check(global: &GlobalConfig) -> Check {
    let urls = global.nats.urls.join(",");
    match tokio::time::timeout(NATS_TIMEOUT, connection::connect(&global.nats)).await {
        Ok(Ok(connected)) => check(
            "nats",
            State::Present,
            format!("{urls}: server {}", connected.server_version),
        ),
        Ok(Err(err)) => check("nats", State::Missing, err.to_string()),
        Err(_) => check(
            "nats",
            State::Missing,
            format!("{urls}: no answer within {} s", NATS_TIMEOUT.as_secs()),
        ),
    }
}

/// The metrics address can be bound (nothing else listens there).
async fn metrics_check(addr: &str) -> Check {
    match tokio::net::TcpListener::bind(addr).await {
        Ok(_) => check("metrics_addr", State::Present, format!("{addr} is free")),
        Err(err) => check(
            "metrics_addr",
            State::Missing,
            format!("cannot listen on {addr}: {err}"),
        ),
    }
}

/// The control socket's folder exists and this user may create the socket in it.
fn control_socket_check(global: &GlobalConfig) -> Check {
    let socket = global
        .control_socket
        .clone()
        .unwrap_or_else(|| crate::ops::health::default_socket(|name| std::env::var(name).ok()));
    let folder = socket.parent().unwrap_or(Path::new("/"));
    if !folder.is_dir() {
        return check(
            "control_socket",
            State::Missing,
            format!(
                "folder {} does not exist; create it, writable by the host's user \
                 (systemd: RuntimeDirectory=live-crew)",
                folder.display()
            ),
        );
    }
    let probe = tempfile::Builder::new()
        .prefix(".live-crew-deploy-")
        .tempfile_in(folder);
    match probe {
        Ok(_) => check(
            "control_socket",
            State::Present,
            format!("{} can be created", socket.display()),
        ),
        Err(err) => check(
            "control_socket",
            State::Missing,
            format!(
                "cannot create files in {}: {}; make it writable by the host's user",
                folder.display(),
                err.kind()
            ),
        ),
    }
}

fn table(config: &Path, checks: &[Check]) -> String {
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    let state_width = checks
        .iter()
        .map(|c| c.state.label().len())
        .max()
        .unwrap_or(0);
    let mut out = format!("{} on this machine:\n", config.display());
    for c in checks {
        out += &format!(
            "{:width$}  {:state_width$}  {}\n",
            c.name,
            c.state.label(),
            c.detail
        );
    }
    let missing = checks.iter().filter(|c| c.state == State::Missing).count();
    out += &match missing {
        0 => "everything this configuration needs is here\n".to_owned(),
        n => format!("{n} thing(s) this configuration needs are missing\n"),
    };
    out
}
