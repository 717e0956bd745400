//! `GET /{acct}/{strm}[({args})]` (a page of JSON, NDJSON, `follow=true` live tail,
//! `wait=ms` long-poll) and `GET .../{index}` (one envelope, or `?raw` bytes), API §3.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use eddy_engine::consumers::Follow;
use eddy_engine::order::{Index, Position};
use eddy_engine::path::StreamPath;
use eddy_engine::selector::Selector;
use eddy_engine::settings::StreamSettings;
use eddy_engine::{Cursor, EventQuery, Page, Resolved, Scope};
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::params::{self, DEFAULT_LIMIT, MAX_LIMIT, Params};

/// How often a `follow=true` byte read waiting for more data looks again whether the
/// uploads open on other nodes closed (they are not announced here).
const CLUSTER_UPLOAD_POLL: Duration = Duration::from_millis(250);

/// Events a byte read takes from storage at a time: up to 6.4 MB of data.
const BYTE_PAGE: usize = 64;
/// Data a byte read gathers from small events before it writes.
const GATHER_BYTES: usize = 64 * 1024;

/// The longest `wait` honoured, in milliseconds.
const MAX_WAIT_MS: u64 = 300_000;

/// Reads a (sub)stream page after page, remembering where it is. A stream that does
/// not exist yet reads as empty until it does.
struct Reader {
    state: AppState,
    path: StreamPath,
    prefix: String,
    selector: Selector,
    resolved: Option<Resolved>,
    cursor: Option<Cursor>,
}

impl Reader {
    /// Builtin streams and logs (internal streams, whose names hold a `/`) exist before
    /// their first event: a cron that never ticked, a pipe that never logged.
    fn reads_empty_when_missing(&self) -> bool {
        self.path.account.as_str() == eddy_engine::builtins::ACCOUNT
            || self.path.stream.as_str().contains('/')
    }

    /// The 404 for a stream that does not exist (and that the read will not wait for).
    fn missing(&self) -> ApiError {
        ApiError(eddy_engine::missing_stream(&self.path))
    }

    async fn page(&mut self, limit: usize) -> ApiResult<Page> {
        if self.resolved.as_ref().is_none_or(|r| r.scope.is_none()) {
            self.resolved = self.state.engine.resolve(&self.path).await?;
            if let Some(r) = &self.resolved {
                check_shape(&self.path, r, &self.selector, self.cursor)?;
            }
        }
        let Some(scope) = self.resolved.as_ref().and_then(|r| r.scope) else {
            return Ok(Page::default());
        };
        let cursor = self.cursor.unwrap_or(match scope {
            Scope::Substream(_) => Cursor::Index(Index(0)),
            Scope::Factory(_) => Cursor::After(Position::START),
        });
        let page = self
            .state
            .engine
            .read(&EventQuery {
                scope,
                prefix: &self.prefix,
                selector: &self.selector,
                cursor,
                limit,
            })
            .await?;
        if let Some(c) = page.next_cursor(scope) {
            self.cursor = Some(c);
        }
        Ok(page)
    }

    /// Whether nothing more can match: a (sub)stream that already holds the event at
    /// the selector's `to` (indexes are gapless, so every later one is past it). A
    /// factory's `to` bounds each substream's indexes, so new substreams may still
    /// bring matches.
    async fn exhausted(&self) -> bool {
        let substream = matches!(
            self.resolved.as_ref().and_then(|r| r.scope),
            Some(Scope::Substream(_))
        );
        match self.selector.to {
            Some(to) if substream => self.state.engine.event(&self.path, to).await.is_ok(),
            _ => false,
        }
    }

    /// Whether a commit may have brought this reader something new.
    fn concerns(
        &self,
        notice: &Result<std::sync::Arc<eddy_engine::Committed>, broadcast::error::RecvError>,
    ) -> bool {
        match (notice, &self.resolved) {
            (Ok(n), Some(r)) => n.streams.contains(&r.info.id),
            _ => true,
        }
    }

    /// Waits until a commit concerns this reader, `deadline` passes (false) or the
    /// server shuts down (false). A splice of the stream starts the reader again at
    /// the new history's first event (API §12).
    async fn wait(
        &mut self,
        rx: &mut broadcast::Receiver<std::sync::Arc<eddy_engine::Committed>>,
        deadline: Option<Instant>,
    ) -> bool {
        loop {
            let notice = tokio::select! {
                n = rx.recv() => n,
                _ = sleep_until(deadline) => return false,
                _ = self.state.shutting_down() => return false,
            };
            match &notice {
                Err(broadcast::error::RecvError::Closed) => return false,
                Ok(n) if self.spliced(n) => {
                    self.restart();
                    return true;
                }
                // notices were missed, a splice among them perhaps: the stream is
                // looked up again, and read from the start if it changed
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let before = self.resolved.as_ref().and_then(|r| r.scope);
                    if let Ok(now) = self.state.engine.resolve(&self.path).await
                        && before.is_some()
                        && now.as_ref().and_then(|r| r.scope) != before
                    {
                        self.restart();
                    }
                    return true;
                }
                Ok(_) => {}
            }
            if self.concerns(&notice) {
                return true;
            }
        }
    }

    /// Whether `notice` says a splice replaced this plain stream's history.
    fn spliced(&self, notice: &eddy_engine::Committed) -> bool {
        self.path.args.is_none()
            && notice
                .spliced
                .iter()
                .any(|p| p.account == self.path.account && p.stream == self.path.stream)
    }

    /// Reads the stream again from its first event, looked up anew.
    fn restart(&mut self) {
        self.resolved = None;
        self.cursor = None;
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Refuses read parameters that do not fit the stream's shape.
fn check_shape(
    path: &StreamPath,
    r: &Resolved,
    sel: &Selector,
    cursor: Option<Cursor>,
) -> ApiResult<()> {
    let factory_read = r.info.factory && path.args.is_none();
    if !sel.subs.is_empty() && !factory_read {
        return Err(ApiError::invalid(format!(
            "selector sub= picks substreams of a factory, and {path} is not a factory URL"
        )));
    }
    if matches!(cursor, Some(Cursor::After(_))) && !factory_read {
        return Err(ApiError::invalid(format!(
            "after= pages a factory read in global order; {path} is read by index, so use from="
        )));
    }
    Ok(())
}

/// `wait=ms`, or EventStoreDB's `ES-LongPoll: <seconds>` header; `None` when the
/// read should not wait (absent or 0). Capped at [`MAX_WAIT_MS`].
fn wait_ms(q: &mut Params, headers: &HeaderMap) -> ApiResult<Option<u64>> {
    let ms = match (
        q.number("wait")?,
        params::header(headers, &["ES-LongPoll"])?,
    ) {
        (Some(ms), _) => Some(ms),
        (None, Some(secs)) => Some(
            secs.parse::<u64>()
                .map_err(|_| {
                    ApiError::invalid(format!(
                        "header ES-LongPoll \"{secs}\" must be a whole number of seconds"
                    ))
                })?
                .saturating_mul(1000),
        ),
        (None, None) => None,
    };
    Ok(ms.map(|w| w.min(MAX_WAIT_MS)).filter(|w| *w > 0))
}

pub async fn get(
    state: AppState,
    path: StreamPath,
    uri: &Uri,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    if crate::consumers::sse::wanted(headers) {
        let follow = Follow::Stream(path.clone());
        let mut resp =
            crate::consumers::sse::subscribe(state.clone(), follow, uri, headers).await?;
        // (a stream that does not exist yet is waited for, and has no metadata yet)
        if let Ok(Some(r)) = state.engine.resolve(&path).await {
            stream_metadata(&mut resp, &r.info.settings);
        }
        return Ok(resp);
    }
    let mut q = Params::parse(uri)?;
    let selector = q.selector()?;
    let limit = q.limit()?;
    let after = q.number("after")?;
    let wait = wait_ms(&mut q, headers)?;
    let follow = FollowMode::take(&mut q)?;
    q.finish()?;
    let repr = params::representation(headers);
    let ndjson = repr == params::Representation::Ndjson;
    let bytes = repr == params::Representation::Bytes;
    if follow != FollowMode::No && !ndjson && !bytes {
        return Err(ApiError::invalid(
            "follow streams NDJSON or bytes: send Accept: application/x-ndjson or \
             Accept: application/octet-stream",
        ));
    }
    let prefix = format!("{}/{}", path.account, path.stream);
    let mut reader = Reader {
        state: state.clone(),
        path,
        prefix,
        selector,
        resolved: None,
        cursor: after.map(|a| Cursor::After(Position(a as i64))),
    };
    let mut rx = state.engine.subscribe();
    if ndjson {
        let follow = follow != FollowMode::No;
        return ndjson_response(reader, rx, limit, follow, wait).await;
    }
    if bytes {
        return byte_response(reader, rx, limit, follow).await;
    }
    let limit = limit.unwrap_or(DEFAULT_LIMIT).min(MAX_LIMIT);
    let mut page = reader.page(limit).await?;
    // builtin streams and logs exist before their first event
    let builtin = reader.reads_empty_when_missing();
    if reader.resolved.is_none() && wait.is_none() && !builtin {
        return Err(reader.missing());
    }
    if page.events.is_empty()
        && let Some(ms) = wait
    {
        if reader.exhausted().await {
            // nothing can come after the event at `to=`, which is stored: one more
            // read takes what was stored since the first, and the poll ends
            page = reader.page(limit).await?;
        } else {
            let deadline = Instant::now() + Duration::from_millis(ms);
            while page.events.is_empty() && reader.wait(&mut rx, Some(deadline)).await {
                page = reader.page(limit).await?;
            }
        }
    }
    let envelopes: Vec<_> = page.events.iter().map(|e| e.envelope()).collect();
    let body = serde_json::to_vec(&envelopes)
        .map_err(|e| ApiError(eddy_engine::EngineError::internal(e.to_string())))?;
    // the Accept header chose JSON over NDJSON and SSE
    let mut resp = (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::VARY, "accept"),
        ],
        body,
    )
        .into_response();
    if page.more
        && let Some(link) = next_link(&reader, uri)
        && let Ok(v) = HeaderValue::from_str(&link)
    {
        resp.headers_mut().insert(header::LINK, v);
    }
    if let Some(r) = &reader.resolved {
        stream_metadata(&mut resp, &r.info.settings);
    }
    Ok(resp)
}

/// `<url?...&from=n>; rel="next"` (or `after=pos` on a factory).
fn next_link(reader: &Reader, uri: &Uri) -> Option<String> {
    let (key, value) = match reader.cursor? {
        Cursor::Index(i) => ("from", i.to_string()),
        Cursor::After(p) => ("after", p.to_string()),
    };
    let mut pairs = eddy_engine::query::pairs(uri.query().unwrap_or("")).ok()?;
    pairs.retain(|(k, _)| k != key);
    pairs.push((key.to_owned(), value));
    let query: Vec<String> = pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                eddy_engine::query::encode(k),
                eddy_engine::query::encode(v)
            )
        })
        .collect();
    Some(format!(
        "<{}?{}>; rel=\"next\"",
        reader.path.url(),
        query.join("&")
    ))
}

/// `follow`: whether and how long a read stays open for new events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FollowMode {
    No,
    /// `follow=true`: NDJSON until the client leaves; bytes until no upload is open
    /// and everything was sent.
    UntilDone,
    /// `follow=forever`: until the client leaves.
    Forever,
}

impl FollowMode {
    fn take(q: &mut Params) -> ApiResult<Self> {
        match q.take("follow").as_deref() {
            None | Some("false") | Some("0") => Ok(Self::No),
            Some("") | Some("true") | Some("1") => Ok(Self::UntilDone),
            Some("forever") => Ok(Self::Forever),
            Some(v) => Err(ApiError::invalid(format!(
                "query parameter follow=\"{v}\" must be true, false or forever"
            ))),
        }
    }
}

/// Bytes (API §13): the data of every matching event (up to `limit`), concatenated.
/// `follow=true` writes new data as it commits until no upload is open on the
/// (sub)stream and everything was sent (a stream that does not exist yet is waited
/// for); `follow=forever` until the client leaves.
async fn byte_response(
    mut reader: Reader,
    mut rx: broadcast::Receiver<std::sync::Arc<eddy_engine::Committed>>,
    limit: Option<usize>,
    follow: FollowMode,
) -> ApiResult<Response> {
    let uploads = reader.state.uploads.clone();
    let mut closings = uploads.closings();
    let engine = reader.state.engine.clone();
    // uploads on other nodes close unannounced: looked for again this often
    let clustered = engine.clustered();
    // whether an upload is open on what is read, here or on another node
    let open_now = async move |reader: &Reader| {
        uploads.any_open(&reader.path)
            || (clustered
                && engine
                    .upload_open_anywhere(&reader.path)
                    .await
                    .unwrap_or(true))
    };
    // an upload open before a read sends what the read finds, so a read that found
    // nothing new after seeing no open upload has sent everything
    let mut open = follow == FollowMode::UntilDone && open_now(&reader).await;
    let mut remaining = limit.unwrap_or(usize::MAX);
    // the first page runs before the response starts, so errors are still statuses
    let first = reader.page(remaining.min(BYTE_PAGE)).await?;
    let builtin = reader.reads_empty_when_missing();
    if reader.resolved.is_none() && follow == FollowMode::No && !builtin {
        return Err(reader.missing());
    }
    let settings = reader.resolved.as_ref().map(|r| r.info.settings.clone());
    // a client that reads slowly holds at most a few events' data here
    let (tx, out) = mpsc::channel::<Bytes>(2);
    tokio::spawn(async move {
        let mut page = first;
        let mut last_page = false;
        loop {
            remaining -= page.events.len();
            // small pieces are sent together, large ones as they are stored
            let mut gathered = bytes::BytesMut::new();
            for e in &page.events {
                if gathered.len() + e.data.len() > GATHER_BYTES
                    && !gathered.is_empty()
                    && tx.send(gathered.split().freeze()).await.is_err()
                {
                    return;
                }
                if e.data.len() >= GATHER_BYTES {
                    if tx.send(e.data.clone()).await.is_err() {
                        return;
                    }
                } else {
                    gathered.extend_from_slice(&e.data);
                }
            }
            if !gathered.is_empty() && tx.send(gathered.freeze()).await.is_err() {
                return;
            }
            if remaining == 0 {
                return;
            }
            if !page.more {
                let done = match follow {
                    FollowMode::No => true,
                    // (a stream not created yet is waited for)
                    FollowMode::UntilDone => !open && reader.resolved.is_some(),
                    FollowMode::Forever => false,
                };
                if done || last_page {
                    return;
                }
                if reader.exhausted().await {
                    // the event at `to=` is stored: one more read takes what was
                    // stored since the page above, and nothing later can match
                    last_page = true;
                    page = match reader.page(remaining.min(BYTE_PAGE)).await {
                        Ok(p) => p,
                        Err(_) => return,
                    };
                    continue;
                }
                closings.borrow_and_update();
                let still = follow == FollowMode::UntilDone && open_now(&reader).await;
                if open && !still {
                    // the upload closed after the read above: one more read takes
                    // its last pieces
                    open = false;
                } else {
                    let poll = async {
                        match clustered {
                            true => tokio::time::sleep(CLUSTER_UPLOAD_POLL).await,
                            false => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        woke = reader.wait(&mut rx, None) => if !woke { return },
                        _ = closings.changed() => {}
                        _ = poll => {}
                        _ = tx.closed() => return,
                    }
                    open = follow == FollowMode::UntilDone && open_now(&reader).await;
                }
            } else {
                open = follow == FollowMode::UntilDone && open_now(&reader).await;
            }
            page = match reader.page(remaining.min(BYTE_PAGE)).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = ?e.0, "byte read stopped");
                    return;
                }
            };
        }
    });
    Ok(streamed(out, "application/octet-stream", settings.as_ref()))
}

/// NDJSON: every matching event (up to `limit`), then, with `follow`, each new one as
/// it commits, until the client goes away or the server shuts down.
async fn ndjson_response(
    mut reader: Reader,
    mut rx: broadcast::Receiver<std::sync::Arc<eddy_engine::Committed>>,
    limit: Option<usize>,
    follow: bool,
    wait: Option<u64>,
) -> ApiResult<Response> {
    // The first page runs before the response starts, so errors are still statuses.
    let mut remaining = limit.unwrap_or(usize::MAX);
    let first = reader.page(remaining.min(MAX_LIMIT)).await?;
    let builtin = reader.reads_empty_when_missing();
    if reader.resolved.is_none() && !follow && wait.is_none() && !builtin {
        return Err(reader.missing());
    }
    let settings = reader.resolved.as_ref().map(|r| r.info.settings.clone());
    let (tx, out) = mpsc::channel::<Bytes>(8);
    tokio::spawn(async move {
        let mut page = first;
        let deadline = wait.map(|w| Instant::now() + Duration::from_millis(w));
        let (mut sent_any, mut last_page) = (false, false);
        loop {
            if !page.events.is_empty() {
                let mut buf = Vec::with_capacity(page.events.len() * 256);
                for e in &page.events {
                    if serde_json::to_writer(&mut buf, &e.envelope()).is_err() {
                        return;
                    }
                    buf.push(b'\n');
                }
                remaining -= page.events.len();
                sent_any = true;
                if tx.send(Bytes::from(buf)).await.is_err() {
                    return;
                }
            }
            if remaining == 0 {
                return;
            }
            if !page.more {
                let keep_waiting = follow || (!sent_any && deadline.is_some());
                if !keep_waiting || last_page {
                    return;
                }
                if reader.exhausted().await {
                    // the event at `to=` is stored: one more read takes what was
                    // stored since the page above, and nothing later can match
                    last_page = true;
                } else {
                    let until = if follow { None } else { deadline };
                    tokio::select! {
                        woke = reader.wait(&mut rx, until) => if !woke { return },
                        _ = tx.closed() => return,
                    }
                }
            }
            page = match reader.page(remaining.min(MAX_LIMIT)).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = ?e.0, "NDJSON read stopped");
                    return;
                }
            };
        }
    });
    Ok(streamed(out, "application/x-ndjson", settings.as_ref()))
}

/// A `200` whose body is what `out` brings, as it comes, with the stream's metadata.
fn streamed(
    out: mpsc::Receiver<Bytes>,
    content_type: &'static str,
    settings: Option<&StreamSettings>,
) -> Response {
    let body = Body::from_stream(futures::stream::unfold(out, |mut out| async move {
        out.recv().await.map(|b| (Ok::<_, Infallible>(b), out))
    }));
    let mut resp = (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::VARY, "accept"),
        ],
        body,
    )
        .into_response();
    if let Some(s) = settings {
        stream_metadata(&mut resp, s);
    }
    resp
}

pub async fn one(state: AppState, path: StreamPath, index: u64, uri: &Uri) -> ApiResult<Response> {
    let mut q = Params::parse(uri)?;
    let raw = q.flag("raw")?;
    q.finish()?;
    let (event, settings) = state.engine.event(&path, Index(index)).await?;
    if !raw {
        let mut resp = axum::Json(event.envelope()).into_response();
        stream_metadata(&mut resp, &settings);
        return Ok(resp);
    }
    let mut resp = Response::new(Body::from(event.data.clone()));
    stream_metadata(&mut resp, &settings);
    let h = resp.headers_mut();
    let mut put = |name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_bytes(value.as_bytes()) {
            h.insert(HeaderName::from_static(name), v);
        }
    };
    put("content-type", &event.content_type);
    put("event-id", &event.id.to_string());
    put("event-type", &event.event_type);
    put("event-timestamp", &event.timestamp.to_string());
    put("event-index", &event.index.to_string());
    // the envelope's "stream" (`acct/strm('a')`), as the envelope writes it
    put("event-stream", &event.stream);
    if let Some(m) = &event.metadata {
        put("event-metadata", &eddy_engine::json::ascii_json(m));
    }
    if let Some(o) = &event.origin {
        put("event-origin", &eddy_engine::json::ascii_json(o));
    }
    // the bytes are a tenant's, served on the server's (and the console's) origin: a
    // browser that opens them (text/html, say) runs them in a sandbox of their own,
    // with no script and no access to the console's session storage
    put("content-security-policy", "sandbox; default-src 'none'");
    put("x-content-type-options", "nosniff");
    Ok(resp)
}

/// `X-Stream-Metadata` on a read of a stream that has metadata (API §13).
pub(crate) fn stream_metadata(resp: &mut Response, settings: &StreamSettings) {
    let Some(m) = &settings.metadata else { return };
    let json = serde_json::Value::Object(m.clone()).to_string();
    if let Ok(v) = HeaderValue::from_str(&eddy_engine::json::ascii_json(&json)) {
        resp.headers_mut()
            .insert(HeaderName::from_static("x-stream-metadata"), v);
    }
}
