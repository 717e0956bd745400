//! Splices (API §12): a stream's owner replaces its history with an edited copy. A
//! splice is made with a map function, previewed at once (`compute`), and stored
//! pending; its approval maps the history again (the stream must be as the preview
//! saw it) and replaces it in one writer transaction (`store::splice_writes`), after
//! which every reducer of the stream folds again from the first event and
//! subscribers start again from index 0.
//!
//! Downstream effects follow one rule: an event that the old history caused (a
//! reducer's or pipe function's `dispatch()`, or a pipe's output, found by its
//! `origin`) and that the new history does not cause again, the same event with the
//! same content, is recalled with an `eddy.recall` event in its stream; the events
//! the new history causes are appended as usual, by the reducers' rebuild and the
//! pipes, whose derived ids make the ones already there duplicates.

pub(crate) mod compute;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use eddy_runtime_js::{Language, prepare};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::{EngineError, ErrorCode, Result};
use crate::event::NewEvent;
use crate::path::StreamPath;
use crate::selector::Selector;
use crate::store::fold_source::FoldSource;
use crate::store::pipe_writes::PipeRow;
use crate::store::read::Scope;
use crate::store::reducer_writes::ReducerRow;
use crate::store::splice_writes::{
    Approval, CausedSince, SpliceRow, SpliceWrite, SpliceWritten, stale,
};
use crate::store::{pipe_reads, reducer_reads, splice_reads};

/// Most events a spliced stream may hold, before and after: its history is mapped in
/// memory, and its approval is one writer transaction, which every other account's
/// writes wait for (about 4 s for a million 200-byte events here).
pub const MAX_EVENTS: usize = 1_000_000;
/// Most bytes of event data a spliced stream may hold, before and after.
pub const MAX_BYTES: usize = 256 << 20;
/// Pending splices a stream may have at once.
const MAX_PENDING: usize = 10;
/// Downstream events a preview lists of those recalled and of those added.
const LISTED: usize = 100;

/// A splice to make.
pub struct SpliceRequest {
    pub stream: StreamPath,
    pub source: String,
    pub language: Language,
    pub selector: Selector,
}

/// A splice as the API shows it.
#[derive(Debug, Clone)]
pub struct SpliceView {
    pub id: String,
    pub status: String,
    pub selector: String,
    pub created_at: i64,
    pub decided_at: Option<i64>,
    /// The version the replaced history keeps (`strm@{version}`), once approved.
    pub version: Option<i64>,
    pub preview: Value,
}

impl SpliceView {
    fn of(row: SpliceRow) -> Self {
        Self {
            preview: serde_json::from_str(&row.preview).unwrap_or(Value::Null),
            id: row.id,
            status: row.status,
            selector: row.selector,
            created_at: row.created_at,
            decided_at: row.decided_at,
            version: row.version,
        }
    }
}

/// What a preview was computed against, kept with the splice (`recalls`): the
/// downstream events to recall, and the reducer versions and pipes that decided it.
#[derive(Serialize, Deserialize)]
struct Basis {
    recalls: Vec<i64>,
    /// The position up to which the preview saw every downstream event the history
    /// had caused, and the positions above it that it saw too: what was caused after
    /// them (a reducer or pipe behind, an append since) is recalled on approval.
    #[serde(default)]
    caused_seen: Option<(i64, Vec<i64>)>,
    /// Each reducer version's and pipe's id, code and selector, as [`fingerprints`]
    /// writes them.
    reducers: Vec<String>,
    pipes: Vec<String>,
    last_index: i64,
}

/// What decides what reducer versions and pipes cause: their ids, code and selectors.
fn fingerprints(reducers: &[ReducerRow], pipes: &[PipeRow]) -> (Vec<String>, Vec<String>) {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let r = reducers
        .iter()
        .map(|r| format!("{} {} {}", r.id, r.code_hash, r.selector))
        .collect();
    let p = pipes
        .iter()
        .map(|p| {
            let mut h = DefaultHasher::new();
            p.code.hash(&mut h);
            format!("{} {:016x} {}", p.id, h.finish(), p.selector)
        })
        .collect();
    (r, p)
}

/// The most memory a kept preview may take (an estimate: the events' bytes and a
/// per-event overhead); a larger history is mapped again on approval.
const KEPT_MAX_BYTES: usize = 512 << 20;
/// How long a preview's history is kept for its approval.
const KEPT_FOR: std::time::Duration = std::time::Duration::from_secs(600);

/// The spliced history of the latest preview made on this node, kept so that its
/// approval (usually soon after, on the same node) writes it without reading and
/// mapping the whole stream again. One at a time, dropped when another preview
/// starts, when the splice is decided, or after ten minutes.
#[derive(Default, Clone)]
pub(crate) struct Kept(Arc<std::sync::Mutex<Option<KeptHistory>>>);

/// A splice's id, when its history was kept, and the history.
type KeptHistory = (String, std::time::Instant, Vec<NewEvent>);

impl Kept {
    /// Keeps `events` as splice `id`'s history, for [`KEPT_FOR`] at most.
    fn keep(&self, id: &str, events: Vec<NewEvent>) {
        self.put(id, events);
        let (kept, id) = (self.clone(), id.to_owned());
        tokio::spawn(async move {
            tokio::time::sleep(KEPT_FOR).await;
            kept.forget(Some(&id));
        });
    }

    /// Drops the history kept, when it is splice `id`'s (any splice's for `None`).
    fn forget(&self, id: Option<&str>) {
        let mut slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if id.is_none_or(|id| slot.as_ref().is_some_and(|k| k.0 == id)) {
            *slot = None;
        }
    }

    /// Keeps `events` again for splice `id`, whose approval took them out and did not
    /// write them, unless another preview is kept meanwhile.
    fn put_back(&self, id: &str, events: Vec<NewEvent>) {
        let free = {
            let slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
            slot.as_ref().is_none_or(|k| k.0 == id)
        };
        if free {
            self.keep(id, events);
        }
    }

    fn put(&self, id: &str, events: Vec<NewEvent>) {
        let size: usize = events
            .iter()
            .map(|e| {
                e.data.len()
                    + e.event_type.len()
                    + e.content_type.len()
                    + e.metadata.as_ref().map_or(0, String::len)
                    + std::mem::size_of::<NewEvent>()
                    + 64
            })
            .sum();
        let mut slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *slot =
            (size <= KEPT_MAX_BYTES).then(|| (id.to_owned(), std::time::Instant::now(), events));
    }

    /// The history kept for splice `id`, taken out; `None` when another preview came
    /// since, or it is older than [`KEPT_FOR`].
    fn take(&self, id: &str) -> Option<Vec<NewEvent>> {
        let mut slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match slot.take() {
            Some((kept, at, events)) if kept == id && at.elapsed() < KEPT_FOR => Some(events),
            Some(other) if other.0 != id && other.1.elapsed() < KEPT_FOR => {
                *slot = Some(other);
                None
            }
            _ => None,
        }
    }
}

/// The 429 of a job of `account` (a splice approval, a pipe replay) that its budget of
/// the writer has no room for yet; `this` says what the job would write, when known.
pub(crate) fn over_budget(
    account: &str,
    this: Option<String>,
    limit: u64,
    secs: u64,
) -> EngineError {
    let this = this.map_or_else(
        || "they have written that many".to_owned(),
        |this| format!("{this} past that"),
    );
    EngineError::new(
        ErrorCode::TooManyRequests,
        format!(
            "the splice approvals and pipe replays of account {account} may write {limit} \
             events in ten minutes on this server (each writes all it makes in one \
             transaction, which every account's appends wait for), and {this}: retry in \
             {secs} s"
        ),
    )
    .with("retryAfter", secs)
}

/// The stream a splice works on.
struct History {
    stream_id: i64,
    /// Its substream.
    sid: i64,
}

impl crate::Engine {
    /// Makes a splice of a plain stream and previews it: nothing changes yet.
    pub async fn create_splice(self: &Arc<Self>, req: SpliceRequest) -> Result<SpliceView> {
        let stream = splice_target(&req.stream)?;
        let language = req.language;
        let source = req.source.clone();
        let code = tokio::task::spawn_blocking(move || prepare(&source, language))
            .await
            .map_err(|e| EngineError::internal(e.to_string()))?
            .map_err(|e| {
                EngineError::invalid(format!("the map function has a syntax error: {e}"))
                    .with("line", e.line)
                    .with("column", e.column)
            })?;
        let _own = self
            .splicing_accounts
            .enter(stream.account.as_str())
            .await?;
        let _turn = self
            .splicing
            .acquire()
            .await
            .map_err(|_| crate::reducers::stopped())?;
        // the kept history goes before another is made, not after
        self.previewed.forget(None);
        let history = self.history(&stream).await?;
        if splice_reads::pending(&self.store.reads, history.stream_id).await? >= MAX_PENDING {
            return Err(EngineError::conflict(format!(
                "{stream} has {MAX_PENDING} pending splices: approve or reject one first"
            )));
        }
        let versions = reducer_reads::versions_of(&self.store.reads, history.stream_id).await?;
        let all: Vec<ReducerRow> = versions.into_iter().map(|v| v.0).collect();
        let mut pipes = pipe_reads::from_stream(&self.store.reads, &stream).await?;
        let (reducer_prints, pipe_prints) = fingerprints(&all, &pipes);
        // a pipe into another account's stream whose settings no longer let this
        // account append there is left out: the splice adds nothing there and recalls
        // nothing there either (its owner closed it to this account), as the pipe's
        // own run refuses its outputs
        let mut closed: Vec<String> = Vec::new();
        if self.access_enabled() {
            let mut allowed = Vec::with_capacity(pipes.len());
            for pipe in pipes {
                let appends = pipe.to.account == stream.account
                    || crate::access::account_may_append(
                        stream.account.as_str(),
                        &pipe.to,
                        &self.controls(&pipe.to).await?.settings,
                    );
                if appends {
                    allowed.push(pipe);
                } else {
                    closed.push(format!("{}/{}", pipe.to.account, pipe.to.stream));
                }
            }
            pipes = allowed;
        }
        let mut reducers: Vec<ReducerRow> = all.into_iter().filter(|r| !r.building).collect();
        sort_by_dependency(&mut reducers);
        // every downstream event at or below `seen` is committed, so the read sees it
        let seen = self.store.last_position().0;
        let mut old = splice_reads::caused_by(&self.store.reads, &stream.to_string(), -1).await?;
        old.retain(|o| {
            let base = o.stream.split('(').next().unwrap_or(&o.stream);
            !closed.iter().any(|c| c == base)
        });
        let id = format!("spl_{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
        let inputs = compute::Inputs {
            splice_id: id.clone(),
            stream: stream.clone(),
            sid: history.sid,
            until: self.store.read_bound(),
            code: code.clone(),
            selector: req.selector.clone(),
            reducers,
            pipes,
            limits: self.reducers.limits.clone(),
            json: self.controls.json(),
            deadline: std::time::Instant::now() + compute::TIME_MAX,
        };
        let out = self.compute(inputs, true).await?;

        // what downstream keeps, loses and gains
        let new: HashMap<(&str, uuid::Uuid), &compute::Caused> = out
            .caused
            .iter()
            .map(|c| ((c.stream.as_str(), c.id), c))
            .collect();
        let mut matched: HashSet<(&str, uuid::Uuid)> = HashSet::new();
        let mut recalls = Vec::new();
        let mut recalled = Vec::new();
        for o in &old {
            let key = (o.stream.as_str(), o.id);
            match new.get(&key) {
                Some(n)
                    if n.event_type == o.event_type
                        && n.content_type == o.content_type
                        && n.data.as_ref() == o.data.as_slice() =>
                {
                    matched.insert(key);
                }
                _ => {
                    recalls.push(o.pos);
                    if recalled.len() < LISTED {
                        recalled.push(json!({
                            "stream": o.stream, "index": o.index, "id": o.id.to_string(),
                            "type": o.event_type, "causedBy": o.origin_index,
                        }));
                    }
                }
            }
        }
        let added: Vec<&compute::Caused> = out
            .caused
            .iter()
            .filter(|c| !matched.contains(&(c.stream.as_str(), c.id)))
            .collect();
        let states: serde_json::Map<String, Value> = out
            .states
            .iter()
            .map(|(name, json)| {
                let v = json
                    .as_deref()
                    .and_then(|j| serde_json::from_str(j).ok())
                    .unwrap_or(Value::Null);
                (name.clone(), v)
            })
            .collect();
        let c = out.counts;
        let preview = json!({
            "events": {
                "before": out.before,
                "after": out.events.len(),
                "kept": c.kept, "changed": c.changed, "dropped": c.dropped, "added": c.added,
            },
            "differences": out.differences,
            "reducers": states,
            "downstream": {
                "recalled": recalled,
                "recalledCount": recalls.len(),
                "added": added.iter().take(LISTED).map(|a| json!({
                    "stream": a.stream, "id": a.id.to_string(), "type": a.event_type,
                })).collect::<Vec<_>>(),
                "addedCount": added.len(),
            },
            "lastIndex": out.last_index,
        });
        let basis = Basis {
            recalls,
            caused_seen: Some((
                seen,
                old.iter().map(|o| o.pos).filter(|p| *p > seen).collect(),
            )),
            reducers: reducer_prints,
            pipes: pipe_prints,
            last_index: out.last_index,
        };
        let row = SpliceRow {
            id,
            stream_id: history.stream_id,
            status: "pending".into(),
            source: req.source,
            content_type: match language {
                Language::JavaScript => "application/javascript".into(),
                Language::TypeScript => "application/typescript".into(),
            },
            code: code.js,
            module: code.shape == eddy_runtime_js::Shape::Module,
            selector: req.selector.to_query(),
            last_position: out.last_position,
            preview: preview.to_string(),
            recalls: serde_json::to_string(&basis).unwrap_or_default(),
            version: None,
            created_at: crate::store::writer::now_ms(),
            decided_at: None,
        };
        self.store
            .writer
            .splice(SpliceWrite::Create(Box::new(row.clone())))
            .await?;
        self.previewed.keep(&row.id, out.events);
        Ok(SpliceView::of(row))
    }

    /// The splices of a stream, oldest first.
    pub async fn splices(&self, path: &StreamPath) -> Result<Vec<SpliceView>> {
        let stream = splice_target(path)?;
        let resolved = self.resolve_existing(&stream).await?;
        let rows = splice_reads::of_stream(&self.store.reads, resolved.info.id).await?;
        Ok(rows.into_iter().map(SpliceView::of).collect())
    }

    /// One splice of a stream.
    pub async fn splice(&self, path: &StreamPath, id: &str) -> Result<SpliceView> {
        let stream = splice_target(path)?;
        let resolved = self.resolve_existing(&stream).await?;
        let row = splice_reads::one(&self.store.reads, resolved.info.id, id)
            .await?
            .ok_or_else(|| missing(&stream, id))?;
        Ok(SpliceView::of(row))
    }

    /// Rejects a pending splice.
    pub async fn reject_splice(&self, path: &StreamPath, id: &str) -> Result<SpliceView> {
        let stream = splice_target(path)?;
        let resolved = self.resolve_existing(&stream).await?;
        self.previewed.forget(Some(id));
        self.store
            .writer
            .splice(SpliceWrite::Reject {
                stream_id: resolved.info.id,
                id: id.to_owned(),
            })
            .await
            .map_err(|e| match e.code {
                crate::error::ErrorCode::NotFound => missing(&stream, id),
                _ => e,
            })?;
        self.splice(&stream, id).await
    }

    /// Applies a pending splice: the stream's history becomes the spliced copy.
    pub async fn approve_splice(
        self: &Arc<Self>,
        path: &StreamPath,
        id: &str,
    ) -> Result<SpliceView> {
        let stream = splice_target(path)?;
        let resolved = self.resolve_existing(&stream).await?;
        let row = splice_reads::one(&self.store.reads, resolved.info.id, id)
            .await?
            .ok_or_else(|| missing(&stream, id))?;
        if row.status != "pending" {
            return Err(EngineError::conflict(format!(
                "splice {id} is {} already",
                row.status
            )));
        }
        let basis: Basis = serde_json::from_str(&row.recalls)
            .map_err(|e| EngineError::internal(format!("a stored splice does not parse: {e}")))?;
        let own = self
            .splicing_accounts
            .enter(stream.account.as_str())
            .await?;
        let budget = |n: Option<u64>| {
            let this = n.map(|n| {
                format!("this approval of {stream} would write {n} (its new history and recalls)")
            });
            let account = stream.account.as_str();
            (self.splice_budget.room(account, n.unwrap_or(1)))
                .map_err(|secs| over_budget(account, this, self.splice_budget.limit(), secs))
        };
        // with nothing left of the budget, before the history is mapped again
        budget(None)?;
        let _turn = self
            .splicing
            .acquire()
            .await
            .map_err(|_| crate::reducers::stopped())?;
        let history = self.history(&stream).await?;
        let versions = reducer_reads::versions_of(&self.store.reads, history.stream_id).await?;
        let reducers: Vec<ReducerRow> = versions.into_iter().map(|v| v.0).collect();
        // what was caused since the preview, read here rather than in the writer's
        // transaction, which looks only at what commits after this read
        let caused_since = match basis.caused_seen {
            Some((seen, known)) => {
                let after = self.store.last_position().0;
                let read = splice_reads::caused_by(&self.store.reads, &stream.to_string(), seen)
                    .await?
                    .into_iter()
                    .map(|c| c.pos)
                    .filter(|pos| !known.contains(pos))
                    .collect();
                Some(CausedSince { read, after, known })
            }
            None => None,
        };
        let pipes = pipe_reads::from_stream(&self.store.reads, &stream).await?;
        if fingerprints(&reducers, &pipes) != (basis.reducers, basis.pipes) {
            return Err(EngineError::conflict(format!(
                "the reducers or pipes of {stream} changed since splice {id} was previewed: \
                 preview it again (POST a new splice)"
            )));
        }
        let events = match self.previewed.take(id) {
            // the stream must still end where the preview saw it (the writer checks
            // that the preview's last event is still there)
            Some(events) => {
                let source = FoldSource::open(&self.store).await?;
                let (name, sid, after) = (stream.to_string(), history.sid, basis.last_index);
                let until = self.store.read_bound().0;
                let later = tokio::task::spawn_blocking(move || {
                    source.history(&name, sid, after, until, 1)
                })
                .await
                .map_err(|e| EngineError::internal(e.to_string()))??;
                if !later.is_empty() {
                    return Err(stale(id));
                }
                events
            }
            None => {
                let out = self
                    .compute(self.approval_inputs(&row, &stream, &history), false)
                    .await?;
                if out.last_position != row.last_position {
                    return Err(stale(id));
                }
                out.events
            }
        };
        // what the writer's transaction writes: the new history, and a recall each
        let recalls = basis.recalls.len() + caused_since.as_ref().map_or(0, |c| c.read.len());
        let n = (events.len() + recalls) as u64;
        if let Err(e) = budget(Some(n)) {
            // the history stays for a later try
            self.previewed.put_back(id, events);
            return Err(e);
        }
        let approval = Approval {
            id: row.id.clone(),
            stream: stream.clone(),
            stream_id: history.stream_id,
            last_index: basis.last_index,
            last_position: row.last_position,
            events,
            recalls: basis.recalls,
            caused_since,
            reducers,
        };
        // counted before the write, and given back if it fails: a client gone meanwhile
        // does not stop the write, so it must not escape the count either
        self.splice_budget.spend(stream.account.as_str(), n);
        // the write and the reducers' restart after it go on if the client goes away
        let engine = self.clone();
        let stream_id = history.stream_id;
        let target = stream.clone();
        let written = tokio::spawn(async move {
            // the account's next approval waits for this one, client or not
            let _own = own;
            let written = engine
                .store
                .writer
                .splice(SpliceWrite::Approve(Box::new(approval)))
                .await;
            let written = match written {
                Ok(SpliceWritten::Approved(done)) => done,
                Ok(_) => return Err(EngineError::internal("unexpected answer to an approval")),
                Err(e) => {
                    engine.splice_budget.give_back(target.account.as_str(), n);
                    return Err(e);
                }
            };
            engine.restart_spliced(&target, stream_id, written).await
        });
        written
            .await
            .map_err(|e| EngineError::internal(format!("the approval failed: {e}")))??;
        self.splice(&stream, id).await
    }

    /// Starts every reducer version of a spliced stream again from its first event.
    async fn restart_spliced(
        self: &Arc<Self>,
        stream: &StreamPath,
        stream_id: i64,
        done: Box<crate::store::splice_writes::Approved>,
    ) -> Result<()> {
        if done.old_reducers.is_empty() {
            return Ok(());
        }
        self.reducers
            .published
            .remove(stream_id, &done.old_reducers);
        if let Some(lane) = self.reducers.placement.get(stream_id) {
            self.reducers.lanes[lane].send(crate::reducers::Msg::Delete {
                stream_id,
                ids: done.old_reducers.clone(),
            })?;
        }
        for row in done.new_reducers {
            self.run_version(Box::new(row), stream.clone(), None)
                .await?;
        }
        Ok(())
    }

    /// What an approval maps: the stored splice's code over the stream's history.
    fn approval_inputs(
        &self,
        row: &SpliceRow,
        stream: &StreamPath,
        history: &History,
    ) -> compute::Inputs {
        compute::Inputs {
            splice_id: row.id.clone(),
            stream: stream.clone(),
            sid: history.sid,
            until: self.store.read_bound(),
            code: eddy_runtime_js::Prepared {
                js: row.code.clone(),
                shape: if row.module {
                    eddy_runtime_js::Shape::Module
                } else {
                    eddy_runtime_js::Shape::Expression
                },
                reads: Vec::new(),
            },
            selector: Selector::parse_query(&row.selector).unwrap_or_default(),
            reducers: Vec::new(),
            pipes: Vec::new(),
            limits: self.reducers.limits.clone(),
            json: self.controls.json(),
            deadline: std::time::Instant::now() + compute::TIME_MAX,
        }
    }

    /// Deletes a history a splice replaced (`strm@{n}`) with its events; answers how
    /// many events it held.
    pub async fn delete_history(&self, path: &StreamPath) -> Result<u64> {
        if path.version().is_none() || path.args.is_some() {
            return Err(EngineError::invalid(format!(
                "{path} is not a history a splice replaced: only strm@n can be deleted"
            )));
        }
        let written = self
            .store
            .writer
            .splice(SpliceWrite::DeleteHistory(path.clone()))
            .await;
        self.controls
            .invalidate(path.account.as_str(), path.stream.as_str());
        match written? {
            SpliceWritten::Deleted(events) => Ok(events),
            _ => Err(EngineError::internal("unexpected answer to a deletion")),
        }
    }

    /// The plain stream to splice, which must have events.
    async fn history(&self, stream: &StreamPath) -> Result<History> {
        let resolved = self.resolve_existing(stream).await?;
        if resolved.info.factory {
            return Err(factory(stream));
        }
        let Some(Scope::Substream(sid)) = resolved.scope else {
            return Err(EngineError::conflict(format!(
                "{stream} has no events to splice"
            )));
        };
        Ok(History {
            stream_id: resolved.info.id,
            sid,
        })
    }

    /// Runs `compute` on a thread of its own, reading with a connection of its own.
    async fn compute(&self, inputs: compute::Inputs, preview: bool) -> Result<compute::Outcome> {
        let source = FoldSource::open(&self.store).await?;
        crate::reducers::on_js_thread("eddy-splice", move || {
            compute::compute(inputs, &source, preview)
        })
        .await?
    }
}

/// The plain stream a splice URL names.
fn splice_target(path: &StreamPath) -> Result<StreamPath> {
    if path.version().is_some() {
        return Err(EngineError::invalid(format!(
            "{path} is a history a splice replaced: it is read-only"
        )));
    }
    if path.args.is_some() {
        return Err(factory(path));
    }
    Ok(path.clone())
}

fn factory(path: &StreamPath) -> EngineError {
    EngineError::invalid(format!(
        "splices replace the history of a plain stream, and {path} is a factory or one of \
         its substreams"
    ))
}

fn missing(stream: &StreamPath, id: &str) -> EngineError {
    EngineError::not_found(format!("splice {id} of {stream} does not exist"))
}

/// Reducers in dependency order: each after those it reads.
fn sort_by_dependency(rows: &mut Vec<ReducerRow>) {
    let mut sorted = Vec::with_capacity(rows.len());
    while !rows.is_empty() {
        let ready = rows
            .iter()
            .position(|r| {
                r.reads
                    .iter()
                    .all(|d| !rows.iter().any(|o| &o.name == d && o.id != r.id))
            })
            .unwrap_or(0);
        sorted.push(rows.remove(ready));
    }
    *rows = sorted;
}

#[cfg(test)]
mod kept_tests {
    use super::*;

    fn history(bytes: usize) -> Vec<NewEvent> {
        vec![NewEvent {
            id: None,
            event_type: "t".into(),
            content_type: "application/json".into(),
            data: vec![b'1'; bytes].into(),
            timestamp: None,
            metadata: None,
            origin: None,
        }]
    }

    #[test]
    fn a_kept_history_is_taken_once_by_its_own_splice() {
        let kept = Kept::default();
        kept.put("spl_a", history(1));
        assert!(kept.take("spl_b").is_none(), "another splice's");
        assert_eq!(kept.take("spl_a").map(|e| e.len()), Some(1));
        assert!(kept.take("spl_a").is_none(), "taken already");
        kept.put("spl_a", history(1));
        kept.forget(Some("spl_b"));
        kept.forget(None);
        assert!(kept.take("spl_a").is_none(), "forgotten");
    }

    #[test]
    fn a_history_too_large_or_too_old_is_not_kept() {
        let kept = Kept::default();
        // zeroed memory the allocator maps lazily: large, yet cheap to make here
        let large = vec![NewEvent {
            data: vec![0u8; KEPT_MAX_BYTES + 1].into(),
            ..history(0).remove(0)
        }];
        kept.put("spl_a", large);
        assert!(kept.take("spl_a").is_none());
        kept.put("spl_a", history(1));
        if let Some(k) = kept.0.lock().unwrap().as_mut()
            && let Some(old) = std::time::Instant::now().checked_sub(KEPT_FOR)
        {
            k.1 = old;
        }
        assert!(kept.take("spl_a").is_none(), "expired");
    }
}
