//! Reads of saved reducer states through the sqlx pool, for state and status reads
//! that the reducer threads' published progress does not answer alone.

use super::Reads;
use sqlx::Row;

use crate::error::Result;

/// The saved state of reducer version `reducer_id` for substream `sid`, if any: the
/// last index folded into it and its JSON (`None` while undefined).
pub(crate) async fn saved_state(
    reads: &Reads,
    reducer_id: i64,
    sid: i64,
) -> Result<Option<(i64, Option<String>)>> {
    let row = sqlx::query("SELECT idx, state FROM reducer_states WHERE reducer_id = ? AND sid = ?")
        .bind(reducer_id)
        .bind(sid)
        .fetch_optional(&reads.pool)
        .await?;
    Ok(row.map(|r| (r.get(0), r.get(1))))
}

/// The last index of substream `sid` at or before global position `position` (-1
/// when it has none there): a factory reducer's `Reducer-Index` for that substream.
pub(crate) async fn substream_index(reads: &Reads, sid: i64, position: i64) -> Result<i64> {
    let idx: Option<i64> = sqlx::query_scalar(
        "SELECT idx FROM events WHERE sid = ? AND pos <= ? ORDER BY idx DESC LIMIT 1",
    )
    .bind(sid)
    .bind(position)
    .fetch_optional(&reads.pool)
    .await?;
    Ok(idx.unwrap_or(-1))
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
    let rows = sqlx::query(
        "SELECT s.id, s.args, \
           (SELECT e.idx FROM events e WHERE e.sid = s.id AND e.pos <= ? ORDER BY e.idx DESC LIMIT 1), \
           rs.state \
         FROM substreams s LEFT JOIN reducer_states rs ON rs.reducer_id = ? AND rs.sid = s.id \
         WHERE s.stream_id = ? AND s.id > ? ORDER BY s.id LIMIT ?",
    )
    .bind(position)
    .bind(reducer_id)
    .bind(stream_id)
    .bind(after)
    .bind(limit as i64)
    .fetch_all(&reads.pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                r.get(0),
                r.get(1),
                r.get::<Option<i64>, _>(2).unwrap_or(-1),
                r.get(3),
            )
        })
        .collect())
}

/// Events of a stream (every substream of a factory) after `position` up to `head`:
/// what a reducer at `position` has yet to fold.
pub(crate) async fn lag(
    reads: &Reads,
    stream_id: i64,
    factory: bool,
    position: i64,
    head: i64,
) -> Result<i64> {
    let sql = if factory {
        "SELECT COUNT(*) FROM events WHERE factory_id = ? AND pos > ? AND pos <= ?"
    } else {
        "SELECT COUNT(*) FROM events WHERE sid = (SELECT id FROM substreams WHERE stream_id = ? \
         AND args = '') AND pos > ? AND pos <= ?"
    };
    Ok(sqlx::query_scalar(sql)
        .bind(stream_id)
        .bind(position)
        .bind(head)
        .fetch_one(&reads.pool)
        .await?)
}

/// The name and `reads` list (JSON) of every reducer version of `account/stream`, oldest
/// first.
pub(crate) async fn reads_of_stream(
    reads: &Reads,
    account: &str,
    stream: &str,
) -> Result<Vec<(String, String)>> {
    Ok(sqlx::query_as(
        "SELECT r.name, r.reads FROM reducers r JOIN streams s ON s.id = r.stream_id \
         WHERE s.account = ?1 AND s.name = ?2 ORDER BY r.id",
    )
    .bind(account)
    .bind(stream)
    .fetch_all(&reads.pool)
    .await?)
}

/// The code and media type of the newest version of reducer `name` of `account/stream`.
pub(crate) async fn source(
    reads: &Reads,
    account: &str,
    stream: &str,
    name: &str,
) -> Result<Option<(String, String)>> {
    Ok(sqlx::query_as(
        "SELECT r.source, r.content_type FROM reducers r JOIN streams s ON s.id = r.stream_id \
         WHERE s.account = ?1 AND s.name = ?2 AND r.name = ?3 ORDER BY r.id DESC LIMIT 1",
    )
    .bind(account)
    .bind(stream)
    .bind(name)
    .fetch_optional(&reads.pool)
    .await?)
}
