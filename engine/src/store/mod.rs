//! Storage: one SQLite file in WAL mode. sqlx runs the migrations and serves reads from
//! a pool; every write goes through the single group-commit writer (`writer`).

pub mod access_reads;
pub mod access_writes;
mod account_events;
mod apply;
#[cfg(test)]
mod conformance_tests;
pub mod copy;
mod copy_rows;
mod copy_source;
mod copy_target;
#[cfg(test)]
mod copy_tests;
pub(crate) mod db;
#[cfg(test)]
mod db_tests;
mod event_ids;
mod flush;
pub(crate) mod fold_source;
pub mod migrations;
pub(crate) mod notice;
pub(crate) mod pipe_reads;
pub(crate) mod pipe_writes;
pub(crate) mod query;
pub mod read;
pub(crate) mod reducer_reads;
pub(crate) mod reducer_writes;
mod repair;
pub(crate) mod rules;
#[cfg(test)]
mod test_backends;
pub(crate) mod webhook_reads;
pub(crate) mod webhook_writes;
pub mod writer;
#[cfg(test)]
mod writer_tests;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use tokio::sync::broadcast;

use crate::error::{EngineError, Result};
use crate::json::JsonLimits;
use crate::metrics::Metrics;
pub use apply::{AppendRequest, Appended, AppendedEvent, SettingsRequest};
pub use notice::{Committed, LiveEvent, SharedEvent};

/// The database file inside the data directory.
pub const DB_FILE: &str = "eddy.db";

/// The page size of a new database (an existing one keeps its own): a commit writes
/// each page it touched whole into the WAL, so smaller pages write about a fifth fewer
/// bytes per single-event append (docs/internals/decisions/0004-2-kib-pages.md).
pub(crate) const PAGE_SIZE: u32 = 2048;

/// The file a running server holds an exclusive lock on, so that a second server on
/// the same data directory refuses to start instead of writing beside the first.
pub const LOCK_FILE: &str = "eddy.lock";

/// The read side of the store, cheap to clone: every read in `read`, `access_reads`,
/// `reducer_reads` and the other `*_reads` modules takes one. Nothing outside
/// `store` sees the connections behind it.
#[derive(Clone)]
pub struct Reads {
    pool: Pool,
}

#[cfg(test)]
impl Reads {
    /// The SQLite pool, for tests that look at the embedded database itself.
    pub(crate) fn sqlite_pool(&self) -> SqlitePool {
        match &self.pool {
            Pool::Sqlite(pool) => pool.clone(),
            Pool::Postgres(_) => panic!("not an embedded database"),
        }
    }
}

/// The connections reads go through.
#[derive(Clone)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Where a server keeps everything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    /// The embedded SQLite database in this data directory.
    Embedded(PathBuf),
    /// A PostgreSQL database, by URL.
    Postgres(String),
}

impl std::fmt::Display for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Storage::Embedded(dir) => write!(f, "{}", dir.join(DB_FILE).display()),
            Storage::Postgres(url) => write!(f, "{}", redacted(url)),
        }
    }
}

/// `url` without its password, for logs.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// The open store: the reads, the writer and the commit announcements.
pub struct Store {
    pub(crate) reads: Reads,
    pub(crate) writer: writer::WriterHandle,
    writer_thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    notices: broadcast::Sender<Arc<Committed>>,
    last_position: Arc<AtomicI64>,
    storage: Storage,
    /// What keeps a second server off the same storage; released at shutdown (or
    /// when the process ends).
    lock: std::sync::Mutex<Option<Guard>>,
}

impl Store {
    /// Opens (creating when missing) the store in `dir`, runs the migrations and the
    /// repairs (`repair`) and starts the writer.
    pub async fn open(dir: &Path, metrics: Arc<Metrics>, json: JsonLimits) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| {
            EngineError::internal(format!(
                "cannot create data directory {}: {e}",
                dir.display()
            ))
        })?;
        let lock = lock_data_dir(dir)?;
        let path = dir.join(DB_FILE);
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
            .map_err(|e| EngineError::internal(format!("bad database path: {e}")))?
            .create_if_missing(true)
            .page_size(PAGE_SIZE)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(std::time::Duration::from_secs(5));
        {
            let migrator = SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(opts.clone())
                .await?;
            migrations::migrator()
                .run(&migrator)
                .await
                .map_err(|e| EngineError::internal(format!("migrations failed: {e}")))?;
            repair::run(&Reads {
                pool: Pool::Sqlite(migrator.clone()),
            })
            .await?;
            migrator.close().await;
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .min_connections(1)
            .connect_with(opts.read_only(true))
            .await?;
        // live consumers drain it at once (and catch up from storage when they cannot):
        // a small capacity bounds the memory the kept notices hold
        let (notices, _) = broadcast::channel(256);
        let last_position = Arc::new(AtomicI64::new(0));
        let (writer, thread) =
            writer::spawn(&path, notices.clone(), last_position.clone(), metrics, json)?;
        Ok(Self {
            reads: Reads {
                pool: Pool::Sqlite(pool),
            },
            writer,
            writer_thread: std::sync::Mutex::new(Some(thread)),
            notices,
            last_position,
            storage: Storage::Embedded(dir.to_owned()),
            lock: std::sync::Mutex::new(Some(Guard::File(lock))),
        })
    }

    /// Opens the store in `storage`.
    pub async fn open_storage(
        storage: &Storage,
        metrics: Arc<Metrics>,
        json: JsonLimits,
    ) -> Result<Self> {
        match storage {
            Storage::Embedded(dir) => Self::open(dir, metrics, json).await,
            Storage::Postgres(url) => Self::open_postgres(url, metrics, json).await,
        }
    }

    /// Opens the store in the PostgreSQL database at `url`: runs its migrations and the
    /// repairs, and starts the writer. One server per database (several nodes are the
    /// next issue's work).
    pub async fn open_postgres(url: &str, metrics: Arc<Metrics>, json: JsonLimits) -> Result<Self> {
        let unreachable = |e: sqlx::Error| {
            EngineError::internal(format!(
                "cannot connect to the PostgreSQL database {}: {e}",
                redacted(url)
            ))
        };
        let guard = lock_database(url).await?;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(std::time::Duration::from_secs(5))
            .connect(url)
            .await
            .map_err(unreachable)?;
        migrations::postgres_migrator()
            .run(&pool)
            .await
            .map_err(|e| EngineError::internal(format!("migrations failed: {e}")))?;
        let reads = Reads {
            pool: Pool::Postgres(pool),
        };
        repair::run(&reads).await?;
        let (notices, _) = broadcast::channel(256);
        let last_position = Arc::new(AtomicI64::new(0));
        let (writer, thread) =
            writer::spawn_postgres(url, notices.clone(), last_position.clone(), metrics, json)
                .await?;
        let fenced = writer.fenced();
        Ok(Self {
            reads,
            writer,
            writer_thread: std::sync::Mutex::new(Some(thread)),
            notices,
            last_position,
            storage: Storage::Postgres(url.to_owned()),
            lock: std::sync::Mutex::new(Some({
                let (task, release) = keep_database_lock(url.to_owned(), guard, fenced);
                Guard::Postgres(task, release)
            })),
        })
    }

    /// Where the store keeps everything.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// Subscribes to commit announcements; subscribe before reading to miss nothing.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Committed>> {
        self.notices.subscribe()
    }

    /// The global position of the last committed event.
    /// The durable position, shared with threads that read up to it.
    pub(crate) fn durable(&self) -> Arc<AtomicI64> {
        self.last_position.clone()
    }

    pub fn last_position(&self) -> i64 {
        self.last_position.load(Ordering::Acquire)
    }

    /// Finishes every write accepted so far, stops the writer and closes the pool.
    pub async fn shutdown(&self) {
        self.writer.shutdown().await;
        let thread = self.writer_thread.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = thread {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        match &self.reads.pool {
            Pool::Sqlite(pool) => pool.close().await,
            Pool::Postgres(pool) => pool.close().await,
        }
        // another server may open the storage from now on (an in-process restart)
        let guard = self.lock.lock().ok().and_then(|mut lock| lock.take());
        if let Some(Guard::Postgres(task, release)) = guard {
            let _ = release.send(());
            let _ = task.await;
        }
    }
}

/// A held exclusive lock: the data directory's file lock, or the PostgreSQL session
/// that holds eddy's advisory lock on the database.
enum Guard {
    File(
        #[expect(dead_code, reason = "held, not read: the lock lives as long as it")] std::fs::File,
    ),
    /// The task that holds the locking session, and what tells it to let go (see
    /// [`keep_database_lock`]).
    Postgres(
        tokio::task::JoinHandle<()>,
        tokio::sync::oneshot::Sender<()>,
    ),
}

/// The advisory lock key of a database's one eddy server ("eddy" in ASCII).
const DATABASE_LOCK: i64 = 0x6564_6479;

/// Takes eddy's advisory lock on the PostgreSQL database at `url`, on a session of its
/// own that holds it while the server runs (PostgreSQL drops it with the session, so
/// a killed server leaves nothing to clean up), or explains who holds it. One server
/// per database: several nodes (`--lease-ms`, API §11) are not built yet.
async fn lock_database(url: &str) -> Result<sqlx::PgConnection> {
    // a server stopped a moment ago holds the lock until PostgreSQL ends its session
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        if let Some(conn) = try_lock_database(url).await? {
            return Ok(conn);
        }
        if std::time::Instant::now() >= deadline {
            return Err(EngineError::internal(format!(
                "the PostgreSQL database {} is in use by another eddy server (it holds \
                 eddy's advisory lock); stop that server or choose another database",
                redacted(url)
            )));
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// How long a starting server waits for the database lock before it refuses to start.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// A session holding eddy's advisory lock on the database at `url`, or `None` when
/// another session holds it.
async fn try_lock_database(url: &str) -> Result<Option<sqlx::PgConnection>> {
    use sqlx::Connection as _;
    let mut conn = sqlx::PgConnection::connect(url).await.map_err(|e| {
        EngineError::internal(format!(
            "cannot connect to the PostgreSQL database {}: {e}",
            redacted(url)
        ))
    })?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(DATABASE_LOCK)
        .fetch_one(&mut conn)
        .await?;
    Ok(locked.then_some(conn))
}

/// How often a server checks that the session holding its database lock is alive.
const LOCK_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// Keeps the session that holds the database lock: when it was cut (a restarted
/// PostgreSQL, a terminated backend) the lock went with it, so the lock is taken again
/// on a new session; if another server took it meanwhile, `fenced` is set and this
/// server refuses writes from then on, rather than write beside the other one.
fn keep_database_lock(
    url: String,
    mut conn: sqlx::PgConnection,
    fenced: Arc<std::sync::atomic::AtomicBool>,
) -> (
    tokio::task::JoinHandle<()>,
    tokio::sync::oneshot::Sender<()>,
) {
    let (release, mut released) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(LOCK_CHECK) => {}
                _ = &mut released => {
                    // at shutdown: free the lock at once for the next server
                    use sqlx::Connection as _;
                    let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
                        .bind(DATABASE_LOCK)
                        .execute(&mut conn)
                        .await;
                    let _ = conn.close().await;
                    return;
                }
            }
            if sqlx::query("SELECT 1").execute(&mut conn).await.is_ok() {
                continue;
            }
            match try_lock_database(&url).await {
                Ok(Some(again)) => {
                    conn = again;
                    tracing::warn!("took eddy's database lock again after its session ended");
                }
                Ok(None) => {
                    fenced.store(true, Ordering::Release);
                    tracing::error!(
                        "another eddy server took the database lock while this one's session \
                         was cut; this server refuses writes until it restarts"
                    );
                    return;
                }
                // unreachable for now: try again at the next check
                Err(e) => tracing::warn!(error = %e.message, "cannot take the database lock again"),
            }
        }
    });
    (task, release)
}

/// Takes the data directory's exclusive lock, or explains who holds it. The lock is
/// an advisory `flock` the kernel drops with the process, so a killed server leaves
/// nothing to clean up.
fn lock_data_dir(dir: &Path) -> Result<std::fs::File> {
    let path = dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| EngineError::internal(format!("cannot open {}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(EngineError::internal(format!(
            "the data directory {} is in use by another eddy server (it holds the lock on \
             {LOCK_FILE}); stop that server or choose another --data directory",
            dir.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(EngineError::internal(format!(
            "cannot lock {}: {e}",
            path.display()
        ))),
    }
}

impl Drop for Store {
    /// The reducer and pipe workers hold senders to the writer's queue, so the writer
    /// may never see the queue close: a store dropped without [`Store::shutdown`]
    /// still stops its thread (after committing what was queued).
    fn drop(&mut self) {
        self.writer.stop_soon();
    }
}
