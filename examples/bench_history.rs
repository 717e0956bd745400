//! History benchmark (release build, one run), issue 30's figures:
//!
//! 1. Rebuild: 1 M stored click events folded by two reducers (a trivial count and
//!    page counts) deployed together, timed from the PUTs until both fold the last.
//! 2. Time travel: `?at=` latency (p50, p99, max) at random indexes of that stream,
//!    for each reducer, and the storage the snapshots take (default `snapshotEvery`).
//! 3. Splice: a map function that drops one event in ten, previewed (timed) and
//!    approved (timed, then until both reducers folded the new history), each against
//!    the rebuild of step 1.
//! 4. Byte streams: the same lines uploaded with `?chunks=true` and as NDJSON.
//!
//! Run: `cargo build --release && cargo run --release -p eddy-server --example
//! bench_history` (`--events N`, `--lines N` to scale; `EDDY_BIN` picks the binary,
//! `EDDY_BENCH_POSTGRES` a PostgreSQL server to run it on, see `bench_common.rs`).

use std::convert::Infallible;
use std::path::Path;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use serde_json::Value;

#[path = "bench_common.rs"]
mod common;
use common::*;

const TRIVIAL: &str = "(n = 0, e) => n + 1";
const PAGES: &str = "export default (state = { total: 0, pages: {} }, event) => {\n  state.total++;\n  state.pages[event.data.url] = (state.pages[event.data.url] ?? 0) + 1;\n  return state;\n};";
const DROP_TENTH: &str = "export default (e) => e.data.ms % 10 === 0 ? null : e";
/// `?at=` reads per reducer.
const AT_READS: usize = 200;

fn main() -> Result<()> {
    let mut events = 1_000_000usize;
    let mut lines = 200_000usize;
    number_args(
        "bench_history",
        &mut [("events", &mut events), ("lines", &mut lines)],
    )?;
    run_with_eddy(|bin| async move { run(&bin, events, lines).await })
}

fn click(n: usize) -> Value {
    click_value(n)
}

async fn run(bin: &Path, events: usize, lines: usize) -> Result<()> {
    let process = start_eddy(bin, &[]).await?;
    let client = reqwest::Client::builder().build()?;
    let base = format!("http://127.0.0.1:{}", process.port);
    let total = load(&client, &base, events).await?;
    if let Some(db) = &process.database {
        db.settle().await?;
    }

    // 1. rebuild
    let t = Instant::now();
    deploy_js(&client, &base, "/bench/clicks.trivial", TRIVIAL).await?;
    deploy_js(&client, &base, "/bench/clicks.pages", PAGES).await?;
    wait_folded(&client, &base, "/bench/clicks.trivial", total - 1).await?;
    wait_folded(&client, &base, "/bench/clicks.pages", total - 1).await?;
    let rebuild = t.elapsed().as_secs_f64();
    println!(
        "\nrebuild of {total} events by two reducers: {rebuild:.2} s ({:.0} events/s)",
        total as f64 / rebuild
    );

    // 2. time travel
    let (count, bytes) = snapshots(&process).await?;
    println!(
        "snapshots (snapshotEvery 5000): {count} rows, {:.1} KiB of state JSON",
        bytes as f64 / 1024.0
    );
    println!("?at= at {AT_READS} random indexes, one at a time:");
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    for reducer in ["trivial", "pages"] {
        let mut ms = Vec::with_capacity(AT_READS);
        for _ in 0..AT_READS {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let at = seed % total as u64;
            let t = Instant::now();
            let r = client
                .get(format!("{base}/bench/clicks.{reducer}?at={at}"))
                .send()
                .await?;
            if r.status() != 200 {
                bail!("?at={at}: {} {}", r.status(), r.text().await?);
            }
            r.bytes().await?;
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        ms.sort_by(f64::total_cmp);
        println!(
            "  {reducer:<8} p50 {:>6.1} ms   p99 {:>6.1} ms   max {:>6.1} ms",
            ms[ms.len() / 2],
            ms[ms.len() * 99 / 100],
            ms[ms.len() - 1]
        );
    }

    // 3. splice
    let t = Instant::now();
    let r = client
        .post(format!("{base}/bench/clicks/splices"))
        .header("content-type", "application/javascript")
        .body(DROP_TENTH)
        .timeout(Duration::from_secs(600))
        .send()
        .await?;
    if r.status() != 201 {
        bail!("splice: {} {}", r.status(), r.text().await?);
    }
    let preview_s = t.elapsed().as_secs_f64();
    let made: Value = r.json().await?;
    let id = made["id"].as_str().context("a splice id")?;
    let after = made["preview"]["events"]["after"].as_u64().unwrap_or(0) as usize;
    let t = Instant::now();
    let r = client
        .post(format!("{base}/bench/clicks/splices/{id}/approve"))
        .timeout(Duration::from_secs(600))
        .send()
        .await?;
    if r.status() != 200 {
        bail!("approve: {} {}", r.status(), r.text().await?);
    }
    let approve_s = t.elapsed().as_secs_f64();
    wait_folded(&client, &base, "/bench/clicks.trivial", after - 1).await?;
    wait_folded(&client, &base, "/bench/clicks.pages", after - 1).await?;
    let applied_s = t.elapsed().as_secs_f64();
    println!("\nsplice of {total} events (drops one in ten, {after} left), two reducers:");
    println!(
        "  preview                         {preview_s:>7.2} s   {:.2}x the rebuild",
        preview_s / rebuild
    );
    println!(
        "  approval (answered)             {approve_s:>7.2} s   {:.2}x the rebuild",
        approve_s / rebuild
    );
    println!(
        "  approval until both folded it  {applied_s:>7.2} s   {:.2}x the rebuild",
        applied_s / rebuild
    );

    // 4. byte streams against NDJSON
    let body: Vec<u8> = (0..lines)
        .flat_map(|n| {
            let mut line = click(n).to_string().into_bytes();
            line.push(b'\n');
            line
        })
        .collect();
    let body = Bytes::from(body);
    let mb = body.len() as f64 / 1e6;
    let nd = upload(
        &client,
        &format!("{base}/bench/nd:click"),
        "application/x-ndjson",
        &body,
    )
    .await?;
    let by = upload(
        &client,
        &format!("{base}/bench/bytes:log?chunks=true"),
        "text/plain",
        &body,
    )
    .await?;
    println!("\n{lines} lines ({mb:.1} MB) in one streamed request:");
    println!(
        "  NDJSON (one event per line)   {:>7.1} MB/s  ({:.2} s)",
        mb / nd,
        nd
    );
    println!(
        "  ?chunks=true (text)           {:>7.1} MB/s  ({:.2} s)   {:.2}x NDJSON",
        mb / by,
        by,
        nd / by
    );
    Ok(())
}

/// Stores `events` click events; answers the count.
async fn load(client: &reqwest::Client, base: &str, events: usize) -> Result<usize> {
    let started = Instant::now();
    let total = store_clicks(client, &format!("{base}/bench/clicks"), events).await?;
    println!(
        "stored {total} click events in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(total)
}

/// Uploads `body` in 64 KiB pieces as one streamed request; answers the seconds.
async fn upload(
    client: &reqwest::Client,
    url: &str,
    content_type: &str,
    body: &Bytes,
) -> Result<f64> {
    let pieces: Vec<Result<Bytes, Infallible>> = (0..body.len())
        .step_by(64 * 1024)
        .map(|at| Ok(body.slice(at..(at + 64 * 1024).min(body.len()))))
        .collect();
    let t = Instant::now();
    let r = client
        .post(url)
        .header("content-type", content_type)
        .body(reqwest::Body::wrap_stream(futures::stream::iter(pieces)))
        .timeout(Duration::from_secs(600))
        .send()
        .await?;
    if r.status() != 201 {
        bail!("upload to {url}: {} {}", r.status(), r.text().await?);
    }
    Ok(t.elapsed().as_secs_f64())
}

/// Rows and bytes of state in `reducer_snapshots`.
async fn snapshots(process: &ServerProcess) -> Result<(i64, i64)> {
    const SQL: &str = "SELECT COUNT(*), COALESCE(SUM(LENGTH(state)), 0) FROM reducer_snapshots";
    if let Some(db) = &process.database {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&db.url).await?;
        let (n, b): (i64, i64) = sqlx::query_as(SQL).fetch_one(&mut conn).await?;
        return Ok((n, b));
    }
    let dir = process.dir.as_ref().context("a data directory")?;
    let conn = rusqlite::Connection::open_with_flags(
        dir.path().join("data").join("eddy.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )?;
    Ok(conn.query_row(SQL, [], |r| Ok((r.get(0)?, r.get(1)?)))?)
}
