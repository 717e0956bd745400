//! Streaming ingest: `application/x-ndjson`, one JSON event data per line. Lines are
//! appended as they arrive (each chunk of complete lines is one durable write), so a
//! producer can pipe a long-running process into one request. Not atomic: a bad line
//! stops the request with a 400 naming it, and the lines before it stay. A stream
//! with a rate limit paces the lines to it instead of refusing them. Byte uploads
//! (`chunks.rs`) share the same [`Ingest`].

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use eddy_engine::access::admit::AppendPolicy;
use eddy_engine::event::{ContentType, ExpectedIndex, MAX_EVENT_DATA, NewEvent};
use eddy_engine::order::Index;
use eddy_engine::path::StreamPath;
use eddy_engine::{EngineError, ErrorCode};
use serde_json::json;

use super::append::{AppendInputs, append};
use crate::AppState;
use crate::body::Piece;
use crate::error::{ApiError, ApiResult};

/// What the request has written so far.
#[derive(Default)]
struct Written {
    first: Option<Index>,
    last: Index,
    count: u64,
}

pub(super) struct Ingest<'a> {
    state: &'a AppState,
    path: StreamPath,
    policy: AppendPolicy<'a>,
    /// Every line is JSON.
    content_type: ContentType,
    event_type: String,
    timestamp: Option<i64>,
    /// The request's inputs; its expected index holds for the first write only.
    inputs: AppendInputs,
    pending: Vec<NewEvent>,
    written: Written,
}

impl<'a> Ingest<'a> {
    pub(super) fn new(
        state: &'a AppState,
        path: StreamPath,
        policy: AppendPolicy<'a>,
        inputs: AppendInputs,
        content_type: ContentType,
        event_type: String,
    ) -> Self {
        Self {
            state,
            path,
            policy,
            content_type,
            event_type,
            timestamp: inputs.timestamp,
            inputs,
            pending: Vec::new(),
            written: Written::default(),
        }
    }

    /// The answer once the body ended: 201 with what was written, or 200 when nothing
    /// was.
    pub(super) fn answer(&self) -> Response {
        match self.written.first {
            Some(first) => {
                let w = &self.written;
                let body = json!({"first": first, "last": w.last, "count": w.count});
                super::append::created(&self.path, first, body)
            }
            None => (StatusCode::OK, axum::Json(json!({"count": 0}))).into_response(),
        }
    }

    fn line(&mut self, line_no: u64, line: &[u8]) -> Result<(), EngineError> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        self.push(Bytes::copy_from_slice(line), "line", line_no)
    }

    /// Checks one event's data and queues it; errors name it as `what` number `n`.
    pub(super) fn push(
        &mut self,
        data: Bytes,
        what: &'static str,
        n: u64,
    ) -> Result<(), EngineError> {
        let event = NewEvent {
            id: None,
            event_type: self.event_type.clone(),
            content_type: self.content_type.value.clone(),
            data,
            timestamp: self.timestamp,
            metadata: None,
            origin: self.inputs.origin.clone(),
        };
        self.policy
            .check(&event)
            .map_err(|e| e.context(format_args!("{what} {n}")).with(what, n))?;
        self.pending.push(event);
        Ok(())
    }

    /// Makes the pending events durable.
    pub(super) async fn flush(&mut self) -> ApiResult<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        // a rate-limited stream paces the lines rather than failing half-way
        for _ in 0..self.pending.len() {
            self.policy.until_ready(&self.path).await;
        }
        let events = std::mem::take(&mut self.pending);
        let appended = append(self.state, &self.path, events, &self.inputs).await?;
        self.inputs.expected = ExpectedIndex::Any;
        let w = &mut self.written;
        w.first.get_or_insert(appended.events[0].index);
        w.last = appended.events.last().map_or(w.last, |e| e.index);
        w.count += appended.events.len() as u64;
        Ok(())
    }

    /// Stores the lines before the failure, then answers the failure with what was
    /// written.
    pub(super) async fn stop(&mut self, e: impl Into<ApiError>) -> ApiError {
        match self.flush().await {
            Ok(()) => self.fail(e),
            Err(flush_error) => self.fail(flush_error),
        }
    }

    /// Adds what was written to an error body.
    pub(super) fn fail(&self, e: impl Into<ApiError>) -> ApiError {
        let mut e: ApiError = e.into();
        e.0.details
            .insert("count".into(), self.written.count.into());
        if let Some(first) = self.written.first {
            e.0.details.insert("first".into(), first.into());
            e.0.details.insert("last".into(), self.written.last.into());
        }
        e
    }
}

pub async fn ingest<'a>(
    state: &'a AppState,
    path: StreamPath,
    policy: AppendPolicy<'a>,
    inputs: AppendInputs,
    body: Body,
) -> ApiResult<Response> {
    if inputs.id.is_some() {
        return Err(ApiError::invalid(
            "Event-Id names one event; an NDJSON stream gets server-generated ids",
        ));
    }
    let event_type = inputs.required_type()?;
    let mut ing = Ingest::new(state, path, policy, inputs, ContentType::json(), event_type);
    let mut body = crate::body::Pieces::new(state, body);
    let mut buf: Vec<u8> = Vec::new();
    let mut line_no = 0u64;
    let mut ended = false;
    while !ended {
        match body.next(state).await {
            Piece::End => ended = true,
            Piece::Data(bytes) => buf.extend_from_slice(&bytes),
            Piece::Stalled(t) => {
                let stalled = format!(
                    "the NDJSON body sent nothing for {} ms (--body-read-timeout-ms); \
                     the lines received before are stored",
                    t.as_millis()
                );
                return Err(ing.stop(crate::body::timed_out(t, stalled)).await);
            }
            Piece::ShuttingDown => {
                return Err(ing
                    .stop(EngineError::new(
                        ErrorCode::Unavailable,
                        "the server is shutting down; the lines received so far are stored",
                    ))
                    .await);
            }
            Piece::Broken(e) => {
                return Err(ing
                    .stop(ApiError::invalid(format!(
                        "the request body broke off after line {line_no}: {e}"
                    )))
                    .await);
            }
        }
        let mut start = 0;
        while let Some(nl) = buf[start..].iter().position(|b| *b == b'\n') {
            line_no += 1;
            if let Err(e) = ing.line(line_no, &buf[start..start + nl]) {
                return Err(ing.stop(e).await);
            }
            start += nl + 1;
        }
        buf.drain(..start);
        if ended && !buf.is_empty() {
            line_no += 1;
            let rest = std::mem::take(&mut buf);
            if let Err(e) = ing.line(line_no, &rest) {
                return Err(ing.stop(e).await);
            }
        }
        if buf.len() > MAX_EVENT_DATA + 1 {
            let too_long = EngineError::too_large(format!(
                "line {} is longer than {MAX_EVENT_DATA} bytes, the limit per event",
                line_no + 1
            ))
            .with("line", line_no + 1);
            return Err(ing.stop(too_long).await);
        }
        ing.flush().await.map_err(|e| ing.fail(e))?;
    }
    Ok(ing.answer())
}
