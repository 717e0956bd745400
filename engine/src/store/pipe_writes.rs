//! Pipe writes inside the writer's transaction: creating or replacing a pipe (refusing
//! cycles), deleting one, and a pipe's batch: the events it appends to its destination
//! and its new cursor in one transaction, which is what makes piping exactly once.
//! Dispatched events (reducers' and pipes' `dispatch()`) are appended the same way,
//! routed by [`Routed`].

use serde_json::json;

use super::account_events::{Change, account_event};
use super::apply::{AppendRequest, Appended, Ledger, Staged};
use super::db::vals;
use super::writer::now_ms;
use crate::error::{EngineError, ErrorCode, Result};
use crate::event::{DataKind, ExpectedIndex, NewEvent};
use crate::path::{AccountName, Args, StreamName, StreamPath};

/// A pipe as stored.
#[derive(Debug, Clone)]
pub struct PipeRow {
    pub id: i64,
    pub from: StreamPath,
    pub to: StreamPath,
    /// The selector as a canonical query string.
    pub selector: String,
    /// The mapping code as sent, empty for a copy pipe.
    pub source: String,
    pub content_type: String,
    /// The JavaScript that runs.
    pub code: String,
    pub module: bool,
    /// Every event of the origin at or below this global position was piped or passed
    /// over.
    pub cursor: crate::order::Position,
    pub piped: i64,
    pub errors: i64,
    pub created_at: i64,
}

/// An event for a stream that may be a factory: into a factory it goes to the
/// substream its explicit args name, or else to the default args (a pipe's source
/// substream); into a plain stream, explicit args are refused and default args ignored.
#[derive(Debug, Clone)]
pub(crate) struct Routed {
    pub stream: StreamPath,
    pub explicit_args: Option<Args>,
    pub default_args: Option<Args>,
    pub event: NewEvent,
}

/// What a pipe appended for a batch of its origin's events.
#[derive(Debug, Clone)]
pub(crate) struct PipeBatch {
    pub pipe_id: i64,
    pub cursor: crate::order::Position,
    /// The position of the batch's first origin event: when a splice has replaced
    /// that history since the batch was read, its outputs are not written (the new
    /// history is piped in its turn, and the old one's outputs were recalled).
    pub first_source: Option<crate::order::Position>,
    pub outs: Vec<Routed>,
    /// Entries for the pipe's log (events that failed to map).
    pub logs: Vec<NewEvent>,
    pub log_stream: StreamPath,
    pub errors: i64,
    /// The lease the pipe runs under, where leases are kept.
    pub fence: Option<super::cluster::Fence>,
}

pub(crate) enum PipeWrite {
    /// Creates the pipe (starting after the row's cursor), or replaces the code and
    /// selector of the pipe with the same origin and destination (keeping its cursor).
    Put(Box<PipeRow>),
    Delete {
        from: StreamPath,
        to: StreamPath,
    },
    Batch(PipeBatch),
    /// Replaces the code and selector of an existing pipe and applies what its new
    /// code makes of past events (API §14): recalls the old outputs at `recalls` and
    /// appends `outs`.
    Replay {
        row: Box<PipeRow>,
        from: u64,
        recalls: Vec<i64>,
        outs: Vec<Routed>,
        /// An `error` entry for each event the new code failed on, for `log_stream`.
        logs: Vec<NewEvent>,
        log_stream: StreamPath,
    },
}

pub(crate) enum PipeWritten {
    /// The stored row and whether it is new.
    Put(Box<PipeRow>, bool),
    /// The id of the deleted pipe.
    Deleted(i64),
    /// Events appended and events refused in the batch.
    Batch { piped: i64, errors: i64 },
    /// Old outputs recalled, new ones appended and failures logged by a replay.
    Replayed {
        recalled: i64,
        appended: i64,
        errors: i64,
    },
}

fn args_text(p: &StreamPath) -> String {
    p.args.as_ref().map(|a| a.canonical()).unwrap_or_default()
}

pub(super) fn pipe(l: &mut Ledger, write: PipeWrite, staged: &mut Staged) -> Result<PipeWritten> {
    match write {
        PipeWrite::Put(row) => {
            let put = put_pipe(l, *row, staged)?;
            if let PipeWritten::Put(row, _) = &put {
                staged.changed(format!("pipe:{}", row.id));
            }
            Ok(put)
        }
        PipeWrite::Delete { from, to } => {
            let id = l.db.row(
                "SELECT id FROM pipes WHERE account = ?1 AND stream = ?2 AND args = ?3 \
                     AND dest_account = ?4 AND dest_stream = ?5 AND dest_args = ?6",
                vals![
                    from.account.as_str(),
                    from.stream.as_str(),
                    args_text(&from),
                    to.account.as_str(),
                    to.stream.as_str(),
                    args_text(&to)
                ],
                |r| r.int(0),
            )?;
            let Some(id) = id else {
                return Err(missing(&from, &to));
            };
            staged.changed(format!("pipe:{id}"));
            l.db.exec("DELETE FROM pipes WHERE id = ?1", vals![id])?;
            pipe_event(
                l,
                staged,
                &from,
                &to,
                Change::PipeRemoved,
                json!({ "origin": from.to_string(), "destination": to.to_string() }),
            )?;
            Ok(PipeWritten::Deleted(id))
        }
        PipeWrite::Batch(batch) => pipe_batch(l, batch, staged),
        PipeWrite::Replay {
            row,
            from,
            recalls,
            outs,
            mut logs,
            log_stream,
        } => {
            let put = put_pipe(l, *row, staged)?;
            let PipeWritten::Put(row, _) = &put else {
                return Ok(put);
            };
            staged.changed(format!("pipe:{}", row.id));
            let mut recalled = 0;
            for pos in recalls {
                recalled += i64::from(super::splice_writes::recall(l, staged, pos)?);
            }
            let mut appended = 0;
            for out in outs {
                let origin = out.event.origin.clone();
                match append_routed(l, out, staged)? {
                    Ok(_) => appended += 1,
                    Err(e) => logs.push(refusal_log(&e, origin.as_deref())),
                }
            }
            let errors = logs.len() as i64;
            if !logs.is_empty() {
                l.db.exec(
                    "UPDATE pipes SET errors = errors + ?2 WHERE id = ?1",
                    vals![row.id, errors],
                )?;
                l.append(
                    AppendRequest {
                        metadata: None,
                        stream: log_stream,
                        events: logs,
                        expected: ExpectedIndex::Any,
                    },
                    staged,
                )?;
            }
            pipe_event(
                l,
                staged,
                &row.from,
                &row.to,
                Change::PipeReplayed,
                json!({
                    "origin": row.from.to_string(),
                    "destination": row.to.to_string(),
                    "from": from,
                    "recalled": recalled,
                    "appended": appended,
                    "errors": errors,
                }),
            )?;
            Ok(PipeWritten::Replayed {
                recalled,
                appended,
                errors,
            })
        }
    }
}

fn put_pipe(l: &mut Ledger, mut row: PipeRow, staged: &mut Staged) -> Result<PipeWritten> {
    let existing = l.db.row(
        "SELECT id, cursor, piped, errors, created_at FROM pipes WHERE account = ?1 \
             AND stream = ?2 AND args = ?3 AND dest_account = ?4 AND dest_stream = ?5 \
             AND dest_args = ?6",
        vals![
            row.from.account.as_str(),
            row.from.stream.as_str(),
            args_text(&row.from),
            row.to.account.as_str(),
            row.to.stream.as_str(),
            args_text(&row.to)
        ],
        |r| Ok((r.int(0)?, r.position(1)?, r.int(2)?, r.int(3)?, r.int(4)?)),
    )?;
    if let Some((id, cursor, piped, errors, created_at)) = existing {
        l.db.exec(
            "UPDATE pipes SET selector = ?2, source = ?3, content_type = ?4, code = ?5, \
                     shape = ?6 WHERE id = ?1",
            vals![
                id,
                row.selector,
                row.source,
                row.content_type,
                row.code,
                if row.module { "module" } else { "expression" },
            ],
        )?;
        (row.id, row.cursor, row.piped, row.errors, row.created_at) =
            (id, cursor, piped, errors, created_at);
        pipe_event(
            l,
            staged,
            &row.from,
            &row.to,
            Change::PipeAdded,
            json!({
                "origin": row.from.to_string(),
                "destination": row.to.to_string(),
                "replaced": true,
            }),
        )?;
        return Ok(PipeWritten::Put(Box::new(row), false));
    }
    refuse_cycle(l, &row.from, &row.to)?;
    row.created_at = now_ms();
    row.id = l.db.insert_id(
        "INSERT INTO pipes (account, stream, args, dest_account, dest_stream, dest_args, \
                 selector, source, content_type, code, shape, cursor, piped, errors, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?13, 0, 0, ?12)",
        vals![
            row.from.account.as_str(),
            row.from.stream.as_str(),
            args_text(&row.from),
            row.to.account.as_str(),
            row.to.stream.as_str(),
            args_text(&row.to),
            row.selector,
            row.source,
            row.content_type,
            row.code,
            if row.module { "module" } else { "expression" },
            row.created_at,
            row.cursor,
        ],
    )?;
    (row.piped, row.errors) = (0, 0);
    pipe_event(
        l,
        staged,
        &row.from,
        &row.to,
        Change::PipeAdded,
        json!({ "origin": row.from.to_string(), "destination": row.to.to_string() }),
    )?;
    Ok(PipeWritten::Put(Box::new(row), true))
}

/// Records a pipe change in every account the pipe touches, each once: the
/// origin's account (with the origin as `stream`) and the destination's (with the
/// destination). A builtin origin's account, `eddy`, keeps no account events, so
/// a pipe from a cron stream or from `/eddy/events(acct)` is recorded in its
/// destination's account alone.
fn pipe_event(
    l: &mut Ledger,
    staged: &mut Staged,
    from: &StreamPath,
    to: &StreamPath,
    change: Change,
    data: serde_json::Value,
) -> Result<()> {
    account_event(
        l,
        staged,
        from.account.as_str(),
        from.stream.as_str(),
        change,
        data.clone(),
    )?;
    if to.account != from.account {
        account_event(
            l,
            staged,
            to.account.as_str(),
            to.stream.as_str(),
            change,
            data,
        )?;
    }
    Ok(())
}

/// Refuses a new pipe `from → to` when pipes already lead from `to` back to `from`
/// (streams compared by account and name: substreams of one factory count as one).
/// Checked here, in the single writer, so two requests cannot close a cycle
/// together.
fn refuse_cycle(l: &mut Ledger, from: &StreamPath, to: &StreamPath) -> Result<()> {
    let key = |a: &str, s: &str| format!("{a}/{s}");
    let origin = key(from.account.as_str(), from.stream.as_str());
    let start = key(to.account.as_str(), to.stream.as_str());
    let edges = l.db.rows(
        "SELECT account, stream, dest_account, dest_stream FROM pipes",
        vals![],
        |r| Ok((key(&r.text(0)?, &r.text(1)?), key(&r.text(2)?, &r.text(3)?))),
    )?;
    // breadth-first from the destination, remembering how each stream was reached
    let mut came_from: std::collections::HashMap<String, String> = Default::default();
    let mut queue = std::collections::VecDeque::from([start.clone()]);
    let mut seen = std::collections::HashSet::from([start.clone()]);
    while let Some(at) = queue.pop_front() {
        if at == origin {
            let mut cycle = vec![at.clone()];
            let mut cur = at;
            while let Some(prev) = came_from.get(&cur) {
                cycle.push(prev.clone());
                cur = prev.clone();
            }
            cycle.push(origin.clone());
            cycle.reverse();
            return Err(EngineError::conflict(format!(
                "the pipe from {from} to {to} would close a cycle: {}; events would \
                     circle forever, so pipe cycles are refused",
                cycle.join(" → ")
            ))
            .with("cycle", cycle));
        }
        for (a, b) in &edges {
            if *a == at && seen.insert(b.clone()) {
                came_from.insert(b.clone(), at.clone());
                queue.push_back(b.clone());
            }
        }
    }
    Ok(())
}

fn pipe_batch(l: &mut Ledger, batch: PipeBatch, staged: &mut Staged) -> Result<PipeWritten> {
    l.check_fence(batch.fence.as_ref())?;
    let exists =
        l.db.row(
            "SELECT 1 FROM pipes WHERE id = ?1",
            vals![batch.pipe_id],
            |_| Ok(()),
        )?
        .is_some();
    if !exists {
        return Err(EngineError::not_found("the pipe was deleted"));
    }
    let mut outs = batch.outs;
    if let Some(first) = batch.first_source
        && replaced(l, first)?
    {
        outs.clear();
    }
    let mut piped = 0;
    let mut errors = batch.errors;
    let mut logs = batch.logs;
    for out in outs {
        let origin = out.event.origin.clone();
        match append_routed(l, out, staged)? {
            Ok(a) if !a.duplicate => piped += a.events.len() as i64,
            Ok(_) => {}
            Err(e) => {
                errors += 1;
                logs.push(refusal_log(&e, origin.as_deref()));
            }
        }
    }
    l.db.exec(
        "UPDATE pipes SET cursor = CASE WHEN cursor > ?2 THEN cursor ELSE ?2 END, \
             piped = piped + ?3, errors = errors + ?4 WHERE id = ?1",
        vals![batch.pipe_id, batch.cursor, piped, errors],
    )?;
    if !logs.is_empty() {
        l.append(
            AppendRequest {
                metadata: None,
                stream: batch.log_stream,
                events: logs,
                expected: ExpectedIndex::Any,
            },
            staged,
        )?;
    }
    Ok(PipeWritten::Batch { piped, errors })
}

/// Whether the event at `pos` belongs to a history a splice replaced (`strm@n`), or
/// to one deleted since (events are deleted only with such a history).
fn replaced(l: &Ledger, pos: crate::order::Position) -> Result<bool> {
    let name = l.db.row(
        "SELECT st.name FROM events e JOIN substreams s ON s.id = e.sid \
         JOIN streams st ON st.id = s.stream_id WHERE e.pos = ?1",
        vals![pos.0],
        |r| r.text(0),
    )?;
    Ok(name.is_none_or(|n| n.contains('@')))
}

/// Appends a routed event. The outer error is a storage failure (the group rolls
/// back); the inner one is a refusal of this event alone (a bad destination, a
/// factory without args...), which the caller logs.
pub(super) fn append_routed(
    l: &mut Ledger,
    out: Routed,
    staged: &mut Staged,
) -> Result<std::result::Result<Appended, EngineError>> {
    let Routed {
        mut stream,
        explicit_args,
        default_args,
        event,
    } = out;
    if stream.args.is_none() {
        let key = (
            stream.account.as_str().to_owned(),
            stream.stream.as_str().to_owned(),
        );
        let factory = l.stream(staged, &key)?.map(|s| s.factory);
        stream.args = match (factory, explicit_args, default_args) {
            (Some(false), Some(args), _) => {
                return Ok(Err(EngineError::invalid(format!(
                    "{stream} is a plain stream, so the event cannot go to substream ({args})"
                ))));
            }
            (Some(false), None, _) => None,
            (_, Some(args), _) => Some(args),
            (_, None, default) => default,
        };
    }
    if let Err(e) = check_json(l, &event) {
        return Ok(Err(e));
    }
    let changes = l.db.total_changes();
    match l.append(
        AppendRequest {
            metadata: None,
            stream,
            events: vec![event],
            expected: ExpectedIndex::Any,
        },
        staged,
    ) {
        Ok(a) => Ok(Ok(a)),
        Err(e) if matches!(e.code, ErrorCode::Internal | ErrorCode::Unavailable) => Err(e),
        // refused after it had written: the group rolls back rather than keep half
        Err(e) if l.db.total_changes() != changes => Err(EngineError::internal(format!(
            "a routed event was refused after it had written: {}",
            e.message
        ))),
        Err(e) => Ok(Err(e)),
    }
}

/// Refuses routed JSON data beyond the JSON limits (the destination's event type,
/// if any, was checked before it came here, within the same limits).
fn check_json(l: &Ledger, event: &NewEvent) -> Result<()> {
    let essence = event.content_type.split(';').next().unwrap_or("").trim();
    if DataKind::of(essence) == Some(DataKind::Json) {
        l.json.parse(&event.data, &event.content_type, false)?;
    }
    Ok(())
}

/// The log entry for an event a destination refused.
pub(crate) fn refusal_log(e: &EngineError, origin: Option<&str>) -> NewEvent {
    let origin: serde_json::Value = origin
        .and_then(|o| serde_json::from_str(o).ok())
        .unwrap_or_default();
    NewEvent {
        id: None,
        event_type: "error".into(),
        content_type: "application/json".into(),
        data: json!({
            "stream": origin.get("stream"),
            "index": origin.get("index"),
            "message": format!("the event was not appended: {}", e.message),
        })
        .to_string()
        .into(),
        timestamp: None,
        metadata: None,
        origin: None,
    }
}

/// Every stored pipe, for starting their tasks.
pub(crate) fn load_pipes(db: &super::db::Db) -> Result<Vec<PipeRow>> {
    let rows = db.rows(&format!("{PIPE_COLUMNS} ORDER BY id"), vals![], |r| {
        pipe_columns!(r)
    })?;
    Ok(rows.into_iter().filter_map(pipe_row).collect())
}

/// The [`PipeColumns`] of a row of [`PIPE_COLUMNS`], from either kind of row (the
/// writer's statement layer or the read pool's): both read columns by index.
macro_rules! pipe_columns {
    ($r:expr) => {
        Ok((
            $r.int(0)?,
            [
                $r.text(1)?,
                $r.text(2)?,
                $r.text(3)?,
                $r.text(4)?,
                $r.text(5)?,
                $r.text(6)?,
            ],
            [
                $r.text(7)?,
                $r.text(8)?,
                $r.text(9)?,
                $r.text(10)?,
                $r.text(11)?,
            ],
            [$r.int(12)?, $r.int(13)?, $r.int(14)?, $r.int(15)?],
        ))
    };
}
pub(crate) use pipe_columns;

/// A stored pipe's columns, as [`pipe_row`] takes them.
pub(crate) const PIPE_COLUMNS: &str = "SELECT id, account, stream, args, dest_account, dest_stream, dest_args, selector, \
     source, content_type, code, shape, cursor, piped, errors, created_at FROM pipes";

/// The columns [`PIPE_COLUMNS`] lists, grouped: (id, the six names, the five texts,
/// the four numbers).
pub(crate) type PipeColumns = (i64, [String; 6], [String; 5], [i64; 4]);

/// A stored pipe from its columns; `None` (logged) when a name does not parse.
pub(crate) fn pipe_row((id, names, text, nums): PipeColumns) -> Option<PipeRow> {
    let [cursor, piped, errors, created_at] = nums;
    let path = |a: &str, s: &str, args: &str| -> Option<StreamPath> {
        Some(StreamPath {
            account: AccountName::new(a).ok()?,
            stream: StreamName::new(s).ok()?,
            args: if args.is_empty() {
                None
            } else {
                Some(Args::parse(args).ok()?)
            },
        })
    };
    let (Some(from), Some(to)) = (
        path(&names[0], &names[1], &names[2]),
        path(&names[3], &names[4], &names[5]),
    ) else {
        tracing::error!(
            pipe = id,
            "a stored pipe names a stream that does not parse"
        );
        return None;
    };
    let [selector, source, content_type, code, shape] = text;
    Some(PipeRow {
        id,
        from,
        to,
        selector,
        source,
        content_type,
        code,
        module: shape == "module",
        cursor: crate::order::Position(cursor),
        piped,
        errors,
        created_at,
    })
}

/// The 404 for a pipe that does not exist.
pub(crate) fn missing(from: &StreamPath, to: &StreamPath) -> EngineError {
    EngineError::not_found(format!("there is no pipe from {from} to {to}"))
}
