//! Console benchmark (release build, one run): how the web console at `/ui` answers on
//! a stream of N events (default 1 M), measured in headless Chromium over WebDriver,
//! each time from the click (or the navigation) until the page shows what was asked:
//!
//! - the stream's first page of events;
//! - "next" (the second page);
//! - "last page" (the count found by halving, then the page);
//! - one event in full (envelope and raw form);
//! - the reducer page (state and status) of a reducer that folded all N events.
//!
//! Medians of R rounds. Run: `cargo build --release && cargo run --release -p
//! eddy-server --example bench_console` (`--events N`, `--rounds R`; `EDDY_BIN` picks
//! the binary; chromedriver and chromium must be on PATH).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use fantoccini::{Client, ClientBuilder, Locator};

#[path = "bench_common.rs"]
mod common;
use common::*;

fn main() -> Result<()> {
    let mut events = 1_000_000usize;
    let mut rounds = 5usize;
    number_args(
        "bench_console",
        &mut [("events", &mut events), ("rounds", &mut rounds)],
    )?;
    run_with_eddy(|bin| async move { run(&bin, events, rounds).await })
}

/// Waits until `css` shows text containing `needle`.
async fn shown(c: &Client, css: &str, needle: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(el) = c.find(Locator::Css(css)).await
            && el.text().await.is_ok_and(|t| t.contains(needle))
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{css} never showed {needle:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn run(bin: &std::path::Path, n: usize, rounds: usize) -> Result<()> {
    let server = start_eddy(bin, &[]).await?;
    let base = format!("http://127.0.0.1:{}", server.port);
    let http = reqwest::Client::new();
    let mut body = String::with_capacity(n * 24);
    for i in 0..n {
        body.push_str(&format!("{{\"i\":{i},\"url\":\"/p/{}\"}}\n", i % 97));
    }
    let t = Instant::now();
    let r = http
        .post(format!("{base}/acme/big"))
        .header("Content-Type", "application/x-ndjson")
        .header("Event-Type", "click")
        .body(body)
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("ingest: {}", r.status());
    }
    println!("{n} events appended in {:.1} s", t.elapsed().as_secs_f64());
    let r = http
        .put(format!("{base}/acme/big.count"))
        .header("Content-Type", "application/javascript")
        .body("(n = 0, e) => n + 1")
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("deploy: {}", r.status());
    }
    let folded = http
        .get(format!(
            "{base}/acme/big.count?min-index={}&wait=300000",
            n - 1
        ))
        .send()
        .await?;
    println!("reducer folded: {}", folded.text().await?);

    let profile = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut driver = tokio::process::Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("chromedriver on PATH")?;
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({ "args": [
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--window-size=1280,900",
            format!("--user-data-dir={}", profile.path().display()),
        ]}),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let c = loop {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(c) => break c,
            Err(e) if Instant::now() > deadline => bail!("no WebDriver session: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let last = format!("{{\"i\":{},", n - 1);
    let mut times: [Vec<f64>; 5] = Default::default();
    for _ in 0..rounds {
        let ms = |t: Instant| t.elapsed().as_secs_f64() * 1000.0;
        c.goto(&format!("{base}/ui#/")).await?;
        shown(&c, "main", "Accounts").await?;
        let t = Instant::now();
        c.goto(&format!("{base}/ui#/stream/acme%2Fbig")).await?;
        shown(&c, "#events", "{\"i\":49,").await?;
        times[0].push(ms(t));
        let t = Instant::now();
        c.find(Locator::Css("#next")).await?.click().await?;
        shown(&c, "#events", "{\"i\":99,").await?;
        times[1].push(ms(t));
        let t = Instant::now();
        c.find(Locator::Css("#last")).await?.click().await?;
        shown(&c, "#events", &last).await?;
        times[2].push(ms(t));
        let t = Instant::now();
        c.goto(&format!("{base}/ui#/event/acme%2Fbig/{}", n / 2))
            .await?;
        shown(&c, "#raw", &format!("{{\"i\":{},", n / 2)).await?;
        times[3].push(ms(t));
        let t = Instant::now();
        c.goto(&format!("{base}/ui#/reducer/acme%2Fbig/count"))
            .await?;
        shown(&c, "#state", &n.to_string()).await?;
        shown(&c, "#reducer-status", "running").await?;
        times[4].push(ms(t));
    }
    let _ = c.close().await;
    let _ = driver.kill().await;
    println!("\nconsole on a stream of {n} events, {rounds} rounds, median (all) ms:");
    for (what, v) in [
        "first page",
        "next page",
        "last page",
        "one event",
        "reducer page",
    ]
    .iter()
    .zip(times)
    {
        let all: Vec<String> = v.iter().map(|x| format!("{x:.0}")).collect();
        println!(
            "  {what:<13} {:>7.1}   ({})",
            median(v.clone()),
            all.join(", ")
        );
    }
    drop(server);
    Ok(())
}
