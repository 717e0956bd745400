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
//!
//! This module runs the copy; `copy_source` is the SQLite side (version check, counts
//! and digests), `copy_target` the PostgreSQL side (the emptiness check, the columns,
//! the progress table, the completing transaction) and `copy_rows` the rows between.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Connection as _};
use tokio::sync::mpsc;

use super::copy_rows::{self, BatchLimits, TablePlan};
use super::copy_source::{Source, source_counts};
use super::copy_target::{
    ProgressRow, check_empty, finish, load_progress, plan_tables, relation_exists, start_progress,
};
use super::{DB_FILE, lock_data_dir, migrations};

/// Every table of eddy's schema that holds data, in the order they are copied (a table
/// after those its foreign keys point to). Both databases must have exactly these.
pub(super) const TABLES: [&str; 13] = [
    "instance",
    "accounts",
    "api_keys",
    "streams",
    "substreams",
    "events",
    "reducers",
    "reducer_states",
    "reducer_snapshots",
    "pipes",
    "webhooks",
    "event_types",
    "splices",
];

/// The PostgreSQL tables that are not copied: the position counter (set at the end),
/// the migrations' record (written by the migrator), and the live nodes and their
/// leases (made by the nodes).
pub(super) const TARGET_ONLY: [&str; 5] = [
    "event_positions",
    "_sqlx_migrations",
    "eddy_nodes",
    "eddy_leases",
    "eddy_uploads",
];

/// The target's record of an unfinished copy.
pub(super) const PROGRESS: &str = "eddy_migrate_progress";

/// Rows per batch (one transaction on PostgreSQL) and the bytes at which a batch of
/// large events is sent earlier.
const LIMITS: BatchLimits = BatchLimits {
    rows: 5_000,
    bytes: 8 << 20,
};

/// How long a copy waits for another one's lock on the target before it gives up.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

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
    // a copy killed a moment ago holds the lock until PostgreSQL notices its session
    // ended: wait a little for it rather than refuse a re-run at once
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(ADVISORY_LOCK)
            .fetch_one(&mut pg)
            .await
            .map_err(target("taking the copy's lock"))?;
        if locked {
            break;
        }
        if std::time::Instant::now() >= deadline {
            return Err(CopyError::TargetBusy);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
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
pub(super) fn target(doing: &str) -> impl FnOnce(sqlx::Error) -> CopyError + '_ {
    move |source| CopyError::Target {
        doing: doing.to_owned(),
        source,
    }
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
