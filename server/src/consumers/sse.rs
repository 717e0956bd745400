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
use bytes::{Bytes, BytesMut};
use eddy_engine::consumers::{Delivery, Follow, Start, Subscription};
use eddy_engine::store::SharedEvent;
use tokio::time::Instant;

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::params::{self, Params};

/// How long a subscriber gathers events before writing while appends are under load
/// (latency stays per-event while they are not): each write costs a send here and a
/// receive at the other end whatever its size, and 40 ms measured cheapest
/// (docs/internals/decisions/0007-sse-gathering-and-fanout-merging.md).
const BUSY_WINDOW: Duration = Duration::from_millis(40);

/// While gathering, the subscriber takes its queued notices this often, so its queue
/// (256 notices, see the engine's hub) never holds more than this long's commits and
/// does not overflow into a catch-up from storage at high commit rates.
const BUSY_STEP: Duration = Duration::from_millis(20);

/// The most events gathered into one write.
const MAX_CHUNK_EVENTS: usize = 5_000;

/// Whether the request asks for Server-Sent Events.
pub fn wanted(headers: &HeaderMap) -> bool {
    params::representation(headers) == params::Representation::EventStream
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
    // `-1` is the id of a splice notice (API §12): the new history from its start
    let mut restart = false;
    let last_id = match params::header(headers, &["last-event-id"])?.as_deref() {
        None | Some("") => None,
        Some("-1") => {
            restart = true;
            None
        }
        Some(v) => Some(eddy_engine::query::whole_number(v).ok_or_else(|| {
            ApiError::invalid(format!(
                "header Last-Event-ID \"{v}\" is not an event cursor (the id: of an event \
                 this subscription sent)"
            ))
        })?),
    };
    let start = match last_id.or(after) {
        // a reconnect after a splice notice starts the new history from index 0,
        // whatever `after=` its URL still holds
        _ if restart => Start::Beginning,
        Some(cursor) => Start::After(cursor),
        None if selector.from.is_some() || selector.since.is_some() => Start::Beginning,
        None => Start::Live,
    };
    // a cron stream ticks while someone follows it, from once the subscription is
    // there to see the first tick
    let ticked = match &follow {
        Follow::Stream(p) => Some(p.clone()),
        Follow::Account(_) | Follow::All => None,
    };
    let sub = state.engine.follow(follow, selector, data, start).await?;
    let ticking = match ticked {
        Some(p) => state.engine.keep_ticking_for_subscriber(&p)?,
        None => None,
    };
    let heartbeat = Duration::from_millis(state.config.sse_heartbeat_ms.max(1));
    let retry_ms = state.config.sse_retry_ms;
    let feed = Feed {
        state,
        sub,
        data,
        heartbeat,
        next_beat: Instant::now() + heartbeat,
        _ticking: ticking,
    };
    let chunks = futures::stream::unfold(feed, |mut feed| async move {
        let chunk = feed.next().await?;
        Some((chunk, feed))
    });
    Ok(response(retry_ms, chunks))
}

/// An event stream response: `retry:` first, then `chunks` (frames and heartbeats)
/// until they end.
pub(crate) fn response(
    retry_ms: u64,
    chunks: impl futures::Stream<Item = Bytes> + Send + 'static,
) -> Response {
    let opening = Bytes::from(format!("retry: {retry_ms}\n\n"));
    let frames = futures::StreamExt::chain(futures::stream::once(async move { opening }), chunks);
    let body = Body::from_stream(futures::StreamExt::map(frames, Ok::<_, Infallible>));
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        body,
    )
        .into_response()
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
            let first = match self.sub.next_delivery(stop).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(error = %e.message, "subscription stopped");
                    return None;
                }
            };
            if !is_empty(&first) {
                let (events, bytes) = self.render(first);
                if !self.sub.busy() {
                    return Some(bytes);
                }
                // under load, commits come every millisecond or so: one write per
                // window instead of one per commit, for every subscriber
                self.state.metrics.sse_gathered_writes.inc();
                return Some(self.gather(bytes, events).await);
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

    /// The frames of one window under load: `first` (of `events` events), then what
    /// comes within [`BUSY_WINDOW`], taken every [`BUSY_STEP`].
    async fn gather(&mut self, first: Bytes, mut events: usize) -> Bytes {
        let mut pieces = vec![first];
        let until = Instant::now() + BUSY_WINDOW;
        'window: loop {
            let now = Instant::now();
            if now >= until || events >= MAX_CHUNK_EVENTS {
                break;
            }
            tokio::time::sleep(BUSY_STEP.min(until - now)).await;
            while events < MAX_CHUNK_EVENTS {
                match self.sub.next_delivery(std::future::ready(())).await {
                    Ok(more) if !is_empty(&more) => {
                        let (n, bytes) = self.render(more);
                        events += n;
                        pieces.push(bytes);
                    }
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(error = %e.message, "subscription stopped");
                        break 'window;
                    }
                }
            }
        }
        // one copy into a buffer of the final size (notices' frames are shared)
        let mut chunk = BytesMut::with_capacity(pieces.iter().map(Bytes::len).sum());
        for piece in &pieces {
            chunk.extend_from_slice(piece);
        }
        chunk.freeze()
    }

    /// A delivery's frames, and how many events it had.
    fn render(&self, delivery: Delivery) -> (usize, Bytes) {
        match delivery {
            Delivery::Events(events) => (events.len(), self.frames(events.iter().map(|e| &**e))),
            Delivery::Spliced(path) => {
                // id -1: a client that reconnects resumes at the new history's start
                let data = serde_json::json!({ "stream": path.to_string() });
                (
                    0,
                    Bytes::from(format!("id: -1\nevent: eddy.splice\ndata: {data}\n\n")),
                )
            }
            Delivery::Notice(notice) => {
                // the frames of a notice that every subscriber of this kind gets whole
                // are rendered once, by the first of them
                let kind = self.sub.cursor_kind() * 2 + usize::from(self.data);
                let frames = notice.rendered(kind, |n| {
                    self.frames(n.events.iter().map(|live| &*live.event))
                });
                (notice.events.len(), frames)
            }
        }
    }

    /// The events' frames.
    fn frames<'a>(&self, events: impl ExactSizeIterator<Item = &'a SharedEvent>) -> Bytes {
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

/// Whether a delivery is the empty one that ends a wait.
fn is_empty(d: &Delivery) -> bool {
    matches!(d, Delivery::Events(events) if events.is_empty())
}
