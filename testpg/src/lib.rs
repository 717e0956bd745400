//! A throwaway PostgreSQL cluster for eddy's tests, started from the server binaries
//! installed on the machine.
//!
//! [`PgCluster::start`] runs `initdb` into a fresh temporary directory (trust
//! authentication, locale C, UTF8) and `pg_ctl start` on a free 127.0.0.1 port, with
//! its unix socket inside that directory and `fsync` on, so durability tests see what
//! a real server does. Dropping the cluster stops it (`pg_ctl stop -m immediate`) and
//! removes the directory; a watchdog process does the same when the test process ends
//! without dropping it (statics are never dropped, and a killed process drops
//! nothing).
//!
//! Tests share one cluster per test binary through [`shared_cluster`] and each
//! creates databases of its own ([`PgCluster::fresh_database`]), so no test touches a
//! database it did not create. A test that stops the server or kills connections
//! takes a cluster of its own ([`private_cluster`]).
//!
//! Without the binaries the tests skip with one loud line on stderr, unless
//! `EDDY_REQUIRE_POSTGRES=1` makes that a failure (CI sets it). `EDDY_PG_BIN` names
//! the directory holding `initdb`, `pg_ctl` and `postgres` when the search below
//! finds none or the wrong version.
//!
//! Written by hand, on std alone: `postgresql_embedded` and `pg-embed` download
//! PostgreSQL builds from the network; `pgtemp`, the closest to this, runs the
//! installed binaries but looks for them on PATH only (Debian keeps them in
//! `/usr/lib/postgresql/<version>/bin`), needs `sudo` as root, starts the server with
//! fsync off, waits for it with sleeps and retries, and brings tokio with every
//! feature. None offers a shared cluster, killed connections or a crash-like stop.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The line printed when the tests skip PostgreSQL; `.ci/run` fails when it sees it.
pub const SKIPPED_LINE: &str = "SKIPPED: PostgreSQL tests — no server binaries found \
     (install Debian's postgresql, or set EDDY_PG_BIN)";

/// The superuser `initdb` creates; every URL connects as it.
pub const SUPERUSER: &str = "postgres";

/// How long `pg_ctl` waits for the server to start or stop.
const PG_CTL_TIMEOUT_SECS: &str = "60";

/// Ports tried when the free one found is taken before the server binds it.
const PORT_ATTEMPTS: usize = 5;

/// The shared cluster of this test process, started on first use: `None` (after
/// [`SKIPPED_LINE`] on stderr) when the tests skip PostgreSQL. Panics when the binaries
/// are there but the cluster does not start, or when they are missing and
/// [required](postgres_required).
pub fn shared_cluster() -> Option<&'static PgCluster> {
    static SHARED: OnceLock<Result<Option<PgCluster>, String>> = OnceLock::new();
    match SHARED.get_or_init(PgCluster::start) {
        Ok(Some(cluster)) => Some(cluster),
        Ok(None) => skip_or_panic(),
        Err(e) => panic!("PostgreSQL for the tests did not start: {e}"),
    }
}

/// A cluster of the caller's own, for a test that stops the server or kills its
/// connections; `None` (after the skip line) when the tests skip PostgreSQL.
pub fn private_cluster() -> Option<PgCluster> {
    match PgCluster::start() {
        Ok(Some(cluster)) => Some(cluster),
        Ok(None) => skip_or_panic(),
        Err(e) => panic!("PostgreSQL for the tests did not start: {e}"),
    }
}

/// Whether `EDDY_REQUIRE_POSTGRES=1` is set.
pub fn postgres_required() -> bool {
    std::env::var_os("EDDY_REQUIRE_POSTGRES").is_some_and(|v| v == "1")
}

/// Panics when PostgreSQL is required, else prints [`SKIPPED_LINE`] (once per
/// process) and returns `None`.
fn skip_or_panic<T>() -> Option<T> {
    if postgres_required() {
        panic!(
            "EDDY_REQUIRE_POSTGRES=1, but no PostgreSQL server binaries were found \
             (looked at EDDY_PG_BIN, /usr/lib/postgresql/*/bin, `pg_config --bindir` and \
             PATH for initdb, pg_ctl and postgres)"
        );
    }
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        // straight to the stream: libtest captures eprintln! of passing tests, and this
        // line must show in every run
        let _ = writeln!(std::io::stderr(), "{SKIPPED_LINE}");
    });
    None
}

/// A running PostgreSQL cluster in a temporary directory of its own.
pub struct PgCluster {
    bin: PathBuf,
    /// The temporary directory: `data/` (the cluster), `server.log` and the socket.
    dir: PathBuf,
    port: u16,
    /// The user the server runs as when this process is root (initdb refuses root).
    run_as: Option<RunAs>,
    /// The watchdog's stdin: closing it (drop, or the process ending) makes the
    /// watchdog stop the server and remove `dir`.
    watchdog_pipe: Option<ChildStdin>,
    watchdog: Option<Child>,
}

/// An unprivileged user and the tool that switches to it.
#[derive(Debug, Clone)]
struct RunAs {
    name: String,
    uid: u32,
    gid: u32,
    /// `runuser` (util-linux, as root) or `setpriv`.
    tool: &'static str,
}

impl PgCluster {
    /// Initialises and starts a cluster; `Ok(None)` when no server binaries are found.
    pub fn start() -> Result<Option<PgCluster>, String> {
        let Some(bin) = find_bin_dir()? else {
            return Ok(None);
        };
        let run_as = if running_as_root() {
            Some(unprivileged_user()?)
        } else {
            None
        };
        let tmp = tempfile::Builder::new()
            .prefix("eddy-pg-")
            .tempdir()
            .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
        if let Some(user) = &run_as {
            std::os::unix::fs::chown(tmp.path(), Some(user.uid), Some(user.gid)).map_err(|e| {
                format!(
                    "cannot give {} to user {}: {e}",
                    tmp.path().display(),
                    user.name
                )
            })?;
        }
        // from here on the watchdog owns the directory's removal
        let dir = tmp.keep();
        let mut cluster = PgCluster {
            bin,
            dir,
            port: 0,
            run_as,
            watchdog_pipe: None,
            watchdog: None,
        };
        if let Err(e) = cluster.spawn_watchdog() {
            let _ = std::fs::remove_dir_all(&cluster.dir);
            return Err(e);
        }
        cluster.init()?;
        cluster.start_on_free_port()?;
        Ok(Some(cluster))
    }

    /// The directory holding `initdb`, `pg_ctl` and `postgres`.
    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }

    /// The cluster's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The directory holding the server's unix socket.
    pub fn socket_dir(&self) -> &Path {
        &self.dir
    }

    /// The server's TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `dbname`, as the superuser over TCP.
    pub fn url(&self, dbname: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{dbname}", self.port)
    }

    /// Creates database `name` (lowercase letters, digits and `_`) and returns its URL.
    /// Fails when it exists: a test only uses databases it created.
    pub fn create_database(&self, name: &str) -> Result<String, String> {
        check_identifier(name)?;
        self.query("postgres", &format!("CREATE DATABASE \"{name}\""))?;
        Ok(self.url(name))
    }

    /// Creates a database whose name starts with `label` and is unique in this
    /// process, and returns its URL.
    pub fn fresh_database(&self, label: &str) -> Result<String, String> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        self.create_database(&format!("{label}_{n}"))
    }

    /// Drops database `name` if it exists, ending the connections still open to it
    /// (`WITH (FORCE)` from PostgreSQL 13; before it, by terminating them first).
    pub fn drop_database(&self, name: &str) -> Result<(), String> {
        check_identifier(name)?;
        let forced = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
        if self.query("postgres", &forced).is_ok() {
            return Ok(());
        }
        self.kill_connections(name)?;
        let plain = format!("DROP DATABASE IF EXISTS \"{name}\"");
        self.query("postgres", &plain).map(drop)
    }

    /// Terminates every other client connection to database `db` (as a lost connection
    /// would end them) and returns how many it signalled.
    pub fn kill_connections(&self, db: &str) -> Result<u64, String> {
        check_identifier(db)?;
        let out = self.query(
            "postgres",
            &format!(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE datname = '{db}' AND backend_type = 'client backend' \
                 AND pid <> pg_backend_pid()"
            ),
        )?;
        out.trim()
            .parse()
            .map_err(|e| format!("pg_terminate_backend count {out:?}: {e}"))
    }

    /// Runs `sql` in database `db` with `psql` and returns its unaligned, tuples-only
    /// output (`|` between columns, one row a line).
    pub fn query(&self, db: &str, sql: &str) -> Result<String, String> {
        let psql = self.psql();
        let out = Command::new(&psql)
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(self.url(db))
            .args(["-c", sql])
            .env("PGCONNECT_TIMEOUT", "10")
            .env_remove("PGOPTIONS")
            .env_remove("PGSERVICE")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", psql.display()))?;
        if !out.status.success() {
            return Err(format!(
                "psql in {db} ({sql}) failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `psql` beside the server binaries, else the one on PATH.
    fn psql(&self) -> PathBuf {
        let beside = self.bin.join("psql");
        if beside.is_file() {
            beside
        } else {
            PathBuf::from("psql")
        }
    }

    /// Whether the server accepts TCP connections now.
    pub fn accepts_connections(&self) -> bool {
        TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).is_ok()
    }

    /// Stops the server the way a crash would (`pg_ctl stop -m immediate`: no
    /// checkpoint, recovery at the next start). Not for the shared cluster: other tests
    /// use it.
    pub fn stop_immediate(&self) -> Result<(), String> {
        let out = self.pg_ctl(&["stop", "-m", "immediate", "-w", "-t", PG_CTL_TIMEOUT_SECS])?;
        check("pg_ctl stop", &out, None)
    }

    /// Starts the server again on the same port and directory, after
    /// [`stop_immediate`](Self::stop_immediate); returns once it accepts connections.
    pub fn restart(&self) -> Result<(), String> {
        let log = self.dir.join("server.log");
        let log_arg = log.to_string_lossy().into_owned();
        let out = self.pg_ctl(&["start", "-w", "-t", PG_CTL_TIMEOUT_SECS, "-l", &log_arg])?;
        check("pg_ctl start", &out, Some(&log))
    }

    fn init(&self) -> Result<(), String> {
        let data = self.data_dir();
        let out = self
            .command("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", SUPERUSER, "-A", "trust", "-E", "UTF8", "--locale=C"])
            // the fresh files are only read back by this one server, never after a
            // machine crash; the server itself keeps fsync on
            .arg("--no-sync")
            .output()
            .map_err(|e| format!("cannot run initdb: {e}"))?;
        check("initdb", &out, None)?;
        let mut conf = String::new();
        let socket_dir = self.dir.to_string_lossy().replace('\'', "''");
        let _ = write!(
            conf,
            "\n# eddy-testpg\nlisten_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{socket_dir}'\nfsync = on\n\
             synchronous_commit = on\n\
             # every test opens a pool of its own on the shared cluster\n\
             max_connections = 200\n\
             # each CREATE DATABASE logs its template (8 MB) to the WAL; recycle the\n\
             # WAL early so that hundreds of them do not fill a small disk\n\
             max_wal_size = '128MB'\nmin_wal_size = '32MB'\n"
        );
        append(&data.join("postgresql.conf"), &conf)
    }

    /// Starts the server on a free port, trying another when the one found is taken
    /// before the server binds it.
    fn start_on_free_port(&mut self) -> Result<(), String> {
        let conf = self.data_dir().join("postgresql.conf");
        let mut last = String::new();
        for _ in 0..PORT_ATTEMPTS {
            self.port = free_port()?;
            append(&conf, &format!("port = {}\n", self.port))?;
            match self.restart() {
                Ok(()) => return Ok(()),
                Err(e) if e.contains("could not bind") || e.contains("already in use") => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(format!(
            "no free port after {PORT_ATTEMPTS} attempts; last: {last}"
        ))
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<Output, String> {
        self.command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(args)
            .output()
            .map_err(|e| format!("cannot run pg_ctl: {e}"))
    }

    /// A command running server binary `name` as the cluster's user.
    fn command(&self, name: &str) -> Command {
        let program = self.bin.join(name);
        let mut cmd = match &self.run_as {
            None => Command::new(program),
            Some(user) => {
                let mut cmd = Command::new(user.tool);
                match user.tool {
                    "runuser" => cmd.args(["-u", &user.name, "--"]),
                    _ => cmd.args([
                        format!("--reuid={}", user.uid),
                        format!("--regid={}", user.gid),
                        "--clear-groups".into(),
                        "--".into(),
                    ]),
                };
                cmd.arg(program);
                cmd
            }
        };
        // a directory the user can enter, and messages in one language
        cmd.current_dir(&self.dir)
            .env("LC_ALL", "C")
            .stdin(Stdio::null());
        cmd
    }

    /// Starts the process that stops the server and removes the directory once its
    /// stdin closes: at drop, or when this process ends however it ends.
    fn spawn_watchdog(&mut self) -> Result<(), String> {
        let stop = self.pg_ctl_stop_command();
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(
                // ignore the terminal's ^C meant for the tests; cat returns at EOF
                "trap '' INT TERM HUP; cat >/dev/null; dir=$1; shift; \
                 \"$@\" >/dev/null 2>&1; rm -rf -- \"$dir\"",
            )
            .arg("eddy-testpg-watchdog")
            .arg(&self.dir)
            .args(stop)
            .current_dir("/")
            .stdin(Stdio::piped())
            // no inherited output: a pipe held open would keep a `| tee` waiting
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start the cleanup watchdog (sh): {e}"))?;
        self.watchdog_pipe = child.stdin.take();
        self.watchdog = Some(child);
        Ok(())
    }

    /// `pg_ctl stop -m immediate` as an argument list, for the watchdog.
    fn pg_ctl_stop_command(&self) -> Vec<std::ffi::OsString> {
        let cmd = self.command("pg_ctl");
        let mut argv = vec![cmd.get_program().to_owned()];
        argv.extend(cmd.get_args().map(ToOwned::to_owned));
        argv.push("-D".into());
        argv.push(self.data_dir().into_os_string());
        for a in ["stop", "-m", "immediate", "-w", "-t", PG_CTL_TIMEOUT_SECS] {
            argv.push(a.into());
        }
        argv
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        drop(self.watchdog_pipe.take());
        if let Some(mut child) = self.watchdog.take() {
            let _ = child.wait();
        }
    }
}

impl std::fmt::Debug for PgCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgCluster")
            .field("bin", &self.bin)
            .field("dir", &self.dir)
            .field("port", &self.port)
            .field("run_as", &self.run_as.as_ref().map(|u| &u.name))
            .finish()
    }
}

/// `Err` with the command's stderr (and the server log's tail) unless it succeeded.
fn check(what: &str, out: &Output, log: Option<&Path>) -> Result<(), String> {
    if out.status.success() {
        return Ok(());
    }
    let mut msg = format!(
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim(),
        String::from_utf8_lossy(&out.stdout).trim()
    );
    if let Some(log) = log
        && let Ok(text) = std::fs::read_to_string(log)
    {
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(15)..];
        let _ = write!(
            msg,
            "\nserver log ({}):\n{}",
            log.display(),
            tail.join("\n")
        );
    }
    Err(msg)
}

fn append(path: &Path, text: &str) -> Result<(), String> {
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| format!("cannot append to {}: {e}", path.display()))
}

/// Database names are put into SQL as they are, so only plain ones are accepted.
fn check_identifier(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "database name {name:?}: use lowercase letters, digits and _ (at most 63)"
        ))
    }
}

/// A port that was free a moment ago on 127.0.0.1.
fn free_port() -> Result<u16, String> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot find a free port: {e}"))
}

fn running_as_root() -> bool {
    // the owner of /proc/self is the process's effective uid (no libc, no unsafe)
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
        || id(&["-u"]).is_ok_and(|uid| uid == 0)
}

/// `postgres` (Debian's package creates it), else `nobody`.
fn unprivileged_user() -> Result<RunAs, String> {
    let tool = if on_path("runuser") {
        "runuser"
    } else if on_path("setpriv") {
        "setpriv"
    } else {
        return Err(
            "running as root, and neither runuser nor setpriv (util-linux) is there to run \
             initdb as an unprivileged user"
                .into(),
        );
    };
    for name in ["postgres", "nobody"] {
        if let (Ok(uid), Ok(gid)) = (id(&["-u", name]), id(&["-g", name])) {
            return Ok(RunAs {
                name: name.into(),
                uid,
                gid,
                tool,
            });
        }
    }
    Err("running as root, and neither user postgres nor nobody exists to run initdb as".into())
}

/// `id <args>` as a number.
fn id(args: &[&str]) -> Result<u32, String> {
    let out = Command::new("id")
        .args(args)
        .stderr(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run id: {e}"))?;
    if !out.status.success() {
        return Err(format!("id {args:?} failed"));
    }
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|e| format!("id {args:?}: {e}"))
}

fn on_path(program: &str) -> bool {
    find_on_path(program).is_some()
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// Whether `dir` holds the three server binaries.
fn has_server(dir: &Path) -> bool {
    ["initdb", "pg_ctl", "postgres"]
        .iter()
        .all(|b| dir.join(b).is_file())
}

/// `EDDY_PG_BIN`, else the newest `/usr/lib/postgresql/<version>/bin` with the server
/// in it (Debian's layout), else `pg_config --bindir`, else initdb's directory on PATH.
fn find_bin_dir() -> Result<Option<PathBuf>, String> {
    if let Some(dir) = std::env::var_os("EDDY_PG_BIN") {
        let dir = PathBuf::from(dir);
        return if has_server(&dir) {
            Ok(Some(dir))
        } else {
            Err(format!(
                "EDDY_PG_BIN={} does not hold initdb, pg_ctl and postgres",
                dir.display()
            ))
        };
    }
    let mut debian: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry
                .file_name()
                .to_str()?
                .split('.')
                .map(str::parse)
                .collect::<Result<Vec<u32>, _>>()
                .ok()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    debian.sort();
    if let Some((_, dir)) = debian.into_iter().rev().find(|(_, d)| has_server(d)) {
        return Ok(Some(dir));
    }
    if let Ok(out) = Command::new("pg_config")
        .arg("--bindir")
        .stderr(Stdio::null())
        .output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if has_server(&dir) {
            return Ok(Some(dir));
        }
    }
    Ok(find_on_path("initdb")
        .and_then(|p| std::fs::canonicalize(p).ok())
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .filter(|d| has_server(d)))
}

/// Polls `condition` until it holds or `timeout` passes; whether it held.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
