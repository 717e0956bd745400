//! Pipe benchmark for eddy: how fast a pipe copies (or maps through a trivial JavaScript
//! function) the events of its origin into its destination, next to the single-event
//! ingest figure of bench_ingest, against the release server.
//!
//! 1. Live: 64 keep-alive connections POST single ~200-byte click events to
//!    `/bench/clicks` in a closed loop for S s (+1 s warm-up, not counted in req/s), as
//!    bench_ingest does, with no pipe on the stream, with a copy pipe to `/bench/copy`,
//!    and with a mapping pipe `(e) => ({ type: "mapped", data: { n: e.index } })` to
//!    `/bench/mapped` (each pipe PUT before the load). While the load runs, the pipe's
//!    status is sampled every 100 ms (lag = requests sent - `piped`, so up to 64
//!    in-flight requests count as lag); when it ends, the status is polled every 20 ms
//!    until `piped` reaches the events appended: the lag at the end of the load, the
//!    drain time, and copied/s = events / (load time + drain time). Each round measures
//!    the three in alternating order, each on a fresh server.
//! 2. Backlog: B events (default 200 000) are appended to `/bench/backlog` in
//!    1000-event batches over 4 connections with no pipe; then a copy pipe and a mapping
//!    pipe (to two destinations, one after the other, alternating the order each round)
//!    are PUT and timed until `piped` reaches B: events/s piped from a backlog.
//!
//! A pipe keeps up when it has drained within 1 s of the end of the load. Every
//! measurement starts a fresh `eddy serve` (`EDDY_LOG=warn`, empty temporary data
//! directory); the load generator and the server share this machine's cores.
//!
//! Run: `cargo build --release && cargo run --release -p eddy-server --example
//! bench_pipes`. Flags: `--rounds N` (3), `--seconds S` (10), `--connections C` (64),
//! `--backlog B` (200000), `--quick` (one round of 3 s, a 20 000-event backlog). The eddy
//! binary is `target/release/eddy`, or `$EDDY_BIN`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use serde_json::Value;

#[path = "bench_common.rs"]
mod common;
use common::*;

const BATCH_EVENTS: usize = 1000;
const BATCH_CONNECTIONS: usize = 4;
const MAP_CODE: &str = r#"(e) => ({ type: "mapped", data: { n: e.index } })"#;
/// How often the pipe's status is polled after the load, and sampled during it.
const DRAIN_POLL: Duration = Duration::from_millis(20);
const LOAD_POLL: Duration = Duration::from_millis(100);
/// A pipe that has not caught up after this long is reported, not waited for.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(180);
/// The drain time under which a pipe keeps up with the load.
const KEEPS_UP_MS: f64 = 1000.0;

struct Settings {
    /// `--rounds`, `--seconds`, `--connections`, `--quick`, as every benchmark reads them.
    load: common::Settings,
    backlog: usize,
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let settings = parse_args(&args)?;
    let eddy = eddy_binary()?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(settings, eddy, &args))
}

/// The shared load flags, plus `--backlog B` (events stored before the backlog pipes
/// start).
fn parse_args(args: &[String]) -> Result<Settings> {
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!(
            "usage: bench_pipes [--rounds N] [--seconds S] [--connections C] [--backlog B] \
             [--quick]"
        );
        std::process::exit(0);
    }
    let quick = args.iter().any(|a| a == "--quick");
    let mut backlog = if quick { 20_000 } else { 200_000 };
    let mut rest = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if arg == "--backlog" {
            let v = it.next().context("--backlog needs a value")?;
            backlog = v
                .parse()
                .with_context(|| format!("--backlog {v}: not a whole number"))?;
        } else {
            rest.push(arg.clone());
        }
    }
    if backlog == 0 {
        bail!("--backlog must be at least 1");
    }
    Ok(Settings {
        load: common::Settings::parse("bench_pipes", &rest)?,
        backlog,
    })
}

async fn run(s: Settings, bin: PathBuf, args: &[String]) -> Result<()> {
    let started = Instant::now();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("eddy pipe benchmark");
    println!(
        "command:  cargo run --release -p eddy-server --example bench_pipes{}{}",
        if args.is_empty() { "" } else { " -- " },
        args.join(" ")
    );
    println!("machine:  {cores} cores (the load generator and the server share them)");
    println!("eddy:     {}", bin.display());
    println!(
        "load:     {} (1, 5, 15 min averages before the run)",
        load_average()
    );
    println!(
        "settings: {} round(s); live: {} s (+{} s warm-up), {} connections, {EVENT_BYTES}-byte \
         events; backlog: {} events",
        s.load.rounds,
        s.load.seconds,
        WARMUP.as_secs(),
        s.load.connections,
        s.backlog
    );
    println!("map code: {MAP_CODE}");

    println!(
        "\n1. live: {} connections POSTing single events to /bench/clicks; pipe: none, copy \
         to /bench/copy, map to /bench/mapped",
        s.load.connections
    );
    let live = live_section(&bin, &s).await?;

    println!(
        "\n2. backlog: {} events appended in {BATCH_EVENTS}-event batches over \
         {BATCH_CONNECTIONS} connections, then a pipe PUT and timed until piped = {}",
        s.backlog, s.backlog
    );
    let backlog = backlog_section(&bin, &s).await?;

    let [none, copy, map] = &live.medians;
    let keeps = |r: &LiveRow| match r.drain_ms {
        Some(ms) if ms < KEEPS_UP_MS => "keeps up",
        _ => "does NOT keep up",
    };
    println!("\nsummary (medians of {} round(s))", s.load.rounds);
    println!(
        "  single-event ingest, no pipe: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms",
        none.rate, none.p50_ms, none.p99_ms
    );
    for (name, r, ratio) in [
        ("copy pipe:", copy, live.ratios[0]),
        ("map pipe:", map, live.ratios[1]),
    ] {
        println!(
            "  same, with a {name:<10}      {:.0} req/s ({ratio:.3}x of none), p99 {:.2} ms; \
             piped {:.0} events/s, lag at end {:.0} events, drained in {:.0} ms: {}",
            r.rate,
            r.p99_ms,
            r.copied_per_s.unwrap_or(f64::NAN),
            r.end_lag.unwrap_or(f64::NAN),
            r.drain_ms.unwrap_or(f64::NAN),
            keeps(r)
        );
    }
    println!(
        "  backlog of {}: copy {:.0} events/s, map {:.0} events/s (batch append {:.0} events/s)",
        s.backlog, backlog.copy, backlog.map, backlog.append
    );
    println!(
        "\ntotal run time: {:.0} s; load averages after it: {}",
        started.elapsed().as_secs_f64(),
        load_average()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 1. live

#[derive(Clone, Copy)]
enum Pipe {
    None,
    Copy,
    Map,
}

impl Pipe {
    fn name(self) -> &'static str {
        match self {
            Pipe::None => "none",
            Pipe::Copy => "copy",
            Pipe::Map => "map",
        }
    }

    /// The pipe's URL from `origin`, and its PUT body and content type.
    fn put(self, origin: &str, dest: &str) -> Option<(String, Bytes, Option<&'static str>)> {
        let url = format!("{origin}/pipe{dest}");
        match self {
            Pipe::None => None,
            Pipe::Copy => Some((url, Bytes::new(), None)),
            Pipe::Map => Some((
                url,
                Bytes::from_static(MAP_CODE.as_bytes()),
                Some("application/javascript"),
            )),
        }
    }
}

struct LiveRow {
    /// successes per second in the measured window
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
    /// events appended over the whole load, warm-up included
    posted: f64,
    /// seconds from the start of the load to its end (warm-up included)
    load_s: f64,
    /// the rest only with a pipe:
    /// the most requests sent but not yet piped while the load ran
    max_lag: Option<f64>,
    /// events not yet piped when the load ended
    end_lag: Option<f64>,
    /// ms from the end of the load until every event was piped
    drain_ms: Option<f64>,
    /// posted / (load_s + drain)
    copied_per_s: Option<f64>,
    samples: Vec<String>,
}

impl LiveRow {
    fn print(&self, round: &str, name: &str, ratio: Option<f64>) {
        let opt = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.0}"));
        let ratio = ratio.map_or("-".to_owned(), |r| format!("{r:.3}"));
        let share = self.copied_per_s.map_or("-".to_owned(), |c| {
            format!("{:.3}", c * self.load_s / self.posted)
        });
        println!(
            "{round:<6} {name:<5} {:>8.0} {:>7.2} {:>7.2} {:>6} {:>8.0} {:>8} {:>8} {:>8} {:>9} {:>6} {:>7}",
            self.rate,
            self.p50_ms,
            self.p99_ms,
            self.errors,
            self.posted,
            opt(self.max_lag),
            opt(self.end_lag),
            opt(self.drain_ms),
            opt(self.copied_per_s),
            share,
            ratio
        );
        for s in &self.samples {
            println!("         ! {s}");
        }
    }

    fn median(rows: &[LiveRow]) -> Self {
        let col = |f: fn(&LiveRow) -> f64| median(rows.iter().map(f).collect());
        let opt = |f: fn(&LiveRow) -> Option<f64>| {
            let v: Vec<f64> = rows.iter().filter_map(f).collect();
            (!v.is_empty()).then(|| median(v))
        };
        Self {
            rate: col(|r| r.rate),
            p50_ms: col(|r| r.p50_ms),
            p99_ms: col(|r| r.p99_ms),
            errors: rows.iter().map(|r| r.errors).sum(),
            posted: col(|r| r.posted),
            load_s: col(|r| r.load_s),
            max_lag: opt(|r| r.max_lag),
            end_lag: opt(|r| r.end_lag),
            drain_ms: opt(|r| r.drain_ms),
            copied_per_s: opt(|r| r.copied_per_s),
            samples: Vec::new(),
        }
    }
}

struct LiveResult {
    /// none, copy, map
    medians: [LiveRow; 3],
    /// median ingest ratios copy/none and map/none
    ratios: [f64; 2],
}

async fn live_section(bin: &Path, s: &Settings) -> Result<LiveResult> {
    println!(
        "{:<6} {:<5} {:>8} {:>7} {:>7} {:>6} {:>8} {:>8} {:>8} {:>8} {:>9} {:>6} {:>7}",
        "round",
        "pipe",
        "req/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "posted",
        "max lag",
        "end lag",
        "drain ms",
        "piped/s",
        "p/post",
        "vs none"
    );
    let kinds = [Pipe::None, Pipe::Copy, Pipe::Map];
    let mut rows: [Vec<LiveRow>; 3] = Default::default();
    let mut ratios: [Vec<f64>; 2] = Default::default();
    for round in 1..=s.load.rounds {
        let order = if round % 2 == 1 { [0, 1, 2] } else { [2, 1, 0] };
        let mut this: [Option<LiveRow>; 3] = Default::default();
        for k in order {
            this[k] = Some(live(bin, s, kinds[k]).await?);
        }
        let this = this.map(|r| r.expect("every kind measured"));
        for (k, row) in this.iter().enumerate() {
            let ratio = (k > 0).then(|| row.rate / this[0].rate);
            if let Some(r) = ratio {
                ratios[k - 1].push(r);
            }
            row.print(&round.to_string(), kinds[k].name(), ratio);
        }
        for (k, row) in this.into_iter().enumerate() {
            rows[k].push(row);
        }
    }
    let medians = [0, 1, 2].map(|k| LiveRow::median(&rows[k]));
    let ratios = ratios.map(median);
    for (k, row) in medians.iter().enumerate() {
        let ratio = (k > 0).then(|| ratios[k - 1]);
        row.print("median", kinds[k].name(), ratio);
    }
    println!(
        "(req/s, p50, p99: single-event POSTs in the measured {} s; posted: events appended, \
         warm-up included; max lag: requests sent but not yet piped, sampled every {} ms \
         during the load (up to {} in flight count); end lag: events not piped when the \
         load ended; drain: ms from then until piped = posted (polled every {} ms); \
         piped/s: posted / (load + drain time); p/post: piped/s over posted/s; vs none: \
         req/s over the no-pipe req/s of the round, medians of the per-round ratios)",
        s.load.seconds,
        LOAD_POLL.as_millis(),
        s.load.connections,
        DRAIN_POLL.as_millis()
    );
    Ok(LiveResult { medians, ratios })
}

async fn live(bin: &Path, s: &Settings, pipe: Pipe) -> Result<LiveRow> {
    let eddy = start_eddy(bin, &[]).await?;
    let port = eddy.port;
    let mut api = Api::new(port);
    let dest = match pipe {
        Pipe::Map => "/bench/mapped",
        _ => "/bench/copy",
    };
    let url = match pipe.put("/bench/clicks", dest) {
        Some((url, body, ctype)) => {
            let (status, answer) = api.call(Method::PUT, &url, ctype, body).await?;
            if status != StatusCode::CREATED {
                bail!("PUT {url}: {status} {}", String::from_utf8_lossy(&answer));
            }
            Some(url)
        }
        None => None,
    };

    let sent = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = url.clone().map(|url| {
        let (sent, stop) = (sent.clone(), stop.clone());
        tokio::spawn(async move {
            let mut api = Api::new(port);
            let mut max_lag = 0i64;
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(LOAD_POLL).await;
                // read `sent` first: piped can only have grown since
                let s = sent.load(Ordering::Relaxed) as i64;
                if let Ok(st) = status(&mut api, &url).await {
                    max_lag = max_lag.max(s - st.piped);
                }
            }
            max_lag
        })
    });

    let counter = sent.clone();
    let load_started = Instant::now();
    let tally = run_load(
        port,
        s.load.connections,
        s.load.seconds,
        StatusCode::CREATED,
        move |c, n| {
            counter.fetch_add(1, Ordering::Relaxed);
            request(
                port,
                "/bench/clicks".into(),
                Some("click"),
                click_json(c, n).into(),
            )
        },
    )
    .await?;
    let load_ended = Instant::now();
    stop.store(true, Ordering::Relaxed);
    let load_s = load_ended.duration_since(load_started).as_secs_f64();
    let posted = tally.all_ok;

    let mut samples = tally.samples;
    let (mut max_lag, mut end_lag, mut drain_ms, mut copied_per_s) = (None, None, None, None);
    if let Some(url) = &url {
        let mut first = None;
        let last = loop {
            let st = status(&mut api, url).await?;
            let now = Instant::now();
            first.get_or_insert(st.piped);
            if st.piped >= posted as i64 || st.stopped() {
                break Some((st, now));
            }
            if now.duration_since(load_ended) > DRAIN_TIMEOUT {
                samples.push(format!(
                    "piped {} of {posted} events {} s after the load ended",
                    st.piped,
                    DRAIN_TIMEOUT.as_secs()
                ));
                break None;
            }
            tokio::time::sleep(DRAIN_POLL).await;
        };
        end_lag = first.map(|p| (posted as i64 - p) as f64);
        if let Some((st, at)) = last {
            let drain = at.duration_since(load_ended).as_secs_f64();
            drain_ms = Some(drain * 1000.0);
            copied_per_s = Some(posted as f64 / (load_s + drain));
            samples.extend(st.problems(posted));
        }
        if let Some(sampler) = sampler {
            max_lag = Some(sampler.await.context("the status sampler panicked")? as f64);
        }
    }
    samples.extend(log_lines(&eddy));
    let mut lat = tally.latencies_us;
    lat.sort_unstable();
    Ok(LiveRow {
        rate: tally.ok as f64 / s.load.seconds as f64,
        p50_ms: percentile_ms(&lat, 0.50),
        p99_ms: percentile_ms(&lat, 0.99),
        errors: tally.errors,
        posted: posted as f64,
        load_s,
        max_lag,
        end_lag,
        drain_ms,
        copied_per_s,
        samples,
    })
}

// ---------------------------------------------------------------------------------------
// 2. backlog

struct BacklogResult {
    append: f64,
    copy: f64,
    map: f64,
}

async fn backlog_section(bin: &Path, s: &Settings) -> Result<BacklogResult> {
    println!(
        "{:<6} {:<7} {:>9} {:>9} {:>10} {:>10} {:>10}",
        "round", "what", "events", "seconds", "events/s", "1st q/s", "last q/s"
    );
    let (mut append, mut copy, mut map) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=s.load.rounds {
        let eddy = start_eddy(bin, &[]).await?;
        let r = round.to_string();
        let (events, secs) = append_backlog(eddy.port, s.backlog).await?;
        println!(
            "{r:<6} {:<7} {events:>9} {secs:>9.2} {:>10.0}",
            "append",
            events as f64 / secs
        );
        append.push(events as f64 / secs);
        let order = if round % 2 == 1 {
            [Pipe::Copy, Pipe::Map]
        } else {
            [Pipe::Map, Pipe::Copy]
        };
        for pipe in order {
            let d = drain_backlog(eddy.port, pipe, events).await?;
            let rate = events as f64 / d.secs();
            println!(
                "{r:<6} {:<7} {events:>9} {:>9.2} {rate:>10.0} {:>10.0} {:>10.0}",
                pipe.name(),
                d.secs(),
                d.quarter_rate(0, events),
                d.quarter_rate(3, events)
            );
            for s in &d.samples {
                println!("         ! {s}");
            }
            match pipe {
                Pipe::Copy => copy.push(rate),
                _ => map.push(rate),
            }
        }
        for l in log_lines(&eddy) {
            println!("         ! {l}");
        }
    }
    let out = BacklogResult {
        append: median(append),
        copy: median(copy),
        map: median(map),
    };
    for (name, v) in [("append", out.append), ("copy", out.copy), ("map", out.map)] {
        println!("{:<6} {name:<7} {:>9} {:>9} {v:>10.0}", "median", "", "");
    }
    println!(
        "(append: the batches POSTed with no pipe; copy, map: from the pipe's PUT until its \
         status showed piped = events, polled every {} ms; both pipes read the same origin, \
         one after the other; 1st q/s, last q/s: events/s piped in the first and the last quarter \
         of the backlog)",
        DRAIN_POLL.as_millis()
    );
    Ok(out)
}

/// Appends `events` (rounded up to whole batches) to `/bench/backlog`; answers how many
/// and the seconds it took.
async fn append_backlog(port: u16, events: usize) -> Result<(u64, f64)> {
    let batches = events.div_ceil(BATCH_EVENTS);
    let started = Instant::now();
    let tasks: Vec<_> = (0..BATCH_CONNECTIONS)
        .map(|c| {
            let mine = (c..batches).step_by(BATCH_CONNECTIONS).count();
            tokio::spawn(async move {
                let body = batch_json(c, BATCH_EVENTS);
                let mut sender = connect(port).await?;
                for _ in 0..mine {
                    let req = request(port, "/bench/backlog".into(), None, body.clone());
                    let (status, answer) = exchange(&mut sender, req).await?;
                    if status != StatusCode::CREATED {
                        bail!(
                            "batch POST: {status} {}",
                            String::from_utf8_lossy(&answer[..answer.len().min(300)])
                        );
                    }
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for t in tasks {
        t.await.context("a batch task panicked")??;
    }
    Ok((
        (batches * BATCH_EVENTS) as u64,
        started.elapsed().as_secs_f64(),
    ))
}

/// A pipe draining a backlog: seconds from its PUT until it had piped a quarter, half,
/// three quarters and all of the events.
struct Drained {
    at: [f64; 4],
    samples: Vec<String>,
}

impl Drained {
    fn secs(&self) -> f64 {
        self.at[3]
    }

    /// Events per second piped in quarter `q` (0-3) of the backlog.
    fn quarter_rate(&self, q: usize, events: u64) -> f64 {
        let from = if q == 0 { 0.0 } else { self.at[q - 1] };
        events as f64 / 4.0 / (self.at[q] - from)
    }
}

/// PUTs a pipe from `/bench/backlog` and times it until it has piped `events`.
async fn drain_backlog(port: u16, pipe: Pipe, events: u64) -> Result<Drained> {
    let dest = format!("/bench/backlog-{}", pipe.name());
    let (url, body, ctype) = pipe
        .put("/bench/backlog", &dest)
        .context("a backlog pipe")?;
    let mut api = Api::new(port);
    let started = Instant::now();
    let (code, answer) = api.call(Method::PUT, &url, ctype, body).await?;
    if code != StatusCode::CREATED {
        bail!("PUT {url}: {code} {}", String::from_utf8_lossy(&answer));
    }
    let mut at = [f64::NAN; 4];
    loop {
        let st = status(&mut api, &url).await?;
        let secs = started.elapsed().as_secs_f64();
        for (q, t) in at.iter_mut().enumerate() {
            if t.is_nan() && st.piped as u64 * 4 >= events * (q as u64 + 1) {
                *t = secs;
            }
        }
        if st.piped >= events as i64 || st.stopped() {
            let samples = st.problems(events);
            return Ok(Drained { at, samples });
        }
        if started.elapsed() > DRAIN_TIMEOUT {
            let msg = format!(
                "piped {} of {events} events after {} s",
                st.piped,
                DRAIN_TIMEOUT.as_secs()
            );
            at[3] = secs;
            return Ok(Drained {
                at,
                samples: vec![msg],
            });
        }
        tokio::time::sleep(DRAIN_POLL).await;
    }
}

// ---------------------------------------------------------------------------------------
// the pipe's status

struct PipeState {
    piped: i64,
    errors: i64,
    status: String,
    last_error: Option<String>,
}

impl PipeState {
    fn stopped(&self) -> bool {
        self.status != "running"
    }

    /// What is wrong with a pipe that should have piped exactly `expected` events.
    fn problems(&self, expected: u64) -> Vec<String> {
        let mut out = Vec::new();
        if self.piped != expected as i64 {
            out.push(format!("piped {} events, {expected} expected", self.piped));
        }
        if self.errors > 0 || self.stopped() {
            out.push(format!(
                "pipe {} with {} errors, last error {:?}",
                self.status, self.errors, self.last_error
            ));
        }
        out
    }
}

async fn status(api: &mut Api, url: &str) -> Result<PipeState> {
    let (code, body) = api.call(Method::GET, url, None, Bytes::new()).await?;
    if code != StatusCode::OK {
        bail!("GET {url}: {code} {}", String::from_utf8_lossy(&body));
    }
    let v: Value = serde_json::from_slice(&body).context("a pipe status that is not JSON")?;
    Ok(PipeState {
        piped: v["piped"].as_i64().context("a pipe status without piped")?,
        errors: v["errors"].as_i64().unwrap_or(0),
        status: v["status"].as_str().unwrap_or("?").to_owned(),
        last_error: v["lastError"].as_str().map(str::to_owned),
    })
}

/// One keep-alive connection for setup requests and status polls, reconnecting once
/// when the server has closed it.
struct Api {
    port: u16,
    sender: Option<Sender>,
}

impl Api {
    fn new(port: u16) -> Self {
        Self { port, sender: None }
    }

    async fn call(
        &mut self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes)> {
        let mut attempt = 0;
        loop {
            let sender = match self.sender.as_mut() {
                Some(s) => s,
                None => self.sender.insert(connect(self.port).await?),
            };
            let mut req = Request::builder()
                .method(method.clone())
                .uri(path)
                .header(HOST, format!("127.0.0.1:{}", self.port));
            if let Some(ct) = content_type {
                req = req.header(CONTENT_TYPE, ct);
            }
            let req = req.body(Full::new(body.clone()))?;
            match exchange(sender, req).await {
                Ok(answer) => return Ok(answer),
                Err(_) if attempt == 0 => {
                    attempt += 1;
                    self.sender = None;
                }
                Err(e) => return Err(e.context(format!("{method} {path}"))),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// the server

/// eddy as the benchmark runs it.
type Eddy = ServerProcess;

/// The distinct lines eddy logged (at `warn` and above).
fn log_lines(eddy: &Eddy) -> Vec<String> {
    let log = eddy.log();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut out: Vec<String> = Vec::new();
    for l in &lines {
        let l = format!("eddy log: {l}");
        if out.len() < 3 && !out.contains(&l) {
            out.push(l);
        }
    }
    if lines.len() > out.len() {
        out.push(format!("eddy logged {} lines in all", lines.len()));
    }
    out
}

/// The first three fields of `/proc/loadavg`: other work on the machine shows there.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}
