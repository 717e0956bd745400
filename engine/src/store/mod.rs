//! Storage: one SQLite file in WAL mode. sqlx runs the migrations and serves reads from
//! a pool; every write goes through the single group-commit writer (`writer`).

pub mod access_reads;
pub mod access_writes;
mod account_events;
mod apply;
pub(crate) mod cluster;
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
pub(crate) mod splice_reads;
pub(crate) mod splice_writes;
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
use crate::order::Position;
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
    // a password given as a query parameter too
    let masked;
    let url = match url.find("password=") {
        Some(at) => {
            let start = at + "password=".len();
            let end = url[start..].find('&').map_or(url.len(), |i| start + i);
            masked = format!("{}***{}", &url[..start], &url[end..]);
            masked.as_str()
        }
        None => url,
    };
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Why eddy cannot use the PostgreSQL database at `url`, in a user's words: the pool
/// says only that it timed out, so one direct connection tells the cause (refused,
/// no such database or role, a password refused), and a database error is its
/// message without the server's source line.
async fn unreachable_postgres(url: &str, node_url: &str, pooled: sqlx::Error) -> EngineError {
    use sqlx::Connection as _;
    let direct = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        sqlx::PgConnection::connect(node_url),
    )
    .await;
    let cause = match direct {
        Ok(Err(e)) => e,
        _ => pooled,
    };
    let why = match &cause {
        sqlx::Error::Database(d) => d.message().to_owned(),
        sqlx::Error::Io(e) => e.to_string(),
        other => other.to_string(),
    };
    EngineError::internal(format!(
        "cannot connect to the PostgreSQL database {}: {why}",
        redacted(url)
    ))
}

/// Why the database at `url` cannot take eddy's schema, in a user's words.
fn not_migrated(url: &str, e: sqlx::migrate::MigrateError) -> EngineError {
    use sqlx::migrate::MigrateError;
    let db = redacted(url);
    let why = match &e {
        MigrateError::VersionMissing(v) => format!(
            "its schema was made by a newer eddy (its migration {v} is unknown to this \
             version): run that version, or give this one a database of its own"
        ),
        MigrateError::VersionMismatch(v) => format!(
            "its migration {v} differs from this eddy's: the schema was made by another \
             build of eddy"
        ),
        MigrateError::Execute(sqlx::Error::Database(d))
        | MigrateError::ExecuteMigration(sqlx::Error::Database(d), _)
            if d.code().as_deref() == Some("42P07") =>
        {
            format!(
                "it holds tables that are not eddy's ({}): give eddy a database of its own \
                 (CREATE DATABASE eddy)",
                d.message()
            )
        }
        other => format!("its migrations failed: {other}"),
    };
    EngineError::internal(format!("cannot use the PostgreSQL database {db}: {why}"))
}

/// The open store: the reads, the writer and the commit announcements.
pub struct Store {
    pub(crate) reads: Reads,
    pub(crate) writer: writer::WriterHandle,
    writer_thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    notices: broadcast::Sender<Arc<Committed>>,
    last_position: Arc<AtomicI64>,
    storage: Storage,
    /// What keeps a second server off the same data directory; released at shutdown
    /// (or when the process ends).
    lock: std::sync::Mutex<Option<Guard>>,
    /// Where other nodes may share the database (PostgreSQL).
    cluster: Option<StoreCluster>,
}

struct StoreCluster {
    node: String,
    /// The database URL with this node's id as the sessions' `application_name`.
    url: String,
    heard: std::sync::Mutex<Option<cluster::Heard>>,
}

/// `url` with `application_name` set to `name`.
fn with_application_name(url: &str, name: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}application_name={name}")
}

/// A new node id: `node-` and 12 random hex digits, different at every start.
fn node_id() -> Result<String> {
    let mut bytes = [0u8; 6];
    getrandom::fill(&mut bytes)
        .map_err(|e| EngineError::internal(format!("no randomness for the node id: {e}")))?;
    Ok(format!(
        "node-{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ))
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
            lock: std::sync::Mutex::new(Some(Guard(lock))),
            cluster: None,
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
    /// repairs, and starts the writer, the sequencer and the listener. Other nodes may
    /// share the database (API §11).
    pub async fn open_postgres(url: &str, metrics: Arc<Metrics>, json: JsonLimits) -> Result<Self> {
        let node = node_id()?;
        // every session of this node carries its id (see `cluster::claim`)
        let node_url = with_application_name(url, &node);
        let pool = match PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(std::time::Duration::from_secs(5))
            .connect(&node_url)
            .await
        {
            Ok(pool) => pool,
            Err(e) => return Err(unreachable_postgres(url, &node_url, e).await),
        };
        // sqlx holds an advisory lock while it migrates: nodes starting together wait
        migrations::postgres_migrator()
            .run(&pool)
            .await
            .map_err(|e| not_migrated(url, e))?;
        let reads = Reads {
            pool: Pool::Postgres(pool),
        };
        repair::run(&reads).await?;
        let (notices, _) = broadcast::channel(256);
        // the head row holds the last position; rows written around eddy (an older
        // version's, or by hand) may lie past it
        let head: i64 = reads
            .one(
                "UPDATE event_positions SET last = GREATEST(last, \
                 (SELECT COALESCE(MAX(pos), 0) FROM events)) RETURNING last",
                query::args![],
            )
            .await?
            .int(0)?;
        let last_position = Arc::new(AtomicI64::new(head));
        let (sequencer, announced) = cluster::start_sequencer(
            reads.clone(),
            notices.clone(),
            last_position.clone(),
            metrics.clone(),
        );
        let heard = cluster::listen(
            node_url.clone(),
            reads.clone(),
            node.clone(),
            sequencer.clone(),
            announced,
        );
        let (writer, thread) = writer::spawn_postgres(
            &node_url,
            node.clone(),
            sequencer,
            last_position.clone(),
            metrics,
            json,
        )
        .await?;
        Ok(Self {
            reads,
            writer,
            writer_thread: std::sync::Mutex::new(Some(thread)),
            notices,
            last_position,
            storage: Storage::Postgres(url.to_owned()),
            lock: std::sync::Mutex::new(None),
            cluster: Some(StoreCluster {
                node,
                url: node_url,
                heard: std::sync::Mutex::new(Some(heard)),
            }),
        })
    }

    /// The URL this node's own PostgreSQL sessions connect with.
    pub(crate) fn postgres_url(&self) -> Option<&str> {
        self.cluster.as_ref().map(|c| c.url.as_str())
    }

    /// This node's id where other nodes may share the database.
    pub fn node(&self) -> Option<&str> {
        self.cluster.as_ref().map(|c| c.node.as_str())
    }

    /// What the listener hears of other nodes, once (for the engine).
    pub(crate) fn take_heard(&self) -> Option<cluster::Heard> {
        let c = self.cluster.as_ref()?;
        c.heard.lock().ok()?.take()
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

    /// The position plain reads stop at: the durable one on SQLite (committed groups
    /// are durable only once flushed); none on PostgreSQL, whose committed rows are
    /// durable and, positions being taken in commit order, gapless, so a read on one
    /// node sees what another node acknowledged a moment ago.
    pub fn read_bound(&self) -> Position {
        match self.cluster {
            Some(_) => Position(i64::MAX),
            None => self.last_position(),
        }
    }

    pub fn last_position(&self) -> Position {
        Position(self.last_position.load(Ordering::Acquire))
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
        drop(self.lock.lock().ok().and_then(|mut lock| lock.take()));
    }
}

/// The data directory's exclusive lock, held while the store is open.
struct Guard(
    #[expect(dead_code, reason = "held, not read: the lock lives as long as it")] std::fs::File,
);

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

#[cfg(test)]
mod redacted_tests {
    #[test]
    fn passwords_are_masked_wherever_given() {
        let r = super::redacted;
        assert_eq!(r("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(r("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            r("postgres://u@h/db?password=secret&sslmode=require"),
            "postgres://u@h/db?password=***&sslmode=require"
        );
    }
}
