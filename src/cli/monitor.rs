//! `live-crew monitor`: the running host's state in the terminal, refreshing, over the
//! control socket: what `status` prints once, and the web page's timeline of the last
//! slices with each stream's slice lag. `q`, Esc or Ctrl-C leave it; so does the host
//! going away, with a word about it.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::Path;
use std::time::Duration;

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Row, Table};
use ratatui::{DefaultTerminal, Frame};
use serde_json::Value;

use super::Status;
use crate::ops::control;

/// How often the host is asked.
const REFRESH: Duration = Duration::from_millis(500);
/// How often keys are looked at between refreshes.
const KEY_POLL: Duration = Duration::from_millis(50);

/// Why the monitor stopped.
enum Ended {
    /// The user asked.
    Quit,
    /// The host stopped answering.
    HostGone(io::Error),
}

pub async fn monitor(socket: &Path) -> io::Result<Status> {
    // Before the screen is taken: a host that is not there is said plainly.
    let first = match control::query(socket, "state", None).await {
        Ok(report) => report,
        Err(err) => return Ok(super::unreachable(socket, &err)),
    };
    let mut terminal = ratatui::init();
    let ended = watch(&mut terminal, socket, first).await;
    ratatui::restore();
    match ended? {
        Ended::Quit => Ok(Status::Clean),
        Ended::HostGone(err) => {
            eprintln!(
                "live-crew: the host on {} went away: {err}",
                socket.display()
            );
            Ok(Status::WithErrors)
        }
    }
}

async fn watch(terminal: &mut DefaultTerminal, socket: &Path, first: Value) -> io::Result<Ended> {
    let mut report = first;
    loop {
        terminal.draw(|frame| draw(frame, socket, &report))?;
        let mut waited = Duration::ZERO;
        while waited < REFRESH {
            if event::poll(Duration::ZERO)? && quit_key(event::read()?) {
                return Ok(Ended::Quit);
            }
            tokio::time::sleep(KEY_POLL).await;
            waited += KEY_POLL;
        }
        report = match control::query(socket, "state", None).await {
            Ok(report) => report,
            Err(err) => return Ok(Ended::HostGone(err)),
        };
    }
}

fn quit_key(event: Event) -> bool {
    let Event::Key(key) = event else {
        return false;
    };
    key.kind == KeyEventKind::Press
        && (matches!(key.code, KeyCode::Char('q') | KeyCode::Esc)
            || (key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL)))
}

/// `state`: the health report (`health`) and the last calls (`calls`), as the web
/// page's `/api/state` has them.
fn draw(frame: &mut Frame, socket: &Path, state: &Value) {
    let report = &state["health"];
    let crew_rows = report["crews"].as_array().map_or(0, Vec::len) as u16;
    let [header, crews, timeline, footer] = Layout::vertical([
        Constraint::Length(4),
        Constraint::Length(crew_rows + 3),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    frame.render_widget(host_lines(report), header);
    frame.render_widget(crew_table(report), crews);
    let slices = usize::from(timeline.width.saturating_sub(4)).saturating_sub(NAME_WIDTH);
    frame.render_widget(timeline_lines(state, slices), timeline);
    frame.render_widget(
        Paragraph::new(format!("{}  ·  q to quit", socket.display()))
            .style(Style::new().fg(Color::DarkGray)),
        footer,
    );
}

fn host_lines(report: &Value) -> Paragraph<'static> {
    let host = &report["host"];
    let healthy = report["healthy"] == true;
    let mut lines = vec![Line::from(vec![
        Span::styled("live-crew ", Style::new().add_modifier(Modifier::BOLD)),
        Span::raw(format!(
            "pid {} · {} mode · up {} s  ",
            host["pid"],
            host["mode"].as_str().unwrap_or("?"),
            host["uptime_ms"].as_u64().unwrap_or(0) / 1000
        )),
        Span::styled(
            if healthy { "healthy" } else { "UNHEALTHY" },
            Style::new().fg(if healthy { Color::Green } else { Color::Red }),
        ),
    ])];
    let nats = &report["nats"];
    if nats.is_object() {
        let connected = nats["connected"] == true;
        lines.push(Line::from(vec![
            Span::raw("NATS "),
            Span::styled(
                if connected {
                    "connected"
                } else {
                    "DISCONNECTED"
                },
                Style::new().fg(if connected { Color::Green } else { Color::Red }),
            ),
            Span::raw(format!(
                " · {} · server {} · {} reconnects",
                nats["role"].as_str().unwrap_or("?"),
                nats["server_version"].as_str().unwrap_or("?"),
                nats["reconnects"]
            )),
        ]));
    }
    Paragraph::new(lines).block(Block::bordered().title(" host "))
}

fn crew_table(report: &Value) -> Table<'static> {
    let text = |value: &Value| match value {
        Value::Null => "–".to_owned(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    let rows = report["crews"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|crew| {
            let style = match crew["healthy"] == true {
                true => Style::new(),
                false => Style::new().fg(Color::Red),
            };
            let heartbeat = match crew["last_heartbeat_ms"].as_u64() {
                Some(ms) => format!("{ms} ms ago"),
                None => "–".to_owned(),
            };
            Row::new(vec![
                text(&crew["crew"]),
                text(&crew["state"]),
                text(&crew["pid"]),
                heartbeat,
                text(&crew["start_mode"]),
                text(&crew["restarts"]),
                text(&crew["errors"]),
                text(&crew["version"]),
                crew["problem"].as_str().unwrap_or_default().to_owned(),
            ])
            .style(style)
        });
    Table::new(
        rows,
        [
            Constraint::Min(12),
            Constraint::Length(10),
            Constraint::Length(8),
            Constraint::Length(12),
            Constraint::Length(13),
            Constraint::Length(9),
            Constraint::Length(7),
            Constraint::Length(13),
            Constraint::Min(10),
        ],
    )
    .header(
        Row::new(vec![
            "crew",
            "state",
            "pid",
            "heartbeat",
            "start",
            "restarts",
            "errors",
            "version",
            "problem",
        ])
        .style(Style::new().fg(Color::DarkGray)),
    )
    .block(Block::bordered().title(" crews "))
}

/// The width of the crew names before the timeline's cells.
const NAME_WIDTH: usize = 16;

/// Per stream, its slice lag and a row per crew with a cell per slice, newest on the
/// right, as the web page draws them: ran, late, failed, skipped or no call.
fn timeline_lines(state: &Value, max_slices: usize) -> Paragraph<'static> {
    let calls = state["calls"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let crews: Vec<&str> = (state["health"]["crews"].as_array().into_iter().flatten())
        .filter_map(|crew| crew["crew"].as_str())
        .collect();
    let mut streams: BTreeMap<&str, BTreeMap<(&str, i64), &Value>> = BTreeMap::new();
    for call in calls {
        let (Some(stream), Some(crew), Some(slice)) = (
            call["stream"].as_str(),
            call["crew"].as_str(),
            call["slice"].as_i64(),
        ) else {
            continue;
        };
        streams
            .entry(stream)
            .or_default()
            .insert((crew, slice), call);
    }
    let mut lines = Vec::new();
    for (stream, cells) in &streams {
        let slices: BTreeSet<i64> = cells.keys().map(|&(_, slice)| slice).collect();
        let shown: Vec<i64> = slices
            .iter()
            .rev()
            .take(max_slices)
            .rev()
            .copied()
            .collect();
        lines.push(Line::from(vec![
            Span::styled(
                format!("{stream} "),
                Style::new().add_modifier(Modifier::BOLD),
            ),
            Span::styled(lag_text(cells, &shown), Style::new().fg(Color::DarkGray)),
        ]));
        for crew in &crews {
            let mut spans = vec![Span::raw(format!("{crew:<NAME_WIDTH$.NAME_WIDTH$}"))];
            spans.extend(shown.iter().map(|&slice| {
                let state = cells
                    .get(&(*crew, slice))
                    .and_then(|call| call["state"].as_str());
                let (cell, color) = match state {
                    Some("ran") => ("█", Color::Green),
                    Some("late") => ("█", Color::Yellow),
                    Some("failed") => ("█", Color::Red),
                    Some("skipped") => ("░", Color::Gray),
                    _ => ("·", Color::DarkGray),
                };
                Span::styled(cell, Style::new().fg(color))
            }));
            lines.push(Line::from(spans));
        }
    }
    if lines.is_empty() {
        lines.push(Line::styled(
            "no calls yet",
            Style::new().fg(Color::DarkGray),
        ));
    }
    let title = " last slices: █ ran  █ late  █ failed  ░ skipped ";
    Paragraph::new(lines).block(Block::bordered().title(title))
}

/// A stream's slice lag over the slices shown: from each slice's close to its slowest
/// call's answer (live mode only).
fn lag_text(cells: &BTreeMap<(&str, i64), &Value>, shown: &[i64]) -> String {
    let mut lags: BTreeMap<i64, f64> = BTreeMap::new();
    for (&(_, slice), call) in cells {
        if let Some(lag) = call["lag_ms"].as_f64().filter(|_| shown.contains(&slice)) {
            let slowest = lags.entry(slice).or_insert(lag);
            *slowest = slowest.max(lag);
        }
    }
    match lags.last_key_value() {
        Some((_, last)) => {
            let max = lags.values().copied().fold(0.0, f64::max);
            format!("slice lag: last {last:.1} ms, max {max:.1} ms")
        }
        None => "slice lag: – (batch input)".to_owned(),
    }
}
