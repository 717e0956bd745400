//! `eddy migrate`: copies an embedded database (a data directory's `eddy.db`) into an
//! empty PostgreSQL database, every table and column with its ids, so that a server
//! started on PostgreSQL answers as the embedded one did.
//!
//! The copy holds the data directory's lock (no server writes meanwhile) and reads the
//! SQLite file read-only. Into the target it first applies eddy's PostgreSQL schema,
//! then copies each table in rowid order, in batches of one binary `COPY` each
//! (`copy_rows`). Each batch is one transaction that also records, in the target's
//! `eddy_migrate_progress` table, the last rowid copied; so a copy that is interrupted
//! (kill -9, a lost connection) is resumed by running it again, and no row is copied
//! twice. Once every table is copied, one transaction moves each identity past the
//! largest copied id, sets `event_positions` to the last copied position and drops the
//! progress table: from then on the target counts as not empty and is refused.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};
use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Connection as _, Row as _};
use tokio::sync::mpsc;

use super::copy_rows::{self, BatchLimits, Column, Kind, TablePlan, quoted};
use super::{DB_FILE, lock_data_dir, migrations};

/// Every table of eddy's schema that holds data, in the order they are copied (a table
/// after those its foreign keys point to). Both databases must have exactly these.
const TABLES: [&str; 11] = [
    "instance",
    "accounts",
    "api_keys",
    "streams",
    "substreams",
    "events",
    "reducers",
    "reducer_states",
    "pipes",
    "webhooks",
    "event_types",
];

/// The PostgreSQL tables that are not copied: the position counter (set at the end)
/// and the migrations' record (written by the migrator).
const TARGET_ONLY: [&str; 2] = ["event_positions", "_sqlx_migrations"];

/// The target's record of an unfinished copy.
const PROGRESS: &str = "eddy_migrate_progress";

/// Rows per batch (one transaction on PostgreSQL) and the bytes at which a batch of
/// large events is sent earlier.
const LIMITS: BatchLimits = BatchLimits {
    rows: 5_000,
    bytes: 8 << 20,
};

/// The session advisory lock that keeps two copies out of one target ("eddymigr").
const ADVISORY_LOCK: i64 = 0x6564_6479_6d69_6772;

/// Why a copy did not happen or stopped; each message is one sentence.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("there is no eddy database in {0} (no file {DB_FILE})")]
    NoSource(PathBuf),
    #[error("{0}")]
    Locked(String),
    #[error("the embedded database {0}")]
    SourceVersion(String),
    #[error("cannot read the embedded database: {0}")]
    Source(String),
    #[error("cannot connect to the PostgreSQL database: {0}")]
    Connect(sqlx::Error),
    #[error(
        "the target database is not empty ({0}); eddy migrate copies into a new, empty database only"
    )]
    TargetNotEmpty(String),
    #[error("another eddy migrate is copying into the target database")]
    TargetBusy,
    #[error(
        "the embedded database changed since the interrupted copy began ({0}); drop and create \
         the target database again, then run eddy migrate again"
    )]
    SourceChanged(String),
    #[error("the two schemas do not match: {0}")]
    Schema(String),
    #[error("PostgreSQL failed while {doing}: {source}")]
    Target {
        doing: String,
        #[source]
        source: sqlx::Error,
    },
}

/// What the copy reports as it goes.
#[derive(Debug, Clone, Copy)]
pub enum CopyEvent<'a> {
    /// The copy begins, or resumes one an earlier run left unfinished.
    Started { resumed: bool },
    /// Rows of a table are committed on PostgreSQL (`done` once it is whole).
    Table(&'a TableProgress),
}

/// How far one table's copy is.
#[derive(Debug, Clone)]
pub struct TableProgress {
    pub table: &'static str,
    /// Rows on PostgreSQL now, out of `total` in the embedded database.
    pub copied: u64,
    pub total: u64,
    /// Rows copied by this run (the rest by an interrupted one), in `elapsed`.
    pub this_run: u64,
    pub elapsed: Duration,
    pub done: bool,
}

impl TableProgress {
    /// Rows a second copied by this run.
    pub fn rate(&self) -> f64 {
        self.this_run as f64 / self.elapsed.as_secs_f64().max(1e-3)
    }
}

/// What a finished copy did.
#[derive(Debug, Clone)]
pub struct CopySummary {
    pub resumed: bool,
    /// Every table with its row count.
    pub tables: Vec<(&'static str, u64)>,
    /// Rows copied by this run, and how long it took.
    pub this_run: u64,
    pub elapsed: Duration,
}

/// Copies the embedded database in `data_dir` into the PostgreSQL database at `url`,
/// reporting to `report`. Refuses a target that is not empty, unless it holds a copy
/// an earlier run left unfinished, which it resumes.
pub async fn copy_to_postgres(
    data_dir: &Path,
    url: &str,
    report: &mut dyn FnMut(CopyEvent<'_>),
) -> Result<CopySummary, CopyError> {
    let started = Instant::now();
    let db_path = data_dir.join(DB_FILE);
    if !db_path.is_file() {
        return Err(CopyError::NoSource(data_dir.to_owned()));
    }
    // held to the end: no server writes to the source meanwhile
    let _lock = lock_data_dir(data_dir).map_err(|e| CopyError::Locked(e.message))?;
    let mut source = Source::open(&db_path).await?;
    let mut pg = PgConnection::connect(url)
        .await
        .map_err(CopyError::Connect)?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(ADVISORY_LOCK)
        .fetch_one(&mut pg)
        .await
        .map_err(target("taking the copy's lock"))?;
    if !locked {
        return Err(CopyError::TargetBusy);
    }

    let resumed = relation_exists(&mut pg, PROGRESS).await?;
    if !resumed {
        check_empty(&mut pg).await?;
        migrations::postgres_migrator()
            .run(&mut pg)
            .await
            .map_err(|e| CopyError::Schema(format!("applying eddy's schema failed: {e}")))?;
    }
    let plans = plan_tables(&mut source, &mut pg).await?;
    let counts = source.run(source_counts).await?;
    let mut progress = if resumed {
        load_progress(&mut pg, &counts).await?
    } else {
        start_progress(&mut pg, &counts).await?
    };
    report(CopyEvent::Started { resumed });

    let mut this_run = 0;
    for plan in plans {
        let row = progress
            .remove(plan.table)
            .ok_or_else(|| CopyError::Schema(format!("no progress kept for {}", plan.table)))?;
        this_run += copy_table(&mut source, &mut pg, plan, row, report).await?;
    }
    finish(&mut pg).await?;
    // statistics for the first queries of the server that starts on it
    sqlx::query("ANALYZE")
        .execute(&mut pg)
        .await
        .map_err(target("analyzing the copied tables"))?;
    let _ = pg.close().await;
    Ok(CopySummary {
        resumed,
        tables: TABLES.iter().map(|t| (*t, counts[t].rows)).collect(),
        this_run,
        elapsed: started.elapsed(),
    })
}

/// Maps a PostgreSQL error to [`CopyError::Target`], saying what was being done.
fn target(doing: &str) -> impl FnOnce(sqlx::Error) -> CopyError + '_ {
    move |source| CopyError::Target {
        doing: doing.to_owned(),
        source,
    }
}

/// The embedded database, opened read-only; its reads run on blocking threads.
struct Source {
    conn: Option<Connection>,
}

impl Source {
    async fn open(path: &Path) -> Result<Self, CopyError> {
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
    async fn run<T: Send + 'static>(
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
struct Count {
    rows: u64,
    max_rowid: i64,
    digest: i64,
}

/// The table whose rows never change once written, and so need no digest: appends
/// show in its count.
const APPEND_ONLY: &str = "events";

fn source_counts(conn: &Connection) -> Result<BTreeMap<&'static str, Count>, CopyError> {
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

async fn relation_exists(pg: &mut PgConnection, name: &str) -> Result<bool, CopyError> {
    sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(quoted(name))
        .fetch_one(pg)
        .await
        .map_err(target("looking at the target database"))
}

/// Refuses a target that holds anything but eddy's empty schema (which an earlier run
/// that stopped before its first row may have left): tables or views of its own in
/// any schema, or eddy tables with rows.
async fn check_empty(pg: &mut PgConnection) -> Result<(), CopyError> {
    let relations: Vec<(String, String, bool)> = sqlx::query_as(
        "SELECT n.nspname::TEXT, c.relname::TEXT, n.nspname = current_schema() \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') \
           AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
           AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%' \
         ORDER BY 1, 2",
    )
    .fetch_all(&mut *pg)
    .await
    .map_err(target("looking at the target database"))?;
    let ours = |name: &str| TABLES.contains(&name) || TARGET_ONLY.contains(&name);
    if let Some((schema, name, _)) = relations.iter().find(|(_, n, home)| !(*home && ours(n))) {
        return Err(CopyError::TargetNotEmpty(format!(
            "it has a table {schema}.{name}"
        )));
    }
    // the event log first: the one a reader most likely recognises
    let present: BTreeSet<&str> = relations.iter().map(|(_, n, _)| n.as_str()).collect();
    let order = ["events"].iter().chain(&TABLES).chain(&["event_positions"]);
    for name in order.filter(|n| present.contains(**n)) {
        let sql = if *name == "event_positions" {
            "SELECT EXISTS (SELECT 1 FROM event_positions WHERE last <> 0)".to_owned()
        } else {
            format!("SELECT EXISTS (SELECT 1 FROM {})", quoted(name))
        };
        let has_rows: bool = sqlx::query_scalar(AssertSqlSafe(sql))
            .fetch_one(&mut *pg)
            .await
            .map_err(target("looking at the target database"))?;
        if has_rows {
            return Err(CopyError::TargetNotEmpty(format!(
                "it already holds eddy data: its table {name} has rows"
            )));
        }
    }
    Ok(())
}

/// Each table's columns, with the kind its PostgreSQL type asks for. Both databases
/// must have the tables of [`TABLES`] (and PostgreSQL those of [`TARGET_ONLY`]) with
/// the same columns: a schema change that one backend's migrations forgot stops the
/// copy here rather than leaving data behind.
async fn plan_tables(
    source: &mut Source,
    pg: &mut PgConnection,
) -> Result<Vec<TablePlan>, CopyError> {
    let lite = source.run(sqlite_columns).await?;
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT table_name::TEXT, column_name::TEXT, data_type::TEXT \
         FROM information_schema.columns WHERE table_schema = current_schema() \
         ORDER BY table_name, ordinal_position",
    )
    .fetch_all(&mut *pg)
    .await
    .map_err(target("reading the target's schema"))?;
    let mut pg_tables: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for (table, column, data_type) in rows {
        pg_tables
            .entry(table)
            .or_default()
            .push((column, data_type));
    }
    let expected: BTreeSet<&str> = TABLES.iter().chain(&TARGET_ONLY).copied().collect();
    let found: BTreeSet<&str> = pg_tables
        .keys()
        .map(String::as_str)
        .filter(|t| *t != PROGRESS)
        .collect();
    if found != expected {
        return Err(CopyError::Schema(format!(
            "PostgreSQL has tables {found:?}, where eddy's schema has {expected:?}"
        )));
    }
    let lite_tables: BTreeSet<&str> = lite.keys().map(String::as_str).collect();
    if lite_tables != TABLES.into() {
        return Err(CopyError::Schema(format!(
            "the embedded database has tables {lite_tables:?}, where eddy copies {TABLES:?}"
        )));
    }
    TABLES
        .iter()
        .map(|table| {
            let mut columns = Vec::new();
            for (name, data_type) in &pg_tables[*table] {
                let kind = Kind::of(data_type).ok_or_else(|| {
                    CopyError::Schema(format!(
                        "column {table}.{name} has type {data_type}, which eddy does not copy"
                    ))
                })?;
                columns.push(Column {
                    name: name.clone(),
                    kind,
                });
            }
            let on_pg: BTreeSet<&str> = columns.iter().map(|c| c.name.as_str()).collect();
            let on_lite: BTreeSet<&str> = lite[*table].iter().map(String::as_str).collect();
            if on_pg != on_lite {
                return Err(CopyError::Schema(format!(
                    "table {table} has columns {on_lite:?} in the embedded database and \
                     {on_pg:?} on PostgreSQL"
                )));
            }
            Ok(TablePlan { table, columns })
        })
        .collect()
}

/// The embedded database's tables (but SQLite's and sqlx's own) with their columns.
fn sqlite_columns(conn: &Connection) -> Result<BTreeMap<String, Vec<String>>, CopyError> {
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

/// One table's line of the progress table.
#[derive(Debug, Clone, Copy)]
struct ProgressRow {
    total: u64,
    copied_through: i64,
    copied: u64,
    done: bool,
}

/// Creates the progress table with a line per table, each at its start.
async fn start_progress(
    pg: &mut PgConnection,
    counts: &BTreeMap<&'static str, Count>,
) -> Result<BTreeMap<&'static str, ProgressRow>, CopyError> {
    let doing = "creating the progress table";
    let mut tx = pg.begin().await.map_err(target(doing))?;
    sqlx::query(AssertSqlSafe(format!(
        // the source's row count, largest rowid and digest, to check it is unchanged
        // on resume; the rowid up to which (and the rows that) this table is copied
        "CREATE TABLE {PROGRESS} (\
             table_name       TEXT    PRIMARY KEY, \
             source_rows      BIGINT  NOT NULL, \
             source_max_rowid BIGINT  NOT NULL, \
             source_digest    BIGINT  NOT NULL, \
             copied_through   BIGINT  NOT NULL, \
             copied_rows      BIGINT  NOT NULL, \
             done             BOOLEAN NOT NULL)"
    )))
    .execute(&mut *tx)
    .await
    .map_err(target(doing))?;
    let mut progress = BTreeMap::new();
    for (table, count) in counts {
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {PROGRESS} VALUES ($1, $2, $3, $4, 0, 0, FALSE)"
        )))
        .bind(*table)
        .bind(count.rows as i64)
        .bind(count.max_rowid)
        .bind(count.digest)
        .execute(&mut *tx)
        .await
        .map_err(target(doing))?;
        progress.insert(
            *table,
            ProgressRow {
                total: count.rows,
                copied_through: 0,
                copied: 0,
                done: false,
            },
        );
    }
    tx.commit().await.map_err(target(doing))?;
    Ok(progress)
}

/// Reads the progress an interrupted copy left, after checking that the source still
/// is the database it was copying.
async fn load_progress(
    pg: &mut PgConnection,
    counts: &BTreeMap<&'static str, Count>,
) -> Result<BTreeMap<&'static str, ProgressRow>, CopyError> {
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT table_name, source_rows, source_max_rowid, source_digest, copied_through, \
         copied_rows, done FROM {PROGRESS}"
    )))
    .fetch_all(&mut *pg)
    .await
    .map_err(target("reading the progress table"))?;
    let mut recorded = BTreeMap::new();
    let mut progress = BTreeMap::new();
    for row in rows {
        let name: String = row.get(0);
        let Some(table) = TABLES.iter().find(|t| **t == name) else {
            return Err(CopyError::Schema(format!(
                "the progress table names a table {name} that eddy does not copy"
            )));
        };
        let count = Count {
            rows: row.get::<i64, _>(1) as u64,
            max_rowid: row.get(2),
            digest: row.get(3),
        };
        recorded.insert(*table, count);
        progress.insert(
            *table,
            ProgressRow {
                total: count.rows,
                copied_through: row.get(4),
                copied: row.get::<i64, _>(5) as u64,
                done: row.get(6),
            },
        );
    }
    // rows added first: the likeliest change, and the clearest to name
    for (table, now) in counts {
        let then = recorded.get(table).ok_or_else(|| {
            CopyError::Schema(format!("the progress table has no line for {table}"))
        })?;
        if then.rows != now.rows {
            return Err(CopyError::SourceChanged(format!(
                "table {table} had {} rows and now has {}",
                then.rows, now.rows
            )));
        }
    }
    if let Some((table, _)) = counts.iter().find(|(t, now)| recorded[*t] != **now) {
        return Err(CopyError::SourceChanged(format!(
            "the rows of table {table} changed"
        )));
    }
    Ok(progress)
}

/// Copies what is left of one table, a batch per transaction; answers the rows this
/// run copied.
async fn copy_table(
    source: &mut Source,
    pg: &mut PgConnection,
    plan: TablePlan,
    start: ProgressRow,
    report: &mut dyn FnMut(CopyEvent<'_>),
) -> Result<u64, CopyError> {
    let began = Instant::now();
    let mut progress = TableProgress {
        table: plan.table,
        copied: start.copied,
        total: start.total,
        this_run: 0,
        elapsed: Duration::ZERO,
        done: start.done,
    };
    if start.done {
        report(CopyEvent::Table(&progress));
        return Ok(0);
    }
    let statement = plan.copy_statement();
    let table = plan.table;
    // two batches in flight: the next is read while PostgreSQL stores this one
    let (tx, rx) = mpsc::channel(2);
    let reader = source
        .run(move |conn| copy_rows::read_table(conn, &plan, start.copied_through, LIMITS, &tx));
    let writer = async {
        // owned here: an error drops it, which stops the reader
        let mut rx = rx;
        let doing = format!("copying table {table}");
        while let Some(batch) = rx.recv().await {
            let mut t = pg.begin().await.map_err(target(&doing))?;
            let mut copy = t.copy_in_raw(&statement).await.map_err(target(&doing))?;
            copy.send(batch.data).await.map_err(target(&doing))?;
            let stored = copy.finish().await.map_err(target(&doing))?;
            if stored != batch.rows {
                return Err(CopyError::Schema(format!(
                    "PostgreSQL stored {stored} rows of a batch of {} in {table}",
                    batch.rows
                )));
            }
            sqlx::query(AssertSqlSafe(format!(
                "UPDATE {PROGRESS} SET copied_through = $1, copied_rows = copied_rows + $2 \
                 WHERE table_name = $3"
            )))
            .bind(batch.last_rowid)
            .bind(batch.rows as i64)
            .bind(table)
            .execute(&mut *t)
            .await
            .map_err(target(&doing))?;
            t.commit().await.map_err(target(&doing))?;
            progress.copied += batch.rows;
            progress.this_run += batch.rows;
            progress.elapsed = began.elapsed();
            report(CopyEvent::Table(&progress));
        }
        Ok(())
    };
    // the writer's error first: the reader stops when the writer drops its receiver
    let (read, written) = tokio::join!(reader, writer);
    written?;
    read?;
    sqlx::query(AssertSqlSafe(format!(
        "UPDATE {PROGRESS} SET done = TRUE WHERE table_name = $1"
    )))
    .bind(table)
    .execute(&mut *pg)
    .await
    .map_err(target("recording the copy's progress"))?;
    progress.done = true;
    progress.elapsed = began.elapsed();
    report(CopyEvent::Table(&progress));
    Ok(progress.this_run)
}

/// Checks that every row arrived, moves each identity past the largest copied id and
/// the position counter to the last copied position, and drops the progress table, in
/// one transaction: the copy is complete, and a later run finds the target not empty.
async fn finish(pg: &mut PgConnection) -> Result<(), CopyError> {
    let doing = "completing the copy";
    let mut tx = pg.begin().await.map_err(target(doing))?;
    let short: Vec<(String, i64, i64)> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT table_name, copied_rows, source_rows FROM {PROGRESS} \
         WHERE NOT done OR copied_rows <> source_rows ORDER BY table_name"
    )))
    .fetch_all(&mut *tx)
    .await
    .map_err(target(doing))?;
    if let Some((table, copied, total)) = short.first() {
        return Err(CopyError::Schema(format!(
            "table {table} has {copied} of its {total} rows on PostgreSQL after the copy"
        )));
    }
    let identities: Vec<(String, String)> = sqlx::query_as(
        "SELECT table_name::TEXT, column_name::TEXT FROM information_schema.columns \
         WHERE table_schema = current_schema() AND is_identity = 'YES' ORDER BY 1",
    )
    .fetch_all(&mut *tx)
    .await
    .map_err(target(doing))?;
    for (table, column) in identities {
        // setval(.., NULL) of an empty table leaves the identity at its start
        sqlx::query(AssertSqlSafe(format!(
            "SELECT setval(pg_get_serial_sequence($1, $2), (SELECT max({}) FROM {}))",
            quoted(&column),
            quoted(&table)
        )))
        .bind(quoted(&table))
        .bind(&column)
        .execute(&mut *tx)
        .await
        .map_err(target(doing))?;
    }
    sqlx::query("UPDATE event_positions SET last = (SELECT COALESCE(max(pos), 0) FROM events)")
        .execute(&mut *tx)
        .await
        .map_err(target(doing))?;
    sqlx::query(AssertSqlSafe(format!("DROP TABLE {PROGRESS}")))
        .execute(&mut *tx)
        .await
        .map_err(target(doing))?;
    tx.commit().await.map_err(target(doing))
}
