//! States over the size limit ([`Limits::state_bytes`](eddy_runtime_js::Limits)).
//! States are measured when a checkpoint saves them, not after every event (that
//! would serialize every state on every event). When one is too large, its substream
//! is folded again from its saved state over the events since, measuring as it goes,
//! so that only the events whose result was too large are errors: each is skipped as
//! if it had thrown (logged with its index), and the events before and after it
//! count; with `on-error=halt` the reducer halts at the first one instead, and every
//! substream folded past it is folded again up to it. Folding again is a replay:
//! `request()` is voided and console output is not logged a second time.

use std::collections::HashMap;

use eddy_runtime_js::{EventIn, Fold, JsErrorKind};

use super::data::for_reducer;
use super::events::Row;
use super::fold::{TypeChecks, route};
use super::worker::{BATCH, Group, log_event};
use crate::error::{EngineError, Result};
use crate::order::Index;
use crate::store::fold_source::{BatchOf, FoldSource};
use crate::store::pipe_writes::Routed;

/// Events folded between two measurements while looking for the one that made a
/// state too large; the events of a chunk that ends too large are folded again one
/// by one, measuring after each.
const CHUNK: usize = 64;

/// What an oversize state is recovered with.
pub(super) struct Refolder<'a> {
    pub(super) source: &'a FoldSource,
    pub(super) types: TypeChecks<'a>,
    pub(super) limit: usize,
}

struct Offender {
    pos: i64,
    idx: i64,
    message: String,
}

struct Refolded {
    /// The last index of the substream seen.
    last_idx: i64,
    offenders: Vec<Offender>,
    dispatches: Vec<(i64, Routed)>,
}

/// (position, index, substream, why) of the event a reducer halts at.
type Stop = (i64, i64, i64, String);

impl Refolder<'_> {
    /// Replaces the oversize states `over` of reducer `ri` by states folded again
    /// without the events that made them too large, and updates `states` (what the
    /// checkpoint saves), the reducer's dispatches, logs, errors and, with
    /// `on-error=halt`, its position.
    pub(super) fn recover(
        &mut self,
        group: &mut Group,
        ri: usize,
        states: &mut Vec<(i64, i64, super::published::StateJson)>,
        over: Vec<i64>,
    ) -> Result<()> {
        let halt = group.reducers[ri].row.halt_on_error;
        let until = group.reducers[ri].position;
        let mut done: Vec<(i64, Refolded)> = Vec::new();
        let mut stop: Option<Stop> = None;
        for &sid in &over {
            let refolded = self.refold(group, ri, sid, until, true, halt)?;
            if let Some(first) = refolded.offenders.first()
                && halt
                && stop.as_ref().is_none_or(|s| first.pos < s.0)
            {
                stop = Some((first.pos, first.idx, sid, first.message.clone()));
            }
            done.push((sid, refolded));
        }
        if let Some((pos, _, stopped, _)) = &stop {
            // nothing at or after the event that halts the reducer stays folded: the
            // other substreams folded since the checkpoint are folded again up to it
            let others: Vec<i64> = states
                .iter()
                .map(|s| s.0)
                .chain(over.iter().copied())
                .filter(|sid| sid != stopped)
                .collect();
            for sid in others {
                let refolded = self.refold(group, ri, sid, pos - 1, false, false)?;
                done.retain(|(s, _)| *s != sid);
                done.push((sid, refolded));
            }
        }
        for (sid, refolded) in done {
            let name = substream_name(group, sid);
            let r = &mut group.reducers[ri];
            for off in &refolded.offenders {
                r.new_errors += 1;
                r.logs.push((
                    (off.pos, 1),
                    log_event("error", &r.row.name, &name, off.idx, &off.message, None),
                ));
            }
            r.dispatches.retain(|(s, _)| *s != sid);
            r.dispatches.extend(refolded.dispatches);
            states.retain(|s| s.0 != sid);
            match group.sandbox.state(r.slot, sid) {
                Ok(json) if json.as_ref().is_none_or(|j| j.len() <= self.limit) => {
                    if let Some(live) = r.live.get_mut(&sid) {
                        live.0 = refolded.last_idx;
                    }
                    states.push((sid, refolded.last_idx, json.map(std::sync::Arc::from)));
                }
                _ => {
                    // code that folds differently the second time: keep the saved state
                    r.new_errors += 1;
                    let message = format!(
                        "the state is over the limit of {} bytes of JSON, and folding again from \
                         the last saved state did not find the event that made it so; it was reset \
                         to its last saved value",
                        self.limit
                    );
                    r.logs.push((
                        (i64::MAX, 1),
                        log_event(
                            "error",
                            &r.row.name,
                            &name,
                            refolded.last_idx,
                            &message,
                            None,
                        ),
                    ));
                    group.sandbox.evict(r.slot, sid);
                    r.live.remove(&sid);
                }
            }
        }
        if let Some((pos, idx, sid, message)) = stop {
            let name = substream_name(group, sid);
            let r = &mut group.reducers[ri];
            r.halted = Some(format!("halted at index {idx} of {name}: {message}"));
            r.position = pos - 1;
            r.after_idx = idx - 1;
        }
        Ok(())
    }

    /// Folds substream `sid` of reducer `ri` again from its saved state over its
    /// events up to position `until`. With `check`, finds the events whose result is
    /// over the limit and skips them (with `halt`, stops at the first).
    fn refold(
        &mut self,
        group: &mut Group,
        ri: usize,
        sid: i64,
        until: i64,
        check: bool,
        halt: bool,
    ) -> Result<Refolded> {
        let r = &group.reducers[ri];
        let (slot, reducer_id, reducer) = (r.slot, r.row.id, r.row.name.clone());
        let selector = r.selector.clone();
        let saved = self.source.saved_state(reducer_id, sid)?;
        let (saved_idx, mut good) = saved.unwrap_or((-1, None));
        group
            .sandbox
            .set_state(slot, sid, good.as_deref())
            .map_err(|e| EngineError::internal(e.message))?;
        let (source, args_json, args) = match group.subs.get(&sid) {
            Some(sub) => (sub.name.clone(), sub.json.clone(), sub.args.clone()),
            None => (group.stream.to_string(), None, None),
        };
        let mut out = Refolded {
            last_idx: saved_idx,
            offenders: Vec::new(),
            dispatches: Vec::new(),
        };
        let mut after = saved_idx;
        loop {
            let rows = self.source.batch(
                BatchOf::Plain {
                    sid,
                    after_idx: after,
                },
                until,
                BATCH,
            )?;
            let Some(last) = rows.last() else { break };
            after = last.idx;
            let taken: Vec<&Row> = rows
                .iter()
                .filter(|row| {
                    (!group.factory || selector.matches_args(args.as_ref()))
                        && selector.matches(&row.event_type, Index(row.idx as u64), row.ts)
                })
                .collect();
            let times: HashMap<i64, (i64, u32)> = (taken.iter())
                .map(|r| (r.idx, (r.ts, crate::dispatch::hops(r.origin.as_deref()))))
                .collect();
            let converted: Vec<_> = taken
                .iter()
                .map(|r| for_reducer(&r.content_type, &r.data))
                .collect();
            let ids: Vec<String> = taken.iter().map(|r| r.id.to_string()).collect();
            let inputs: Vec<EventIn> = taken
                .iter()
                .enumerate()
                .map(|(k, row)| row.event_in(&source, &ids[k], &converted[k], args_json.as_deref()))
                .collect();
            let calls = |from: usize, to: usize, checked: bool| -> Vec<Fold> {
                (from..to)
                    .map(|k| Fold {
                        slot,
                        sid,
                        index: inputs[k].index,
                        event: &inputs[k],
                        halt_on_error: checked && halt,
                        live: false,
                        check_size: checked,
                    })
                    .collect()
            };
            let keep = |group: &mut Group, out: &mut Refolded| {
                let _ = group.sandbox.console();
                for d in group.sandbox.dispatches() {
                    let (ts, hops) = times.get(&d.index).copied().unwrap_or_default();
                    if let Ok(routed) = route(&group.stream, &reducer, (&source, hops), ts, &d) {
                        out.dispatches.push((sid, routed));
                    }
                }
            };
            for from in (0..taken.len()).step_by(CHUNK) {
                let to = (from + CHUNK).min(taken.len());
                let types = &mut self.types;
                group
                    .sandbox
                    .fold_checked(&calls(from, to, false), &mut |ds| types.check(ds));
                if !check {
                    keep(group, &mut out);
                    continue;
                }
                match group.sandbox.state(slot, sid) {
                    Ok(json) if json.as_ref().is_none_or(|j| j.len() <= self.limit) => {
                        good = json;
                        keep(group, &mut out);
                        continue;
                    }
                    _ => {}
                }
                // too large at the end of the chunk: again, one event at a time
                let _ = group.sandbox.console();
                let _ = group.sandbox.dispatches();
                group
                    .sandbox
                    .set_state(slot, sid, good.as_deref())
                    .map_err(|e| EngineError::internal(e.message))?;
                let failures = group
                    .sandbox
                    .fold_checked(&calls(from, to, true), &mut |ds| types.check(ds));
                keep(group, &mut out);
                for (i, error) in failures {
                    if error.kind != JsErrorKind::StateLimit {
                        continue; // logged when the event was first folded
                    }
                    let row = taken[from + i];
                    out.offenders.push(Offender {
                        pos: row.pos,
                        idx: row.idx,
                        message: error.message,
                    });
                    if halt {
                        out.last_idx = row.idx - 1;
                        return Ok(out);
                    }
                }
                good = group.sandbox.state(slot, sid).ok().flatten();
            }
            out.last_idx = last.idx;
        }
        Ok(out)
    }
}

fn substream_name(group: &Group, sid: i64) -> String {
    group
        .subs
        .get(&sid)
        .map_or_else(|| group.stream.to_string(), |s| s.name.clone())
}
