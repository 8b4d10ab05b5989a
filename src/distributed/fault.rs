//! Crash points for the recovery tests: with `LIVE_CREW_FAULT=<point>` in its
//! environment the host aborts (no cleanup, as a crash would) the first time it reaches
//! that point of the commit sequence. Points: `before_kv` (the compare-and-swap is not
//! written), `after_kv` (written, nothing published), `mid_publish` (the first action
//! of an outbox published and acknowledged, the others not sent), `after_publish` (all published, events not acknowledged),
//! `after_ack` (events acknowledged).

use std::sync::OnceLock;

/// Whether `LIVE_CREW_FAULT` names `point`.
pub fn armed(point: &str) -> bool {
    static FAULT: OnceLock<Option<String>> = OnceLock::new();
    let fault = FAULT.get_or_init(|| std::env::var("LIVE_CREW_FAULT").ok());
    fault.as_deref() == Some(point)
}

/// Aborts the process if `LIVE_CREW_FAULT` names `point`.
pub fn crash_point(point: &str) {
    if armed(point) {
        eprintln!("live-crew: LIVE_CREW_FAULT={point}: aborting here");
        std::process::abort();
    }
}
