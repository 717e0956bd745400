//! Making committed groups durable, and only then answering them.
//!
//! The writer commits with `synchronous=NORMAL`, so a commit writes its WAL frames
//! without waiting for the disk; the writer then calls [`Flusher::flush`], which
//! `fdatasync`s the WAL, moves the durable position, answers each request of the group
//! and announces the commit. A 201 thus leaves only once its event is on disk, the
//! guarantee `synchronous=FULL` gives. The durable position moves before any answer is
//! sent, and reads stop at it (`Engine::read`), so neither answers, announcements nor
//! reads run ahead of the disk.
//!
//! The flush runs on the writer thread itself. Requests that arrive during it queue
//! up and form the next group, so there is still one commit and one flush per disk
//! round trip; a second flushing thread costs more in hand-offs than its overlap gains
//! (docs/internals/decisions/0002-the-writer-flushes-its-own-groups.md).

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Instant;

use tokio::sync::broadcast;

use super::cluster::Announce;
use super::writer::{Committed, Pending};
use crate::error::{EngineError, ErrorCode, Result};
use crate::metrics::Metrics;

/// A committed group, to be made durable and answered.
pub(crate) struct Settled {
    pub pending: Vec<Pending>,
    pub notice: Option<Committed>,
    /// The group's first position (its last when it wrote no events).
    pub first_position: i64,
    pub last_position: i64,
    pub started: Instant,
}

/// The WAL file, watched by inode so a replaced file is never mistaken for the old.
struct Wal {
    path: PathBuf,
    dir: PathBuf,
    file: File,
    ino: u64,
}

impl Wal {
    fn open(path: &Path) -> std::io::Result<Self> {
        let file = File::open(path)?;
        let ino = file.metadata()?.ino();
        let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        // the WAL's directory entry must be durable too
        File::open(&dir)?.sync_all()?;
        Ok(Self {
            path: path.to_path_buf(),
            dir,
            file,
            ino,
        })
    }

    fn sync(&mut self) -> std::io::Result<()> {
        if inode(&self.path)? != self.ino {
            tracing::warn!(wal = %self.path.display(), "the WAL file was replaced; reopening it");
            *self = Self::open(&self.path)?;
            File::open(&self.dir)?.sync_all()?;
        }
        self.file.sync_data()
    }
}

/// The inode number of the file at `path`, asked for without its times: a `stat`
/// that returns the times makes the next write stamp a fresh mtime, which dirties the
/// inode, and each `fdatasync` then writes it out as a second I/O
/// (docs/internals/decisions/0009-wal-inode-check-with-statx.md).
#[cfg(target_os = "linux")]
fn inode(path: &Path) -> std::io::Result<u64> {
    use rustix::io::Errno;
    match rustix::fs::statx(
        rustix::fs::CWD,
        path,
        rustix::fs::AtFlags::empty(),
        rustix::fs::StatxFlags::INO,
    ) {
        Ok(st) => Ok(st.stx_ino),
        // kernels before 4.11, and sandboxes that filter statx out
        Err(Errno::NOSYS | Errno::PERM) => Ok(std::fs::metadata(path)?.ino()),
        Err(e) => Err(e.into()),
    }
}

/// Elsewhere, a plain `stat` (no `statx` to leave the times out).
#[cfg(not(target_os = "linux"))]
fn inode(path: &Path) -> std::io::Result<u64> {
    Ok(std::fs::metadata(path)?.ino())
}

/// Where commit notices go: straight to the live consumers, or, where other nodes
/// commit too, through the sequencer that puts their commits in between
/// (`cluster::start_sequencer`).
enum Outlet {
    Broadcast(broadcast::Sender<Arc<Committed>>),
    Sequencer(tokio::sync::mpsc::UnboundedSender<Announce>),
}

impl Outlet {
    fn send(&self, first: i64, notice: Committed) {
        match self {
            Outlet::Broadcast(tx) => drop(tx.send(Arc::new(notice))),
            Outlet::Sequencer(tx) => drop(tx.send(Announce::Local {
                first,
                notice: Box::new(notice),
            })),
        }
    }
}

/// Flushes the WAL and settles the groups it covers.
pub(crate) struct Flusher {
    /// SQLite's WAL; `None` where COMMIT is durable itself (PostgreSQL with
    /// `synchronous_commit` on).
    wal: Option<Wal>,
    notices: Outlet,
    last_position: Arc<AtomicI64>,
    failed: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
}

impl Flusher {
    pub(crate) fn open(
        db: &Path,
        notices: broadcast::Sender<Arc<Committed>>,
        last_position: Arc<AtomicI64>,
        failed: Arc<AtomicBool>,
        metrics: Arc<Metrics>,
    ) -> Result<Self> {
        let mut wal_path = db.as_os_str().to_owned();
        wal_path.push("-wal");
        let wal = Wal::open(Path::new(&wal_path))
            .map_err(|e| EngineError::internal(format!("cannot open the WAL file: {e}")))?;
        Ok(Self {
            wal: Some(wal),
            notices: Outlet::Broadcast(notices),
            last_position,
            failed,
            metrics,
        })
    }

    /// A flusher for a backend whose COMMIT is durable: it only settles groups, and
    /// hands their notices to the sequencer.
    pub(crate) fn committed(
        notices: tokio::sync::mpsc::UnboundedSender<Announce>,
        last_position: Arc<AtomicI64>,
        failed: Arc<AtomicBool>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            wal: None,
            notices: Outlet::Sequencer(notices),
            last_position,
            failed,
            metrics,
        }
    }

    /// Moves the durable position to `position` if it is behind (events a commit
    /// whose answer was lost turned out to have written).
    pub(crate) fn advance(&self, position: i64) {
        self.last_position.fetch_max(position, Ordering::AcqRel);
    }

    /// One fdatasync for the group (none where COMMIT was durable), then its answers.
    pub(crate) fn flush(&mut self, group: Settled) {
        let flush = Instant::now();
        let synced = self.wal.as_mut().map_or(Ok(()), Wal::sync);
        self.metrics
            .flush_seconds
            .observe(flush.elapsed().as_secs_f64());
        if let Err(e) = &synced {
            // After a failed fsync the kernel may have dropped the pages: nothing
            // more is acknowledged until the server restarts and recovers.
            tracing::error!(error = %e, "fdatasync of the WAL failed; refusing further writes");
            self.failed.store(true, Ordering::Release);
        }
        settle(
            group,
            synced.is_ok(),
            &self.notices,
            &self.last_position,
            &self.metrics,
        );
    }
}

fn settle(
    s: Settled,
    durable: bool,
    notices: &Outlet,
    last_position: &AtomicI64,
    metrics: &Metrics,
) {
    if durable {
        // every position up to the group's is committed: the writer held the head
        last_position.fetch_max(s.last_position, Ordering::AcqRel);
        metrics
            .commit_seconds
            .observe(s.started.elapsed().as_secs_f64());
        if let Some(n) = s.notice {
            notices.send(s.first_position, n);
        }
        for p in s.pending {
            p.answer(None);
        }
    } else {
        let err = EngineError::new(
            ErrorCode::Internal,
            "the write was committed but could not be made durable (fdatasync failed)",
        );
        for p in s.pending {
            p.answer(Some(err.clone()));
        }
    }
}
