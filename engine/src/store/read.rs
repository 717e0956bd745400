//! Reads through the sqlx pool: streams, substreams and events with selectors applied
//! as SQL conditions.

use std::collections::HashSet;

use uuid::Uuid;

use super::Reads;
use super::query::{ReadRow, Sql, args};

use crate::error::Result;
use crate::event::StoredEvent;
use crate::order::{Index, Position};
use crate::path::Args;
use crate::selector::Selector;
use crate::settings::StreamSettings;

/// Above this many matching substreams, a `sub` glob is applied in Rust rather than as
/// an SQL `IN` list.
const MAX_SQL_SUBS: usize = 500;

/// A stream's row.
#[derive(Debug, Clone)]
pub struct StreamInfo {
    pub id: i64,
    pub factory: bool,
    pub settings: StreamSettings,
    pub created_at: i64,
}

pub async fn stream(reads: &Reads, account: &str, name: &str) -> Result<Option<StreamInfo>> {
    let row = reads
        .optional(
            "SELECT id, factory, settings, created_at FROM streams \
             WHERE account = $1 AND name = $2",
            args![account, name],
        )
        .await?;
    row.map(|r| stream_from_row(&r, 0)).transpose()
}

/// A stream's row and the id of its substream with canonical `args` (`""`: a plain
/// stream's one substream), if both exist, in one query: every read resolves its path
/// first, and each query is a round trip to sqlx's worker thread.
pub async fn stream_and_substream(
    reads: &Reads,
    account: &str,
    name: &str,
    args: &str,
) -> Result<Option<(StreamInfo, Option<i64>)>> {
    let row = reads
        .optional(
            "SELECT s.id, s.factory, s.settings, s.created_at, ss.id FROM streams s \
             LEFT JOIN substreams ss ON ss.stream_id = s.id AND ss.args = $1 \
             WHERE s.account = $2 AND s.name = $3",
            args![args, account, name],
        )
        .await?;
    row.map(|r| Ok((stream_from_row(&r, 0)?, r.opt_int(4)?)))
        .transpose()
}

/// [`StreamInfo`] from four columns from `at`: id, factory, settings, created_at.
fn stream_from_row(r: &ReadRow, at: usize) -> Result<StreamInfo> {
    let factory = r.flag(at + 1)?;
    Ok(StreamInfo {
        id: r.int(at)?,
        factory,
        settings: StreamSettings::from_stored(&r.text(at + 2)?, factory),
        created_at: r.int(at + 3)?,
    })
}

/// What [`event_by_path`] finds: the stream, its substream's id and the event, each
/// where it exists.
pub type EventLookup = (StreamInfo, Option<i64>, Option<StoredEvent>);

/// [`stream_and_substream`] and the event in one query: event `index` of the
/// substream with canonical `args` of stream `account/name`, if at or below the
/// `durable` position. `None` when the stream does not exist.
pub async fn event_by_path(
    reads: &Reads,
    (account, name, args): (&str, &str, &str),
    index: Index,
    durable: Position,
) -> Result<Option<EventLookup>> {
    // the event's columns first, where `event_from_row` reads them
    let row = reads
        .optional(
            "SELECT e.pos, e.idx, e.eid, e.type, e.ts, e.content_type, e.data, e.metadata, \
             ss.args, e.sid, e.origin, st.id, st.factory, st.settings, st.created_at, ss.id \
             FROM streams st \
             LEFT JOIN substreams ss ON ss.stream_id = st.id AND ss.args = $1 \
             LEFT JOIN events e ON e.sid = ss.id AND e.idx = $2 AND e.pos <= $3 \
             WHERE st.account = $4 AND st.name = $5",
            args![args, index, durable, account, name],
        )
        .await?;
    let Some(r) = row else { return Ok(None) };
    let event = match r.opt_int(0)? {
        Some(_) => Some(event_from_row(&format!("{account}/{name}"), &r)?),
        None => None,
    };
    Ok(Some((stream_from_row(&r, 11)?, r.opt_int(15)?, event)))
}

pub async fn substream_id(reads: &Reads, stream_id: i64, args: &str) -> Result<Option<i64>> {
    let row = reads
        .optional(
            "SELECT id FROM substreams WHERE stream_id = $1 AND args = $2",
            args![stream_id, args],
        )
        .await?;
    row.map(|r| r.int(0)).transpose()
}

/// What a read covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// One plain stream or one substream, in index order.
    Substream(i64),
    /// Every substream of a factory, in global append order.
    Factory(i64),
}

/// Where a read starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cursor {
    /// At this index of a (sub)stream (inclusive).
    Index(Index),
    /// After this global position (exclusive).
    After(Position),
}

/// One read.
pub struct EventQuery<'a> {
    pub scope: Scope,
    /// `acct/strm`, the prefix of every event's `stream` field.
    pub prefix: &'a str,
    pub selector: &'a Selector,
    pub cursor: Cursor,
    pub limit: usize,
}

/// A page of events and whether more match after it.
#[derive(Debug, Default)]
pub struct Page {
    pub events: Vec<StoredEvent>,
    pub more: bool,
}

impl Page {
    /// The cursor that continues after this page (`None` when it is empty).
    pub fn next_cursor(&self, scope: Scope) -> Option<Cursor> {
        let last = self.events.last()?;
        Some(match scope {
            Scope::Substream(_) => Cursor::Index(last.index.next()),
            Scope::Factory(_) => Cursor::After(last.position),
        })
    }
}

const EVENT_COLUMNS: &str = "SELECT e.pos, e.idx, e.eid, e.type, e.ts, e.content_type, e.data, \
     e.metadata, s.args, e.sid, e.origin FROM events e JOIN substreams s ON s.id = e.sid WHERE ";

/// The event in the columns [`EVENT_COLUMNS`] lists, for readers elsewhere in the
/// store that select the same first eleven columns.
pub(super) fn stored_event(prefix: &str, r: &ReadRow) -> Result<StoredEvent> {
    event_from_row(prefix, r)
}

/// The event in the columns [`EVENT_COLUMNS`] lists (`origin` at 10).
fn event_from_row(prefix: &str, r: &ReadRow) -> Result<StoredEvent> {
    let args = r.text(8)?;
    let stream = if args.is_empty() {
        prefix.to_owned()
    } else {
        format!("{prefix}({args})")
    };
    Ok(StoredEvent {
        stream,
        position: r.position(0)?,
        index: r.index(1)?,
        id: Uuid::from_slice(&r.blob(2)?).unwrap_or_default(),
        event_type: r.text(3)?,
        timestamp: r.int(4)?,
        content_type: r.text(5)?,
        data: bytes::Bytes::from(r.blob(6)?),
        metadata: r.opt_text(7)?,
        origin: r.opt_text(10)?,
    })
}

/// Reads one page of events matching the selector, among those at or below the
/// `durable` position (committed events not yet flushed to disk stay unseen).
pub async fn events(reads: &Reads, q: &EventQuery<'_>, durable: Position) -> Result<Page> {
    let mut post_filter: Option<HashSet<i64>> = None;
    let mut sql_subs: Option<Vec<i64>> = None;
    if let (Scope::Factory(stream_id), false) = (q.scope, q.selector.subs.is_empty()) {
        let sids = matching_substreams(reads, stream_id, q.selector).await?;
        if sids.is_empty() {
            return Ok(Page::default());
        }
        if sids.len() <= MAX_SQL_SUBS {
            sql_subs = Some(sids);
        } else {
            post_filter = Some(sids.into_iter().collect());
        }
    }
    let mut page = Page::default();
    let mut cursor = q.cursor;
    loop {
        let fetch = if post_filter.is_some() {
            1000
        } else {
            q.limit + 1
        };
        let mut qb = Sql::new(EVENT_COLUMNS);
        match q.scope {
            Scope::Substream(sid) => qb.push("e.sid = ").bind(sid),
            Scope::Factory(id) => qb.push("e.factory_id = ").bind(id),
        };
        match cursor {
            // one lower bound on the index, the greater: with two, SQLite may range
            // over the (sid, idx) index from the smaller and filter up to the other
            Cursor::Index(i) => {
                let start = q.selector.from.map_or(i.sql(), |f| f.sql().max(i.sql()));
                qb.push(" AND e.idx >= ").bind(start)
            }
            Cursor::After(p) => qb.push(" AND e.pos > ").bind(p),
        };
        qb.push(" AND e.pos <= ").bind(durable);
        push_conditions(&mut qb, q.selector, matches!(cursor, Cursor::Index(_)));
        if let Some(sids) = &sql_subs {
            qb.push(" AND e.sid IN ");
            qb.bind_list(sids.iter().copied());
        }
        match q.scope {
            Scope::Substream(_) => qb.push(" ORDER BY e.idx"),
            Scope::Factory(_) => qb.push(" ORDER BY e.pos"),
        };
        qb.push(" LIMIT ").bind(fetch as i64);
        let rows = reads.all_of(qb).await?;
        let exhausted = rows.len() < fetch;
        for r in &rows {
            let e = event_from_row(q.prefix, r)?;
            cursor = match q.scope {
                Scope::Substream(_) => Cursor::Index(e.index.next()),
                Scope::Factory(_) => Cursor::After(e.position),
            };
            if let Some(set) = &post_filter
                && !set.contains(&r.int(9)?)
            {
                continue;
            }
            if page.events.len() == q.limit {
                page.more = true;
                return Ok(page);
            }
            page.events.push(e);
        }
        if exhausted || post_filter.is_none() {
            return Ok(page);
        }
    }
}

/// Appends the selector's type, index and time conditions (without `from` when the
/// query has already bounded the index from below with it).
fn push_conditions(qb: &mut Sql, sel: &Selector, from_bound: bool) {
    for (list, op) in [
        (&sel.types, " AND e.type IN "),
        (&sel.exclude_types, " AND e.type NOT IN "),
    ] {
        if list.is_empty() {
            continue;
        }
        qb.push(op);
        qb.bind_list(list.iter());
    }
    if let Some(v) = sel.from.filter(|_| !from_bound) {
        qb.push(" AND e.idx >= ").bind(v.sql());
    }
    if let Some(v) = sel.to {
        qb.push(" AND e.idx <= ").bind(v.sql());
    }
    if let Some(v) = sel.since {
        qb.push(" AND e.ts >= ").bind(v);
    }
    if let Some(v) = sel.until {
        qb.push(" AND e.ts <= ").bind(v);
    }
}

/// The ids of a factory's substreams that match the selector's `sub` patterns.
async fn matching_substreams(reads: &Reads, stream_id: i64, sel: &Selector) -> Result<Vec<i64>> {
    if let Some(exact) = sel.exact_subs() {
        let mut out = Vec::new();
        for args in exact {
            if let Some(id) = substream_id(reads, stream_id, &args.canonical()).await? {
                out.push(id);
            }
        }
        return Ok(out);
    }
    let rows = reads
        .all(
            "SELECT id, args FROM substreams WHERE stream_id = $1",
            args![stream_id],
        )
        .await?;
    let mut out = Vec::new();
    for r in &rows {
        if Args::parse(&r.text(1)?)
            .ok()
            .is_some_and(|a| sel.matches_args(Some(&a)))
        {
            out.push(r.int(0)?);
        }
    }
    Ok(out)
}

/// One page of the events of every stream of an account, or of every account (`None`:
/// the firehose), internal log streams aside, after global position `after`, in
/// append order, at or below `durable`.
/// The selector's `sub` patterns do not apply here (the caller refuses them).
pub async fn account_events(
    reads: &Reads,
    account: Option<&str>,
    selector: &Selector,
    after: Position,
    limit: usize,
    durable: Position,
) -> Result<Page> {
    let mut qb = Sql::new(
        "SELECT e.pos, e.idx, e.eid, e.type, e.ts, e.content_type, e.data, e.metadata, \
         s.args, e.sid, e.origin, t.name, t.account FROM events e \
         JOIN substreams s ON s.id = e.sid JOIN streams t ON t.id = s.stream_id WHERE ",
    );
    if let Some(account) = account {
        qb.push("t.account = ").bind(account);
        qb.push(" AND ");
    }
    qb.push("t.name NOT LIKE '%/%' AND e.pos > ").bind(after);
    qb.push(" AND e.pos <= ").bind(durable);
    push_conditions(&mut qb, selector, false);
    qb.push(" ORDER BY e.pos LIMIT ").bind(limit as i64 + 1);
    let rows = reads.all_of(qb).await?;
    let more = rows.len() > limit;
    let mut events = Vec::with_capacity(rows.len().min(limit));
    for r in rows.iter().take(limit) {
        events.push(event_from_row(
            &format!("{}/{}", r.text(12)?, r.text(11)?),
            r,
        )?);
    }
    Ok(Page { events, more })
}

/// A stream in an account listing.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StreamEntry {
    pub name: String,
    pub factory: bool,
    pub events: i64,
    #[serde(rename = "createdAt")]
    pub created_at: i64,
    /// The stream's metadata (API §13), when it has some.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The accounts that have streams, by name (the server's own `eddy` account aside).
pub async fn stream_accounts(reads: &Reads) -> Result<Vec<String>> {
    let rows = reads
        .all(
            "SELECT DISTINCT account FROM streams WHERE account <> 'eddy' ORDER BY account",
            args![],
        )
        .await?;
    rows.iter().map(|r| r.text(0)).collect()
}

/// Each account's stream count and event count (summed over its streams'
/// substreams, as the stream listing counts them), for the accounts that have
/// streams; an account without any is absent.
pub async fn account_counts(reads: &Reads) -> Result<Vec<(String, i64, i64)>> {
    // the sum is cast back: PostgreSQL sums BIGINTs as NUMERIC
    let rows = reads
        .all(
            "SELECT s.account, COUNT(DISTINCT s.id), \
             CAST(COALESCE(SUM(ss.event_count), 0) AS BIGINT) FROM streams s \
             LEFT JOIN substreams ss ON ss.stream_id = s.id \
             WHERE s.account <> 'eddy' AND s.name NOT LIKE '%/%' GROUP BY s.account",
            args![],
        )
        .await?;
    rows.iter()
        .map(|r| Ok((r.text(0)?, r.int(1)?, r.int(2)?)))
        .collect()
}

/// An account's streams by name, after `after`.
pub async fn list_streams(
    reads: &Reads,
    account: &str,
    after: &str,
    limit: usize,
) -> Result<Vec<StreamEntry>> {
    // the sum is cast back: PostgreSQL sums BIGINTs as NUMERIC
    let rows = reads
        .all(
            "SELECT s.name, s.factory, CAST(COALESCE(SUM(ss.event_count), 0) AS BIGINT), \
             s.created_at, s.settings FROM streams s \
             LEFT JOIN substreams ss ON ss.stream_id = s.id \
             WHERE s.account = $1 AND s.name > $2 AND s.name NOT LIKE '%/%' \
             GROUP BY s.id, s.name, s.factory, s.created_at, s.settings \
             ORDER BY s.name LIMIT $3",
            args![account, after, limit as i64],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(StreamEntry {
                name: r.text(0)?,
                factory: r.flag(1)?,
                events: r.int(2)?,
                created_at: r.int(3)?,
                metadata: StreamSettings::from_stored(&r.text(4)?, false).metadata,
            })
        })
        .collect()
}

/// A substream in a factory's listing.
#[derive(Debug, Clone)]
pub struct SubstreamEntry {
    pub id: i64,
    pub args: String,
    pub events: i64,
    pub last_index: i64,
    pub last_timestamp: i64,
}

/// A factory's substreams in creation order, after substream id `after`.
pub async fn list_substreams(
    reads: &Reads,
    stream_id: i64,
    after: i64,
    limit: usize,
) -> Result<Vec<SubstreamEntry>> {
    let rows = reads
        .all(
            "SELECT id, args, event_count, last_index, last_timestamp FROM substreams \
             WHERE stream_id = $1 AND id > $2 ORDER BY id LIMIT $3",
            args![stream_id, after, limit as i64],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(SubstreamEntry {
                id: r.int(0)?,
                args: r.text(1)?,
                events: r.int(2)?,
                last_index: r.int(3)?,
                last_timestamp: r.int(4)?,
            })
        })
        .collect()
}

/// The data of the last event of the substream `args` of `account`/`stream`, if it has
/// one.
pub(crate) async fn last_data(
    reads: &Reads,
    account: &str,
    stream: &str,
    args: &str,
) -> Result<Option<Vec<u8>>> {
    let row = reads
        .optional(
            "SELECT e.data FROM events e JOIN substreams s ON s.id = e.sid \
             JOIN streams t ON t.id = s.stream_id \
             WHERE t.account = $1 AND t.name = $2 AND s.args = $3 \
             ORDER BY e.idx DESC LIMIT 1",
            args![account, stream, args],
        )
        .await?;
    row.map(|r| r.blob(0)).transpose()
}
