//! Checkpoints: a reducer's changed states, its position and its log entries saved in
//! one writer transaction, which is what makes folding exactly once; the promotion of a
//! rebuilt version; and eviction of saved states beyond the live limit.

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::fold::TypeChecks;
use super::worker::{CHECKPOINT_EVERY, DIRTY_MAX, Worker, sandbox_name};
use crate::store::reducer_writes::{Checkpoint, ReducerWrite};

impl Worker {
    /// Saves what changed: every reducer due (or all of them with `force`).
    pub(super) fn checkpoint_all(&mut self, force: bool) {
        let head = self.durable.load(Ordering::Acquire);
        let ids: Vec<i64> = self.groups.keys().copied().collect();
        // streams whose lease another node holds now: let go of here, unsaved (the
        // other node folds from the last checkpoint)
        let mut lost = Vec::new();
        for id in ids {
            let Some(group) = self.groups.get(&id) else {
                continue;
            };
            let due = |r: &super::worker::Live| {
                let changed = r.position != r.saved_position
                    || !r.dirty.is_empty()
                    || !r.logs.is_empty()
                    || !r.dispatches.is_empty()
                    || (r.halted.is_some() && r.halted != r.row.halted);
                let caught_up = r.row.building && r.position >= head && r.halted.is_none();
                // an oversize state is folded anew at once, not shown meanwhile
                let due = force
                    || !r.over.is_empty()
                    || r.saved_at.elapsed() >= CHECKPOINT_EVERY
                    || r.dirty.len() >= DIRTY_MAX
                    || caught_up;
                (changed || caught_up) && due
            };
            if !group.reducers.iter().any(due) {
                continue;
            }
            // a checkpoint saves only states that were published first
            self.publish(id, false);
            let Some(group) = self.groups.get_mut(&id) else {
                continue;
            };
            // (new version id, replaced version id), by id: removals shift positions
            let mut promoted: Vec<(i64, i64)> = Vec::new();
            for ri in 0..group.reducers.len() {
                if !due(&group.reducers[ri]) {
                    continue;
                }
                let r = &group.reducers[ri];
                let caught_up = r.row.building && r.position >= head && r.halted.is_none();
                let promote_over = if caught_up {
                    group
                        .reducers
                        .iter()
                        .find(|o| o.row.name == r.row.name && !o.row.building)
                        .map(|o| o.row.id)
                } else {
                    None
                };
                let r = &mut group.reducers[ri];
                let dirty = std::mem::take(&mut r.dirty);
                let mut states = Vec::with_capacity(dirty.len());
                let mut over = Vec::new();
                for &sid in &dirty {
                    if r.over.contains(&sid) {
                        over.push(sid);
                    } else if let Some((idx, json)) = r.pending.get(&sid) {
                        states.push((sid, *idx, json.clone()));
                    }
                }
                if !over.is_empty() {
                    // only the events that made a state too large are errors: find
                    // them by folding again from the saved states
                    let types = TypeChecks::new(&self.controls, &self.http.1, &group.stream);
                    let mut fix = super::oversize::Refolder {
                        source: &self.source,
                        types,
                        limit: self.limits.state_bytes,
                    };
                    if let Err(e) = fix.recover(group, ri, &mut states, over) {
                        tracing::error!(error = %e.message, "cannot refold an oversize state");
                    }
                }
                let r = &mut group.reducers[ri];
                // in the order of the events they are about (stable: console output
                // of one event stays in order)
                r.logs.sort_by_key(|(at, _)| *at);
                // kept until the checkpoint is saved: a failed one (a lost connection,
                // a lease found lost) leaves them for the next
                let kept_logs = std::mem::take(&mut r.logs);
                let kept_dispatches = std::mem::take(&mut r.dispatches);
                let kept_snapshots = std::mem::take(&mut r.snapshots);
                let logs: Vec<_> = kept_logs.iter().map(|(_, e)| e.clone()).collect();
                let new_errors = std::mem::take(&mut r.new_errors);
                let checkpoint = Checkpoint {
                    reducer_id: r.row.id,
                    position: r.position,
                    new_errors,
                    halted: r.halted.clone(),
                    states,
                    snapshots: kept_snapshots.clone(),
                    logs: Some((group.stream.logs(), logs)),
                    dispatches: kept_dispatches.iter().map(|(_, d)| d.clone()).collect(),
                    promote_over,
                    fence: group.fence.clone(),
                };
                let demoted = promote_over.map(|old| {
                    let states = r.pending.clone();
                    self.published
                        .promote(id, old, r.row.id, r.status(group.factory), states)
                });
                match self
                    .writer
                    .reducer_blocking(ReducerWrite::Checkpoint(checkpoint))
                {
                    Ok(_) => {
                        r.saved_position = r.position;
                        r.saved_at = Instant::now();
                        r.row.halted = r.halted.clone();
                        r.row.errors += new_errors;
                        r.pending.clear();
                        r.over.clear();
                        if let Some(old) = promote_over {
                            promoted.push((r.row.id, old));
                        }
                        let mut status = r.status(group.factory);
                        status.building &= promote_over.is_none();
                        self.published
                            .update(id, r.row.id, status, Vec::new(), true);
                    }
                    Err(e) => {
                        if let Some(old) = demoted {
                            self.published.demote(id, r.row.id, old);
                        }
                        // tried again at the next checkpoint
                        r.dirty = dirty;
                        r.new_errors += new_errors;
                        let later = std::mem::replace(&mut r.logs, kept_logs);
                        r.logs.extend(later);
                        let later = std::mem::replace(&mut r.dispatches, kept_dispatches);
                        r.dispatches.extend(later);
                        let later = std::mem::replace(&mut r.snapshots, kept_snapshots);
                        r.snapshots.extend(later);
                        tracing::warn!(error = %e.message, reducer = %r.row.name, "checkpoint failed");
                        if e.code == crate::error::ErrorCode::Conflict
                            && group.fence.is_some()
                            && !lost.contains(&id)
                        {
                            lost.push(id);
                        }
                    }
                }
                // keep memory bounded: drop the least recently used saved states
                if r.live.len() > self.max_live {
                    let mut by_age: Vec<(u64, i64)> =
                        r.live.iter().map(|(sid, (_, t))| (*t, *sid)).collect();
                    by_age.sort_unstable();
                    let excess = r.live.len() - self.max_live * 3 / 4;
                    for &(_, sid) in by_age.iter().take(excess) {
                        group.sandbox.evict(r.slot, sid);
                        r.live.remove(&sid);
                    }
                }
            }
            for (new, old) in promoted {
                let Some(ri) = group.reducers.iter().position(|r| r.row.id == new) else {
                    continue;
                };
                let building_name = sandbox_name(&group.reducers[ri].row);
                group.reducers[ri].row.building = false;
                let name = sandbox_name(&group.reducers[ri].row);
                let slot = group.reducers[ri].slot;
                if let Some(pos) = group.reducers.iter().position(|o| o.row.id == old) {
                    let o = group.reducers.remove(pos);
                    group.sandbox.unload(o.slot, &name);
                }
                group.sandbox.rename(slot, &building_name, &name);
                if let Some(r) = group.reducers.iter().find(|r| r.row.id == new) {
                    self.published
                        .update(id, new, r.status(group.factory), Vec::new(), true);
                }
            }
        }
        for id in lost {
            tracing::warn!(
                stream = id,
                "the stream's lease is held elsewhere; its reducers stop here"
            );
            let versions: Vec<i64> = self
                .groups
                .get(&id)
                .map(|g| g.reducers.iter().map(|r| r.row.id).collect())
                .unwrap_or_default();
            self.remove(id, &versions);
        }
    }
}
