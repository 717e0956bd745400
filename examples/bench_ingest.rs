//! Ingest benchmark for eddy: how close single-event and batch ingest come to their
//! ceilings on this machine.
//!
//! 1. Single events: C keep-alive HTTP/1.1 connections (default 64) each send
//!    sequential `POST /bench/clicks` requests with a ~200-byte JSON event, against the
//!    release `eddy` binary and against a no-op axum server (POST anything → 204: the
//!    same client and HTTP stack without storage). Each round measures both, in
//!    alternating order; it prints req/s, p50/p99 latency, errors and eddy/noop.
//! 2. Batches: 4 connections POST 1000-event `application/vnd.eddy.events+json` batches
//!    to eddy (events/s), and a raw rusqlite loop writes the same rows with the same
//!    durability (WAL, `synchronous=FULL`, eddy's schema, 1000 rows per transaction;
//!    rows/s), again alternating each round; it prints both rates and eddy/raw.
//!
//! Every server is a child process (the no-op server is this program run with
//! `--noop-server`), started fresh for each measurement with an empty data directory.
//! The client runs on the same machine, so the figures are for comparing eddy with its
//! ceilings here, not absolute numbers. Each measurement has a 1 s warm-up that is not
//! counted; errors are counted over the whole run, warm-up included.
//!
//! Run: `cargo build --release && cargo run --release --example bench_ingest`
//! Flags: `--rounds N` (3), `--seconds S` (10), `--connections C` (64), `--quick` (one
//! round of 3 s). The eddy binary is `target/release/eddy`, or `$EDDY_BIN`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use hyper::StatusCode;

#[path = "bench_common.rs"]
mod common;
use common::*;

const BATCH_EVENTS: usize = 1000;
const BATCH_CONNECTIONS: usize = 4;
const INSERT_SQL: &str = "INSERT INTO events (pos, factory_id, sid, idx, eid, type, ts, content_type, \
                          data, metadata) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|a| a == "--noop-server") {
        return noop_server();
    }
    let settings = Settings::parse("bench_ingest", &args)?;
    let eddy = eddy_binary()?;
    runtime()?.block_on(run(settings, eddy))
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

async fn run(s: Settings, eddy: PathBuf) -> Result<()> {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("eddy ingest benchmark");
    println!("machine:  {cores} cores (client and servers share them)");
    println!("eddy:     {}", eddy.display());
    println!(
        "settings: {} round(s) of {} s (+{} s warm-up), {} connections, {EVENT_BYTES}-byte events",
        s.rounds,
        s.seconds,
        WARMUP.as_secs(),
        s.connections
    );

    println!(
        "\nsingle-event ingest: POST /bench/clicks, {} keep-alive HTTP/1.1 connections",
        s.connections
    );
    table_header("server", "req/s");
    let names = ["noop", "eddy"];
    compare(s.rounds, names, "eddy/noop", async |i| {
        single(&eddy, &s, i).await
    })
    .await?;

    println!(
        "\nbatch ingest: {BATCH_CONNECTIONS} connections POSTing {BATCH_EVENTS}-event batches \
         (latency per POST) vs raw SQLite inserts, {BATCH_EVENTS} rows per transaction, \
         WAL, synchronous=FULL (latency per transaction)"
    );
    table_header("writer", "events/s");
    let names = ["raw sqlite", "eddy batch"];
    compare(s.rounds, names, "eddy/raw", async |i| {
        batch(&eddy, &s, i).await
    })
    .await
}

/// Single events against the no-op server (0) or eddy (1).
async fn single(eddy: &Path, s: &Settings, i: usize) -> Result<Stats> {
    let server = if i == 1 {
        start_eddy(eddy, &[]).await?
    } else {
        start_noop()?
    };
    let expected = [StatusCode::NO_CONTENT, StatusCode::CREATED][i];
    let port = server.port;
    let load = run_load(port, s.connections, s.seconds, expected, move |c, n| {
        let body = click_json(c, n).into();
        request(port, "/bench/clicks".into(), Some("click"), body)
    });
    Ok(Stats::new(load.await?, s.seconds, 1))
}

/// 1000-row transactions: the raw SQLite loop (0) or batches POSTed to eddy (1).
async fn batch(eddy: &Path, s: &Settings, i: usize) -> Result<Stats> {
    let seconds = s.seconds;
    if i == 0 {
        let raw = tokio::task::spawn_blocking(move || raw_sqlite(seconds)).await??;
        return Ok(Stats::new(raw, seconds, BATCH_EVENTS as u64));
    }
    let server = start_eddy(eddy, &[]).await?;
    let port = server.port;
    let bodies: Vec<Bytes> = (0..BATCH_CONNECTIONS)
        .map(|c| batch_json(c, BATCH_EVENTS))
        .collect();
    let load = run_load(
        port,
        BATCH_CONNECTIONS,
        seconds,
        StatusCode::CREATED,
        move |c, _| request(port, format!("/bench/batch-{c}"), None, bodies[c].clone()),
    );
    Ok(Stats::new(load.await?, seconds, BATCH_EVENTS as u64))
}

fn table_header(what: &str, rate: &str) {
    let (r, p50, p99, e, st) = ("round", "p50 ms", "p99 ms", "errors", "steal%");
    println!("{r:<6} {what:<11} {rate:>12} {p50:>8} {p99:>8} {e:>7} {st:>7}");
}

/// Measures a ceiling (0) and eddy (1) once per round, in alternating order; prints
/// every row and eddy's ratio to the ceiling, then the medians across rounds.
async fn compare(
    rounds: usize,
    names: [&str; 2],
    ratio_name: &str,
    mut measure: impl AsyncFnMut(usize) -> Result<Stats>,
) -> Result<()> {
    let (mut all, mut ratios): ([Vec<Stats>; 2], Vec<f64>) = Default::default();
    for round in 1..=rounds {
        for i in if round % 2 == 1 { [0, 1] } else { [1, 0] } {
            let clock = CpuClock::now();
            let mut stats = measure(i).await?;
            stats.steal_pct = clock.map(CpuClock::steal_percent_since);
            stats.print(&round.to_string(), names[i]);
            all[i].push(stats);
        }
        let ratio = all[1][round - 1].rate / all[0][round - 1].rate;
        println!("{round:<6} {ratio_name:<11} {ratio:>12.3}");
        ratios.push(ratio);
    }
    for i in 0..2 {
        Stats::median(&all[i]).print("median", names[i]);
    }
    println!("{:<6} {ratio_name:<11} {:>12.3}", "median", median(ratios));
    warn_if_stolen(median(
        all.iter().flatten().filter_map(|s| s.steal_pct).collect(),
    ));
    Ok(())
}

/// The ceiling: accepts any request, reads its body and answers 204. Exits when its
/// stdin closes, so it cannot outlive the benchmark even if that is killed.
fn noop_server() -> Result<()> {
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        std::process::exit(0);
    });
    runtime()?.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        // the parent reads this line to learn the port (stdout is line-buffered)
        println!("{}", listener.local_addr()?.port());
        let app = axum::Router::new().fallback(|_body: Bytes| async { StatusCode::NO_CONTENT });
        axum::serve(listener, app).await?;
        Ok(())
    })
}

/// A server child process; killed and reaped when dropped, on error paths too.
fn start_noop() -> Result<ServerProcess> {
    let exe = std::env::current_exe().context("cannot find the benchmark's own executable")?;
    let mut child = Command::new(exe)
        .arg("--noop-server")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start the no-op server")?;
    let stdout = child
        .stdout
        .take()
        .context("no stdout pipe to the no-op server")?;
    let mut server = ServerProcess {
        child,
        port: 0,
        dir: None,
    };
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .context("cannot read the no-op server's port")?;
    server.port = line
        .trim()
        .parse()
        .with_context(|| format!("the no-op server printed {line:?} instead of its port"))?;
    Ok(server)
}

/// The raw ceiling: eddy's rows into eddy's schema, 1000 per transaction, in a loop.
fn raw_sqlite(seconds: u64) -> Result<Tally> {
    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let mut conn = rusqlite::Connection::open(dir.path().join("raw.db"))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    for sql in eddy_engine::store::migrations::schema_sql() {
        conn.execute_batch(sql).context("eddy's schema")?;
    }
    let bodies: Vec<String> = (0..BATCH_EVENTS as u64).map(|n| click_json(0, n)).collect();
    let from = Instant::now() + WARMUP;
    let end = from + Duration::from_secs(seconds);
    let (mut tally, mut pos) = (Tally::default(), 1i64);
    while Instant::now() < end {
        let started = Instant::now();
        let tx = conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(INSERT_SQL)?;
            for data in &bodies {
                let eid = uuid::Uuid::now_v7();
                insert.execute(rusqlite::params![
                    pos,
                    None::<i64>, // a plain stream, as eddy's batch streams are
                    1i64,
                    pos - 1,
                    eid.as_bytes().as_slice(),
                    "click",
                    now_ms(),
                    "application/json",
                    data.as_bytes(),
                    None::<&str>,
                ])?;
                pos += 1;
            }
        }
        tx.commit()?;
        tally.success(started, Instant::now(), from, end);
    }
    Ok(tally)
}
