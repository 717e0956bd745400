//! Pipes (API §8): `PUT /{acct}/{strm}/pipe/{acct2}/{strm2}` copies the origin's events
//! that match a selector into the destination, or maps each through a JavaScript
//! function to zero, one or many events.
//!
//! Each pipe runs as one task (`run`) that follows its origin with a
//! [`Subscription`](crate::consumers::Subscription) from its cursor and hands each batch
//! to the writer: the appended events and the new cursor commit in one transaction, so
//! an event is piped exactly once across crashes. Piped events get ids derived from
//! their source event and destination, so a pipe that is replaced, or deleted and put
//! again, finds what it already wrote instead of writing it twice. Mapping functions
//! run on one thread of their own (`mapper`). A pipe that would close a cycle of pipes
//! is refused when it is put.

pub(crate) mod mapper;
mod replay;
pub(crate) mod run;

pub use replay::Replayed;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use eddy_runtime_js::{Language, Prepared, Shape, prepare};
use serde::Serialize;
use tokio::sync::watch;

use crate::Engine;
use crate::builtins::{self, Builtin};
use crate::error::{EngineError, Result};
use crate::path::StreamPath;
use crate::selector::Selector;
use crate::store::pipe_reads;
use crate::store::pipe_writes::{PipeRow, PipeWrite, PipeWritten, missing};
pub(crate) use mapper::Mappers;

/// A pipe to create or replace.
pub struct PipeRequest {
    pub from: StreamPath,
    pub to: StreamPath,
    pub selector: Selector,
    /// The mapping function and its language; `None` copies events unchanged.
    pub code: Option<(String, Language)>,
    /// `?replay-from=`: re-run the (new) code over the origin's events from this
    /// index (API §14).
    pub replay_from: Option<u64>,
}

/// What `GET /{acct}/{strm}/pipe/{acct2}/{strm2}` shows.
#[derive(Debug, Clone, Serialize)]
pub struct PipeStatus {
    pub origin: String,
    pub destination: String,
    pub selector: String,
    /// `copy`, or `map` for a pipe with code.
    pub mode: &'static str,
    /// `running`, or `stopped` when the origin cannot be followed (see `lastError`).
    pub status: &'static str,
    /// Every event of the origin at or below this global position was piped or passed
    /// over.
    pub cursor: crate::order::Position,
    /// Events appended to the destination (and by `dispatch()`).
    pub piped: i64,
    /// Events that failed to map or that a destination refused (see the pipe's log).
    pub errors: i64,
    #[serde(rename = "lastError", skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(rename = "createdAt")]
    pub created_at: i64,
    /// What a `?replay-from=` did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replayed: Option<Replayed>,
}

/// What a running pipe task reports. A std Mutex: never held across `.await`.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    pub cursor: crate::order::Position,
    pub piped: i64,
    pub errors: i64,
    pub stopped: Option<String>,
}

struct Running {
    stop: watch::Sender<bool>,
    progress: Arc<Mutex<Progress>>,
    task: tokio::task::JoinHandle<()>,
}

/// The pipe tasks of the engine, by pipe id.
pub(crate) struct Pipes {
    running: Mutex<HashMap<i64, Running>>,
    pub(crate) mappers: Mappers,
}

impl Pipes {
    pub(crate) fn new(limits: eddy_runtime_js::Limits) -> Result<Self> {
        Ok(Self {
            running: Mutex::default(),
            mappers: Mappers::start(limits)?,
        })
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Running>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops one task and waits until its last batch is written.
    pub(crate) async fn stop(&self, id: i64) {
        let running = self.running().remove(&id);
        if let Some(r) = running {
            let _ = r.stop.send(true);
            let _ = r.task.await;
        }
    }

    /// Stops every task (at shutdown, before the writer stops).
    pub(crate) async fn stop_all(&self) {
        let all: Vec<Running> = self.running().drain().map(|(_, r)| r).collect();
        for r in &all {
            let _ = r.stop.send(true);
        }
        for r in all {
            let _ = r.task.await;
        }
        self.mappers.stop();
    }
}

impl Engine {
    /// Starts the task of every stored pipe (where leases are kept, the lease keeper
    /// starts each on the node that takes its lease instead).
    pub(crate) async fn start_pipes(self: &Arc<Self>) -> Result<()> {
        if self.cluster.is_some() {
            return Ok(());
        }
        let source = crate::store::fold_source::FoldSource::open(&self.store).await?;
        let rows = tokio::task::spawn_blocking(move || source.pipes())
            .await
            .map_err(|e| EngineError::internal(e.to_string()))??;
        for row in rows {
            self.start_pipe(row, None);
        }
        Ok(())
    }

    /// Starts pipe `id` as stored, under the lease `fence`; answers false when it no
    /// longer exists.
    pub(crate) async fn run_pipe(
        self: &Arc<Self>,
        id: i64,
        fence: Option<crate::store::cluster::Fence>,
    ) -> Result<bool> {
        self.pipes.stop(id).await;
        match pipe_reads::one(&self.store.reads, id).await? {
            Some(row) => {
                self.start_pipe(row, fence);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn start_pipe(self: &Arc<Self>, row: PipeRow, fence: Option<crate::store::cluster::Fence>) {
        let (stop_tx, stop) = watch::channel(false);
        let progress = Arc::new(Mutex::new(Progress {
            cursor: row.cursor,
            piped: row.piped,
            errors: row.errors,
            stopped: None,
        }));
        let id = row.id;
        let task = tokio::spawn(
            run::PipeTask {
                engine: self.clone(),
                progress: progress.clone(),
                stop,
                row,
                fence,
            }
            .run(),
        );
        self.pipes.running().insert(
            id,
            Running {
                stop: stop_tx,
                progress,
                task,
            },
        );
    }

    /// Creates the pipe, or replaces the code and selector of the existing one (which
    /// keeps its cursor). Answers its status and whether it is new. It runs to its end
    /// whether or not the client waits, so that a pipe stopped for the change (and its
    /// replay) is always started again.
    pub async fn put_pipe(self: &Arc<Self>, req: PipeRequest) -> Result<(PipeStatus, bool)> {
        let engine = self.clone();
        tokio::spawn(async move { engine.put_pipe_here(req).await })
            .await
            .map_err(|e| EngineError::internal(format!("the pipe's change failed: {e}")))?
    }

    async fn put_pipe_here(self: &Arc<Self>, req: PipeRequest) -> Result<(PipeStatus, bool)> {
        let from = self.pipe_origin(&req.from)?;
        let to = req.to;
        if to.account.as_str() == builtins::ACCOUNT {
            return Err(EngineError::invalid(format!(
                "the pipe's destination /{to} is a builtin stream, which only the server writes"
            ))
            .with("field", "destination"));
        }
        if to.account.is_reserved() {
            return Err(EngineError::invalid(format!(
                "the pipe's destination account \"{}\" is reserved for the server",
                to.account
            ))
            .with("field", "destination"));
        }
        if let Some(resolved) = self.resolve(&from).await?
            && !req.selector.subs.is_empty()
            && !(resolved.info.factory && from.args.is_none())
        {
            return Err(EngineError::invalid(format!(
                "selector sub= picks substreams of a factory, and {from} is not a factory URL"
            ))
            .with("field", "sub"));
        }
        let (source, content_type, prepared) = match req.code {
            None => (String::new(), String::new(), None),
            Some((source, language)) => {
                let text = source.clone();
                let prepared = tokio::task::spawn_blocking(move || prepare(&text, language))
                    .await
                    .map_err(|e| EngineError::internal(e.to_string()))?
                    .map_err(|e| {
                        EngineError::invalid(format!("the pipe function has a syntax error: {e}"))
                            .with("line", e.line)
                            .with("column", e.column)
                    })?;
                self.pipes
                    .mappers
                    .check(prepared.clone())
                    .await?
                    .map_err(|e| {
                        EngineError::invalid(format!(
                            "the pipe function does not load: {}",
                            e.message
                        ))
                    })?;
                let content_type = match language {
                    Language::JavaScript => "application/javascript",
                    Language::TypeScript => "application/typescript",
                };
                (source, content_type.to_owned(), Some(prepared))
            }
        };
        // a cron stream's past ticks (shared by every account) are not piped: a new pipe
        // from it starts at the live end; any other pipe from the beginning
        let cron = from.account.as_str() == builtins::ACCOUNT && from.stream.as_str() == "cron";
        let start = match cron {
            true => self.store.last_position(),
            false => crate::order::Position::START,
        };
        let row = PipeRow {
            id: 0,
            from,
            to,
            selector: req.selector.to_query(),
            source,
            content_type,
            code: prepared.as_ref().map(|p| p.js.clone()).unwrap_or_default(),
            module: prepared.is_some_and(|p| p.shape == Shape::Module),
            cursor: start,
            piped: 0,
            errors: 0,
            created_at: 0,
        };
        let (mut row, created, replayed) = match req.replay_from {
            Some(from) => {
                let replayed = self.replay_pipe(row.clone(), from).await?;
                let stored = pipe_reads::between(&self.store.reads, &row.from, &row.to)
                    .await?
                    .ok_or_else(|| EngineError::not_found("the pipe was deleted meanwhile"))?;
                let row = PipeRow {
                    id: stored.id,
                    created_at: stored.created_at,
                    ..row
                };
                (Box::new(row), false, Some(replayed))
            }
            None => {
                let written = self
                    .store
                    .writer
                    .pipe(PipeWrite::Put(Box::new(row)))
                    .await?;
                let PipeWritten::Put(row, created) = written else {
                    return Err(EngineError::internal("unexpected answer to a pipe write"));
                };
                (row, created, None)
            }
        };
        // the old version's last batch is written before the new one reads the cursor
        self.pipes.stop(row.id).await;
        if !created {
            (row.cursor, row.piped, row.errors) =
                pipe_reads::progress(&self.store.reads, row.id).await?;
        }
        let mut status = status_of(&row, None);
        status.replayed = replayed;
        match &self.cluster {
            None => self.start_pipe(*row, None),
            Some(_) => {
                let work = crate::cluster::Work::Pipe(row.id);
                if self.cluster_fence(&work).is_some() {
                    self.restart(&work).await?;
                } else {
                    // runs here if its lease is free; else its node restarts it
                    self.claim_and_run(&work).await?;
                }
            }
        }
        Ok((status, created))
    }

    /// Starts stored pipe `id` again where it runs: here, or where leases are kept on
    /// the node that holds (or now claims) it.
    pub(crate) async fn resume_pipe(self: &Arc<Self>, id: i64) -> Result<()> {
        match &self.cluster {
            None => {
                self.run_pipe(id, None).await?;
            }
            Some(_) => {
                let work = crate::cluster::Work::Pipe(id);
                if self.cluster_fence(&work).is_some() {
                    self.restart(&work).await?;
                } else {
                    self.claim_and_run(&work).await?;
                }
            }
        }
        Ok(())
    }

    /// The pipe's status.
    pub async fn pipe(&self, from: &StreamPath, to: &StreamPath) -> Result<PipeStatus> {
        let from = self.pipe_origin(from)?;
        let found = pipe_reads::between(&self.store.reads, &from, to)
            .await?
            .ok_or_else(|| missing(&from, to))?;
        let row = PipeRow {
            id: found.id,
            from,
            to: to.clone(),
            selector: found.selector,
            source: String::new(),
            content_type: String::new(),
            code: found.code,
            module: false,
            cursor: found.cursor,
            piped: found.piped,
            errors: found.errors,
            created_at: found.created_at,
        };
        let running = self.pipes.running();
        let progress = running.get(&row.id).map(|r| &r.progress);
        Ok(status_of(&row, progress))
    }

    /// The pipes from a stream (from a factory, also those from its substreams), with
    /// their status, oldest first.
    pub async fn pipes_from(&self, from: &StreamPath) -> Result<Vec<PipeStatus>> {
        let from = self.pipe_origin(from)?;
        let rows = pipe_reads::listed(&self.store.reads, &from).await?;
        let running = self.pipes.running();
        Ok(rows
            .iter()
            .map(|row| status_of(row, running.get(&row.id).map(|r| &r.progress)))
            .collect())
    }

    /// Deletes the pipe and stops its task.
    pub async fn delete_pipe(self: &Arc<Self>, from: &StreamPath, to: &StreamPath) -> Result<()> {
        let from = self.pipe_origin(from)?;
        let written = self
            .store
            .writer
            .pipe(PipeWrite::Delete {
                from,
                to: to.clone(),
            })
            .await?;
        if let PipeWritten::Deleted(id) = written {
            self.pipes.stop(id).await;
            self.pipes.mappers.forget(id);
            // where leases are kept: finds the pipe gone and lets its lease go
            self.restart(&crate::cluster::Work::Pipe(id)).await?;
        }
        Ok(())
    }

    /// The origin as stored: a builtin stream in its canonical form (its expression
    /// checked), any other stream as given.
    pub fn pipe_origin(&self, from: &StreamPath) -> Result<StreamPath> {
        if from.account.as_str() != builtins::ACCOUNT {
            return Ok(from.clone());
        }
        Ok(match builtins::builtin(from)? {
            Builtin::Cron(s) => builtins::cron_stream(s.expr()),
            Builtin::Events(a) => builtins::account_events(&a)?,
        })
    }
}

fn status_of(row: &PipeRow, progress: Option<&Arc<Mutex<Progress>>>) -> PipeStatus {
    let mut status = PipeStatus {
        origin: row.from.to_string(),
        destination: row.to.to_string(),
        selector: row.selector.clone(),
        mode: if row.code.is_empty() { "copy" } else { "map" },
        status: "running",
        cursor: row.cursor,
        piped: row.piped,
        errors: row.errors,
        last_error: None,
        created_at: row.created_at,
        replayed: None,
    };
    if let Some(p) = progress {
        let p = p.lock().unwrap_or_else(|e| e.into_inner());
        status.cursor = status.cursor.max(p.cursor);
        status.piped = status.piped.max(p.piped);
        status.errors = status.errors.max(p.errors);
        if let Some(why) = &p.stopped {
            status.status = "stopped";
            status.last_error = Some(why.clone());
        }
    }
    status
}

/// The prepared code of a stored pipe, `None` for a copy pipe.
/// The account a pipe from `from` appends for: the origin's, or on an account's
/// events (`/eddy/events(acme)`) that account; `None` from a cron stream, which is
/// anyone's (its pipes belong to whoever may append to the destination).
pub(crate) fn owner(from: &StreamPath) -> Option<crate::path::AccountName> {
    match builtins::builtin(from) {
        Ok(builtins::Builtin::Cron(_)) => None,
        Ok(builtins::Builtin::Events(account)) => Some(account),
        Err(_) => Some(from.account.clone()),
    }
}

pub(crate) fn prepared(row: &PipeRow) -> Option<Arc<Prepared>> {
    (!row.code.is_empty()).then(|| {
        Arc::new(Prepared {
            js: row.code.clone(),
            shape: if row.module {
                Shape::Module
            } else {
                Shape::Expression
            },
            reads: Vec::new(),
        })
    })
}
