//! The rows `eddy migrate` copies (see `copy`): read from the embedded SQLite database in
//! rowid order and encoded in PostgreSQL's binary `COPY` format, a batch at a time.
//!
//! The binary format rather than text or CSV: each value goes out as its bytes with a
//! length in front, so blobs need no hex, text no escaping, and nothing is parsed
//! twice; the server checks every value against its column's type as it stores it.

use rusqlite::Connection;
use rusqlite::types::ValueRef;
use tokio::sync::mpsc;

use super::copy::CopyError;

/// How a column's values are written, chosen by the column's PostgreSQL type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// `BIGINT`, from an SQLite integer.
    Int,
    /// `BOOLEAN`, from an SQLite integer 0 or 1 (how SQLite stores eddy's flags).
    Bool,
    /// `TEXT`, from SQLite text, byte for byte.
    Text,
    /// `BYTEA`, from an SQLite blob.
    Bytes,
}

impl Kind {
    /// The kind of a column of `information_schema.columns.data_type`; `None` for a
    /// type eddy's schema does not use.
    pub(super) fn of(data_type: &str) -> Option<Kind> {
        match data_type {
            "bigint" => Some(Kind::Int),
            "boolean" => Some(Kind::Bool),
            "text" => Some(Kind::Text),
            "bytea" => Some(Kind::Bytes),
            _ => None,
        }
    }
}

/// One column copied, by the name both databases give it.
#[derive(Debug, Clone)]
pub(super) struct Column {
    pub(super) name: String,
    pub(super) kind: Kind,
}

/// What one table's copy reads and writes.
#[derive(Debug, Clone)]
pub(super) struct TablePlan {
    pub(super) table: &'static str,
    pub(super) columns: Vec<Column>,
}

impl TablePlan {
    /// The `COPY` statement that takes a batch of this table.
    pub(super) fn copy_statement(&self) -> String {
        format!(
            "COPY {} ({}) FROM STDIN (FORMAT binary)",
            quoted(self.table),
            self.column_list()
        )
    }

    fn column_list(&self) -> String {
        let names: Vec<String> = self.columns.iter().map(|c| quoted(&c.name)).collect();
        names.join(", ")
    }
}

/// An identifier in double quotes (names come from the schemas, never from input).
pub(super) fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Rows encoded as one whole binary `COPY` stream (signature, rows, trailer), and the
/// rowid of the last of them, which the copy records as done with them.
#[derive(Debug)]
pub(super) struct Batch {
    pub(super) data: Vec<u8>,
    pub(super) rows: u64,
    pub(super) last_rowid: i64,
}

/// How large a batch grows before it is sent: it is one transaction on PostgreSQL, and
/// the bytes bound the memory it holds when events are large.
#[derive(Debug, Clone, Copy)]
pub(super) struct BatchLimits {
    pub(super) rows: u64,
    pub(super) bytes: usize,
}

/// The binary format's signature, then 32 bits of flags and of header extension length.
const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// The field count -1 that ends the data.
const TRAILER: [u8; 2] = (-1i16).to_be_bytes();

/// Reads the rows of `plan.table` after rowid `after`, in rowid order, and sends them
/// in batches; returns early (without error) when the receiving side is gone.
pub(super) fn read_table(
    conn: &Connection,
    plan: &TablePlan,
    after: i64,
    limits: BatchLimits,
    out: &mpsc::Sender<Batch>,
) -> Result<(), CopyError> {
    let sql = format!(
        "SELECT rowid, {} FROM {} WHERE rowid > ?1 ORDER BY rowid",
        plan.column_list(),
        quoted(plan.table)
    );
    let source = |e| CopyError::Source(format!("reading table {}: {e}", plan.table));
    let mut stmt = conn.prepare(&sql).map_err(source)?;
    let mut rows = stmt.query([after]).map_err(source)?;
    let fields = i16::try_from(plan.columns.len())
        .map_err(|_| CopyError::Schema(format!("table {} has too many columns", plan.table)))?
        .to_be_bytes();
    let mut batch = new_batch(limits);
    while let Some(row) = rows.next().map_err(source)? {
        let rowid: i64 = row.get(0).map_err(source)?;
        batch.data.extend_from_slice(&fields);
        for (i, column) in plan.columns.iter().enumerate() {
            let value = row.get_ref(i + 1).map_err(source)?;
            encode(&mut batch.data, column.kind, value).map_err(|why| {
                CopyError::Source(format!(
                    "row {rowid} of table {}, column {}: {why}",
                    plan.table, column.name
                ))
            })?;
        }
        batch.rows += 1;
        batch.last_rowid = rowid;
        if batch.rows >= limits.rows || batch.data.len() >= limits.bytes {
            let full = std::mem::replace(&mut batch, new_batch(limits));
            if !send(full, out) {
                return Ok(());
            }
        }
    }
    if batch.rows > 0 {
        send(batch, out);
    }
    Ok(())
}

fn new_batch(limits: BatchLimits) -> Batch {
    let mut data = Vec::with_capacity(limits.bytes.min(1 << 20));
    data.extend_from_slice(HEADER);
    Batch {
        data,
        rows: 0,
        last_rowid: 0,
    }
}

/// Ends the batch and sends it; false when nobody receives any more.
fn send(mut batch: Batch, out: &mpsc::Sender<Batch>) -> bool {
    batch.data.extend_from_slice(&TRAILER);
    out.blocking_send(batch).is_ok()
}

/// Appends one field: its length (-1 for NULL) and its bytes in the column's binary
/// representation. Refuses a stored value that does not fit the column.
fn encode(buf: &mut Vec<u8>, kind: Kind, value: ValueRef<'_>) -> Result<(), String> {
    let bytes: &[u8] = match (kind, value) {
        (_, ValueRef::Null) => {
            buf.extend_from_slice(&(-1i32).to_be_bytes());
            return Ok(());
        }
        (Kind::Int, ValueRef::Integer(n)) => {
            buf.extend_from_slice(&8i32.to_be_bytes());
            buf.extend_from_slice(&n.to_be_bytes());
            return Ok(());
        }
        (Kind::Bool, ValueRef::Integer(n @ (0 | 1))) => {
            buf.extend_from_slice(&1i32.to_be_bytes());
            buf.push(n as u8);
            return Ok(());
        }
        // text kept as a blob would read back the same, as long as it is UTF-8
        (Kind::Text, ValueRef::Text(b) | ValueRef::Blob(b)) => {
            std::str::from_utf8(b).map_err(|_| "the text is not valid UTF-8".to_owned())?;
            b
        }
        (Kind::Bytes, ValueRef::Blob(b) | ValueRef::Text(b)) => b,
        (kind, other) => {
            return Err(format!(
                "a stored {:?} value does not fit a {kind:?} column",
                other.data_type()
            ));
        }
    };
    let len = i32::try_from(bytes.len()).map_err(|_| "the value is over 2 GiB".to_owned())?;
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(bytes);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(kind: Kind, value: ValueRef<'_>) -> Result<Vec<u8>, String> {
        let mut buf = Vec::new();
        encode(&mut buf, kind, value).map(|()| buf)
    }

    #[test]
    fn values_are_written_as_lengths_and_bytes() {
        assert_eq!(
            field(Kind::Int, ValueRef::Integer(-2)).unwrap(),
            [0, 0, 0, 8, 255, 255, 255, 255, 255, 255, 255, 254]
        );
        assert_eq!(
            field(Kind::Bool, ValueRef::Integer(1)).unwrap(),
            [0, 0, 0, 1, 1]
        );
        assert_eq!(
            field(Kind::Text, ValueRef::Text(b"{\"a\":1}")).unwrap(),
            b"\0\0\0\x07{\"a\":1}"
        );
        assert_eq!(
            field(Kind::Bytes, ValueRef::Blob(&[0, 255])).unwrap(),
            [0, 0, 0, 2, 0, 255]
        );
        assert_eq!(
            field(Kind::Text, ValueRef::Null).unwrap(),
            [255, 255, 255, 255]
        );
    }

    #[test]
    fn values_that_do_not_fit_are_refused() {
        assert!(field(Kind::Bool, ValueRef::Integer(2)).is_err());
        assert!(field(Kind::Int, ValueRef::Text(b"1")).is_err());
        assert!(field(Kind::Int, ValueRef::Real(1.0)).is_err());
        assert!(field(Kind::Text, ValueRef::Blob(&[0xff])).is_err());
    }

    #[test]
    fn the_header_is_the_signature_and_two_zero_words() {
        assert_eq!(HEADER.len(), 11 + 4 + 4);
    }
}
