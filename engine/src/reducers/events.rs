//! Reading the events a reducer folds: one batch at a time, with the worker's own
//! read-only connection, up to the durable position.

use rusqlite::{Connection, OptionalExtension, params};

use super::worker::Group;
use crate::error::Result;

pub(super) struct Row {
    pub(super) pos: i64,
    pub(super) sid: i64,
    pub(super) idx: i64,
    pub(super) id: uuid::Uuid,
    pub(super) event_type: String,
    pub(super) ts: i64,
    pub(super) content_type: String,
    pub(super) data: Vec<u8>,
}

impl Row {
    /// The event as the sandbox takes it: `id` is this row's id as text and `data`
    /// its data as [`for_reducer`](super::data::for_reducer) converted it.
    pub(super) fn event_in<'a>(
        &'a self,
        stream: &'a str,
        id: &'a str,
        data: &'a (std::borrow::Cow<'a, str>, Option<&'static str>),
        args_json: Option<&'a str>,
    ) -> eddy_runtime_js::EventIn<'a> {
        eddy_runtime_js::EventIn {
            stream,
            index: self.idx,
            id,
            event_type: &self.event_type,
            timestamp: self.ts,
            content_type: &self.content_type,
            data_json: &data.0,
            encoding: data.1,
            args_json,
        }
    }
}

fn row(q: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    let eid: Vec<u8> = q.get(3)?;
    Ok(Row {
        pos: q.get(0)?,
        sid: q.get(1)?,
        idx: q.get(2)?,
        id: uuid::Uuid::from_slice(&eid).unwrap_or_default(),
        event_type: q.get(4)?,
        ts: q.get(5)?,
        content_type: q.get(6)?,
        data: q.get(7)?,
    })
}

/// Up to `limit` events of substream `sid` after index `after_idx`, at positions up
/// to `until`, in index order.
pub(super) fn read_substream(
    conn: &Connection,
    sid: i64,
    after_idx: i64,
    until: i64,
    limit: i64,
) -> Result<Vec<Row>> {
    let rows = conn
        .prepare_cached(
            "SELECT pos, sid, idx, eid, type, ts, content_type, data FROM events \
             WHERE sid = ?1 AND idx > ?2 AND pos <= ?3 ORDER BY idx LIMIT ?4",
        )?
        .query_map(params![sid, after_idx, until, limit], row)?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

pub(super) fn read_batch(
    conn: &Connection,
    group: &mut Group,
    from_pos: i64,
    after_idx: i64,
    head: i64,
    limit: i64,
) -> Result<Vec<Row>> {
    const COLUMNS: &str = "pos, sid, idx, eid, type, ts, content_type, data";
    // a factory in global order through its partial index; a plain stream through
    // (sid, idx), after the index at the reducer's position
    let stream_id = group.reducers.first().map_or(0, |r| r.row.stream_id);
    let (filter, key, after) = if group.factory {
        (
            "factory_id = ?1 AND pos > ?2 AND pos <= ?3 ORDER BY pos",
            stream_id,
            from_pos,
        )
    } else {
        if group.plain_sid.is_none() {
            group.plain_sid = conn
                .prepare_cached("SELECT id FROM substreams WHERE stream_id = ?1 AND args = ''")?
                .query_row(params![stream_id], |q| q.get(0))
                .optional()?;
        }
        let Some(sid) = group.plain_sid else {
            return Ok(Vec::new());
        };
        (
            "sid = ?1 AND idx > ?2 AND pos <= ?3 ORDER BY idx",
            sid,
            after_idx,
        )
    };
    let sql = format!("SELECT {COLUMNS} FROM events WHERE {filter} LIMIT ?4");
    let rows = conn
        .prepare_cached(&sql)?
        .query_map(params![key, after, head, limit], row)?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}
