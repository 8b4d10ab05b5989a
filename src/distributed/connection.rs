//! The connection to NATS (SPEC §12): URLs, authentication and TLS from the `nats:`
//! settings, the server's version checked, reconnects forever with their state kept for
//! `health` and metrics.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::{Client, ConnectErrorKind, ConnectOptions, Event};

use crate::config::NatsSettings;
use crate::ops::health::BrokerLink;

/// Servers older than this lack what distributed mode relies on; refused.
const OLDEST_SERVER: (u32, u32, u32) = (2, 11, 1);
/// Servers older than this have known JetStream fixes missing; a warning.
const RECOMMENDED_SERVER: (u32, u32, u32) = (2, 12, 7);

/// Why the host cannot use NATS; a startup error (exit status 2).
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("no NATS server given; pass --nats URL or set nats.urls (LIVE_CREW_NATS_URL)")]
    NoServer,
    #[error(
        "NATS authorization failed at {urls}: the server refused these credentials; \
         check nats.user and nats.password, nats.token, nats.credentials or nats.nkey_seed"
    )]
    Authorization { urls: String },
    #[error("cannot connect to NATS at {urls}: {reason}")]
    Connect { urls: String, reason: String },
    #[error("cannot read the NATS credentials file {path}: {source}")]
    Credentials {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(
        "NATS server {version} is too old: distributed mode needs 2.11.1 or newer \
         (2.12.7 or newer recommended)"
    )]
    ServerTooOld { version: String },
    #[error(
        "NATS server {version} does not answer JetStream requests: {reason}; start it with -js"
    )]
    NoJetStream { version: String, reason: String },
}

/// Keeps the link's state as the client reports connection events.
fn saw(link: &BrokerLink, event: &Event) {
    match event {
        Event::Connected => {
            if link.connected.swap(true, Ordering::Relaxed) {
                return;
            }
            link.reconnects.fetch_add(1, Ordering::Relaxed);
            tracing::info!("reconnected to NATS");
        }
        Event::Disconnected => {
            link.connected.store(false, Ordering::Relaxed);
            tracing::warn!("disconnected from NATS; input pauses until it is back");
        }
        other => tracing::debug!(event = %other, "NATS connection event"),
    }
}

/// A connected client and its JetStream context.
#[derive(Clone)]
pub struct Connection {
    pub client: Client,
    pub jetstream: async_nats::jetstream::Context,
    /// Connected or not, reconnects, and (kept by the store) committed slices.
    pub link: Arc<BrokerLink>,
    /// The server's version, e.g. `2.12.7`.
    pub server_version: String,
}

/// Connects with `settings`, checks the server's version and that JetStream answers.
pub async fn connect(settings: &NatsSettings) -> Result<Connection, NatsError> {
    if settings.urls.is_empty() {
        return Err(NatsError::NoServer);
    }
    let urls = settings.urls.join(",");
    let link = Arc::new(BrokerLink::default());
    let events = link.clone();
    let mut options = ConnectOptions::new()
        .name("live-crew")
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(5))
        .event_callback(move |event| {
            saw(&events, &event);
            async {}
        });
    if let (Some(user), Some(password)) = (&settings.user, &settings.password) {
        options = options.user_and_password(user.clone(), password.expose().to_owned());
    }
    if let Some(token) = &settings.token {
        options = options.token(token.expose().to_owned());
    }
    if let Some(seed) = &settings.nkey_seed {
        options = options.nkey(seed.expose().to_owned());
    }
    if let Some(path) = &settings.credentials {
        options =
            options
                .credentials_file(path)
                .await
                .map_err(|source| NatsError::Credentials {
                    path: path.clone(),
                    source,
                })?;
    }
    let tls = &settings.tls;
    if let Some(ca) = &tls.ca {
        options = options.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    if tls.required {
        options = options.require_tls(true);
    }
    let addresses: Vec<async_nats::ServerAddr> = settings
        .urls
        .iter()
        .map(|url| {
            url.parse().map_err(|err| NatsError::Connect {
                urls: urls.clone(),
                reason: format!("'{url}' is not a NATS URL ({err})"),
            })
        })
        .collect::<Result<_, _>>()?;
    let client = options
        .connect(addresses)
        .await
        .map_err(|err| match err.kind() {
            ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication => {
                NatsError::Authorization { urls: urls.clone() }
            }
            _ => NatsError::Connect {
                urls: urls.clone(),
                reason: err.to_string(),
            },
        })?;
    link.connected.store(true, Ordering::Relaxed);
    let server_version = client.server_info().version;
    *crate::ops::health::lock(&link.server_version) = server_version.clone();
    match parse_version(&server_version) {
        Some(version) if version < OLDEST_SERVER => {
            return Err(NatsError::ServerTooOld {
                version: server_version,
            });
        }
        Some(version) if version < RECOMMENDED_SERVER => tracing::warn!(
            version = %server_version,
            "NATS server older than 2.12.7: upgrade it for the JetStream fixes distributed mode relies on"
        ),
        Some(_) => {}
        None => tracing::warn!(version = %server_version, "cannot read the NATS server's version"),
    }
    let jetstream = async_nats::jetstream::new(client.clone());
    jetstream
        .query_account()
        .await
        .map_err(|err| NatsError::NoJetStream {
            version: server_version.clone(),
            reason: err.to_string(),
        })?;
    tracing::info!(urls = %urls, version = %server_version, "connected to NATS");
    Ok(Connection {
        client,
        jetstream,
        link,
        server_version,
    })
}

/// `2.12.7` (or `2.12.7-beta`) as numbers.
fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    let core = text.split(['-', '+']).next()?;
    let mut parts = core.split('.').map(|part| part.parse::<u32>().ok());
    Some((
        parts.next()??,
        parts.next()??,
        parts.next().flatten().unwrap_or(0),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_by_their_numbers() {
        assert_eq!(parse_version("2.12.7"), Some((2, 12, 7)));
        assert_eq!(parse_version("2.11.0-beta.2"), Some((2, 11, 0)));
        assert!(parse_version("2.10.24").unwrap() < OLDEST_SERVER);
        assert!(parse_version("2.12.7").unwrap() >= RECOMMENDED_SERVER);
        assert!(parse_version("2.15.1").unwrap() > RECOMMENDED_SERVER);
        assert_eq!(parse_version("dev"), None);
    }
}
