//! `Accept: text/event-stream` on a stream, substream, factory or account URL: a
//! subscription (API §5) through the engine's live fan-out.
//!
//! Each event is `id: <cursor>`, `event: <type>`, `data: <json>`: the cursor is the
//! event's index on a plain stream or substream, its global position on a factory or an
//! account, and `Last-Event-ID` (or `after=`) resumes after it. The subscription starts
//! at the live end unless `from`, `since`, `Last-Event-ID` or `after` say otherwise.
//! `data` is `{"stream","index","type"}`, or the whole envelope with `data=true`. A
//! `retry:` field opens the stream and a comment goes out every heartbeat interval.

use std::convert::Infallible;
use std::io::Write as _;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use eddy_engine::consumers::{Follow, Start, Subscription};
use std::sync::Arc;

use eddy_engine::store::SharedEvent;
use tokio::time::Instant;

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::params::{self, Params};

/// How long a subscriber gathers events before writing while appends are under load
/// (latency stays per-event while they are not).
const BUSY_WINDOW: Duration = Duration::from_millis(5);

/// The most events gathered into one write.
const MAX_CHUNK_EVENTS: usize = 5_000;

/// Whether the request asks for Server-Sent Events.
pub fn wanted(headers: &HeaderMap) -> bool {
    params::accepts(headers, "text/event-stream")
}

/// Starts a subscription and answers with its event stream.
pub async fn subscribe(
    state: AppState,
    follow: Follow,
    uri: &Uri,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    let mut q = Params::parse(uri)?;
    let selector = q.selector()?;
    let data = q.flag("data")?;
    let after = q.number("after")?;
    q.finish()?;
    let last_id = match params::header(headers, &["last-event-id"])?.as_deref() {
        None | Some("") => None,
        Some(v) => Some(eddy_engine::query::whole_number(v).ok_or_else(|| {
            ApiError::invalid(format!(
                "header Last-Event-ID \"{v}\" is not an event cursor (the id: of an event \
                 this subscription sent)"
            ))
        })?),
    };
    let start = match last_id.or(after) {
        Some(cursor) => Start::After(cursor),
        None if selector.from.is_some() || selector.since.is_some() => Start::Beginning,
        None => Start::Live,
    };
    // a cron stream ticks while someone follows it
    let ticking = match &follow {
        Follow::Stream(p) => state.engine.keep_ticking(p),
        Follow::Account(_) => None,
    };
    let sub = state.engine.follow(follow, selector, data, start).await?;
    let heartbeat = Duration::from_millis(state.config.sse_heartbeat_ms.max(1));
    let opening = Bytes::from(format!("retry: {}\n\n", state.config.sse_retry_ms));
    let feed = Feed {
        state,
        sub,
        data,
        heartbeat,
        next_beat: Instant::now() + heartbeat,
        _ticking: ticking,
    };
    let events = futures::stream::unfold(feed, |mut feed| async move {
        let chunk = feed.next().await?;
        Some((Ok::<_, Infallible>(chunk), feed))
    });
    let body = Body::from_stream(futures::StreamExt::chain(
        futures::stream::once(async move { Ok::<_, Infallible>(opening) }),
        events,
    ));
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        body,
    )
        .into_response())
}

/// The subscription as a sequence of SSE chunks.
struct Feed {
    state: AppState,
    sub: Subscription,
    data: bool,
    heartbeat: Duration,
    next_beat: Instant,
    _ticking: Option<eddy_engine::builtins::cron::CronGuard>,
}

impl Feed {
    /// The next chunk: a batch of events or a heartbeat; `None` ends the response (the
    /// server shuts down, or the subscription failed).
    async fn next(&mut self) -> Option<Bytes> {
        loop {
            let state = self.state.clone();
            let deadline = self.next_beat;
            let stop = async move {
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => {}
                    _ = state.shutting_down() => {}
                }
            };
            let mut events = match self.sub.next(stop).await {
                Ok(events) => events,
                Err(e) => {
                    tracing::warn!(error = %e.message, "subscription stopped");
                    return None;
                }
            };
            if !events.is_empty() {
                if self.sub.busy() {
                    // under load, commits come every millisecond or so: one write per
                    // window instead of one per commit, for every subscriber
                    tokio::time::sleep(BUSY_WINDOW).await;
                    while events.len() < MAX_CHUNK_EVENTS {
                        match self.sub.next(std::future::ready(())).await {
                            Ok(more) if !more.is_empty() => events.extend(more),
                            Ok(_) => break,
                            Err(e) => {
                                tracing::warn!(error = %e.message, "subscription stopped");
                                break;
                            }
                        }
                    }
                }
                return Some(self.render(&events));
            }
            if self.state.is_shutting_down() {
                return None;
            }
            if Instant::now() >= self.next_beat {
                self.next_beat += self.heartbeat;
                return Some(Bytes::from_static(b": heartbeat\n\n"));
            }
        }
    }

    fn render(&self, events: &[Arc<SharedEvent>]) -> Bytes {
        let mut buf = Vec::with_capacity(events.len() * if self.data { 320 } else { 120 });
        for e in events {
            // the JSON is rendered once per event and shared by every subscriber
            let json = if self.data {
                e.envelope_json()
            } else {
                e.reference_json()
            };
            // (io::Write on a Vec cannot fail)
            let _ = write!(buf, "id: {}\nevent: {}", self.sub.cursor(e), e.event_type);
            buf.extend_from_slice(b"\ndata: ");
            buf.extend_from_slice(json);
            buf.extend_from_slice(b"\n\n");
        }
        Bytes::from(buf)
    }
}
