//! Time travel (API §14): `?at=` answers a reducer's state right after the event at an
//! index was folded. The state is folded again, on a thread of its own, from the
//! nearest snapshot at or before that index (the reducer threads save one every
//! `snapshotEvery` events of a substream, `fold.rs`), so an answer folds at most about
//! that many events. The fold is a replay, as a rebuild is: `request()` is voided,
//! console output and dispatches are dropped, and a failing event is skipped (or,
//! with `on-error=halt`, ends the fold), as it was when the reducer folded it.
//!
//! A reducer that reads other reducers' states (`current`) folds with them, from the
//! latest index at which all of them have a snapshot: the reducers of a stream fold
//! together, so theirs are taken at the same indexes unless one was deployed later or
//! has another selector. Without such an index they fold from the substream's first
//! event, up to [`FROM_START_MAX`] events.

use std::time::Duration;

use eddy_runtime_js::{EventIn, Fold, Limits, Sandbox};

use super::fold::TypeChecks;
use super::{StateAnswer, missing_reducer, pool::stopped, stream_rows};
use crate::Scope;
use crate::error::{EngineError, ErrorCode, Result};
use crate::order::{Index, Position};
use crate::path::{ReducerName, StreamPath};
use crate::selector::Selector;
use crate::store::fold_source::{BatchOf, FoldSource};
use crate::store::reducer_reads;
use crate::store::reducer_writes::ReducerRow;

/// Events read and folded at a time.
const BATCH: i64 = 1000;
/// FoldSources kept for the next time-travel reads.
const KEPT_SOURCES: usize = 4;
/// The most events `?at=` folds for a reducer that reads others, from the snapshots
/// they have in common or from the first event.
const FROM_START_MAX: i64 = 200_000;
/// How many of each reducer's latest snapshots are looked through for a common one.
const COMMON_LOOKBACK: i64 = 64;

/// What one time-travel fold needs.
struct Travel {
    /// The reducer and those it reads (transitively), each after those it reads; the
    /// one asked about is last.
    rows: Vec<ReducerRow>,
    sid: i64,
    at: i64,
    /// The substream as event envelopes name it, and its args as JSON.
    stream_name: String,
    args_json: Option<String>,
    args: Option<crate::path::Args>,
    stream: StreamPath,
    until: Position,
    limits: Limits,
}

impl crate::Engine {
    /// The state of reducer `name` of a plain stream or one substream right after the
    /// event at index `at` was folded. An index the reducer has not folded yet is
    /// waited for up to `wait` (then folded here all the same); one past the
    /// (sub)stream's last event is a 404.
    pub async fn reducer_state_at(
        &self,
        path: &StreamPath,
        name: &ReducerName,
        at: u64,
        wait: Duration,
    ) -> Result<StateAnswer> {
        let resolved = self.resolve_existing(path).await?;
        let stream_id = resolved.info.id;
        let sid = match resolved.scope {
            Some(Scope::Substream(sid)) => Some(sid),
            Some(Scope::Factory(_)) => {
                return Err(EngineError::invalid(format!(
                    "at= reads the state of one substream: name it, as in \
                     {path}('id').{name}?at={at}"
                ))
                .with("param", "at"));
            }
            None => None,
        };
        let found = self
            .reducers
            .published
            .find(stream_id, name.as_str(), sid)
            .ok_or_else(|| missing_reducer(path, name))?;
        let last = match sid {
            Some(sid) => reducer_reads::substream_index(&self.store.reads, sid, i64::MAX).await?,
            None => -1,
        };
        let (Some(sid), true) = (sid, at as i64 <= last) else {
            let has = if last < 0 {
                "has no events".to_owned()
            } else {
                format!("ends at index {last}")
            };
            return Err(EngineError::not_found(format!(
                "there is no event at index {at} of {path}, which {has}"
            ))
            .with("at", at)
            .with("last", last));
        };
        let rows: Vec<ReducerRow> = stream_rows(&self.store.reads, stream_id)
            .await?
            .into_iter()
            .map(|(row, _)| row)
            .collect();
        let target = rows
            .iter()
            .find(|r| r.id == found.reducer_id)
            .cloned()
            .ok_or_else(|| missing_reducer(path, name))?;
        if target.halted.is_none() {
            // as min-index does: the reducer's own fold comes first where it is close
            self.reducer_state(path, name, Some(at), wait).await?;
        }
        let rows = with_reads(target, &rows)?;
        let args = path.args.clone();
        let base = StreamPath {
            args: None,
            ..path.clone()
        };
        let stream_name = match &args {
            Some(a) => format!("{base}({})", a.canonical()),
            None => base.to_string(),
        };
        let travel = Travel {
            rows,
            sid,
            at: at as i64,
            stream_name,
            args_json: args.as_ref().map(|a| a.to_json().to_string()),
            args,
            stream: base,
            until: self.store.read_bound(),
            limits: self.reducers.limits.clone(),
        };
        let _own = (self.reducers.travelling_accounts)
            .enter(travel.stream.account.as_str())
            .await?;
        let _turn = self
            .reducers
            .travels
            .acquire()
            .await
            .map_err(|_| stopped())?;
        let source = match self.reducers.take_source() {
            Some(s) => s,
            None => FoldSource::open(&self.store).await?,
        };
        let controls = self.controls.clone();
        let runtime = tokio::runtime::Handle::current();
        let (answer, source) = super::on_js_thread("eddy-reducer-at", move || {
            let types = TypeChecks::new(&controls, &runtime, &travel.stream);
            (fold(&source, &travel, types), source)
        })
        .await?;
        self.reducers.keep_source(source);
        answer
    }
}

impl super::Reducers {
    fn take_source(&self) -> Option<FoldSource> {
        self.at_sources
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
    }

    fn keep_source(&self, source: FoldSource) {
        let mut kept = self.at_sources.lock().unwrap_or_else(|p| p.into_inner());
        if kept.len() < KEPT_SOURCES {
            kept.push(source);
        }
    }
}

/// `target` after the active versions of the reducers it reads, transitively, each
/// after those it reads.
fn with_reads(target: ReducerRow, rows: &[ReducerRow]) -> Result<Vec<ReducerRow>> {
    let mut out: Vec<ReducerRow> = Vec::new();
    fn visit(row: ReducerRow, rows: &[ReducerRow], out: &mut Vec<ReducerRow>, depth: usize) {
        if depth > rows.len() || out.iter().any(|o| o.name == row.name) {
            return;
        }
        for name in &row.reads {
            if let Some(dep) = rows.iter().find(|r| &r.name == name && !r.building) {
                visit(dep.clone(), rows, out, depth + 1);
            }
        }
        out.push(row);
    }
    visit(target, rows, &mut out, 0);
    if out.is_empty() {
        return Err(EngineError::internal("no reducer to fold"));
    }
    Ok(out)
}

/// Where a fold of `t` starts: the latest index at or before `t.at` at which every
/// reducer it folds has a snapshot, and their states in `t.rows`' order.
fn start_of(source: &FoldSource, t: &Travel) -> Result<Option<(i64, Vec<Option<String>>)>> {
    if let [only] = t.rows.as_slice() {
        let found = source.snapshot(only.id, t.sid, t.at)?;
        return Ok(found.map(|(k, state)| (k, vec![state])));
    }
    let lists = t
        .rows
        .iter()
        .map(|r| source.snapshots(r.id, t.sid, t.at, COMMON_LOOKBACK))
        .collect::<Result<Vec<_>>>()?;
    for (k, _) in &lists[0] {
        let states: Option<Vec<Option<String>>> = lists
            .iter()
            .map(|l| l.iter().find(|(i, _)| i == k).map(|(_, s)| s.clone()))
            .collect();
        if let Some(states) = states {
            return Ok(Some((*k, states)));
        }
    }
    Ok(None)
}

/// Folds `t` on this thread: each reducer from its snapshot (with others it reads,
/// from the snapshots they have in common, or the start) up to and including the
/// event at `t.at`.
/// The longest one `at=` answer may fold: it holds one of the few threads that answer
/// them all.
const AT_TIME_MAX: std::time::Duration = std::time::Duration::from_secs(30);

fn fold(source: &FoldSource, t: &Travel, mut types: TypeChecks<'_>) -> Result<StateAnswer> {
    let target = t.rows.len() - 1;
    let (mut after, states) = start_of(source, t)?.unwrap_or((-1, vec![None; t.rows.len()]));
    if t.rows.len() > 1 && t.at - after > FROM_START_MAX {
        return Err(EngineError::too_large(format!(
            "reducer {} reads other reducers, and they have no snapshot in common within \
             {FROM_START_MAX} events before index {}: at= would fold from index {}",
            t.rows[target].name,
            t.at,
            after + 1
        ))
        .with("at", t.at));
    }
    let mut sandbox = Sandbox::new(t.limits.clone()).map_err(js)?;
    let selectors: Vec<Selector> = t
        .rows
        .iter()
        .map(|r| Selector::parse_query(&r.selector).unwrap_or_default())
        .collect();
    for (slot, row) in t.rows.iter().enumerate() {
        let code = row.prepared();
        sandbox.load(slot as u32, &row.name, &code).map_err(|e| {
            EngineError::invalid(format!("the reducer code does not load: {}", e.message))
        })?;
    }
    for (slot, state) in states.iter().enumerate() {
        sandbox
            .set_state(slot as u32, t.sid, state.as_deref())
            .map_err(js)?;
    }
    let mut halted = vec![false; t.rows.len()];
    let deadline = std::time::Instant::now() + AT_TIME_MAX;
    while after < t.at {
        let mut rows = source.batch(
            BatchOf::Plain {
                sid: t.sid,
                after_idx: after,
            },
            t.until.0,
            BATCH,
        )?;
        rows.retain(|r| r.idx <= t.at);
        let Some(last) = rows.last() else { break };
        after = last.idx;
        let converted: Vec<_> = rows
            .iter()
            .map(|r| super::for_reducer(&r.content_type, &r.data))
            .collect();
        let ids: Vec<String> = rows.iter().map(|r| r.id.to_string()).collect();
        let inputs: Vec<EventIn> = rows
            .iter()
            .enumerate()
            .map(|(k, r)| {
                r.event_in(
                    &t.stream_name,
                    &ids[k],
                    &converted[k],
                    t.args_json.as_deref(),
                )
            })
            .collect();
        let mut calls = Vec::with_capacity(rows.len() * t.rows.len());
        for (k, r) in rows.iter().enumerate() {
            for (slot, row) in t.rows.iter().enumerate() {
                let sel = &selectors[slot];
                if halted[slot]
                    || !(sel.matches_args(t.args.as_ref())
                        && sel.matches(&r.event_type, Index(r.idx as u64), r.ts))
                {
                    continue;
                }
                calls.push(Fold {
                    slot: slot as u32,
                    sid: t.sid,
                    index: r.idx,
                    event: &inputs[k],
                    halt_on_error: row.halt_on_error,
                    live: false,
                    check_size: false,
                });
            }
        }
        let (done, failures) =
            sandbox.fold_until(&calls, &mut |ds| types.check(ds), Some(deadline));
        if done < calls.len() {
            return Err(EngineError::new(
                ErrorCode::Unavailable,
                format!(
                    "the state at index {} would take longer than {} s to fold from the \
                     nearest snapshot before it: take snapshots more often (the \
                     snapshotEvery setting)",
                    t.at,
                    AT_TIME_MAX.as_secs(),
                ),
            )
            .with("at", t.at));
        }
        for (c, _) in failures {
            let slot = calls[c].slot as usize;
            if t.rows[slot].halt_on_error {
                halted[slot] = true;
            }
        }
        drop(calls);
        // replays keep nothing of what the fold said or sent
        sandbox.console();
        sandbox.dispatches();
        if halted[target] {
            break;
        }
    }
    let json = sandbox.state(target as u32, t.sid).map_err(js)?;
    Ok(StateAnswer {
        json,
        index: t.at,
        version: None,
    })
}

fn js(e: eddy_runtime_js::JsError) -> EngineError {
    EngineError::new(
        ErrorCode::Internal,
        format!("the time-travel fold failed: {}", e.message),
    )
}
