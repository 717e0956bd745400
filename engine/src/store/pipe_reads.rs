//! Reads of stored pipes: a pipe's progress and a pipe found by its two ends.

use super::Reads;
use super::query::args;
use crate::error::Result;
use crate::path::StreamPath;

/// A pipe's counters: (cursor, events piped, errors).
pub(crate) async fn progress(reads: &Reads, id: i64) -> Result<(crate::order::Position, i64, i64)> {
    let r = reads
        .one(
            "SELECT cursor, piped, errors FROM pipes WHERE id = $1",
            args![id],
        )
        .await?;
    Ok((r.position(0)?, r.int(1)?, r.int(2)?))
}

/// The stored columns of the pipe from `from` to `to` that its status shows.
pub(crate) struct PipeSummary {
    pub(crate) id: i64,
    pub(crate) selector: String,
    pub(crate) code: String,
    pub(crate) cursor: crate::order::Position,
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
    let canonical = |p: &StreamPath| p.args.as_ref().map(|a| a.canonical()).unwrap_or_default();
    let row = reads
        .optional(
            "SELECT id, selector, code, cursor, piped, errors, created_at FROM pipes \
             WHERE account = $1 AND stream = $2 AND args = $3 AND dest_account = $4 \
             AND dest_stream = $5 AND dest_args = $6",
            args![
                from.account.as_str(),
                from.stream.as_str(),
                canonical(from),
                to.account.as_str(),
                to.stream.as_str(),
                canonical(to)
            ],
        )
        .await?;
    row.map(|r| {
        Ok(PipeSummary {
            id: r.int(0)?,
            selector: r.text(1)?,
            code: r.text(2)?,
            cursor: r.position(3)?,
            piped: r.int(4)?,
            errors: r.int(5)?,
            created_at: r.int(6)?,
        })
    })
    .transpose()
}

/// Pipe `id` as stored, if it exists.
pub(crate) async fn one(reads: &Reads, id: i64) -> Result<Option<super::pipe_writes::PipeRow>> {
    let sql = format!("{} WHERE id = $1", super::pipe_writes::PIPE_COLUMNS);
    let row = reads.optional(&sql, args![id]).await?;
    if let Some(r) = &row {
        let columns: Result<super::pipe_writes::PipeColumns> = super::pipe_writes::pipe_columns!(r);
        let columns = columns?;
        return Ok(super::pipe_writes::pipe_row(columns));
    }
    Ok(None)
}

/// The pipes from plain stream or factory `from` (not from one of its substreams),
/// oldest first.
pub(crate) async fn from_stream(
    reads: &Reads,
    from: &StreamPath,
) -> Result<Vec<super::pipe_writes::PipeRow>> {
    pipes_of(reads, from, Some(String::new())).await
}

/// The pipes from `from`: from a plain stream or a factory, those from it and from
/// any of its substreams; from a substream, that substream's. Oldest first.
pub(crate) async fn listed(
    reads: &Reads,
    from: &StreamPath,
) -> Result<Vec<super::pipe_writes::PipeRow>> {
    pipes_of(reads, from, from.args.as_ref().map(|a| a.canonical())).await
}

/// The pipes from `from`'s stream whose origin args are `args` (canonical, `""` for
/// the stream itself), or with any args; oldest first.
async fn pipes_of(
    reads: &Reads,
    from: &StreamPath,
    args: Option<String>,
) -> Result<Vec<super::pipe_writes::PipeRow>> {
    let any = i64::from(args.is_none());
    let sql = format!(
        "{} WHERE account = $1 AND stream = $2 AND ($3 = 1 OR args = $4) ORDER BY id",
        super::pipe_writes::PIPE_COLUMNS
    );
    let rows = reads
        .all(
            &sql,
            args![
                from.account.as_str(),
                from.stream.as_str(),
                any,
                args.unwrap_or_default()
            ],
        )
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let columns: Result<super::pipe_writes::PipeColumns> = super::pipe_writes::pipe_columns!(r);
        out.extend(super::pipe_writes::pipe_row(columns?));
    }
    Ok(out)
}
