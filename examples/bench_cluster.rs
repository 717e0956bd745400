//! Several eddy nodes on one PostgreSQL database (API §11), on this one machine:
//!
//! 1. Ingest: C keep-alive connections (default 64) POST single ~200-byte events to
//!    1, 2 and 3 nodes of one fresh database, the connections spread evenly over the
//!    nodes; rounds alternate the order of the three. Then the same with H
//!    connections (default 256), enough to keep the head row busy: with fixed
//!    connections, n nodes that take turns at the head carry each connection's event
//!    once per n holds, so C measures latency as much as capacity. One machine cannot
//!    show scaling (the nodes, PostgreSQL and the load share its two cores); the
//!    target is no collapse: 3 nodes at least 0.8x of 1 node.
//! 2. Live delivery across nodes: events POSTed to node A at a steady rate (default
//!    1 000/s), each carrying the time it was sent; one EventSource subscriber on node B
//!    (`?data=true`) takes them; prints p50/p99/max of send-to-receive, and any missing
//!    or out-of-order event. Target: p99 under 50 ms at 1 000/s.
//! 3. Takeover: three nodes (`--lease-ms`, default 10 000); a reducer, a copy pipe and a
//!    webhook are made on node A (which takes their leases), events flow through node B
//!    at 100/s, then node A is killed (SIGKILL); prints the time from the kill to the
//!    first fold, the first piped event and the first webhook delivery done elsewhere.
//!    Target: under the lease time plus 3 s.
//!
//! Needs `EDDY_BENCH_POSTGRES` (a PostgreSQL server's URL, see `bench_common.rs`).
//! Run: `cargo build --release && EDDY_BENCH_POSTGRES=postgres://... cargo run --release
//! --example bench_cluster`. Flags: `--rounds N` (3), `--seconds S` (10),
//! `--connections C` (64), `--heavy-connections H` (256; 0 skips), `--quick`,
//! `--only ingest|latency|takeover`, `--rate R` (1000), `--lease-ms L` (10000).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use eventsource_stream::Eventsource;
use futures::StreamExt;
use hyper::StatusCode;

#[path = "bench_common.rs"]
mod common;
use common::*;

struct Options {
    load: Settings,
    heavy: usize,
    only: Option<String>,
    rate: u64,
    lease_ms: u64,
}

fn main() -> Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut take = |flag: &str| -> Result<Option<String>> {
        match args.iter().position(|a| a == flag) {
            Some(i) => {
                let v = args
                    .get(i + 1)
                    .with_context(|| format!("{flag} needs a value"))?
                    .clone();
                args.drain(i..=i + 1);
                Ok(Some(v))
            }
            None => Ok(None),
        }
    };
    let only = take("--only")?;
    let rate = take("--rate")?.map_or(Ok(1000), |v| v.parse())?;
    let lease_ms = take("--lease-ms")?.map_or(Ok(10_000), |v| v.parse())?;
    let heavy = take("--heavy-connections")?.map_or(Ok(256), |v| v.parse())?;
    let load = Settings::parse("bench_cluster", &args)?;
    let options = Options {
        load,
        heavy,
        only,
        rate,
        lease_ms,
    };
    if postgres_server().is_none() {
        bail!("bench_cluster needs {POSTGRES_VAR}: a PostgreSQL server's URL, no database");
    }
    let bin = eddy_binary()?;
    // reqwest is built without a default TLS provider
    let _ = rustls::crypto::ring::default_provider().install_default();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(&bin, &options))
}

async fn run(bin: &Path, o: &Options) -> Result<()> {
    let wants = |part: &str| o.only.as_deref().is_none_or(|p| p == part);
    if wants("ingest") {
        ingest(bin, &o.load).await?;
        if o.heavy > 0 {
            let heavy = Settings {
                connections: o.heavy,
                ..o.load
            };
            ingest(bin, &heavy).await?;
        }
    }
    if wants("latency") {
        latency(bin, o.rate, o.load.seconds).await?;
    }
    if wants("takeover") {
        takeover(bin, o.lease_ms).await?;
    }
    Ok(())
}

/// `n` nodes on one fresh database, the database dropped with the first.
async fn nodes(bin: &Path, n: usize, extra: &[&str]) -> Result<Vec<ServerProcess>> {
    let server = postgres_server().context(POSTGRES_VAR)?;
    let database = Database::create(&server).await?;
    let mut all = Vec::with_capacity(n);
    for _ in 0..n {
        all.push(start_node(bin, &database.url, extra).await?);
    }
    // the database goes once the first node (dropped last) is gone
    all[0].database = Some(database);
    all.reverse();
    Ok(all)
}

async fn ingest(bin: &Path, s: &Settings) -> Result<()> {
    println!(
        "ingest: {} connections spread over 1, 2 and 3 nodes, {} s",
        s.connections, s.seconds
    );
    println!(
        "{:<6} {:<11} {:>12} {:>8} {:>8} {:>7}",
        "round", "nodes", "req/s", "p50 ms", "p99 ms", "errors"
    );
    let mut all: [Vec<Stats>; 3] = Default::default();
    for round in 1..=s.rounds {
        let order: [usize; 3] = match round % 3 {
            1 => [1, 2, 3],
            2 => [3, 1, 2],
            _ => [2, 3, 1],
        };
        for n in order {
            let stats = ingest_once(bin, s, n).await?;
            stats.print(&round.to_string(), &format!("{n} node(s)"));
            all[n - 1].push(stats);
        }
    }
    let medians: Vec<Stats> = all.iter().map(|a| Stats::median(a)).collect();
    for (i, m) in medians.iter().enumerate() {
        m.print("median", &format!("{} node(s)", i + 1));
    }
    println!(
        "ratios of medians: 2/1 nodes {:.2}x, 3/1 nodes {:.2}x (target: 3 nodes >= 0.8x)",
        medians[1].rate / medians[0].rate,
        medians[2].rate / medians[0].rate
    );
    Ok(())
}

async fn ingest_once(bin: &Path, s: &Settings, n: usize) -> Result<Stats> {
    let servers = nodes(bin, n, &[]).await?;
    let mut loads = Vec::new();
    for (i, server) in servers.iter().enumerate() {
        let conns = s.connections / n + usize::from(i < s.connections % n);
        let port = server.port;
        loads.push(tokio::spawn(run_load(
            port,
            conns,
            s.seconds,
            StatusCode::CREATED,
            move |c, k| {
                let body = click_json(c, k).into();
                request(port, "/bench/clicks".into(), Some("click"), body)
            },
        )));
    }
    let mut total = Tally::default();
    for load in loads {
        total.merge(load.await??);
    }
    Ok(Stats::new(total, s.seconds, 1))
}

async fn latency(bin: &Path, rate: u64, secs: u64) -> Result<()> {
    let servers = nodes(bin, 2, &[]).await?;
    let (a, b) = (&servers[1], &servers[0]);
    let http = reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(64)
        .build()?;
    let post = |base: String, body: String| {
        let http = http.clone();
        async move {
            http.post(format!("{base}/bench/live"))
                .header("Content-Type", "application/json")
                .header("Event-Type", "tick")
                .body(body)
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    };
    let base_a = format!("http://127.0.0.1:{}", a.port);
    let base_b = format!("http://127.0.0.1:{}", b.port);
    if post(base_a.clone(), "{\"setup\":true}".into()).await? != 201 {
        bail!("cannot create /bench/live");
    }
    let epoch = Instant::now();
    let r = http
        .get(format!("{base_b}/bench/live?data=true"))
        .header("Accept", "text/event-stream")
        .header("Last-Event-ID", "0")
        .send()
        .await?;
    if r.status() != 200 {
        bail!("subscribe on node B: {}", r.status());
    }
    let total = rate * secs;
    let received = Arc::new(Mutex::new(Vec::<(u64, u64)>::new()));
    let reader = {
        let received = received.clone();
        let mut events = Box::pin(r.bytes_stream().eventsource());
        tokio::spawn(async move {
            while let Some(Ok(e)) = events.next().await {
                let now = epoch.elapsed().as_micros() as u64;
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&e.data) else {
                    continue;
                };
                // the stream's index: events arrive in commit order, which is not the
                // order they were sent in
                let (Some(index), Some(t)) = (v["index"].as_u64(), v["data"]["t"].as_u64()) else {
                    continue;
                };
                let mut got = received.lock().unwrap_or_else(|e| e.into_inner());
                got.push((index, now.saturating_sub(t)));
                if got.len() as u64 >= total {
                    break;
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
    let mut sends = Vec::with_capacity(total as usize);
    let started = Instant::now();
    for n in 0..total {
        tick.tick().await;
        let t = epoch.elapsed().as_micros() as u64;
        sends.push(tokio::spawn(post(
            base_a.clone(),
            format!("{{\"n\":{n},\"t\":{t}}}"),
        )));
    }
    let mut failed = 0;
    for s in sends {
        if !matches!(s.await?, Ok(201)) {
            failed += 1;
        }
    }
    let sent_rate = total as f64 / started.elapsed().as_secs_f64();
    let _ = tokio::time::timeout(Duration::from_secs(10), reader).await;
    let got = received.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let out_of_order = got.windows(2).filter(|w| w[1].0 <= w[0].0).count();
    let mut lat: Vec<u32> = got
        .iter()
        .map(|g| g.1.min(u32::MAX as u64) as u32)
        .collect();
    lat.sort_unstable();
    println!(
        "latency: POST on node A to SSE on node B, {rate}/s asked, {sent_rate:.0}/s sent, {total} events"
    );
    println!(
        "  p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms  received {}  missing {}  out of order {}  failed POSTs {}  (target: p99 < 50 ms)",
        percentile_ms(&lat, 0.50),
        percentile_ms(&lat, 0.99),
        percentile_ms(&lat, 1.0),
        got.len(),
        total.saturating_sub(got.len() as u64),
        out_of_order,
        failed
    );
    Ok(())
}

/// A webhook receiver on a free port: the times deliveries arrive.
async fn receiver() -> Result<(String, Arc<Mutex<Vec<Instant>>>)> {
    let got = Arc::new(Mutex::new(Vec::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    let record = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let record = record.clone();
            async move {
                record
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(Instant::now());
                "ok"
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, got))
}

async fn takeover(bin: &Path, lease_ms: u64) -> Result<()> {
    let lease = lease_ms.to_string();
    let extra = ["--lease-ms", lease.as_str(), "--allow-private-targets"];
    let mut servers = nodes(bin, 3, &extra).await?;
    let url = servers[2]
        .database
        .as_ref()
        .map(|d| d.url.clone())
        .context("the database")?;
    let base = |s: &ServerProcess| format!("http://127.0.0.1:{}", s.port);
    let http = reqwest::Client::new();
    let (hook, deliveries) = receiver().await?;
    let first = base(&servers[0]);
    deploy_js(&http, &first, "/bench/t.count", "(n = 0, e) => n + 1").await?;
    let put = http
        .put(format!("{first}/bench/t/pipe/bench/copy"))
        .send()
        .await?;
    if !put.status().is_success() {
        bail!("PUT pipe: {}", put.status());
    }
    let created = http
        .post(format!("{first}/bench/t/webhooks"))
        .json(&serde_json::json!({"url": hook}))
        .send()
        .await?;
    if created.status() != 201 {
        bail!("POST webhook: {}", created.status());
    }
    // the work spreads over the nodes (a round a second); then, for each piece, its
    // node is killed while events flow through another, and a new node takes its place
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (mut results, mut graveyard) = (Vec::new(), Vec::new());
    for kind in ["reducers:", "pipe:", "webhook:"] {
        let status: serde_json::Value = http
            .get(format!("{}/api/cluster", base(&servers[0])))
            .send()
            .await?
            .json()
            .await?;
        let owner = status["leases"]
            .as_array()
            .and_then(|l| {
                l.iter()
                    .find(|l| l["work"].as_str().is_some_and(|w| w.starts_with(kind)))
            })
            .and_then(|l| l["node"].as_str())
            .context("a lease")?
            .to_owned();
        let mut victim = None;
        for (i, s) in servers.iter().enumerate() {
            let who: serde_json::Value = http
                .get(format!("{}/api/cluster", base(s)))
                .send()
                .await?
                .json()
                .await?;
            if who["node"] == owner.as_str() {
                victim = Some(i);
            }
        }
        let victim = victim.context("the owner among the nodes")?;
        let survivor = base(&servers[(victim + 1) % servers.len()]);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let feeder = {
            let (http, survivor, stop) = (http.clone(), survivor.clone(), stop.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(10));
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    tick.tick().await;
                    let _ = http
                        .post(format!("{survivor}/bench/t"))
                        .header("Event-Type", "x")
                        .header("Content-Type", "application/json")
                        .body("{}")
                        .send()
                        .await;
                }
            })
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        let progress = || async {
            Ok::<_, anyhow::Error>(match kind {
                "reducers:" => state(&http, &survivor).await?,
                "pipe:" => count(&http, &survivor, "copy").await?,
                _ => deliveries.lock().unwrap_or_else(|e| e.into_inner()).len() as u64,
            })
        };
        let killed = Instant::now();
        servers[victim].child.kill()?;
        let _ = servers[victim].child.wait();
        // what the dead node had in flight may still land: count from a moment after
        tokio::time::sleep(Duration::from_millis(100)).await;
        let before = progress().await?;
        let deadline = killed + Duration::from_millis(lease_ms) + Duration::from_secs(30);
        let mut moved = None;
        while Instant::now() < deadline {
            if progress().await? > before {
                moved = Some(killed.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = feeder.await;
        results.push((kind.trim_end_matches(':'), moved));
        // a new node in the dead one's place (the database stays with its holder)
        let fresh = start_node(bin, &url, &extra).await?;
        let dead = std::mem::replace(&mut servers[victim], fresh);
        if dead.database.is_some() {
            graveyard.push(dead);
        }
    }
    let show =
        |d: &Option<Duration>| d.map_or("none".to_owned(), |d| format!("{:.2} s", d.as_secs_f64()));
    println!(
        "takeover after SIGKILL of the owner (lease {:.1} s; target: under {:.1} s):",
        lease_ms as f64 / 1000.0,
        lease_ms as f64 / 1000.0 + 3.0
    );
    for (kind, moved) in &results {
        println!("  first progress of the {kind} elsewhere: {}", show(moved));
    }
    // the database goes with its holder, after every node
    drop(servers);
    drop(graveyard);
    Ok(())
}

/// The counting reducer's state as node `base` answers it.
async fn state(http: &reqwest::Client, base: &str) -> Result<u64> {
    let r = http.get(format!("{base}/bench/t.count")).send().await?;
    Ok(r.json::<serde_json::Value>().await?.as_u64().unwrap_or(0))
}

/// How many events stream `name` of account `bench` has, as node `base` lists it.
async fn count(http: &reqwest::Client, base: &str, name: &str) -> Result<u64> {
    let r = http.get(format!("{base}/bench")).send().await?;
    if r.status() != 200 {
        return Ok(0);
    }
    let v: serde_json::Value = r.json().await?;
    Ok(v.as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == name))
        .and_then(|s| s["events"].as_u64())
        .unwrap_or(0))
}
