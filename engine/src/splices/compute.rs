//! What a splice computes, on a thread of its own (it runs user code): the spliced
//! history (the map function over the events its selector picks), and for a preview
//! what that history would cause: every reducer's state after it, and the events its
//! reducers' `dispatch()` calls and the stream's pipes would append downstream.
//!
//! Everything here is a replay: `request()` is voided and console output dropped.
//! Ids are derived as the live fold and pipes derive them (from the source event's
//! index and timestamp), so what the new history causes can be matched with what the
//! old one caused.

use std::collections::HashMap;

use bytes::Bytes;
use eddy_runtime_js::{EventIn, Fold, Limits, MapCall, Prepared, Sandbox, Shape};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::dispatch::dispatched_event;
use crate::error::{EngineError, Result};
use crate::event::{NewEvent, StoredEvent, check_size, check_type, derived_id};
use crate::order::{Index, Position};
use crate::path::StreamPath;
use crate::pipes::run::{MapOut, copied, mapped};
use crate::reducers::for_reducer;
use crate::selector::Selector;
use std::sync::Arc;
use std::time::Instant;

use crate::store::SharedEvent;
use crate::store::fold_source::FoldSource;
use crate::store::pipe_writes::{PipeRow, Routed};
use crate::store::reducer_writes::ReducerRow;

/// Events mapped or folded per call into the sandbox.
const CHUNK: usize = 1000;
/// Differences a preview lists.
const DIFFERENCES: usize = 10;
/// Events a map function may return for one.
const MAX_OUTPUTS: usize = 1000;

pub(super) struct Inputs {
    pub splice_id: String,
    pub stream: StreamPath,
    /// The stream's substream, and the position reads stop at.
    pub sid: i64,
    pub until: Position,
    pub code: Prepared,
    pub selector: Selector,
    /// The stream's reducers (active versions) and pipes, for a preview; none for an
    /// approval, which only needs the spliced history.
    pub reducers: Vec<ReducerRow>,
    pub pipes: Vec<PipeRow>,
    pub limits: Limits,
    /// The nesting limit new data keeps, as on every other ingest path.
    pub json: crate::json::JsonLimits,
    /// When the work gives up (see [`TIME_MAX`]).
    pub deadline: Instant,
}

/// The longest a splice's preview or approval, or a pipe's replay, may map and fold:
/// each holds one of the few threads that do it for every account. A history of the
/// largest size a splice takes maps and folds in about a tenth of it here.
pub(crate) const TIME_MAX: std::time::Duration = std::time::Duration::from_secs(150);

/// The 503 of work that ran past its deadline, naming `what`.
pub(crate) fn overtime(what: &str) -> EngineError {
    EngineError::new(
        crate::error::ErrorCode::Unavailable,
        format!(
            "{what} would take longer than {} s (the code is too slow for this much \
             history) and was stopped; nothing was changed",
            TIME_MAX.as_secs()
        ),
    )
}

/// Fails once `deadline` has passed.
fn in_time(deadline: Instant, what: &str) -> Result<()> {
    if Instant::now() > deadline {
        return Err(overtime(what));
    }
    Ok(())
}

#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Counts {
    pub kept: usize,
    pub changed: usize,
    pub dropped: usize,
    pub added: usize,
}

/// An event the new history would cause downstream.
pub(crate) struct Caused {
    /// `acct/strm('a')`, as stored events name their (sub)stream.
    pub stream: String,
    pub id: Uuid,
    pub event_type: String,
    pub content_type: String,
    pub data: Bytes,
}

pub(super) struct Outcome {
    /// The old history's length, and where it ends (position 0 and index -1 when
    /// empty).
    pub before: usize,
    pub last_position: i64,
    pub last_index: i64,
    pub events: Vec<NewEvent>,
    /// The data bytes of `events`.
    pub bytes: usize,
    pub counts: Counts,
    pub differences: Vec<Value>,
    /// Each reducer's state after the new history: (name, JSON).
    pub states: Vec<(String, Option<String>)>,
    pub caused: Vec<Caused>,
}

impl Outcome {
    /// An outcome for `events`, before any of them is mapped.
    fn of(events: &[StoredEvent]) -> Self {
        Outcome {
            before: events.len(),
            last_position: events.last().map_or(0, |e| e.position.0),
            last_index: events.last().map_or(-1, |e| e.index.sql()),
            events: Vec::with_capacity(events.len()),
            bytes: 0,
            counts: Counts::default(),
            differences: Vec::new(),
            states: Vec::new(),
            caused: Vec::new(),
        }
    }
}

fn load(sandbox: &mut Sandbox, slot: u32, name: &str, js: &str, module: bool) -> Result<()> {
    let code = Prepared {
        js: js.to_owned(),
        shape: if module {
            Shape::Module
        } else {
            Shape::Expression
        },
        reads: Vec::new(),
    };
    sandbox.load(slot, name, &code).map_err(|e| {
        EngineError::invalid(format!("the code of {name} does not load: {}", e.message))
    })
}

fn sandbox(limits: &Limits) -> Result<Sandbox> {
    Sandbox::new(limits.clone())
        .map_err(|e| EngineError::internal(format!("cannot make a sandbox: {}", e.message)))
}

/// The sandbox's view of `events`: converted data and ids, kept alive for `EventIn`s.
struct Views {
    converted: Vec<(std::borrow::Cow<'static, str>, Option<&'static str>)>,
    ids: Vec<String>,
}

impl Views {
    fn of(events: &[StoredEvent]) -> Self {
        Self {
            converted: events
                .iter()
                .map(|e| {
                    let (data, encoding) = for_reducer(&e.content_type, &e.data);
                    (std::borrow::Cow::Owned(data.into_owned()), encoding)
                })
                .collect(),
            ids: events.iter().map(|e| e.id.to_string()).collect(),
        }
    }

    fn inputs<'a>(&'a self, events: &'a [StoredEvent]) -> Vec<EventIn<'a>> {
        events
            .iter()
            .enumerate()
            .map(|(k, e)| EventIn {
                stream: &e.stream,
                index: e.index.sql(),
                id: &self.ids[k],
                event_type: &e.event_type,
                timestamp: e.timestamp,
                content_type: &e.content_type,
                data_json: &self.converted[k].0,
                encoding: self.converted[k].1,
                args_json: None,
            })
            .collect()
    }
}

pub(super) fn compute(i: Inputs, source: &FoldSource, preview: bool) -> Result<Outcome> {
    let events = read_history(&i, source)?;
    let mut out = map(&i, &events)?;
    drop(events);
    // timestamps never decrease within a stream, the spliced history's either
    crate::store::rules::timestamps(&i.stream, &out.events, 0, crate::store::writer::now_ms())
        .map_err(|e| e.context("the spliced history"))?;
    if preview {
        let name = i.stream.to_string();
        let history: Vec<StoredEvent> = out
            .events
            .iter()
            .enumerate()
            .map(|(k, e)| StoredEvent {
                stream: name.clone(),
                index: Index(k as u64),
                id: e.id.unwrap_or_default(),
                event_type: e.event_type.clone(),
                timestamp: e.timestamp.unwrap_or_default(),
                content_type: e.content_type.clone(),
                data: e.data.clone(),
                metadata: e.metadata.clone(),
                origin: e.origin.clone(),
                position: Position(k as i64),
            })
            .collect();
        fold(&i, &history, &mut out)?;
        for pipe in &i.pipes {
            // (what the pipe fails on is for its own run to log)
            let routed =
                pipe_outputs(&i.limits, pipe, &history, true, &mut Vec::new(), i.deadline)?;
            out.caused
                .extend(routed.into_iter().map(|r| caused(r, false)));
        }
    }
    Ok(out)
}

/// The stream's history, whole.
fn read_history(i: &Inputs, source: &FoldSource) -> Result<Vec<StoredEvent>> {
    let name = i.stream.to_string();
    let mut events: Vec<StoredEvent> = Vec::new();
    let mut bytes = 0usize;
    loop {
        let after = events.last().map_or(-1, |e| e.index.sql());
        let page = source.history(&name, i.sid, after, i.until.0, 10_000)?;
        let done = page.len() < 10_000;
        bytes += page.iter().map(|e| e.data.len()).sum::<usize>();
        events.extend(page);
        if events.len() > super::MAX_EVENTS || bytes > super::MAX_BYTES {
            return Err(EngineError::too_large(format!(
                "{} holds more than {} events or {} MiB of data, more than a splice takes",
                i.stream,
                super::MAX_EVENTS,
                super::MAX_BYTES >> 20
            )));
        }
        if done {
            return Ok(events);
        }
    }
}

/// Runs `f` on each part on threads of their own (one per core the machine has at
/// most two of here), answering the results in the parts' order.
fn on_threads<P: Sync, T: Send>(parts: &[P], f: impl Fn(&P) -> Result<T> + Sync) -> Result<Vec<T>> {
    std::thread::scope(|scope| {
        let f = &f;
        let handles = parts
            .iter()
            .map(|p| crate::reducers::js_thread("eddy-splice").spawn_scoped(scope, move || f(p)))
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|e| EngineError::internal(format!("cannot start a splice thread: {e}")))?;
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(EngineError::internal("a splice thread panicked")))
            })
            .collect()
    })
}

/// The spliced history: each event the selector picks, mapped; the others kept. The
/// map function is a function of each event alone, so two halves of the history are
/// mapped at once, in sandboxes of their own.
fn map(i: &Inputs, events: &[StoredEvent]) -> Result<Outcome> {
    let half = events.len().div_ceil(2).max(CHUNK);
    let parts: Vec<&[StoredEvent]> = events.chunks(half).collect();
    let mut out = Outcome::of(events);
    for part in on_threads(&parts, |part| map_part(i, part))? {
        out.bytes += part.bytes;
        if out.events.len() + part.events.len() > super::MAX_EVENTS || out.bytes > super::MAX_BYTES
        {
            return Err(EngineError::too_large(format!(
                "the spliced history would hold more than {} events or {} MiB of data",
                super::MAX_EVENTS,
                super::MAX_BYTES >> 20
            )));
        }
        out.events.extend(part.events);
        out.counts.kept += part.counts.kept;
        out.counts.changed += part.counts.changed;
        out.counts.dropped += part.counts.dropped;
        out.counts.added += part.counts.added;
        out.differences.extend(part.differences);
    }
    out.differences.truncate(DIFFERENCES);
    Ok(out)
}

/// [`map`] of one part of the history.
fn map_part(i: &Inputs, events: &[StoredEvent]) -> Result<Outcome> {
    let mut sandbox = sandbox(&i.limits)?;
    sandbox.set_role("map function");
    load(
        &mut sandbox,
        0,
        "the map function",
        &i.code.js,
        i.code.shape == Shape::Module,
    )?;
    // a part's own ends are not used: the whole history's are
    let mut out = Outcome::of(events);
    for chunk in events.chunks(CHUNK) {
        in_time(i.deadline, "mapping the history")?;
        let views = Views::of(chunk);
        let inputs = views.inputs(chunk);
        let picked: Vec<usize> = (0..chunk.len())
            .filter(|&k| {
                let e = &chunk[k];
                i.selector.matches(&e.event_type, e.index, e.timestamp)
            })
            .collect();
        let calls: Vec<MapCall> = picked
            .iter()
            .map(|&k| MapCall {
                slot: 0,
                sid: k as i64,
                index: chunk[k].index.sql(),
                event: &inputs[k],
                live: false,
            })
            .collect();
        let results = sandbox.map_keeping(&calls);
        sandbox.console();
        sandbox.dispatches();
        let mut results: HashMap<usize, _> = picked.into_iter().zip(results).collect();
        for (k, e) in chunk.iter().enumerate() {
            let Some(result) = results.remove(&k) else {
                out.events.push(unchanged(e));
                out.counts.kept += 1;
                continue;
            };
            let at = |message: String| {
                EngineError::invalid(format!(
                    "the map function failed on the event at index {}: {message}",
                    e.index
                ))
                .with("index", e.index.get())
            };
            let json = result.map_err(|err| at(err.message))?;
            let outs: Vec<MapOut> = serde_json::from_str(&json)
                .map_err(|err| at(format!("its result is not valid: {err}")))?;
            splice_event(i, e, outs, &mut out).map_err(at)?;
        }
    }
    Ok(out)
}

fn unchanged(e: &StoredEvent) -> NewEvent {
    NewEvent {
        id: Some(e.id),
        event_type: e.event_type.clone(),
        content_type: e.content_type.clone(),
        data: e.data.clone(),
        timestamp: Some(e.timestamp),
        metadata: e.metadata.clone(),
        origin: e.origin.clone(),
    }
}

/// Adds what the map function made of `e` to the history, and counts it.
fn splice_event(
    i: &Inputs,
    e: &StoredEvent,
    outs: Vec<MapOut>,
    out: &mut Outcome,
) -> std::result::Result<(), String> {
    let first = out.events.len();
    if outs.is_empty() {
        out.counts.dropped += 1;
    }
    let n = outs.len();
    if n > MAX_OUTPUTS {
        return Err(format!(
            "it returned {n} events for one; at most {MAX_OUTPUTS} are taken"
        ));
    }
    let mut kept = false;
    for (k, o) in outs.into_iter().enumerate() {
        if o.args.is_some() {
            return Err(
                "a splice's map function returns {type?, data?, timestamp?}: args name a \
                 factory's substream, and a spliced stream is plain"
                    .into(),
            );
        }
        // a type the function gives is checked; the event's own stays as it is
        if let Some(t) = &o.event_type {
            check_type(t).map_err(|err| err.message)?;
        }
        let event_type = o.event_type.unwrap_or_else(|| e.event_type.clone());
        let (content_type, data) = match o.data {
            None => (e.content_type.clone(), e.data.clone()),
            Some(v) => {
                let data = Bytes::from(v.to_string());
                i.json
                    .parse(&data, "application/json", false)
                    .map_err(|err| err.message)?;
                ("application/json".to_owned(), data)
            }
        };
        check_size(data.len()).map_err(|err| err.message)?;
        let timestamp = o.timestamp.unwrap_or(e.timestamp);
        let id = if k == 0 {
            e.id
        } else {
            derived_id(
                timestamp,
                &[
                    b"splice",
                    i.splice_id.as_bytes(),
                    e.id.as_bytes(),
                    &(k as u64).to_le_bytes(),
                ],
            )
        };
        let same = n == 1
            && event_type == e.event_type
            && content_type == e.content_type
            && data == e.data
            && timestamp == e.timestamp;
        kept |= same;
        match (k, same) {
            (_, true) => out.counts.kept += 1,
            (0, false) => out.counts.changed += 1,
            _ => out.counts.added += 1,
        }
        out.bytes += data.len();
        if out.events.len() >= super::MAX_EVENTS || out.bytes > super::MAX_BYTES {
            return Err(format!(
                "the spliced history would hold more than {} events or {} MiB of data",
                super::MAX_EVENTS,
                super::MAX_BYTES >> 20
            ));
        }
        out.events.push(NewEvent {
            id: Some(id),
            event_type,
            content_type,
            data,
            timestamp: Some(timestamp),
            metadata: if k == 0 { e.metadata.clone() } else { None },
            origin: e.origin.clone(),
        });
    }
    if !kept && out.differences.len() < DIFFERENCES {
        let after: Vec<Value> = out.events[first..]
            .iter()
            .map(|a| {
                json!({
                    "type": a.event_type,
                    "timestamp": a.timestamp,
                    "data": crate::content::value(&a.content_type, &a.data),
                })
            })
            .collect();
        out.differences.push(json!({
            "index": e.index,
            "before": {
                "type": e.event_type,
                "timestamp": e.timestamp,
                "data": crate::content::value(&e.content_type, &e.data),
            },
            "after": after,
        }));
    }
    Ok(())
}

/// Folds the stream's reducers over the new history: their states after it, and the
/// events their dispatches would append. Reducers that read no other are folded two
/// groups at once, in sandboxes of their own; otherwise all together, in order.
fn fold(i: &Inputs, history: &[StoredEvent], out: &mut Outcome) -> Result<()> {
    if i.reducers.is_empty() {
        return Ok(());
    }
    let alone = i.reducers.iter().all(|r| r.reads.is_empty());
    let groups: Vec<Vec<&ReducerRow>> = if alone && i.reducers.len() > 1 {
        let mut groups = vec![Vec::new(), Vec::new()];
        for (k, r) in i.reducers.iter().enumerate() {
            groups[k % 2].push(r);
        }
        groups
    } else {
        vec![i.reducers.iter().collect()]
    };
    let mut states: HashMap<String, Option<String>> = HashMap::new();
    for (caused, folded) in on_threads(&groups, |g| fold_group(i, g, history))? {
        out.caused.extend(caused);
        states.extend(folded);
    }
    for r in &i.reducers {
        out.states
            .push((r.name.clone(), states.remove(&r.name).flatten()));
    }
    Ok(())
}

/// What one group of reducers causes and its states, by name.
type Folded = (Vec<Caused>, Vec<(String, Option<String>)>);

/// [`fold`] of one group of reducers (each after those it reads).
fn fold_group(i: &Inputs, reducers: &[&ReducerRow], history: &[StoredEvent]) -> Result<Folded> {
    let mut caused_out = Vec::new();
    let mut sandbox = sandbox(&i.limits)?;
    for (slot, r) in reducers.iter().enumerate() {
        let code = r.prepared();
        sandbox.load(slot as u32, &r.name, &code).map_err(|e| {
            EngineError::invalid(format!("reducer {} does not load: {}", r.name, e.message))
        })?;
    }
    let selectors: Vec<Selector> = reducers
        .iter()
        .map(|r| Selector::parse_query(&r.selector).unwrap_or_default())
        .collect();
    let mut halted = vec![false; reducers.len()];
    let source = i.stream.to_string();
    for chunk in history.chunks(CHUNK) {
        let views = Views::of(chunk);
        let inputs = views.inputs(chunk);
        let mut calls = Vec::new();
        for (k, e) in chunk.iter().enumerate() {
            for (slot, r) in reducers.iter().enumerate() {
                if halted[slot] || !selectors[slot].matches(&e.event_type, e.index, e.timestamp) {
                    continue;
                }
                calls.push(Fold {
                    slot: slot as u32,
                    sid: 0,
                    index: e.index.sql(),
                    event: &inputs[k],
                    halt_on_error: r.halt_on_error,
                    live: false,
                    check_size: false,
                });
            }
        }
        let (done, failures) = sandbox.fold_until(&calls, &mut |_| Ok(()), Some(i.deadline));
        if done < calls.len() {
            return Err(overtime("folding the reducers over the spliced history"));
        }
        for (c, _) in failures {
            let slot = calls[c].slot as usize;
            halted[slot] |= reducers[slot].halt_on_error;
        }
        drop(calls);
        sandbox.console();
        for d in sandbox.dispatches() {
            let Some(r) = reducers.get(d.slot as usize) else {
                continue;
            };
            let Some(e) = history.get(d.index as usize) else {
                continue;
            };
            let scope = format!("reducer:{}.{}", i.stream, r.name);
            if let Ok(routed) = dispatched_event(
                &i.stream.account,
                &scope,
                (&source, crate::dispatch::hops(e.origin.as_deref())),
                e.index,
                e.timestamp,
                &d,
            ) {
                caused_out.push(caused(routed, false));
            }
        }
    }
    let mut states = Vec::with_capacity(reducers.len());
    for (slot, r) in reducers.iter().enumerate() {
        let state = sandbox
            .state(slot as u32, 0)
            .map_err(|e| EngineError::internal(format!("cannot read a state: {}", e.message)))?;
        states.push((r.name.clone(), state));
    }
    Ok((caused_out, states))
}

/// The events pipe `row` would append for `history` (with its function's dispatches
/// when `dispatches`), as a run of the pipe routes them. The events the function
/// failed on, and the outputs it made that are refused, are skipped, as a run skips
/// them, with an `error` entry each in `failed` (for the pipe's log).
pub(crate) fn pipe_outputs(
    limits: &Limits,
    row: &PipeRow,
    history: &[StoredEvent],
    dispatches: bool,
    failed: &mut Vec<NewEvent>,
    deadline: Instant,
) -> Result<Vec<Routed>> {
    let selector = Selector::parse_query(&row.selector).unwrap_or_default();
    let picked: Vec<StoredEvent> = history
        .iter()
        .filter(|e| selector.matches(&e.event_type, e.index, e.timestamp))
        .cloned()
        .collect();
    let error = |e: &StoredEvent, message: &str, stack: Option<&str>| {
        crate::pipes::run::log_entry_with_stack("error", e, message, stack)
    };
    // what a run keeps in memory, bounded as a spliced history is
    let mut bytes = 0;
    let mut keep = |out: &mut Vec<Routed>, routed: Routed| -> Result<()> {
        bytes += routed.event.data.len();
        out.push(routed);
        if out.len() > super::MAX_EVENTS || bytes > super::MAX_BYTES {
            return Err(EngineError::too_large(format!(
                "the pipe from {} to {} makes more than {} events or {} MiB from this \
                 history, the most one run over a history may hold",
                row.from,
                row.to,
                super::MAX_EVENTS,
                super::MAX_BYTES >> 20
            )));
        }
        Ok(())
    };
    if row.code.is_empty() {
        let mut out = Vec::with_capacity(picked.len());
        for e in &picked {
            match copied(row, e) {
                Ok(routed) => keep(&mut out, routed)?,
                Err(message) => failed.push(error(e, &message, None)),
            }
        }
        return Ok(out);
    }
    let mut out = Vec::new();
    let mut sandbox = sandbox(limits)?;
    sandbox.set_role("pipe function");
    load(&mut sandbox, 0, "the pipe function", &row.code, row.module)?;
    let scope = format!("pipe:{}>{}", row.from, row.to);
    for chunk in picked.chunks(CHUNK) {
        in_time(deadline, "running the pipe function over the history")?;
        // the pipe thread's own call of the function, args and all
        let shared: Vec<Arc<SharedEvent>> = chunk
            .iter()
            .map(|e| Arc::new(SharedEvent::new(e.clone())))
            .collect();
        let answer = crate::pipes::mapper::map_batch(&mut sandbox, &shared);
        for (e, result) in chunk.iter().zip(answer.mapped) {
            let outs = match result {
                Ok(json) => match serde_json::from_str::<Vec<MapOut>>(&json) {
                    Ok(outs) => outs,
                    Err(err) => {
                        let message = format!("the pipe function's result is not valid: {err}");
                        failed.push(error(e, &message, None));
                        continue;
                    }
                },
                Err(err) => {
                    failed.push(error(e, &err.message, err.stack.as_deref()));
                    continue;
                }
            };
            for (k, o) in outs.into_iter().enumerate() {
                match mapped(row, e, k, o) {
                    Ok(routed) => keep(&mut out, routed)?,
                    Err(message) => failed.push(error(e, &message, None)),
                }
            }
        }
        for d in answer.dispatches.iter().filter(|_| dispatches) {
            let Some(e) = chunk.get(d.sid as usize) else {
                continue;
            };
            if let Ok(routed) = dispatched_event(
                &row.from.account,
                &scope,
                (&e.stream, crate::dispatch::hops(e.origin.as_deref())),
                e.index,
                e.timestamp,
                d,
            ) {
                keep(&mut out, routed)?;
            }
        }
    }
    Ok(out)
}

/// What `r` is once appended: the (sub)stream it lands in (a factory destination,
/// `into_factory`, takes the source's args unless it names others) and its content.
pub(crate) fn caused(r: Routed, into_factory: bool) -> Caused {
    let mut target = r.stream;
    if target.args.is_none() {
        target.args = match (r.explicit_args, into_factory) {
            (Some(args), _) => Some(args),
            (None, true) => r.default_args,
            (None, false) => None,
        };
    }
    Caused {
        stream: target.to_string(),
        id: r.event.id.unwrap_or_default(),
        event_type: r.event.event_type,
        content_type: r.event.content_type,
        data: r.event.data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(p: &str) -> StreamPath {
        match crate::path::parse(p).unwrap() {
            crate::path::Resource::Stream(s) => s,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_pipe_run_over_a_history_stops_at_its_deadline() {
        let row = PipeRow {
            id: 1,
            from: stream("/acme/orders"),
            to: stream("/acme/big"),
            selector: String::new(),
            source: "(e) => e".into(),
            content_type: "application/javascript".into(),
            code: "(e) => e".into(),
            module: false,
            cursor: Position(0),
            piped: 0,
            errors: 0,
            created_at: 0,
        };
        let history: Vec<StoredEvent> = (0..3)
            .map(|k| StoredEvent {
                stream: "acme/orders".into(),
                index: Index(k),
                id: uuid::Uuid::nil(),
                event_type: "t".into(),
                timestamp: 1,
                content_type: "application/json".into(),
                data: Bytes::from_static(b"{}"),
                metadata: None,
                origin: None,
                position: Position(k as i64 + 1),
            })
            .collect();
        let limits = Limits::default();
        let later = Instant::now() + std::time::Duration::from_secs(60);
        let outs = pipe_outputs(&limits, &row, &history, false, &mut Vec::new(), later).unwrap();
        assert_eq!(outs.len(), 3);
        let past = Instant::now() - std::time::Duration::from_millis(1);
        let e = pipe_outputs(&limits, &row, &history, false, &mut Vec::new(), past).unwrap_err();
        assert_eq!(e.code, crate::error::ErrorCode::Unavailable);
        assert!(
            e.message.contains("would take longer than 150 s"),
            "{}",
            e.message
        );
    }
}
