//! Operations endpoints: `/healthz` and `/metrics` (OpenMetrics, or Prometheus text
//! 0.0.4 by Accept), and the HTTP metrics the handlers keep.

use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::AppState;
use crate::error::ApiError;

#[derive(Debug)]
pub struct HttpMetrics {
    /// Seconds from the start of an append request to its answer.
    pub append_seconds: Histogram,
    /// Append requests answered with an error.
    pub append_errors: Counter,
    /// SSE writes that gathered a window of commits (see `consumers::sse`).
    pub sse_gathered_writes: Counter,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        Self {
            append_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            append_errors: Counter::default(),
            sse_gathered_writes: Counter::default(),
        }
    }
}

impl HttpMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "eddy_append_seconds",
            "Latency of append requests, from arrival to answer",
            self.append_seconds.clone(),
        );
        registry.register(
            "eddy_append_errors",
            "Append requests answered with an error",
            self.append_errors.clone(),
        );
        registry.register(
            "eddy_sse_gathered_writes",
            "Server-Sent Events writes that gathered a window of commits (subscribers of \
             streams under sustained load)",
            self.sse_gathered_writes.clone(),
        );
    }
}

/// `/healthz`: 200 while the node serves, 503 where several nodes share PostgreSQL
/// and this one has not reached it for a lease time (a load balancer then sends its
/// requests elsewhere).
pub async fn healthz(State(state): State<AppState>) -> Response {
    let last = state.engine.last_position();
    match state.engine.check_heartbeat() {
        Ok(()) => {
            axum::Json(serde_json::json!({ "status": "ok", "lastPosition": last })).into_response()
        }
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({
                "status": "unavailable",
                "error": e.message,
                "lastPosition": last,
            })),
        )
            .into_response(),
    }
}

/// `/metrics`: OpenMetrics 1.0.0, or the Prometheus text format 0.0.4 to a scraper
/// whose Accept prefers `text/plain`.
pub async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> impl IntoResponse {
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &state.registry) {
        tracing::error!(error = %e, "cannot encode metrics");
    }
    if crate::metrics_text::prefers_text_format(&headers) {
        (
            [(header::CONTENT_TYPE, crate::metrics_text::CONTENT_TYPE)],
            crate::metrics_text::from_openmetrics(&out),
        )
    } else {
        (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            out,
        )
    }
}

/// The route of `/healthz` or `/metrics`: a wrong method is a JSON 405 like every
/// other error.
pub fn endpoint(methods: MethodRouter<AppState>) -> MethodRouter<AppState> {
    methods.fallback(|method: Method| async move { ApiError::method(&method, "GET, HEAD") })
}
