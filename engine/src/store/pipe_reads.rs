//! Reads of stored pipes: a pipe's progress and a pipe found by its two ends.

use super::Reads;
use crate::error::Result;
use crate::path::StreamPath;

/// A pipe's counters: (cursor, events piped, errors).
pub(crate) async fn progress(reads: &Reads, id: i64) -> Result<(i64, i64, i64)> {
    Ok(
        sqlx::query_as("SELECT cursor, piped, errors FROM pipes WHERE id = ?1")
            .bind(id)
            .fetch_one(&reads.pool)
            .await?,
    )
}

/// The stored columns of the pipe from `from` to `to` that its status shows.
pub(crate) struct PipeSummary {
    pub(crate) id: i64,
    pub(crate) selector: String,
    pub(crate) code: String,
    pub(crate) cursor: i64,
    pub(crate) piped: i64,
    pub(crate) errors: i64,
    pub(crate) created_at: i64,
}

/// The pipe from `from` to `to`, if there is one.
pub(crate) async fn between(
    reads: &Reads,
    from: &StreamPath,
    to: &StreamPath,
) -> Result<Option<PipeSummary>> {
    let args = |p: &StreamPath| p.args.as_ref().map(|a| a.canonical()).unwrap_or_default();
    let row: Option<(i64, String, String, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT id, selector, code, cursor, piped, errors, created_at FROM pipes \
         WHERE account = ?1 AND stream = ?2 AND args = ?3 AND dest_account = ?4 \
         AND dest_stream = ?5 AND dest_args = ?6",
    )
    .bind(from.account.as_str())
    .bind(from.stream.as_str())
    .bind(args(from))
    .bind(to.account.as_str())
    .bind(to.stream.as_str())
    .bind(args(to))
    .fetch_optional(&reads.pool)
    .await?;
    Ok(row.map(
        |(id, selector, code, cursor, piped, errors, created_at)| PipeSummary {
            id,
            selector,
            code,
            cursor,
            piped,
            errors,
            created_at,
        },
    ))
}
