//! Logs on stderr (SPEC §8): JSON lines `{"ts","level","msg",...}` with the event's
//! fields (`stream`, `slice`, `crew`, `t_ms`, ...) and those of its spans, or
//! tracing-subscriber's pretty format for humans.

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

pub use crate::config::LogFormat;
use crate::model::Timestamp;

/// Installs the global subscriber. `filter` is an `EnvFilter` directive such as `info`
/// or `warn,live_crew::heartbeat=off`.
pub fn init(format: LogFormat, filter: &str) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(filter))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder
            .fmt_fields(JsonFields::new())
            .event_format(JsonLines)
            .init(),
        LogFormat::Pretty => builder.init(),
    }
}

/// The level a `-v`/`-q` count selects, starting from `info`.
pub fn level_for(verbose: u8, quiet: u8) -> &'static str {
    match i16::from(verbose) - i16::from(quiet) {
        ..=-3 => "off",
        -2 => "error",
        -1 => "warn",
        0 => "info",
        1 => "debug",
        _ => "trace",
    }
}

/// One JSON object per event: `ts`, `level` and `msg` first, then span fields (outermost
/// first), then the event's own fields, which win over a span's of the same name.
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = Map::new();
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                let Some(stored) = extensions.get::<FormattedFields<N>>() else {
                    continue;
                };
                if let Ok(Value::Object(span_fields)) = serde_json::from_str(stored) {
                    fields.extend(span_fields);
                }
            }
        }
        let mut visitor = Fields {
            fields: &mut fields,
            msg: String::new(),
        };
        event.record(&mut visitor);
        let msg = std::mem::take(&mut visitor.msg);
        let text = json_line(level_name(*event.metadata().level()), &msg, &fields);
        writeln!(writer, "{text}")
    }
}

/// One JSON log line: `ts`, `level` and `msg` first, then `fields`. Also used for the
/// run summary, which is printed whatever the log filter.
pub fn json_line(level: &str, msg: &str, fields: &Map<String, Value>) -> String {
    let mut text = String::with_capacity(128);
    let mut put = |key: &str, value: &Value| {
        text.push(if text.is_empty() { '{' } else { ',' });
        text.push_str(&Value::from(key).to_string());
        text.push(':');
        text.push_str(&value.to_string());
    };
    put("ts", &Timestamp::now().to_string().into());
    put("level", &level.into());
    put("msg", &msg.into());
    for (key, value) in fields {
        if !matches!(key.as_str(), "ts" | "level" | "msg") {
            put(key, value);
        }
    }
    text.push('}');
    text
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::TRACE => "trace",
        Level::DEBUG => "debug",
        Level::INFO => "info",
        Level::WARN => "warn",
        Level::ERROR => "error",
    }
}

struct Fields<'a> {
    fields: &'a mut Map<String, Value>,
    msg: String,
}

impl Fields<'_> {
    fn put(&mut self, field: &Field, value: Value) {
        match field.name() {
            "message" => {
                self.msg = match value {
                    Value::String(text) => text,
                    other => other.to_string(),
                }
            }
            // Metadata of events bridged from the `log` crate.
            name if name.starts_with("log.") => {}
            name => {
                self.fields.insert(name.to_owned(), value);
            }
        }
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, format!("{value:?}").into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_lines_carry_ts_level_msg_and_span_and_event_fields() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .fmt_fields(JsonFields::new())
            .event_format(JsonLines)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("slice", stream = "s1", slice = 4);
            let _entered = span.enter();
            tracing::warn!(crew = "vision", t_ms = 1.5, "call \"failed\"\nbadly");
            tracing::info!(stream = "override", "plain");
        });
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        let first = &lines[0];
        assert!(Timestamp::parse(first["ts"].as_str().unwrap()).is_ok());
        assert_eq!(first["level"], "warn");
        assert_eq!(first["msg"], "call \"failed\"\nbadly");
        assert_eq!(first["stream"], "s1");
        assert_eq!(first["slice"], 4);
        assert_eq!(first["crew"], "vision");
        assert_eq!(first["t_ms"], 1.5);
        assert_eq!(lines[1]["stream"], "override");
        assert!(text.starts_with("{\"ts\":"), "{text}");
    }

    #[test]
    fn verbosity_counts_move_from_info() {
        assert_eq!(level_for(0, 0), "info");
        assert_eq!(level_for(1, 0), "debug");
        assert_eq!(level_for(3, 0), "trace");
        assert_eq!(level_for(0, 1), "warn");
        assert_eq!(level_for(0, 2), "error");
        assert_eq!(level_for(0, 5), "off");
    }
}
