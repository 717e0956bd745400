//! The syncer: makes committed groups durable, and only then answers them.
//!
//! The writer commits with `synchronous=NORMAL`, so a commit writes its WAL frames
//! without waiting for the disk, and hands the group's answers here. This thread
//! `fdatasync`s the WAL (one call covers every group committed before it), then answers
//! each request and announces the commit. The writer thus builds the next group while
//! the disk flushes the last one, and a 201 still leaves only once its event is on disk,
//! the guarantee `synchronous=FULL` gives (which would hold the writer during every
//! flush). The durable position moves before any answer is sent, and reads stop at it
//! (`Engine::read`), so neither answers, announcements nor reads run ahead of the disk.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use tokio::sync::broadcast;

use super::writer::{Command, Committed, Pending};
use crate::error::{EngineError, ErrorCode, Result};
use crate::metrics::Metrics;

/// A committed group waiting to be made durable.
pub(crate) struct Settled {
    pub pending: Vec<Pending>,
    pub notice: Option<Committed>,
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
        if std::fs::metadata(&self.path)?.ino() != self.ino {
            tracing::warn!(wal = %self.path.display(), "the WAL file was replaced; reopening it");
            *self = Self::open(&self.path)?;
            File::open(&self.dir)?.sync_all()?;
        }
        self.file.sync_data()
    }
}

/// Starts the syncer thread on the database's WAL file.
pub(crate) fn spawn(
    db: &Path,
    rx: mpsc::Receiver<Settled>,
    writer: mpsc::Sender<Command>,
    notices: broadcast::Sender<Arc<Committed>>,
    last_position: Arc<AtomicI64>,
    failed: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
) -> Result<std::thread::JoinHandle<()>> {
    let mut wal_path = db.as_os_str().to_owned();
    wal_path.push("-wal");
    let mut wal = Wal::open(Path::new(&wal_path))
        .map_err(|e| EngineError::internal(format!("cannot open the WAL file: {e}")))?;
    std::thread::Builder::new()
        .name("eddy-syncer".into())
        .spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut batch = vec![first];
                batch.extend(rx.try_iter());
                let flush = Instant::now();
                let synced = wal.sync();
                metrics.flush_seconds.observe(flush.elapsed().as_secs_f64());
                if let Err(e) = &synced {
                    // After a failed fsync the kernel may have dropped the pages: nothing
                    // more is acknowledged until the server restarts and recovers.
                    tracing::error!(error = %e, "fdatasync of the WAL failed; refusing further writes");
                    failed.store(true, Ordering::Release);
                }
                for s in batch {
                    settle(s, synced.is_ok(), &notices, &last_position, &metrics);
                }
                // free for the next group; the writer may be gone at shutdown
                let _ = writer.send(Command::Flushed);
            }
        })
        .map_err(|e| EngineError::internal(format!("cannot start the syncer thread: {e}")))
}

fn settle(
    s: Settled,
    durable: bool,
    notices: &broadcast::Sender<Arc<Committed>>,
    last_position: &AtomicI64,
    metrics: &Metrics,
) {
    if durable {
        last_position.store(s.last_position, Ordering::Release);
        metrics
            .commit_seconds
            .observe(s.started.elapsed().as_secs_f64());
        if let Some(n) = s.notice {
            let _ = notices.send(Arc::new(n));
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
