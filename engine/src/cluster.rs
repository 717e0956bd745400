//! Several nodes on one PostgreSQL database (API §11): which background work this
//! node runs, through leases kept in the database (`store::cluster`).
//!
//! Each node renews its leases every third of the lease time and takes free ones (never
//! held, let go, or expired) up to its fair share of all the work, the work divided by
//! the live nodes; a node above its share lets the excess go, so work spreads again when
//! a node joins. A lease this node no longer holds stops its work here at the next
//! renewal (a webhook checks its own deadline before each delivery), and the writer
//! refuses any write of it meanwhile (fencing), so a paused or cut-off node never
//! writes twice. Changes another node made (keys, settings, code)
//! reach this node through the listener, within one poll when a notification is lost.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use crate::error::{EngineError, ErrorCode, Result};
use crate::metrics::Metrics;
use crate::store::cluster::{self as rows, Change, Fence, Heard};

/// The default lease time (`--lease-ms`).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);

/// How a node takes part in a cluster.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// How long a lease lasts unless renewed.
    pub lease: Duration,
    /// Where this node answers, as `GET /api/cluster` shows it.
    pub address: String,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self {
            lease: DEFAULT_LEASE,
            address: String::new(),
        }
    }
}

/// A piece of background work, as its lease names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Work {
    /// Every reducer of a stream (they run in one sandbox).
    Reducers(i64),
    Pipe(i64),
    Webhook(String),
}

impl Work {
    pub(crate) fn parse(key: &str) -> Option<Self> {
        let (kind, id) = key.split_once(':')?;
        match kind {
            "reducers" => id.parse().ok().map(Work::Reducers),
            "pipe" => id.parse().ok().map(Work::Pipe),
            "webhook" => Some(Work::Webhook(id.to_owned())),
            _ => None,
        }
    }

    pub(crate) fn key(&self) -> String {
        match self {
            Work::Reducers(id) => format!("reducers:{id}"),
            Work::Pipe(id) => format!("pipe:{id}"),
            Work::Webhook(id) => format!("webhook:{id}"),
        }
    }
}

/// A lease held here.
struct Held {
    fence: Fence,
    /// This node's own deadline: the lease counts as lost here from then on, a little
    /// before the database lets another node take it.
    until: Instant,
}

/// This node's part in the cluster.
pub(crate) struct Cluster {
    pub(crate) node: String,
    pub(crate) settings: ClusterSettings,
    held: Mutex<HashMap<String, Held>>,
    /// Taken by the keeper while it renews, and by each claim: a claim that commits
    /// during a renewal round would otherwise look like a stray lease to it.
    turn: tokio::sync::Mutex<()>,
    takeovers: Counter,
    leases_taken: Counter,
    leases_lost: Counter,
    leases_held: Gauge,
    nodes: Gauge,
    /// When this node last wrote its heartbeat (its start before the first).
    heartbeat_at: Mutex<Instant>,
}

impl Cluster {
    pub(crate) fn new(node: String, settings: ClusterSettings, metrics: &Metrics) -> Self {
        Self {
            node,
            settings,
            held: Mutex::default(),
            turn: tokio::sync::Mutex::new(()),
            takeovers: metrics.lease_takeovers.clone(),
            leases_taken: metrics.leases_taken.clone(),
            leases_lost: metrics.leases_lost.clone(),
            leases_held: metrics.leases_held.clone(),
            nodes: metrics.cluster_nodes.clone(),
            heartbeat_at: Mutex::new(Instant::now()),
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<String, Held>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The local deadline of a lease renewed (or taken) at `at`.
    fn deadline(&self, at: Instant) -> Instant {
        at + self.settings.lease.mul_f64(0.8)
    }

    /// The fence of `work` while this node holds its lease.
    pub(crate) fn fence(&self, work: &Work) -> Option<Fence> {
        let held = self.held();
        let h = held.get(&work.key())?;
        (h.until > Instant::now()).then(|| h.fence.clone())
    }

    /// Whether `fence` is still this node's lease (for work about to act outside the
    /// database, such as a webhook delivery).
    pub(crate) fn valid(&self, fence: &Fence) -> bool {
        self.held()
            .get(&fence.work)
            .is_some_and(|h| h.fence == *fence && h.until > Instant::now())
    }

    /// Counts the leases held for `/metrics`.
    fn gauge(&self) {
        self.leases_held.set(self.held().len() as i64);
    }
}

impl crate::Engine {
    /// Takes the lease on new work at once if it is free, and runs it here; answers
    /// whether it runs here. Without leases (embedded storage) it always does.
    pub(crate) async fn claim_and_run(self: &Arc<Self>, work: &Work) -> Result<bool> {
        if self.cluster.is_none() || self.cluster_fence(work).is_some() {
            return Ok(true);
        }
        match self.claim(work).await? {
            Some(fence) => {
                self.start_work(work, fence).await?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Takes the lease on `work` if it is free; the caller runs the work.
    pub(crate) async fn claim(&self, work: &Work) -> Result<Option<Fence>> {
        let Some(cluster) = &self.cluster else {
            return Ok(None);
        };
        let key = work.key();
        // not while the keeper sorts renewed leases from stray ones
        let _turn = cluster.turn.lock().await;
        let at = Instant::now();
        let claimed = rows::claim(
            &self.store.reads,
            &key,
            &cluster.node,
            cluster.settings.lease,
        )
        .await?;
        let Some((fence, took_over)) = claimed else {
            return Ok(None);
        };
        if took_over {
            cluster.takeovers.inc();
        }
        cluster.leases_taken.inc();
        cluster.held().insert(
            key,
            Held {
                fence: fence.clone(),
                until: cluster.deadline(at),
            },
        );
        cluster.gauge();
        Ok(Some(fence))
    }

    /// Runs `work` here under `fence`; lets the lease go when the work is gone or does
    /// not start (for another round, or node, to try again).
    async fn start_work(self: &Arc<Self>, work: &Work, fence: Fence) -> Result<()> {
        let started = match work {
            Work::Reducers(stream_id) => {
                self.reducers
                    .run_stream(&self.store.reads, *stream_id, fence.clone(), None)
                    .await
            }
            Work::Pipe(id) => self.run_pipe(*id, Some(fence.clone())).await,
            Work::Webhook(id) => self.run_webhook(id, Some(fence.clone())).await,
        };
        match started {
            Ok(true) => Ok(()),
            Ok(false) => {
                self.let_go(&fence).await;
                Ok(())
            }
            Err(e) => {
                self.stop_work(work).await;
                self.let_go(&fence).await;
                Err(e)
            }
        }
    }

    /// Stops `work` here (its lease was lost or is being let go).
    async fn stop_work(&self, work: &Work) {
        match work {
            Work::Reducers(stream_id) => self.reducers.unload_stream(*stream_id).await,
            Work::Pipe(id) => self.pipes.stop(*id).await,
            Work::Webhook(id) => self.webhooks.stop_and_wait(id).await,
        }
    }

    /// Lets the lease `fence` go.
    async fn let_go(&self, fence: &Fence) {
        let Some(cluster) = &self.cluster else { return };
        cluster.held().remove(&fence.work);
        cluster.gauge();
        if let Err(e) = rows::release(&self.store.reads, &cluster.node, fence).await {
            tracing::warn!(error = %e.message, work = %fence.work, "cannot let a lease go");
        }
    }

    /// One round of the lease keeper: heartbeat, renewals (when due), losses, and
    /// taking or letting go of work towards this node's fair share.
    async fn keep_leases(self: &Arc<Self>, cluster: &Cluster, renew: bool) -> Result<()> {
        let reads = &self.store.reads;
        let lease = cluster.settings.lease;
        rows::heartbeat(reads, &cluster.node, &cluster.settings.address).await?;
        *cluster
            .heartbeat_at
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Instant::now();
        if renew {
            self.renew_leases(cluster).await?;
        }
        let nodes = rows::nodes(reads, lease).await?.len().max(1);
        self.controls.share_between(nodes);
        cluster.nodes.set(nodes as i64);
        let all = rows::all_work(reads).await?;
        let fair = all.len().div_ceil(nodes);
        let mine: Vec<String> = cluster.held().keys().cloned().collect();
        if mine.len() > fair {
            // let the excess go, for nodes below their share to take
            let mut shed = 0;
            for key in mine.iter().rev().take(mine.len() - fair) {
                let fence = cluster.held().get(key).map(|h| h.fence.clone());
                let (Some(fence), Some(work)) = (fence, Work::parse(key)) else {
                    continue;
                };
                self.stop_work(&work).await;
                self.let_go(&fence).await;
                shed += 1;
            }
            if shed > 0 {
                tracing::info!(leases = shed, "let leases go to balance the work");
                let _ = rows::released(reads, &cluster.node).await;
            }
            return Ok(());
        }
        let leases = rows::leases(reads, lease).await?;
        let free = all.iter().filter(|w| {
            !mine.contains(w) && leases.iter().find(|l| l.work == **w).is_none_or(|l| l.free)
        });
        let mut room = fair - mine.len();
        for key in free {
            if room == 0 {
                break;
            }
            let Some(work) = Work::parse(key) else {
                continue;
            };
            match self.claim_and_run(&work).await {
                Ok(true) if cluster.fence(&work).is_some() => room -= 1,
                Ok(_) => {}
                // the next free work is tried; this one again at the next round
                Err(e) => tracing::warn!(work = %key, error = %e.message, "cannot start work"),
            }
        }
        Ok(())
    }

    /// Renews every lease held here. A lease found expired (or taken) is lost: its
    /// work stops. A lease renewed only after this node's own deadline had passed is
    /// kept, but a webhook may have stopped itself meanwhile (it checks that deadline
    /// before each delivery): it starts again from its saved cursor.
    async fn renew_leases(self: &Arc<Self>, cluster: &Cluster) -> Result<()> {
        let reads = &self.store.reads;
        let lease = cluster.settings.lease;
        let (mut lost, mut lapsed, mut failed) = (Vec::new(), Vec::new(), None);
        {
            let _turn = cluster.turn.lock().await;
            let held: Vec<(String, Fence, Instant)> = cluster
                .held()
                .iter()
                .map(|(k, h)| (k.clone(), h.fence.clone(), h.until))
                .collect();
            let works: Vec<String> = held.iter().map(|(k, _, _)| k.clone()).collect();
            let at = Instant::now();
            // renewed, then what the database says this node holds (unexpired)
            let found = match rows::renew(reads, &cluster.node, &works, lease).await {
                Ok(renewed) => rows::held_by(reads, &cluster.node)
                    .await
                    .map(|present| (renewed, present)),
                Err(e) => Err(e),
            };
            match found {
                Ok((renewed, present)) => {
                    for (key, fence, until) in held {
                        if renewed.contains(&fence) {
                            if let Some(h) = cluster.held().get_mut(&key) {
                                h.until = cluster.deadline(at);
                            }
                            // the work may have stopped itself while its deadline was past
                            if until <= Instant::now() {
                                lapsed.push(key);
                            }
                        } else if !present.contains(&fence) {
                            cluster.held().remove(&key);
                            lost.push(key);
                        }
                        // else held, but busy in a fence check: renewed next round
                    }
                    // leases this node holds but does not run (a claim whose answer
                    // was lost)
                    for fence in present {
                        if !cluster.held().contains_key(&fence.work) {
                            let _ = rows::release(reads, &cluster.node, &fence).await;
                        }
                    }
                }
                // kept for now: renewed at the next round, or lost at their deadlines
                Err(e) => failed = Some(e),
            }
        }
        cluster.gauge();
        for key in lost {
            tracing::warn!(work = %key, "lost the lease; the work stops here");
            cluster.leases_lost.inc();
            if let Some(work) = Work::parse(&key) {
                self.stop_work(&work).await;
            }
        }
        // only a webhook stops itself at this node's deadline (before a delivery);
        // reducers and pipes stop only when the database refuses their lease
        for key in lapsed {
            let Some(work @ Work::Webhook(_)) = Work::parse(&key) else {
                continue;
            };
            tracing::warn!(work = %key, "renewed a lease past this node's deadline; restarting the webhook");
            if let Err(e) = self.restart(&work).await {
                failed = Some(e);
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// Applies changes other nodes made.
    async fn apply_change(self: &Arc<Self>, change: Change) -> Result<()> {
        let keys = match change {
            Change::Keys(keys) => keys,
            Change::Unknown => {
                // everything this node keeps of what others may change
                let mut keys = vec!["access".to_owned()];
                if let Some(cluster) = &self.cluster {
                    keys.extend(cluster.held().keys().cloned());
                }
                keys.extend(
                    self.reducers
                        .published_streams()
                        .into_iter()
                        .map(|id| Work::Reducers(id).key()),
                );
                keys
            }
        };
        for key in keys {
            // a change not applied is applied again: see `join_cluster`
            match key.as_str() {
                "access" => {
                    self.access.reload(&self.store.reads).await?;
                    self.controls.forget_all();
                }
                "controls" => self.controls.forget_all(),
                _ => {
                    let Some(work) = Work::parse(&key) else {
                        continue;
                    };
                    self.restart(&work).await?;
                }
            }
        }
        Ok(())
    }

    /// After a change of `work` (made here or elsewhere): runs it again from what is
    /// stored if it runs here (letting its lease go when it is gone), and refreshes
    /// what reads here show of it.
    pub(crate) async fn restart(self: &Arc<Self>, work: &Work) -> Result<()> {
        let fence = self.cluster.as_ref().and_then(|c| c.fence(work));
        if let Some(fence) = fence {
            self.stop_work(work).await;
            self.start_work(work, fence).await?;
        }
        if let Work::Reducers(stream_id) = work
            && self.cluster_fence(work).is_none()
        {
            self.reducers
                .refresh_stream(&self.store.reads, *stream_id)
                .await?;
        }
        Ok(())
    }

    /// Starts the lease keeper and the change follower of a node in a cluster.
    pub(crate) fn join_cluster(self: &Arc<Self>, heard: Heard) {
        let Heard {
            mut changes,
            leases,
        } = heard;
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            while let Some(mut change) = changes.recv().await {
                let Some(engine) = weak.upgrade() else { break };
                // a change must not be lost to a passing error (a deleted key would
                // stay valid here): on failure, reload everything until it works
                while let Err(e) = engine.apply_change(change).await {
                    tracing::warn!(error = %e.message, "cannot apply another node's change; retrying");
                    if engine.leaving() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    change = Change::Unknown;
                }
            }
        });
        let weak = Arc::downgrade(self);
        if let Some(cluster) = &self.cluster {
            // the lease time runs from here, once the node's work has started
            *cluster
                .heartbeat_at
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Instant::now();
        }
        tokio::spawn(async move {
            let mut last_renewal = None;
            loop {
                let Some(engine) = weak.upgrade() else { break };
                let Some(cluster) = engine.cluster.clone() else {
                    break;
                };
                // renewals every third of the lease; rounds that take free work (of a
                // node that died) at least every second
                let renew_every = cluster.settings.lease / 3;
                let round = renew_every.min(Duration::from_secs(1));
                if engine.leaving() {
                    break;
                }
                let due = last_renewal.is_none_or(|t: Instant| t.elapsed() >= renew_every);
                if due {
                    last_renewal = Some(Instant::now());
                }
                if let Err(e) = engine.keep_leases(&cluster, due).await {
                    tracing::warn!(error = %e.message, "cannot keep this node's leases");
                }
                drop(engine);
                tokio::select! {
                    _ = tokio::time::sleep(round) => {}
                    _ = leases.notified() => {}
                }
            }
        });
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            // what reads here show of reducers other nodes fold
            let mut every = tokio::time::interval(REFRESH);
            loop {
                every.tick().await;
                let Some(engine) = weak.upgrade() else { break };
                if let Err(e) = engine.refresh_foreign().await {
                    tracing::debug!(error = %e.message, "cannot refresh other nodes' reducers");
                }
            }
        });
    }

    /// Refreshes the published progress of the reducers other nodes fold, whose
    /// saved position moved.
    async fn refresh_foreign(&self) -> Result<()> {
        let Some(cluster) = &self.cluster else {
            return Ok(());
        };
        let moved = crate::store::reducer_reads::positions(&self.store.reads).await?;
        for (stream_id, positions) in moved {
            if cluster.fence(&Work::Reducers(stream_id)).is_some() {
                continue;
            }
            if self.reducers.published_positions(stream_id) != positions {
                self.reducers
                    .refresh_stream(&self.store.reads, stream_id)
                    .await?;
            }
        }
        Ok(())
    }

    /// Stops every piece of work here and lets its lease go, for other nodes to take
    /// at once (a graceful shutdown).
    pub(crate) async fn leave_cluster(&self) {
        let Some(cluster) = &self.cluster else { return };
        let fences: Vec<Fence> = cluster.held().values().map(|h| h.fence.clone()).collect();
        for fence in &fences {
            if let Some(work) = Work::parse(&fence.work) {
                self.stop_work(&work).await;
            }
        }
        // the reducers save what they folded before their leases go
        self.reducers.shutdown().await;
        for fence in &fences {
            self.let_go(fence).await;
        }
        let _ = rows::forget(&self.store.reads, &cluster.node).await;
        let _ = rows::released(&self.store.reads, &cluster.node).await;
    }

    /// The live nodes and every lease, for `GET /api/cluster`.
    /// Where leases are kept: an error when this node has not written its heartbeat
    /// for a lease time (PostgreSQL out of reach), which the other nodes take for
    /// its death; `/healthz` answers 503 with it, for a load balancer.
    pub fn check_heartbeat(&self) -> Result<()> {
        let Some(cluster) = &self.cluster else {
            return Ok(());
        };
        let at = *cluster
            .heartbeat_at
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let lease = cluster.settings.lease;
        if at.elapsed() <= lease {
            return Ok(());
        }
        Err(EngineError::new(
            ErrorCode::Unavailable,
            format!(
                "this node has not written its heartbeat to the database for {} ms, more \
                 than its lease of {} ms: the other nodes count it as gone",
                at.elapsed().as_millis(),
                lease.as_millis()
            ),
        ))
    }

    pub async fn cluster_status(&self) -> Result<Option<ClusterStatus>> {
        let Some(cluster) = &self.cluster else {
            return Ok(None);
        };
        let nodes = rows::nodes(&self.store.reads, cluster.settings.lease).await?;
        let leases = rows::leases(&self.store.reads, cluster.settings.lease).await?;
        Ok(Some(ClusterStatus {
            node: cluster.node.clone(),
            lease_ms: cluster.settings.lease.as_millis() as u64,
            nodes: nodes
                .into_iter()
                .map(|n| {
                    let owns = leases
                        .iter()
                        .filter(|l| l.node == n.id && l.expires_in_ms >= 0)
                        .map(|l| l.work.clone())
                        .collect();
                    NodeStatus { node: n, owns }
                })
                .collect(),
            leases,
        }))
    }
}

/// How often a node refreshes what it shows of reducers other nodes fold.
const REFRESH: Duration = Duration::from_millis(250);

/// `GET /api/cluster`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClusterStatus {
    /// The node that answered.
    pub node: String,
    #[serde(rename = "leaseMs")]
    pub lease_ms: u64,
    pub nodes: Vec<NodeStatus>,
    pub leases: Vec<rows::LeaseRow>,
}

/// A live node and the work it holds leases on.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeStatus {
    #[serde(flatten)]
    pub node: rows::NodeRow,
    pub owns: Vec<String>,
}

impl crate::Engine {
    /// Where nodes share the database: records an upload (API §13) open here on the
    /// (sub)stream `path`, and answers its id for [`Engine::upload_closed`].
    pub async fn upload_opened(&self, path: &crate::path::StreamPath) -> Option<String> {
        let cluster = self.cluster.as_ref()?;
        let id = uuid::Uuid::new_v4().simple().to_string();
        let url = path.url();
        match rows::upload_opened(&self.store.reads, &id, &cluster.node, &url).await {
            Ok(()) => Some(id),
            Err(e) => {
                tracing::warn!(error = %e.message, "cannot record an open upload");
                None
            }
        }
    }

    /// Removes the record of an upload [`Engine::upload_opened`] made.
    pub async fn upload_closed(&self, id: &str) {
        if let Err(e) = rows::upload_closed(&self.store.reads, id).await {
            tracing::warn!(error = %e.message, "cannot remove the record of an upload");
        }
    }

    /// Whether a node (any, this one included where nodes share the database; none
    /// otherwise) has an upload open on `path`, or on a substream of it when it names
    /// no args.
    pub async fn upload_open_anywhere(&self, path: &crate::path::StreamPath) -> Result<bool> {
        let Some(cluster) = &self.cluster else {
            return Ok(false);
        };
        rows::upload_open(
            &self.store.reads,
            &path.url(),
            path.args.is_none(),
            cluster.settings.lease,
        )
        .await
    }

    /// Whether other nodes share the database.
    pub fn clustered(&self) -> bool {
        self.cluster.is_some()
    }
}
