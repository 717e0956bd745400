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
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

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

impl ToVal for crate::order::Position {
    const NULL: Val<'static> = Val::NullInt;
    fn val(&self) -> Val<'_> {
        Val::Int(self.get())
    }
}

impl ToVal for crate::order::Index {
    const NULL: Val<'static> = Val::NullInt;
    fn val(&self) -> Val<'_> {
        Val::Int(self.sql())
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

    pub(crate) fn position(&self, i: usize) -> Result<crate::order::Position> {
        self.int(i).map(crate::order::Position)
    }

    pub(crate) fn index(&self, i: usize) -> Result<crate::order::Index> {
        self.int(i).map(|i| crate::order::Index(i as u64))
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

    /// An event id, stored as its 16 bytes.
    pub(crate) fn uuid(&self, i: usize) -> Result<uuid::Uuid> {
        uuid::Uuid::from_slice(&self.blob(i)?)
            .map_err(|e| EngineError::internal(format!("a stored id is not 16 bytes: {e}")))
    }
}

/// The writer's connection.
pub(crate) enum Db {
    Sqlite(Connection),
    Postgres(Box<Pg>),
}

/// A PostgreSQL connection driven from a thread of its own (the writer's, a reducer
/// thread's), which is not a runtime thread: each statement blocks on a
/// current-thread runtime the connection owns, so the answer to a statement wakes the
/// thread that waits for it and no other (on the server's runtime, every round trip
/// cost a wake-up across threads).
pub(crate) struct Pg {
    /// `None` while a statement is in flight (it holds the connection).
    conn: RefCell<Option<PgConnection>>,
    /// A statement sent ahead, which PostgreSQL runs while this thread goes on: the
    /// writer's gathered rows while it applies the next request, a reducer thread's
    /// next batch while it folds this one. Landed before any other statement.
    in_flight: RefCell<Option<Flight>>,
    /// A read sent ahead that was answered at once: its key and rows, kept for the
    /// same read and dropped by any other statement.
    read_early: RefCell<Option<(String, Vec<PgRow>)>>,
    /// Where to connect again after the connection was lost.
    url: String,
    /// Set when a statement failed for want of a connection; [`Db::heal`] connects
    /// again.
    lost: Cell<bool>,
    rt: tokio::runtime::Runtime,
    /// `?N` statements in PostgreSQL's `$N` form, by their text.
    sql: RefCell<HashMap<String, std::sync::Arc<str>>>,
    /// Rows changed so far (what `total_changes` is on SQLite), gathered rows included.
    changes: Cell<u64>,
    /// The session settings [`Db::set_session`] made, made again on a new connection.
    session: RefCell<String>,
    /// Rows of plain inserts gathered across requests, sent before the next statement
    /// of any other kind (a read of the same rows among them) or at COMMIT: a group of
    /// single-event appends reaches PostgreSQL as one insert (see [`MultiRow`]).
    pending: RefCell<Option<MultiRow>>,
}

/// A statement sent and not yet answered, owning the connection until it is.
type InFlight = Pin<
    Box<dyn Future<Output = (PgConnection, std::result::Result<Vec<PgRow>, sqlx::Error>)> + Send>,
>;

/// A statement in flight: a write (its error is the next statement's answer), or a
/// read sent ahead (its rows are the answer of the same read, if that comes next).
struct Flight {
    /// The read's statement and values; `None` for a write.
    read: Option<String>,
    answer: InFlight,
}

/// What names a read sent ahead: its statement and values.
fn read_key(sql: &str, vals: &[Val<'_>]) -> String {
    format!("{sql}\u{0}{vals:?}")
}

/// Gathered rows that go ahead to PostgreSQL without waiting for the next statement: a
/// batch's rows are inserted while the writer applies the requests after it.
const SEND_AHEAD_ROWS: usize = 500;
/// The rows of one batch sent as one statement at most: a longer batch (a splice's
/// new history, a large import) is inserted piece by piece while the next piece is
/// gathered, rather than encoded and sent whole at the end.
pub(super) const PIECE_ROWS: usize = 16_384;

impl Pg {
    /// Connects to `url` on a runtime of the connection's own. Blocks: call it from a
    /// thread that is not running async code (a blocking task, the thread that will
    /// use the connection).
    pub(crate) fn connect(url: &str) -> Result<Self> {
        use sqlx::Connection as _;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| EngineError::internal(format!("cannot start a runtime: {e}")))?;
        let conn = rt.block_on(PgConnection::connect(url))?;
        Ok(Self {
            conn: RefCell::new(Some(conn)),
            in_flight: RefCell::new(None),
            read_early: RefCell::new(None),
            url: url.to_owned(),
            lost: Cell::new(false),
            rt,
            sql: RefCell::new(HashMap::new()),
            changes: Cell::new(0),
            session: RefCell::new(String::new()),
            pending: RefCell::new(None),
        })
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

impl Pg {
    /// Runs `f` on the connection once the gathered rows are sent.
    fn run<T>(
        &self,
        f: impl AsyncFnOnce(&mut PgConnection) -> std::result::Result<T, sqlx::Error>,
    ) -> Result<T> {
        self.send_pending()?;
        self.run_now(f)
    }

    /// Sends the gathered rows, if any.
    fn send_pending(&self) -> Result<()> {
        let pending = self.pending.borrow_mut().take();
        match pending {
            Some(rows) => rows.send(self),
            None => Ok(()),
        }
    }

    /// Gathers `rows` after those already gathered (sending those first when they are
    /// for another statement); sends them ahead once there are enough of them.
    fn gather(&self, rows: MultiRow) -> Result<()> {
        let mut pending = self.pending.borrow_mut();
        let earlier = match pending.as_mut() {
            Some(p) if p.head == rows.head && p.width == rows.width => match p.extend(rows) {
                Ok(()) => None,
                Err(other) => pending.replace(other),
            },
            _ => pending.replace(rows),
        };
        let ahead = pending.take_if(|p| p.rows() >= SEND_AHEAD_ROWS);
        drop(pending);
        if let Some(e) = earlier {
            e.send(self)?;
        }
        match ahead {
            Some(rows) => rows.send_ahead(self),
            None => Ok(()),
        }
    }

    /// Waits for the statement in flight, if any, and takes its connection back. A
    /// write's error is the answer of whatever statement comes next; a read's rows,
    /// or its error, are dropped (the statement that lands it is another one).
    fn land(&self) -> Result<()> {
        self.read_early.borrow_mut().take();
        let Some(flight) = self.in_flight.borrow_mut().take() else {
            return Ok(());
        };
        let (conn, out) = self.rt.block_on(flight.answer);
        *self.conn.borrow_mut() = Some(conn);
        match (self.noted(out), flight.read) {
            (Err(_), Some(_)) => Ok(()),
            (out, _) => out.map(drop),
        }
    }

    /// The answer of the read sent ahead as `key`, when that is what is in flight.
    fn landed_read(&self, key: &str) -> Option<Result<Vec<PgRow>>> {
        if let Some((_, rows)) = self.read_early.borrow_mut().take_if(|(k, _)| k == key) {
            return Some(Ok(rows));
        }
        let flight = self
            .in_flight
            .borrow_mut()
            .take_if(|f| f.read.as_deref() == Some(key))?;
        let (conn, out) = self.rt.block_on(flight.answer);
        *self.conn.borrow_mut() = Some(conn);
        Some(self.noted(out))
    }

    /// Sends `q` without waiting for its answer: it is in flight until the next
    /// statement lands it. `read` names a read, whose rows are kept.
    fn send_ahead(
        &self,
        read: Option<String>,
        q: sqlx::query::Query<'static, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> Result<()> {
        self.land()?;
        let Some(mut conn) = self.conn.borrow_mut().take() else {
            return Err(EngineError::internal("the connection is not home"));
        };
        let rows = read.is_some();
        let mut answer: InFlight = Box::pin(async move {
            let out = match rows {
                true => q.fetch_all(&mut conn).await,
                false => q.execute(&mut conn).await.map(|_| Vec::new()),
            };
            (conn, out)
        });
        // one poll writes the statement out; PostgreSQL runs it meanwhile
        let polled = self.rt.block_on(std::future::poll_fn(|cx| {
            Poll::Ready(answer.as_mut().poll(cx))
        }));
        match polled {
            Poll::Ready((conn, out)) => {
                *self.conn.borrow_mut() = Some(conn);
                match (self.noted(out), read) {
                    (Ok(answer), Some(key)) => {
                        *self.read_early.borrow_mut() = Some((key, answer));
                        Ok(())
                    }
                    // a read that failed at once is read again when it is asked for
                    (Err(_), Some(_)) => Ok(()),
                    (out, None) => out.map(drop),
                }
            }
            Poll::Pending => {
                *self.in_flight.borrow_mut() = Some(Flight { read, answer });
                Ok(())
            }
        }
    }

    /// `out`, noting a lost connection for [`Db::heal`].
    fn noted<T>(&self, out: std::result::Result<T, sqlx::Error>) -> Result<T> {
        if let Err(e) = &out
            && crate::error::connection_lost(e)
        {
            self.lost.set(true);
        }
        Ok(out?)
    }

    /// Runs `f` on the connection, once the statement in flight landed.
    fn run_now<T>(
        &self,
        f: impl AsyncFnOnce(&mut PgConnection) -> std::result::Result<T, sqlx::Error>,
    ) -> Result<T> {
        self.land()?;
        let mut conn = self.conn.borrow_mut();
        let conn = conn
            .as_mut()
            .ok_or_else(|| EngineError::internal("the write connection is not home"))?;
        let out = self.rt.block_on(f(conn));
        self.noted(out)
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
                let done = pg.run(async |c| q.execute(c).await)?;
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
                let row = pg.run(async |c| q.fetch_optional(c).await)?;
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
                // (gathered rows, which only the writer has, would go first)
                let early = match pg.pending.borrow().is_none() {
                    true => pg.landed_read(&read_key(sql, vals)),
                    false => None,
                };
                let rows = match early {
                    Some(rows) => rows?,
                    None => {
                        let q = Pg::query(pg.text(sql), vals);
                        pg.run(async |c| q.fetch_all(c).await)?
                    }
                };
                rows.iter().map(|r| f(&RowRef::Postgres(r))).collect()
            }
        }
    }

    /// Sends a read that is likely to be asked for next, so that PostgreSQL runs it
    /// while this thread works on what it read before: a [`Db::rows`] of the same
    /// statement and values takes its rows; any other statement drops them. Nothing on
    /// SQLite, which reads in process.
    pub(crate) fn read_ahead(&self, sql: &str, vals: &[Val<'_>]) -> Result<()> {
        match self {
            Db::Sqlite(_) => Ok(()),
            Db::Postgres(pg) => {
                pg.send_pending()?;
                pg.send_ahead(Some(read_key(sql, vals)), Pg::query(pg.text(sql), vals))
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
    /// On PostgreSQL the rows of a plain `INSERT ... VALUES (...)` are gathered, across
    /// batches, and sent as one insert before the next other statement (one
    /// round trip for many rows); other statements run one by one.
    pub(crate) fn batch<T>(
        &self,
        sql: &str,
        body: impl FnOnce(&mut Batch<'_>) -> Result<T>,
    ) -> Result<T> {
        let mut batch = match self {
            Db::Sqlite(conn) => Batch::Sqlite(conn.prepare_cached(sql)?),
            Db::Postgres(pg) => match MultiRow::of(sql) {
                Some(rows) => Batch::PostgresRows(pg, rows),
                None => Batch::Postgres(pg, pg.text(sql)),
            },
        };
        let out = body(&mut batch)?;
        if let Batch::PostgresRows(pg, rows) = batch {
            pg.gather(rows)?;
        }
        Ok(out)
    }

    /// Connects again when the connection was lost, within a few seconds; answers
    /// whether it did (the caller then rereads what it keeps of the database, since a
    /// commit whose answer was lost may have landed). SQLite's file never goes away.
    pub(crate) fn heal(&self) -> Result<bool> {
        let Db::Postgres(pg) = self else {
            return Ok(false);
        };
        if !pg.lost.get() {
            return Ok(false);
        }
        use sqlx::Connection as _;
        let connect = async {
            tokio::time::timeout(
                std::time::Duration::from_secs(2),
                PgConnection::connect(&pg.url),
            )
            .await
        };
        match pg.rt.block_on(connect) {
            Ok(Ok(mut conn)) => {
                let session = pg.session.borrow().clone();
                if !session.is_empty() {
                    pg.rt
                        .block_on(sqlx::raw_sql(sqlx::AssertSqlSafe(session)).execute(&mut conn))?;
                }
                // a statement in flight on the lost connection goes with it
                pg.in_flight.borrow_mut().take();
                *pg.conn.borrow_mut() = Some(conn);
                // rows gathered for the transaction the lost connection took with it
                pg.pending.borrow_mut().take();
                pg.lost.set(false);
                tracing::info!("connected to the database again");
                Ok(true)
            }
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(EngineError::new(
                crate::error::ErrorCode::Unavailable,
                "the database is unreachable; nothing was changed by this request, retry it",
            )),
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

    /// Runs statements without parameters, sent together (one round trip on
    /// PostgreSQL), and reads every row they answer with, in order, with `f`.
    pub(crate) fn control_rows<T>(
        &self,
        sql: &str,
        f: impl Fn(&RowRef<'_, '_>) -> Result<T>,
    ) -> Result<Vec<T>> {
        match self {
            Db::Sqlite(conn) => {
                conn.execute_batch(sql)?;
                Ok(Vec::new())
            }
            Db::Postgres(pg) => {
                let sql = sql.to_owned();
                let rows =
                    pg.run(async |c| sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).fetch_all(c).await)?;
                rows.iter().map(|r| f(&RowRef::Postgres(r))).collect()
            }
        }
    }

    /// Sets session settings (`SET ...` statements), on this connection and on any
    /// it connects again after losing it.
    pub(crate) fn set_session(&self, sql: &str) -> Result<()> {
        self.control(sql)?;
        if let Db::Postgres(pg) = self {
            let mut session = pg.session.borrow_mut();
            session.push_str(sql);
            session.push_str("; ");
        }
        Ok(())
    }

    /// Runs a statement without parameters (BEGIN, COMMIT, ROLLBACK).
    pub(crate) fn control(&self, sql: &str) -> Result<()> {
        match self {
            Db::Sqlite(conn) => Ok(conn.prepare_cached(sql)?.execute([]).map(drop)?),
            Db::Postgres(pg) => {
                if sql == "ROLLBACK" {
                    pg.pending.borrow_mut().take();
                    // whatever the rows sent ahead met, the transaction ends here
                    let _ = pg.land();
                }
                let sql = sql.to_owned();
                pg.run(async |c| sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(c).await)
                    .map(drop)
            }
        }
    }
}

/// A statement executed many times (see [`Db::batch`]).
pub(crate) enum Batch<'c> {
    Sqlite(rusqlite::CachedStatement<'c>),
    Postgres(&'c Pg, std::sync::Arc<str>),
    PostgresRows(&'c Pg, MultiRow),
}

impl Batch<'_> {
    /// Executes the statement with `vals`; answers the rows it changed (1 for a row
    /// gathered into one insert, sent before the next other statement).
    pub(crate) fn exec(&mut self, vals: &[Val<'_>]) -> Result<u64> {
        match self {
            Batch::Sqlite(stmt) => Ok(stmt.execute(rusqlite::params_from_iter(vals))? as u64),
            Batch::Postgres(pg, sql) => {
                let q = Pg::query(sql.clone(), vals);
                let done = pg.run(async |c| q.execute(c).await)?;
                pg.changes.set(pg.changes.get() + done.rows_affected());
                Ok(done.rows_affected())
            }
            Batch::PostgresRows(pg, rows) => {
                rows.push(vals)?;
                pg.changes.set(pg.changes.get() + 1);
                // a long batch goes out in pieces, each inserted while the next is
                // gathered
                if rows.rows() >= PIECE_ROWS {
                    let piece = std::mem::replace(rows, rows.empty_like());
                    pg.gather(piece)?;
                }
                Ok(1)
            }
        }
    }
}

/// The rows of an `INSERT INTO t (...) VALUES (?1, ..., ?N)` gathered for PostgreSQL,
/// column by column, and sent as one `INSERT INTO t (...) SELECT unnest($1::T[]), ...`:
/// one statement text whatever the number of rows, so PostgreSQL prepares it once, and
/// one parameter per column.
pub(crate) struct MultiRow {
    /// Up to and including `VALUES `: which statement the rows are for.
    head: String,
    /// The columns per row.
    width: usize,
    /// The values, one array per column, typed by the column's first value.
    columns: Vec<Column>,
}

/// One column of gathered rows.
#[derive(Debug)]
enum Column {
    Int(Vec<Option<i64>>),
    Bool(Vec<Option<bool>>),
    Text(Vec<Option<String>>),
    Blob(Vec<Option<Vec<u8>>>),
}

impl Column {
    fn of(v: Val<'_>) -> Self {
        match v {
            Val::Int(_) | Val::NullInt => Column::Int(Vec::new()),
            Val::Bool(_) => Column::Bool(Vec::new()),
            Val::Text(_) | Val::NullText => Column::Text(Vec::new()),
            Val::Blob(_) | Val::NullBlob => Column::Blob(Vec::new()),
        }
    }

    /// Whether `v` is of this column's type.
    fn accepts(&self, v: Val<'_>) -> bool {
        matches!(
            (self, v),
            (Column::Int(_), Val::Int(_) | Val::NullInt)
                | (Column::Bool(_), Val::Bool(_) | Val::NullInt)
                | (Column::Text(_), Val::Text(_) | Val::NullText)
                | (Column::Blob(_), Val::Blob(_) | Val::NullBlob)
        )
    }

    /// Appends `v`, which [`Column::accepts`]; a value of another type is not stored.
    fn push(&mut self, v: Val<'_>) {
        match (self, v) {
            (Column::Int(c), Val::Int(i)) => c.push(Some(i)),
            (Column::Bool(c), Val::Bool(b)) => c.push(Some(b)),
            (Column::Text(c), Val::Text(t)) => c.push(Some(t.to_owned())),
            (Column::Blob(c), Val::Blob(b)) => c.push(Some(b.to_vec())),
            (Column::Int(c), _) => c.push(None),
            (Column::Bool(c), _) => c.push(None),
            (Column::Text(c), _) => c.push(None),
            (Column::Blob(c), _) => c.push(None),
        }
    }

    fn sql_type(&self) -> &'static str {
        match self {
            Column::Int(_) => "bigint[]",
            Column::Bool(_) => "boolean[]",
            Column::Text(_) => "text[]",
            Column::Blob(_) => "bytea[]",
        }
    }

    /// Appends `later`'s values (of the same type, which the caller checked).
    fn extend(&mut self, later: &mut Column) {
        match (self, later) {
            (Column::Int(a), Column::Int(b)) => a.append(b),
            (Column::Bool(a), Column::Bool(b)) => a.append(b),
            (Column::Text(a), Column::Text(b)) => a.append(b),
            (Column::Blob(a), Column::Blob(b)) => a.append(b),
            _ => {}
        }
    }
}

impl MultiRow {
    /// The gatherer for `sql` when it is a plain insert of one row of `?1..?N` in
    /// order, else `None`.
    fn of(sql: &str) -> Option<Self> {
        let upper = sql.to_ascii_uppercase();
        if !upper.trim_start().starts_with("INSERT")
            || upper.contains("ON CONFLICT")
            || upper.contains("RETURNING")
        {
            return None;
        }
        let at = upper.find(" VALUES ")? + " VALUES ".len();
        let row = sql[at..].trim();
        let inner = row.strip_prefix('(')?.strip_suffix(')')?;
        let params: Vec<&str> = inner.split(',').map(str::trim).collect();
        let in_order = params
            .iter()
            .enumerate()
            .all(|(i, p)| p.strip_prefix('?') == Some(&(i + 1).to_string()));
        in_order.then(|| Self {
            head: sql[..at].to_owned(),
            width: params.len(),
            columns: Vec::new(),
        })
    }

    /// A gatherer for the same statement, with no rows yet.
    fn empty_like(&self) -> Self {
        Self {
            head: self.head.clone(),
            width: self.width,
            columns: Vec::new(),
        }
    }

    /// Appends one row; refused when a value's type is not its column's (a caller that
    /// gives one statement values of two types), so nothing is lost silently.
    fn push(&mut self, vals: &[Val<'_>]) -> Result<()> {
        if self.columns.is_empty() {
            self.columns = vals.iter().map(|v| Column::of(*v)).collect();
        }
        let fits = vals.len() == self.columns.len()
            && self.columns.iter().zip(vals).all(|(c, v)| c.accepts(*v));
        if !fits {
            return Err(EngineError::internal(format!(
                "a row for \"{}\" does not fit the columns of the rows before it",
                self.head
            )));
        }
        for (column, v) in self.columns.iter_mut().zip(vals) {
            column.push(*v);
        }
        Ok(())
    }

    /// Takes `later`'s rows after these when their columns are of the same types;
    /// gives `later` back otherwise.
    fn extend(&mut self, mut later: MultiRow) -> std::result::Result<(), MultiRow> {
        if self.columns.is_empty() {
            self.columns = later.columns;
            return Ok(());
        }
        let same = self.columns.len() == later.columns.len()
            && self
                .columns
                .iter()
                .zip(&later.columns)
                .all(|(a, b)| std::mem::discriminant(a) == std::mem::discriminant(b));
        if !same {
            return Err(later);
        }
        for (a, b) in self.columns.iter_mut().zip(&mut later.columns) {
            a.extend(b);
        }
        Ok(())
    }

    /// How many rows are gathered.
    fn rows(&self) -> usize {
        match self.columns.first() {
            Some(Column::Int(c)) => c.len(),
            Some(Column::Bool(c)) => c.len(),
            Some(Column::Text(c)) => c.len(),
            Some(Column::Blob(c)) => c.len(),
            None => 0,
        }
    }

    /// Sends the gathered rows as one statement, and waits for its answer.
    fn send(self, pg: &Pg) -> Result<()> {
        if self.columns.is_empty() {
            return Ok(());
        }
        let q = self.statement();
        // counted as changes when gathered
        pg.run_now(async |c| q.execute(c).await)?;
        Ok(())
    }

    /// Sends the gathered rows as one statement without waiting for its answer: it is
    /// in flight until the next statement lands it ([`Pg::land`]).
    fn send_ahead(self, pg: &Pg) -> Result<()> {
        if self.columns.is_empty() {
            return Ok(());
        }
        pg.send_ahead(None, self.statement())
    }

    /// The statement that inserts the gathered rows.
    fn statement(self) -> sqlx::query::Query<'static, sqlx::Postgres, sqlx::postgres::PgArguments> {
        let insert = self
            .head
            .trim_end()
            .strip_suffix("VALUES")
            .unwrap_or(&self.head);
        // one `unnest` per column in the select list streams the rows (a ProjectSet);
        // `FROM UNNEST(a, b, ...)` stores them all first, a third slower to insert
        let arrays: Vec<String> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| format!("unnest(${}::{})", i + 1, c.sql_type()))
            .collect();
        let sql = format!("{insert}SELECT {}", arrays.join(", "));
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for column in self.columns {
            q = match column {
                Column::Int(c) => q.bind(c),
                Column::Bool(c) => q.bind(c),
                Column::Text(c) => q.bind(c),
                Column::Blob(c) => q.bind(c),
            };
        }
        q
    }
}

#[cfg(test)]
mod tests {
    use super::dollar_placeholders;

    #[test]
    fn only_plain_inserts_of_numbered_rows_are_gathered() {
        let gathered = super::MultiRow::of("INSERT INTO t (a, b) VALUES (?1, ?2)").unwrap();
        assert_eq!(
            (gathered.head.as_str(), gathered.width),
            ("INSERT INTO t (a, b) VALUES ", 2)
        );
        for sql in [
            "INSERT INTO t (a, b) VALUES (?1, ?2) ON CONFLICT (a) DO UPDATE SET b = excluded.b",
            "INSERT INTO t (a, b) VALUES (?2, ?1)",
            "INSERT INTO t (a, b) VALUES (?1, 0)",
            "UPDATE t SET a = ?1 WHERE b = ?2",
        ] {
            assert!(super::MultiRow::of(sql).is_none(), "{sql}");
        }
    }

    #[test]
    fn placeholders_become_dollars_outside_quotes() {
        assert_eq!(
            dollar_placeholders("SELECT '?' FROM t WHERE a = ?1 AND b = ?12"),
            "SELECT '?' FROM t WHERE a = $1 AND b = $12"
        );
    }
}
