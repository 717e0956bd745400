//! Reads for splices (API §12): stored splices, and the events a stream's history
//! caused downstream (dispatched by its reducers or pipe functions, or piped), which
//! an approval recalls when the new history does not cause them again.

use uuid::Uuid;

use super::Reads;
use super::query::{ReadRow, args};
use super::splice_writes::SpliceRow;
use crate::error::{EngineError, Result};

const COLUMNS: &str = "SELECT id, stream_id, status, source, content_type, code, module, \
                       selector, last_position, preview, recalls, version, created_at, \
                       decided_at FROM splices";

fn row_from(r: &ReadRow) -> Result<SpliceRow> {
    Ok(SpliceRow {
        id: r.text(0)?,
        stream_id: r.int(1)?,
        status: r.text(2)?,
        source: r.text(3)?,
        content_type: r.text(4)?,
        code: r.text(5)?,
        module: r.flag(6)?,
        selector: r.text(7)?,
        last_position: r.int(8)?,
        preview: r.text(9)?,
        recalls: r.text(10)?,
        version: r.opt_int(11)?,
        created_at: r.int(12)?,
        decided_at: r.opt_int(13)?,
    })
}

/// Splice `id` of stream `stream_id`.
pub(crate) async fn one(reads: &Reads, stream_id: i64, id: &str) -> Result<Option<SpliceRow>> {
    let row = reads
        .optional(
            &format!("{COLUMNS} WHERE id = $1 AND stream_id = $2"),
            args![id, stream_id],
        )
        .await?;
    row.as_ref().map(row_from).transpose()
}

/// The splices of stream `stream_id`, oldest first, without their code and recall
/// lists (which a listing does not show, and which may be large).
pub(crate) async fn of_stream(reads: &Reads, stream_id: i64) -> Result<Vec<SpliceRow>> {
    let rows = reads
        .all(
            "SELECT id, stream_id, status, source, content_type, '', module, selector, \
             last_position, preview, '', version, created_at, decided_at FROM splices \
             WHERE stream_id = $1 ORDER BY created_at, id",
            args![stream_id],
        )
        .await?;
    rows.iter().map(row_from).collect()
}

/// How many splices of stream `stream_id` are pending.
pub(crate) async fn pending(reads: &Reads, stream_id: i64) -> Result<usize> {
    let row = reads
        .one(
            "SELECT COUNT(*) FROM splices WHERE stream_id = $1 AND status = 'pending'",
            args![stream_id],
        )
        .await?;
    Ok(row.int(0)?.max(0) as usize)
}

/// An event that another stream's event caused, as stored.
#[derive(Debug, Clone)]
pub(crate) struct Caused {
    pub pos: i64,
    /// The (sub)stream it is in, `acct/strm('a')`.
    pub stream: String,
    pub index: i64,
    pub id: Uuid,
    pub event_type: String,
    pub content_type: String,
    pub data: Vec<u8>,
    /// The index of the event that caused it.
    pub origin_index: i64,
}

/// The events in `dest` (every substream of a factory) caused by another event and
/// not recalled yet, in position order, with the (sub)stream of their origin.
pub(crate) async fn caused_in(
    reads: &Reads,
    dest: &crate::path::StreamPath,
) -> Result<Vec<(String, Caused)>> {
    let args = dest.args.as_ref().map(|a| a.canonical());
    let rows = reads
        .all(
            "SELECT e.pos, st.account, st.name, s.args, e.idx, e.eid, e.type, e.content_type, \
             e.data, e.origin FROM events e JOIN substreams s ON s.id = e.sid \
             JOIN streams st ON st.id = s.stream_id \
             WHERE st.account = $1 AND st.name = $2 AND ($3 = '*' OR s.args = $3) \
             AND e.origin IS NOT NULL AND e.cid IS NOT NULL ORDER BY e.pos",
            args![
                dest.account.as_str(),
                dest.stream.as_str(),
                args.unwrap_or_else(|| "*".into())
            ],
        )
        .await?;
    let mut out = Vec::new();
    for r in &rows {
        let origin: serde_json::Value =
            serde_json::from_str(&r.opt_text(9)?.unwrap_or_default()).unwrap_or_default();
        if let (Some(source), Some(_)) = (origin["stream"].as_str(), origin["index"].as_i64()) {
            out.push((source.to_owned(), caused_row(r, &origin)?));
        }
    }
    Ok(out)
}

/// The `LIKE` pattern that finds candidates for events caused by `source`.
pub(crate) fn origin_pattern(source: &str) -> String {
    format!("%\"stream\":{}%", serde_json::Value::from(source))
}

/// The index of the event of `source` that `origin` names, when it names one.
pub(crate) fn caused_index(origin: &serde_json::Value, source: &str) -> Option<i64> {
    (origin["stream"].as_str() == Some(source))
        .then(|| origin["index"].as_i64())
        .flatten()
}

fn caused_row(r: &ReadRow, origin: &serde_json::Value) -> Result<Caused> {
    let args = r.text(3)?;
    let stream = if args.is_empty() {
        format!("{}/{}", r.text(1)?, r.text(2)?)
    } else {
        format!("{}/{}({args})", r.text(1)?, r.text(2)?)
    };
    Ok(Caused {
        pos: r.int(0)?,
        stream,
        index: r.int(4)?,
        id: Uuid::from_slice(&r.blob(5)?)
            .map_err(|e| EngineError::internal(format!("a stored id is not 16 bytes: {e}")))?,
        event_type: r.text(6)?,
        content_type: r.text(7)?,
        data: r.blob(8)?,
        origin_index: origin["index"].as_i64().unwrap_or(-1),
    })
}

/// The events above position `after` caused by events of `source` (`acct/strm`) and
/// not recalled yet, in position order. Origins are JSON (`{"index": n, "stream": "acct/strm"}`): the
/// `LIKE` finds candidates, and each origin is parsed to keep exact matches only.
pub(crate) async fn caused_by(reads: &Reads, source: &str, after: i64) -> Result<Vec<Caused>> {
    let pattern = origin_pattern(source);
    let rows = reads
        .all(
            "SELECT e.pos, st.account, st.name, s.args, e.idx, e.eid, e.type, e.content_type, \
             e.data, e.origin FROM events e JOIN substreams s ON s.id = e.sid \
             JOIN streams st ON st.id = s.stream_id \
             WHERE e.pos > $2 AND e.origin LIKE $1 AND e.cid IS NOT NULL \
             AND st.name NOT LIKE '%@%' ORDER BY e.pos",
            args![pattern, after],
        )
        .await?;
    let mut out = Vec::new();
    for r in &rows {
        let origin: serde_json::Value =
            serde_json::from_str(&r.opt_text(9)?.unwrap_or_default()).unwrap_or_default();
        if caused_index(&origin, source).is_some() {
            out.push(caused_row(r, &origin)?);
        }
    }
    Ok(out)
}
