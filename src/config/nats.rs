//! The `nats:` section of `live-config.yaml` (SPEC §12): where the NATS servers are, how
//! to authenticate, and how the host sets up JetStream. `LIVE_CREW_NATS_*` variables
//! override the file, and `run --nats` overrides both.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Connection and topology settings for distributed mode.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsSettings {
    /// Server URLs (`nats://host:port`); reconnects try them all.
    pub urls: Vec<String>,
    pub user: Option<String>,
    pub password: Option<Secret>,
    pub token: Option<Secret>,
    /// A `.creds` file (JWT and NKey seed).
    pub credentials: Option<PathBuf>,
    /// An NKey seed (`SU...`).
    pub nkey_seed: Option<Secret>,
    pub tls: TlsSettings,
    /// Create the streams and the KV bucket where missing; `false` only checks them and
    /// reports what is missing or differs.
    pub create: bool,
    /// How long a standby waits after the active scheduler's last sign of life.
    pub failover_ms: u64,
    /// `LIVE_ACTIONS`' duplicate window in seconds: a restart within it republishes its
    /// outbox blindly, past it the host first reads the last published id.
    pub duplicate_window_s: u64,
    /// Worker hosts: a call a worker took goes to another worker this long after its
    /// last sign of progress (the work consumers' `ack_wait`).
    pub work_ack_wait_ms: u64,
    /// Worker hosts: how often a call is delivered before the server gives up on it.
    pub work_max_deliver: i64,
}

impl Default for NatsSettings {
    fn default() -> Self {
        NatsSettings {
            urls: Vec::new(),
            user: None,
            password: None,
            token: None,
            credentials: None,
            nkey_seed: None,
            tls: TlsSettings::default(),
            create: true,
            failover_ms: 5000,
            duplicate_window_s: 600,
            work_ack_wait_ms: 5000,
            work_max_deliver: 5,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSettings {
    /// CA certificate(s) to trust, PEM.
    pub ca: Option<PathBuf>,
    /// Client certificate and key for mutual TLS, PEM.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Refuse a server that does not speak TLS.
    pub required: bool,
}

/// `LIVE_CREW_NATS_<NAME>` variables and the `nats:` fields they set.
pub(super) const ENV: &[(&str, &str)] = &[
    ("URL", "urls"),
    ("USER", "user"),
    ("PASSWORD", "password"),
    ("TOKEN", "token"),
    ("CREDS", "credentials"),
    ("NKEY_SEED", "nkey_seed"),
    ("TLS_CA", "tls.ca"),
    ("TLS_CERT", "tls.cert"),
    ("TLS_KEY", "tls.key"),
    ("REQUIRE_TLS", "tls.required"),
    ("CREATE", "create"),
    ("FAILOVER_MS", "failover_ms"),
    ("DUPLICATE_WINDOW_S", "duplicate_window_s"),
    ("WORK_ACK_WAIT_MS", "work_ack_wait_ms"),
    ("WORK_MAX_DELIVER", "work_max_deliver"),
];

/// `nats.<field>` as a variable's text would set it: URL lists are comma-separated,
/// booleans and numbers are parsed, the rest stays text.
pub(super) fn env_value(field: &str, text: &str) -> serde_json::Value {
    match field {
        "urls" => text
            .split(',')
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .map(|url| serde_json::Value::String(url.to_owned()))
            .collect(),
        "tls.required" | "create" => match text {
            "true" | "1" | "yes" => true.into(),
            "false" | "0" | "no" => false.into(),
            other => other.into(),
        },
        "failover_ms" | "duplicate_window_s" | "work_ack_wait_ms" | "work_max_deliver" => text
            .parse::<i64>()
            .map(serde_json::Value::from)
            .unwrap_or_else(|_| text.into()),
        _ => text.into(),
    }
}

/// A password, token or seed: never printed. `live-crew config` shows it as `"***"`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(text: impl Into<String>) -> Secret {
        Secret(text.into())
    }

    /// The secret itself, for the one place that needs it: the connection.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("***")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked_wherever_they_are_shown() {
        let settings = NatsSettings {
            password: Some(Secret::new("hunter2")),
            token: Some(Secret::new("s3cret")),
            ..NatsSettings::default()
        };
        let yaml = serde_saphyr::to_string(&settings).unwrap();
        assert!(
            !yaml.contains("hunter2") && !yaml.contains("s3cret"),
            "{yaml}"
        );
        assert!(yaml.contains("***"), "{yaml}");
        assert!(!format!("{settings:?}").contains("hunter2"));
    }

    #[test]
    fn variables_parse_lists_and_switches() {
        assert_eq!(
            env_value("urls", "nats://a:1, nats://b:2"),
            serde_json::json!(["nats://a:1", "nats://b:2"])
        );
        assert_eq!(env_value("create", "false"), serde_json::json!(false));
        assert_eq!(env_value("user", "alice"), serde_json::json!("alice"));
    }
}
