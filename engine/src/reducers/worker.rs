//! A reducer thread: it owns the sandboxes of the streams placed on it (`pool.rs`)
//! and folds their reducers.
//!
//! JavaScript never runs on the async runtime: the engine talks to this thread over a
//! channel. Reducers of one stream share a sandbox (one QuickJS runtime, so `current`
//! reads the other reducers' live states) and fold event by event in dependency order.
//! The thread reads events itself with its own read-only rusqlite connection (the
//! fastest read path here, see LIMITS.md) and folds in slices of about [`SLICE`]:
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

use eddy_runtime_js::{Dispatch, EventIn, Fold, JsError, Limits, Prepared, Sandbox, Shape};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use super::ReducerStatus;
use super::data::for_reducer;
use super::events::read_batch;
use super::pool::{JsMemory, StopAt};
use super::published::{PUBLISH_BACKLOG, PUBLISH_CAUGHT_UP, Published, StateJson};
use crate::access::controls::{Controls, StreamControls};
use crate::dispatch::{dispatch_target, dispatched_event};
use crate::error::{EngineError, Result};
use crate::event::NewEvent;
use crate::path::{Args, StreamPath};
use crate::selector::Selector;
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
/// Longest time between two measurements of a busy sandbox's memory.
const MEASURE_EVERY: Duration = Duration::from_millis(500);

pub(crate) enum Msg {
    /// Events were committed: there may be work.
    Wake,
    /// A version stored by the writer (or loaded at start); `replaced` is a building
    /// version it superseded.
    Deploy(Box<ReducerRow>, StreamPath, Option<i64>),
    Delete {
        stream_id: i64,
        ids: Vec<i64>,
    },
    /// Save everything and end the thread.
    Shutdown,
}

pub(crate) struct Worker {
    pub(crate) conn: Connection,
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
}

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
    /// Events to read for the next slice: fewer after a slice ran out of time.
    pub(super) batch: i64,
    /// Slices folded, for alternating between rebuilding and live reducers.
    pub(super) turns: u64,
    /// The sandbox's memory limit now (its share of the server-wide budget).
    pub(super) memory_limit: usize,
    pub(super) measured_at: Option<Instant>,
    /// How long the last measurement took.
    pub(super) measure_cost: Duration,
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
    fn touched(&mut self, sid: i64) {
        if !self.dirty.contains(&sid) {
            self.dirty.push(sid);
        }
        if !self.fresh.contains(&sid) {
            self.fresh.push(sid);
        }
    }
}

/// On a plain stream, the index of the last event at or before global position
/// `position` (-1 before the first): what a reducer at `position` has folded. The
/// position may be past the stream's last event (it moves to the head when the stream
/// has nothing newer).
pub(crate) fn after_index(conn: &Connection, stream_id: i64, position: i64) -> Result<i64> {
    if position == 0 {
        return Ok(-1);
    }
    Ok(conn
        .prepare_cached(
            "SELECT MAX(e.idx) FROM events e JOIN substreams s ON s.id = e.sid \
             WHERE s.stream_id = ?1 AND s.args = '' AND e.pos <= ?2",
        )?
        .query_row(params![stream_id, position], |r| r.get::<_, Option<i64>>(0))?
        .unwrap_or(-1))
}

pub(crate) fn open_read_connection(file: &std::path::Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        file,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.pragma_update(None, "busy_timeout", 5000)?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
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
        publish
            .unwrap_or(CHECKPOINT_EVERY)
            .clamp(Duration::from_millis(1), CHECKPOINT_EVERY)
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Wake | Msg::Shutdown => {}
            Msg::Deploy(row, stream, replaced) => {
                if let Some(old) = replaced {
                    self.remove(row.stream_id, &[old]);
                }
                let stream_id = row.stream_id;
                if let Err(e) = self.add(*row, stream) {
                    tracing::error!(error = %e.message, "cannot load a deployed reducer");
                }
                self.publish(stream_id, false);
            }
            Msg::Delete { stream_id, ids } => self.remove(stream_id, &ids),
        }
    }

    /// Installs a reducer version, with its saved position.
    fn add(&mut self, row: ReducerRow, stream: StreamPath) -> Result<()> {
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
                    batch: BATCH,
                    turns: 0,
                    memory_limit: self.limits.memory_bytes,
                    measured_at: None,
                    measure_cost: Duration::ZERO,
                    published_at: Instant::now(),
                    unpublished: false,
                },
            );
        }
        let after_idx = after_index(&self.conn, row.stream_id, row.position)?;
        let group = self.groups.get_mut(&row.stream_id).expect("inserted above");
        group.factory = row.factory;
        let slot = group.next_slot;
        group.next_slot += 1;
        let code = Prepared {
            js: row.code.clone(),
            shape: if row.module {
                Shape::Module
            } else {
                Shape::Expression
            },
            reads: row.reads.clone(),
        };
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

    fn remove(&mut self, stream_id: i64, ids: &[i64]) {
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

    fn fold_group(&mut self, stream_id: i64, head: i64) -> Result<bool> {
        let Some(group) = self.groups.get_mut(&stream_id) else {
            return Ok(false);
        };
        let behind: Vec<usize> = (0..group.reducers.len())
            .filter(|&i| group.reducers[i].halted.is_none() && group.reducers[i].position < head)
            .collect();
        if behind.is_empty() {
            return Ok(false);
        }
        group.turns += 1;
        // Alternate between the furthest-behind reducer (a rebuild) and the furthest
        // ahead (the live ones), so a rebuild does not stall the others.
        let lead = if group.turns.is_multiple_of(2) {
            behind
                .iter()
                .copied()
                .min_by_key(|&i| group.reducers[i].position)
        } else {
            behind
                .iter()
                .copied()
                .max_by_key(|&i| group.reducers[i].position)
        }
        .expect("not empty");
        let (from_pos, after_idx) = (
            group.reducers[lead].position,
            group.reducers[lead].after_idx,
        );
        let limit = group.batch;
        let rows = read_batch(&self.conn, group, from_pos, after_idx, head, limit)?;
        if rows.is_empty() {
            // nothing of this stream up to head after `from_pos`: the reducers that
            // had reached it are caught up (one further behind has its own turn)
            for &i in &behind {
                if group.reducers[i].position >= from_pos {
                    group.reducers[i].position = head;
                }
            }
            return Ok(false);
        }
        let started = Instant::now();
        let until = match self.stop.deadline() {
            Some(stop) => stop.min(started + SLICE),
            None => started + SLICE,
        };
        // this sandbox's share of the server-wide JavaScript memory
        let allowed = self.memory.allowance(stream_id, self.limits.memory_bytes);
        if allowed != group.memory_limit {
            group.sandbox.set_memory_limit(allowed);
            group.memory_limit = allowed;
        }
        // the stream's settings may have changed since the last batch
        let settings: Option<String> = self
            .conn
            .prepare_cached("SELECT settings FROM streams WHERE id = ?1")?
            .query_row(params![stream_id], |r| r.get(0))
            .optional()?;
        *group.request_hosts.borrow_mut() = settings
            .map(|json| crate::settings::StreamSettings::from_stored(&json, false).request_hosts)
            .unwrap_or_default();
        for row in &rows {
            if group.factory && !group.subs.contains_key(&row.sid) {
                let args: String = self
                    .conn
                    .prepare_cached("SELECT args FROM substreams WHERE id = ?1")?
                    .query_row(params![row.sid], |r| r.get(0))?;
                let parsed = Args::parse(&args).ok();
                let json = parsed.as_ref().map(|a| a.to_json().to_string());
                let name = format!("{}({})", group.stream, args);
                group.subs.insert(
                    row.sid,
                    SubInfo {
                        name,
                        args: parsed,
                        json,
                    },
                );
            }
        }
        let plain_name = group.stream.to_string();
        let mut work: Vec<(usize, i64, usize)> = Vec::new(); // (reducer, sid, row)
        let mut inputs: Vec<EventIn> = Vec::with_capacity(rows.len());
        let converted: Vec<_> = rows
            .iter()
            .map(|r| for_reducer(&r.content_type, &r.data))
            .collect();
        let ids: Vec<String> = rows.iter().map(|r| r.id.to_string()).collect();
        for (k, row) in rows.iter().enumerate() {
            let (stream, args_json) = match group.subs.get(&row.sid) {
                Some(sub) => (sub.name.as_str(), sub.json.as_deref()),
                None => (plain_name.as_str(), None),
            };
            inputs.push(row.event_in(stream, &ids[k], &converted[k], args_json));
        }
        // plan the calls: each reducer folds the events past its position that its
        // selector takes (a reducer behind this batch's start waits for its own turn)
        for (ri, r) in group.reducers.iter().enumerate() {
            if r.halted.is_some() || r.position < from_pos {
                continue;
            }
            for (k, row) in rows.iter().enumerate() {
                if row.pos <= r.position {
                    continue;
                }
                let args = group.subs.get(&row.sid).and_then(|s| s.args.as_ref());
                if (!group.factory || r.selector.matches_args(args))
                    && r.selector.matches(&row.event_type, row.idx as u64, row.ts)
                {
                    work.push((ri, row.sid, k));
                }
            }
        }
        let turn = self.turn;
        for &(ri, sid, _) in &work {
            let r = &mut group.reducers[ri];
            if !r.live.contains_key(&sid) {
                let saved: Option<(i64, Option<String>)> = self
                    .conn
                    .prepare_cached(
                        "SELECT idx, state FROM reducer_states WHERE reducer_id = ?1 AND sid = ?2",
                    )?
                    .query_row(params![r.row.id, sid], |q| Ok((q.get(0)?, q.get(1)?)))
                    .optional()?;
                let (idx, state) = saved.unwrap_or((-1, None));
                if let Err(e) = group.sandbox.set_state(r.slot, sid, state.as_deref()) {
                    tracing::error!(error = %e.message, "cannot restore a saved state");
                }
                r.live.insert(sid, (idx, turn));
            }
        }
        // fold event by event, each reducer after those it reads, until the slice is
        // used up
        work.sort_by_key(|&(ri, _, k)| (k, ri));
        let calls: Vec<Fold> = work
            .iter()
            .map(|&(ri, sid, k)| Fold {
                slot: group.reducers[ri].slot,
                sid,
                index: rows[k].idx,
                event: &inputs[k],
                halt_on_error: group.reducers[ri].row.halt_on_error,
                live: !group.reducers[ri].row.building
                    && rows[k].pos > group.reducers[ri].live_from,
                check_size: false,
            })
            .collect();
        let mut types = TypeChecks::new(&self.controls, &self.http.1, &group.stream);
        let (done, failures) =
            group
                .sandbox
                .fold_until(&calls, &mut |ds| types.check(ds), Some(until));
        drop(calls);
        // the rows before the first call not made were folded whole
        let folded_rows = work.get(done).map_or(rows.len(), |&(_, _, k)| k);
        work.truncate(done);
        let rows = &rows[..folded_rows];
        group.batch = if folded_rows == inputs.len() {
            (group.batch * 2).min(BATCH)
        } else {
            (folded_rows as i64 * 2).max(8)
        };
        let mut failed_at: HashMap<usize, JsError> = failures.into_iter().collect();
        let console = group.sandbox.console();
        let dispatches = group.sandbox.dispatches();
        // dispatched ids derive from the source event's time (see `derived_id`); log
        // entries are ordered by the source event's position
        let times: HashMap<(i64, i64), (i64, i64)> = if dispatches.is_empty() && console.is_empty()
        {
            HashMap::new()
        } else {
            rows.iter()
                .map(|r| ((r.sid, r.idx), (r.ts, r.pos)))
                .collect()
        };
        for line in console {
            let Some(r) = group
                .reducers
                .iter_mut()
                .find(|r| Some(r.slot) == line.slot)
            else {
                continue;
            };
            let index = line.index.unwrap_or(-1);
            let substream = line
                .sid
                .and_then(|sid| group.subs.get(&sid))
                .map_or(plain_name.as_str(), |s| s.name.as_str());
            let pos = line
                .sid
                .and_then(|sid| times.get(&(sid, index)))
                .map_or(-1, |t| t.1);
            r.logs.push((
                (pos, 0),
                log_event(
                    &line.level,
                    &r.row.name,
                    substream,
                    index,
                    &line.message,
                    None,
                ),
            ));
        }
        for d in dispatches {
            let Some(r) = group.reducers.iter_mut().find(|r| r.slot == d.slot) else {
                continue;
            };
            let source = group
                .subs
                .get(&d.sid)
                .map_or(plain_name.as_str(), |s| s.name.as_str());
            let (ts, pos) = times.get(&(d.sid, d.index)).copied().unwrap_or_default();
            match route(&group.stream, &r.row.name, source, ts, &d) {
                Ok(routed) => r.dispatches.push((d.sid, routed)),
                Err(e) => {
                    r.new_errors += 1;
                    r.logs.push((
                        (pos, 1),
                        log_event("error", &r.row.name, source, d.index, &e.message, None),
                    ));
                }
            }
        }
        // (reducer, why, the row it stopped at)
        let mut halted_now: Vec<(usize, String, usize)> = Vec::new();
        for (c, &(ri, sid, k)) in work.iter().enumerate() {
            let r = &mut group.reducers[ri];
            if r.halted.is_some() || halted_now.iter().any(|(h, ..)| *h == ri) {
                continue;
            }
            if let Some(error) = failed_at.remove(&c) {
                r.new_errors += 1;
                let substream = group
                    .subs
                    .get(&sid)
                    .map_or(plain_name.clone(), |s| s.name.clone());
                r.logs.push((
                    (rows[k].pos, 1),
                    log_event(
                        "error",
                        &r.row.name,
                        &substream,
                        rows[k].idx,
                        &error.message,
                        error.stack.as_deref(),
                    ),
                ));
                if r.row.halt_on_error {
                    let reason = format!(
                        "halted at index {} of {substream}: {}",
                        rows[k].idx, error.message
                    );
                    halted_now.push((ri, reason, k));
                    continue;
                }
            }
            let entry = r.live.entry(sid).or_insert((-1, turn));
            *entry = (rows[k].idx, turn);
            r.touched(sid);
        }
        if let Some(last) = rows.last() {
            for (ri, r) in group.reducers.iter_mut().enumerate() {
                if let Some((_, reason, k)) = halted_now.iter().find(|(h, ..)| *h == ri) {
                    // folded up to the event before the one that stopped it
                    r.halted = Some(reason.clone());
                    r.position = rows[*k].pos - 1;
                    r.after_idx = rows[*k].idx - 1;
                    continue;
                }
                if r.halted.is_none()
                    && r.position < last.pos
                    && r.position >= from_pos
                    && behind.contains(&ri)
                {
                    r.position = last.pos;
                    r.after_idx = last.idx;
                }
            }
        }
        // measuring walks the whole heap: after every slice while that takes less than
        // a millisecond, and otherwise at most a tenth of the time
        let every = if group.measure_cost < Duration::from_millis(1) {
            Duration::ZERO
        } else {
            (group.measure_cost * 10).min(MEASURE_EVERY)
        };
        if group.measured_at.is_none_or(|at| at.elapsed() >= every) {
            let at = Instant::now();
            self.memory
                .record(stream_id, group.sandbox.memory_used() as usize);
            group.measure_cost = at.elapsed();
            group.measured_at = Some(Instant::now());
        }
        group.unpublished = true;
        tracing::trace!(
            stream_id,
            rows = folded_rows,
            elapsed_us = started.elapsed().as_micros() as u64,
            "folded a slice"
        );
        Ok(true)
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

/// The event that `d`, dispatched by reducer `name` of `stream` while folding the
/// event of `source` stamped `ts`, appends.
pub(super) fn route(
    stream: &StreamPath,
    name: &str,
    source: &str,
    ts: i64,
    d: &Dispatch,
) -> Result<Routed> {
    // the reducer's name, not its version: a rebuild dispatches the same ids
    let scope = format!("reducer:{stream}.{name}");
    dispatched_event(&stream.account, &scope, source, d.index as u64, ts, d)
}

/// Checks dispatched events against the event types of the streams they go to (API
/// §6), as an append over HTTP is checked; controls are looked up once per stream
/// per batch.
pub(super) struct TypeChecks<'a> {
    controls: &'a Controls,
    runtime: &'a tokio::runtime::Handle,
    stream: StreamPath,
    seen: HashMap<String, Option<Arc<StreamControls>>>,
}

impl<'a> TypeChecks<'a> {
    pub(super) fn new(
        controls: &'a Controls,
        runtime: &'a tokio::runtime::Handle,
        stream: &StreamPath,
    ) -> Self {
        Self {
            controls,
            runtime,
            stream: stream.clone(),
            seen: HashMap::new(),
        }
    }

    /// Refuses the dispatches of one call when one of them does not match its type.
    /// Dispatches to streams code may not reach pass here: they are refused with
    /// their own log entry when they are taken.
    pub(super) fn check(&mut self, dispatches: &[Dispatch]) -> std::result::Result<(), String> {
        for d in dispatches {
            let Ok(target) = dispatch_target(&self.stream.account, d) else {
                continue;
            };
            let name = target.stream.as_str();
            if !self.seen.contains_key(name) {
                let got = self
                    .runtime
                    .block_on(self.controls.get(target.account.as_str(), name));
                let got = match got {
                    Ok(c) if c.has_types() => Some(c),
                    Ok(_) => None,
                    Err(e) => {
                        tracing::warn!(error = %e.message, "cannot read a dispatch target's types");
                        None
                    }
                };
                self.seen.insert(name.to_owned(), got);
            }
            let Some(Some(controls)) = self.seen.get(name) else {
                continue;
            };
            if let Err(e) =
                controls.validate(&d.event_type, "application/json", d.data_json.as_bytes())
            {
                let target = StreamPath {
                    args: None,
                    ..target
                };
                return Err(format!(
                    "dispatch to {target} of an event of type {:?} was refused, and the event \
                     is skipped as if it had thrown: {}",
                    d.event_type, e.message
                ));
            }
        }
        Ok(())
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
