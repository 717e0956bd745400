//! A reducer thread: it owns the sandboxes of the streams placed on it (`pool.rs`)
//! and folds their reducers.
//!
//! JavaScript never runs on the async runtime: the engine talks to this thread over a
//! channel. Reducers of one stream share a sandbox (one QuickJS runtime, so `current`
//! reads the other reducers' live states) and fold event by event in dependency order.
//! The thread reads events itself with its own read-only rusqlite connection (the
//! fastest read path here, see LIMITS.md) and folds in slices of about [`SLICE`]
//! (one slice: `fold.rs`):
//! every account with work gets one slice per round, so a stream whose reducers use
//! their whole time limit on every event delays the others by about one event's time.
//! States are published for readers (`published.rs`) and saved with the position and
//! log entries in one writer transaction (a checkpoint) at most every
//! [`CHECKPOINT_EVERY`], when a batch leaves many states dirty, and at shutdown.
//! Between checkpoints the live states run ahead of the saved ones; after a crash the
//! reducer resumes from its checkpoint and folds the same events again into the same
//! states, so each event counts exactly once in every saved state.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use eddy_runtime_js::{Limits, Sandbox};

use super::ReducerStatus;
use super::pool::{JsMemory, StopAt};
use super::published::{PUBLISH_BACKLOG, PUBLISH_CAUGHT_UP, Published, StateJson};
use crate::access::controls::Controls;
use crate::error::{EngineError, Result};
use crate::event::NewEvent;
use crate::path::{Args, StreamPath};
use crate::selector::Selector;
use crate::store::cluster::Fence;
use crate::store::fold_source::FoldSource;
use crate::store::pipe_writes::Routed;
use crate::store::reducer_writes::ReducerRow;
use crate::store::writer::WriterHandle;

/// Most events read and folded per slice, per stream.
pub(super) const BATCH: i64 = 1000;
/// The folding time one stream gets before the thread turns to the next account.
pub(crate) const SLICE: Duration = Duration::from_millis(20);
/// Longest time live states run ahead of their checkpoint.
pub(crate) const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);
/// Dirty states that force a checkpoint after a batch.
pub(super) const DIRTY_MAX: usize = 5_000;

pub(crate) enum Msg {
    /// Events were committed: there may be work.
    Wake,
    /// A version stored by the writer (or loaded at start); `replaced` is a building
    /// version it superseded; the fence is the lease the stream's reducers run under
    /// where leases are kept.
    Deploy(Box<ReducerRow>, StreamPath, Option<i64>, Option<Fence>),
    /// Another node runs the stream's reducers from now on: save and let go of them,
    /// then say so.
    Unload {
        stream_id: i64,
        done: tokio::sync::oneshot::Sender<()>,
    },
    Delete {
        stream_id: i64,
        ids: Vec<i64>,
    },
    /// Save everything and end the thread.
    Shutdown,
}

pub(crate) struct Worker {
    pub(crate) source: FoldSource,
    pub(crate) writer: WriterHandle,
    pub(crate) durable: Arc<AtomicI64>,
    pub(crate) limits: Limits,
    /// Stream controls, for the types of the streams reducers dispatch to.
    pub(crate) controls: Arc<Controls>,
    pub(crate) max_live: usize,
    pub(crate) published: Arc<Published>,
    pub(crate) memory: Arc<JsMemory>,
    pub(crate) stop: Arc<StopAt>,
    pub(crate) groups: HashMap<i64, Group>,
    /// The streams of each account with reducers here, for fair turns.
    pub(crate) accounts: Vec<(String, Vec<i64>)>,
    pub(crate) turn: u64,
    /// The client and runtime `request()` calls go through.
    pub(crate) http: (super::request::RequestClient, tokio::runtime::Handle),
    /// Deployed reducers whose load failed (the database out of reach): tried again
    /// until they load, or are deleted or replaced.
    pub(crate) unloaded: Vec<LoadLater>,
}

/// A deployed reducer that could not be loaded yet, and when to try again.
pub(crate) struct LoadLater {
    row: Box<ReducerRow>,
    stream: StreamPath,
    fence: Option<Fence>,
    next_try: Instant,
    wait: Duration,
}

/// The first wait before loading a reducer again, doubled up to [`RELOAD_MAX`].
const RELOAD_FIRST: Duration = Duration::from_millis(250);
const RELOAD_MAX: Duration = Duration::from_secs(5);

/// The reducers of one stream and their sandbox.
pub(crate) struct Group {
    pub(super) stream: StreamPath,
    pub(super) factory: bool,
    pub(super) sandbox: Sandbox,
    /// In dependency order: a reducer comes after those it reads.
    pub(super) reducers: Vec<Live>,
    pub(super) next_slot: u32,
    /// Factory substreams seen so far, by substream id.
    pub(super) subs: HashMap<i64, SubInfo>,
    /// The plain stream's substream id, once it exists.
    pub(super) plain_sid: Option<i64>,
    /// The stream's `requestHosts`, shared with the sandbox's `request()` host.
    pub(super) request_hosts: Rc<RefCell<Vec<String>>>,
    /// The stream's `snapshotEvery` (0: no snapshots).
    pub(super) snapshot_every: i64,
    /// Events to read for the next slice: fewer after a slice ran out of time.
    pub(super) batch: i64,
    /// The lease the stream's reducers run under, where leases are kept; every
    /// checkpoint carries it.
    pub(super) fence: Option<Fence>,
    /// Slices folded, for alternating between rebuilding and live reducers.
    pub(super) turns: u64,
    /// The sandbox's memory limit now (its share of the server-wide budget).
    pub(super) memory_limit: usize,
    pub(super) measured_at: Option<Instant>,
    /// How long the last measurement took.
    pub(super) measure_cost: Duration,
    /// What the last measurement found.
    pub(super) measured_bytes: usize,
    pub(super) published_at: Instant,
    /// Folded since the last publish.
    pub(super) unpublished: bool,
}

pub(super) struct SubInfo {
    /// `acct/strm('a')`, as in event envelopes.
    pub(super) name: String,
    pub(super) args: Option<Args>,
    /// The args as a JSON array, for `event.args`.
    pub(super) json: Option<String>,
}

pub(super) struct Live {
    pub(super) row: ReducerRow,
    pub(super) slot: u32,
    pub(super) selector: Selector,
    pub(super) position: i64,
    /// Plain streams: the index of the event at `position` (-1 before the first).
    pub(super) after_idx: i64,
    /// Substreams whose state is live in the sandbox: last index folded, last use.
    pub(super) live: HashMap<i64, (i64, u64)>,
    /// Substreams changed since the last checkpoint.
    pub(super) dirty: Vec<i64>,
    /// Substreams changed since the last publish.
    pub(super) fresh: Vec<i64>,
    /// The states published since the last checkpoint, which it saves.
    pub(super) pending: HashMap<i64, (i64, StateJson)>,
    /// Substreams whose state was over the size limit when published: the checkpoint
    /// folds them again (`oversize.rs`).
    pub(super) over: Vec<i64>,
    /// Log entries since the last checkpoint, each with the position of the event it
    /// is about and its rank there (console output 0, an error 1), so that they are
    /// saved in event order whichever step found them.
    pub(super) logs: Vec<((i64, u8), NewEvent)>,
    /// Snapshots taken since the last checkpoint, which it saves: (substream, last
    /// index folded, state JSON).
    pub(super) snapshots: Vec<(i64, i64, Option<String>)>,
    /// Events dispatched since the last checkpoint, with the substream whose event
    /// dispatched them, appended with it.
    pub(super) dispatches: Vec<(i64, Routed)>,
    /// Events at or below this position were stored before this version was loaded:
    /// folding them is a replay, and `request()` is voided.
    pub(super) live_from: i64,
    pub(super) new_errors: i64,
    pub(super) halted: Option<String>,
    pub(super) saved_position: i64,
    pub(super) saved_at: Instant,
}

impl Live {
    /// What `/reducers` shows of this version (the lag is counted by the reader).
    pub(super) fn status(&self, factory: bool) -> ReducerStatus {
        ReducerStatus {
            name: self.row.name.clone(),
            building: self.row.building,
            code_hash: self.row.code_hash.clone(),
            position: self.position,
            index: (!factory).then_some(self.after_idx),
            lag: 0,
            errors: self.row.errors + self.new_errors,
            halted: self.halted.clone(),
            selector: self.row.selector.clone(),
            halt_on_error: self.row.halt_on_error,
            live_states: self.live.len(),
        }
    }

    /// Marks substream `sid` changed.
    pub(super) fn touched(&mut self, sid: i64) {
        if !self.dirty.contains(&sid) {
            self.dirty.push(sid);
        }
        if !self.fresh.contains(&sid) {
            self.fresh.push(sid);
        }
    }
}

impl Worker {
    pub(crate) fn run(mut self, rx: mpsc::Receiver<Msg>) {
        let mut busy = true;
        loop {
            if self.stop.reached() {
                break;
            }
            let next = if busy {
                match rx.try_recv() {
                    Ok(m) => Some(m),
                    Err(mpsc::TryRecvError::Empty) => None,
                    Err(mpsc::TryRecvError::Disconnected) => break,
                }
            } else {
                match rx.recv_timeout(self.idle_wait()) {
                    Ok(m) => Some(m),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            };
            if let Some(msg) = next {
                if let Msg::Shutdown = msg {
                    break;
                }
                self.handle(msg);
                busy = true;
                continue;
            }
            self.load_again();
            busy = self.step();
            self.publish_due();
            self.checkpoint_all(false);
        }
        self.checkpoint_all(true);
    }

    /// How long an idle thread may sleep: until a checkpoint or a publish is due.
    fn idle_wait(&self) -> Duration {
        let publish = self
            .groups
            .values()
            .filter(|g| g.unpublished)
            .map(|g| PUBLISH_CAUGHT_UP.saturating_sub(g.published_at.elapsed()))
            .min();
        let reload = (self.unloaded.iter())
            .map(|u| u.next_try.saturating_duration_since(Instant::now()))
            .min();
        publish
            .into_iter()
            .chain(reload)
            .min()
            .unwrap_or(CHECKPOINT_EVERY)
            .clamp(Duration::from_millis(1), CHECKPOINT_EVERY)
    }

    /// Loads again the reducers whose load failed, when their wait is over.
    fn load_again(&mut self) {
        let now = Instant::now();
        if !self.unloaded.iter().any(|u| u.next_try <= now) {
            return;
        }
        let (due, later): (Vec<LoadLater>, Vec<LoadLater>) = std::mem::take(&mut self.unloaded)
            .into_iter()
            .partition(|u| u.next_try <= now);
        self.unloaded = later;
        for u in due {
            self.load(u);
        }
    }

    /// Installs a deployed reducer, or keeps it to try again after its wait (doubled
    /// each time) when the load fails: the database out of reach, a lost connection.
    /// The reducer stays deployed and its lease held meanwhile, so it must load here.
    fn load(&mut self, mut u: LoadLater) {
        let stream_id = u.row.stream_id;
        match self.add((*u.row).clone(), u.stream.clone(), u.fence.clone()) {
            Ok(()) => self.publish(stream_id, false),
            Err(e) => {
                tracing::warn!(error = %e.message, reducer = u.row.id, retry_in = ?u.wait, "cannot load a deployed reducer yet");
                u.next_try = Instant::now() + u.wait;
                u.wait = (u.wait * 2).min(RELOAD_MAX);
                self.unloaded.push(u);
                self.publish(stream_id, false);
            }
        }
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Wake | Msg::Shutdown => {}
            Msg::Deploy(row, stream, replaced, fence) => {
                if let Some(old) = replaced {
                    self.remove(row.stream_id, &[old]);
                    self.unloaded.retain(|u| u.row.id != old);
                }
                self.unloaded.retain(|u| u.row.id != row.id);
                self.load(LoadLater {
                    row,
                    stream,
                    fence,
                    next_try: Instant::now(),
                    wait: RELOAD_FIRST,
                });
            }
            Msg::Delete { stream_id, ids } => {
                self.unloaded
                    .retain(|u| u.row.stream_id != stream_id || !ids.contains(&u.row.id));
                self.remove(stream_id, &ids);
            }
            Msg::Unload { stream_id, done } => {
                self.unloaded.retain(|u| u.row.stream_id != stream_id);
                self.checkpoint_all(true);
                let ids: Vec<i64> = self
                    .groups
                    .get(&stream_id)
                    .map(|g| g.reducers.iter().map(|r| r.row.id).collect())
                    .unwrap_or_default();
                self.remove(stream_id, &ids);
                let _ = done.send(());
            }
        }
    }

    /// Installs a reducer version, with its saved position (read again here: another
    /// node, or this one before a restart of the stream, may have saved past the row's).
    fn add(&mut self, mut row: ReducerRow, stream: StreamPath, fence: Option<Fence>) -> Result<()> {
        let Some(saved) = self.source.saved_progress(row.id)? else {
            // deleted meanwhile
            return Ok(());
        };
        if saved.position > row.position {
            row.position = saved.position;
            row.errors = saved.errors;
            row.halted = saved.halted;
            row.building = saved.building;
        }
        if let Some(group) = self.groups.get_mut(&row.stream_id) {
            if fence.is_some() {
                group.fence = fence.clone();
            }
            if group.reducers.iter().any(|r| r.row.id == row.id) {
                return Ok(());
            }
        }
        if !self.groups.contains_key(&row.stream_id) {
            let mut sandbox =
                Sandbox::new(self.limits.clone()).map_err(|e| EngineError::internal(e.message))?;
            let request_hosts = Rc::new(RefCell::new(Vec::new()));
            sandbox.set_host(Box::new(super::request::HttpHost {
                client: self.http.0.clone(),
                runtime: self.http.1.clone(),
                hosts: request_hosts.clone(),
                stream: stream.to_string(),
            }));
            let account = stream.account.as_str().to_owned();
            match self
                .accounts
                .binary_search_by(|(a, _)| a.as_str().cmp(&account))
            {
                Ok(i) => self.accounts[i].1.push(row.stream_id),
                Err(i) => self.accounts.insert(i, (account, vec![row.stream_id])),
            }
            self.groups.insert(
                row.stream_id,
                Group {
                    stream,
                    factory: row.factory,
                    sandbox,
                    reducers: Vec::new(),
                    next_slot: 0,
                    subs: HashMap::new(),
                    plain_sid: None,
                    request_hosts,
                    snapshot_every: 0,
                    batch: BATCH,
                    fence,
                    turns: 0,
                    memory_limit: self.limits.memory_bytes,
                    measured_at: None,
                    measure_cost: Duration::ZERO,
                    measured_bytes: 0,
                    published_at: Instant::now(),
                    unpublished: false,
                },
            );
        }
        let after_idx = self.source.after_index(row.stream_id, row.position)?;
        let group = self.groups.get_mut(&row.stream_id).expect("inserted above");
        group.factory = row.factory;
        // looked up again: a splice gives a plain stream a new substream
        group.plain_sid = None;
        let slot = group.next_slot;
        group.next_slot += 1;
        let code = row.prepared();
        let mut halted = row.halted.clone();
        if let Err(e) = group.sandbox.load(slot, &sandbox_name(&row), &code) {
            halted = Some(format!("the code failed to load: {}", e.message));
        }
        let selector = Selector::parse_query(&row.selector).unwrap_or_default();
        let position = row.position;
        let live_from = row
            .live_from
            .unwrap_or_else(|| self.durable.load(Ordering::Acquire));
        group.reducers.push(Live {
            row,
            slot,
            selector,
            position,
            after_idx,
            live: HashMap::new(),
            dirty: Vec::new(),
            fresh: Vec::new(),
            pending: HashMap::new(),
            over: Vec::new(),
            logs: Vec::new(),
            snapshots: Vec::new(),
            dispatches: Vec::new(),
            live_from,
            new_errors: 0,
            halted,
            saved_position: position,
            saved_at: Instant::now(),
        });
        sort_by_dependency(&mut group.reducers);
        Ok(())
    }

    pub(super) fn remove(&mut self, stream_id: i64, ids: &[i64]) {
        let Some(group) = self.groups.get_mut(&stream_id) else {
            return;
        };
        group.reducers.retain(|r| {
            if ids.contains(&r.row.id) {
                group.sandbox.unload(r.slot, &sandbox_name(&r.row));
                false
            } else {
                true
            }
        });
        if group.reducers.is_empty() {
            self.groups.remove(&stream_id);
            self.memory.forget(stream_id);
            for (_, streams) in &mut self.accounts {
                streams.retain(|&id| id != stream_id);
            }
            self.accounts.retain(|(_, streams)| !streams.is_empty());
        }
    }

    /// One round: every account with work gets a slice of one of its streams, in
    /// turn. Answers whether any work was done.
    fn step(&mut self) -> bool {
        self.turn += 1;
        let accounts = std::mem::take(&mut self.accounts);
        let mut worked = false;
        'accounts: for (_, streams) in &accounts {
            let start = (self.turn as usize) % streams.len().max(1);
            for k in 0..streams.len() {
                if self.stop.reached() {
                    break 'accounts;
                }
                let id = streams[(start + k) % streams.len()];
                // read for each stream: what was committed during the slice before counts
                let head = self.durable.load(Ordering::Acquire);
                match self.fold_group(id, head) {
                    Ok(true) => {
                        worked = true;
                        break;
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::error!(error = %e.message, stream_id = id, "folding failed")
                    }
                }
            }
        }
        // streams added while folding (none can be: messages wait) keep their place
        self.accounts = accounts;
        worked
    }

    /// Publishes the streams whose new states are due: at once when their reducers
    /// have caught up (and the last publish is not too recent), during a backlog every
    /// [`PUBLISH_BACKLOG`].
    fn publish_due(&mut self) {
        let head = self.durable.load(Ordering::Acquire);
        let due: Vec<i64> = self
            .groups
            .iter()
            .filter(|(_, g)| {
                let fresh = g.unpublished;
                let caught_up = g
                    .reducers
                    .iter()
                    .all(|r| r.halted.is_some() || r.position >= head);
                let since = g.published_at.elapsed();
                fresh && ((caught_up && since >= PUBLISH_CAUGHT_UP) || since >= PUBLISH_BACKLOG)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.publish(id, false);
        }
    }

    /// Publishes a stream's reducers: their status, and the states changed since the
    /// last publish (kept for the next checkpoint). With `saved`, a checkpoint has
    /// just stored every pending state and readers find them saved.
    pub(super) fn publish(&mut self, stream_id: i64, saved: bool) {
        let Some(group) = self.groups.get_mut(&stream_id) else {
            return;
        };
        let limit = self.limits.state_bytes;
        for ri in 0..group.reducers.len() {
            let mut changed = Vec::new();
            let fresh = std::mem::take(&mut group.reducers[ri].fresh);
            for sid in fresh {
                let r = &mut group.reducers[ri];
                if r.over.contains(&sid) {
                    // not shown again until the checkpoint has folded it anew
                    continue;
                }
                let idx = r.live.get(&sid).map_or(-1, |l| l.0);
                let failure = match group.sandbox.state(r.slot, sid) {
                    Ok(Some(json)) if json.len() > limit => {
                        // not shown: the checkpoint finds the event that made it so
                        if !r.over.contains(&sid) {
                            r.over.push(sid);
                        }
                        continue;
                    }
                    Ok(json) => {
                        let json: StateJson = json.map(Arc::from);
                        r.pending.insert(sid, (idx, json.clone()));
                        changed.push((sid, idx, json));
                        continue;
                    }
                    Err(e) => e.message,
                };
                r.new_errors += 1;
                let substream = group
                    .subs
                    .get(&sid)
                    .map_or_else(|| group.stream.to_string(), |s| s.name.clone());
                r.logs.push((
                    (i64::MAX, 1),
                    log_event("error", &r.row.name, &substream, idx, &failure, None),
                ));
                // forget the live state: it is read back from the last checkpoint
                group.sandbox.evict(r.slot, sid);
                r.live.remove(&sid);
                r.dirty.retain(|s| *s != sid);
                r.pending.remove(&sid);
                r.over.retain(|s| *s != sid);
            }
            let r = &group.reducers[ri];
            self.published
                .update(stream_id, r.row.id, r.status(group.factory), changed, saved);
        }
        group.published_at = Instant::now();
        group.unpublished = false;
        self.published.bump();
    }
}

/// The name a reducer version has in its sandbox, which `current` reads by: a
/// building version stays invisible under a name no reducer can have until it is
/// promoted.
pub(super) fn sandbox_name(row: &ReducerRow) -> String {
    if row.building {
        format!("{}#building", row.name)
    } else {
        row.name.clone()
    }
}

/// A log entry: an event of the stream's log, its type the level.
pub(super) fn log_event(
    level: &str,
    reducer: &str,
    substream: &str,
    index: i64,
    message: &str,
    stack: Option<&str>,
) -> NewEvent {
    let mut data = serde_json::json!({
        "reducer": reducer,
        "stream": substream,
        "index": index,
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
        // stamped by the writer: log entries of several reducers interleave, and a
        // stream's timestamps never decrease
        timestamp: None,
        metadata: None,
        origin: None,
    }
}

/// Orders reducers so each comes after the reducers it reads (deploy refuses cycles).
fn sort_by_dependency(reducers: &mut Vec<Live>) {
    let mut sorted: Vec<Live> = Vec::with_capacity(reducers.len());
    while !reducers.is_empty() {
        let ready = reducers
            .iter()
            .position(|r| {
                r.row.reads.iter().all(|d| {
                    !reducers
                        .iter()
                        .any(|o| &o.row.name == d && o.row.id != r.row.id)
                })
            })
            .unwrap_or(0);
        sorted.push(reducers.remove(ready));
    }
    *reducers = sorted;
}
