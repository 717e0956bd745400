//! Reads of saved reducer states through the sqlx pool, for state and status reads
//! that the reducer threads' published progress does not answer alone.

use super::Reads;
use super::query::{Sql, args};
use super::reducer_writes::ReducerRow;

use crate::error::Result;

/// The saved state of reducer version `reducer_id` for substream `sid`, if any: the
/// last index folded into it and its JSON (`None` while undefined).
pub(crate) async fn saved_state(
    reads: &Reads,
    reducer_id: i64,
    sid: i64,
) -> Result<Option<(i64, Option<String>)>> {
    let row = reads
        .optional(
            "SELECT idx, state FROM reducer_states WHERE reducer_id = $1 AND sid = $2",
            args![reducer_id, sid],
        )
        .await?;
    row.map(|r| Ok((r.int(0)?, r.opt_text(1)?))).transpose()
}

/// The version of reducer `name` of a stream that answers reads, as stored (another
/// node's promotion shows here before this node's published map learns of it).
pub(crate) async fn active_version(
    reads: &Reads,
    stream_id: i64,
    name: &str,
) -> Result<Option<i64>> {
    let row = reads
        .optional(
            "SELECT id FROM reducers WHERE stream_id = $1 AND name = $2 AND status = 'active'",
            args![stream_id, name],
        )
        .await?;
    row.map(|r| r.int(0)).transpose()
}

/// The last index of substream `sid` at or before global position `position` (-1
/// when it has none there): a factory reducer's `Reducer-Index` for that substream.
pub(crate) async fn substream_index(reads: &Reads, sid: i64, position: i64) -> Result<i64> {
    let row = reads
        .optional(
            "SELECT idx FROM events WHERE sid = $1 AND pos <= $2 ORDER BY idx DESC LIMIT 1",
            args![sid, position],
        )
        .await?;
    Ok(row.map(|r| r.int(0)).transpose()?.unwrap_or(-1))
}

/// One page of a factory reducer's saved states: (substream id, canonical args,
/// index at `position`, saved state), in substream creation order after `after`.
pub(crate) async fn saved_states_page(
    reads: &Reads,
    stream_id: i64,
    reducer_id: i64,
    position: i64,
    after: i64,
    limit: usize,
) -> Result<Vec<(i64, String, i64, Option<String>)>> {
    let rows = reads
        .all(
            "SELECT s.id, s.args, \
               (SELECT e.idx FROM events e WHERE e.sid = s.id AND e.pos <= $1 \
                ORDER BY e.idx DESC LIMIT 1), \
               rs.state \
             FROM substreams s LEFT JOIN reducer_states rs ON rs.reducer_id = $2 AND rs.sid = s.id \
             WHERE s.stream_id = $3 AND s.id > $4 ORDER BY s.id LIMIT $5",
            args![position, reducer_id, stream_id, after, limit as i64],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.int(0)?,
                r.text(1)?,
                r.opt_int(2)?.unwrap_or(-1),
                r.opt_text(3)?,
            ))
        })
        .collect()
}

/// Events of a stream (every substream of a factory) after `position` up to `head`:
/// what a reducer at `position` has yet to fold.
pub(crate) async fn lag(
    reads: &Reads,
    stream_id: i64,
    factory: bool,
    position: i64,
    head: crate::order::Position,
) -> Result<i64> {
    let sql = if factory {
        "SELECT COUNT(*) FROM events WHERE factory_id = $1 AND pos > $2 AND pos <= $3"
    } else {
        "SELECT COUNT(*) FROM events WHERE sid = (SELECT id FROM substreams WHERE stream_id = $1 \
         AND args = '') AND pos > $2 AND pos <= $3"
    };
    reads
        .one(sql, args![stream_id, position, head])
        .await?
        .int(0)
}

/// The name and `reads` list (JSON) of every reducer version of `account/stream`, oldest
/// first.
pub(crate) async fn reads_of_stream(
    reads: &Reads,
    account: &str,
    stream: &str,
) -> Result<Vec<(String, String)>> {
    let rows = reads
        .all(
            "SELECT r.name, r.reads FROM reducers r JOIN streams s ON s.id = r.stream_id \
             WHERE s.account = $1 AND s.name = $2 ORDER BY r.id",
            args![account, stream],
        )
        .await?;
    rows.iter().map(|r| Ok((r.text(0)?, r.text(1)?))).collect()
}

/// The code and media type of the newest version of reducer `name` of `account/stream`.
pub(crate) async fn source(
    reads: &Reads,
    account: &str,
    stream: &str,
    name: &str,
) -> Result<Option<(String, String)>> {
    let row = reads
        .optional(
            "SELECT r.source, r.content_type FROM reducers r JOIN streams s ON s.id = r.stream_id \
             WHERE s.account = $1 AND s.name = $2 AND r.name = $3 ORDER BY r.id DESC LIMIT 1",
            args![account, stream, name],
        )
        .await?;
    row.map(|r| Ok((r.text(0)?, r.text(1)?))).transpose()
}

/// On a plain stream, the index of the last event at or before global position
/// `position` (-1 before the first), as `FoldSource::after_index` answers it.
pub(crate) async fn after_index(reads: &Reads, stream_id: i64, position: i64) -> Result<i64> {
    if position == 0 {
        return Ok(-1);
    }
    let row = reads
        .one(super::fold_source::AFTER_INDEX, args![stream_id, position])
        .await?;
    Ok(row.opt_int(0)?.unwrap_or(-1))
}

/// Every stored reducer version with its stream's account and name, oldest first.
pub(crate) async fn versions(reads: &Reads) -> Result<Vec<(ReducerRow, String, String)>> {
    versions_where(reads, None).await
}

/// [`versions`] of one stream.
pub(crate) async fn versions_of(
    reads: &Reads,
    stream_id: i64,
) -> Result<Vec<(ReducerRow, String, String)>> {
    versions_where(reads, Some(stream_id)).await
}

async fn versions_where(
    reads: &Reads,
    stream_id: Option<i64>,
) -> Result<Vec<(ReducerRow, String, String)>> {
    let mut sql = Sql::new(
        "SELECT r.id, r.stream_id, s.factory, r.name, r.status, r.source, r.content_type, \
         r.code, r.shape, r.reads, r.selector, r.on_error, r.code_hash, r.position, \
         r.errors, r.halted, s.account, s.name \
         FROM reducers r JOIN streams s ON s.id = r.stream_id",
    );
    if let Some(id) = stream_id {
        sql.push(" WHERE r.stream_id = ").bind(id);
    }
    sql.push(" ORDER BY r.id");
    let rows = reads.all_of(sql).await?;
    rows.iter()
        .map(|q| {
            let row = ReducerRow {
                id: q.int(0)?,
                stream_id: q.int(1)?,
                factory: q.flag(2)?,
                name: q.text(3)?,
                building: q.text(4)? == "building",
                source: q.text(5)?,
                content_type: q.text(6)?,
                code: q.text(7)?,
                module: q.text(8)? == "module",
                reads: serde_json::from_str(&q.text(9)?).unwrap_or_default(),
                selector: q.text(10)?,
                halt_on_error: q.text(11)? == "halt",
                code_hash: q.text(12)?,
                position: q.int(13)?,
                errors: q.int(14)?,
                halted: q.opt_text(15)?,
                live_from: None,
            };
            Ok((row, q.text(16)?, q.text(17)?))
        })
        .collect()
}

/// Every reducer version's saved position, by stream: (stream id, [(version id,
/// position)] by id), for nodes that show reducers another node folds.
pub(crate) async fn positions(reads: &Reads) -> Result<Vec<(i64, Vec<(i64, i64)>)>> {
    let rows = reads
        .all(
            "SELECT stream_id, id, position FROM reducers ORDER BY stream_id, id",
            args![],
        )
        .await?;
    let mut out: Vec<(i64, Vec<(i64, i64)>)> = Vec::new();
    for r in &rows {
        let (stream_id, id, position) = (r.int(0)?, r.int(1)?, r.int(2)?);
        match out.last_mut() {
            Some((s, list)) if *s == stream_id => list.push((id, position)),
            _ => out.push((stream_id, vec![(id, position)])),
        }
    }
    Ok(out)
}
