//! What the reducer threads read: each thread owns one [`FoldSource`] and reads the
//! events it folds and the saved states it resumes from through it, synchronously
//! (JavaScript never runs on the async runtime). On SQLite that is a read-only
//! rusqlite connection with cached statements, the fastest read path here
//! (LIMITS.md); on PostgreSQL a connection of its own, driven through `db`.

use rusqlite::{Connection, OpenFlags};

use super::db::{Db, Pg, RowRef, vals};
use super::{DB_FILE, Storage, Store};
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
    /// Where a pipe or a `dispatch()` made it from (see [`crate::dispatch::hops`]).
    pub(crate) origin: Option<String>,
}

fn fold_row(q: &RowRef<'_, '_>) -> Result<FoldRow> {
    Ok(FoldRow {
        pos: q.int(0)?,
        sid: q.int(1)?,
        idx: q.int(2)?,
        id: uuid::Uuid::from_slice(&q.blob(3)?).unwrap_or_default(),
        event_type: q.text(4)?,
        ts: q.int(5)?,
        content_type: q.text(6)?,
        data: q.blob(7)?,
        origin: q.opt_text(8)?,
    })
}

/// Where a batch of a stream's events is read from.
pub(crate) enum BatchOf {
    /// A factory's events in global order, after position `after_pos`.
    Factory { stream_id: i64, after_pos: i64 },
    /// A plain stream's events in index order, after index `after_idx`.
    Plain { sid: i64, after_idx: i64 },
}

/// On a plain stream, the index of the last event at or before a global position;
/// shared with the async read at start (`reducer_reads::after_index`).
pub(super) const AFTER_INDEX: &str = "SELECT MAX(e.idx) FROM events e \
     JOIN substreams s ON s.id = e.sid WHERE s.stream_id = $1 AND s.args = '' AND e.pos <= $2";

/// A reducer thread's reads (see the module docs).
pub(crate) struct FoldSource {
    db: Db,
    /// The batch after the last full one: what [`FoldSource::read_ahead`] sends.
    next: std::cell::Cell<Option<NextBatch>>,
    /// The read [`FoldSource::read_ahead`] sent, and its size.
    sent: std::cell::Cell<Option<(NextBatch, i64)>>,
}

/// The read of the batch after a full one, but for its size.
#[derive(Clone, Copy, PartialEq, Eq)]
struct NextBatch {
    sql: &'static str,
    key: i64,
    after: i64,
    until: i64,
}

impl FoldSource {
    /// A new source over `store`'s database.
    pub(crate) async fn open(store: &Store) -> Result<Self> {
        let db = match store.storage() {
            Storage::Embedded(dir) => {
                let conn = Connection::open_with_flags(
                    dir.join(DB_FILE),
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                conn.pragma_update(None, "busy_timeout", 5000)?;
                conn.set_prepared_statement_cache_capacity(32);
                Db::Sqlite(conn)
            }
            Storage::Postgres(url) => {
                let url = store.postgres_url().unwrap_or(url).to_owned();
                tokio::task::spawn_blocking(move || Pg::connect(&url))
                    .await
                    .map_err(|e| {
                        crate::error::EngineError::internal(format!("cannot connect: {e}"))
                    })?
                    .map(|pg| Db::Postgres(Box::new(pg)))?
            }
        };
        Ok(Self {
            db,
            next: std::cell::Cell::new(None),
            sent: std::cell::Cell::new(None),
        })
    }

    /// Up to `limit` events of `of`, at positions up to `until`.
    pub(crate) fn batch(&self, of: BatchOf, until: i64, limit: i64) -> Result<Vec<FoldRow>> {
        // every slice starts here: a lost connection is made again before it reads
        self.db.heal()?;
        // a factory in global order through its partial index; a plain stream through
        // (sid, idx)
        let by_position = matches!(of, BatchOf::Factory { .. });
        let (sql, key, after) = match of {
            BatchOf::Factory {
                stream_id,
                after_pos,
            } => (
                "SELECT pos, sid, idx, eid, type, ts, content_type, data, origin \
                 FROM events WHERE factory_id = ?1 AND pos > ?2 AND pos <= ?3 ORDER BY pos LIMIT ?4",
                stream_id,
                after_pos,
            ),
            BatchOf::Plain { sid, after_idx } => (
                "SELECT pos, sid, idx, eid, type, ts, content_type, data, origin \
                 FROM events WHERE sid = ?1 AND idx > ?2 AND pos <= ?3 ORDER BY idx LIMIT ?4",
                sid,
                after_idx,
            ),
        };
        let rows = self.ahead_rows(sql, key, after, until, limit)?;
        let rows = match rows {
            Some(rows) => rows,
            None => self
                .db
                .rows(sql, vals![key, after, until, limit], fold_row)?,
        };
        let next = rows
            .last()
            .filter(|_| rows.len() as i64 == limit)
            .map(|last| NextBatch {
                sql,
                key,
                after: if by_position { last.pos } else { last.idx },
                until,
            });
        self.next.set(next);
        Ok(rows)
    }

    /// After a full batch, sends the read of the next one, of `limit` events, so that
    /// PostgreSQL reads it while the thread folds this one (nothing on SQLite). Call it
    /// once the thread's other reads for this batch are done: any other read drops it.
    pub(crate) fn read_ahead(&self, limit: i64) -> Result<()> {
        let Some(n) = self.next.take().filter(|_| self.db.is_postgres()) else {
            return Ok(());
        };
        self.sent.set(Some((n, limit)));
        self.db
            .read_ahead(n.sql, vals![n.key, n.after, n.until, limit])
    }

    /// The rows of the read sent ahead, when it is this one but for an older `until`
    /// (the head moved meanwhile) and found events: every event at or below the older
    /// head comes before those above it in the batch's order, so they are this read's
    /// first rows. `None`: read as usual (the same read is taken whole by
    /// [`Db::rows`] anyway).
    fn ahead_rows(
        &self,
        sql: &'static str,
        key: i64,
        after: i64,
        until: i64,
        limit: i64,
    ) -> Result<Option<Vec<FoldRow>>> {
        let Some((sent, size)) = self.sent.take() else {
            return Ok(None);
        };
        let older = sent.sql == sql
            && sent.key == key
            && sent.after == after
            && size == limit
            && sent.until < until;
        if !older {
            return Ok(None);
        }
        let rows = self
            .db
            .rows(sql, vals![key, after, sent.until, limit], fold_row)?;
        Ok((!rows.is_empty()).then_some(rows))
    }

    /// The id of plain stream `stream_id`'s one substream, once it has one.
    pub(crate) fn plain_substream(&self, stream_id: i64) -> Result<Option<i64>> {
        self.db.row(
            "SELECT id FROM substreams WHERE stream_id = ?1 AND args = ''",
            vals![stream_id],
            |q| q.int(0),
        )
    }

    /// The canonical args of substream `sid` (empty when it is gone).
    pub(crate) fn substream_args(&self, sid: i64) -> Result<String> {
        Ok(self
            .db
            .row(
                "SELECT args FROM substreams WHERE id = ?1",
                vals![sid],
                |r| r.text(0),
            )?
            .unwrap_or_default())
    }

    /// The stored settings (JSON) of stream `stream_id`, if it exists.
    pub(crate) fn stream_settings(&self, stream_id: i64) -> Result<Option<String>> {
        self.db.row(
            "SELECT settings FROM streams WHERE id = ?1",
            vals![stream_id],
            |r| r.text(0),
        )
    }

    /// The saved state of reducer version `reducer_id` for substream `sid`: the last
    /// index folded into it and its JSON (`None` while undefined).
    pub(crate) fn saved_state(
        &self,
        reducer_id: i64,
        sid: i64,
    ) -> Result<Option<(i64, Option<String>)>> {
        self.db.row(
            "SELECT idx, state FROM reducer_states WHERE reducer_id = ?1 AND sid = ?2",
            vals![reducer_id, sid],
            |q| Ok((q.int(0)?, q.opt_text(1)?)),
        )
    }

    /// Up to `limit` events of plain stream `name`'s substream `sid` after index
    /// `after_idx`, at positions up to `until`, whole (metadata and origin too): what a
    /// splice maps.
    pub(crate) fn history(
        &self,
        name: &str,
        sid: i64,
        after_idx: i64,
        until: i64,
        limit: i64,
    ) -> Result<Vec<crate::event::StoredEvent>> {
        self.db.heal()?;
        self.db.rows(
            "SELECT pos, idx, eid, type, ts, content_type, data, metadata, origin FROM events \
             WHERE sid = ?1 AND idx > ?2 AND pos <= ?3 ORDER BY idx LIMIT ?4",
            vals![sid, after_idx, until, limit],
            |r| {
                Ok(crate::event::StoredEvent {
                    stream: name.to_owned(),
                    position: r.position(0)?,
                    index: r.index(1)?,
                    id: r.uuid(2)?,
                    event_type: r.text(3)?,
                    timestamp: r.int(4)?,
                    content_type: r.text(5)?,
                    data: bytes::Bytes::from(r.blob(6)?),
                    metadata: r.opt_text(7)?,
                    origin: r.opt_text(8)?,
                })
            },
        )
    }

    /// The latest snapshot of reducer version `reducer_id` for substream `sid` at or
    /// before index `at`: its index and state JSON (`None` while undefined).
    pub(crate) fn snapshot(
        &self,
        reducer_id: i64,
        sid: i64,
        at: i64,
    ) -> Result<Option<(i64, Option<String>)>> {
        Ok(self.snapshots(reducer_id, sid, at, 1)?.pop())
    }

    /// The latest `limit` snapshots of reducer version `reducer_id` for substream `sid`
    /// at or before index `at`, latest first.
    pub(crate) fn snapshots(
        &self,
        reducer_id: i64,
        sid: i64,
        at: i64,
        limit: i64,
    ) -> Result<Vec<(i64, Option<String>)>> {
        self.db.heal()?;
        self.db.rows(
            "SELECT idx, state FROM reducer_snapshots WHERE reducer_id = ?1 AND sid = ?2 \
             AND idx <= ?3 ORDER BY idx DESC LIMIT ?4",
            vals![reducer_id, sid, at, limit],
            |q| Ok((q.int(0)?, q.opt_text(1)?)),
        )
    }

    /// On a plain stream, the index of the last event at or before global position
    /// `position` (-1 before the first): what a reducer at `position` has folded. The
    /// position may be past the stream's last event (it moves to the head when the
    /// stream has nothing newer).
    pub(crate) fn after_index(&self, stream_id: i64, position: i64) -> Result<i64> {
        if position == 0 {
            return Ok(-1);
        }
        self.db.heal()?;
        Ok(self
            .db
            .row(AFTER_INDEX, vals![stream_id, position], |r| r.opt_int(0))?
            .flatten()
            .unwrap_or(-1))
    }

    /// A reducer version's saved progress; `None` once it was deleted.
    pub(crate) fn saved_progress(&self, reducer_id: i64) -> Result<Option<SavedProgress>> {
        // a reducer's load starts here: a lost connection is made again first
        self.db.heal()?;
        self.db.row(
            "SELECT position, errors, halted, status FROM reducers WHERE id = ?1",
            vals![reducer_id],
            |r| {
                Ok(SavedProgress {
                    position: r.int(0)?,
                    errors: r.int(1)?,
                    halted: r.opt_text(2)?,
                    building: r.text(3)? == "building",
                })
            },
        )
    }

    /// Every stored pipe, for starting their tasks.
    pub(crate) fn pipes(&self) -> Result<Vec<super::pipe_writes::PipeRow>> {
        super::pipe_writes::load_pipes(&self.db)
    }
}

/// What [`FoldSource::saved_progress`] answers.
pub(crate) struct SavedProgress {
    pub(crate) position: i64,
    pub(crate) errors: i64,
    pub(crate) halted: Option<String>,
    pub(crate) building: bool,
}
