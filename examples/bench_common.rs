//! What the benchmark programs share: finding the release `eddy` binary and starting it
//! as a child process (`start_eddy`), a closed-loop HTTP/1.1 load generator built like
//! `wrk` (`run_load`, `Tally`), hyper connections for everything else (`connect`,
//! `exchange`), the click event they post, and small statistics. Each program includes it with
//! `#[path = "bench_common.rs"] mod common;` and uses the part it needs.
//!
//! With `EDDY_BENCH_POSTGRES` set to a PostgreSQL server's URL (e.g.
//! `postgres://postgres@127.0.0.1:5433`, no database), every eddy started here runs on a
//! fresh database of that server (`eddy serve --database`), dropped with the server.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;

/// Measured time starts after this warm-up.
pub const WARMUP: Duration = Duration::from_secs(1);
/// The size of one click event's JSON.
pub const EVENT_BYTES: usize = 200;

pub fn eddy_binary() -> Result<PathBuf> {
    let path = match std::env::var_os("EDDY_BIN") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/eddy"),
    };
    if !path.is_file() {
        bail!(
            "no eddy binary at {}: run `cargo build --release` first, or set EDDY_BIN",
            path.display()
        );
    }
    Ok(path.canonicalize().unwrap_or(path))
}

/// A server child process (eddy, or a benchmark's own no-op server); killed and reaped
/// when dropped, on error paths too.
pub struct ServerProcess {
    pub child: Child,
    pub port: u16,
    /// eddy's data directory and log, removed after the child is gone
    pub dir: Option<tempfile::TempDir>,
    /// eddy's PostgreSQL database (see [`POSTGRES_VAR`]), dropped after the child is gone
    pub database: Option<Database>,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ServerProcess {
    /// What eddy logged (warnings and errors) so far.
    pub fn log(&self) -> String {
        self.dir
            .as_ref()
            .and_then(|d| std::fs::read_to_string(d.path().join("eddy.log")).ok())
            .unwrap_or_default()
    }
}

/// The variable naming a PostgreSQL server for eddy to run on.
pub const POSTGRES_VAR: &str = "EDDY_BENCH_POSTGRES";

/// The PostgreSQL server of [`POSTGRES_VAR`], when it is set.
pub fn postgres_server() -> Option<String> {
    std::env::var(POSTGRES_VAR).ok().filter(|s| !s.is_empty())
}

/// `server` (a PostgreSQL URL) with its database replaced by `name`.
pub fn database_url(server: &str, name: &str) -> String {
    let (scheme, rest) = server.split_once("://").unwrap_or(("postgres", server));
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    let query = rest.find('?').map_or("", |i| &rest[i..]);
    format!("{scheme}://{authority}/{name}{query}")
}

/// A fresh database on a PostgreSQL server, dropped (with `dropdb --force`) with this.
pub struct Database {
    pub url: String,
    maintenance: String,
    name: String,
}

impl Database {
    pub async fn create(server: &str) -> Result<Self> {
        use sqlx::Connection;
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "eddy_bench_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let maintenance = database_url(server, "postgres");
        let mut conn = sqlx::PgConnection::connect(&maintenance)
            .await
            .with_context(|| format!("cannot connect to {maintenance} ({POSTGRES_VAR})"))?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .with_context(|| format!("cannot create database {name}"))?;
        Ok(Self {
            url: database_url(server, &name),
            maintenance,
            name,
        })
    }
}

impl Database {
    /// Waits (up to a minute) until no autovacuum worker is busy in this database: after
    /// a bulk load PostgreSQL vacuums and analyzes the new rows, which on two cores
    /// takes one of them from whatever is measured next.
    pub async fn settle(&self) -> Result<()> {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&self.url).await?;
        let deadline = Instant::now() + Duration::from_secs(60);
        // autovacuum starts within autovacuum_naptime (1 min by default) of the load:
        // do now what it would do then, and wait for any worker already started
        sqlx::raw_sql("VACUUM (ANALYZE)").execute(&mut conn).await?;
        while Instant::now() < deadline {
            let busy: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() \
                 AND backend_type = 'autovacuum worker'",
            )
            .fetch_one(&mut conn)
            .await?;
            if busy == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let _ = Command::new("dropdb")
            .args(["--force", "--if-exists"])
            .arg(format!("--maintenance-db={}", self.maintenance))
            .arg(&self.name)
            .stdout(Stdio::null())
            .status();
    }
}

/// Starts `eddy serve` with `extra` arguments on a free loopback port over a fresh data
/// directory (or a fresh PostgreSQL database, see [`POSTGRES_VAR`]), logging to
/// `eddy.log` beside it, and waits until `/healthz` answers 200.
pub async fn start_eddy(bin: &Path, extra: &[&str]) -> Result<ServerProcess> {
    let database = match postgres_server() {
        Some(server) => Some(Database::create(&server).await?),
        None => None,
    };
    let url = database.as_ref().map(|d| d.url.clone());
    let mut server = start_on(bin, url.as_deref(), extra).await?;
    server.database = database;
    Ok(server)
}

/// Starts another node of a cluster: `eddy serve` on the PostgreSQL database at `url`
/// (which outlives it), as [`start_eddy`] does otherwise.
pub async fn start_node(bin: &Path, url: &str, extra: &[&str]) -> Result<ServerProcess> {
    start_on(bin, Some(url), extra).await
}

async fn start_on(bin: &Path, database: Option<&str>, extra: &[&str]) -> Result<ServerProcess> {
    let dir = tempfile::tempdir().context("cannot create a temporary data directory")?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("cannot find a free port")?
        .port();
    let log =
        std::fs::File::create(dir.path().join("eddy.log")).context("cannot create eddy.log")?;
    let child = Command::new(bin)
        .arg("serve")
        .args(["--listen", &format!("127.0.0.1:{port}"), "--data"])
        .arg(dir.path().join("data"))
        .args(database.iter().flat_map(|url| ["--database", url]))
        .args(extra)
        .env("EDDY_LOG", "warn")
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let mut server = ServerProcess {
        child,
        port,
        dir: Some(dir),
        database: None,
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = server.child.try_wait()? {
            bail!(
                "eddy exited ({status}) before it was healthy; its log:\n{}",
                server.log()
            );
        }
        if healthz(port).await.is_ok_and(|s| s == StatusCode::OK) {
            return Ok(server);
        }
        if Instant::now() > deadline {
            bail!(
                "eddy did not answer GET /healthz with 200 within 15 s; its log:\n{}",
                server.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn healthz(port: u16) -> Result<StatusCode> {
    let mut sender = connect(port).await?;
    let req = Request::get("/healthz")
        .header(HOST, format!("127.0.0.1:{port}"))
        .body(Full::new(Bytes::new()))?;
    Ok(exchange(&mut sender, req).await?.0)
}

pub type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

pub async fn connect(port: u16) -> Result<Sender> {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

/// Sends one request on a keep-alive connection and reads the whole answer.
pub async fn exchange(
    sender: &mut Sender,
    req: Request<Full<Bytes>>,
) -> Result<(StatusCode, Bytes)> {
    sender.ready().await?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    Ok((status, resp.into_body().collect().await?.to_bytes()))
}

/// A single event (with its type) or a batch (without).
pub fn request(port: u16, path: String, ty: Option<&str>, body: Bytes) -> Request<Full<Bytes>> {
    let req = Request::post(path).header(HOST, format!("127.0.0.1:{port}"));
    let req = match ty {
        Some(ty) => req
            .header(CONTENT_TYPE, "application/json")
            .header("Event-Type", ty),
        None => req.header(CONTENT_TYPE, "application/vnd.eddy.events+json"),
    };
    req.body(Full::new(body))
        .expect("a request from valid parts")
}

/// What clients saw: successes and their latencies inside the measured window,
/// successes and errors over the whole run.
#[derive(Default)]
pub struct Tally {
    pub ok: u64,
    pub all_ok: u64,
    pub latencies_us: Vec<u32>,
    pub errors: u64,
    pub samples: Vec<String>,
}

impl Tally {
    pub fn error(&mut self, msg: String) {
        self.errors += 1;
        if self.samples.len() < 3 && !self.samples.contains(&msg) {
            self.samples.push(msg);
        }
    }

    pub fn success(&mut self, started: Instant, done: Instant, from: Instant, end: Instant) {
        self.all_ok += 1;
        if done >= from && done <= end {
            self.ok += 1;
            let us = u32::try_from(done.duration_since(started).as_micros());
            self.latencies_us.push(us.unwrap_or(u32::MAX));
        }
    }

    pub fn merge(&mut self, other: Tally) {
        self.ok += other.ok;
        self.all_ok += other.all_ok;
        self.latencies_us.extend(other.latencies_us);
        self.errors += other.errors;
        for s in other.samples {
            if self.samples.len() < 5 && !self.samples.contains(&s) {
                self.samples.push(s);
            }
        }
    }
}

pub type MakeRequest = dyn Fn(usize, u64) -> Request<Full<Bytes>> + Send + Sync;

/// Threads of the load generator, each with its own event loop.
pub const LOAD_THREADS: usize = 2;

/// Runs `conns` closed-loop clients for warm-up + `secs`.
///
/// Built like `wrk`, the load generator the ceilings in LIMITS.md were measured with:
/// [`LOAD_THREADS`] threads, each with a single-threaded runtime of its own, share the
/// connections; each connection is one task that writes its request and parses the
/// response itself. A client on hyper's connection API (a request task and a
/// connection task per connection on a work-stealing runtime, a channel between them)
/// costs more CPU per request the longer the server takes to answer (more wake-ups,
/// fewer ready sockets per poll), which on two shared cores penalised a slower server
/// beyond its own cost.
pub async fn run_load<F>(
    port: u16,
    conns: usize,
    secs: u64,
    ok: StatusCode,
    make: F,
) -> Result<Tally>
where
    F: Fn(usize, u64) -> Request<Full<Bytes>> + Send + Sync + 'static,
{
    let make: Arc<MakeRequest> = Arc::new(make);
    let from = Instant::now() + WARMUP;
    let window = (from, from + Duration::from_secs(secs));
    let threads = LOAD_THREADS.min(conns).max(1);
    let mut handles = Vec::with_capacity(threads);
    for t in 0..threads {
        let make = make.clone();
        let thread = std::thread::Builder::new()
            .name(format!("load-{t}"))
            .spawn(move || -> Result<Tally> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async move {
                    let tasks: Vec<_> = (t..conns)
                        .step_by(threads)
                        .map(|c| tokio::spawn(client(port, c, window, ok, make.clone())))
                        .collect();
                    let mut total = Tally::default();
                    for task in tasks {
                        total.merge(task.await.context("a client task panicked")?);
                    }
                    Ok(total)
                })
            })
            .context("cannot start a load thread")?;
        handles.push(thread);
    }
    tokio::task::spawn_blocking(move || {
        let mut total = Tally::default();
        for h in handles {
            let tally = h
                .join()
                .map_err(|_| anyhow::anyhow!("a load thread panicked"))??;
            total.merge(tally);
        }
        Ok(total)
    })
    .await?
}

/// One keep-alive connection sending requests one after another until the window ends,
/// reconnecting after a connection error or a `Connection: close`.
pub async fn client(
    port: u16,
    c: usize,
    (from, end): (Instant, Instant),
    expected: StatusCode,
    make: Arc<MakeRequest>,
) -> Tally {
    let (mut tally, mut conn, mut n) = (Tally::default(), None, 0);
    let (mut out, mut buf) = (Vec::with_capacity(1024), Vec::with_capacity(8192));
    while Instant::now() < end {
        let stream = match conn.as_mut() {
            Some(s) => s,
            None => match raw_connect(port).await {
                Ok(s) => conn.insert(s),
                Err(e) => {
                    tally.error(format!("connect: {e:#}"));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let req = make(c, n);
        n += 1;
        out.clear();
        encode(req, &mut out).await;
        let started = Instant::now();
        match round_trip(stream, &out, &mut buf).await {
            Ok(r) => {
                if r.status == expected.as_u16() {
                    tally.success(started, Instant::now(), from, end);
                } else {
                    let body = &buf[r.body.clone()];
                    let body = String::from_utf8_lossy(&body[..body.len().min(300)]);
                    tally.error(format!("{}: {body}", r.status));
                }
                if r.close {
                    conn = None;
                }
            }
            Err(e) => {
                tally.error(format!("{e:#}"));
                conn = None;
            }
        }
    }
    tally
}

async fn raw_connect(port: u16) -> Result<tokio::net::TcpStream> {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Writes `req` as HTTP/1.1 bytes (its headers as given, plus `Content-Length`).
async fn encode(req: Request<Full<Bytes>>, out: &mut Vec<u8>) {
    use std::io::Write;
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(never) => match never {},
    };
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let _ = write!(out, "{} {target} HTTP/1.1\r\n", parts.method);
    for (name, value) in &parts.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let _ = write!(out, "content-length: {}\r\n\r\n", body.len());
    out.extend_from_slice(&body);
}

/// A response read by [`round_trip`]: its status, where its body is in the buffer,
/// and whether the server closes the connection after it.
struct RawResponse {
    status: u16,
    body: std::ops::Range<usize>,
    close: bool,
}

/// Sends one request and reads its whole response into `buf` (a `Content-Length`
/// body, or none).
async fn round_trip(
    stream: &mut tokio::net::TcpStream,
    request: &[u8],
    buf: &mut Vec<u8>,
) -> Result<RawResponse> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(request).await?;
    buf.clear();
    loop {
        if buf.len() == buf.capacity() {
            buf.reserve(buf.capacity().max(4096));
        }
        if stream.read_buf(buf).await? == 0 {
            bail!("the server closed the connection");
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        let httparse::Status::Complete(head) = resp.parse(buf)? else {
            continue;
        };
        let status = resp.code.context("a response without a status")?;
        let (mut length, mut close) = (0, false);
        for h in resp.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                length = std::str::from_utf8(h.value)?.trim().parse::<usize>()?;
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                bail!("a chunked response (the load generator reads Content-Length bodies only)");
            } else if h.name.eq_ignore_ascii_case("connection") {
                close = h.value.eq_ignore_ascii_case(b"close");
            }
        }
        while buf.len() < head + length {
            buf.reserve(head + length - buf.len());
            if stream.read_buf(buf).await? == 0 {
                bail!("the server closed the connection inside a response body");
            }
        }
        return Ok(RawResponse {
            status,
            body: head..head + length,
            close,
        });
    }
}

/// A body of `events` click events in eddy's batch media type (`[{type, data}, ...]`).
pub fn batch_json(conn: usize, events: usize) -> Bytes {
    let events: Vec<String> = (0..events as u64)
        .map(|n| format!(r#"{{"type":"click","data":{}}}"#, click_json(conn, n)))
        .collect();
    format!("[{}]", events.join(",")).into()
}

/// A click event of exactly [`EVENT_BYTES`] bytes of JSON.
pub fn click_json(conn: usize, n: u64) -> String {
    let mut s = format!(
        r#"{{"url":"/products/{}","referrer":"https://www.example.com/search?q=item+{}","session":"s{conn:03}-{:08x}","ts":{},"pad":""#,
        n % 5000,
        n % 977,
        n / 50,
        now_ms()
    );
    let pad = EVENT_BYTES.saturating_sub(s.len() + 2);
    s.extend(std::iter::repeat_n('x', pad));
    s.push_str("\"}");
    s
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The `q` quantile of sorted microseconds, in milliseconds.
pub fn percentile_ms(sorted_us: &[u32], q: f64) -> f64 {
    match sorted_us.len() {
        0 => f64::NAN,
        n => f64::from(sorted_us[((n - 1) as f64 * q).round() as usize]) / 1000.0,
    }
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// A measurement: rate, latency percentiles, errors and a few failure samples.
pub struct Stats {
    /// successes (× events per success) per second
    pub rate: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: u64,
    pub samples: Vec<String>,
    /// the machine's steal time while it was measured, in percent, where the program
    /// measures it (see [`CpuClock`])
    pub steal_pct: Option<f64>,
}

impl Stats {
    pub fn new(mut t: Tally, seconds: u64, per_ok: u64) -> Self {
        t.latencies_us.sort_unstable();
        let pct = |q: f64| match t.latencies_us.len() {
            0 => f64::NAN,
            n => f64::from(t.latencies_us[((n - 1) as f64 * q).round() as usize]) / 1000.0,
        };
        Self {
            rate: (t.ok * per_ok) as f64 / seconds as f64,
            p50_ms: pct(0.50),
            p99_ms: pct(0.99),
            errors: t.errors,
            samples: t.samples,
            steal_pct: None,
        }
    }

    /// Column-wise medians; errors are summed.
    pub fn median(all: &[Stats]) -> Self {
        Self {
            rate: median(all.iter().map(|s| s.rate).collect()),
            p50_ms: median(all.iter().map(|s| s.p50_ms).collect()),
            p99_ms: median(all.iter().map(|s| s.p99_ms).collect()),
            errors: all.iter().map(|s| s.errors).sum(),
            samples: Vec::new(),
            steal_pct: all
                .iter()
                .map(|s| s.steal_pct)
                .collect::<Option<Vec<_>>>()
                .map(median),
        }
    }

    pub fn print(&self, round: &str, name: &str) {
        let steal = self
            .steal_pct
            .map_or(String::new(), |p| format!(" {p:>7.1}"));
        println!(
            "{round:<6} {name:<11} {:>12.0} {:>8.2} {:>8.2} {:>7}{steal}",
            self.rate, self.p50_ms, self.p99_ms, self.errors
        );
        for s in &self.samples {
            println!("         ! {s}");
        }
    }
}

/// The load settings of the single-event benchmarks.
#[derive(Clone, Copy)]
pub struct Settings {
    pub rounds: usize,
    pub seconds: u64,
    pub connections: usize,
}

impl Settings {
    /// Reads `[--rounds N] [--seconds S] [--connections C] [--quick]`.
    pub fn parse(program: &str, args: &[String]) -> Result<Self> {
        let quick = args.iter().any(|a| a == "--quick");
        let mut s = Settings {
            rounds: if quick { 1 } else { 3 },
            seconds: if quick { 3 } else { 10 },
            connections: 64,
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let mut value = || -> Result<u64> {
                let v = it.next().with_context(|| format!("{arg} needs a value"))?;
                v.parse()
                    .with_context(|| format!("{arg} {v}: not a whole number"))
            };
            match arg.as_str() {
                "--rounds" => s.rounds = value()? as usize,
                "--seconds" => s.seconds = value()?,
                "--connections" => s.connections = value()? as usize,
                "--quick" => {}
                "-h" | "--help" => {
                    println!(
                        "usage: {program} [--rounds N] [--seconds S] [--connections C] [--quick]"
                    );
                    std::process::exit(0);
                }
                other => bail!("unknown argument {other:?}; try --help"),
            }
        }
        if s.rounds == 0 || s.seconds == 0 || s.connections == 0 {
            bail!("--rounds, --seconds and --connections must be at least 1");
        }
        Ok(s)
    }
}

/// Median steal time (percent) from which a benchmark's results carry a warning.
pub const STEAL_WARNING: f64 = 5.0;

/// Prints a warning when `steal` (a median steal time in percent, see [`CpuClock`]) is
/// high enough to make the figures printed before it meaningless.
pub fn warn_if_stolen(steal: f64) {
    if steal >= STEAL_WARNING {
        println!(
            "note: the hypervisor took {steal:.0}% of this machine's CPU (median steal time): \
             the host is oversubscribed, so the rates above are low and the latencies high, \
             and eddy's figures suffer more than a ceiling's, as its answers wait on fsync and \
             thread wake-ups that a stolen CPU delays"
        );
    }
}

/// The machine's CPU time so far, from the first line of `/proc/stat` (clock ticks),
/// for the steal time between two readings.
#[derive(Clone, Copy)]
pub struct CpuClock {
    total: u64,
    steal: u64,
}

impl CpuClock {
    /// Now, or `None` where `/proc/stat` cannot be read (not Linux).
    pub fn now() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        // cpu  user nice system idle iowait irq softirq steal guest guest_nice
        let ticks: Vec<u64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .take(8)
            .map(|f| f.parse().ok())
            .collect::<Option<_>>()?;
        Some(Self {
            total: ticks.iter().sum(),
            steal: *ticks.get(7)?,
        })
    }

    /// The share of the machine's CPU time since `self` that its hypervisor gave to
    /// other guests (steal time), in percent. A virtual machine whose host is
    /// oversubscribed shows it here, and then every figure measured meanwhile is low.
    pub fn steal_percent_since(self) -> f64 {
        match Self::now() {
            Some(now) if now.total > self.total => {
                100.0 * (now.steal - self.steal) as f64 / (now.total - self.total) as f64
            }
            _ => f64::NAN,
        }
    }
}

/// Deploys JavaScript code at `path` (a reducer or a pipe) over `base`.
pub async fn deploy_js(client: &reqwest::Client, base: &str, path: &str, code: &str) -> Result<()> {
    let r = client
        .put(format!("{base}{path}"))
        .header("Content-Type", "application/javascript")
        .body(code.to_owned())
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("deploy {path}: {} {}", r.status(), r.text().await?);
    }
    Ok(())
}

/// Waits until `reducer` (its state URL) has folded `index`; answers its state.
pub async fn wait_folded(
    client: &reqwest::Client,
    base: &str,
    reducer: &str,
    index: usize,
) -> Result<serde_json::Value> {
    loop {
        let r = client
            .get(format!("{base}{reducer}?min-index={index}&wait=60000"))
            .send()
            .await?;
        let at: i64 = r
            .headers()
            .get("reducer-index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(-1);
        let body: serde_json::Value = r.json().await?;
        if at >= index as i64 {
            return Ok(body);
        }
    }
}

/// The click event the reducer benchmarks fold: a page among 50, a user among 1000.
pub fn click_value(n: usize) -> serde_json::Value {
    serde_json::json!({"url": format!("/products/{}", n % 50), "user": format!("u-{}", n % 1000), "referrer": "https://example.com/search?q=widgets", "ms": n % 5000, "ok": true})
}

/// Stores `events` [`click_value`] events in `url` (4 connections, batches of 1000);
/// answers how many.
pub async fn store_clicks(client: &reqwest::Client, url: &str, events: usize) -> Result<usize> {
    let batches = events.div_ceil(1000);
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let (client, url, next) = (client.clone(), url.to_owned(), next.clone());
            tokio::spawn(async move {
                loop {
                    let b = next.fetch_add(1, Ordering::SeqCst) as usize;
                    if b >= batches {
                        return Ok::<_, anyhow::Error>(());
                    }
                    let events: Vec<serde_json::Value> = (0..1000)
                        .map(|i| serde_json::json!({"type": "click", "data": click_value(b * 1000 + i)}))
                        .collect();
                    let r = client
                        .post(&url)
                        .header("Content-Type", "application/vnd.eddy.events+json")
                        .json(&events)
                        .send()
                        .await?;
                    if r.status() != 201 {
                        bail!("batch append: {}", r.status());
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    Ok(batches * 1000)
}

/// Reads `--name N` arguments into the numbers `named` lists (their defaults stay
/// where an argument is not given); anything else is an error naming the usage.
pub fn number_args(program: &str, named: &mut [(&str, &mut usize)]) -> Result<()> {
    let usage: Vec<String> = named.iter().map(|(n, _)| format!("[--{n} N]")).collect();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let Some((_, slot)) = named
            .iter_mut()
            .find(|(n, _)| a.strip_prefix("--") == Some(*n))
        else {
            bail!("unknown argument {a}; usage: {program} {}", usage.join(" "));
        };
        **slot = it
            .next()
            .with_context(|| format!("{a} needs a value"))?
            .parse()
            .with_context(|| format!("{a} takes a number"))?;
    }
    Ok(())
}

/// The body of a benchmark's `main`: finds the eddy binary (see [`eddy_binary`]),
/// says which, and runs `run` with it on a two-worker runtime (the machines have two
/// cores), with rustls's crypto provider installed for reqwest.
pub fn run_with_eddy<F: std::future::Future<Output = Result<()>>>(
    run: impl FnOnce(PathBuf) -> F,
) -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let bin = eddy_binary()?;
    println!("eddy binary: {}", bin.display());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run(bin))
}
