//! Read benchmark for eddy: how fast a stream of stored events is read back, to compare
//! builds (a storage change such as the page size must not slow reads unannounced).
//!
//! Each measurement starts the release `eddy` on an empty data directory, fills
//! `/bench/clicks` with 200 000 click events of ~200 bytes (1000-event batches), then:
//! 1. pages: 8 keep-alive connections `GET /bench/clicks?from=<spread>&limit=1000`
//!    (events/s, latency per page);
//! 2. one event: C connections (default 64) `GET /bench/clicks/<spread>` (req/s);
//! 3. the whole stream as NDJSON (`Accept: application/x-ndjson`) on one connection,
//!    timed from the request to the last byte (events/s).
//!
//! With `--base PATH` every round measures that eddy binary too, in alternating order,
//! and prints eddy/base for each measure: ratios from one run, on one machine state.
//!
//! Run: `cargo build --release && cargo run --release --example bench_reads`
//! Flags: `--base PATH`, `--rounds N` (3), `--seconds S` (10), `--connections C` (64),
//! `--quick` (one round of 3 s). The eddy binary is `target/release/eddy`, or `$EDDY_BIN`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{ACCEPT, HOST};
use hyper::{Request, StatusCode};

#[path = "bench_common.rs"]
mod common;
use common::*;

const EVENTS: u64 = 200_000;
const PAGE: u64 = 1000;
const PAGE_CONNECTIONS: usize = 8;
const FILL_CONNECTIONS: usize = 4;
const MEASURES: [&str; 3] = ["pages", "one event", "ndjson"];

fn main() -> Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let base = match args.iter().position(|a| a == "--base") {
        Some(i) => {
            let path = args
                .get(i + 1)
                .context("--base needs an eddy binary")?
                .clone();
            args.drain(i..i + 2);
            Some(PathBuf::from(path))
        }
        None => None,
    };
    let settings = Settings::parse("bench_reads [--base PATH]", &args)?;
    let eddy = eddy_binary()?;
    if let Some(b) = &base
        && !b.is_file()
    {
        bail!("--base {}: no such file", b.display());
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(settings, eddy, base))
}

async fn run(s: Settings, eddy: PathBuf, base: Option<PathBuf>) -> Result<()> {
    println!("eddy read benchmark");
    println!("eddy:     {}", eddy.display());
    if let Some(b) = &base {
        println!("base:     {}", b.display());
    }
    println!(
        "settings: {} round(s) of {} s (+{} s warm-up) per measure; {EVENTS} events of \
         {EVENT_BYTES} bytes; pages of {PAGE} on {PAGE_CONNECTIONS} connections, single \
         events on {}",
        s.rounds,
        s.seconds,
        WARMUP.as_secs(),
        s.connections
    );
    let (r, m, rate, p50, p99, e, st) = (
        "round", "measure", "events/s", "p50 ms", "p99 ms", "errors", "steal%",
    );
    println!(
        "{r:<6} {:<5} {m:<11} {rate:>12} {p50:>8} {p99:>8} {e:>7} {st:>7}",
        "bin"
    );
    let bins: Vec<(&str, &Path)> = match &base {
        Some(b) => vec![("base", b.as_path()), ("eddy", eddy.as_path())],
        None => vec![("eddy", eddy.as_path())],
    };
    // all[bin][measure] over the rounds
    let mut all: Vec<[Vec<Stats>; 3]> = (0..bins.len()).map(|_| Default::default()).collect();
    for round in 1..=s.rounds {
        let mut order: Vec<usize> = (0..bins.len()).collect();
        if round % 2 == 0 {
            order.reverse();
        }
        for b in order {
            let (name, bin) = bins[b];
            for (m, stats) in measure(bin, &s).await?.into_iter().enumerate() {
                print_row(&round.to_string(), name, MEASURES[m], &stats);
                all[b][m].push(stats);
            }
        }
        if bins.len() == 2 {
            for (m, measure) in MEASURES.iter().enumerate() {
                let ratio = all[1][m][round - 1].rate / all[0][m][round - 1].rate;
                println!("{round:<6} {:<5} {measure:<11} {ratio:>12.3}", "ratio");
            }
        }
    }
    for (b, (name, _)) in bins.iter().enumerate() {
        for (m, measure) in MEASURES.iter().enumerate() {
            print_row("median", name, measure, &Stats::median(&all[b][m]));
        }
    }
    if bins.len() == 2 {
        for (m, measure) in MEASURES.iter().enumerate() {
            let ratios = (0..s.rounds)
                .map(|r| all[1][m][r].rate / all[0][m][r].rate)
                .collect();
            println!(
                "{:<6} {:<5} {measure:<11} {:>12.3}",
                "median",
                "ratio",
                median(ratios)
            );
        }
    }
    warn_if_stolen(median(
        all.iter()
            .flatten()
            .flatten()
            .filter_map(|s| s.steal_pct)
            .collect(),
    ));
    Ok(())
}

fn print_row(round: &str, bin: &str, measure: &str, s: &Stats) {
    let steal = s.steal_pct.map_or(String::new(), |p| format!(" {p:>7.1}"));
    println!(
        "{round:<6} {bin:<5} {measure:<11} {:>12.0} {:>8.2} {:>8.2} {:>7}{steal}",
        s.rate, s.p50_ms, s.p99_ms, s.errors
    );
    for sample in &s.samples {
        println!("         ! {sample}");
    }
}

/// One fresh server, filled, then each measure of [`MEASURES`].
async fn measure(bin: &Path, s: &Settings) -> Result<Vec<Stats>> {
    let server = start_eddy(bin, &[]).await?;
    let port = server.port;
    fill(port).await?;
    let mut out = Vec::with_capacity(MEASURES.len());

    let clock = CpuClock::now();
    let pages = run_load(
        port,
        PAGE_CONNECTIONS,
        s.seconds,
        StatusCode::OK,
        move |c, n| {
            let from = spread(c, n) % (EVENTS - PAGE + 1);
            get(port, format!("/bench/clicks?from={from}&limit={PAGE}"))
        },
    )
    .await?;
    out.push(with_steal(Stats::new(pages, s.seconds, PAGE), clock));

    let clock = CpuClock::now();
    let one = run_load(
        port,
        s.connections,
        s.seconds,
        StatusCode::OK,
        move |c, n| get(port, format!("/bench/clicks/{}", spread(c, n) % EVENTS)),
    )
    .await?;
    out.push(with_steal(Stats::new(one, s.seconds, 1), clock));

    let clock = CpuClock::now();
    out.push(with_steal(ndjson(port).await?, clock));
    Ok(out)
}

fn with_steal(mut stats: Stats, clock: Option<CpuClock>) -> Stats {
    stats.steal_pct = clock.map(CpuClock::steal_percent_since);
    stats
}

/// Appends [`EVENTS`] click events in 1000-event batches on a few connections.
async fn fill(port: u16) -> Result<()> {
    let batches = EVENTS / PAGE;
    let mut tasks = Vec::new();
    for c in 0..FILL_CONNECTIONS {
        tasks.push(tokio::spawn(async move {
            let mut sender = connect(port).await?;
            let body = batch_json(c, PAGE as usize);
            for _ in (c as u64..batches).step_by(FILL_CONNECTIONS) {
                let req = request(port, "/bench/clicks".into(), None, body.clone());
                let (status, answer) = exchange(&mut sender, req).await?;
                if status != StatusCode::CREATED {
                    bail!(
                        "filling the stream: {status}: {}",
                        String::from_utf8_lossy(&answer)
                    );
                }
            }
            Ok(())
        }));
    }
    for t in tasks {
        t.await.context("a filling task panicked")??;
    }
    Ok(())
}

/// The whole stream as NDJSON, once: events/s from the request to the last byte.
async fn ndjson(port: u16) -> Result<Stats> {
    let mut sender = connect(port).await?;
    let req = Request::get("/bench/clicks")
        .header(HOST, format!("127.0.0.1:{port}"))
        .header(ACCEPT, "application/x-ndjson")
        .body(Full::new(Bytes::new()))?;
    let started = Instant::now();
    let (status, body) = exchange(&mut sender, req).await?;
    let secs = started.elapsed().as_secs_f64();
    let lines = body.iter().filter(|&&b| b == b'\n').count() as u64;
    let mut samples = Vec::new();
    if status != StatusCode::OK {
        samples.push(format!("{status}: {}", String::from_utf8_lossy(&body)));
    } else if lines != EVENTS {
        samples.push(format!("{lines} lines, not {EVENTS}"));
    }
    let ms = secs * 1000.0;
    Ok(Stats {
        rate: lines as f64 / secs,
        p50_ms: ms,
        p99_ms: ms,
        errors: samples.len() as u64,
        samples,
        steal_pct: None,
    })
}

fn get(port: u16, path: String) -> Request<Full<Bytes>> {
    Request::get(path)
        .header(HOST, format!("127.0.0.1:{port}"))
        .body(Full::new(Bytes::new()))
        .expect("a request from valid parts")
}

/// Spreads the requests of connection `c` over the stream: a multiplicative hash of
/// (c, n), the same sequence in every run.
fn spread(c: usize, n: u64) -> u64 {
    ((c as u64) << 32 | n).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 16
}
