//! The accept loop and each connection's bounds: HTTP/1.1 and h2c by hyper-util's
//! auto builder, with a header read timeout, an idle timeout, a header size limit
//! (hyper's read buffer) and a connection limit, and a graceful shutdown.
//!
//! Each connection has a [`Slot`] that its requests and its socket update: how many
//! requests are in flight (a request counts until its response body is dropped, so a
//! subscription is busy while it streams), since when it has been idle, and when the
//! bytes of a next request head began to arrive. A watchdog per connection closes it
//! when its head takes longer than the header read timeout or it stays idle past the
//! idle timeout. Past the connection limit, each new connection closes the connection
//! idle the longest (busy the longest when none is idle): the server keeps answering
//! new clients, `/healthz` included, at the cost of the clients doing least.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, HttpBody};
use axum::extract::Request;
use axum::http::header;
use axum::response::IntoResponse;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tower_service::Service;

use crate::config::Config;
use crate::error::ApiError;

/// The bounds every connection is held to.
#[derive(Clone, Copy)]
pub struct Limits {
    pub header_read: Option<Duration>,
    pub idle: Option<Duration>,
    pub max_header_bytes: usize,
    pub max_connections: usize,
}

impl Limits {
    pub fn of(config: &Config) -> Self {
        let ms = |v: u64| (v > 0).then(|| Duration::from_millis(v));
        Self {
            header_read: ms(config.header_read_timeout_ms),
            idle: ms(config.idle_timeout_ms),
            max_header_bytes: config.max_header_bytes.max(crate::config::MIN_HEADER_BYTES),
            max_connections: config.max_connections.max(1),
        }
    }
}

/// One connection's state, shared by its requests, its socket and the registry.
struct Slot {
    epoch: Instant,
    /// Requests whose responses are not finished.
    active: AtomicU32,
    /// When the connection last had no request in flight (ms since `epoch`).
    idle_since: AtomicU64,
    /// When bytes of the next request head began to arrive (ms since `epoch`, 1-based;
    /// 0: none yet).
    head_started: AtomicU64,
    /// Chosen to be closed: picked once.
    evicted: AtomicBool,
    evict: Notify,
}

impl Slot {
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    fn begin(self: &Arc<Self>) -> Active {
        self.active.fetch_add(1, Relaxed);
        self.head_started.store(0, Relaxed);
        Active(self.clone())
    }

    /// When the watchdog must next look, or `None` when the connection is over its
    /// bounds now. It looks at least every quarter of the shorter timeout, since a
    /// head may begin or a request end between two looks: a bound is enforced within
    /// a quarter of it.
    fn next_check(&self, limits: &Limits) -> Option<u64> {
        let now = self.now();
        let period = [limits.header_read, limits.idle]
            .into_iter()
            .flatten()
            .min()
            .map_or(3_600_000, |d| (d.as_millis() as u64 / 4).max(10));
        if self.active.load(Relaxed) > 0 {
            // busy: bodies have timeouts of their own
            return Some(now + period);
        }
        let head = self.head_started.load(Relaxed);
        let deadline = match (head, limits.header_read, limits.idle) {
            (h, Some(d), _) if h > 0 => h + d.as_millis() as u64,
            (0, _, Some(d)) => self.idle_since.load(Relaxed) + d.as_millis() as u64,
            _ => u64::MAX,
        };
        (deadline > now).then(|| deadline.min(now + period))
    }
}

/// A request in flight; dropped with its response body.
struct Active(Arc<Slot>);

impl Drop for Active {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Relaxed) == 1 {
            self.0.idle_since.store(self.0.now(), Relaxed);
        }
    }
}

/// A response body that keeps its request counted as in flight until it is dropped.
struct Tracked {
    body: Body,
    _active: Active,
}

impl HttpBody for Tracked {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The socket, noting when the bytes of a request head begin to arrive.
struct Watched {
    tcp: TcpStream,
    slot: Arc<Slot>,
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.tcp).poll_read(cx, buf);
        let slot = &this.slot;
        if buf.filled().len() > before
            && slot.active.load(Relaxed) == 0
            && slot.head_started.load(Relaxed) == 0
        {
            slot.head_started.store(slot.now(), Relaxed);
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, b)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

/// The open connections, for the connection limit.
struct Registry {
    epoch: Instant,
    next_id: AtomicU64,
    slots: Mutex<HashMap<u64, Arc<Slot>>>,
}

impl Registry {
    fn open(&self) -> (u64, Arc<Slot>, usize) {
        let slot = Arc::new(Slot {
            epoch: self.epoch,
            active: AtomicU32::new(0),
            idle_since: AtomicU64::new(0),
            head_started: AtomicU64::new(0),
            evicted: AtomicBool::new(false),
            evict: Notify::new(),
        });
        let now = slot.now();
        slot.idle_since.store(now, Relaxed);
        // the first request's head is timed from the connection's start
        slot.head_started.store(now, Relaxed);
        let id = self.next_id.fetch_add(1, Relaxed);
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.insert(id, slot.clone());
        (id, slot, slots.len())
    }

    fn close(&self, id: u64) {
        self.slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }

    /// Tells the connection idle the longest (busy the longest when none is idle) to
    /// close, but never `except`.
    fn evict_one(&self, except: u64) {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let victim = slots
            .iter()
            .filter(|(id, s)| **id != except && !s.evicted.load(Relaxed))
            .min_by_key(|(_, s)| (s.active.load(Relaxed) > 0, s.idle_since.load(Relaxed)));
        if let Some((_, s)) = victim {
            s.evicted.store(true, Relaxed);
            s.evict.notify_one();
        }
    }
}

/// Refuses a transfer coding other than `chunked` (hyper decodes only that one, and
/// would pass the rest on as the body), as RFC 9112 §6.1 says: 501.
fn refuse_transfer_coding(req: &Request<Incoming>) -> Option<axum::response::Response> {
    let te = req.headers().get(header::TRANSFER_ENCODING)?;
    let codings = te.to_str().unwrap_or("?");
    let only_chunked = req
        .headers()
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("?").split(','))
        .all(|c| c.trim().eq_ignore_ascii_case("chunked"));
    if only_chunked {
        return None;
    }
    Some(
        ApiError(eddy_engine::EngineError::new(
            eddy_engine::ErrorCode::NotImplemented,
            format!(
                "Transfer-Encoding \"{codings}\" is not supported: send the body uncompressed, \
                 with Content-Length or Transfer-Encoding: chunked alone"
            ),
        ))
        .into_response(),
    )
}

/// Serves `app` on `listener` until `shutdown` turns true, then closes idle
/// connections, lets the others finish their requests, and returns when all are
/// closed or `grace` is over (cutting the rest).
pub async fn serve<S>(
    listener: TcpListener,
    app: S,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) where
    S: Service<Request, Response = axum::response::Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        // the watchdog times heads: hyper's timer would also cut idle keep-alives
        .header_read_timeout(None)
        .max_buf_size(limits.max_header_bytes);
    builder
        .http2()
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    let builder = Arc::new(builder);
    let registry = Arc::new(Registry {
        epoch: Instant::now(),
        next_id: AtomicU64::new(0),
        slots: Mutex::new(HashMap::new()),
    });
    let mut tasks = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            a = listener.accept() => a,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                // out of file descriptors: make room, as at the connection limit
                if matches!(e.raw_os_error(), Some(23 | 24)) {
                    tracing::warn!(error = %e, "cannot accept a connection; closing an idle one");
                    registry.evict_one(u64::MAX);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                } else {
                    tracing::debug!(error = %e, "accept failed");
                }
                continue;
            }
        };
        // responses are small and each one completes a request: send them at once
        // rather than letting Nagle's algorithm hold them for an ACK
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let (id, slot, open) = registry.open();
        if open > limits.max_connections {
            registry.evict_one(id);
        }
        let conn = connection(
            builder.clone(),
            tcp,
            slot,
            app.clone(),
            limits,
            shutdown.clone(),
        );
        let registry = registry.clone();
        tasks.spawn(async move {
            conn.await;
            registry.close(id);
        });
    }
    drop(listener);
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(grace, drain).await.is_err() {
        tracing::warn!("grace period over; closing the remaining connections");
        tasks.abort_all();
    }
}

/// Serves one connection until it closes, breaks its bounds or is evicted.
async fn connection<S>(
    builder: Arc<auto::Builder<TokioExecutor>>,
    tcp: TcpStream,
    slot: Arc<Slot>,
    app: S,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) where
    S: Service<Request, Response = axum::response::Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let io = TokioIo::new(Watched {
        tcp,
        slot: slot.clone(),
    });
    let svc_slot = slot.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let active = svc_slot.begin();
        let refused = refuse_transfer_coding(&req);
        let mut app = app.clone();
        async move {
            let resp = match refused {
                Some(r) => r,
                None => match app.call(req.map(Body::new)).await {
                    Ok(r) => r,
                    Err(never) => match never {},
                },
            };
            Ok::<_, Infallible>(resp.map(|body| Tracked {
                body,
                _active: active,
            }))
        }
    });
    let mut conn = pin!(builder.serve_connection(io, service));
    let start = slot.epoch;
    let at = |ms: u64| tokio::time::Instant::from_std(start + Duration::from_millis(ms - 1));
    let mut watchdog = pin!(tokio::time::sleep_until(at(slot
        .next_check(&limits)
        .unwrap_or_else(|| slot.now()))));
    let mut draining = *shutdown.borrow();
    if draining {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = slot.evict.notified() => {
                tracing::debug!("connection limit reached: closing the connection idle longest");
                return;
            }
            _ = watchdog.as_mut() => match slot.next_check(&limits) {
                Some(next) => watchdog.as_mut().reset(at(next)),
                None => {
                    tracing::debug!("closing a connection past its header read or idle timeout");
                    return;
                }
            },
            _ = shutdown.wait_for(|s| *s), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}
