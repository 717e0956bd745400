//! One slice of folding: a stream's events read past its reducers' positions, folded
//! event by event (each reducer after those it reads) until the slice's time is up,
//! then the console output, dispatches, errors and halts of what was folded, and the
//! new positions. Dispatched events are checked against their destination's types.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use eddy_runtime_js::{ConsoleLine, Dispatch, EventIn, Fold, JsError, Sandbox};

use super::data::for_reducer;
use super::events::{Row, read_batch};
use super::pool::{JsMemory, Reservation};
use super::worker::{BATCH, Group, Live, SLICE, SubInfo, Worker, log_event};
use crate::access::controls::{Controls, StreamControls};
use crate::dispatch::{dispatch_target, dispatched_event, hops};
use crate::error::Result;
use crate::order::Index;
use crate::path::{Args, StreamPath};
use crate::store::fold_source::FoldSource;
use crate::store::pipe_writes::Routed;

/// Longest time between two measurements of a busy sandbox's memory.
const MEASURE_EVERY: Duration = Duration::from_millis(500);

impl Worker {
    pub(super) fn fold_group(&mut self, stream_id: i64, head: i64) -> Result<bool> {
        // the next read is sent ahead only where the next slice is likely to be this
        // group's, from where this one ends (see below)
        let alone = self.groups.len() == 1;
        let Some(group) = self.groups.get_mut(&stream_id) else {
            return Ok(false);
        };
        let Some((behind, lead)) = lead(group, head) else {
            return Ok(false);
        };
        let (from_pos, after_idx) = (
            group.reducers[lead].position,
            group.reducers[lead].after_idx,
        );
        let limit = group.batch;
        let rows = read_batch(&self.source, group, from_pos, after_idx, head, limit)?;
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
        // this sandbox's share of the server-wide JavaScript memory, held for the
        // slice (`memory` is an Arc: the reservation borrows its own handle)
        let memory = self.memory.clone();
        let reservation = Reservation::new(
            &memory,
            stream_id,
            self.limits.memory_bytes,
            group.measured_bytes,
        );
        let allowed = reservation.allowed;
        if allowed != group.memory_limit {
            group.sandbox.set_memory_limit(allowed);
            group.memory_limit = allowed;
        }
        refresh(&self.source, group, stream_id, &rows)?;
        let plain_name = group.stream.to_string();
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
        let mut work = plan(group, &rows, from_pos);
        let turn = self.turn;
        restore(
            &self.source,
            &mut group.reducers,
            &mut group.sandbox,
            &work,
            turn,
        )?;
        // the next batch, should this one be folded whole, is read meanwhile: where
        // this thread folds no other stream, and every reducer behind reads from the
        // same place (a rebuild beside live reducers alternates between two)
        if alone
            && behind
                .iter()
                .all(|&i| group.reducers[i].position == from_pos)
        {
            self.source.read_ahead((limit * 2).min(BATCH))?;
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
        let failed_at: HashMap<usize, JsError> = failures.into_iter().collect();
        let console = group.sandbox.console();
        let dispatches = group.sandbox.dispatches();
        record_output(group, rows, console, dispatches, &plain_name);
        let (halted_now, crossed) =
            record_results(group, &work, failed_at, rows, turn, &plain_name);
        advance(group, rows, &halted_now, from_pos, &behind);
        snapshot(group, &crossed, self.limits.state_bytes);
        measure(group, &self.memory, stream_id, self.limits.memory_bytes);
        drop(reservation);
        group.unpublished = true;
        tracing::trace!(
            stream_id,
            rows = folded_rows,
            elapsed_us = started.elapsed().as_micros() as u64,
            "folded a slice"
        );
        Ok(true)
    }
}

/// The reducers of `group` behind `head` and the one whose position this slice reads
/// from, or `None` when all are caught up (or halted).
fn lead(group: &mut Group, head: i64) -> Option<(Vec<usize>, usize)> {
    let behind: Vec<usize> = (0..group.reducers.len())
        .filter(|&i| group.reducers[i].halted.is_none() && group.reducers[i].position < head)
        .collect();
    if behind.is_empty() {
        return None;
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
    Some((behind, lead))
}

/// The calls of a slice, as (reducer, substream, row): each reducer folds the events
/// of `rows` past its position that its selector takes (a reducer behind `from_pos`,
/// where the rows start, waits for its own turn).
fn plan(group: &Group, rows: &[Row], from_pos: i64) -> Vec<(usize, i64, usize)> {
    let mut work = Vec::new();
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
                && r.selector
                    .matches(&row.event_type, Index(row.idx as u64), row.ts)
            {
                work.push((ri, row.sid, k));
            }
        }
    }
    work
}

/// Reads what may have changed since the last slice: the stream's `requestHosts`, and
/// the names and args of factory substreams first seen in `rows`.
fn refresh(source: &FoldSource, group: &mut Group, stream_id: i64, rows: &[Row]) -> Result<()> {
    let settings = source
        .stream_settings(stream_id)?
        .map(|json| crate::settings::StreamSettings::from_stored(&json, false))
        .unwrap_or_default();
    *group.request_hosts.borrow_mut() = settings.request_hosts;
    group.snapshot_every = settings.snapshot_every.min(i64::MAX as u64) as i64;
    for row in rows {
        if group.factory && !group.subs.contains_key(&row.sid) {
            let args = source.substream_args(row.sid)?;
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
    Ok(())
}

/// Restores the saved state of each substream a reducer of `work` folds and does not
/// hold live yet.
fn restore(
    source: &FoldSource,
    reducers: &mut [Live],
    sandbox: &mut Sandbox,
    work: &[(usize, i64, usize)],
    turn: u64,
) -> Result<()> {
    for &(ri, sid, _) in work {
        let r = &mut reducers[ri];
        if !r.live.contains_key(&sid) {
            let saved = source.saved_state(r.row.id, sid)?;
            let (idx, state) = saved.unwrap_or((-1, None));
            if let Err(e) = sandbox.set_state(r.slot, sid, state.as_deref()) {
                tracing::error!(error = %e.message, "cannot restore a saved state");
            }
            r.live.insert(sid, (idx, turn));
        }
    }
    Ok(())
}

/// Logs the console output and routes the dispatches of what was folded.
fn record_output(
    group: &mut Group,
    rows: &[Row],
    console: Vec<ConsoleLine>,
    dispatches: Vec<Dispatch>,
    plain_name: &str,
) {
    // dispatched ids derive from the source event's time (see `derived_id`); log
    // entries are ordered by the source event's position
    let times: HashMap<(i64, i64), (i64, i64, u32)> = if dispatches.is_empty() && console.is_empty()
    {
        HashMap::new()
    } else {
        rows.iter()
            .map(|r| ((r.sid, r.idx), (r.ts, r.pos, hops(r.origin.as_deref()))))
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
            .map_or(plain_name, |s| s.name.as_str());
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
            .map_or(plain_name, |s| s.name.as_str());
        let (ts, pos, hops) = times.get(&(d.sid, d.index)).copied().unwrap_or_default();
        match route(&group.stream, &r.row.name, (source, hops), ts, &d) {
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
}

/// A reducer that halts: (reducer, why, the row it stopped at).
type Halt = (usize, String, usize);

/// Counts and logs the errors of the calls made, marks the substreams folded and
/// answers the reducers that halt (with why, and the row they stopped at) and the
/// (reducer, substream) pairs due for a snapshot.
fn record_results(
    group: &mut Group,
    work: &[(usize, i64, usize)],
    mut failed_at: HashMap<usize, JsError>,
    rows: &[Row],
    turn: u64,
    plain_name: &str,
) -> (Vec<Halt>, Vec<(usize, i64)>) {
    let mut halted_now: Vec<Halt> = Vec::new();
    let mut crossed: Vec<(usize, i64)> = Vec::new();
    let every = group.snapshot_every;
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
                .map_or(plain_name.to_owned(), |s| s.name.clone());
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
        // a snapshot each time the substream's index passes a multiple of `every`
        // (taken after the slice, so at most a batch later)
        if every > 0
            && (rows[k].idx + 1) / every > (entry.0 + 1) / every
            && !crossed.contains(&(ri, sid))
        {
            crossed.push((ri, sid));
        }
        *entry = (rows[k].idx, turn);
        r.touched(sid);
    }
    (halted_now, crossed)
}

/// Takes the snapshots due after a slice: each state as it is now, with the last
/// index folded into it, for the next checkpoint to save. A reducer that halted has
/// none, nor a state over the size limit (the checkpoint folds it again).
fn snapshot(group: &mut Group, crossed: &[(usize, i64)], limit: usize) {
    for &(ri, sid) in crossed {
        let r = &mut group.reducers[ri];
        let Some(&(idx, _)) = r.live.get(&sid) else {
            continue;
        };
        if r.halted.is_some() {
            continue;
        }
        match group.sandbox.state(r.slot, sid) {
            Ok(json) if json.as_ref().is_none_or(|j| j.len() <= limit) => {
                r.snapshots.push((sid, idx, json));
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e.message, "cannot take a snapshot of a state"),
        }
    }
}

/// Moves the reducers that folded `rows` past them, and those that halt to the event
/// before the one they halted at.
fn advance(
    group: &mut Group,
    rows: &[Row],
    halted_now: &[(usize, String, usize)],
    from_pos: i64,
    behind: &[usize],
) {
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
}

/// Measures the sandbox's memory when it is due.
fn measure(group: &mut Group, memory: &JsMemory, stream_id: i64, own_limit: usize) {
    // measuring walks the whole heap: after every slice while that takes less than
    // a millisecond, the sandbox holds half its allowance or more, or the sandboxes
    // could together pass the server-wide total (where the shared budget depends on
    // it), and otherwise at most a tenth of the time
    let near_limit =
        group.measured_bytes * 2 >= group.memory_limit || memory.in_play(stream_id, own_limit);
    let every = if near_limit || group.measure_cost < Duration::from_millis(1) {
        Duration::ZERO
    } else {
        (group.measure_cost * 10).min(MEASURE_EVERY)
    };
    if group.measured_at.is_none_or(|at| at.elapsed() >= every) {
        let at = Instant::now();
        group.measured_bytes = group.sandbox.memory_used() as usize;
        memory.record(stream_id, group.measured_bytes);
        group.measure_cost = at.elapsed();
        group.measured_at = Some(Instant::now());
    }
}

/// The event that `d`, dispatched by reducer `name` of `stream` while folding the
/// event of `source` stamped `ts`, appends.
pub(super) fn route(
    stream: &StreamPath,
    name: &str,
    source: (&str, u32),
    ts: i64,
    d: &Dispatch,
) -> Result<Routed> {
    // the reducer's name, not its version: a rebuild dispatches the same ids
    let scope = format!("reducer:{stream}.{name}");
    dispatched_event(
        &stream.account,
        &scope,
        source,
        Index(d.index as u64),
        ts,
        d,
    )
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
