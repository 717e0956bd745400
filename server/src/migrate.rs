//! `eddy migrate`, a subcommand of the binary (not part of the library): its arguments,
//! and the progress it shows on stderr while the engine copies
//! (`eddy_engine::store::copy`).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use eddy_engine::store::copy::{CopyEvent, CopySummary, TableProgress, copy_to_postgres};

/// Copies an embedded database into PostgreSQL.
///
/// Copies everything in the data directory's eddy.db (events with their indexes, ids and
/// timestamps, reducers with their states and checkpoints, pipes and webhooks with their
/// cursors, event types, settings, accounts and keys) into an empty PostgreSQL
/// database, so that a server started on it answers as the embedded one did. The data
/// directory must not be in use by a running server. An interrupted copy (a kill, a
/// lost connection) is resumed by running the same command again; a database that
/// already holds anything else is refused.
#[derive(clap::Args, Debug)]
#[command(after_help = "Example:\n  \
    eddy migrate --from ./eddy-data --to postgres://eddy:secret@db.example.com/eddy\n\n\
    Create the target database first (createdb eddy); it must be empty.")]
pub struct MigrateArgs {
    /// The data directory of the embedded database (the --data of eddy serve).
    #[arg(long, value_name = "DIR")]
    pub from: PathBuf,
    /// The PostgreSQL database to copy into: a postgres:// URL of an empty database.
    #[arg(
        long,
        value_name = "URL",
        env = "EDDY_DATABASE_URL",
        hide_env_values = true
    )]
    pub to: String,
}

/// Runs the copy, showing progress; the error is one sentence for stderr.
pub async fn run(args: MigrateArgs) -> Result<CopySummary, String> {
    let mut shown = Progress::new(std::io::stderr().is_terminal());
    let source = args.from.display().to_string();
    let summary = copy_to_postgres(&args.from, &args.to, &mut |event| {
        shown.show(&source, event)
    })
    .await;
    shown.end_line();
    let summary = summary.map_err(|e| e.to_string())?;
    let _ = writeln!(
        std::io::stderr(),
        "copied {} rows in {:.1} s: the PostgreSQL database now holds everything {source} \
         held; start eddy on it instead of the data directory",
        summary.this_run,
        summary.elapsed.as_secs_f64()
    );
    Ok(summary)
}

/// What has been shown: on a terminal one line per table, rewritten as it goes;
/// elsewhere (a log file, a pipe) plain lines, one per table when it is copied and
/// one every few seconds while a large table is.
struct Progress {
    terminal: bool,
    /// When the line of the table being copied was last shown (or its copy began).
    last: Option<(&'static str, Instant)>,
    /// Whether a terminal line is open (not ended by a newline).
    open: bool,
}

/// How often a line is redrawn on a terminal, and printed elsewhere.
const REDRAW: Duration = Duration::from_millis(100);
const PLAIN_EVERY: Duration = Duration::from_secs(2);

impl Progress {
    fn new(terminal: bool) -> Self {
        Self {
            terminal,
            last: None,
            open: false,
        }
    }

    fn show(&mut self, source: &str, event: CopyEvent<'_>) {
        let mut err = std::io::stderr().lock();
        match event {
            CopyEvent::Started { resumed: false } => {
                let _ = writeln!(err, "copying {source} into PostgreSQL");
            }
            CopyEvent::Started { resumed: true } => {
                let _ = writeln!(
                    err,
                    "resuming the interrupted copy of {source} into PostgreSQL"
                );
            }
            CopyEvent::Table(p) => {
                let every = if self.terminal { REDRAW } else { PLAIN_EVERY };
                let since = match self.last {
                    Some((table, at)) if table == p.table => at.elapsed(),
                    // a table's first batch: shown at once on a terminal only
                    _ if self.terminal => every,
                    _ => {
                        self.last = Some((p.table, Instant::now()));
                        Duration::ZERO
                    }
                };
                if !p.done && since < every {
                    return;
                }
                self.last = (!p.done).then(|| (p.table, Instant::now()));
                let line = line(p);
                if self.terminal {
                    let _ = write!(err, "\r\x1b[2K{line}");
                    self.open = !p.done;
                    if p.done {
                        let _ = writeln!(err);
                    }
                } else {
                    let _ = writeln!(err, "{line}");
                }
                let _ = err.flush();
            }
        }
    }

    /// Ends a terminal line left open by an error.
    fn end_line(&mut self) {
        if self.open {
            let _ = writeln!(std::io::stderr());
            self.open = false;
        }
    }
}

fn line(p: &TableProgress) -> String {
    if p.done && p.this_run == 0 && p.total > 0 {
        return format!("{}: {} rows (copied by the earlier run)", p.table, p.total);
    }
    let earlier = p.copied - p.this_run;
    let resumed = if earlier > 0 {
        format!(", {earlier} of them by the earlier run")
    } else {
        String::new()
    };
    // (a rate over a few milliseconds says nothing)
    let rate = if p.elapsed >= Duration::from_millis(100) {
        format!(", {:.0} rows/s", p.rate())
    } else {
        String::new()
    };
    if p.done {
        format!("{}: {} rows copied{resumed}{rate}", p.table, p.total)
    } else {
        let percent = p.copied as f64 * 100.0 / p.total.max(1) as f64;
        format!(
            "{}: {} of {} rows ({percent:.0}%){resumed}{rate}",
            p.table, p.copied, p.total
        )
    }
}
