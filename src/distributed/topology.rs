//! The JetStream streams and the KV bucket of SPEC §12: created where missing, or with
//! `nats.create: false` only checked, every difference reported at once.

use std::time::Duration;

use async_nats::jetstream::kv;
use async_nats::jetstream::stream::{self, RetentionPolicy, StorageType};

use super::connection::Connection;
use crate::config::NatsSettings;

/// The KV bucket that holds each stream's committed state.
pub const CONTEXT_BUCKET: &str = "live_ctx";
/// The stream of input events.
pub const EVENTS_STREAM: &str = "LIVE_EVENTS";
/// The stream of published actions.
pub const ACTIONS_STREAM: &str = "LIVE_ACTIONS";

/// The subject of stream `stream`'s input events.
pub fn events_subject(stream: &str) -> String {
    format!("live.{stream}.events")
}

/// The subject of stream `stream`'s actions.
pub fn actions_subject(stream: &str) -> String {
    format!("live.{stream}.actions")
}

/// The subject of stream `stream`'s error records.
pub fn errors_subject(stream: &str) -> String {
    format!("live.{stream}.errors")
}

/// The subject of stream `stream`'s host heartbeats (core NATS, not a stream).
pub fn heartbeats_subject(stream: &str) -> String {
    format!("live.{stream}.heartbeats")
}

/// The stream id in an events subject `live.<stream>.events`.
pub fn stream_of_subject(subject: &str) -> Option<&str> {
    subject.strip_prefix("live.")?.strip_suffix(".events")
}

/// The streams distributed mode uses, as SPEC §12's table has them.
fn streams(settings: &NatsSettings) -> Vec<stream::Config> {
    let stream = |name: &str, subject: &str, retention| stream::Config {
        name: name.to_owned(),
        subjects: vec![subject.to_owned()],
        retention,
        storage: StorageType::File,
        ..Default::default()
    };
    let mut actions = stream(ACTIONS_STREAM, "live.*.actions", RetentionPolicy::Limits);
    actions.duplicate_window = Duration::from_secs(settings.duplicate_window_s.max(1));
    vec![
        stream(EVENTS_STREAM, "live.*.events", RetentionPolicy::Limits),
        actions,
        stream("LIVE_ERRORS", "live.*.errors", RetentionPolicy::Limits),
        stream(
            "LIVE_WORK",
            "live.*.slice.*.*.ready",
            RetentionPolicy::WorkQueue,
        ),
        stream(
            "LIVE_DONE",
            "live.*.slice.*.*.done",
            RetentionPolicy::Limits,
        ),
    ]
}

/// The topology could not be set up, or (with `create: false`) is not what it must be.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error(
        "the NATS topology is not what distributed mode needs (nats.create is false, so \
         nothing was changed):\n  {}",
        .0.join("\n  ")
    )]
    Differs(Vec<String>),
    #[error("cannot set up {what} on NATS: {reason}")]
    Setup { what: String, reason: String },
}

/// Creates (or checks) the streams and the KV bucket; returns the bucket.
pub async fn ensure(
    connection: &Connection,
    settings: &NatsSettings,
) -> Result<kv::Store, TopologyError> {
    let jetstream = &connection.jetstream;
    let mut problems = Vec::new();
    for wanted in streams(settings) {
        let name = wanted.name.clone();
        let setup = |reason: String| TopologyError::Setup {
            what: format!("stream {name}"),
            reason,
        };
        if settings.create {
            let mut stream = jetstream
                .get_or_create_stream(wanted.clone())
                .await
                .map_err(|err| setup(err.to_string()))?;
            let info = stream.info().await.map_err(|err| setup(err.to_string()))?;
            problems.extend(differences(&wanted, &info.config));
            continue;
        }
        match jetstream.get_stream(&name).await {
            Ok(mut stream) => {
                let info = stream.info().await.map_err(|err| setup(err.to_string()))?;
                problems.extend(differences(&wanted, &info.config));
            }
            Err(_) => problems.push(format!(
                "stream {name} is missing (subjects {})",
                wanted.subjects.join(", ")
            )),
        }
    }
    let bucket = match jetstream.get_key_value(CONTEXT_BUCKET).await {
        Ok(bucket) => Some(bucket),
        Err(_) if settings.create => Some(
            jetstream
                .create_key_value(kv::Config {
                    bucket: CONTEXT_BUCKET.to_owned(),
                    history: 1,
                    storage: StorageType::File,
                    ..Default::default()
                })
                .await
                .map_err(|err| TopologyError::Setup {
                    what: format!("KV bucket {CONTEXT_BUCKET}"),
                    reason: err.to_string(),
                })?,
        ),
        Err(_) => {
            problems.push(format!("KV bucket {CONTEXT_BUCKET} is missing"));
            None
        }
    };
    match bucket {
        Some(bucket) if problems.is_empty() => Ok(bucket),
        _ => Err(TopologyError::Differs(problems)),
    }
}

/// How an existing stream differs from what distributed mode needs.
fn differences(wanted: &stream::Config, found: &stream::Config) -> Vec<String> {
    let mut problems = Vec::new();
    let name = &wanted.name;
    if found.subjects != wanted.subjects {
        problems.push(format!(
            "stream {name} has subjects {:?}, not {:?}",
            found.subjects, wanted.subjects
        ));
    }
    if found.retention != wanted.retention {
        problems.push(format!(
            "stream {name} has retention {:?}, not {:?}",
            found.retention, wanted.retention
        ));
    }
    if found.storage != wanted.storage {
        problems.push(format!("stream {name} is not on file storage"));
    }
    if found.duplicate_window < wanted.duplicate_window {
        problems.push(format!(
            "stream {name} keeps message ids for {:?}, less than {:?}",
            found.duplicate_window, wanted.duplicate_window
        ));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_name_their_stream() {
        assert_eq!(events_subject("match_1"), "live.match_1.events");
        assert_eq!(stream_of_subject("live.match_1.events"), Some("match_1"));
        assert_eq!(stream_of_subject("live.match_1.actions"), None);
    }

    #[test]
    fn a_stream_with_other_settings_is_reported() {
        let settings = NatsSettings::default();
        let wanted = streams(&settings).remove(1);
        let mut found = wanted.clone();
        found.duplicate_window = Duration::from_secs(60);
        found.retention = RetentionPolicy::Interest;
        let problems = differences(&wanted, &found);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[1].contains("LIVE_ACTIONS keeps message ids for 60s"));
    }
}
