//! eddy's engine: the domain without HTTP.
//!
//! # Layout
//!
//! - [`path`]: the one parser of eddy's URLs (accounts, streams, factory args,
//!   events, reducers, types, pipes...), with the canonical form of factory args.
//! - [`selector`]: the one parser of selectors (`type`, `from`/`to`, `since`/`until`,
//!   `sub`), applied as SQL on reads and as a predicate on live paths.
//! - [`query`]: query-string decoding shared by the parsers.
//! - [`event`]: what an event is: content types, limits, timestamps, ids, the envelope.
//! - [`json`]: JSON event data parsed once within the limits (nesting depth, numbers
//!   that fit a double), refusals naming the place.
//! - `content`: event data as JSON values, as reducers and event types see it.
//! - [`settings`]: the stream settings document.
//! - [`access`]: who may do what (admin token, API keys, public flags, account
//!   substreams, HMAC tokens) and the stream controls checked before an append (rate
//!   limits, blocklists, event types), kept in memory.
//! - [`types`]: event types: JTD schemas compiled, validated against event data
//!   (with `metadata.pattern` regexes), and rendered as TypeScript.
//! - [`store`]: SQLite storage: migrations and reads through sqlx; every write through
//!   the single group-commit writer thread (rusqlite), which flushes each group to
//!   disk before any of its requests is answered.
//! - [`metrics`]: the Prometheus metrics the engine keeps.
//! - [`reducers`]: deploying reducers and reading their states; a pool of threads runs
//!   the JavaScript (`eddy-runtime-js`), each stream's reducers on one of them, in fair
//!   time slices between accounts. A thread reads events with its own connection,
//!   folds, checks dispatched events against their destination's types, publishes
//!   states for readers, saves checkpoints through the writer, and folds a substream
//!   again when its state grew over the size limit (`reducers/oversize.rs`).
//! - [`consumers`]: the live fan-out hub (commit notices to the subscriptions that
//!   follow their streams), subscriptions with catch-up from storage (SSE), and
//!   webhooks (signed deliveries with retries, a persisted cursor).
//! - [`outbound`]: the guard every outbound call goes through (webhooks, `request()`):
//!   no private, loopback or link-local targets unless allowed, no redirects.
//! - [`pipes`]: pipe tasks that follow an origin and write each batch with its cursor
//!   in one transaction; pipe functions run on a thread of their own.
//! - `dispatch`: events that reducers and pipe functions dispatch, with ids derived
//!   from their source event (exactly once across rebuilds and restarts).
//! - [`builtins`]: the `eddy` account's streams: cron streams (croner) ticking while
//!   followed, and account events, which the writer appends with each change.
//!
//! The data path reads top-down: the server builds an [`AppendRequest`], [`Engine::append`]
//! queues it to the writer, the writer commits it with others in one transaction,
//! flushes that to disk, answers, and announces the commit with its events
//! ([`Engine::subscribe`]): the reducer threads of those streams wake to fold what is
//! new, and the hub hands the events to SSE subscriptions, webhook tasks and pipe tasks.

pub mod access;
pub mod builtins;
pub mod cluster;
pub mod consumers;
mod content;
mod dispatch;
pub use dispatch::{HOPS_HEADER, appended_origin};
pub mod error;
pub mod event;
mod gate;
pub mod json;
pub mod metrics;
pub mod order;
pub mod outbound;
pub mod path;
pub mod pipes;
pub mod query;
pub mod reducers;
pub mod selector;
pub mod settings;
pub mod splices;
pub mod store;
pub mod types;

use std::sync::Arc;

pub use error::{EngineError, ErrorCode, Result};
pub use store::read::{Cursor, EventQuery, Page, Scope, StreamInfo};
pub use store::{AppendRequest, Appended, AppendedEvent, Committed, SettingsRequest};

use crate::path::StreamPath;
use crate::settings::StreamSettings;
use crate::store::Store;

/// The 404 for a stream that does not exist.
pub fn missing_stream(path: &StreamPath) -> EngineError {
    EngineError::not_found(format!("stream {path} does not exist"))
}

/// What a read of `path` covers, given its stream's row and the id of the substream
/// its arguments name (`sid`, where it exists); a plain stream given arguments is a 400.
fn scope_of(path: &StreamPath, info: &StreamInfo, sid: Option<i64>) -> Result<Option<Scope>> {
    match (&path.args, info.factory) {
        (None, true) => Ok(Some(Scope::Factory(info.id))),
        (Some(_), true) | (None, false) => Ok(sid.map(Scope::Substream)),
        (Some(_), false) => Err(EngineError::invalid(format!(
            "{}/{} is a plain stream, not a factory, so it takes no arguments ({path})",
            path.account, path.stream
        ))),
    }
}

/// A stream path resolved against storage.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub info: StreamInfo,
    /// What a read of the path covers; `None` for a substream with no events yet.
    pub scope: Option<Scope>,
}

/// Splice previews and approvals that run at once, of different accounts (each
/// account one at a time).
const SPLICES_AT_ONCE: usize = 2;

/// The engine: storage plus the operations the server calls.
pub struct Engine {
    store: Store,
    access: access::Access,
    controls: Arc<access::controls::Controls>,
    reducers: reducers::Reducers,
    hub: consumers::hub::Hub,
    webhooks: consumers::webhooks::Webhooks,
    pipes: pipes::Pipes,
    tickers: builtins::cron::Tickers,
    /// This node's leases, where other nodes share the database.
    pub(crate) cluster: Option<Arc<cluster::Cluster>>,
    /// Set once a shutdown began: the lease keeper takes nothing more.
    leaving: std::sync::atomic::AtomicBool,
    /// Splice previews and approvals running at once (each maps a whole history).
    splicing: tokio::sync::Semaphore,
    /// One splice job per account at a time, before one of `splicing`.
    splicing_accounts: gate::AccountGates,
    /// The events each account's splice approvals and pipe replays may write per ten
    /// minutes.
    splice_budget: gate::WriteBudget,
    /// The spliced history of the latest preview, kept for its approval.
    previewed: splices::Kept,
}

/// How the engine runs, besides its storage and metrics.
#[derive(Debug, Clone)]
pub struct Options {
    pub reducers: reducers::PoolSettings,
    pub webhooks: consumers::webhooks::WebhookSettings,
    /// With an admin token every request needs credentials; without, the server is
    /// open.
    pub admin_token: Option<String>,
    /// Commits a second from which live notices are merged (`--fanout-merge-rate`).
    pub fanout_merge_rate: u32,
    pub json: json::JsonLimits,
    /// How this node takes part where other nodes share its database.
    pub cluster: cluster::ClusterSettings,
    /// Events that one account's splice approvals and pipe replays may write per ten
    /// minutes on this node (`--splice-write-budget`); 0 for no limit.
    pub splice_write_budget: u64,
}

impl Engine {
    /// Opens the engine on its storage and starts its reducers and webhooks.
    pub async fn open(
        storage: &store::Storage,
        metrics: Arc<metrics::Metrics>,
        options: Options,
    ) -> Result<Arc<Self>> {
        let Options {
            reducers,
            webhooks,
            admin_token,
            fanout_merge_rate,
            json,
            cluster: cluster_settings,
            splice_write_budget,
        } = options;
        let allow_private = webhooks.allow_private;
        let webhooks = consumers::webhooks::Webhooks::new(webhooks, metrics.clone())?;
        let store = Store::open_storage(storage, metrics.clone(), json).await?;
        // shared with the reducer worker, which checks dispatched events' types
        let controls = Arc::new(access::controls::Controls::new(store.reads.clone(), json));
        let pipe_limits = reducers.limits.clone();
        let cluster = store.node().map(|node| {
            Arc::new(cluster::Cluster::new(
                node.to_owned(),
                cluster_settings,
                &metrics,
            ))
        });
        let reducers = reducers::Reducers::start(
            &store,
            reducers.clone(),
            controls.clone(),
            metrics.reducer_memory_bytes.clone(),
            allow_private,
            cluster.is_some(),
        )
        .await?;
        let hub = consumers::hub::Hub::start(store.subscribe(), metrics.clone(), fanout_merge_rate);
        let pipes = pipes::Pipes::new(pipe_limits)?;
        let tickers = builtins::cron::Tickers::new(store.writer.clone(), store.reads.clone());
        let keys = access::Keys::new(admin_token.as_deref());
        if keys.admin_enabled() {
            keys.load(&store.reads).await?;
        }
        let access = access::Access::new(keys, metrics);
        let engine = Arc::new(Self {
            store,
            access,
            controls,
            reducers,
            hub,
            webhooks,
            pipes,
            tickers,
            cluster,
            leaving: Default::default(),
            splicing: tokio::sync::Semaphore::new(SPLICES_AT_ONCE),
            splicing_accounts: Default::default(),
            splice_budget: gate::WriteBudget::new(splice_write_budget),
            previewed: Default::default(),
        });
        engine.start_webhooks().await?;
        engine.start_pipes().await?;
        if let Some(heard) = engine.store.take_heard() {
            engine.join_cluster(heard);
        }
        let weak = Arc::downgrade(&engine);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(access::controls::SWEEP_EVERY).await;
                match weak.upgrade() {
                    Some(engine) => engine.controls.sweep(),
                    None => break,
                }
            }
        });
        Ok(engine)
    }

    /// Appends events to one (sub)stream; answers once they are durable.
    pub async fn append(&self, req: AppendRequest) -> Result<Appended> {
        self.store.writer.append(req).await
    }

    /// Changes a stream's settings, creating the stream when missing.
    pub async fn put_settings(&self, req: SettingsRequest) -> Result<StreamSettings> {
        let (account, stream) = (req.stream.account.clone(), req.stream.stream.clone());
        let r = self.store.writer.settings(req).await;
        self.controls.invalidate(account.as_str(), stream.as_str());
        r
    }

    /// Looks a stream up; `Ok(None)` when it does not exist.
    pub async fn resolve(&self, path: &StreamPath) -> Result<Option<Resolved>> {
        let args = path.args.as_ref().map(|a| a.canonical());
        let Some((info, sid)) = store::read::stream_and_substream(
            &self.store.reads,
            path.account.as_str(),
            path.stream.as_str(),
            args.as_deref().unwrap_or(""),
        )
        .await?
        else {
            return Ok(None);
        };
        let scope = scope_of(path, &info, sid)?;
        Ok(Some(Resolved { info, scope }))
    }

    /// The last index of the plain stream or substream `resolved` reads (-1 before
    /// its first event, and for a whole factory).
    pub async fn last_index(&self, resolved: &Resolved) -> Result<i64> {
        match resolved.scope {
            Some(store::read::Scope::Substream(sid)) => {
                store::reducer_reads::substream_index(&self.store.reads, sid, i64::MAX).await
            }
            _ => Ok(-1),
        }
    }

    /// Like [`Engine::resolve`], but a missing stream is a 404 naming it.
    pub async fn resolve_existing(&self, path: &StreamPath) -> Result<Resolved> {
        self.resolve(path)
            .await?
            .ok_or_else(|| missing_stream(path))
    }

    /// Reads one page of events. Reads see only durable events: a group committed but
    /// not yet flushed to disk stays unseen until its requests are answered.
    pub async fn read(&self, q: &EventQuery<'_>) -> Result<Page> {
        store::read::events(&self.store.reads, q, self.store.read_bound()).await
    }

    /// One event of a (sub)stream by index, with the stream's settings: the path
    /// resolved and the event read in one query (see [`Engine::resolve`] for the path's
    /// errors).
    pub async fn event(
        &self,
        path: &StreamPath,
        index: order::Index,
    ) -> Result<(event::StoredEvent, StreamSettings)> {
        let missing = || EngineError::not_found(format!("event {index} of {path} does not exist"));
        let args = path.args.as_ref().map(|a| a.canonical());
        let names = (
            path.account.as_str(),
            path.stream.as_str(),
            args.as_deref().unwrap_or(""),
        );
        let durable = self.store.read_bound();
        let Some((info, sid, event)) =
            store::read::event_by_path(&self.store.reads, names, index, durable).await?
        else {
            return Err(missing_stream(path));
        };
        match scope_of(path, &info, sid)? {
            Some(Scope::Substream(_)) => Ok((event.ok_or_else(missing)?, info.settings)),
            Some(Scope::Factory(_)) => Err(EngineError::invalid(format!(
                "{path} is a stream factory: name the substream, as in /{path}('id')/{index}"
            ))),
            None => Err(missing()),
        }
    }

    /// Each account's stream and event counts (accounts without streams are absent).
    pub async fn account_counts(&self) -> Result<Vec<(String, i64, i64)>> {
        store::read::account_counts(&self.store.reads).await
    }

    /// An account's streams, by name after `after`.
    pub async fn list_streams(
        &self,
        account: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<store::read::StreamEntry>> {
        store::read::list_streams(&self.store.reads, account, after, limit).await
    }

    /// A factory's substreams in creation order, after substream id `after`.
    pub async fn list_substreams(
        &self,
        stream_id: i64,
        after: i64,
        limit: usize,
    ) -> Result<Vec<store::read::SubstreamEntry>> {
        store::read::list_substreams(&self.store.reads, stream_id, after, limit).await
    }

    /// Commit announcements; subscribe before reading so nothing falls in between.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<Committed>> {
        self.store.subscribe()
    }

    /// The global position of the last committed event.
    /// Whether a shutdown began.
    pub(crate) fn leaving(&self) -> bool {
        self.leaving.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The fence of `work` while this node holds its lease.
    pub(crate) fn cluster_fence(&self, work: &cluster::Work) -> Option<store::cluster::Fence> {
        self.cluster.as_ref().and_then(|c| c.fence(work))
    }

    /// This node's id, where other nodes share the database.
    pub fn node(&self) -> Option<&str> {
        self.store.node()
    }

    pub fn last_position(&self) -> order::Position {
        self.store.last_position()
    }

    /// Finishes every accepted write and stops the writer.
    pub async fn shutdown(&self) {
        // pipes, webhooks and reducers save their cursors and checkpoints through the
        // writer; cron tickers stop first, so nothing ticks into a closing writer
        self.leaving
            .store(true, std::sync::atomic::Ordering::Release);
        self.tickers.stop_all();
        // in a cluster: the leases go at once, for other nodes to take the work
        self.leave_cluster().await;
        self.pipes.stop_all().await;
        self.webhooks.stop_all().await;
        self.reducers.shutdown().await;
        self.store.shutdown().await;
    }
}
