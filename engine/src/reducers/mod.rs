//! Reducers (API §7): deploying code, reading states, status, and the worker thread
//! that folds (`worker`). The engine talks to the worker over a channel; state reads
//! go through it too, since live states are ahead of the saved ones.

mod answers;
mod checkpoint;
/// Event data as reducers see it (see `crate::content`).
pub(crate) mod data {
    pub(crate) use crate::content::for_reducer;
}
mod events;
mod oversize;
mod request;
mod worker;

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eddy_runtime_js::{Language, Limits, prepare};
use rusqlite::{Connection, params};
use tokio::sync::{oneshot, watch};

use crate::error::{EngineError, Result};
use crate::path::{AccountName, ReducerName, StreamName, StreamPath};
use crate::selector::Selector;
use crate::store::reducer_writes::{ReducerRow, ReducerWrite, ReducerWritten};
use crate::store::writer::WriterHandle;
pub(crate) use data::for_reducer;
use worker::Msg;
pub(crate) use worker::open_read_connection;

/// A reducer's state for one (sub)stream.
#[derive(Debug, Clone)]
pub struct StateAnswer {
    /// JSON, `None` while the state is undefined.
    pub json: Option<String>,
    /// The last index folded (every event up to it was seen), -1 before the first.
    pub index: i64,
}

/// One substream's state in a factory listing.
#[derive(Debug, Clone)]
pub struct SubstreamState {
    pub sid: i64,
    /// Canonical args.
    pub args: String,
    pub index: i64,
    pub json: Option<String>,
}

/// What `/{acct}/{strm}/reducers` shows for one reducer version.
#[derive(Debug, Clone)]
pub struct ReducerStatus {
    pub name: String,
    /// A redeployed version rebuilding from the start; the older version answers
    /// reads until it catches up.
    pub building: bool,
    pub code_hash: String,
    pub position: i64,
    /// On a plain stream, the last index folded (-1 before the first).
    pub index: Option<i64>,
    /// Events of the stream not yet folded.
    pub lag: i64,
    pub errors: i64,
    pub halted: Option<String>,
    pub selector: String,
    pub halt_on_error: bool,
    pub live_states: usize,
}

/// A deploy: code for reducer `name` of a stream.
pub struct DeployRequest {
    pub stream: StreamPath,
    pub name: ReducerName,
    pub source: String,
    pub language: Language,
    pub selector: Selector,
    pub halt_on_error: bool,
}

/// What a deploy stored.
#[derive(Debug, Clone)]
pub struct Deployed {
    pub code_hash: String,
    /// An older version keeps answering until this one has folded the whole stream.
    pub building: bool,
}

/// The longest a reducer's `request()` may take (the reducer waits for it).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The engine's handle on the reducer worker.
pub(crate) struct Reducers {
    tx: std::sync::mpsc::Sender<Msg>,
    progress: watch::Receiver<u64>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Reducers {
    pub(crate) fn start(
        db: &std::path::Path,
        writer: WriterHandle,
        durable: Arc<std::sync::atomic::AtomicI64>,
        commits: tokio::sync::broadcast::Receiver<Arc<crate::store::Committed>>,
        limits: Limits,
        controls: Arc<crate::access::controls::Controls>,
    ) -> Result<Self> {
        let conn = worker::open_read_connection(db)?;
        let http = (
            crate::consumers::webhooks::client::client(REQUEST_TIMEOUT, true)?,
            tokio::runtime::Handle::current(),
        );
        let (tx, rx) = std::sync::mpsc::channel();
        let (progress_tx, progress) = watch::channel(0);
        let loaded = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let watching = loaded.clone();
        // the worker's sandboxes are not Send: it is built on its own thread
        let start = move || worker::Worker {
            conn,
            writer,
            durable,
            limits,
            controls,
            max_live: 10_000,
            progress: progress_tx,
            groups: Default::default(),
            loaded,
            turn: 0,
            http,
        };
        let thread = std::thread::Builder::new()
            .name("eddy-reducers".into())
            // QuickJS may use JS_STACK_BYTES of it, and Rust needs its own share
            .stack_size(eddy_runtime_js::JS_STACK_BYTES + 8 * 1024 * 1024)
            .spawn(move || start().run(rx))
            .map_err(|e| EngineError::internal(format!("cannot start the reducer thread: {e}")))?;
        // wake the worker on every commit while it has reducers (a deploy wakes it
        // itself): a thread wake-up per commit is a measurable share of ingest
        let wake = tx.clone();
        let mut commits = commits;
        tokio::spawn(async move {
            loop {
                match commits.recv().await {
                    Ok(_) => {
                        if watching.load(std::sync::atomic::Ordering::Acquire)
                            && wake.send(Msg::Wake).is_err()
                        {
                            return;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(Self {
            tx,
            progress,
            thread: Mutex::new(Some(thread)),
        })
    }

    async fn ask<T>(&self, msg: impl FnOnce(oneshot::Sender<T>) -> Msg) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(msg(tx)).map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())
    }

    pub(crate) async fn shutdown(&self) {
        let _ = self.ask(Msg::Shutdown).await;
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

fn stopped() -> EngineError {
    EngineError::new(
        crate::error::ErrorCode::Unavailable,
        "the reducer worker has stopped",
    )
}

impl crate::Engine {
    /// Deploys reducer code: parses it (syntax errors name line and column), checks
    /// that it loads, refuses dependency cycles, stores it and starts folding.
    pub async fn deploy_reducer(&self, req: DeployRequest) -> Result<Deployed> {
        let source = req.source.clone();
        let language = req.language;
        let prepared = tokio::task::spawn_blocking(move || prepare(&source, language))
            .await
            .map_err(|e| EngineError::internal(e.to_string()))?
            .map_err(|e| {
                EngineError::invalid(format!("the reducer code has a syntax error: {e}"))
                    .with("line", e.line)
                    .with("column", e.column)
            })?;
        let check = prepared.clone();
        self.reducers
            .ask(|tx| Msg::Check(check, tx))
            .await?
            .map_err(|e| {
                EngineError::invalid(format!("the reducer code does not load: {}", e.message))
            })?;
        self.refuse_cycles(&req.stream, req.name.as_str(), &prepared.reads)
            .await?;
        let mut hasher = DefaultHasher::new();
        req.source.hash(&mut hasher);
        let code_hash = format!("{:016x}", hasher.finish());
        let row = ReducerRow {
            id: 0,
            stream_id: 0,
            factory: false,
            name: req.name.as_str().to_owned(),
            building: false,
            source: req.source,
            content_type: match req.language {
                Language::JavaScript => "application/javascript".into(),
                Language::TypeScript => "application/typescript".into(),
            },
            code: prepared.js,
            module: prepared.shape == eddy_runtime_js::Shape::Module,
            reads: prepared.reads,
            selector: req.selector.to_query(),
            halt_on_error: req.halt_on_error,
            code_hash: code_hash.clone(),
            position: 0,
            errors: 0,
            halted: None,
            live_from: None,
        };
        let stream = StreamPath {
            args: None,
            ..req.stream
        };
        let written = self
            .store
            .writer
            .reducer(ReducerWrite::Deploy {
                stream: stream.clone(),
                row: Box::new(row),
            })
            .await?;
        let ReducerWritten::Deployed(row, replaced) = written else {
            return Err(EngineError::internal("unexpected answer to a deploy"));
        };
        let building = row.building;
        self.reducers
            .tx
            .send(Msg::Deploy(row, stream, replaced))
            .map_err(|_| stopped())?;
        Ok(Deployed {
            code_hash,
            building,
        })
    }

    async fn refuse_cycles(&self, stream: &StreamPath, name: &str, reads: &[String]) -> Result<()> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT r.name, r.reads FROM reducers r JOIN streams s ON s.id = r.stream_id \
             WHERE s.account = ?1 AND s.name = ?2 ORDER BY r.id",
        )
        .bind(stream.account.as_str())
        .bind(stream.stream.as_str())
        .fetch_all(&self.store.pool)
        .await?;
        let mut graph: std::collections::HashMap<String, Vec<String>> = rows
            .into_iter()
            .map(|(n, r)| (n, serde_json::from_str(&r).unwrap_or_default()))
            .collect();
        graph.insert(name.to_owned(), reads.to_vec());
        // depth-first from the new reducer: a path back to it is a cycle
        let mut path = vec![name.to_owned()];
        fn walk(
            graph: &std::collections::HashMap<String, Vec<String>>,
            path: &mut Vec<String>,
            start: &str,
        ) -> Option<Vec<String>> {
            let last = path.last().cloned().unwrap_or_default();
            for next in graph.get(&last).into_iter().flatten() {
                if next == start {
                    let mut cycle = path.clone();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                if !path.contains(next) {
                    path.push(next.clone());
                    if let Some(c) = walk(graph, path, start) {
                        return Some(c);
                    }
                    path.pop();
                }
            }
            None
        }
        if let Some(cycle) = walk(&graph, &mut path, name) {
            return Err(EngineError::invalid(format!(
                "reducer {name} would make a dependency cycle through current: {}; reducers may not read each other in a circle",
                cycle.join(" reads ")
            ))
            .with("cycle", cycle));
        }
        Ok(())
    }

    /// The state of a reducer for a plain stream or one substream. With `min_index`,
    /// waits up to `wait` until that index is folded (read-your-writes).
    pub async fn reducer_state(
        &self,
        path: &StreamPath,
        name: &ReducerName,
        min_index: Option<u64>,
        wait: Duration,
    ) -> Result<StateAnswer> {
        let resolved = self.resolve_existing(path).await?;
        let stream_id = resolved.info.id;
        let deadline = Instant::now() + wait;
        let mut progress = self.reducers.progress.clone();
        loop {
            progress.borrow_and_update();
            let sid = match (&path.args, &resolved.scope) {
                (None, _) => None,
                (Some(args), _) => {
                    crate::store::read::substream_id(&self.store.pool, stream_id, &args.canonical())
                        .await?
                }
            };
            let answer = match (&path.args, sid) {
                (Some(_), None) => {
                    // the substream has no events yet; the reducer must still exist
                    self.reducers
                        .ask(|tx| Msg::State {
                            stream_id,
                            name: name.as_str().into(),
                            sid: Some(-1),
                            reply: tx,
                        })
                        .await??;
                    StateAnswer {
                        json: None,
                        index: -1,
                    }
                }
                (_, sid) => {
                    self.reducers
                        .ask(|tx| Msg::State {
                            stream_id,
                            name: name.as_str().into(),
                            sid,
                            reply: tx,
                        })
                        .await??
                }
            };
            let Some(min) = min_index else {
                return Ok(answer);
            };
            if answer.index >= min as i64 {
                return Ok(answer);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero()
                || tokio::time::timeout(left, progress.changed())
                    .await
                    .is_err()
            {
                return Ok(answer);
            }
        }
    }

    /// A factory reducer's states, one per substream, in substream creation order.
    pub async fn reducer_states(
        &self,
        path: &StreamPath,
        name: &ReducerName,
        after: i64,
        limit: usize,
    ) -> Result<Vec<SubstreamState>> {
        let resolved = self.resolve_existing(path).await?;
        let stream_id = resolved.info.id;
        self.reducers
            .ask(|tx| Msg::States {
                stream_id,
                name: name.as_str().into(),
                after,
                limit,
                reply: tx,
            })
            .await?
    }

    /// The code of the active version as deployed, with its media type.
    pub async fn reducer_source(
        &self,
        path: &StreamPath,
        name: &ReducerName,
    ) -> Result<(String, String)> {
        let row: Option<(String, String)> = sqlx::query_as(
            "SELECT r.source, r.content_type FROM reducers r JOIN streams s ON s.id = r.stream_id \
             WHERE s.account = ?1 AND s.name = ?2 AND r.name = ?3 ORDER BY r.id DESC LIMIT 1",
        )
        .bind(path.account.as_str())
        .bind(path.stream.as_str())
        .bind(name.as_str())
        .fetch_optional(&self.store.pool)
        .await?;
        row.ok_or_else(|| missing_reducer(path, name))
    }

    /// Every reducer version of a stream with its progress.
    pub async fn reducer_status(&self, path: &StreamPath) -> Result<Vec<ReducerStatus>> {
        let resolved = self.resolve_existing(path).await?;
        let stream_id = resolved.info.id;
        self.reducers
            .ask(|tx| Msg::Status {
                stream_id,
                reply: tx,
            })
            .await
    }

    /// Deletes a reducer with all its versions and states.
    pub async fn delete_reducer(&self, path: &StreamPath, name: &ReducerName) -> Result<()> {
        let resolved = self.resolve_existing(path).await?;
        let stream_id = resolved.info.id;
        let written = self
            .store
            .writer
            .reducer(ReducerWrite::Delete {
                stream_id,
                name: name.as_str().into(),
            })
            .await?;
        match written {
            ReducerWritten::Deleted(ids) if !ids.is_empty() => {
                self.reducers
                    .tx
                    .send(Msg::Delete { stream_id, ids })
                    .map_err(|_| stopped())?;
                Ok(())
            }
            _ => Err(missing_reducer(path, name)),
        }
    }
}

fn missing_reducer(path: &StreamPath, name: &ReducerName) -> EngineError {
    EngineError::not_found(format!("reducer {name} of {path} does not exist"))
}

/// Every stored reducer version with its stream's path, for the worker at start.
pub(crate) fn load_rows(
    conn: &Connection,
    stream_id: Option<i64>,
) -> Result<Vec<(ReducerRow, StreamPath)>> {
    let mut stmt = conn.prepare(
        "SELECT r.id, r.stream_id, s.factory, r.name, r.status, r.source, r.content_type, r.code, r.shape, \
         r.reads, r.selector, r.on_error, r.code_hash, r.position, r.errors, r.halted, s.account, s.name \
         FROM reducers r JOIN streams s ON s.id = r.stream_id WHERE ?1 IS NULL OR r.stream_id = ?1 ORDER BY r.id",
    )?;
    let rows = stmt.query_map(params![stream_id], |q| {
        let reads: String = q.get(9)?;
        let row = ReducerRow {
            id: q.get(0)?,
            stream_id: q.get(1)?,
            factory: q.get(2)?,
            name: q.get(3)?,
            building: q.get::<_, String>(4)? == "building",
            source: q.get(5)?,
            content_type: q.get(6)?,
            code: q.get(7)?,
            module: q.get::<_, String>(8)? == "module",
            reads: serde_json::from_str(&reads).unwrap_or_default(),
            selector: q.get(10)?,
            halt_on_error: q.get::<_, String>(11)? == "halt",
            code_hash: q.get(12)?,
            position: q.get(13)?,
            errors: q.get(14)?,
            halted: q.get(15)?,
            live_from: None,
        };
        Ok((row, q.get::<_, String>(16)?, q.get::<_, String>(17)?))
    })?;
    let mut out = Vec::new();
    for r in rows {
        let (row, account, stream) = r?;
        let (Ok(account), Ok(stream)) = (AccountName::new(&account), StreamName::new(&stream))
        else {
            continue;
        };
        out.push((
            row,
            StreamPath {
                account,
                stream,
                args: None,
            },
        ));
    }
    Ok(out)
}
