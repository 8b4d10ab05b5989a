//! The global configuration: `live-config.yaml`, then `LIVE_CREW_*` environment
//! variables, then command-line flags, each overriding the one before.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use live_crew_sandbox::Layer;

use super::nats::{self, NatsSettings};
use super::{ConfigErrors, ConfigIssue, parse_layers, yaml_issue};
use crate::context::KvBackend;

/// What happens to an event whose slice has already closed (live mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LatePolicy {
    Next,
    Drop,
}

/// Log format on stderr; without one, pretty on a terminal and JSON lines otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Json,
    Pretty,
}

/// What happens to a stream's events past `max_events_per_slice` in one slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OverflowPolicy {
    /// Dropped.
    Drop,
    /// Replaces the newest kept event of the same kind (latest value wins); dropped if
    /// the slice holds no event of its kind.
    Collapse,
}

/// Sandbox limits that apply to every crew unless its runtime file says otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxDefaults {
    pub memory_mb: u64,
    pub cpu_s: u64,
    pub open_files: u64,
    pub processes: u64,
    pub network: bool,
    pub pid_namespace: bool,
    /// Layers every crew requires, unless its own `sandbox.require` says otherwise.
    pub require: Vec<String>,
    /// Layers the host runs without, as if the kernel lacked them.
    pub disable: Vec<String>,
}

impl Default for SandboxDefaults {
    fn default() -> Self {
        SandboxDefaults {
            memory_mb: 1024,
            cpu_s: 3600,
            open_files: 256,
            processes: 64,
            network: false,
            pid_namespace: true,
            require: Vec::new(),
            disable: Vec::new(),
        }
    }
}

impl SandboxDefaults {
    /// `require` as layers; `GlobalConfig::load` has checked the names.
    pub fn require_layers(&self) -> Vec<Layer> {
        parse_layers(&self.require).unwrap_or_default()
    }

    /// `disable` as layers; `GlobalConfig::load` has checked the names.
    pub fn disabled_layers(&self) -> Vec<Layer> {
        parse_layers(&self.disable).unwrap_or_default()
    }
}

/// The validated global configuration. Every field has a default, so an empty or missing
/// file is a complete configuration.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GlobalConfig {
    pub slice_ms: u64,
    pub heartbeat_ms: u64,
    pub grace_ms: u64,
    pub late_policy: LatePolicy,
    pub reorder_slices: u64,
    pub max_wait_slices: u64,
    pub context_max_bytes: usize,
    /// Largest accepted input event (one line or array element), in bytes.
    pub max_event_bytes: usize,
    /// Most events one stream puts in one slice; the rest go by `slice_overflow`.
    pub max_events_per_slice: usize,
    pub slice_overflow: OverflowPolicy,
    pub kv_backend: KvBackend,
    /// How long a runner has to answer `hello` with `ready`.
    pub startup_timeout_ms: u64,
    /// Grace between SIGTERM and SIGKILL, and after `shutdown` before SIGTERM.
    pub kill_grace_ms: u64,
    /// Maximum length of one protocol line from a runner.
    pub max_line_bytes: usize,
    /// First restart delay after a failure; doubles per consecutive failure.
    pub restart_backoff_ms: u64,
    /// Upper bound of the restart delay.
    pub restart_backoff_max_ms: u64,
    /// Maximum stderr lines per second relayed into the log for each crew.
    pub stderr_lines_per_s: u32,
    /// How long the host spins for the answer of a runner whose previous call took at
    /// most this long, instead of sleeping; 0 never spins.
    pub busy_poll_us: u64,
    /// After SIGTERM/SIGINT: how long open slices may take to finish before the host
    /// stops at once.
    pub drain_timeout_ms: u64,
    pub sandbox: SandboxDefaults,
    pub metrics_addr: Option<String>,
    pub control_socket: Option<PathBuf>,
    /// Log filter (`info`, `warn,live_crew::heartbeat=off`, ...); `-v`/`-q` override it.
    pub log: String,
    pub log_format: Option<LogFormat>,
    /// Every crew must declare `context: {read, write}`; none may default to all keys.
    pub context_acl_required: bool,
    /// A call slower than this (or failed) is logged at info; the others at debug.
    pub slow_call_ms: u64,
    /// Watch the crews folder and give changed crews their new version (`run --watch`).
    pub hot_reload: bool,
    /// Start `python`, `crewai` and `prompt` crews from a fork server per interpreter
    /// (SPEC §13); `false` starts every crew cold.
    pub zygote: bool,
    /// Distributed mode (SPEC §12): on `run`, the crews whose names match this regex run
    /// here and the others on worker hosts; on `worker`, the crews this host runs.
    pub selector: Option<String>,
    /// Distributed mode (SPEC §12).
    pub nats: NatsSettings,
    /// The LLM gateway's providers and prices (SPEC §14).
    pub llm: crate::llm::LlmSettings,
}

impl Default for GlobalConfig {
    fn default() -> Self {
        GlobalConfig {
            slice_ms: 500,
            heartbeat_ms: 1000,
            grace_ms: 50,
            late_policy: LatePolicy::Next,
            reorder_slices: 0,
            max_wait_slices: 8,
            context_max_bytes: 4096,
            max_event_bytes: 256 * 1024,
            max_events_per_slice: 10_000,
            slice_overflow: OverflowPolicy::Drop,
            kv_backend: KvBackend::Memory,
            startup_timeout_ms: 10_000,
            kill_grace_ms: 2000,
            max_line_bytes: crate::protocol::DEFAULT_MAX_LINE_BYTES,
            restart_backoff_ms: 100,
            restart_backoff_max_ms: 10_000,
            stderr_lines_per_s: 200,
            busy_poll_us: 200,
            drain_timeout_ms: 20_000,
            sandbox: SandboxDefaults::default(),
            metrics_addr: None,
            control_socket: None,
            log: "info".into(),
            log_format: None,
            context_acl_required: false,
            slow_call_ms: 1000,
            hot_reload: false,
            zygote: true,
            selector: None,
            nats: NatsSettings::default(),
            llm: crate::llm::LlmSettings::default(),
        }
    }
}

/// Scalar knobs that `LIVE_CREW_<NAME>` may override.
const ENV_KNOBS: &[&str] = &[
    "slice_ms",
    "heartbeat_ms",
    "grace_ms",
    "late_policy",
    "reorder_slices",
    "max_wait_slices",
    "context_max_bytes",
    "max_event_bytes",
    "max_events_per_slice",
    "slice_overflow",
    "kv_backend",
    "startup_timeout_ms",
    "kill_grace_ms",
    "max_line_bytes",
    "restart_backoff_ms",
    "restart_backoff_max_ms",
    "stderr_lines_per_s",
    "busy_poll_us",
    "drain_timeout_ms",
    "metrics_addr",
    "control_socket",
    "log",
    "log_format",
    "selector",
    "slow_call_ms",
    "hot_reload",
    "zygote",
];

impl GlobalConfig {
    /// Loads the file (if any), then applies `LIVE_CREW_*` overrides from `env`.
    pub fn load(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigErrors> {
        let (origin, text) = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|err| {
                    ConfigErrors(vec![ConfigIssue::new(
                        path,
                        "",
                        format!("cannot read: {err}"),
                    )])
                })?;
                (path.to_path_buf(), text)
            }
            None => (PathBuf::from("<defaults>"), String::new()),
        };
        let mut document: serde_json::Map<String, serde_json::Value> = if text.trim().is_empty() {
            serde_json::Map::new()
        } else {
            serde_saphyr::from_str(&text)
                .map_err(|err| ConfigErrors(vec![yaml_issue(&origin, &err)]))?
        };
        let mut issues = Vec::new();
        // What each knob is by default says how its variable is read.
        let defaults = serde_json::to_value(GlobalConfig::default()).expect("settings serialize");
        for knob in ENV_KNOBS {
            let var = format!("LIVE_CREW_{}", knob.to_ascii_uppercase());
            if let Some(value) = env(&var) {
                let parsed = match (&defaults[*knob], value.parse::<u64>()) {
                    (serde_json::Value::Bool(_), _) => match value.as_str() {
                        "true" | "false" => serde_json::Value::Bool(value == "true"),
                        _ => {
                            issues.push(ConfigIssue::new(
                                &origin,
                                *knob,
                                format!("{var}={value:?} must be true or false"),
                            ));
                            continue;
                        }
                    },
                    (_, Ok(number)) => serde_json::Value::from(number),
                    (_, Err(_)) => serde_json::Value::String(value),
                };
                document.insert((*knob).to_owned(), parsed);
            }
        }
        for (name, field) in nats::ENV {
            if let Some(text) = env(&format!("LIVE_CREW_NATS_{name}")) {
                set_nested(
                    &mut document,
                    &format!("nats.{field}"),
                    nats::env_value(field, &text),
                );
            }
        }
        // Checked here, not by serde, so the message names the field.
        if let Some(backend) = document.get("kv_backend").and_then(|v| v.as_str())
            && !["memory", "jetstream"].contains(&backend)
        {
            issues.push(ConfigIssue::new(
                &origin,
                "kv_backend",
                format!("'{backend}' is not a context store; use 'memory' or 'jetstream'"),
            ));
            document.remove("kv_backend");
        }
        let config: GlobalConfig = serde_json::from_value(serde_json::Value::Object(document))
            .map_err(|err| ConfigErrors(vec![ConfigIssue::new(&origin, "", err.to_string())]))?;
        for (field, value) in [
            ("slice_ms", config.slice_ms),
            ("heartbeat_ms", config.heartbeat_ms),
            ("startup_timeout_ms", config.startup_timeout_ms),
            ("max_wait_slices", config.max_wait_slices),
            ("max_event_bytes", config.max_event_bytes as u64),
            ("max_events_per_slice", config.max_events_per_slice as u64),
        ] {
            if value == 0 {
                issues.push(ConfigIssue::new(&origin, field, "must be at least 1"));
            }
        }
        for (field, names) in [
            ("require", &config.sandbox.require),
            ("disable", &config.sandbox.disable),
        ] {
            if let Err((i, why)) = parse_layers(names) {
                issues.push(ConfigIssue::new(
                    &origin,
                    format!("sandbox.{field}[{i}]"),
                    why,
                ));
            }
        }
        if issues.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors(issues))
        }
    }
}

/// Sets `dotted.path` in a YAML document, making the objects on the way.
fn set_nested(
    document: &mut serde_json::Map<String, serde_json::Value>,
    path: &str,
    value: serde_json::Value,
) {
    let (head, rest) = match path.split_once('.') {
        Some((head, rest)) => (head, Some(rest)),
        None => (path, None),
    };
    match rest {
        None => {
            document.insert(head.to_owned(), value);
        }
        Some(rest) => {
            let entry = document
                .entry(head.to_owned())
                .or_insert_with(|| serde_json::Value::Object(Default::default()));
            if !entry.is_object() {
                *entry = serde_json::Value::Object(Default::default());
            }
            if let serde_json::Value::Object(inner) = entry {
                set_nested(inner, rest, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_need_no_file() {
        let config = GlobalConfig::load(None, |_| None).unwrap();
        assert_eq!(config, GlobalConfig::default());
        assert_eq!(config.context_max_bytes, 4096);
    }

    #[test]
    fn the_config_template_shows_the_defaults() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/live-config.yaml");
        let template = GlobalConfig::load(Some(&file), |_| None).unwrap();
        assert_eq!(template, GlobalConfig::default());
    }

    #[test]
    fn the_production_template_loads_with_strict_settings() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/production.yaml");
        let config = GlobalConfig::load(Some(&file), |_| None).unwrap();
        assert_eq!(config.log_format, Some(LogFormat::Json));
        assert_eq!(config.metrics_addr.as_deref(), Some("127.0.0.1:9464"));
        assert!(config.control_socket.is_some());
        assert!(config.context_acl_required);
        assert_eq!(config.late_policy, LatePolicy::Drop);
        let defaults = SandboxDefaults::default();
        assert!(config.sandbox.memory_mb < defaults.memory_mb);
        assert!(config.sandbox.processes < defaults.processes);
        assert!(!config.sandbox.network);
    }

    #[test]
    fn environment_overrides_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("live-config.yaml");
        std::fs::write(
            &file,
            "slice_ms: 250\nheartbeat_ms: 300\nsandbox: {processes: 8}\n",
        )
        .unwrap();
        let env = |name: &str| (name == "LIVE_CREW_SLICE_MS").then(|| "100".to_owned());
        let config = GlobalConfig::load(Some(&file), env).unwrap();
        assert_eq!(config.slice_ms, 100);
        assert_eq!(config.heartbeat_ms, 300);
        assert_eq!(config.sandbox.processes, 8);
        assert_eq!(config.sandbox.memory_mb, 1024);
    }

    #[test]
    fn a_switch_that_is_not_a_boolean_names_its_variable() {
        let env = |name: &str| (name == "LIVE_CREW_ZYGOTE").then(|| "maybe".to_owned());
        let err = GlobalConfig::load(None, env).unwrap_err();
        assert_eq!(err.0[0].field, "zygote");
        assert!(
            err.to_string().contains("LIVE_CREW_ZYGOTE=\"maybe\""),
            "{err}"
        );
    }

    #[test]
    fn switches_come_from_the_environment_as_booleans() {
        let env = |name: &str| match name {
            "LIVE_CREW_ZYGOTE" => Some("false".to_owned()),
            "LIVE_CREW_HOT_RELOAD" => Some("true".to_owned()),
            _ => None,
        };
        let config = GlobalConfig::load(None, env).unwrap();
        assert!(!config.zygote);
        assert!(config.hot_reload);
    }

    #[test]
    fn bad_values_name_their_field() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("live-config.yaml");
        std::fs::write(&file, "slice_ms: 0\n").unwrap();
        let err = GlobalConfig::load(Some(&file), |_| None).unwrap_err();
        assert_eq!(err.0[0].field, "slice_ms");
        std::fs::write(&file, "slice_mss: 10\n").unwrap();
        let err = GlobalConfig::load(Some(&file), |_| None).unwrap_err();
        assert!(err.to_string().contains("slice_mss"), "{err}");
    }
}
