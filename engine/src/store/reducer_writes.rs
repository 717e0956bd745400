//! Reducer writes inside the writer's transaction: deploying a version, deleting a
//! reducer, and checkpoints, which save states, the folded position and log entries
//! together (what makes folding exactly once), and promote a rebuilt version.

use super::account_events::{Change, account_event};
use super::apply::{AppendRequest, Ledger, Staged};
use super::db::vals;
use super::pipe_writes::{Routed, append_routed, refusal_log};
use super::writer::now_ms;
use crate::error::{EngineError, Result};
use crate::event::{ExpectedIndex, NewEvent};
use crate::path::StreamPath;
use crate::settings::StreamSettings;

/// A reducer version as stored.
#[derive(Debug, Clone)]
pub struct ReducerRow {
    pub id: i64,
    pub stream_id: i64,
    pub factory: bool,
    pub name: String,
    /// `active` or `building` (a redeploy folding from the start).
    pub building: bool,
    pub source: String,
    pub content_type: String,
    pub code: String,
    pub module: bool,
    pub reads: Vec<String>,
    pub selector: String,
    pub halt_on_error: bool,
    pub code_hash: String,
    pub position: i64,
    pub errors: i64,
    pub halted: Option<String>,
    /// Events past this position were appended after the version was deployed (set by
    /// the writer; `None` for a version loaded at start, whose cut is where the log
    /// stood then). Folding the events up to it is a replay: `request()` is voided.
    pub live_from: Option<i64>,
}

impl ReducerRow {
    /// The version's code as the sandbox loads it.
    pub(crate) fn prepared(&self) -> eddy_runtime_js::Prepared {
        eddy_runtime_js::Prepared {
            js: self.code.clone(),
            shape: if self.module {
                eddy_runtime_js::Shape::Module
            } else {
                eddy_runtime_js::Shape::Expression
            },
            reads: self.reads.clone(),
        }
    }
}

pub(crate) enum ReducerWrite {
    /// Stores a new version of a reducer, creating the stream when missing.
    Deploy {
        stream: StreamPath,
        row: Box<ReducerRow>,
    },
    /// Deletes every version of a reducer with its states.
    Delete {
        stream_id: i64,
        name: String,
    },
    Checkpoint(Checkpoint),
}

pub(crate) enum ReducerWritten {
    /// The stored row, and the id of a building version it replaced (if any).
    Deployed(Box<ReducerRow>, Option<i64>),
    Deleted(Vec<i64>),
    Saved,
}

/// What a reducer folded since its last checkpoint.
pub(crate) struct Checkpoint {
    pub reducer_id: i64,
    pub position: i64,
    pub new_errors: i64,
    pub halted: Option<String>,
    /// (substream id, last index folded, state JSON or `None` for undefined).
    pub states: Vec<(i64, i64, Option<std::sync::Arc<str>>)>,
    /// Snapshots for `?at=` reads: (substream id, last index folded, state JSON).
    pub snapshots: Vec<(i64, i64, Option<String>)>,
    /// Entries for the stream's log, appended in the same transaction.
    pub logs: Option<(StreamPath, Vec<NewEvent>)>,
    /// Events the reducer dispatched, appended in the same transaction (a destination
    /// that refuses one gets an entry in the log instead).
    pub dispatches: Vec<Routed>,
    /// The active version this (building) version replaces now that it caught up.
    pub promote_over: Option<i64>,
    /// The lease the stream's reducers run under, where leases are kept.
    pub fence: Option<super::cluster::Fence>,
}

pub(super) fn reducer(
    l: &mut Ledger,
    write: ReducerWrite,
    staged: &mut Staged,
) -> Result<ReducerWritten> {
    match write {
        ReducerWrite::Deploy { stream, row } => {
            let deployed = deploy(l, stream, *row, staged)?;
            if let ReducerWritten::Deployed(row, _) = &deployed {
                staged.changed(format!("reducers:{}", row.stream_id));
            }
            Ok(deployed)
        }
        ReducerWrite::Delete { stream_id, name } => {
            staged.changed(format!("reducers:{stream_id}"));
            let (account, stream) =
                l.db.row(
                    "SELECT account, name FROM streams WHERE id = ?1",
                    vals![stream_id],
                    |r| Ok((r.text(0)?, r.text(1)?)),
                )?
                .ok_or_else(|| EngineError::not_found("the reducer's stream does not exist"))?;
            let ids = l.db.rows(
                "SELECT id FROM reducers WHERE stream_id = ?1 AND name = ?2",
                vals![stream_id, name],
                |r| r.int(0),
            )?;
            for id in &ids {
                drop_reducer(l, *id)?;
            }
            if !ids.is_empty() {
                account_event(
                    l,
                    staged,
                    &account,
                    &stream,
                    Change::ReducerDeleted,
                    serde_json::json!({ "reducer": name }),
                )?;
            }
            Ok(ReducerWritten::Deleted(ids))
        }
        ReducerWrite::Checkpoint(c) => {
            checkpoint(l, c, staged)?;
            Ok(ReducerWritten::Saved)
        }
    }
}

fn deploy(
    l: &mut Ledger,
    path: StreamPath,
    mut row: ReducerRow,
    staged: &mut Staged,
) -> Result<ReducerWritten> {
    let key = (
        path.account.as_str().to_owned(),
        path.stream.as_str().to_owned(),
    );
    let stream = match l.stream(staged, &key)? {
        Some(s) => s,
        None => l.create_stream(staged, &key, StreamSettings::default(), 0)?,
    };
    row.stream_id = stream.id;
    row.factory = stream.factory;
    // the stream's log exists from the first deploy, so it can be read and followed
    // before its first entry
    let logs = path.logs();
    let logs_key = (
        logs.account.as_str().to_owned(),
        logs.stream.as_str().to_owned(),
    );
    if l.stream(staged, &logs_key)?.is_none() {
        l.create_stream(staged, &logs_key, StreamSettings::default(), 0)?;
    }
    let existing = l.db.rows(
        "SELECT id, status FROM reducers WHERE stream_id = ?1 AND name = ?2",
        vals![stream.id, row.name],
        |r| Ok((r.int(0)?, r.text(1)?)),
    )?;
    let mut replaced = None;
    for (id, status) in &existing {
        if status == "building" {
            drop_reducer(l, *id)?;
            replaced = Some(*id);
        }
    }
    row.building = existing.iter().any(|(_, s)| s == "active");
    row.position = 0;
    row.errors = 0;
    row.halted = None;
    row.id = l.db.insert_id(
        "INSERT INTO reducers (stream_id, name, status, source, content_type, code, shape, \
                 reads, selector, on_error, code_hash, position, errors, halted, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 0, 0, NULL, ?12)",
        vals![
            row.stream_id,
            row.name,
            if row.building { "building" } else { "active" },
            row.source,
            row.content_type,
            row.code,
            if row.module { "module" } else { "expression" },
            serde_json::to_string(&row.reads).unwrap_or_else(|_| "[]".into()),
            row.selector,
            if row.halt_on_error { "halt" } else { "skip" },
            row.code_hash,
            now_ms(),
        ],
    )?;
    row.live_from = Some(l.next_pos - 1);
    account_event(
        l,
        staged,
        &key.0,
        &key.1,
        Change::ReducerDeployed,
        serde_json::json!({
            "reducer": row.name,
            "codeHash": row.code_hash,
            "building": row.building,
        }),
    )?;
    Ok(ReducerWritten::Deployed(Box::new(row), replaced))
}

fn checkpoint(l: &mut Ledger, c: Checkpoint, staged: &mut Staged) -> Result<()> {
    l.check_fence(c.fence.as_ref())?;
    let exists =
        l.db.row(
            "SELECT 1 FROM reducers WHERE id = ?1",
            vals![c.reducer_id],
            |_| Ok(()),
        )?
        .is_some();
    if !exists {
        return Err(EngineError::not_found("the reducer was deleted"));
    }
    l.db.batch(
            "INSERT INTO reducer_states (reducer_id, sid, idx, state) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (reducer_id, sid) DO UPDATE SET idx = excluded.idx, state = excluded.state",
            |save| {
                for (sid, idx, state) in &c.states {
                    save.exec(vals![c.reducer_id, sid, idx, state])?;
                }
                Ok(())
            },
        )?;
    if !c.snapshots.is_empty() {
        // a stream taken over folds again from the last checkpoint: the same
        // snapshot again is the same state
        l.db.batch(
            "INSERT INTO reducer_snapshots (reducer_id, sid, idx, state) \
             VALUES (?1, ?2, ?3, ?4) ON CONFLICT (reducer_id, sid, idx) DO NOTHING",
            |save| {
                for (sid, idx, state) in &c.snapshots {
                    save.exec(vals![c.reducer_id, sid, idx, state])?;
                }
                Ok(())
            },
        )?;
    }
    l.db.exec(
        "UPDATE reducers SET position = ?2, errors = errors + ?3, halted = COALESCE(?4, halted) \
                 WHERE id = ?1",
        vals![c.reducer_id, c.position, c.new_errors, c.halted],
    )?;
    if let Some(old) = c.promote_over {
        drop_reducer(l, old)?;
        l.db.exec(
            "UPDATE reducers SET status = 'active' WHERE id = ?1",
            vals![c.reducer_id],
        )?;
    }
    let mut logs = c.logs;
    for routed in c.dispatches {
        let origin = routed.event.origin.clone();
        if let Err(e) = append_routed(l, routed, staged)?
            && let Some((_, entries)) = logs.as_mut()
        {
            entries.push(refusal_log(&e, origin.as_deref()));
        }
    }
    if let Some((stream, events)) = logs
        && !events.is_empty()
    {
        let request = AppendRequest {
            metadata: None,
            stream,
            events,
            expected: ExpectedIndex::Any,
        };
        l.append(request, staged)?;
    }
    Ok(())
}

pub(super) fn drop_reducer(l: &mut Ledger, id: i64) -> Result<()> {
    l.db.exec(
        "DELETE FROM reducer_states WHERE reducer_id = ?1",
        vals![id],
    )?;
    l.db.exec(
        "DELETE FROM reducer_snapshots WHERE reducer_id = ?1",
        vals![id],
    )?;
    l.db.exec("DELETE FROM reducers WHERE id = ?1", vals![id])?;
    Ok(())
}
