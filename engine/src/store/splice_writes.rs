//! Splice writes inside the writer's transaction (API §12): storing a previewed
//! splice, rejecting one, and the approval, which replaces a stream's history in one
//! transaction: either the old history or the new one, never a mix.
//!
//! An approval keeps the old history where it is and renames it: the stream's
//! substream moves to a new read-only stream `strm@{version}`, and the stream gets a
//! new substream holding the spliced events from index 0, at new positions, then the
//! events appended since the preview, unchanged. Every reducer version of the stream
//! is stored again from position 0 (a new id, so a checkpoint of the old one that
//! lands late finds nothing), and each downstream event to recall gets its
//! `eddy.recall` event, once: a recalled event loses its client id, which is what
//! marks it recalled and lets the new history's event of the same id in.

use super::account_events::{Change, account_event};
use super::apply::{AppendRequest, Ledger, Staged, SubRow};
use super::db::vals;
use super::reducer_writes::ReducerRow;
use super::writer::now_ms;
use crate::error::{EngineError, ErrorCode, Result};
use crate::event::{ExpectedIndex, NewEvent, derived_id};
use crate::path::StreamPath;
use crate::settings::StreamSettings;

/// A splice as stored.
#[derive(Debug, Clone)]
pub struct SpliceRow {
    pub id: String,
    pub stream_id: i64,
    /// `pending`, `approved` or `rejected`.
    pub status: String,
    pub source: String,
    pub content_type: String,
    pub code: String,
    pub module: bool,
    pub selector: String,
    /// The position of the stream's last event when the preview was made.
    pub last_position: i64,
    pub preview: String,
    /// What the preview was computed against (JSON): the positions of the downstream
    /// events to recall, and the reducers and pipes that decided them.
    pub recalls: String,
    pub version: Option<i64>,
    pub created_at: i64,
    pub decided_at: Option<i64>,
}

/// What an approval writes.
pub(crate) struct Approval {
    pub id: String,
    pub stream: StreamPath,
    pub stream_id: i64,
    /// The preview's last event: the spliced history replaces the events up to it.
    pub last_index: i64,
    pub last_position: i64,
    /// The spliced history, each event with its id and timestamp.
    pub events: Vec<NewEvent>,
    /// The positions of the downstream events to recall.
    pub recalls: Vec<i64>,
    /// What the history caused downstream that the preview did not see, recalled too;
    /// `None` for a splice previewed before this was kept.
    pub caused_since: Option<CausedSince>,
    /// The stream's reducer versions the approval read: stored again from 0.
    pub reducers: Vec<ReducerRow>,
}

/// The downstream events an approval recalls besides the preview's list.
pub(crate) struct CausedSince {
    /// Those the approval's read found (caused above the preview's horizon).
    pub read: Vec<i64>,
    /// The position that read saw everything up to: the writer looks above it.
    pub after: i64,
    /// The positions above the preview's horizon that the preview saw.
    pub known: Vec<i64>,
}

pub(crate) enum SpliceWrite {
    Create(Box<SpliceRow>),
    Reject {
        stream_id: i64,
        id: String,
    },
    Approve(Box<Approval>),
    /// Deletes a history a splice replaced (`strm@{n}`), with its events.
    DeleteHistory(StreamPath),
}

pub(crate) enum SpliceWritten {
    Created,
    Rejected,
    Approved(Box<Approved>),
    /// A replaced history was deleted, with this many events.
    Deleted(u64),
}

/// What an approval did to the stream's reducers (the rest is read from the splice).
pub(crate) struct Approved {
    /// The reducer versions replaced, and their new rows.
    pub old_reducers: Vec<i64>,
    pub new_reducers: Vec<ReducerRow>,
}

pub(super) fn splice(
    l: &mut Ledger,
    write: SpliceWrite,
    staged: &mut Staged,
) -> Result<SpliceWritten> {
    match write {
        SpliceWrite::Create(row) => {
            l.db.exec(
                "INSERT INTO splices (id, stream_id, status, source, content_type, code, module, \
                 selector, last_position, preview, recalls, created_at) \
                 VALUES (?1, ?2, 'pending', ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                vals![
                    row.id,
                    row.stream_id,
                    row.source,
                    row.content_type,
                    row.code,
                    row.module,
                    row.selector,
                    row.last_position,
                    row.preview,
                    row.recalls,
                    row.created_at
                ],
            )?;
            Ok(SpliceWritten::Created)
        }
        SpliceWrite::Reject { stream_id, id } => {
            decide(l, stream_id, &id)?;
            l.db.exec(
                "UPDATE splices SET status = 'rejected', decided_at = ?2 WHERE id = ?1",
                vals![id, now_ms()],
            )?;
            Ok(SpliceWritten::Rejected)
        }
        SpliceWrite::Approve(a) => approve(l, *a, staged),
        SpliceWrite::DeleteHistory(path) => delete_history(l, &path, staged),
    }
}

/// Deletes the replaced history `path` (`strm@{n}`, which takes no writes, so nothing
/// else refers to it but events it caused, whose origins keep naming it).
fn delete_history(l: &mut Ledger, path: &StreamPath, staged: &mut Staged) -> Result<SpliceWritten> {
    let key = (
        path.account.as_str().to_owned(),
        path.stream.as_str().to_owned(),
    );
    let stream = l
        .stream(staged, &key)?
        .filter(|_| path.version().is_some() && path.args.is_none())
        .ok_or_else(|| EngineError::not_found(format!("{path} does not exist")))?;
    let of_stream = "sid IN (SELECT id FROM substreams WHERE stream_id = ?1)";
    let events =
        l.db.row(
            &format!("SELECT COUNT(*) FROM events WHERE {of_stream}"),
            vals![stream.id],
            |r| r.int(0),
        )?
        .unwrap_or(0) as u64;
    l.db.exec(
        &format!("DELETE FROM events WHERE {of_stream}"),
        vals![stream.id],
    )?;
    l.db.exec(
        "DELETE FROM substreams WHERE stream_id = ?1",
        vals![stream.id],
    )?;
    l.db.exec("DELETE FROM streams WHERE id = ?1", vals![stream.id])?;
    l.streams.remove(&key);
    staged.streams.remove(&key);
    l.subs.remove(&(stream.id, String::new()));
    staged.subs.remove(&(stream.id, String::new()));
    staged.changed("controls");
    account_event(
        l,
        staged,
        &key.0,
        &key.1,
        Change::StreamDeleted,
        serde_json::json!({ "events": events }),
    )?;
    Ok(SpliceWritten::Deleted(events))
}

/// Checks that splice `id` of the stream exists and is still pending.
fn decide(l: &mut Ledger, stream_id: i64, id: &str) -> Result<()> {
    let status = l.db.row(
        "SELECT status FROM splices WHERE id = ?1 AND stream_id = ?2",
        vals![id, stream_id],
        |r| r.text(0),
    )?;
    match status.as_deref() {
        None => Err(EngineError::not_found(format!(
            "splice {id} does not exist"
        ))),
        Some("pending") => Ok(()),
        Some(other) => Err(EngineError::conflict(format!(
            "splice {id} is {other} already"
        ))),
    }
}

fn approve(l: &mut Ledger, a: Approval, staged: &mut Staged) -> Result<SpliceWritten> {
    decide(l, a.stream_id, &a.id)?;
    let key = (
        a.stream.account.as_str().to_owned(),
        a.stream.stream.as_str().to_owned(),
    );
    let stream = l
        .stream(staged, &key)?
        .ok_or_else(|| EngineError::not_found(format!("stream {} does not exist", a.stream)))?;
    let skey = (stream.id, String::new());
    let old = l
        .sub(staged, &skey)?
        .ok_or_else(|| EngineError::not_found(format!("stream {} has no events", a.stream)))?;
    // the preview's last event is still where it was: no other splice came between
    if a.last_index >= 0 {
        let pos = l.db.row(
            "SELECT pos FROM events WHERE sid = ?1 AND idx = ?2",
            vals![old.id, a.last_index],
            |r| r.int(0),
        )?;
        if pos != Some(a.last_position) {
            return Err(stale(&a.id));
        }
    }
    let ids: Vec<i64> = l.db.rows(
        "SELECT id FROM reducers WHERE stream_id = ?1 ORDER BY id",
        vals![stream.id],
        |r| r.int(0),
    )?;
    if ids != a.reducers.iter().map(|r| r.id).collect::<Vec<_>>() {
        return Err(EngineError::conflict(format!(
            "the reducers of {} changed while splice {} was applied: approve it again",
            a.stream, a.id
        )));
    }

    // the old history becomes `strm@{version}`, read-only, with the stream's settings
    let version = 1 + l
        .db
        .row(
            "SELECT COUNT(*) FROM splices WHERE stream_id = ?1 AND status = 'approved'",
            vals![stream.id],
            |r| r.int(0),
        )?
        .unwrap_or(0);
    // appends that came after the preview follow the spliced history unchanged
    let carried = l.db.rows(
        "SELECT eid, type, ts, content_type, data, metadata, origin FROM events \
         WHERE sid = ?1 AND idx > ?2 ORDER BY idx",
        vals![old.id, a.last_index],
        |r| {
            Ok(NewEvent {
                id: Some(r.uuid(0)?),
                event_type: r.text(1)?,
                timestamp: Some(r.int(2)?),
                content_type: r.text(3)?,
                data: r.blob(4)?.into(),
                metadata: r.opt_text(5)?,
                origin: r.opt_text(6)?,
            })
        },
    )?;
    let mut events = a.events;
    events.extend(carried);
    // every check before the first write: a request refused after it wrote would
    // roll back the whole group, other accounts' writes with it
    let now = now_ms();
    let stamped = super::rules::timestamps(&a.stream, &events, 0, now)?;
    let archive_name = a.stream.stream.version(version as u64);
    let taken = l.db.row(
        "SELECT 1 FROM streams WHERE account = ?1 AND name = ?2",
        vals![&key.0, archive_name.as_str()],
        |_| Ok(()),
    )?;
    if taken.is_some() {
        return Err(EngineError::conflict(format!(
            "{}/{archive_name} exists already: the history cannot be kept under that name",
            key.0
        )));
    }
    l.db.exec(
        "UPDATE substreams SET event_count = ?1, last_index = ?2, last_timestamp = ?3 \
         WHERE id = ?4",
        vals![
            old.next_index as i64,
            old.next_index as i64 - 1,
            old.last_timestamp,
            old.id
        ],
    )?;
    let archive = l.db.insert_id(
        "INSERT INTO streams (account, name, factory, settings, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
        vals![
            &key.0,
            archive_name.as_str(),
            false,
            // the account's alone to read: a splice that removed data does not leave
            // it public
            &StreamSettings {
                public: Default::default(),
                ..stream.settings.without_secret()
            }
            .to_stored(),
            now
        ],
    )?;
    l.db.exec(
        "UPDATE substreams SET stream_id = ?1 WHERE id = ?2",
        vals![archive, old.id],
    )?;
    // the recalls and the account event come before the new history: a node that
    // learns of the splice from storage (`cluster::notice`) sees it first
    let mut recalled = 0;
    let late = match &a.caused_since {
        Some(c) => caused_since(l, &a.stream, c)?,
        None => Vec::new(),
    };
    for pos in a.recalls.iter().chain(&late) {
        if recall(l, staged, *pos)? {
            recalled += 1;
        }
    }
    account_event(
        l,
        staged,
        &key.0,
        &key.1,
        Change::StreamSpliced,
        serde_json::json!({
            "splice": a.id,
            "version": version,
            "events": events.len(),
            "recalled": recalled,
        }),
    )?;
    let sid = l.db.insert_id(
        "INSERT INTO substreams (stream_id, args, created_at) VALUES (?1, '', ?2)",
        vals![stream.id, now],
    )?;
    let mut sub = SubRow {
        id: sid,
        next_index: 0,
        last_timestamp: 0,
    };
    l.subs.remove(&skey);
    l.insert_events(
        staged,
        a.stream.clone(),
        &stream,
        &mut sub,
        events,
        stamped,
        now,
    )?;
    staged.subs.insert(skey, sub);

    // every reducer folds again from the first event of the new history
    let mut new_reducers = Vec::with_capacity(a.reducers.len());
    for old_row in &a.reducers {
        let id = l.db.insert_id(
            "INSERT INTO reducers (stream_id, name, status, source, content_type, code, shape, \
             reads, selector, on_error, code_hash, position, errors, halted, created_at) \
             SELECT stream_id, name, status, source, content_type, code, shape, reads, \
             selector, on_error, code_hash, 0, 0, NULL, ?2 FROM reducers WHERE id = ?1",
            vals![old_row.id, now],
        )?;
        super::reducer_writes::drop_reducer(l, old_row.id)?;
        new_reducers.push(ReducerRow {
            id,
            position: 0,
            errors: 0,
            halted: None,
            // the spliced history is a replay: request() is voided for it
            live_from: Some(l.next_pos - 1),
            ..old_row.clone()
        });
    }
    if !a.reducers.is_empty() {
        staged.changed(format!("reducers:{}", stream.id));
    }

    l.db.exec(
        "UPDATE splices SET status = 'approved', version = ?2, decided_at = ?3 WHERE id = ?1",
        vals![a.id, version, now],
    )?;
    let path = std::sync::Arc::new(a.stream);
    staged.spliced.push(path.clone());
    if !staged.live_paths.contains(&path) {
        // subscribers of the stream hear of the splice even when no event is left
        staged.live_paths.push(path);
    }
    Ok(SpliceWritten::Approved(Box::new(Approved {
        old_reducers: a.reducers.iter().map(|r| r.id).collect(),
        new_reducers,
    })))
}

/// The 409 for an approval whose preview no longer shows the stream as it is.
pub(crate) fn stale(id: &str) -> EngineError {
    EngineError::conflict(format!(
        "splice {id} was previewed before the stream's last event: preview it again \
         (POST a new splice)"
    ))
}

/// The downstream events `stream`'s history caused that the preview did not see,
/// not recalled yet: those the approval's read found, and those above position
/// `c.after` (committed since that read, in the writer's transaction). They were
/// caused after the preview by a reducer or pipe that was behind, or by an event
/// appended since; the new history causes them again where it does.
fn caused_since(l: &Ledger, stream: &StreamPath, c: &CausedSince) -> Result<Vec<i64>> {
    let source = stream.to_string();
    let rows = l.db.rows(
        "SELECT e.pos, e.origin FROM events e JOIN substreams s ON s.id = e.sid \
         JOIN streams st ON st.id = s.stream_id WHERE e.pos > ?1 AND e.origin LIKE ?2 \
         AND e.cid IS NOT NULL AND st.name NOT LIKE '%@%' ORDER BY e.pos",
        vals![c.after, super::splice_reads::origin_pattern(&source)],
        |r| Ok((r.int(0)?, r.opt_text(1)?)),
    )?;
    let mut late = c.read.clone();
    for (pos, origin) in rows {
        let origin: serde_json::Value =
            serde_json::from_str(origin.as_deref().unwrap_or_default()).unwrap_or_default();
        if super::splice_reads::caused_index(&origin, &source).is_some() && !late.contains(&pos) {
            late.push(pos);
        }
    }
    late.retain(|pos| !c.known.contains(pos));
    Ok(late)
}

/// Appends the `eddy.recall` of the event at `pos` to its (sub)stream, unless it was
/// recalled before; answers whether it did.
pub(super) fn recall(l: &mut Ledger, staged: &mut Staged, pos: i64) -> Result<bool> {
    let found = l.db.row(
        "SELECT e.idx, e.eid, e.ts, st.account, st.name, s.args FROM events e \
         JOIN substreams s ON s.id = e.sid JOIN streams st ON st.id = s.stream_id \
         WHERE e.pos = ?1 AND e.cid IS NOT NULL",
        vals![pos],
        |r| {
            Ok((
                r.int(0)?,
                r.uuid(1)?,
                r.int(2)?,
                r.text(3)?,
                r.text(4)?,
                r.text(5)?,
            ))
        },
    )?;
    let Some((idx, eid, ts, account, name, args)) = found else {
        return Ok(false);
    };
    let Some(path) = StreamPath::stored(&account, &name, &args) else {
        return Ok(false);
    };
    let data = serde_json::json!({
        "recalled": {"stream": path.to_string(), "index": idx, "id": eid.to_string()}
    });
    let request = AppendRequest {
        metadata: None,
        stream: path,
        events: vec![NewEvent {
            id: Some(derived_id(ts, &[b"recall", eid.as_bytes()])),
            event_type: "eddy.recall".into(),
            content_type: "application/json".into(),
            data: data.to_string().into(),
            timestamp: None,
            metadata: None,
            origin: None,
        }],
        expected: ExpectedIndex::Any,
    };
    // a refusal writes nothing (appends check before they write); it leaves the
    // event as it is rather than fail the whole approval
    if let Err(e) = l.append(request, staged) {
        if matches!(e.code, ErrorCode::Internal | ErrorCode::Unavailable) {
            return Err(e);
        }
        tracing::warn!(error = %e.message, pos, "an event could not be recalled");
        return Ok(false);
    }
    l.db.exec("UPDATE events SET cid = NULL WHERE pos = ?1", vals![pos])?;
    Ok(true)
}
