//! The metrics server on `--metrics-addr`: `/metrics` (OpenMetrics text), `/healthz`
//! (the host answers), `/readyz` (every crew is up, as `health` would say), and the web
//! page of the running host, `/`, over its data, `/api/state` (health and the last
//! calls).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};

use super::health::{HostState, PAGE_SLICES};

/// The web page of the running host (SPEC §16): one self-contained file, no assets.
const PAGE: &str = include_str!("page.html");
use super::metrics::Metrics;

/// Serves `/metrics`, `/healthz` (the host answers) and `/readyz` (every crew is up)
/// until the returned task is dropped or aborted.
pub async fn serve(
    addr: &str,
    metrics: Arc<Metrics>,
    host: HostState,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (metrics, host) = (metrics.clone(), host.clone());
            let service = hyper::service::service_fn(move |request| {
                let response = respond(&request, &metrics, &host);
                async move { Ok::<_, std::convert::Infallible>(response) }
            });
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(stream);
                let served = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .serve_connection(io, service);
                if let Err(err) = served.await {
                    tracing::debug!("metrics connection: {err}");
                }
            });
        }
    });
    Ok((local, task))
}

fn respond(
    request: &Request<Incoming>,
    metrics: &Metrics,
    host: &HostState,
) -> Response<Full<Bytes>> {
    let text = |status: StatusCode, content_type: &str, body: String| {
        Response::builder()
            .status(status)
            .header(hyper::header::CONTENT_TYPE, content_type)
            .body(Full::new(Bytes::from(body)))
            .expect("static headers are valid")
    };
    const PLAIN: &str = "text/plain; charset=utf-8";
    if request.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, PLAIN, "GET only\n".into());
    }
    match request.uri().path() {
        "/metrics" => text(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.encode(),
        ),
        "/healthz" => text(StatusCode::OK, PLAIN, "ok\n".into()),
        "/" => text(StatusCode::OK, "text/html; charset=utf-8", PAGE.into()),
        "/api/state" => {
            // `?slices=N`: more (or less) of the history than the page needs.
            let slices = (request.uri().query().unwrap_or_default().split('&'))
                .find_map(|pair| pair.strip_prefix("slices="))
                .and_then(|n| n.parse().ok())
                .unwrap_or(PAGE_SLICES);
            text(StatusCode::OK, "application/json", host.state(slices))
        }
        "/readyz" => {
            let report = host.report(None);
            let status = if report.healthy {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            let body = serde_json::to_string(&report).expect("reports serialise") + "\n";
            text(status, "application/json", body)
        }
        _ => text(
            StatusCode::NOT_FOUND,
            PLAIN,
            "not found; try /, /api/state, /metrics, /healthz or /readyz\n".into(),
        ),
    }
}
