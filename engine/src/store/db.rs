//! The statements the writer's domain code runs (`apply`, the `*_writes` modules),
//! over the backend's write connection: the writer's logic is written once, and only
//! this layer knows which database is behind it.
//!
//! SQL is written with `?N` placeholders in the dialect both backends accept (SQLite
//! takes `ON CONFLICT ... excluded`, `COALESCE` and `CASE` as PostgreSQL does, where
//! two-argument `MAX` would be SQLite's alone); the one statement that differs
//! (`BEGIN IMMEDIATE`) is chosen with [`Db::is_postgres`]. Values go in
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
    /// A flag: an integer 0/1 on SQLite, a BOOLEAN on PostgreSQL.
    Bool(bool),
    Text(&'a str),
    Blob(&'a [u8]),
    NullInt,
    NullText,
    NullBlob,
}

/// A value that can be a statement parameter (see [`vals!`]).
pub(crate) trait ToVal {
    /// The NULL of this value's column type.
    const NULL: Val<'static>;
    fn val(&self) -> Val<'_>;
}

impl ToVal for i64 {
    const NULL: Val<'static> = Val::NullInt;
    fn val(&self) -> Val<'_> {
        Val::Int(*self)
    }
}

impl ToVal for u32 {
    const NULL: Val<'static> = Val::NullInt;
    fn val(&self) -> Val<'_> {
        Val::Int(i64::from(*self))
    }
}

impl ToVal for bool {
    const NULL: Val<'static> = Val::NullInt;
    fn val(&self) -> Val<'_> {
        Val::Bool(*self)
    }
}

impl ToVal for str {
    const NULL: Val<'static> = Val::NullText;
    fn val(&self) -> Val<'_> {
        Val::Text(self)
    }
}

impl ToVal for String {
    const NULL: Val<'static> = Val::NullText;
    fn val(&self) -> Val<'_> {
        Val::Text(self)
    }
}

impl ToVal for [u8] {
    const NULL: Val<'static> = Val::NullBlob;
    fn val(&self) -> Val<'_> {
        Val::Blob(self)
    }
}

impl ToVal for Vec<u8> {
    const NULL: Val<'static> = Val::NullBlob;
    fn val(&self) -> Val<'_> {
        Val::Blob(self)
    }
}

impl ToVal for std::sync::Arc<str> {
    const NULL: Val<'static> = Val::NullText;
    fn val(&self) -> Val<'_> {
        Val::Text(self)
    }
}

impl<T: ToVal + ?Sized> ToVal for &T {
    const NULL: Val<'static> = T::NULL;
    fn val(&self) -> Val<'_> {
        (**self).val()
    }
}

impl<T: ToVal> ToVal for Option<T> {
    const NULL: Val<'static> = T::NULL;
    fn val(&self) -> Val<'_> {
        match self {
            Some(v) => v.val(),
            None => T::NULL,
        }
    }
}

impl rusqlite::ToSql for Val<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match *self {
            Val::Int(i) => ToSqlOutput::Owned(Value::Integer(i)),
            Val::Bool(b) => ToSqlOutput::Owned(Value::Integer(i64::from(b))),
            Val::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Val::Blob(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
            Val::NullInt | Val::NullText | Val::NullBlob => ToSqlOutput::Owned(Value::Null),
        })
    }
}

/// The parameters of a statement, each borrowed: `vals![a, b]` is
/// `&[a.val(), b.val()]`.
macro_rules! vals {
    ($($v:expr),* $(,)?) => {
        &[$($crate::store::db::ToVal::val(&$v)),*]
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

    pub(crate) fn opt_text(&self, i: usize) -> Result<Option<String>> {
        Ok(match self {
            RowRef::Sqlite(r) => r.get(i)?,
            RowRef::Postgres(r) => r.try_get(i)?,
        })
    }

    /// A flag (an integer 0/1 on SQLite, a BOOLEAN on PostgreSQL).
    pub(crate) fn flag(&self, i: usize) -> Result<bool> {
        Ok(match self {
            RowRef::Sqlite(r) => r.get(i)?,
            RowRef::Postgres(r) => r.try_get(i)?,
        })
    }

    pub(crate) fn text(&self, i: usize) -> Result<String> {
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
                Val::Bool(b) => q.bind(b),
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
            Db::Sqlite(conn) => Ok(conn
                .prepare_cached(sql)?
                .execute(rusqlite::params_from_iter(vals))?
                as u64),
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

    /// Runs an INSERT and answers the id of the row it made.
    pub(crate) fn insert_id(&self, sql: &str, vals: &[Val<'_>]) -> Result<i64> {
        match self {
            Db::Sqlite(conn) => {
                conn.prepare_cached(sql)?
                    .execute(rusqlite::params_from_iter(vals))?;
                Ok(conn.last_insert_rowid())
            }
            Db::Postgres(pg) => {
                let id = self
                    .row(&format!("{sql} RETURNING id"), vals, |r| r.int(0))?
                    .ok_or_else(|| EngineError::internal("an insert answered no id"))?;
                pg.changes.set(pg.changes.get() + 1);
                Ok(id)
            }
        }
    }

    /// Runs `body` with one statement, prepared once on SQLite, to execute many times.
    pub(crate) fn batch<T>(
        &self,
        sql: &str,
        body: impl FnOnce(&mut Batch<'_>) -> Result<T>,
    ) -> Result<T> {
        let mut batch = match self {
            Db::Sqlite(conn) => Batch::Sqlite(conn.prepare_cached(sql)?),
            Db::Postgres(pg) => Batch::Postgres(pg, pg.text(sql)),
        };
        body(&mut batch)
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
                    .block_on(
                        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned())).execute(&mut *conn),
                    )
                    .map(drop)
                    .map_err(EngineError::from)
            }
        }
    }
}

/// A statement executed many times (see [`Db::batch`]).
pub(crate) enum Batch<'c> {
    Sqlite(rusqlite::CachedStatement<'c>),
    Postgres(&'c Pg, std::sync::Arc<str>),
}

impl Batch<'_> {
    pub(crate) fn exec(&mut self, vals: &[Val<'_>]) -> Result<u64> {
        match self {
            Batch::Sqlite(stmt) => Ok(stmt.execute(rusqlite::params_from_iter(vals))? as u64),
            Batch::Postgres(pg, sql) => {
                let q = Pg::query(sql.clone(), vals);
                let mut conn = pg.conn.borrow_mut();
                let done = pg.rt.block_on(q.execute(&mut *conn))?;
                pg.changes.set(pg.changes.get() + done.rows_affected());
                Ok(done.rows_affected())
            }
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
