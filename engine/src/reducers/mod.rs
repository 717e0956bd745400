//! Reducers (API §7): deploying code, reading states, status, and the pool of
//! threads that fold (`pool`, `worker`, one slice in `fold`). The engine talks to the
//! threads over channels; state and status reads are answered from what the threads
//! publish (`published`) and from the saved states, never by a thread.

mod at;
mod checkpoint;
/// Event data as reducers see it (see `crate::content`).
pub(crate) mod data {
    pub(crate) use crate::content::for_reducer;
}
mod events;
mod fold;
mod oversize;
mod pool;
mod published;
mod reads;
mod request;
mod worker;

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eddy_runtime_js::{Language, Limits, prepare};
use tokio::sync::oneshot;

pub use crate::content::for_reducer;
use crate::error::{EngineError, Result};
use crate::path::{AccountName, ReducerName, StreamName, StreamPath};
use crate::selector::Selector;
use crate::store::Reads;
use crate::store::cluster::Fence;
use crate::store::fold_source::FoldSource;
use crate::store::reducer_reads;
use crate::store::reducer_writes::{ReducerRow, ReducerWrite, ReducerWritten};
pub(crate) use pool::stopped;
use pool::{JsMemory, Lane, Placement, StopAt};
use published::{Entry, Published};
pub(crate) use worker::Msg;

/// A reducer's state for one (sub)stream.
#[derive(Debug, Clone)]
pub struct StateAnswer {
    /// JSON, `None` while the state is undefined.
    pub json: Option<String>,
    /// The last index folded (every event up to it was seen), -1 before the first.
    pub index: i64,
    /// The reducer version that answered (a redeploy's rebuilt version answers with
    /// another, possibly at the same index); `None` for a state recomputed for `?at=`.
    pub version: Option<i64>,
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

/// The longest a reducer's `request()` may take (the reducer waits for it); each call
/// gets at most what is left of its event's time limit.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How the reducer threads run.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// Limits of each stream's sandbox.
    pub limits: Limits,
    /// Reducer threads (at least 1).
    pub threads: usize,
    /// JavaScript memory of all reducer sandboxes together, in bytes.
    pub memory_total: usize,
}

/// The engine's handle on the reducer threads.
pub(crate) struct Reducers {
    pub(crate) lanes: Vec<Lane>,
    pub(crate) placement: Arc<Placement>,
    pub(crate) published: Arc<Published>,
    stop: Arc<StopAt>,
    pub(crate) limits: Limits,
    /// Deploy checks running at once: each is a thread running user code for up to a
    /// time limit, so a flood of deploys queues here rather than spawning threads.
    checks: tokio::sync::Semaphore,
    /// Time-travel folds running at once (each a thread running user code).
    travels: tokio::sync::Semaphore,
    /// One `at=` answer per account at a time, before one of `travels`.
    travelling_accounts: crate::gate::AccountGates,
    /// Read connections of finished time-travel folds, for the next ones.
    at_sources: Mutex<Vec<FoldSource>>,
}

impl Reducers {
    /// Starts the threads on `store` (they read with connections of their own, write
    /// through its writer and wake on its commits) and loads every stored reducer.
    pub(crate) async fn start(
        store: &crate::store::Store,
        settings: PoolSettings,
        controls: Arc<crate::access::controls::Controls>,
        memory_gauge: prometheus_client::metrics::gauge::Gauge,
        allow_private: bool,
        leased: bool,
    ) -> Result<Self> {
        let (writer, durable) = (store.writer.clone(), store.durable());
        let threads = settings.threads.max(1);
        let agent = concat!("eddy-request/", env!("CARGO_PKG_VERSION"));
        let client = request::RequestClient {
            http: crate::outbound::client(REQUEST_TIMEOUT, allow_private, agent)?,
            allow_private,
        };
        let placement = Arc::new(Placement::default());
        let published = Arc::new(Published::new());
        let memory = Arc::new(JsMemory::new(settings.memory_total, memory_gauge));
        let stop = Arc::new(StopAt::new());
        let mut lanes = Vec::with_capacity(threads);
        for n in 0..threads {
            let source = FoldSource::open(store).await?;
            let (tx, rx) = std::sync::mpsc::channel();
            let worker = (
                source,
                writer.clone(),
                durable.clone(),
                settings.limits.clone(),
                controls.clone(),
                published.clone(),
                memory.clone(),
                stop.clone(),
                (client.clone(), tokio::runtime::Handle::current()),
            );
            // sandboxes are not Send: each thread builds its own
            let start = move || {
                let (source, writer, durable, limits, controls, published, memory, stop, http) =
                    worker;
                worker::Worker {
                    source,
                    writer,
                    durable,
                    limits,
                    controls,
                    max_live: 10_000,
                    published,
                    memory,
                    stop,
                    groups: Default::default(),
                    accounts: Vec::new(),
                    turn: 0,
                    http,
                    unloaded: Vec::new(),
                }
            };
            let thread = std::thread::Builder::new()
                .name(format!("eddy-reducers-{n}"))
                // QuickJS may use JS_STACK_BYTES of it, and Rust needs its own share
                .stack_size(eddy_runtime_js::JS_STACK_BYTES + 8 * 1024 * 1024)
                .spawn(move || start().run(rx))
                .map_err(|e| {
                    EngineError::internal(format!("cannot start a reducer thread: {e}"))
                })?;
            lanes.push(Lane {
                tx,
                thread: Mutex::new(Some(thread)),
            });
        }
        let reducers = Self {
            lanes,
            placement: placement.clone(),
            published,
            stop,
            limits: settings.limits,
            checks: tokio::sync::Semaphore::new(2),
            travels: tokio::sync::Semaphore::new(2),
            travelling_accounts: Default::default(),
            at_sources: Mutex::new(Vec::new()),
        };
        for (row, stream) in load_rows(&store.reads).await? {
            let after_idx =
                reducer_reads::after_index(&store.reads, row.stream_id, row.position).await?;
            if leased {
                // folded where the lease is held (`run_stream`); read here as saved
                reducers
                    .published
                    .insert(row.stream_id, entry(&row, after_idx));
            } else {
                reducers.load(Box::new(row), stream, None, after_idx, None)?;
            }
        }
        route_commits_to(&reducers, store.subscribe());
        Ok(reducers)
    }

    /// Publishes a stored version and hands it to its stream's thread (with the lease
    /// the stream's reducers run under, where leases are kept).
    fn load(
        &self,
        row: Box<ReducerRow>,
        stream: StreamPath,
        replaced: Option<i64>,
        after_idx: i64,
        fence: Option<Fence>,
    ) -> Result<()> {
        let stream_id = row.stream_id;
        let lane = self.placement.place(stream_id, self.lanes.len());
        if let Some(old) = replaced {
            self.published.remove(stream_id, &[old]);
        }
        self.published.insert(stream_id, entry(&row, after_idx));
        self.lanes[lane].send(Msg::Deploy(row, stream, replaced, fence))
    }

    /// Starts folding a stream's reducers here, under the lease `fence`; `fresh` is a
    /// version just deployed, which folds what comes after its deploy live.
    pub(crate) async fn run_stream(
        &self,
        reads: &Reads,
        stream_id: i64,
        fence: Fence,
        fresh: Option<Box<ReducerRow>>,
    ) -> Result<bool> {
        let rows = stream_rows(reads, stream_id).await?;
        let found = !rows.is_empty();
        for (row, stream) in rows {
            let row = match &fresh {
                Some(f) if f.id == row.id => f.clone(),
                _ => Box::new(row),
            };
            let after_idx = reducer_reads::after_index(reads, stream_id, row.position).await?;
            self.load(row, stream, None, after_idx, Some(fence.clone()))?;
        }
        Ok(found)
    }

    /// Stops folding a stream's reducers here, and waits (up to 10 s) until what they
    /// folded is saved: another node runs them from now on.
    pub(crate) async fn unload_stream(&self, stream_id: i64) {
        let Some(lane) = self.placement.get(stream_id) else {
            return;
        };
        let (done, saved) = oneshot::channel();
        if self.lanes[lane]
            .send(Msg::Unload { stream_id, done })
            .is_ok()
        {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), saved).await;
        }
    }

    /// Publishes a stream's reducers as saved in the database, for reads here of a
    /// stream another node folds.
    pub(crate) async fn refresh_stream(&self, reads: &Reads, stream_id: i64) -> Result<()> {
        let mut entries = Vec::new();
        for (row, _) in stream_rows(reads, stream_id).await? {
            let after_idx = reducer_reads::after_index(reads, stream_id, row.position).await?;
            entries.push(entry(&row, after_idx));
        }
        self.published.replace_stream(stream_id, entries);
        Ok(())
    }

    /// The (version id, position) of each version published for a stream, by id.
    pub(crate) fn published_positions(&self, stream_id: i64) -> Vec<(i64, i64)> {
        self.published.positions(stream_id)
    }

    /// The streams whose reducers this node publishes.
    pub(crate) fn published_streams(&self) -> Vec<i64> {
        self.published.stream_ids()
    }

    /// Stops folding by `deadline` (between two events); the threads then save what
    /// they folded. A shutdown calls it first, so reducers end within its grace.
    pub(crate) fn stop_by(&self, deadline: Instant) {
        self.stop.set(deadline);
    }

    pub(crate) async fn shutdown(&self) {
        self.stop.set(Instant::now());
        for lane in &self.lanes {
            let _ = lane.send(Msg::Shutdown);
        }
        for lane in &self.lanes {
            let thread = lane.thread.lock().ok().and_then(|mut t| t.take());
            if let Some(thread) = thread {
                let _ = tokio::task::spawn_blocking(move || thread.join()).await;
            }
        }
    }

    /// Loads code in a scratch sandbox, on a thread of its own so that a deploy does
    /// not wait for a busy reducer thread, to see that it evaluates to a function.
    async fn check(&self, code: eddy_runtime_js::Prepared) -> Result<()> {
        let _turn = self.checks.acquire().await.map_err(|_| stopped())?;
        let limits = self.limits.clone();
        let (tx, rx) = oneshot::channel();
        std::thread::Builder::new()
            .name("eddy-reducer-check".into())
            .stack_size(eddy_runtime_js::JS_STACK_BYTES + 8 * 1024 * 1024)
            .spawn(move || {
                let result = eddy_runtime_js::Sandbox::new(limits)
                    .and_then(|mut s| s.load(0, "check", &code));
                let _ = tx.send(result);
            })
            .map_err(|e| EngineError::internal(format!("cannot start a reducer check: {e}")))?;
        rx.await.map_err(|_| stopped())?.map_err(|e| {
            EngineError::invalid(format!("the reducer code does not load: {}", e.message))
        })
    }
}

/// A thread for user code: QuickJS may use `JS_STACK_BYTES` of its stack, and Rust
/// needs its own share.
pub(crate) fn js_thread(name: &str) -> std::thread::Builder {
    std::thread::Builder::new()
        .name(name.to_owned())
        .stack_size(eddy_runtime_js::JS_STACK_BYTES + 8 * 1024 * 1024)
}

/// Runs `f`, which runs user code, on a [`js_thread`] of its own and awaits it.
pub(crate) async fn on_js_thread<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    let (tx, rx) = oneshot::channel();
    js_thread(name)
        .spawn(move || {
            let _ = tx.send(f());
        })
        .map_err(|e| EngineError::internal(format!("cannot start a thread ({name}): {e}")))?;
    rx.await.map_err(|_| stopped())
}

fn route_commits_to(
    reducers: &Reducers,
    commits: tokio::sync::broadcast::Receiver<Arc<crate::store::Committed>>,
) {
    let lanes = reducers.lanes.iter().map(|l| l.tx.clone()).collect();
    pool::route_commits(commits, reducers.placement.clone(), lanes);
}

impl crate::Engine {
    /// Deploys reducer code: parses it (syntax errors name line and column), checks
    /// that it loads, refuses dependency cycles, stores it and starts folding.
    pub async fn deploy_reducer(self: &Arc<Self>, req: DeployRequest) -> Result<Deployed> {
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
        self.reducers.check(prepared.clone()).await?;
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
        self.run_version(row, stream, replaced).await?;
        Ok(Deployed {
            code_hash,
            building,
        })
    }

    /// Starts folding a stored version from the first event: here, or, where leases
    /// are kept, on the node that holds (or now claims) the stream's reducers.
    pub(crate) async fn run_version(
        self: &Arc<Self>,
        row: Box<ReducerRow>,
        stream: StreamPath,
        replaced: Option<i64>,
    ) -> Result<()> {
        match &self.cluster {
            None => self.reducers.load(row, stream, replaced, -1, None)?,
            Some(_) => {
                let work = crate::cluster::Work::Reducers(row.stream_id);
                if let Some(fence) = self.cluster_fence(&work) {
                    self.reducers.load(row, stream, replaced, -1, Some(fence))?;
                } else if let Some(fence) = self.claim(&work).await? {
                    let stream_id = row.stream_id;
                    self.reducers
                        .run_stream(&self.store.reads, stream_id, fence, Some(row))
                        .await?;
                } else {
                    // another node folds the stream and reloads it on the change
                    // notice; reads here show the new version at once
                    self.reducers
                        .refresh_stream(&self.store.reads, row.stream_id)
                        .await?;
                }
            }
        }
        Ok(())
    }

    async fn refuse_cycles(&self, stream: &StreamPath, name: &str, reads: &[String]) -> Result<()> {
        let rows = reducer_reads::reads_of_stream(
            &self.store.reads,
            stream.account.as_str(),
            stream.stream.as_str(),
        )
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

    /// The code of the active version as deployed, with its media type.
    pub async fn reducer_source(
        &self,
        path: &StreamPath,
        name: &ReducerName,
    ) -> Result<(String, String)> {
        let row = reducer_reads::source(
            &self.store.reads,
            path.account.as_str(),
            path.stream.as_str(),
            name.as_str(),
        )
        .await?;
        row.ok_or_else(|| missing_reducer(path, name))
    }

    /// Stops reducers folding by `deadline`, so that a shutdown ends within its grace;
    /// what they folded by then is saved, and the rest is folded after a restart.
    pub fn stop_reducers_by(&self, deadline: Instant) {
        self.reducers.stop_by(deadline);
    }

    /// Deletes a reducer with all its versions and states.
    pub async fn delete_reducer(
        self: &Arc<Self>,
        path: &StreamPath,
        name: &ReducerName,
    ) -> Result<()> {
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
                self.reducers.published.remove(stream_id, &ids);
                if let Some(lane) = self.reducers.placement.get(stream_id) {
                    self.reducers.lanes[lane].send(Msg::Delete { stream_id, ids })?;
                }
                // where leases are kept: the stream's other reducers go on here, or,
                // with none left, its lease goes
                if self.cluster.is_some() {
                    self.restart(&crate::cluster::Work::Reducers(stream_id))
                        .await?;
                }
                Ok(())
            }
            _ => Err(missing_reducer(path, name)),
        }
    }
}

fn missing_reducer(path: &StreamPath, name: &ReducerName) -> EngineError {
    EngineError::not_found(format!("reducer {name} of {path} does not exist"))
}

/// What `/reducers` and state reads start from for a stored version.
fn entry(row: &ReducerRow, after_idx: i64) -> Entry {
    Entry {
        status: ReducerStatus {
            name: row.name.clone(),
            building: row.building,
            code_hash: row.code_hash.clone(),
            position: row.position,
            index: (!row.factory).then_some(after_idx),
            lag: 0,
            errors: row.errors,
            halted: row.halted.clone(),
            selector: row.selector.clone(),
            halt_on_error: row.halt_on_error,
            live_states: 0,
        },
        id: row.id,
        factory: row.factory,
        states: Default::default(),
    }
}

/// The stored versions of one stream's reducers.
async fn stream_rows(reads: &Reads, stream_id: i64) -> Result<Vec<(ReducerRow, StreamPath)>> {
    Ok(with_paths(
        reducer_reads::versions_of(reads, stream_id).await?,
    ))
}

/// Every stored reducer version with its stream's path, for the worker at start.
async fn load_rows(reads: &Reads) -> Result<Vec<(ReducerRow, StreamPath)>> {
    Ok(with_paths(reducer_reads::versions(reads).await?))
}

/// Stored versions with their streams' paths (those whose names no longer parse left
/// out: see store::repair).
fn with_paths(rows: Vec<(ReducerRow, String, String)>) -> Vec<(ReducerRow, StreamPath)> {
    let mut out = Vec::new();
    for (row, account, stream) in rows {
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
    out
}
