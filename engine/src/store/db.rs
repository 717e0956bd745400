//! The statements the writer's domain code runs (`apply`, the `*_writes` modules),
//! over the backend's write connection: the writer's logic is written once, and only
//! this layer knows which database is behind it.
//!
//! SQL is written with `?N` placeholders in the dialect both backends accept (SQLite
//! takes `RETURNING`, `ON CONFLICT ... excluded` and `COALESCE` as PostgreSQL does);
//! the few statements that differ are chosen with [`Db::is_postgres`]. Values go in
//! as [`Val`] and come out through [`RowRef`], typed per column, so a NULL sent to
//! PostgreSQL carries its column's type.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use rusqlite::types::{ToSqlOutput, Value, ValueRef};
use rusqlite::{Connection, OptionalExtension};
use sqlx::Row as _;
use sqlx::postgres::{PgConnection, PgRow};

use crate::error::{EngineError, Result};

/// One statement parameter.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Val<'a> {
    Int(i64),
    Text(&'a str),
    Blob(&'a [u8]),
    NullInt,
    NullText,
    NullBlob,
}

impl From<i64> for Val<'_> {
    fn from(v: i64) -> Self {
        Val::Int(v)
    }
}

impl From<u32> for Val<'_> {
    fn from(v: u32) -> Self {
        Val::Int(i64::from(v))
    }
}

impl From<bool> for Val<'_> {
    fn from(v: bool) -> Self {
        Val::Int(i64::from(v))
    }
}

impl<'a> From<&'a str> for Val<'a> {
    fn from(v: &'a str) -> Self {
        Val::Text(v)
    }
}

impl<'a> From<&'a String> for Val<'a> {
    fn from(v: &'a String) -> Self {
        Val::Text(v)
    }
}

impl<'a> From<&'a [u8]> for Val<'a> {
    fn from(v: &'a [u8]) -> Self {
        Val::Blob(v)
    }
}

impl<'a> From<&'a Vec<u8>> for Val<'a> {
    fn from(v: &'a Vec<u8>) -> Self {
        Val::Blob(v)
    }
}

impl From<Option<i64>> for Val<'_> {
    fn from(v: Option<i64>) -> Self {
        v.map_or(Val::NullInt, Val::Int)
    }
}

impl<'a> From<Option<&'a str>> for Val<'a> {
    fn from(v: Option<&'a str>) -> Self {
        v.map_or(Val::NullText, Val::Text)
    }
}

impl<'a> From<&'a Option<String>> for Val<'a> {
    fn from(v: &'a Option<String>) -> Self {
        v.as_deref().map_or(Val::NullText, Val::Text)
    }
}

impl<'a> From<Option<&'a [u8]>> for Val<'a> {
    fn from(v: Option<&'a [u8]>) -> Self {
        v.map_or(Val::NullBlob, Val::Blob)
    }
}

impl rusqlite::ToSql for Val<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match *self {
            Val::Int(i) => ToSqlOutput::Owned(Value::Integer(i)),
            Val::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Val::Blob(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
            Val::NullInt | Val::NullText | Val::NullBlob => ToSqlOutput::Owned(Value::Null),
        })
    }
}

/// The parameters of a statement: `vals![a, b]` is `&[Val::from(a), Val::from(b)]`.
macro_rules! vals {
    ($($v:expr),* $(,)?) => {
        &[$($crate::store::db::Val::from($v)),*]
    };
}
pub(crate) use vals;

/// One row of a result, read column by column.
pub(crate) enum RowRef<'a, 'r> {
    Sqlite(&'a rusqlite::Row<'r>),
    Postgres(&'a PgRow),
}

impl RowRef<'_, '_> {
    pub(crate) fn int(&self, i: usize) -> Result<i64> {
        Ok(match self {
            RowRef::Sqlite(r) => r.get(i)?,
            RowRef::Postgres(r) => r.try_get(i)?,
        })
    }

    pub(crate) fn opt_int(&self, i: usize) -> Result<Option<i64>> {
        Ok(match self {
            RowRef::Sqlite(r) => r.get(i)?,
            RowRef::Postgres(r) => r.try_get(i)?,
        })
    }

    /// A 0/1 flag (both backends store flags as integers).
    pub(crate) fn flag(&self, i: usize) -> Result<bool> {
        Ok(self.int(i)? != 0)
    }

    pub(crate) fn text(&self, i: usize) -> Result<String> {
        Ok(match self {
            RowRef::Sqlite(r) => r.get(i)?,
            RowRef::Postgres(r) => r.try_get(i)?,
        })
    }

    pub(crate) fn opt_text(&self, i: usize) -> Result<Option<String>> {
        Ok(match self {
            RowRef::Sqlite(r) => r.get(i)?,
            RowRef::Postgres(r) => r.try_get(i)?,
        })
    }

    pub(crate) fn blob(&self, i: usize) -> Result<Vec<u8>> {
        Ok(match self {
            RowRef::Sqlite(r) => r.get(i)?,
            RowRef::Postgres(r) => r.try_get(i)?,
        })
    }
}

/// The writer's connection.
pub(crate) enum Db {
    Sqlite(Connection),
    Postgres(Pg),
}

/// A PostgreSQL connection driven from the writer thread, which is not a runtime
/// thread: each statement blocks on the runtime's handle.
pub(crate) struct Pg {
    conn: RefCell<PgConnection>,
    rt: tokio::runtime::Handle,
    /// `?N` statements in PostgreSQL's `$N` form, by their text.
    sql: RefCell<HashMap<String, std::sync::Arc<str>>>,
    /// Rows changed so far (what `total_changes` is on SQLite).
    changes: Cell<u64>,
}

impl Pg {
    pub(crate) fn new(conn: PgConnection, rt: tokio::runtime::Handle) -> Self {
        Self {
            conn: RefCell::new(conn),
            rt,
            sql: RefCell::new(HashMap::new()),
            changes: Cell::new(0),
        }
    }

    fn text(&self, sql: &str) -> std::sync::Arc<str> {
        if let Some(t) = self.sql.borrow().get(sql) {
            return t.clone();
        }
        let t: std::sync::Arc<str> = dollar_placeholders(sql).into();
        self.sql.borrow_mut().insert(sql.to_owned(), t.clone());
        t
    }

    fn query<'q>(
        sql: std::sync::Arc<str>,
        vals: &[Val<'_>],
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.to_string()));
        for v in vals {
            q = match *v {
                Val::Int(i) => q.bind(i),
                Val::Text(s) => q.bind(s.to_owned()),
                Val::Blob(b) => q.bind(b.to_vec()),
                Val::NullInt => q.bind(None::<i64>),
                Val::NullText => q.bind(None::<String>),
                Val::NullBlob => q.bind(None::<Vec<u8>>),
            };
        }
        q
    }
}

/// `?N` placeholders as `$N` (outside quoted strings).
fn dollar_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quoted = false;
    for c in sql.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                out.push(c);
            }
            '?' if !quoted => out.push('$'),
            c => out.push(c),
        }
    }
    out
}

impl Db {
    pub(crate) fn is_postgres(&self) -> bool {
        matches!(self, Db::Postgres(_))
    }

    /// Runs a statement; answers the rows it changed.
    pub(crate) fn exec(&self, sql: &str, vals: &[Val<'_>]) -> Result<u64> {
        match self {
            Db::Sqlite(conn) => Ok(conn.prepare_cached(sql)?.execute(rusqlite::params_from_iter(vals))? as u64),
            Db::Postgres(pg) => {
                let q = Pg::query(pg.text(sql), vals);
                let mut conn = pg.conn.borrow_mut();
                let done = pg.rt.block_on(q.execute(&mut *conn))?;
                pg.changes.set(pg.changes.get() + done.rows_affected());
                Ok(done.rows_affected())
            }
        }
    }

    /// The first row of a query, read by `f`.
    pub(crate) fn row<T>(
        &self,
        sql: &str,
        vals: &[Val<'_>],
        f: impl FnOnce(&RowRef<'_, '_>) -> Result<T>,
    ) -> Result<Option<T>> {
        match self {
            Db::Sqlite(conn) => {
                let mut stmt = conn.prepare_cached(sql)?;
                let mut err = None;
                let found = stmt
                    .query_row(rusqlite::params_from_iter(vals), |r| {
                        Ok(f(&RowRef::Sqlite(r)).map_err(|e| err = Some(e)).ok())
                    })
                    .optional()?;
                match err {
                    Some(e) => Err(e),
                    None => Ok(found.flatten()),
                }
            }
            Db::Postgres(pg) => {
                let q = Pg::query(pg.text(sql), vals);
                let mut conn = pg.conn.borrow_mut();
                let row = pg.rt.block_on(q.fetch_optional(&mut *conn))?;
                row.map(|r| f(&RowRef::Postgres(&r))).transpose()
            }
        }
    }

    /// Every row of a query, each read by `f`.
    pub(crate) fn rows<T>(
        &self,
        sql: &str,
        vals: &[Val<'_>],
        mut f: impl FnMut(&RowRef<'_, '_>) -> Result<T>,
    ) -> Result<Vec<T>> {
        match self {
            Db::Sqlite(conn) => {
                let mut stmt = conn.prepare_cached(sql)?;
                let mut rows = stmt.query(rusqlite::params_from_iter(vals))?;
                let mut out = Vec::new();
                while let Some(r) = rows.next()? {
                    out.push(f(&RowRef::Sqlite(r))?);
                }
                Ok(out)
            }
            Db::Postgres(pg) => {
                let q = Pg::query(pg.text(sql), vals);
                let mut conn = pg.conn.borrow_mut();
                let rows = pg.rt.block_on(q.fetch_all(&mut *conn))?;
                rows.iter().map(|r| f(&RowRef::Postgres(r))).collect()
            }
        }
    }

    /// Rows changed on this connection so far: a request that changed none may be
    /// refused without dooming its group.
    pub(crate) fn total_changes(&self) -> u64 {
        match self {
            Db::Sqlite(conn) => conn.total_changes(),
            Db::Postgres(pg) => pg.changes.get(),
        }
    }

    /// Runs a statement without parameters (BEGIN, COMMIT, ROLLBACK).
    pub(crate) fn control(&self, sql: &str) -> Result<()> {
        match self {
            Db::Sqlite(conn) => Ok(conn.prepare_cached(sql)?.execute([]).map(drop)?),
            Db::Postgres(pg) => {
                let mut conn = pg.conn.borrow_mut();
                pg.rt
                    .block_on(sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned())).execute(&mut *conn))
                    .map(drop)
                    .map_err(EngineError::from)
            }
        }
    }

    /// The SQLite connection, for what only SQLite has (the WAL checks at start).
    pub(crate) fn sqlite(&self) -> Option<&Connection> {
        match self {
            Db::Sqlite(conn) => Some(conn),
            Db::Postgres(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::dollar_placeholders;

    #[test]
    fn placeholders_become_dollars_outside_quotes() {
        assert_eq!(
            dollar_placeholders("SELECT '?' FROM t WHERE a = ?1 AND b = ?12"),
            "SELECT '?' FROM t WHERE a = $1 AND b = $12"
        );
    }
}
