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
//! With `EDDY_BENCH_POSTGRES` set (a PostgreSQL server's URL, see `bench_common.rs`),
//! eddy runs on a fresh database of that server each time, and its ceilings are
//! PostgreSQL's own: single events against `pgbench` (the same connections, `-j 2`, the
//! same seconds) running a one-row `INSERT` of the click event into eddy's `events`
//! table (its schema applied to a fresh database), and batches against 4 connections
//! each running 1000-row multi-row `INSERT`s (one statement, bound values, one
//! transaction) of the same rows into eddy's schema; both print tx/s or rows/s.
//!
//! Every server is a child process (the no-op server is this program run with
//! `--noop-server`), started fresh for each measurement with an empty data directory.
//! The client runs on the same machine, so the figures are for comparing eddy with its
//! ceilings here, not absolute numbers. Each measurement has a 1 s warm-up that is not
//! counted; errors are counted over the whole run, warm-up included.
//!
//! Run: `cargo build --release && cargo run --release --example bench_ingest`
//! Flags: `--rounds N` (3), `--seconds S` (10), `--connections C` (64), `--quick` (one
//! round of 3 s), `--only single|batch` (one part). The eddy binary is `target/release/eddy`, or `$EDDY_BIN`.

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
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|a| a == "--noop-server") {
        return noop_server();
    }
    let only = match args.iter().position(|a| a == "--only") {
        Some(i) => {
            let part = args
                .get(i + 1)
                .context("--only needs single or batch")?
                .clone();
            args.drain(i..i + 2);
            if part != "single" && part != "batch" {
                anyhow::bail!("--only {part}: give single or batch");
            }
            Some(part)
        }
        None => None,
    };
    let settings = Settings::parse("bench_ingest [--only single|batch]", &args)?;
    let eddy = eddy_binary()?;
    runtime()?.block_on(run(settings, eddy, only))
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

async fn run(s: Settings, eddy: PathBuf, only: Option<String>) -> Result<()> {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let postgres = postgres_server();
    println!("eddy ingest benchmark");
    println!("machine:  {cores} cores (client and servers share them)");
    println!("eddy:     {}", eddy.display());
    if let Some(server) = &postgres {
        println!("storage:  PostgreSQL at {server}, a fresh database per measurement");
    }
    println!(
        "settings: {} round(s) of {} s (+{} s warm-up), {} connections, {EVENT_BYTES}-byte events",
        s.rounds,
        s.seconds,
        WARMUP.as_secs(),
        s.connections
    );

    if only.as_deref() != Some("batch") {
        println!(
            "\nsingle-event ingest: POST /bench/clicks, {} keep-alive HTTP/1.1 connections",
            s.connections
        );
        if let Some(server) = &postgres {
            println!("  vs pgbench, {} clients, one-row INSERTs", s.connections);
            table_header("server", "req/s");
            let names = ["pgbench", "eddy"];
            compare(s.rounds, names, "eddy/pgbench", async |i| {
                if i == 0 {
                    pgbench(server, &s).await
                } else {
                    single(&eddy, &s, i).await
                }
            })
            .await?;
        } else {
            table_header("server", "req/s");
            let names = ["noop", "eddy"];
            compare(s.rounds, names, "eddy/noop", async |i| {
                single(&eddy, &s, i).await
            })
            .await?;
        }
    }
    if only.as_deref() == Some("single") {
        return Ok(());
    }
    if let Some(server) = &postgres {
        println!(
            "\nbatch ingest: {BATCH_CONNECTIONS} connections POSTing {BATCH_EVENTS}-event batches \
             (latency per POST) vs {BATCH_CONNECTIONS} connections running {BATCH_EVENTS}-row \
             INSERTs into eddy's schema on PostgreSQL (latency per INSERT)"
        );
        table_header("writer", "events/s");
        let names = ["raw pg", "eddy batch"];
        return compare(s.rounds, names, "eddy/raw", async |i| {
            if i == 0 {
                raw_postgres(server, s.seconds).await
            } else {
                batch(&eddy, &s, i).await
            }
        })
        .await;
    }

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
        database: None,
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

/// A fresh database on `server` with eddy's PostgreSQL schema (the ceilings' target).
async fn schema_database(server: &str) -> Result<(Database, sqlx::PgPool)> {
    let db = Database::create(server).await?;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(BATCH_CONNECTIONS as u32)
        .connect(&db.url)
        .await?;
    eddy_engine::store::migrations::postgres_migrator()
        .run(&pool)
        .await
        .context("eddy's PostgreSQL schema")?;
    sqlx::raw_sql("CREATE SEQUENCE bench_pos")
        .execute(&pool)
        .await?;
    Ok((db, pool))
}

/// The single-event ceiling on PostgreSQL: `pgbench` with one client per connection,
/// each running a one-row INSERT (its own transaction) of the click event into eddy's
/// `events` table; rate = pgbench's tps (without the initial connection time).
async fn pgbench(server: &str, s: &Settings) -> Result<Stats> {
    let (db, pool) = schema_database(server).await?;
    pool.close().await;
    let dir = tempfile::tempdir()?;
    let script = dir.path().join("insert.sql");
    let data = click_json(0, 0);
    std::fs::write(
        &script,
        format!(
            "INSERT INTO events (pos, sid, idx, eid, type, ts, content_type, data) \
             SELECT v, 1, v, uuid_send(gen_random_uuid()), 'click', \
             (extract(epoch FROM clock_timestamp()) * 1000)::bigint, 'application/json', \
             convert_to('{data}', 'UTF8') FROM (SELECT nextval('bench_pos') AS v) n;\n"
        ),
    )?;
    let out = tokio::process::Command::new("pgbench")
        .args(["-n", "-j", "2"])
        .args(["-c", &s.connections.to_string()])
        .args(["-T", &s.seconds.to_string()])
        .arg("-f")
        .arg(&script)
        .arg(&db.url)
        .output()
        .await
        .context("cannot run pgbench (postgresql-client)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let number = |prefix: &str| -> Option<f64> {
        let line = text.lines().find(|l| l.starts_with(prefix))?;
        line[prefix.len()..].split_whitespace().next()?.parse().ok()
    };
    let (Some(tps), true) = (number("tps = "), out.status.success()) else {
        anyhow::bail!(
            "pgbench failed: {}{}",
            text,
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let latency = number("latency average = ").unwrap_or(f64::NAN);
    let failed = number("number of failed transactions: ").unwrap_or(0.0);
    Ok(Stats {
        rate: tps,
        // pgbench reports the mean, not percentiles
        p50_ms: latency,
        p99_ms: f64::NAN,
        errors: failed as u64,
        samples: Vec::new(),
        steal_pct: None,
    })
}

/// The batch ceiling on PostgreSQL: [`BATCH_CONNECTIONS`] connections, each inserting
/// [`BATCH_EVENTS`] rows per statement (a multi-row VALUES with bound values, its own
/// transaction) into eddy's schema, for warm-up + `seconds`.
async fn raw_postgres(server: &str, seconds: u64) -> Result<Stats> {
    let (_db, pool) = schema_database(server).await?;
    let from = Instant::now() + WARMUP;
    let end = from + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..BATCH_CONNECTIONS)
        .map(|c| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut conn = pool.acquire().await?;
                let bodies: Vec<String> =
                    (0..BATCH_EVENTS as u64).map(|n| click_json(c, n)).collect();
                let (mut tally, mut idx) = (Tally::default(), 0i64);
                // positions apart per connection, as eddy's are unique
                let mut pos = 1 + c as i64 * 1_000_000_000;
                while Instant::now() < end {
                    let started = Instant::now();
                    let mut insert = sqlx::QueryBuilder::new(
                        "INSERT INTO events (pos, factory_id, sid, idx, eid, type, ts, \
                         content_type, data, metadata) ",
                    );
                    insert.push_values(&bodies, |mut row, data| {
                        row.push_bind(pos)
                            .push_bind(None::<i64>)
                            .push_bind(c as i64 + 1)
                            .push_bind(idx)
                            .push_bind(uuid::Uuid::now_v7().as_bytes().to_vec())
                            .push_bind("click")
                            .push_bind(now_ms())
                            .push_bind("application/json")
                            .push_bind(data.as_bytes())
                            .push_bind(None::<String>);
                        pos += 1;
                        idx += 1;
                    });
                    insert.build().execute(&mut *conn).await?;
                    tally.success(started, Instant::now(), from, end);
                }
                Ok::<_, anyhow::Error>(tally)
            })
        })
        .collect();
    let mut total = Tally::default();
    for t in tasks {
        total.merge(t.await??);
    }
    pool.close().await;
    Ok(Stats::new(total, seconds, BATCH_EVENTS as u64))
}
