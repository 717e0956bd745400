//! The embedded database as `eddy migrate` reads it (see `copy`): opened read-only,
//! refused unless this eddy wrote its schema, its tables and columns listed, and each
//! table counted and digested, so that a resumed copy knows the source is unchanged.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use super::copy::{CopyError, TABLES};
use super::copy_rows::quoted;
use super::migrations;

/// The embedded database, opened read-only; its reads run on blocking threads.
pub(super) struct Source {
    conn: Option<Connection>,
}

impl Source {
    pub(super) async fn open(path: &Path) -> Result<Self, CopyError> {
        let path = path.to_owned();
        let conn = tokio::task::spawn_blocking(move || {
            let conn = Connection::open_with_flags(
                &path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(|e| CopyError::Source(format!("{}: {e}", path.display())))?;
            check_source_version(&conn)?;
            Ok::<_, CopyError>(conn)
        })
        .await
        .map_err(|e| CopyError::Source(e.to_string()))??;
        Ok(Self { conn: Some(conn) })
    }

    /// Runs `f` on the connection on a blocking thread.
    pub(super) async fn run<T: Send + 'static>(
        &mut self,
        f: impl FnOnce(&Connection) -> T + Send + 'static,
    ) -> T {
        let conn = self.conn.take().expect("the source connection is home");
        let (conn, out) = tokio::task::spawn_blocking(move || {
            let out = f(&conn);
            (conn, out)
        })
        .await
        .expect("a source read panicked");
        self.conn = Some(conn);
        out
    }
}

/// Refuses a database whose migrations are not exactly this eddy's: an older one is
/// brought up to date by a server start, and a newer one may hold what this eddy
/// would not copy.
fn check_source_version(conn: &Connection) -> Result<(), CopyError> {
    let known: Vec<i64> = migrations::migrator()
        .migrations
        .iter()
        .map(|m| m.version)
        .collect();
    let applied: Vec<i64> = conn
        .prepare("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(|e| CopyError::Source(format!("it has no eddy schema ({e})")))?;
    if applied.len() < known.len() && known.starts_with(&applied) {
        return Err(CopyError::SourceVersion(
            "was written by an older eddy; start eddy serve on it once to bring it up to \
             date, stop it, and migrate again"
                .into(),
        ));
    }
    if applied != known {
        return Err(CopyError::SourceVersion(format!(
            "has schema versions {applied:?}, but this eddy knows {known:?}; migrate it \
             with the eddy that wrote it"
        )));
    }
    Ok(())
}

/// A table in the embedded database: its row count and largest rowid, and a digest
/// of its rows. What tells a resumed copy that the source is the one it began with
/// (a server that ran on it in between may have moved a cursor and added no row).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Count {
    pub(super) rows: u64,
    pub(super) max_rowid: i64,
    pub(super) digest: i64,
}

/// The table whose rows never change once written, and so need no digest: appends
/// show in its count.
const APPEND_ONLY: &str = "events";

pub(super) fn source_counts(conn: &Connection) -> Result<BTreeMap<&'static str, Count>, CopyError> {
    let mut counts = BTreeMap::new();
    for table in TABLES {
        let read = |e| CopyError::Source(format!("counting table {table}: {e}"));
        let (rows, max_rowid): (i64, i64) = conn
            .query_row(
                &format!(
                    "SELECT count(*), COALESCE(max(rowid), 0) FROM {}",
                    quoted(table)
                ),
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(read)?;
        let digest = if table == APPEND_ONLY {
            0
        } else {
            digest(conn, table).map_err(read)?
        };
        counts.insert(
            table,
            Count {
                rows: rows as u64,
                max_rowid,
                digest,
            },
        );
    }
    Ok(counts)
}

/// The first 64 bits of a SHA-256 over every value of `table`, in rowid order.
fn digest(conn: &Connection, table: &str) -> rusqlite::Result<i64> {
    use rusqlite::types::ValueRef;
    use sha2::Digest as _;
    let mut hash = sha2::Sha256::new();
    let mut stmt = conn.prepare(&format!("SELECT * FROM {} ORDER BY rowid", quoted(table)))?;
    let width = stmt.column_count();
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        for i in 0..width {
            let (tag, bytes): (u8, Cow<'_, [u8]>) = match row.get_ref(i)? {
                ValueRef::Null => (0, Cow::Borrowed(&[])),
                ValueRef::Integer(n) => (1, Cow::Owned(n.to_be_bytes().to_vec())),
                ValueRef::Real(f) => (2, Cow::Owned(f.to_be_bytes().to_vec())),
                ValueRef::Text(t) => (3, Cow::Borrowed(t)),
                ValueRef::Blob(b) => (4, Cow::Borrowed(b)),
            };
            hash.update([tag]);
            hash.update((bytes.len() as u64).to_be_bytes());
            hash.update(&bytes);
        }
    }
    let out = hash.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&out[..8]);
    Ok(i64::from_be_bytes(first))
}

/// The embedded database's tables (but SQLite's and sqlx's own) with their columns.
pub(super) fn sqlite_columns(
    conn: &Connection,
) -> Result<BTreeMap<String, Vec<String>>, CopyError> {
    let read = || -> rusqlite::Result<BTreeMap<String, Vec<String>>> {
        let mut stmt = conn.prepare(
            "SELECT m.name, p.name FROM sqlite_master m, pragma_table_info(m.name) p \
             WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite\\_%' ESCAPE '\\' \
               AND m.name <> '_sqlx_migrations' ORDER BY m.name, p.cid",
        )?;
        let mut tables: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get(1)?)))?;
        for row in rows {
            let (table, column) = row?;
            tables.entry(table).or_default().push(column);
        }
        Ok(tables)
    };
    read().map_err(|e| CopyError::Source(format!("reading its schema: {e}")))
}
