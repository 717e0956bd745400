//! Consumer benchmark for eddy: how soon live consumers see new events, what they cost
//! ingest, and how fast webhooks deliver, against the release server.
//!
//! 1. SSE latency: 100 subscribers (`?data=true`) on one stream while a paced producer
//!    POSTs 1000 events/s for 10 s (+1 s warm-up, not counted) over up to 16 keep-alive
//!    connections. Each event carries its send time (`{"t_ns": …}`, nanoseconds since an
//!    `Instant` the producer and the subscribers of this process share, taken just
//!    before the POST goes out); latency = when the subscriber parsed the event minus
//!    that, over every (subscriber, event) pair.
//! 2. Fan-out: the same with 1000 subscribers at 200 events/s for 5 s, and the server's
//!    RSS before they attach, with them attached, and after the load.
//! 3. Ingest with subscribers: 64 connections POST single 200-byte events in a closed
//!    loop for 5 s (+1 s warm-up), as bench_ingest does, with no subscribers, with 100
//!    subscribers on the same stream (index-only frames, counted, not parsed; every one
//!    must arrive) and with 100 on another stream of the account (the server holds them,
//!    the clients get nothing). Each round measures all three, alternating the order;
//!    it prints every row, the ratios to "none" and the medians. These subscribers are
//!    plain HTTP/1.1 connections that count frame starts in each read with memchr (see
//!    `Reader::count`): they stand in for consumers on other machines, so they are kept
//!    as cheap as a reader can be on the cores they share with the server.
//! 4. Webhooks: a local axum receiver answering 200 at once and one webhook; 20 000
//!    events are appended in 1000-event batches as fast as possible and the receiver is
//!    timed until it sees the last index, with `data=false` (far-behind index-only
//!    deliveries coalesce) and `data=true` (every event delivered), alternating.
//!
//! Every measurement starts a fresh `eddy serve` child (`EDDY_LOG=warn`, empty temporary
//! data directory) and ends with every client connection closed and the child killed.
//! The producers, the subscribers and the server share this machine's cores, so the
//! rows also show the CPU each side used (cores = CPU seconds / wall seconds).
//! 1000 subscribers need about 1100 open files here and in the server: the program
//! raises its soft limit (inherited by the server) with util-linux `prlimit` when it is
//! lower, or asks for `ulimit -n 4096`.
//!
//! Run: `cargo build --release && cargo run --release -p eddy-server --example
//! bench_consumers`. Flags: `--rounds N` (3, sections 3 and 4), `--quick` (short runs, one
//! round), `--only latency|fanout|ingest|webhooks` (one section). The eddy binary is
//! `target/release/eddy`, or `$EDDY_BIN`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use futures::StreamExt;
use hyper::StatusCode;
use serde_json::Value;
use tokio::sync::{Semaphore, mpsc, watch};

#[path = "bench_common.rs"]
mod common;
use common::*;

/// Keep-alive connections the paced producer may have in flight at once.
const PACED_CONNECTIONS: usize = 16;
/// Subscribers connecting at once (the rest wait, so the listen backlog never overflows).
const ATTACH_AT_ONCE: usize = 64;
const LATENCY_SUBSCRIBERS: usize = 100;
const LATENCY_RATE: u64 = 1000;
const FANOUT_SUBSCRIBERS: usize = 1000;
const FANOUT_RATE: u64 = 200;
const INGEST_CONNECTIONS: usize = 64;
const INGEST_SUBSCRIBERS: usize = 100;
const HOOK_BATCH: usize = 1000;
/// Open files needed by the 1000-subscriber section, with room to spare.
const NEED_FILES: u64 = 2048;

struct Settings {
    rounds: usize,
    latency_secs: u64,
    fanout_secs: u64,
    ingest_secs: u64,
    hook_events: usize,
    /// the one section to run (`--only`), or all of them
    only: Option<Section>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Section {
    Latency,
    Fanout,
    Ingest,
    Webhooks,
}

impl Settings {
    fn runs(&self, section: Section) -> bool {
        self.only.is_none_or(|o| o == section)
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let settings = parse_args(&args)?;
    let eddy = eddy_binary()?;
    let files = ensure_open_files(NEED_FILES)?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(settings, eddy, files))
}

fn parse_args(args: &[String]) -> Result<Settings> {
    let quick = args.iter().any(|a| a == "--quick");
    let mut s = if quick {
        Settings {
            rounds: 1,
            latency_secs: 3,
            fanout_secs: 2,
            ingest_secs: 2,
            hook_events: 5000,
            only: None,
        }
    } else {
        Settings {
            rounds: 3,
            latency_secs: 10,
            fanout_secs: 5,
            ingest_secs: 5,
            hook_events: 20_000,
            only: None,
        }
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--rounds" => {
                let v = it.next().context("--rounds needs a value")?;
                s.rounds = v.parse().with_context(|| format!("--rounds {v}"))?;
            }
            "--only" => {
                let v = it.next().context("--only needs a section")?;
                s.only = Some(match v.as_str() {
                    "latency" => Section::Latency,
                    "fanout" => Section::Fanout,
                    "ingest" => Section::Ingest,
                    "webhooks" => Section::Webhooks,
                    other => bail!(
                        "--only {other:?}: the sections are latency, fanout, ingest and webhooks"
                    ),
                });
            }
            "--quick" => {}
            "-h" | "--help" => {
                println!(
                    "usage: bench_consumers [--rounds N] [--quick] \
                     [--only latency|fanout|ingest|webhooks]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}; try --help"),
        }
    }
    if s.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    Ok(s)
}

/// The soft and hard limits on open files, from `/proc/self/limits`.
fn open_file_limits() -> Option<(u64, String)> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let mut fields = line["Max open files".len()..].split_whitespace();
    let soft = fields.next()?;
    let hard = fields.next()?.to_owned();
    let soft = if soft == "unlimited" {
        u64::MAX
    } else {
        soft.parse().ok()?
    };
    Some((soft, hard))
}

/// Makes sure this process (and so the servers it starts) may open `need` files: raises
/// the soft limit up to the hard one with `prlimit` (no privilege needed) if it is lower.
fn ensure_open_files(need: u64) -> Result<u64> {
    let (soft, hard) = open_file_limits().context("cannot read /proc/self/limits")?;
    if soft >= need {
        return Ok(soft);
    }
    let hard_n = hard.parse::<u64>().unwrap_or(u64::MAX);
    let want = hard_n.min(need.max(4096));
    let _ = Command::new("prlimit")
        .arg(format!("--pid={}", std::process::id()))
        .arg(format!("--nofile={want}:{hard}"))
        .status();
    let (soft, _) = open_file_limits().context("cannot read /proc/self/limits")?;
    if soft < need {
        bail!(
            "the open-file limit is {soft} (hard {hard}) and could not be raised; 1000 \
             subscribers need about {need}: run `ulimit -n 4096` first"
        );
    }
    Ok(soft)
}

async fn run(s: Settings, bin: PathBuf, files: u64) -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let started = Instant::now();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("eddy consumer benchmark");
    println!("machine:  {cores} cores (producers, subscribers and the server share them)");
    println!("eddy:     {}", bin.display());
    println!("files:    open-file soft limit {files}");
    println!(
        "load:     {} (1, 5, 15 min averages before the run)",
        load_average()
    );
    println!(
        "settings: {} round(s) for ingest and webhooks, {} s (+{} s warm-up) per load",
        s.rounds,
        s.ingest_secs,
        WARMUP.as_secs()
    );

    let (mut one, mut two) = (None, None);
    if s.runs(Section::Latency) || s.runs(Section::Fanout) {
        println!(
            "\n1-2. SSE delivery latency (POST sent -> subscriber parsed the event, ?data=true), \
             paced producer with up to {PACED_CONNECTIONS} connections in flight; warm-up not \
             counted"
        );
        println!(
            "{:<10} {:>5} {:>7} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>9} {:>6} {:>6} {:>6}",
            "section",
            "subs",
            "rate/s",
            "achieved",
            "pairs",
            "p50 ms",
            "p99 ms",
            "max ms",
            "missing",
            "POST p99",
            "srv",
            "bench",
            "steal%"
        );
    }
    if s.runs(Section::Latency) {
        let row = latency(&bin, LATENCY_SUBSCRIBERS, LATENCY_RATE, s.latency_secs).await?;
        row.print("latency");
        one = Some(row);
    }
    if s.runs(Section::Fanout) {
        let row = latency(&bin, FANOUT_SUBSCRIBERS, FANOUT_RATE, s.fanout_secs).await?;
        row.print("fan-out");
        println!(
            "fan-out server RSS: {:.1} MiB before the subscribers attached, {:.1} MiB with {} \
             attached ({:.1} KiB each), {:.1} MiB after the load",
            row.rss_before,
            row.rss_attached,
            FANOUT_SUBSCRIBERS,
            (row.rss_attached - row.rss_before) * 1024.0 / FANOUT_SUBSCRIBERS as f64,
            row.rss_after
        );
        two = Some(row);
    }
    if one.is_some() || two.is_some() {
        println!(
            "(srv, bench: CPU cores used by the server and by this program over the load; \
             steal%: the machine's CPU time its hypervisor gave to other guests meanwhile; \
             latency run {} s at {LATENCY_RATE}/s, fan-out run {} s at {FANOUT_RATE}/s)",
            s.latency_secs, s.fanout_secs
        );
        warn_if_stolen(median(
            one.iter().chain(&two).map(|r| r.steal_pct).collect(),
        ));
    }
    for sample in one.iter().chain(&two).flat_map(|r| &r.samples) {
        println!("  ! {sample}");
    }

    let mut ratios = None;
    if s.runs(Section::Ingest) {
        println!(
            "\n3. ingest: {INGEST_CONNECTIONS} connections POSTing single {EVENT_BYTES}-byte \
             events for {} s (+{} s warm-up); subscribers: none, {INGEST_SUBSCRIBERS} on the \
             same stream (index-only, every frame counted), {INGEST_SUBSCRIBERS} on another \
             stream",
            s.ingest_secs,
            WARMUP.as_secs()
        );
        ratios = Some(ingest_section(&bin, &s).await?);
    }

    let mut hooks = None;
    if s.runs(Section::Webhooks) {
        println!(
            "\n4. webhooks: {} events in {HOOK_BATCH}-event batches to one webhook; time from \
             the first batch POST until the receiver saw the last index",
            s.hook_events
        );
        hooks = Some(webhook_section(&bin, &s).await?);
    }

    let met = |ok: bool| if ok { "met" } else { "NOT met" };
    println!("\nsummary");
    if let Some(one) = &one {
        println!(
            "  SSE p99, {LATENCY_SUBSCRIBERS} subscribers at {LATENCY_RATE}/s: {:.2} ms (target \
             < 5 ms: {})",
            one.p99_ms,
            met(one.p99_ms < 5.0)
        );
    }
    if let Some(two) = &two {
        println!(
            "  SSE p50/p99, {FANOUT_SUBSCRIBERS} subscribers at {FANOUT_RATE}/s: {:.2}/{:.2} ms; \
             server RSS {:.1} -> {:.1} MiB",
            two.p50_ms, two.p99_ms, two.rss_before, two.rss_attached
        );
    }
    if let Some((same, other)) = ratios {
        println!(
            "  ingest with {INGEST_SUBSCRIBERS} subscribers / without: {same:.3} on the same \
             stream (target >= 0.8: {}), {other:.3} on another stream",
            met(same >= 0.8)
        );
    }
    if let Some(hooks) = hooks {
        println!("  webhook deliveries/s (data=true): {hooks:.0}");
    }

    println!(
        "\ntotal run time: {:.0} s; load averages after it: {}",
        started.elapsed().as_secs_f64(),
        load_average()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 1-2. latency and fan-out

struct LatencyRow {
    subscribers: usize,
    rate: u64,
    achieved: f64,
    pairs: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    missing: u64,
    post_p99_ms: f64,
    server_cores: f64,
    bench_cores: f64,
    /// the machine's steal time during the load, in percent (see [`CpuClock`])
    steal_pct: f64,
    rss_before: f64,
    rss_attached: f64,
    rss_after: f64,
    samples: Vec<String>,
}

impl LatencyRow {
    fn print(&self, section: &str) {
        println!(
            "{section:<10} {:>5} {:>7} {:>9.1} {:>9} {:>8.2} {:>8.2} {:>8.2} {:>8} {:>9.2} {:>6.2} {:>6.2} {:>6.1}",
            self.subscribers,
            self.rate,
            self.achieved,
            self.pairs,
            self.p50_ms,
            self.p99_ms,
            self.max_ms,
            self.missing,
            self.post_p99_ms,
            self.server_cores,
            self.bench_cores,
            self.steal_pct
        );
    }
}

async fn latency(bin: &Path, subscribers: usize, rate: u64, secs: u64) -> Result<LatencyRow> {
    let eddy = start_eddy(bin, false).await?;
    eddy.append("/bench/live", r#"{"setup":true}"#).await?;
    let rss_before = eddy.rss_mib();
    let epoch = Instant::now();
    let from_ns = Arc::new(AtomicU64::new(u64::MAX));
    let mode = Mode::Latency {
        epoch,
        from_ns: from_ns.clone(),
    };
    let readers = attach(&eddy, "/bench/live?data=true", subscribers, mode).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_attached = eddy.rss_mib();
    let gauge = eddy.metric("eddy_subscribers").await?;
    if gauge != subscribers as f64 {
        bail!("{subscribers} subscribers attached but eddy_subscribers is {gauge}");
    }

    let cpu = ProcessClock::start(&eddy);
    let machine = CpuClock::now();
    let from = Instant::now() + WARMUP;
    from_ns.store(
        from.duration_since(epoch).as_nanos() as u64,
        Ordering::Relaxed,
    );
    let total = rate * (WARMUP.as_secs() + secs);
    let load = paced_load(eddy.port, "/bench/live", rate, total, from, epoch).await?;
    let cpu = cpu.stop(&eddy);
    let steal_pct = machine.map_or(f64::NAN, CpuClock::steal_percent_since);
    // every subscriber should get every event; give stragglers a moment
    readers.wait_for(load.ok, Duration::from_secs(10)).await;
    let rss_after = eddy.rss_mib();
    let mut out = readers.finish().await?;
    out.latencies_us.sort_unstable();
    let missing = out
        .per_subscriber
        .iter()
        .map(|&n| load.ok.saturating_sub(n))
        .sum();
    let mut samples = load.samples;
    samples.extend(out.samples);
    if out.order_errors > 0 {
        samples.push(format!(
            "{} events arrived out of order or repeated",
            out.order_errors
        ));
    }
    samples.extend(log_warnings(&eddy));
    Ok(LatencyRow {
        subscribers,
        rate,
        achieved: load.achieved,
        pairs: out.latencies_us.len(),
        p50_ms: percentile_ms(&out.latencies_us, 0.50),
        p99_ms: percentile_ms(&out.latencies_us, 0.99),
        max_ms: percentile_ms(&out.latencies_us, 1.0),
        missing,
        post_p99_ms: percentile_ms(&load.post_us, 0.99),
        server_cores: cpu.server_cores,
        bench_cores: cpu.bench_cores,
        steal_pct,
        rss_before,
        rss_attached,
        rss_after,
        samples,
    })
}

struct PacedResult {
    /// events appended (201), warm-up included
    ok: u64,
    /// events per second sent in the measured part
    achieved: f64,
    /// POST latencies in the measured part, sorted
    post_us: Vec<u32>,
    samples: Vec<String>,
}

/// POSTs `total` events at `rate` per second (a tokio interval, catching up in bursts
/// when late), each on an idle connection of a small pool, so several can be in flight.
async fn paced_load(
    port: u16,
    path: &'static str,
    rate: u64,
    total: u64,
    from: Instant,
    epoch: Instant,
) -> Result<PacedResult> {
    let (idle_tx, mut idle_rx) = mpsc::channel(PACED_CONNECTIONS);
    for _ in 0..PACED_CONNECTIONS {
        idle_tx.send(connect(port).await?).await?;
    }
    let tally = Arc::new(Mutex::new(Tally::default()));
    let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate));
    let mut tasks = tokio::task::JoinSet::new();
    let (mut first, mut last, mut measured) = (None, None, 0u64);
    for _ in 0..total {
        tick.tick().await;
        let mut conn = idle_rx
            .recv()
            .await
            .context("every producer connection failed")?;
        let now = Instant::now();
        if now >= from {
            first.get_or_insert(now);
            last = Some(now);
            measured += 1;
        }
        let (tally, idle_tx) = (tally.clone(), idle_tx.clone());
        tasks.spawn(async move {
            let sent = Instant::now();
            let t_ns = sent.duration_since(epoch).as_nanos();
            let body = Bytes::from(format!(r#"{{"t_ns":{t_ns}}}"#));
            let result = exchange(&mut conn, request(port, path.into(), Some("tick"), body)).await;
            let done = Instant::now();
            let broken = {
                let mut t = tally.lock().unwrap_or_else(|e| e.into_inner());
                match result {
                    Ok((StatusCode::CREATED, _)) => t.success(sent, done, from, far_future()),
                    Ok((status, body)) => {
                        let body = String::from_utf8_lossy(&body[..body.len().min(300)]);
                        t.error(format!("POST: {status}: {body}"));
                    }
                    Err(e) => t.error(format!("POST: {e:#}")),
                }
                t.errors > 0 && conn.is_closed()
            };
            if broken {
                match connect(port).await {
                    Ok(c) => conn = c,
                    Err(_) => return,
                }
            }
            let _ = idle_tx.send(conn).await;
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let mut t = std::mem::take(&mut *tally.lock().unwrap_or_else(|e| e.into_inner()));
    t.latencies_us.sort_unstable();
    let achieved = match (first, last) {
        (Some(f), Some(l)) if l > f => (measured - 1) as f64 / l.duration_since(f).as_secs_f64(),
        _ => f64::NAN,
    };
    if t.errors > 0 {
        t.samples.insert(0, format!("{} POSTs failed", t.errors));
    }
    Ok(PacedResult {
        ok: t.all_ok,
        achieved,
        post_us: t.latencies_us,
        samples: t.samples,
    })
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400)
}

// ---------------------------------------------------------------------------------------
// SSE readers

/// What a reader does with its frames.
#[derive(Clone)]
enum Mode {
    /// Counts event frames (a frame that starts with `id:`), parses nothing.
    Count,
    /// Parses each event's id and `t_ns`; records the latency of events sent from
    /// `from_ns` on.
    Latency {
        epoch: Instant,
        from_ns: Arc<AtomicU64>,
    },
}

#[derive(Default)]
struct ReaderOut {
    /// events each subscriber received
    per_subscriber: Vec<u64>,
    /// chunks read from the response bodies
    reads: u64,
    latencies_us: Vec<u32>,
    order_errors: u64,
    samples: Vec<String>,
}

/// Subscribers reading `bytes_stream()`s in spawned tasks, until told to stop.
struct Readers {
    tasks: Vec<tokio::task::JoinHandle<ReaderOut>>,
    counts: Arc<Vec<AtomicU64>>,
    stop: watch::Sender<bool>,
}

/// Attaches `n` subscribers to `path` and waits until each has its response headers
/// (eddy answers them once the subscription is registered at the live end).
async fn attach(eddy: &Eddy, path: &str, n: usize, mode: Mode) -> Result<Readers> {
    let client = reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(0)
        .build()?;
    let url = format!("{}{path}", eddy.base);
    let counts: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
    let (stop, stop_rx) = watch::channel(false);
    let gate = Arc::new(Semaphore::new(ATTACH_AT_ONCE));
    let ready = Arc::new(AtomicUsize::new(0));
    let tasks = (0..n)
        .map(|i| {
            let reader = Reader {
                client: client.clone(),
                url: url.clone(),
                mode: mode.clone(),
                counts: counts.clone(),
                i,
                gate: gate.clone(),
                ready: ready.clone(),
                stop: stop_rx.clone(),
            };
            tokio::spawn(reader.run())
        })
        .collect();
    let readers = Readers {
        tasks,
        counts,
        stop,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while ready.load(Ordering::Acquire) < n {
        if Instant::now() > deadline {
            let out = readers.finish().await?;
            bail!(
                "only {} of {n} subscribers attached within 60 s: {:?}",
                ready.load(Ordering::Acquire),
                out.samples
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(readers)
}

impl Readers {
    /// Waits until every subscriber has `total` events; the time it took, or `None`
    /// after `timeout`.
    async fn wait_for(&self, total: u64, timeout: Duration) -> Option<Duration> {
        let started = Instant::now();
        loop {
            if self
                .counts
                .iter()
                .all(|c| c.load(Ordering::Relaxed) >= total)
            {
                return Some(started.elapsed());
            }
            if started.elapsed() > timeout {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Stops every reader (closing its connection) and merges what they saw.
    async fn finish(self) -> Result<ReaderOut> {
        let _ = self.stop.send(true);
        let mut all = ReaderOut::default();
        for t in self.tasks {
            let out = t.await.context("a subscriber task panicked")?;
            all.per_subscriber.extend(out.per_subscriber);
            all.latencies_us.extend(out.latencies_us);
            all.reads += out.reads;
            all.order_errors += out.order_errors;
            for s in out.samples {
                if all.samples.len() < 3 && !all.samples.contains(&s) {
                    all.samples.push(s);
                }
            }
        }
        Ok(all)
    }
}

struct Reader {
    client: reqwest::Client,
    url: String,
    mode: Mode,
    counts: Arc<Vec<AtomicU64>>,
    i: usize,
    gate: Arc<Semaphore>,
    ready: Arc<AtomicUsize>,
    stop: watch::Receiver<bool>,
}

impl Reader {
    async fn run(self) -> ReaderOut {
        match self.mode {
            Mode::Count => self.count().await,
            Mode::Latency { .. } => self.parse().await,
        }
    }

    /// A counting subscriber: a plain HTTP/1.1 GET on its own connection, then reads
    /// of up to 256 KiB, each searched for frame starts with memchr (the latency
    /// subscribers go through reqwest and parse every frame). Counting needs no
    /// dechunking: `\nid: ` starts every event frame, after the blank line that ends
    /// the frame before or after a chunk's size line, and occurs nowhere else. These
    /// readers stand in for consumers on other machines but share the server's two
    /// cores, so they are kept as cheap as a reader can be.
    async fn count(mut self) -> ReaderOut {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut out = ReaderOut {
            per_subscriber: vec![0],
            ..ReaderOut::default()
        };
        let permit = self.gate.clone().acquire_owned().await;
        let opened = async {
            let url = reqwest::Url::parse(&self.url)?;
            let port = url.port().context("the subscription URL has no port")?;
            let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
            conn.set_nodelay(true)?;
            let target = match url.query() {
                Some(q) => format!("{}?{q}", url.path()),
                None => url.path().to_owned(),
            };
            conn.write_all(
                format!(
                    "GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
                     Accept: text/event-stream\r\n\r\n"
                )
                .as_bytes(),
            )
            .await?;
            // the response head, and whatever of the body came with it
            let mut head = Vec::new();
            let mut buf = vec![0u8; 4096];
            loop {
                let n = conn.read(&mut buf).await?;
                if n == 0 {
                    bail!("the server closed the subscription before answering");
                }
                head.extend_from_slice(&buf[..n]);
                let mut headers = [httparse::EMPTY_HEADER; 32];
                let mut resp = httparse::Response::new(&mut headers);
                if let httparse::Status::Complete(len) = resp.parse(&head)? {
                    if resp.code != Some(200) {
                        bail!("subscribe: {:?}", resp.code);
                    }
                    head.drain(..len);
                    return Ok((conn, head));
                }
            }
        };
        let (mut conn, rest) = tokio::select! {
            r = opened => match r {
                Ok(c) => c,
                Err(e) => {
                    out.samples.push(format!("{e:#}"));
                    return out;
                }
            },
            _ = self.stop.changed() => return out,
        };
        drop(permit);
        self.ready.fetch_add(1, Ordering::AcqRel);
        let mut tail = Vec::new();
        let mut events = count_frames(&mut tail, &rest);
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = tokio::select! {
                r = conn.read(&mut buf) => r,
                _ = self.stop.changed() => break,
            };
            match n {
                Ok(0) => {
                    out.samples.push("the server ended a subscription".into());
                    break;
                }
                Ok(n) => {
                    out.reads += 1;
                    events += count_frames(&mut tail, &buf[..n]);
                    self.counts[self.i].store(events, Ordering::Relaxed);
                }
                Err(e) => {
                    out.samples.push(format!("subscription read: {e}"));
                    break;
                }
            }
        }
        out.per_subscriber[0] = events;
        out
    }

    /// A parsing subscriber (reqwest): every frame's id and send time.
    async fn parse(mut self) -> ReaderOut {
        let mut out = ReaderOut {
            per_subscriber: vec![0],
            ..ReaderOut::default()
        };
        let permit = self.gate.clone().acquire_owned().await;
        let sent = self
            .client
            .get(&self.url)
            .header("Accept", "text/event-stream")
            .send();
        let resp = tokio::select! {
            r = sent => r,
            _ = self.stop.changed() => return out,
        };
        let resp = match resp {
            Ok(r) if r.status() == 200 => r,
            Ok(r) => {
                out.samples.push(format!("subscribe: {}", r.status()));
                return out;
            }
            Err(e) => {
                out.samples.push(format!("subscribe: {e:#}"));
                return out;
            }
        };
        drop(permit);
        self.ready.fetch_add(1, Ordering::AcqRel);
        let mut body = resp.bytes_stream();
        let (mut buf, mut next_id) = (Vec::new(), None::<u64>);
        let mut events = 0u64;
        loop {
            let chunk = tokio::select! {
                c = body.next() => c,
                _ = self.stop.changed() => break,
            };
            let chunk = match chunk {
                Some(Ok(c)) => c,
                Some(Err(e)) => {
                    out.samples.push(format!("subscription read: {e:#}"));
                    break;
                }
                None => {
                    out.samples.push("the server ended a subscription".into());
                    break;
                }
            };
            out.reads += 1;
            if let Mode::Latency { epoch, from_ns } = &self.mode {
                let now = epoch.elapsed().as_nanos() as u64;
                let from = from_ns.load(Ordering::Relaxed);
                buf.extend_from_slice(&chunk);
                let mut start = 0;
                while let Some(end) = find(&buf[start..], b"\n\n") {
                    let frame = &buf[start..start + end];
                    start += end + 2;
                    let Some(rest) = frame.strip_prefix(b"id: ") else {
                        continue; // the opening `retry:` or a heartbeat
                    };
                    events += 1;
                    let id = leading_number(rest);
                    if next_id.is_some_and(|n| Some(n) != id) {
                        out.order_errors += 1;
                    }
                    next_id = id.map(|i| i + 1);
                    let sent =
                        find(frame, b"\"t_ns\":").and_then(|at| leading_number(&frame[at + 7..]));
                    match sent {
                        Some(t) if t >= from => {
                            let us = now.saturating_sub(t) / 1000;
                            out.latencies_us.push(u32::try_from(us).unwrap_or(u32::MAX));
                        }
                        Some(_) => {}
                        None => out.order_errors += 1,
                    }
                }
                buf.drain(..start);
            }
            self.counts[self.i].store(events, Ordering::Relaxed);
        }
        out.per_subscriber[0] = events;
        out
    }
}

/// What starts an event frame: `id:` at the start of a line (see [`Reader::count`]).
const FRAME_START: &[u8] = b"\nid: ";

/// The event frames starting in `chunk`, found with memchr's SIMD search. `tail` keeps
/// the last bytes seen, for a frame start split between two reads.
fn count_frames(tail: &mut Vec<u8>, chunk: &[u8]) -> u64 {
    let keep = FRAME_START.len() - 1;
    let mut n = memchr::memmem::find_iter(chunk, FRAME_START).count() as u64;
    // a start split between the reads (neither part alone is long enough to hold one)
    tail.extend_from_slice(&chunk[..chunk.len().min(keep)]);
    n += memchr::memmem::find_iter(tail, FRAME_START).count() as u64;
    if chunk.len() >= keep {
        tail.clear();
        tail.extend_from_slice(&chunk[chunk.len() - keep..]);
    } else {
        let cut = tail.len().saturating_sub(keep);
        tail.drain(..cut);
    }
    n
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn leading_number(s: &[u8]) -> Option<u64> {
    let digits = s.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&s[..digits]).ok()?.parse().ok()
}

// ---------------------------------------------------------------------------------------
// 3. ingest with and without subscribers

#[derive(Clone, Copy)]
enum Subs {
    None,
    Same,
    Other,
}

impl Subs {
    fn name(self) -> &'static str {
        match self {
            Subs::None => "none",
            Subs::Same => "100 same",
            Subs::Other => "100 other",
        }
    }
}

struct IngestRow {
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
    server_cores: f64,
    bench_cores: f64,
    /// CPU microseconds per event appended
    server_us: f64,
    bench_us: f64,
    /// the share of the server's CPU time in the kernel
    server_sys: f64,
    /// group commits per second (each one a notice to every subscriber of the stream)
    commits: f64,
    /// events per chunk a subscriber read
    per_read: Option<f64>,
    /// ms after the load stopped until every subscriber had every event
    catch_up_ms: Option<f64>,
    /// the machine's steal time during the load, in percent (see [`CpuClock`])
    steal_pct: f64,
    samples: Vec<String>,
}

impl IngestRow {
    fn print(&self, round: &str, name: &str) {
        let catch_up = self
            .catch_up_ms
            .map_or("-".to_owned(), |ms| format!("{ms:.0}"));
        let per_read = self.per_read.map_or("-".to_owned(), |n| format!("{n:.1}"));
        println!(
            "{round:<6} {name:<10} {:>9.0} {:>7.2} {:>7.2} {:>6} {:>5.2} {:>5.2} {:>6.1} {:>6.1} {:>5.0} {:>9.0} {:>7} {:>8} {:>6.1}",
            self.rate,
            self.p50_ms,
            self.p99_ms,
            self.errors,
            self.server_cores,
            self.bench_cores,
            self.server_us,
            self.bench_us,
            self.server_sys * 100.0,
            self.commits,
            per_read,
            catch_up,
            self.steal_pct
        );
        for s in &self.samples {
            println!("         ! {s}");
        }
    }

    fn median(rows: &[IngestRow]) -> Self {
        let col = |f: fn(&IngestRow) -> f64| median(rows.iter().map(f).collect());
        let catch: Vec<f64> = rows.iter().filter_map(|r| r.catch_up_ms).collect();
        Self {
            rate: col(|r| r.rate),
            p50_ms: col(|r| r.p50_ms),
            p99_ms: col(|r| r.p99_ms),
            errors: rows.iter().map(|r| r.errors).sum(),
            server_cores: col(|r| r.server_cores),
            bench_cores: col(|r| r.bench_cores),
            server_us: col(|r| r.server_us),
            bench_us: col(|r| r.bench_us),
            server_sys: col(|r| r.server_sys),
            commits: col(|r| r.commits),
            per_read: {
                let v: Vec<f64> = rows.iter().filter_map(|r| r.per_read).collect();
                (!v.is_empty()).then(|| median(v))
            },
            catch_up_ms: (!catch.is_empty()).then(|| median(catch)),
            steal_pct: col(|r| r.steal_pct),
            samples: Vec::new(),
        }
    }
}

/// Runs section 3; answers the median ratios (same stream, other stream) to none.
async fn ingest_section(bin: &Path, s: &Settings) -> Result<(f64, f64)> {
    println!(
        "{:<6} {:<10} {:>9} {:>7} {:>7} {:>6} {:>5} {:>5} {:>6} {:>6} {:>5} {:>9} {:>7} {:>8} {:>6}",
        "round",
        "subs",
        "events/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "srv",
        "bench",
        "srv µs",
        "bch µs",
        "sys%",
        "commits/s",
        "ev/read",
        "catch-up",
        "steal%"
    );
    let kinds = [Subs::None, Subs::Same, Subs::Other];
    let mut rows: [Vec<IngestRow>; 3] = Default::default();
    let (mut same_ratio, mut other_ratio) = (Vec::new(), Vec::new());
    for round in 1..=s.rounds {
        let order = if round % 2 == 1 { [0, 1, 2] } else { [2, 1, 0] };
        for k in order {
            let row = ingest(bin, s.ingest_secs, kinds[k]).await?;
            row.print(&round.to_string(), kinds[k].name());
            rows[k].push(row);
        }
        let rate = |k: usize| rows[k][round - 1].rate;
        same_ratio.push(rate(1) / rate(0));
        other_ratio.push(rate(2) / rate(0));
        println!(
            "{round:<6} ratios     same/none {:.3}, other/none {:.3}",
            rate(1) / rate(0),
            rate(2) / rate(0)
        );
    }
    for k in 0..3 {
        IngestRow::median(&rows[k]).print("median", kinds[k].name());
    }
    let ratios = (median(same_ratio), median(other_ratio));
    println!(
        "median ratios     same/none {:.3}, other/none {:.3} (medians of the per-round ratios)",
        ratios.0, ratios.1
    );
    println!(
        "(srv, bench: CPU cores used by the server and by this program during the load; srv µs, \
         bch µs: their CPU time per event appended; sys%: the server's share in the kernel \
         (on loopback its writes also run the receiving side's TCP stack); commits/s: group \
         commits, each a notice to every subscriber of the stream; ev/read: events per chunk a \
         subscriber read; catch-up: ms after the load stopped until every subscriber had every \
         event; steal%: the machine's CPU time its hypervisor gave to other guests meanwhile)"
    );
    warn_if_stolen(median(rows.iter().flatten().map(|r| r.steal_pct).collect()));
    Ok(ratios)
}

async fn ingest(bin: &Path, secs: u64, subs: Subs) -> Result<IngestRow> {
    let eddy = start_eddy(bin, false).await?;
    eddy.append("/bench/clicks", r#"{"setup":true}"#).await?;
    eddy.append("/bench/other", r#"{"setup":true}"#).await?;
    let readers = match subs {
        Subs::None => None,
        Subs::Same => Some(attach(&eddy, "/bench/clicks", INGEST_SUBSCRIBERS, Mode::Count).await?),
        Subs::Other => Some(attach(&eddy, "/bench/other", INGEST_SUBSCRIBERS, Mode::Count).await?),
    };
    let commits = eddy.metric("eddy_commits_total").await?;
    let cpu = ProcessClock::start(&eddy);
    let machine = CpuClock::now();
    let port = eddy.port;
    let tally = run_load(
        port,
        INGEST_CONNECTIONS,
        secs,
        StatusCode::CREATED,
        move |c, n| {
            request(
                port,
                "/bench/clicks".into(),
                Some("click"),
                click_json(c, n).into(),
            )
        },
    )
    .await?;
    let cpu = cpu.stop(&eddy);
    let steal_pct = machine.map_or(f64::NAN, CpuClock::steal_percent_since);
    let commits = (eddy.metric("eddy_commits_total").await? - commits) / cpu.wall;
    let all_ok = tally.all_ok;
    let (mut catch_up_ms, mut per_read) = (None, None);
    let mut samples = Vec::new();
    if let Some(readers) = readers {
        if matches!(subs, Subs::Same) {
            match readers.wait_for(all_ok, Duration::from_secs(30)).await {
                Some(d) => catch_up_ms = Some(d.as_secs_f64() * 1000.0),
                None => samples.push("subscribers did not get every event within 30 s".into()),
            }
        }
        let out = readers.finish().await?;
        if matches!(subs, Subs::Same) {
            per_read = Some(out.per_subscriber.iter().sum::<u64>() as f64 / out.reads as f64);
            let short = out.per_subscriber.iter().filter(|&&n| n != all_ok).count();
            if short > 0 {
                samples.push(format!(
                    "{short} subscribers did not get exactly the {all_ok} events appended"
                ));
            }
        }
        samples.extend(out.samples);
    }
    samples.extend(log_warnings(&eddy));
    let mut lat = tally.latencies_us;
    lat.sort_unstable();
    samples.extend(tally.samples);
    Ok(IngestRow {
        rate: tally.ok as f64 / secs as f64,
        p50_ms: percentile_ms(&lat, 0.50),
        p99_ms: percentile_ms(&lat, 0.99),
        errors: tally.errors,
        server_cores: cpu.server_cores,
        bench_cores: cpu.bench_cores,
        server_us: cpu.server_s * 1e6 / all_ok as f64,
        bench_us: cpu.bench_s * 1e6 / all_ok as f64,
        server_sys: cpu.server_sys,
        commits,
        per_read,
        catch_up_ms,
        steal_pct,
        samples,
    })
}

// ---------------------------------------------------------------------------------------
// 4. webhooks

#[derive(Default)]
struct Received {
    count: u64,
    last: Option<u64>,
    /// an index not exactly one more than the one before
    skips: u64,
    /// an index not above the one before
    repeats: u64,
    last_at: Option<Instant>,
}

type Receiver = Arc<Mutex<Received>>;

async fn hook(
    axum::extract::State(state): axum::extract::State<Receiver>,
    body: Bytes,
) -> StatusCode {
    let index = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["index"].as_u64());
    let now = Instant::now();
    let mut r = state.lock().unwrap_or_else(|e| e.into_inner());
    r.count += 1;
    if let Some(i) = index {
        match r.last {
            Some(l) if i <= l => r.repeats += 1,
            Some(l) if i != l + 1 => r.skips += 1,
            _ => {}
        }
        r.last = Some(i);
        r.last_at = Some(now);
    }
    StatusCode::OK
}

struct HookRow {
    delivered: u64,
    last: Option<u64>,
    expected_last: u64,
    skips: u64,
    append_s: f64,
    done_s: f64,
    server_cores: f64,
    bench_cores: f64,
    samples: Vec<String>,
}

impl HookRow {
    fn deliveries_per_s(&self) -> f64 {
        self.delivered as f64 / self.done_s
    }

    fn print(&self, round: &str, name: &str, events: usize) {
        let last = self.last.map_or("-".to_owned(), |l| l.to_string());
        println!(
            "{round:<6} {name:<10} {:>10} {:>9} {:>8.2} {:>8.2} {:>12.0} {:>10.0} {:>6} {:>6.2} {:>6.2}",
            self.delivered,
            last,
            self.append_s,
            self.done_s,
            self.deliveries_per_s(),
            events as f64 / self.done_s,
            self.skips,
            self.server_cores,
            self.bench_cores
        );
        for s in &self.samples {
            println!("         ! {s}");
        }
    }
}

/// Runs section 4; answers the median deliveries/s of the `data=true` webhook.
async fn webhook_section(bin: &Path, s: &Settings) -> Result<f64> {
    println!(
        "{:<6} {:<10} {:>10} {:>9} {:>8} {:>8} {:>12} {:>10} {:>6} {:>6} {:>6}",
        "round",
        "webhook",
        "delivered",
        "last idx",
        "append s",
        "done s",
        "deliveries/s",
        "events/s",
        "skips",
        "srv",
        "bench"
    );
    let names = ["data=false", "data=true"];
    let mut rows: [Vec<HookRow>; 2] = Default::default();
    for round in 1..=s.rounds {
        let order = if round % 2 == 1 { [0, 1] } else { [1, 0] };
        for k in order {
            let row = webhook(bin, k == 1, s.hook_events).await?;
            row.print(&round.to_string(), names[k], s.hook_events);
            rows[k].push(row);
        }
    }
    for k in 0..2 {
        let col = |f: fn(&HookRow) -> f64| median(rows[k].iter().map(f).collect());
        println!(
            "{:<6} {:<10} {:>10.0} {:>9} {:>8.2} {:>8.2} {:>12.0} {:>10.0} {:>6} {:>6.2} {:>6.2}",
            "median",
            names[k],
            col(|r| r.delivered as f64),
            "",
            col(|r| r.append_s),
            col(|r| r.done_s),
            col(|r| r.deliveries_per_s()),
            col(events_per_s),
            "",
            col(|r| r.server_cores),
            col(|r| r.bench_cores)
        );
    }
    println!(
        "(last idx: the last index the receiver saw, the last appended being {}; skips: \
         deliveries that jumped over indexes, which only coalescing should cause; events/s: \
         events appended / done s)",
        rows[0].first().map_or(0, |r| r.expected_last)
    );
    Ok(median(
        rows[1].iter().map(HookRow::deliveries_per_s).collect(),
    ))
}

/// Events covered per second of a webhook run (events appended / time to the last).
fn events_per_s(r: &HookRow) -> f64 {
    r.expected_last as f64 / r.done_s
}

async fn webhook(bin: &Path, data: bool, events: usize) -> Result<HookRow> {
    let eddy = start_eddy(bin, true).await?;
    let received: Receiver = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let receiver_port = listener.local_addr()?.port();
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(hook))
        .with_state(received.clone());
    let receiver = tokio::spawn(async move { axum::serve(listener, app).await });
    eddy.append("/bench/hooks", r#"{"setup":true}"#).await?;
    let r = eddy
        .api
        .post(format!("{}/bench/hooks/webhooks", eddy.base))
        .json(&serde_json::json!({
            "url": format!("http://127.0.0.1:{receiver_port}/hook"),
            "data": data,
        }))
        .send()
        .await?;
    if r.status() != 201 {
        bail!("create webhook: {} {}", r.status(), r.text().await?);
    }

    let cpu = ProcessClock::start(&eddy);
    let started = Instant::now();
    let mut expected_last = 0;
    for b in 0..events.div_ceil(HOOK_BATCH) {
        let n = HOOK_BATCH.min(events - b * HOOK_BATCH);
        let batch: Vec<String> = (0..n)
            .map(|i| format!(r#"{{"type":"t","data":{{"n":{}}}}}"#, b * HOOK_BATCH + i))
            .collect();
        let r = eddy
            .api
            .post(format!("{}/bench/hooks", eddy.base))
            .header("Content-Type", "application/vnd.eddy.events+json")
            .body(format!("[{}]", batch.join(",")))
            .send()
            .await?;
        if r.status() != 201 {
            bail!("batch append: {} {}", r.status(), r.text().await?);
        }
        let body: Value = r.json().await?;
        expected_last = body["last"]
            .as_u64()
            .context("a batch answer without last")?;
    }
    let append_s = started.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut samples = Vec::new();
    loop {
        let last = received.lock().unwrap_or_else(|e| e.into_inner()).last;
        if last.is_some_and(|l| l >= expected_last) {
            break;
        }
        if Instant::now() > deadline {
            samples.push(format!(
                "the receiver had not seen index {expected_last} after 300 s (last {last:?})"
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let cpu = cpu.stop(&eddy);
    let r = std::mem::take(&mut *received.lock().unwrap_or_else(|e| e.into_inner()));
    let done_s = r
        .last_at
        .map_or(f64::NAN, |t| t.duration_since(started).as_secs_f64());
    if data && r.count != events as u64 {
        samples.push(format!("{} deliveries for {events} events", r.count));
    }
    if r.repeats > 0 {
        samples.push(format!("{} deliveries repeated an index", r.repeats));
    }
    let failures = eddy
        .metric("eddy_webhook_failures_total")
        .await
        .unwrap_or(0.0);
    if failures > 0.0 {
        samples.push(format!("{failures} failed delivery attempts"));
    }
    samples.extend(log_warnings(&eddy));
    drop(eddy);
    receiver.abort();
    let _ = receiver.await;
    Ok(HookRow {
        delivered: r.count,
        last: r.last,
        expected_last,
        skips: r.skips,
        append_s,
        done_s,
        server_cores: cpu.server_cores,
        bench_cores: cpu.bench_cores,
        samples,
    })
}

// ---------------------------------------------------------------------------------------
// the server

/// An eddy child process with a client for setup requests, metrics and batches.
struct Eddy {
    process: ServerProcess,
    base: String,
    api: reqwest::Client,
}

impl std::ops::Deref for Eddy {
    type Target = ServerProcess;
    fn deref(&self) -> &ServerProcess {
        &self.process
    }
}

impl std::ops::DerefMut for Eddy {
    fn deref_mut(&mut self) -> &mut ServerProcess {
        &mut self.process
    }
}

async fn start_eddy(bin: &Path, webhooks: bool) -> Result<Eddy> {
    let extra: &[&str] = if webhooks {
        &["--allow-private-webhooks"]
    } else {
        &[]
    };
    let process = common::start_eddy(bin, extra).await?;
    let api = reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(8)
        .build()?;
    Ok(Eddy {
        base: format!("http://127.0.0.1:{}", process.port),
        process,
        api,
    })
}

impl Eddy {
    fn rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        let kib: f64 = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN);
        kib / 1024.0
    }

    /// Appends one JSON event (type `setup`), so the stream exists.
    async fn append(&self, path: &str, json: &'static str) -> Result<()> {
        let r = self
            .api
            .post(format!("{}{path}", self.base))
            .header("Content-Type", "application/json")
            .header("Event-Type", "setup")
            .body(json)
            .send()
            .await?;
        if r.status() != 201 {
            bail!("POST {path}: {} {}", r.status(), r.text().await?);
        }
        Ok(())
    }

    /// One unlabelled sample of `/metrics`.
    async fn metric(&self, name: &str) -> Result<f64> {
        let text = self
            .api
            .get(format!("{}/metrics", self.base))
            .send()
            .await?
            .text()
            .await?;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
            .with_context(|| format!("no {name} in /metrics"))
    }
}

/// The distinct warnings eddy logged (a lagging fan-out, a failed subscription...).
fn log_warnings(eddy: &Eddy) -> Vec<String> {
    let log = eddy.log();
    let mut out: Vec<String> = Vec::new();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    for l in &lines {
        if out.len() < 3 && !out.iter().any(|o| o == l) {
            out.push(format!("eddy log: {l}"));
        }
    }
    if lines.len() > out.len() {
        out.push(format!("eddy logged {} lines in all", lines.len()));
    }
    out
}

/// CPU time of the server and of this process over a stretch of wall time.
struct ProcessClock {
    wall: Instant,
    /// (user, system) CPU seconds so far
    server: (f64, f64),
    bench: (f64, f64),
}

impl ProcessClock {
    fn start(eddy: &Eddy) -> Self {
        Self {
            wall: Instant::now(),
            server: cpu_seconds(&eddy.child.id().to_string()),
            bench: cpu_seconds("self"),
        }
    }

    /// The CPU the server and this process used since `start`.
    fn stop(self, eddy: &Eddy) -> CpuUse {
        let wall = self.wall.elapsed().as_secs_f64();
        let (su, ss) = cpu_seconds(&eddy.child.id().to_string());
        let (bu, bs) = cpu_seconds("self");
        let server_s = su + ss - self.server.0 - self.server.1;
        let bench_s = bu + bs - self.bench.0 - self.bench.1;
        CpuUse {
            wall,
            server_cores: server_s / wall,
            bench_cores: bench_s / wall,
            server_s,
            bench_s,
            server_sys: (ss - self.server.1) / server_s,
        }
    }
}

struct CpuUse {
    wall: f64,
    /// CPU seconds per wall second
    server_cores: f64,
    bench_cores: f64,
    /// CPU seconds
    server_s: f64,
    bench_s: f64,
    /// the share of the server's CPU time spent in the kernel
    server_sys: f64,
}

/// The first three fields of `/proc/loadavg`: other work on the machine shows there.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// (user, system) CPU seconds of a process, from `/proc/<pid>/stat`.
fn cpu_seconds(pid: &str) -> (f64, f64) {
    static TICKS: OnceLock<f64> = OnceLock::new();
    let ticks = *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    });
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // fields after the command name, which is in parentheses: state is field 3, utime
    // and stime are fields 14 and 15
    let after = stat.rfind(')').map_or("", |i| &stat[i + 1..]);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let get = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    match (get(11), get(12)) {
        (Some(u), Some(s)) => (u / ticks, s / ticks),
        _ => (f64::NAN, f64::NAN),
    }
}

// ---------------------------------------------------------------------------------------
// the closed-loop load (as in bench_ingest)
