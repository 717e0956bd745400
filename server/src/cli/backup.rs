//! `eddy backup`: a consistent copy of an embedded database while its server runs,
//! taken with SQLite's `VACUUM INTO` over a read-only connection (a snapshot of every
//! committed transaction, compacted), into a new data directory that `eddy serve
//! --data` starts on.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use eddy_engine::store::DB_FILE;

#[derive(clap::Args)]
#[command(after_help = "Examples:
  eddy backup ./eddy-backup-2026-12-07
  eddy backup --data /var/lib/eddy /backups/eddy-$(date +%F)
  eddy serve --data ./eddy-backup-2026-12-07      # a server on the copy

The copy holds every event acknowledged before the backup began. A database in
PostgreSQL is backed up with PostgreSQL's own tools (pg_dump, base backups).")]
pub struct BackupArgs {
    /// The data directory to create for the copy (it must not exist yet).
    dest: PathBuf,
    /// The data directory of the database to copy.
    #[arg(long, env = "EDDY_DATA", default_value = "./eddy-data")]
    data: PathBuf,
}

pub fn run(a: &BackupArgs) -> Result<()> {
    let source = a.data.join(DB_FILE);
    if !source.is_file() {
        bail!("{} holds no eddy database ({DB_FILE})", a.data.display());
    }
    if a.dest.exists() {
        bail!("{} exists already: give a new directory", a.dest.display());
    }
    std::fs::create_dir_all(&a.dest)
        .with_context(|| format!("cannot create {}", a.dest.display()))?;
    // written under another name, checked and made durable, then renamed: an
    // interrupted backup leaves no `eddy.db` that a server could start on
    let partial = a.dest.join(format!("{DB_FILE}.partial"));
    let target = a.dest.join(DB_FILE);
    let copied = (|| -> Result<u64> {
        let conn = rusqlite::Connection::open_with_flags(
            &source,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        // the server's writer may hold the database for a moment: wait, not fail
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        conn.execute("VACUUM INTO ?1", [partial.to_string_lossy()])?;
        let copy = rusqlite::Connection::open(&partial)?;
        let check: String = copy.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
        if check != "ok" {
            bail!("the copy failed its check: {check}");
        }
        let events: i64 = copy.query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))?;
        drop(copy);
        std::fs::File::open(&partial)?.sync_all()?;
        std::fs::rename(&partial, &target)?;
        std::fs::File::open(&a.dest)?.sync_all()?;
        Ok(events as u64)
    })();
    match copied {
        Ok(events) => {
            eprintln!(
                "copied {} ({events} events) to {}",
                source.display(),
                a.dest.display()
            );
            Ok(())
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&a.dest);
            Err(e.context(format!("cannot copy {}", source.display())))
        }
    }
}
