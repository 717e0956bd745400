//! Reducer benchmark (release build, one run):
//!
//! 1. The ceiling: the bare rquickjs call loop (a `Sandbox` folding pre-built events,
//!    no storage), for a trivial reducer and a realistic one (clickstream counts per
//!    page).
//! 2. Rebuild: 1 M stored click events folded by each reducer deployed on an eddy
//!    child process, timed from the PUT until `min-index` reports the last event folded,
//!    and the ratio to the ceiling.
//! 3. Live lag: the realistic reducer on a stream while 64 connections POST single
//!    events for 10 s; the lag (events not yet folded) sampled every 100 ms.
//! 4. Memory: the child's RSS with 100 k substreams of a factory each holding state.
//!
//! Run: `cargo build --release && cargo run --release -p eddy-server --example
//! bench_reducers` (`--events N`, `--substreams N`, `--seconds S` to scale;
//! `--rebuild-only` stops after 2; `EDDY_BIN` picks the binary, `EDDY_BENCH_POSTGRES` a
//! PostgreSQL server to run it on, see `bench_common.rs`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use eddy_runtime_js::{EventIn, Fold, Language, Limits, Sandbox, prepare};
use serde_json::{Value, json};

#[path = "bench_common.rs"]
mod common;
use common::*;

const TRIVIAL: &str = "(n = 0, e) => n + 1";
const PAGES: &str = "export default (state = { total: 0, pages: {} }, event) => {\n  state.total++;\n  state.pages[event.data.url] = (state.pages[event.data.url] ?? 0) + 1;\n  return state;\n};";

struct Settings {
    events: usize,
    substreams: usize,
    seconds: u64,
    rebuild_only: bool,
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut s = Settings {
        events: 1_000_000,
        substreams: 100_000,
        seconds: 10,
        rebuild_only: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || -> Result<usize> {
            it.next()
                .context("missing value")?
                .parse()
                .context("not a number")
        };
        match a.as_str() {
            "--events" => s.events = value()?,
            "--substreams" => s.substreams = value()?,
            "--seconds" => s.seconds = value()? as u64,
            "--rebuild-only" => s.rebuild_only = true,
            other => bail!(
                "unknown argument {other}; usage: bench_reducers [--events N] [--substreams N] \
                 [--seconds S] [--rebuild-only]"
            ),
        }
    }
    let bin = eddy_binary()?;
    println!("eddy binary: {}", bin.display());
    let trivial_ceiling = bare_loop(TRIVIAL, s.events)?;
    let pages_ceiling = bare_loop(PAGES, s.events)?;
    println!(
        "\nbare rquickjs call loop ({} calls, events built in Rust, no storage):",
        s.events
    );
    println!("  trivial    {:>10.0} calls/s", trivial_ceiling);
    println!("  page counts{:>10.0} calls/s", pages_ceiling);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run(s, bin, trivial_ceiling, pages_ceiling))
}

fn click(n: usize) -> Value {
    click_value(n)
}

/// Calls per second of `code` folding `n` events in batches of 1000.
fn bare_loop(code: &str, n: usize) -> Result<f64> {
    let mut sandbox = Sandbox::new(Limits::default()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let prepared = prepare(code, Language::JavaScript).map_err(|e| anyhow::anyhow!("{e}"))?;
    sandbox
        .load(0, "bench", &prepared)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let data: Vec<String> = (0..1000).map(|i| click(i).to_string()).collect();
    let events: Vec<EventIn> = data
        .iter()
        .enumerate()
        .map(|(i, d)| EventIn {
            stream: "bench/clicks",
            index: i as i64,
            id: "01a202b4-236a-769d-9c3a-d2811319183b",
            event_type: "click",
            timestamp: 1_795_000_000_000,
            content_type: "application/json",
            data_json: d,
            encoding: None,
            args_json: None,
        })
        .collect();
    let work: Vec<Fold> = events
        .iter()
        .map(|e| Fold {
            slot: 0,
            sid: 1,
            index: e.index,
            event: e,
            halt_on_error: false,
            check_size: false,
            live: false,
        })
        .collect();
    let started = Instant::now();
    let mut done = 0;
    while done < n {
        let failures = sandbox.fold(&work);
        if !failures.is_empty() {
            bail!("the bench reducer failed: {:?}", failures[0].1);
        }
        done += work.len();
    }
    Ok(done as f64 / started.elapsed().as_secs_f64())
}

/// An eddy child process with a client for its API.
struct Eddy {
    process: ServerProcess,
    base: String,
    client: reqwest::Client,
}

async fn start(bin: &Path) -> Result<Eddy> {
    let process = start_eddy(bin, &[]).await?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(128)
        .build()?;
    Ok(Eddy {
        base: format!("http://127.0.0.1:{}", process.port),
        process,
        client,
    })
}

impl Eddy {
    fn rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.process.child.id()))
            .unwrap_or_default();
        let kib: f64 = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        kib / 1024.0
    }

    async fn deploy(&self, path: &str, code: &str) -> Result<()> {
        deploy_js(&self.client, &self.base, path, code).await
    }

    /// Waits until `reducer` has folded `index`; answers its state.
    async fn folded(&self, reducer: &str, index: usize) -> Result<Value> {
        wait_folded(&self.client, &self.base, reducer, index).await
    }

    async fn lag(&self, stream: &str) -> Result<i64> {
        let status: Value = self
            .client
            .get(format!("{}{stream}/reducers", self.base))
            .send()
            .await?
            .json()
            .await?;
        Ok(status
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| r["lag"].as_i64().unwrap_or(0))
            .max()
            .unwrap_or(0))
    }
}

async fn run(s: Settings, bin: PathBuf, trivial_ceiling: f64, pages_ceiling: f64) -> Result<()> {
    // 2. rebuild over stored events
    let eddy = start(&bin).await?;
    let started = Instant::now();
    let total = store_clicks(
        &eddy.client,
        &format!("{}/bench/clicks", eddy.base),
        s.events,
    )
    .await?;
    println!(
        "\nstored {total} click events in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // on PostgreSQL, not measured against its own cleanup of the rows just stored
    if let Some(db) = &eddy.process.database {
        db.settle().await?;
    }
    println!("\nrebuild: deploy, then wait until the last event is folded");
    println!("  reducer        events/s   bare loop   ratio");
    for (name, code, ceiling) in [
        ("trivial", TRIVIAL, trivial_ceiling),
        ("pages", PAGES, pages_ceiling),
    ] {
        let t = Instant::now();
        eddy.deploy(&format!("/bench/clicks.{name}"), code).await?;
        let state = eddy
            .folded(&format!("/bench/clicks.{name}"), total - 1)
            .await?;
        let rate = total as f64 / t.elapsed().as_secs_f64();
        let check = if name == "trivial" {
            state.as_u64() == Some(total as u64)
        } else {
            state["total"].as_u64() == Some(total as u64)
        };
        if !check {
            bail!("{name}: wrong state {state}");
        }
        println!(
            "  {name:<12} {rate:>10.0}  {ceiling:>10.0}   {:.2}x",
            rate / ceiling
        );
    }
    drop(eddy);
    if s.rebuild_only {
        return Ok(());
    }

    // 3. live lag under the single-event load
    let eddy = start(&bin).await?;
    eddy.deploy("/bench/live.pages", PAGES).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let load: Vec<_> = (0..64)
        .map(|c| {
            let (client, url, stop, sent) = (
                eddy.client.clone(),
                format!("{}/bench/live", eddy.base),
                stop.clone(),
                sent.clone(),
            );
            tokio::spawn(async move {
                let mut n = c * 1_000_000;
                while !stop.load(Ordering::Relaxed) {
                    let body = click(n).to_string();
                    n += 1;
                    let ok = client
                        .post(&url)
                        .header("Content-Type", "application/json")
                        .header("Event-Type", "click")
                        .body(body)
                        .send()
                        .await
                        .is_ok_and(|r| r.status() == 201);
                    if ok {
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    let t = Instant::now();
    let mut lags = Vec::new();
    while t.elapsed() < Duration::from_secs(s.seconds) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        lags.push(eddy.lag("/bench/live").await?);
    }
    stop.store(true, Ordering::Relaxed);
    for l in load {
        let _ = l.await;
    }
    let secs = t.elapsed().as_secs_f64();
    let n = sent.load(Ordering::Relaxed);
    let caught = Instant::now();
    let state = eddy.folded("/bench/live.pages", n as usize - 1).await?;
    let catch_up = caught.elapsed();
    lags.sort_unstable();
    println!(
        "\nlive lag: 64 connections POSTing single events for {} s with the page-counts reducer",
        s.seconds
    );
    println!(
        "  ingest {:.0} req/s; lag (events not yet folded) p50 {}, p99 {}, max {}; folded everything {} ms after the load stopped (state total {})",
        n as f64 / secs,
        lags[lags.len() / 2],
        lags[lags.len() * 99 / 100],
        lags[lags.len() - 1],
        catch_up.as_millis(),
        state["total"]
    );
    drop(eddy);

    // 4. memory with many substreams
    let eddy = start(&bin).await?;
    let r = eddy
        .client
        .put(format!("{}/bench/users/settings", eddy.base))
        .json(&json!({"factory": true}))
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("settings: {}", r.status());
    }
    eddy.deploy(
        "/bench/users.profile",
        "(s = { visits: 0 }, e) => ({ visits: s.visits + 1, last: e.data.url, user: e.args[0] })",
    )
    .await?;
    let before = eddy.rss_mib();
    let next = Arc::new(AtomicU64::new(0));
    let subs = s.substreams;
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let (client, base, next) = (eddy.client.clone(), eddy.base.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let u = next.fetch_add(1, Ordering::SeqCst) as usize;
                    if u >= subs {
                        return Ok::<_, anyhow::Error>(());
                    }
                    let r = client
                        .post(format!("{base}/bench/users('u{u}')"))
                        .header("Content-Type", "application/json")
                        .header("Event-Type", "visit")
                        .body(click(u).to_string())
                        .send()
                        .await?;
                    if r.status() != 201 {
                        bail!("append: {}", r.status());
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    while eddy.lag("/bench/users").await? > 0 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let last = eddy
        .folded(&format!("/bench/users('u{}').profile", subs - 1), 0)
        .await?;
    tokio::time::sleep(Duration::from_millis(500)).await; // a checkpoint, then eviction
    println!("\nmemory: {subs} substreams of a factory, each with a reducer state (e.g. {last})");
    println!(
        "  RSS {before:.1} MiB with the reducer deployed, {:.1} MiB with every state folded",
        eddy.rss_mib()
    );
    Ok(())
}
