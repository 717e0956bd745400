//! How the read modules (`read`, `*_reads`) talk to either backend: SQL written once
//! with `$N` placeholders (SQLite takes them as PostgreSQL does), arguments as owned
//! values, and rows read column by column whichever database answered.

use sqlx::Row as _;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;

use super::{Pool, Reads};
use crate::error::Result;

/// One argument of a read.
#[derive(Debug, Clone)]
pub(crate) enum Arg {
    Int(i64),
    Text(String),
}

impl From<i64> for Arg {
    fn from(v: i64) -> Self {
        Arg::Int(v)
    }
}

impl From<crate::order::Position> for Arg {
    fn from(p: crate::order::Position) -> Self {
        Arg::Int(p.get())
    }
}

impl From<crate::order::Index> for Arg {
    fn from(i: crate::order::Index) -> Self {
        Arg::Int(i.sql())
    }
}

impl From<&str> for Arg {
    fn from(v: &str) -> Self {
        Arg::Text(v.to_owned())
    }
}

impl From<&String> for Arg {
    fn from(v: &String) -> Self {
        Arg::Text(v.clone())
    }
}

impl From<String> for Arg {
    fn from(v: String) -> Self {
        Arg::Text(v)
    }
}

/// The arguments of a read: `args![a, b]` is `vec![Arg::from(a), Arg::from(b)]`.
macro_rules! args {
    ($($v:expr),* $(,)?) => {
        vec![$($crate::store::query::Arg::from($v)),*]
    };
}
pub(crate) use args;

/// A statement built piece by piece, each bound value numbered as it is pushed.
pub(crate) struct Sql {
    text: String,
    args: Vec<Arg>,
}

impl Sql {
    pub(crate) fn new(text: &str) -> Self {
        Self {
            text: text.to_owned(),
            args: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    /// Appends a placeholder for `v`.
    pub(crate) fn bind(&mut self, v: impl Into<Arg>) -> &mut Self {
        self.args.push(v.into());
        self.text.push('$');
        self.text.push_str(&self.args.len().to_string());
        self
    }

    /// Appends `(a, b, ...)`, a placeholder for each value.
    pub(crate) fn bind_list<A: Into<Arg>>(&mut self, values: impl IntoIterator<Item = A>) {
        self.text.push('(');
        for (i, v) in values.into_iter().enumerate() {
            if i > 0 {
                self.text.push_str(", ");
            }
            self.bind(v);
        }
        self.text.push(')');
    }
}

/// One row of a read.
pub(crate) enum ReadRow {
    Sqlite(SqliteRow),
    Postgres(PgRow),
}

/// A column reader: a column of another type than asked is a storage error, not a
/// panic.
macro_rules! column {
    ($name:ident, $ty:ty) => {
        pub(crate) fn $name(&self, i: usize) -> Result<$ty> {
            Ok(match self {
                ReadRow::Sqlite(r) => r.try_get(i)?,
                ReadRow::Postgres(r) => r.try_get(i)?,
            })
        }
    };
}

impl ReadRow {
    column!(int, i64);
    column!(opt_int, Option<i64>);
    column!(text, String);
    column!(opt_text, Option<String>);
    column!(blob, Vec<u8>);
    column!(flag, bool);

    pub(crate) fn position(&self, i: usize) -> Result<crate::order::Position> {
        self.int(i).map(crate::order::Position)
    }

    pub(crate) fn index(&self, i: usize) -> Result<crate::order::Index> {
        self.int(i).map(|i| crate::order::Index(i as u64))
    }
}

impl Reads {
    /// Every row `sql` answers.
    pub(crate) async fn all(&self, sql: &str, args: Vec<Arg>) -> Result<Vec<ReadRow>> {
        self.all_of(Sql {
            text: sql.to_owned(),
            args,
        })
        .await
    }

    /// The first row `sql` answers, if any.
    pub(crate) async fn optional(&self, sql: &str, args: Vec<Arg>) -> Result<Option<ReadRow>> {
        match &self.pool {
            Pool::Sqlite(pool) => {
                let q = sqlite_query(sql, args);
                Ok(q.fetch_optional(pool).await?.map(ReadRow::Sqlite))
            }
            Pool::Postgres(pool) => {
                let q = postgres_query(sql, args);
                Ok(q.fetch_optional(pool).await?.map(ReadRow::Postgres))
            }
        }
    }

    /// The one row `sql` answers (an aggregate, say).
    pub(crate) async fn one(&self, sql: &str, args: Vec<Arg>) -> Result<ReadRow> {
        self.optional(sql, args).await?.ok_or_else(|| {
            crate::error::EngineError::internal("a query that answers one row answered none")
        })
    }

    /// Every row of a built statement.
    pub(crate) async fn all_of(&self, sql: Sql) -> Result<Vec<ReadRow>> {
        Ok(match &self.pool {
            Pool::Sqlite(pool) => sqlite_query(&sql.text, sql.args)
                .fetch_all(pool)
                .await?
                .into_iter()
                .map(ReadRow::Sqlite)
                .collect(),
            Pool::Postgres(pool) => postgres_query(&sql.text, sql.args)
                .fetch_all(pool)
                .await?
                .into_iter()
                .map(ReadRow::Postgres)
                .collect(),
        })
    }

    /// Runs a statement that changes rows (the repairs at start); answers how many.
    pub(crate) async fn execute(&self, sql: &str, args: Vec<Arg>) -> Result<u64> {
        Ok(match &self.pool {
            Pool::Sqlite(pool) => sqlite_query(sql, args).execute(pool).await?.rows_affected(),
            Pool::Postgres(pool) => postgres_query(sql, args)
                .execute(pool)
                .await?
                .rows_affected(),
        })
    }
}

fn sqlite_query(
    sql: &str,
    args: Vec<Arg>,
) -> sqlx::query::Query<'static, sqlx::Sqlite, sqlx::sqlite::SqliteArguments> {
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()));
    for a in args {
        q = match a {
            Arg::Int(i) => q.bind(i),
            Arg::Text(t) => q.bind(t),
        };
    }
    q
}

fn postgres_query(
    sql: &str,
    args: Vec<Arg>,
) -> sqlx::query::Query<'static, sqlx::Postgres, sqlx::postgres::PgArguments> {
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()));
    for a in args {
        q = match a {
            Arg::Int(i) => q.bind(i),
            Arg::Text(t) => q.bind(t),
        };
    }
    q
}
