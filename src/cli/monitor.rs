//! `live-crew monitor`: the running host's state in the terminal, refreshing, over the
//! control socket (the view `status` prints once). `q`, Esc or Ctrl-C leave it; so does
//! the host going away, with a word about it.

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
    let first = match control::query(socket, "status", None).await {
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
        report = match control::query(socket, "status", None).await {
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

fn draw(frame: &mut Frame, socket: &Path, report: &Value) {
    let [header, crews, footer] = Layout::vertical([
        Constraint::Length(4),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    frame.render_widget(host_lines(report), header);
    frame.render_widget(crew_table(report), crews);
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
