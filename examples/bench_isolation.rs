//! Reducer isolation and pool benchmark (release build, one run):
//!
//! 1. Isolation: account A's reducer uses its whole time limit on every event (a
//!    backlog of many seconds); account B posts one event at a time and reads its
//!    state with `min-index` (the fold latency) and without (the read latency). The
//!    p50 and p99 of both, with one reducer thread (A and B share it) and with the
//!    default pool.
//! 2. Rebuild: events stored in 1 and in 4 streams, then a reducer deployed on each,
//!    timed until every one has folded its last event; with `--base <eddy>`, the same
//!    against another build in alternating rounds, and the ratio.
//!
//! Run: `cargo build --release && cargo run --release -p eddy-server --example
//! bench_isolation [-- --base /path/to/other/eddy] [--events N] [--rounds N]`
//! (`EDDY_BIN` picks the binary under test).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

#[path = "bench_common.rs"]
mod common;
use common::*;

const SPIN: &str = "(n = 0, e) => { while (true) {} }";
const PAGES: &str = "export default (state = { total: 0, pages: {} }, event) => {\n  state.total++;\n  state.pages[event.data.url] = (state.pages[event.data.url] ?? 0) + 1;\n  return state;\n};";

struct Settings {
    base: Option<PathBuf>,
    events: usize,
    rounds: usize,
    samples: usize,
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut s = Settings {
        base: None,
        events: 400_000,
        rounds: 3,
        samples: 100,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().context("missing value");
        match a.as_str() {
            "--base" => s.base = Some(PathBuf::from(value()?)),
            "--events" => s.events = value()?.parse()?,
            "--rounds" => s.rounds = value()?.parse()?,
            "--samples" => s.samples = value()?.parse()?,
            other => bail!(
                "unknown argument {other}; usage: bench_isolation [--base EDDY] [--events N] \
                 [--rounds N] [--samples N]"
            ),
        }
    }
    let bin = eddy_binary()?;
    println!("eddy binary: {}", bin.display());
    let _ = rustls::crypto::ring::default_provider().install_default();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run(s, bin))
}

struct Eddy {
    _process: ServerProcess,
    base: String,
    client: reqwest::Client,
}

async fn start(bin: &Path, extra: &[&str]) -> Result<Eddy> {
    let process = start_eddy(bin, extra).await?;
    Ok(Eddy {
        base: format!("http://127.0.0.1:{}", process.port),
        _process: process,
        client: reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()?,
    })
}

impl Eddy {
    async fn deploy(&self, path: &str, code: &str) -> Result<()> {
        deploy_js(&self.client, &self.base, path, code).await
    }

    async fn post_batch(&self, path: &str, events: &[Value]) -> Result<()> {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .header("Content-Type", "application/vnd.eddy.events+json")
            .json(events)
            .send()
            .await?;
        if r.status() != 201 {
            bail!("batch to {path}: {} {}", r.status(), r.text().await?);
        }
        Ok(())
    }

    /// Waits until `reducer` has folded `index`.
    async fn folded(&self, reducer: &str, index: usize) -> Result<()> {
        wait_folded(&self.client, &self.base, reducer, index)
            .await
            .map(drop)
    }
}

async fn run(s: Settings, bin: PathBuf) -> Result<()> {
    println!(
        "\n1. isolation: A's reducer spends its 100 ms limit on every event; B posts and reads"
    );
    for threads in ["1", "0"] {
        isolation(&bin, threads, s.samples).await?;
    }
    println!(
        "\n2. rebuild: {} events in total, page-count reducers",
        s.events
    );
    for streams in [1usize, 4] {
        let mut ours = Vec::new();
        let mut theirs = Vec::new();
        for round in 0..s.rounds {
            let rate = rebuild(&bin, streams, s.events).await?;
            ours.push(rate);
            let line = match &s.base {
                Some(base) => {
                    let other = rebuild(base, streams, s.events).await?;
                    theirs.push(other);
                    format!(
                        "{rate:>10.0} events/s, base {other:>10.0}, ratio {:.3}",
                        rate / other
                    )
                }
                None => format!("{rate:>10.0} events/s"),
            };
            println!("  {streams} stream(s), round {}: {line}", round + 1);
        }
        let ours = median(ours);
        if theirs.is_empty() {
            println!("  {streams} stream(s): median {ours:.0} events/s");
        } else {
            let theirs = median(theirs);
            println!(
                "  {streams} stream(s): median {ours:.0} events/s, base {theirs:.0}, ratio {:.3}",
                ours / theirs
            );
        }
    }
    Ok(())
}

async fn isolation(bin: &Path, threads: &str, samples: usize) -> Result<()> {
    let eddy = start(bin, &["--reducer-threads", threads]).await?;
    eddy.deploy("/a/slow.spin", SPIN).await?;
    eddy.deploy("/b/fast.n", "(n = 0, e) => n + 1").await?;
    // more backlog than the measurement takes
    let backlog: Vec<Value> = (0..samples * 3)
        .map(|i| json!({"type": "t", "data": {"i": i}}))
        .collect();
    eddy.post_batch("/a/slow", &backlog).await?;
    let mut folds = Vec::with_capacity(samples);
    let mut reads = Vec::with_capacity(samples);
    for i in 0..samples {
        let r = eddy
            .client
            .post(format!("{}/b/fast", eddy.base))
            .header("Event-Type", "t")
            .json(&json!({"i": i}))
            .send()
            .await?;
        if r.status() != 201 {
            bail!("POST to B: {}", r.status());
        }
        let at = Instant::now();
        eddy.folded("/b/fast.n", i).await?;
        folds.push(at.elapsed().as_micros() as u32);
        let at = Instant::now();
        let r = eddy
            .client
            .get(format!("{}/b/fast.n", eddy.base))
            .send()
            .await?;
        r.bytes().await?;
        reads.push(at.elapsed().as_micros() as u32);
    }
    let lag: Value = eddy
        .client
        .get(format!("{}/a/slow/reducers", eddy.base))
        .send()
        .await?
        .json()
        .await?;
    folds.sort_unstable();
    reads.sort_unstable();
    println!(
        "  --reducer-threads {threads}: B's fold p50 {:.1} ms, p99 {:.1} ms; B's state read p50 \
         {:.2} ms, p99 {:.2} ms ({samples} samples; A still {} events behind)",
        percentile_ms(&folds, 0.5),
        percentile_ms(&folds, 0.99),
        percentile_ms(&reads, 0.5),
        percentile_ms(&reads, 0.99),
        lag[0]["lag"]
    );
    Ok(())
}

/// Stores `events` split over `streams` streams, deploys a reducer on each, and
/// answers the events folded per second until every reducer has caught up.
async fn rebuild(bin: &Path, streams: usize, events: usize) -> Result<f64> {
    let eddy = start(bin, &[]).await?;
    let per = events / streams;
    let chunk: Vec<Value> = (0..1000)
        .map(|i| json!({"type": "click", "data": {"url": format!("/p/{}", i % 50), "n": i}}))
        .collect();
    for s in 0..streams {
        for _ in 0..per / 1000 {
            eddy.post_batch(&format!("/r/s{s}"), &chunk).await?;
        }
    }
    let per = per / 1000 * 1000;
    let at = Instant::now();
    for s in 0..streams {
        eddy.deploy(&format!("/r/s{s}.pages"), PAGES).await?;
    }
    for s in 0..streams {
        eddy.folded(&format!("/r/s{s}.pages"), per - 1).await?;
    }
    let took = at.elapsed().max(Duration::from_micros(1));
    Ok((per * streams) as f64 / took.as_secs_f64())
}
