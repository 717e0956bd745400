//! What the reducer threads read: each thread owns one [`FoldSource`] and reads the
//! events it folds, the saved states it resumes from and the stored reducer versions
//! through it, synchronously (JavaScript never runs on the async runtime). On SQLite
//! that is a read-only rusqlite connection with cached statements, the fastest read
//! path here (LIMITS.md).

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use super::Store;
use super::reducer_writes::ReducerRow;
use crate::error::Result;

/// One stored event as a reducer folds it.
pub(crate) struct FoldRow {
    pub(crate) pos: i64,
    pub(crate) sid: i64,
    pub(crate) idx: i64,
    pub(crate) id: uuid::Uuid,
    pub(crate) event_type: String,
    pub(crate) ts: i64,
    pub(crate) content_type: String,
    pub(crate) data: Vec<u8>,
}

fn fold_row(q: &rusqlite::Row<'_>) -> rusqlite::Result<FoldRow> {
    let eid: Vec<u8> = q.get(3)?;
    Ok(FoldRow {
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

/// Where a batch of a stream's events is read from.
pub(crate) enum BatchOf {
    /// A factory's events in global order, after position `after_pos`.
    Factory { stream_id: i64, after_pos: i64 },
    /// A plain stream's events in index order, after index `after_idx`.
    Plain { sid: i64, after_idx: i64 },
}

/// A reducer thread's reads (see the module docs).
pub(crate) struct FoldSource {
    conn: Connection,
}

impl FoldSource {
    /// A new source over `store`'s database.
    pub(crate) fn open(store: &Store) -> Result<Self> {
        let conn = Connection::open_with_flags(
            store.path(),
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.pragma_update(None, "busy_timeout", 5000)?;
        conn.set_prepared_statement_cache_capacity(32);
        Ok(Self { conn })
    }

    /// Up to `limit` events of `of`, at positions up to `until`.
    pub(crate) fn batch(&self, of: BatchOf, until: i64, limit: i64) -> Result<Vec<FoldRow>> {
        // a factory in global order through its partial index; a plain stream through
        // (sid, idx)
        let (sql, key, after) = match of {
            BatchOf::Factory {
                stream_id,
                after_pos,
            } => (
                "SELECT pos, sid, idx, eid, type, ts, content_type, data FROM events \
                 WHERE factory_id = ?1 AND pos > ?2 AND pos <= ?3 ORDER BY pos LIMIT ?4",
                stream_id,
                after_pos,
            ),
            BatchOf::Plain { sid, after_idx } => (
                "SELECT pos, sid, idx, eid, type, ts, content_type, data FROM events \
                 WHERE sid = ?1 AND idx > ?2 AND pos <= ?3 ORDER BY idx LIMIT ?4",
                sid,
                after_idx,
            ),
        };
        let rows = self
            .conn
            .prepare_cached(sql)?
            .query_map(params![key, after, until, limit], fold_row)?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// The id of plain stream `stream_id`'s one substream, once it has one.
    pub(crate) fn plain_substream(&self, stream_id: i64) -> Result<Option<i64>> {
        Ok(self
            .conn
            .prepare_cached("SELECT id FROM substreams WHERE stream_id = ?1 AND args = ''")?
            .query_row(params![stream_id], |q| q.get(0))
            .optional()?)
    }

    /// The canonical args of substream `sid`.
    pub(crate) fn substream_args(&self, sid: i64) -> Result<String> {
        Ok(self
            .conn
            .prepare_cached("SELECT args FROM substreams WHERE id = ?1")?
            .query_row(params![sid], |r| r.get(0))?)
    }

    /// The stored settings (JSON) of stream `stream_id`, if it exists.
    pub(crate) fn stream_settings(&self, stream_id: i64) -> Result<Option<String>> {
        Ok(self
            .conn
            .prepare_cached("SELECT settings FROM streams WHERE id = ?1")?
            .query_row(params![stream_id], |r| r.get(0))
            .optional()?)
    }

    /// The saved state of reducer version `reducer_id` for substream `sid`: the last
    /// index folded into it and its JSON (`None` while undefined).
    pub(crate) fn saved_state(
        &self,
        reducer_id: i64,
        sid: i64,
    ) -> Result<Option<(i64, Option<String>)>> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT idx, state FROM reducer_states WHERE reducer_id = ?1 AND sid = ?2",
            )?
            .query_row(params![reducer_id, sid], |q| Ok((q.get(0)?, q.get(1)?)))
            .optional()?)
    }

    /// On a plain stream, the index of the last event at or before global position
    /// `position` (-1 before the first): what a reducer at `position` has folded. The
    /// position may be past the stream's last event (it moves to the head when the
    /// stream has nothing newer).
    pub(crate) fn after_index(&self, stream_id: i64, position: i64) -> Result<i64> {
        if position == 0 {
            return Ok(-1);
        }
        Ok(self
            .conn
            .prepare_cached(
                "SELECT MAX(e.idx) FROM events e JOIN substreams s ON s.id = e.sid \
                 WHERE s.stream_id = ?1 AND s.args = '' AND e.pos <= ?2",
            )?
            .query_row(params![stream_id, position], |r| r.get::<_, Option<i64>>(0))?
            .unwrap_or(-1))
    }

    /// Every stored reducer version (of stream `stream_id` only, when given) with its
    /// stream's account and name, oldest first.
    pub(crate) fn reducers(
        &self,
        stream_id: Option<i64>,
    ) -> Result<Vec<(ReducerRow, String, String)>> {
        let mut stmt = self.conn.prepare(
            "SELECT r.id, r.stream_id, s.factory, r.name, r.status, r.source, r.content_type, \
             r.code, r.shape, r.reads, r.selector, r.on_error, r.code_hash, r.position, \
             r.errors, r.halted, s.account, s.name \
             FROM reducers r JOIN streams s ON s.id = r.stream_id \
             WHERE ?1 IS NULL OR r.stream_id = ?1 ORDER BY r.id",
        )?;
        let rows = stmt.query_map(params![stream_id], |q| {
            let reads: String = q.get(9)?;
            let row = ReducerRow {
                id: q.get(0)?,
                stream_id: q.get(1)?,
                factory: q.get(2)?,
                name: q.get(3)?,
                building: q.get::<_, String>(4)? == "building",
                source: q.get(5)?,
                content_type: q.get(6)?,
                code: q.get(7)?,
                module: q.get::<_, String>(8)? == "module",
                reads: serde_json::from_str(&reads).unwrap_or_default(),
                selector: q.get(10)?,
                halt_on_error: q.get::<_, String>(11)? == "halt",
                code_hash: q.get(12)?,
                position: q.get(13)?,
                errors: q.get(14)?,
                halted: q.get(15)?,
                live_from: None,
            };
            Ok((row, q.get::<_, String>(16)?, q.get::<_, String>(17)?))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Every stored pipe, for starting their tasks.
    pub(crate) fn pipes(&self) -> Result<Vec<super::pipe_writes::PipeRow>> {
        super::pipe_writes::load_pipes(&self.conn)
    }
}
