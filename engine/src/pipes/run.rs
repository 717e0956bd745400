//! One pipe's task: follows the origin from the cursor, turns each batch of events into
//! events for the destination (copied, or mapped by the pipe's function), and writes
//! them with the new cursor in one writer transaction; a write that fails for the
//! server's sake is retried with the same events until it succeeds or the pipe stops.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use tokio::sync::watch;

use super::Progress;
use super::mapper::args_of;
use crate::Engine;
use crate::builtins;
use crate::consumers::{Follow, Start};
use crate::dispatch::{dispatched_event, origin_of};
use crate::error::{EngineError, ErrorCode};
use crate::event::{NewEvent, StoredEvent, check_size, check_type, derived_id};
use crate::order::Position;
use crate::path::{Args, StreamPath};
use crate::selector::Selector;
use crate::store::SharedEvent;
use crate::store::pipe_writes::{PipeBatch, PipeRow, PipeWrite, PipeWritten, Routed};

/// How long a pipe waits before writing a batch again after the server failed it.
const RETRY_AFTER: Duration = Duration::from_secs(1);

pub(super) struct PipeTask {
    pub engine: Arc<Engine>,
    pub progress: Arc<Mutex<Progress>>,
    pub stop: watch::Receiver<bool>,
    pub row: PipeRow,
    /// The lease the pipe runs under, where leases are kept.
    pub fence: Option<crate::store::cluster::Fence>,
}

/// One output of a pipe function (or a splice's map function, which may also set the
/// timestamp).
#[derive(Deserialize)]
pub(crate) struct MapOut {
    #[serde(rename = "type")]
    pub(crate) event_type: Option<String>,
    /// `Some(Null)` for an explicit `data: null`; `None` keeps the source data.
    #[serde(default, deserialize_with = "present")]
    pub(crate) data: Option<Value>,
    pub(crate) args: Option<Vec<Value>>,
    pub(crate) timestamp: Option<i64>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

impl PipeTask {
    pub(super) async fn run(mut self) {
        let row = self.row.clone();
        // a cron origin ticks while its pipes run
        let _ticking = self.engine.keep_ticking(&row.from);
        let selector = match Selector::parse_query(&row.selector) {
            Ok(s) => s,
            Err(e) => return self.give_up(format!("the stored selector does not parse: {e}")),
        };
        let start = Start::Position(row.cursor);
        let follow = Follow::Stream(row.from.clone());
        let mut sub = match self.engine.follow(follow, selector, true, start).await {
            Ok(s) => s,
            Err(e) => return self.give_up(e.message),
        };
        let code = super::prepared(&row);
        let log_stream = row.from.pipe_logs(&row.to);
        loop {
            let mut stop = self.stop.clone();
            let events = match sub
                .next(async move { drop(stop.wait_for(|s| *s).await) })
                .await
            {
                Ok(events) if events.is_empty() => return,
                Ok(events) => events,
                Err(e) => {
                    tracing::warn!(error = %e.message, pipe = row.id, "cannot read the origin");
                    if self.pause().await {
                        return;
                    }
                    continue;
                }
            };
            let cursor = sub.floor();
            let batch = match &code {
                None => self.copy(&events, cursor, &log_stream),
                Some(code) => match self.map(code, &events, cursor, &log_stream).await {
                    Some(b) => b,
                    None => return,
                },
            };
            let batch = self.check_types(batch).await;
            let Some(batch) = self.admit(batch).await else {
                return;
            };
            if !self.write(batch).await {
                return;
            }
        }
    }

    /// Writes a batch, again and again while the server fails it. Answers false when
    /// the pipe should stop (deleted, or stopping).
    async fn write(&mut self, batch: PipeBatch) -> bool {
        let cursor = batch.cursor;
        loop {
            let write = PipeWrite::Batch(batch.clone());
            match self.engine.store.writer.pipe(write).await {
                Ok(PipeWritten::Batch { piped, errors }) => {
                    let mut p = self.progress.lock().unwrap_or_else(|e| e.into_inner());
                    p.cursor = p.cursor.max(cursor);
                    p.piped += piped;
                    p.errors += errors;
                    return true;
                }
                Ok(_) => return true,
                Err(e) if e.code == ErrorCode::NotFound => return false,
                // the lease went to another node, which goes on from the saved cursor
                Err(e) if e.code == ErrorCode::Conflict && self.fence.is_some() => return false,
                Err(e) => {
                    tracing::warn!(error = %e.message, pipe = self.row.id, "a pipe batch failed; retrying");
                    if self.pause().await {
                        return false;
                    }
                }
            }
        }
    }

    /// Waits before a retry; answers true when the pipe is stopping instead.
    async fn pause(&self) -> bool {
        let mut stop = self.stop.clone();
        tokio::select! {
            _ = tokio::time::sleep(RETRY_AFTER) => *self.stop.borrow(),
            _ = stop.wait_for(|s| *s) => true,
        }
    }

    fn give_up(&self, why: String) {
        tracing::error!(pipe = self.row.id, error = %why, "the pipe stopped");
        self.progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .stopped = Some(why);
    }

    fn batch(
        &self,
        events: &[Arc<SharedEvent>],
        cursor: Position,
        log_stream: &StreamPath,
    ) -> PipeBatch {
        PipeBatch {
            pipe_id: self.row.id,
            cursor,
            first_source: events.first().map(|e| e.position),
            outs: Vec::new(),
            logs: Vec::new(),
            log_stream: log_stream.clone(),
            errors: 0,
            fence: self.fence.clone(),
        }
    }

    /// Refuses the outputs that fail their type's schema in the destination (API §6),
    /// like any other refused output: counted in `errors` and logged.
    async fn check_types(&self, mut batch: PipeBatch) -> PipeBatch {
        let controls = match self.engine.controls(&self.row.to).await {
            Ok(c) if c.has_types() => c,
            _ => return batch,
        };
        let outs = std::mem::take(&mut batch.outs);
        for out in outs {
            let e = &out.event;
            match controls.validate(&e.event_type, &e.content_type, &e.data) {
                Ok(()) => batch.outs.push(out),
                Err(err) => {
                    batch.errors += 1;
                    batch.logs.push(crate::store::pipe_writes::refusal_log(
                        &err,
                        e.origin.as_deref(),
                    ));
                }
            }
        }
        batch
    }

    /// Into another account's stream, the pipe appends as that account's settings let
    /// it now, not only when it was made: outputs are refused (counted and logged)
    /// once they no longer let the pipe's account append or its blocklist refuses
    /// their args, and wait for the stream's rate limit, as an NDJSON upload does,
    /// rather than exceed it. Answers `None` when the pipe is stopping meanwhile.
    async fn admit(&self, mut batch: PipeBatch) -> Option<PipeBatch> {
        let to = &self.row.to;
        let Some(owner) = super::owner(&self.row.from) else {
            return Some(batch);
        };
        if owner == to.account || batch.outs.is_empty() {
            return Some(batch);
        }
        // the destination's controls, or nothing written until they are read
        let controls = loop {
            match self.engine.controls(to).await {
                Ok(c) => break c,
                Err(e) => {
                    tracing::warn!(error = %e.message, pipe = self.row.id, "cannot read the destination's controls");
                    if self.pause().await {
                        return None;
                    }
                }
            }
        };
        let outs = std::mem::take(&mut batch.outs);
        let allowed = !self.engine.access_enabled()
            || crate::access::account_may_append(owner.as_str(), to, &controls.settings);
        for out in outs {
            let into_to = out.stream.account == to.account && out.stream.stream == to.stream;
            if !into_to {
                batch.outs.push(out);
                continue;
            }
            let mut path = out.stream.clone();
            if path.args.is_none() {
                path.args = (out.explicit_args.clone()).or_else(|| out.default_args.clone());
            }
            let refused = if allowed {
                controls.check_blocklist(&path, None).err()
            } else {
                Some(EngineError::new(
                    ErrorCode::Forbidden,
                    format!(
                        "the pipe may no longer append to /{to}: its settings (public, \
                         accountSubstreams) do not let account {owner} append there"
                    ),
                ))
            };
            if let Some(refused) = refused {
                batch.errors += 1;
                batch.logs.push(crate::store::pipe_writes::refusal_log(
                    &refused,
                    out.event.origin.as_deref(),
                ));
                continue;
            }
            let mut stop = self.stop.clone();
            tokio::select! {
                _ = controls.until_ready(&path) => {}
                _ = stop.wait_for(|s| *s) => return None,
            }
            batch.outs.push(out);
        }
        Some(batch)
    }

    /// A copy pipe's batch: each event unchanged, with its origin.
    fn copy(&self, events: &[Arc<SharedEvent>], cursor: Position, logs: &StreamPath) -> PipeBatch {
        let mut batch = self.batch(events, cursor, logs);
        for e in events {
            match copied(&self.row, e) {
                Ok(routed) => batch.outs.push(routed),
                Err(message) => {
                    batch.errors += 1;
                    batch.logs.push(log_entry("error", e, &message));
                }
            }
        }
        batch
    }

    /// A mapping pipe's batch. Answers `None` when the pipe thread has stopped.
    async fn map(
        &self,
        code: &Arc<eddy_runtime_js::Prepared>,
        events: &[Arc<SharedEvent>],
        cursor: Position,
        logs: &StreamPath,
    ) -> Option<PipeBatch> {
        let answer = self
            .engine
            .pipes
            .mappers
            .map(self.row.id, code.clone(), events.to_vec())
            .await
            .ok()?;
        let mut batch = self.batch(events, cursor, logs);
        // each event's console lines, logged before its own error: log entries go in
        // event order whatever the batch
        let mut console: Vec<Vec<NewEvent>> = vec![Vec::new(); events.len()];
        for line in answer.console {
            if let Some(k) = line.sid.map(|k| k as usize).filter(|k| *k < events.len()) {
                console[k].push(log_entry(&line.level, &events[k], &line.message));
            }
        }
        for ((e, result), lines) in events.iter().zip(answer.mapped).zip(console) {
            batch.logs.extend(lines);
            let outs = match result {
                Ok(json) => serde_json::from_str::<Vec<MapOut>>(&json).map_err(|err| {
                    (
                        format!("the pipe function's result is not valid: {err}"),
                        None,
                    )
                }),
                Err(err) => Err((err.message, err.stack)),
            };
            let outs = match outs {
                Ok(outs) => outs,
                Err((message, stack)) => {
                    batch.errors += 1;
                    batch
                        .logs
                        .push(log_entry_with_stack("error", e, &message, stack.as_deref()));
                    continue;
                }
            };
            for (k, out) in outs.into_iter().enumerate() {
                match mapped(&self.row, e, k, out) {
                    Ok(routed) => batch.outs.push(routed),
                    Err(message) => {
                        batch.errors += 1;
                        batch.logs.push(log_entry("error", e, &message));
                    }
                }
            }
        }
        for d in answer.dispatches {
            let Some(e) = events.get(d.sid as usize) else {
                continue;
            };
            let scope = format!("pipe:{}>{}", self.row.from, self.row.to);
            match dispatched_event(
                &self.row.from.account,
                &scope,
                (&e.stream, crate::dispatch::hops(e.origin.as_deref())),
                e.index,
                e.timestamp,
                &d,
            ) {
                Ok(routed) => batch.outs.push(routed),
                Err(err) => {
                    batch.errors += 1;
                    batch.logs.push(log_entry("error", e, &err.message));
                }
            }
        }
        Some(batch)
    }
}

/// A copy pipe's output for `e`: the event unchanged, with its origin; refused (with
/// why) when `e` is at the end of the longest chain an event may come through.
pub(crate) fn copied(row: &PipeRow, e: &StoredEvent) -> std::result::Result<Routed, String> {
    let origin = origin_of(e).map_err(|err| err.message)?;
    Ok(Routed {
        stream: row.to.clone(),
        explicit_args: None,
        default_args: default_args(row, e),
        event: NewEvent {
            id: Some(piped_id(row, e, 0)),
            event_type: e.event_type.clone(),
            content_type: e.content_type.clone(),
            data: e.data.clone(),
            timestamp: None,
            metadata: e.metadata.clone(),
            origin: Some(origin),
        },
    })
}

/// The `k`-th output of pipe `row`'s function for `e`.
pub(crate) fn mapped(
    row: &PipeRow,
    e: &StoredEvent,
    k: usize,
    out: MapOut,
) -> std::result::Result<Routed, String> {
    // a type the function gives is checked; the event's own, stored, stays as it is
    if let Some(t) = &out.event_type {
        check_type(t).map_err(|err| err.message)?;
    }
    let event_type = out.event_type.unwrap_or_else(|| e.event_type.clone());
    let (content_type, data) = match out.data {
        None => (e.content_type.clone(), e.data.clone()),
        Some(v) => ("application/json".to_owned(), v.to_string().into()),
    };
    check_size(data.len()).map_err(|err| err.message)?;
    let origin = origin_of(e).map_err(|err| err.message)?;
    let explicit_args = match out.args {
        None => None,
        Some(values) => Some(Args::from_json(&values)?),
    };
    Ok(Routed {
        stream: row.to.clone(),
        explicit_args,
        default_args: default_args(row, e),
        event: NewEvent {
            id: Some(piped_id(row, e, k)),
            event_type,
            content_type,
            data,
            timestamp: None,
            metadata: None,
            origin: Some(origin),
        },
    })
}

/// Into a factory, an event goes to the substream of its source's args unless the
/// pipe function names others. The args of a builtin stream (a cron expression, an
/// account) name no substream of the destination and are not carried over.
fn default_args(row: &PipeRow, e: &StoredEvent) -> Option<Args> {
    if row.from.account.as_str() == builtins::ACCOUNT {
        return None;
    }
    args_of(&e.stream)
}

/// The id of the `k`-th event piped from `e`: the same on every run of the pipe.
pub(crate) fn piped_id(row: &PipeRow, e: &StoredEvent, k: usize) -> uuid::Uuid {
    derived_id(
        e.timestamp,
        &[
            b"pipe",
            e.stream.as_bytes(),
            &e.index.get().to_le_bytes(),
            row.to.to_string().as_bytes(),
            &(k as u64).to_le_bytes(),
        ],
    )
}

/// A pipe log entry about event `e`.
fn log_entry(level: &str, e: &StoredEvent, message: &str) -> NewEvent {
    log_entry_with_stack(level, e, message, None)
}

/// A pipe log entry about event `e`, with the JavaScript stack in `stack` (as reducer
/// entries have it) when the error carried one.
pub(crate) fn log_entry_with_stack(
    level: &str,
    e: &StoredEvent,
    message: &str,
    stack: Option<&str>,
) -> NewEvent {
    let mut data = serde_json::json!({
        "stream": e.stream,
        "index": e.index,
        "message": message,
    });
    if let Some(stack) = stack {
        data["stack"] = serde_json::Value::String(stack.to_owned());
    }
    NewEvent {
        id: None,
        event_type: level.to_owned(),
        content_type: "application/json".into(),
        data: data.to_string().into(),
        timestamp: None,
        metadata: None,
        origin: None,
    }
}
