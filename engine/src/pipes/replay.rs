//! Pipe re-runs (API §14): `PUT` of a pipe with `?replay-from={i}` runs the new code
//! over the origin's events from index `i` up to the pipe's cursor, in one go, and
//! applies the recall rule of splices (§12) to what it makes: an output of the old
//! code that the new code does not make again (same id, same content) is recalled
//! with an `eddy.recall` event, and the new outputs not there yet are appended,
//! together with the new code, in one writer transaction. Events past the cursor are
//! piped by the new code as usual. What pipe functions `dispatch()` elsewhere is not
//! replayed.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::Serialize;

use crate::error::{EngineError, Result};
use crate::event::StoredEvent;
use crate::order::{Index, Position};
use crate::path::AccountName;
use crate::selector::Selector;
use crate::splices::compute::{caused, pipe_outputs};
use crate::store::pipe_writes::{PipeRow, PipeWrite, PipeWritten};
use crate::store::read::{Cursor, EventQuery, Scope};
use crate::store::{pipe_reads, splice_reads};

/// What a replay did, as the pipe's `PUT` answers it.
#[derive(Debug, Clone, Serialize)]
pub struct Replayed {
    pub from: u64,
    /// Origin events the new code ran over.
    pub events: usize,
    pub recalled: i64,
    pub appended: i64,
    /// Events the new code failed on (skipped, each with an entry in the pipe's log).
    pub errors: i64,
}

/// Most origin events one replay runs over.
const MAX_EVENTS: usize = crate::splices::MAX_EVENTS;

impl crate::Engine {
    /// Replaces the code of pipe `row.from` → `row.to` and re-runs it from `from`.
    pub(super) async fn replay_pipe(self: &Arc<Self>, row: PipeRow, from: u64) -> Result<Replayed> {
        let Some(existing) = pipe_reads::between(&self.store.reads, &row.from, &row.to).await?
        else {
            return Err(EngineError::not_found(format!(
                "replay-from re-runs the pipe from {} to {}, which does not exist yet: create \
                 it without replay-from (a new pipe starts from the first event)",
                row.from, row.to
            )));
        };
        // a replay maps a history, as a splice does: one at a time per account, on
        // one of the threads splices take
        let owner = super::owner(&row.from).unwrap_or_else(|| row.to.account.clone());
        let _own = self.splicing_accounts.enter(owner.as_str()).await?;
        let _turn = (self.splicing.acquire().await).map_err(|_| crate::reducers::stopped())?;
        // the old code's last batch is written before the replay reads the cursor
        self.pipes.stop(existing.id).await;
        let replayed = self.replay_stopped(row, from, existing.id, &owner).await;
        if replayed.is_err()
            && let Err(e) = self.resume_pipe(existing.id).await
        {
            tracing::warn!(error = %e.message, "a pipe whose replay failed did not start again");
        }
        replayed
    }

    /// [`Engine::replay_pipe`] once the pipe (`id`) is stopped.
    async fn replay_stopped(
        self: &Arc<Self>,
        row: PipeRow,
        from: u64,
        id: i64,
        owner: &AccountName,
    ) -> Result<Replayed> {
        let (cursor, _, _) = pipe_reads::progress(&self.store.reads, id).await?;
        let history = self.origin_events(&row, from, cursor).await?;
        let into_factory = match &row.to.args {
            Some(_) => false,
            None => self.resolve(&row.to).await?.is_some_and(|r| r.info.factory),
        };
        let limits = self.reducers.limits.clone();
        let (new_row, events) = (row.clone(), history.clone());
        let (routed, failed) = tokio::task::spawn_blocking(move || {
            let mut failed = Vec::new();
            let deadline = std::time::Instant::now() + crate::splices::compute::TIME_MAX;
            pipe_outputs(&limits, &new_row, &events, false, &mut failed, deadline)
                .map(|r| (r, failed))
        })
        .await
        .map_err(|e| EngineError::internal(e.to_string()))??;

        // the old outputs: events in the destination whose origin is one of these
        // events and whose id is one the pipe derives for it
        let by_origin: HashMap<(&str, u64), &StoredEvent> = history
            .iter()
            .map(|e| ((e.stream.as_str(), e.index.get()), e))
            .collect();
        let candidates = splice_reads::caused_in(&self.store.reads, &row.to).await?;
        let mut per_origin: HashMap<(String, i64), usize> = HashMap::new();
        for (source, c) in &candidates {
            *per_origin
                .entry((source.clone(), c.origin_index))
                .or_default() += 1;
        }
        let old: Vec<&splice_reads::Caused> = candidates
            .iter()
            .filter(|(source, c)| {
                let Some(e) = by_origin.get(&(source.as_str(), c.origin_index as u64)) else {
                    return false;
                };
                let n = per_origin[&(source.clone(), c.origin_index)];
                (0..n).any(|k| crate::pipes::run::piped_id(&row, e, k) == c.id)
            })
            .map(|(_, c)| c)
            .collect();
        let new: Vec<_> = routed
            .iter()
            .map(|r| caused(r.clone(), into_factory))
            .collect();
        let by_key: HashMap<(&str, uuid::Uuid), usize> = new
            .iter()
            .enumerate()
            .map(|(k, c)| ((c.stream.as_str(), c.id), k))
            .collect();
        let mut kept: HashSet<usize> = HashSet::new();
        let mut recalls = Vec::new();
        for o in old {
            match by_key.get(&(o.stream.as_str(), o.id)) {
                Some(&k)
                    if new[k].event_type == o.event_type
                        && new[k].content_type == o.content_type
                        && new[k].data.as_ref() == o.data.as_slice() =>
                {
                    kept.insert(k);
                }
                _ => recalls.push(o.pos),
            }
        }
        let outs: Vec<_> = routed
            .into_iter()
            .enumerate()
            .filter(|(k, _)| !kept.contains(k))
            .map(|(_, r)| r)
            .collect();
        // into another account's stream, within its rate limit (a replay is one append
        // of all it adds there, answered 429 or 413 as a batch would be)
        if super::owner(&row.from).is_some_and(|o| o != row.to.account) && !outs.is_empty() {
            self.controls(&row.to)
                .await?
                .check_rate(&row.to, outs.len())?;
        }
        // the writer's time, as splice approvals count it: one transaction of all
        let n = (outs.len() + recalls.len()) as u64;
        let budget = &self.splice_budget;
        budget.room(owner.as_str(), n).map_err(|secs| {
            let this = format!(
                "this replay of the pipe from {} to {} would write {n} (its outputs and \
                 recalls)",
                row.from, row.to
            );
            crate::splices::over_budget(owner.as_str(), Some(this), budget.limit(), secs)
        })?;
        budget.spend(owner.as_str(), n);
        let written = self
            .store
            .writer
            .pipe(PipeWrite::Replay {
                log_stream: row.from.pipe_logs(&row.to),
                row: Box::new(row),
                from,
                recalls,
                outs,
                logs: failed,
            })
            .await
            .inspect_err(|_| budget.give_back(owner.as_str(), n))?;
        let PipeWritten::Replayed {
            recalled,
            appended,
            errors,
        } = written
        else {
            return Err(EngineError::internal("unexpected answer to a pipe replay"));
        };
        Ok(Replayed {
            from,
            events: history.len(),
            recalled,
            appended,
            errors,
        })
    }

    /// The origin's events with index `from` or more (of every substream of a
    /// factory) at positions up to `cursor`, in position order.
    async fn origin_events(
        &self,
        row: &PipeRow,
        from: u64,
        cursor: Position,
    ) -> Result<Vec<StoredEvent>> {
        let Some(resolved) = self.resolve(&row.from).await? else {
            return Ok(Vec::new());
        };
        let Some(scope) = resolved.scope else {
            return Ok(Vec::new());
        };
        let selector = Selector {
            from: Some(Index(from)),
            ..Selector::default()
        };
        let prefix = format!("{}/{}", row.from.account, row.from.stream);
        let mut next = match scope {
            Scope::Substream(_) => Cursor::Index(Index(from)),
            Scope::Factory(_) => Cursor::After(Position::START),
        };
        let mut out = Vec::new();
        loop {
            let page = self
                .read(&EventQuery {
                    scope,
                    prefix: &prefix,
                    selector: &selector,
                    cursor: next,
                    limit: 10_000,
                })
                .await?;
            let more = page.more;
            let following = page.next_cursor(scope);
            // positions grow in either order: once past the cursor, nothing more
            let past = page.events.iter().any(|e| e.position > cursor);
            out.extend(page.events.into_iter().filter(|e| e.position <= cursor));
            if out.len() > MAX_EVENTS {
                return Err(EngineError::too_large(format!(
                    "replay-from={from} would re-run the pipe over more than {MAX_EVENTS} events"
                )));
            }
            match following {
                Some(c) if more && !past => next = c,
                _ => break,
            }
        }
        Ok(out)
    }
}
