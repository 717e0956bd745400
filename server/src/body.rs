//! The one reader of whole request bodies: every handler that takes a body reads it
//! here, so a body past its limit is always the same JSON 413 and a body that does not
//! arrive in time always the same JSON 408.

use std::time::Duration;

use axum::body::{Body, HttpBody as _};
use bytes::Bytes;
use eddy_engine::{EngineError, ErrorCode};
use http_body_util::BodyExt;

use crate::AppState;
use crate::error::{ApiError, ApiResult};

/// The 413 for a body over `limit` bytes; `what` names what the body holds ("an
/// event", "a schema").
pub fn too_large(limit: usize, what: &str) -> ApiError {
    ApiError(
        EngineError::too_large(format!(
            "the body is larger than {limit} bytes, the limit for {what}"
        ))
        .with("limit", limit),
    )
}

/// The 408 for a body that did not arrive within `timeout`; `message` says how.
pub fn timed_out(timeout: Duration, message: String) -> ApiError {
    ApiError(
        EngineError::new(ErrorCode::Timeout, message).with("timeoutMs", timeout.as_millis() as u64),
    )
}

/// Reads a whole body of at most `limit` bytes within the server's body read timeout.
pub async fn read(state: &AppState, body: Body, limit: usize, what: &str) -> ApiResult<Bytes> {
    // a declared length over the limit is refused before any of it is read
    if body.size_hint().lower() > limit as u64 {
        return Err(too_large(limit, what));
    }
    let collect = http_body_util::Limited::new(body, limit).collect();
    let collected = match state.config.body_read_timeout() {
        Some(t) => tokio::time::timeout(t, collect).await.map_err(|_| {
            timed_out(
                t,
                format!(
                    "the body of {what} did not arrive within {} ms \
                         (--body-read-timeout-ms)",
                    t.as_millis()
                ),
            )
        })?,
        None => collect.await,
    };
    match collected {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large(limit, what)),
        Err(e) => Err(ApiError::invalid(format!(
            "the request body could not be read: {e}"
        ))),
    }
}

/// What the next read of a streamed body (NDJSON lines, byte chunks) brought.
pub enum Piece {
    Data(Bytes),
    /// The body ended.
    End,
    /// Nothing arrived for this long (the body read timeout bounds each pause).
    Stalled(Duration),
    ShuttingDown,
    /// The connection broke off, with the transport's reason.
    Broken(String),
}

/// A body read piece by piece as the client sends it.
pub struct Pieces {
    stream: axum::body::BodyDataStream,
    idle: Option<Duration>,
}

impl Pieces {
    pub fn new(state: &AppState, body: Body) -> Self {
        Self {
            stream: body.into_data_stream(),
            idle: state.config.body_read_timeout(),
        }
    }

    /// Waits for the next piece.
    pub async fn next(&mut self, state: &AppState) -> Piece {
        use futures::StreamExt;
        let idle = self.idle;
        let next = async {
            match idle {
                Some(t) => tokio::time::timeout(t, self.stream.next())
                    .await
                    .map_err(|_| t),
                None => Ok(self.stream.next().await),
            }
        };
        tokio::select! {
            c = next => match c {
                Ok(c) => Self::piece(c),
                Err(t) => Piece::Stalled(t),
            },
            _ = state.shutting_down() => Piece::ShuttingDown,
        }
    }

    /// The next piece if it has already arrived.
    pub fn ready(&mut self) -> Option<Piece> {
        use futures::{FutureExt, StreamExt};
        self.stream.next().now_or_never().map(Self::piece)
    }

    fn piece(c: Option<Result<Bytes, axum::Error>>) -> Piece {
        match c {
            None => Piece::End,
            Some(Ok(b)) => Piece::Data(b),
            Some(Err(e)) => Piece::Broken(e.to_string()),
        }
    }
}
