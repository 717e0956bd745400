//! Access-control benchmark for eddy: what authentication and type validation cost on
//! the single-event ingest path.
//!
//! C keep-alive HTTP/1.1 connections (default 64) each send sequential `POST`s of a
//! ~200-byte JSON `click` event, against two configurations of the release `eddy`:
//!
//! - **open**: started without an admin token (every request allowed); the events go to
//!   the untyped stream `/bench/open`.
//! - **typed**: started with `--admin-token`; the account `bench` is created through
//!   `POST /api/accounts`, the JTD schema [`SCHEMA`] is PUT on `/bench/typed:click` with
//!   the account's key, and the events (which match the schema) are POSTed to
//!   `/bench/typed` with `Authorization: Bearer <key>`, so each one is authenticated
//!   and validated.
//!
//! Both bodies have the same shape and size. Before each typed measurement the program
//! checks that a valid event is answered 201, an invalid one (a `url` failing the
//! schema's pattern, and one with wrong types) 400 with `errors`, and an event without
//! the key 401; before each open one, that an event without credentials is 201.
//!
//! Each measurement runs against a fresh eddy process with an empty data directory;
//! each round measures both, in alternating order (open first in odd rounds, typed
//! first in even ones), so drift and noise hit both alike. It prints req/s, p50/p99
//! latency, errors and typed/open per round, then the medians. Each measurement has a
//! 1 s warm-up that is not counted; errors are counted over the whole run.
//!
//! Run: `cargo build --release && cargo run --release --example bench_access`
//! Flags: `--rounds N` (3), `--seconds S` (10), `--connections C` (64), `--quick` (one
//! round of 3 s). The eddy binary is `target/release/eddy`, or `$EDDY_BIN`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request, StatusCode};

#[path = "bench_common.rs"]
mod common;
use common::*;

/// The event type's JTD schema (RFC 8927), with a pattern on `url`.
const SCHEMA: &str = r#"{"properties":{"url":{"type":"string","metadata":{"pattern":"^https?://"}},"x":{"type":"int32"},"y":{"type":"int32"}},"optionalProperties":{"ref":{"type":"string"}}}"#;
const ACCOUNT: &str = "bench";
/// The configurations: the open server (0) and the typed stream behind a key (1).
const NAMES: [&str; 2] = ["open", "typed+key"];
const TARGET: f64 = 0.85;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let settings = Settings::parse("bench_access", &args)?;
    let eddy = eddy_binary()?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(settings, eddy))
}

async fn run(s: Settings, eddy: PathBuf) -> Result<()> {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("eddy access-control benchmark");
    println!("machine:  {cores} cores (client and server share them)");
    println!("eddy:     {}", eddy.display());
    println!(
        "settings: {} round(s) of {} s (+{} s warm-up), {} connections, {EVENT_BYTES}-byte events",
        s.rounds,
        s.seconds,
        WARMUP.as_secs(),
        s.connections
    );
    println!(
        "servers:  a fresh eddy process with an empty data directory per measurement, one \
         at a time; open first in odd rounds, typed+key first in even ones"
    );
    println!("  open       no admin token; POST /bench/open (untyped), no credentials");
    println!(
        "  typed+key  --admin-token; account created via POST /api/accounts; PUT \
         /bench/typed:click with the schema below; POST /bench/typed with Bearer <key>"
    );
    println!("schema:   {SCHEMA}");
    println!(
        "checks:   before each measurement (the run stops if one fails): typed+key: a valid \
         event with the key 201, an invalid one (url failing the pattern; wrong types) 400 \
         with errors[], a valid one without the key 401; open: a POST without credentials 201"
    );
    println!("event:    {}", typed_click_json(0, 0));

    println!(
        "\nsingle-event ingest: POST (Event-Type: click), {} keep-alive HTTP/1.1 connections",
        s.connections
    );
    let (r, what, rate) = ("round", "server", "req/s");
    let (p50, p99, e) = ("p50 ms", "p99 ms", "errors");
    println!("{r:<6} {what:<11} {rate:>12} {p50:>8} {p99:>8} {e:>7}");

    let (mut all, mut ratios): ([Vec<Stats>; 2], Vec<f64>) = Default::default();
    for round in 1..=s.rounds {
        for i in if round % 2 == 1 { [0, 1] } else { [1, 0] } {
            let stats = measure(&eddy, &s, i).await?;
            stats.print(&round.to_string(), NAMES[i]);
            all[i].push(stats);
        }
        let ratio = all[1][round - 1].rate / all[0][round - 1].rate;
        println!("{round:<6} {:<11} {ratio:>12.3}", "typed/open");
        ratios.push(ratio);
    }
    for (i, name) in NAMES.iter().enumerate() {
        Stats::median(&all[i]).print("median", name);
    }
    let ratio = median(ratios);
    let verdict = if ratio >= TARGET { "met" } else { "NOT met" };
    println!(
        "{:<6} {:<11} {ratio:>12.3}   (target >= {TARGET}: {verdict})",
        "median", "typed/open"
    );
    Ok(())
}

/// One measurement of the open server (0) or the typed stream behind a key (1).
async fn measure(eddy: &Path, s: &Settings, i: usize) -> Result<Stats> {
    let (server, path, auth) = if i == 0 {
        let server = start_eddy(eddy, &[]).await?;
        check_open(server.port).await.context("open server")?;
        (server, "/bench/open", None)
    } else {
        let token = format!("bench-admin-{}", uuid::Uuid::new_v4().simple());
        let server = start_eddy(eddy, &["--admin-token", &token]).await?;
        let key = setup_typed(server.port, &token)
            .await
            .with_context(|| format!("typed server; its log:\n{}", server.log()))?;
        (server, "/bench/typed", Some(bearer(&key)?))
    };
    let port = server.port;
    let load = run_load(
        port,
        s.connections,
        s.seconds,
        StatusCode::CREATED,
        move |c, n| {
            let mut req = request(
                port,
                path.into(),
                Some("click"),
                typed_click_json(c, n).into(),
            );
            if let Some(auth) = &auth {
                req.headers_mut().insert(AUTHORIZATION, auth.clone());
            }
            req
        },
    );
    let stats = Stats::new(load.await?, s.seconds, 1);
    drop(server);
    Ok(stats)
}

/// A click event of exactly [`EVENT_BYTES`] bytes of JSON that matches [`SCHEMA`]: the
/// padding goes into `ref`.
fn typed_click_json(conn: usize, n: u64) -> String {
    let mut s = format!(
        r#"{{"url":"https://www.example.com/products/{}","x":{},"y":{},"ref":"https://www.example.com/search?q=item+{}&s=s{conn:03}-{:08x}&p="#,
        n % 5000,
        n % 1920,
        (n / 7) % 1080,
        n % 977,
        n / 50,
    );
    let pad = EVENT_BYTES.saturating_sub(s.len() + 2);
    s.extend(std::iter::repeat_n('x', pad));
    s.push_str("\"}");
    s
}

fn bearer(secret: &str) -> Result<HeaderValue> {
    HeaderValue::from_str(&format!("Bearer {secret}")).context("a credential unfit for a header")
}

/// One request on a fresh connection: its status and body.
async fn call(
    port: u16,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<(StatusCode, String)> {
    let mut req = Request::builder()
        .method(method.clone())
        .uri(path)
        .header(HOST, format!("127.0.0.1:{port}"))
        .header(CONTENT_TYPE, "application/json");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req.body(Full::new(Bytes::from(body.to_owned())))?;
    let mut sender = connect(port).await?;
    let (status, body) = exchange(&mut sender, req)
        .await
        .with_context(|| format!("{method} {path}"))?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// The open server takes an event without credentials.
async fn check_open(port: u16) -> Result<()> {
    let body = typed_click_json(0, 0);
    let (status, answer) = call(
        port,
        Method::POST,
        "/bench/open",
        &[("Event-Type", "click")],
        &body,
    )
    .await?;
    ensure!(
        status == StatusCode::CREATED,
        "POST /bench/open without credentials: {status} {answer}, expected 201"
    );
    Ok(())
}

/// Creates the account and the type, checks that the server authenticates and
/// validates, and returns the account's key.
async fn setup_typed(port: u16, admin_token: &str) -> Result<String> {
    let admin = format!("Bearer {admin_token}");
    let account = format!(r#"{{"name":"{ACCOUNT}"}}"#);
    let (status, answer) = call(
        port,
        Method::POST,
        "/api/accounts",
        &[("Authorization", &admin)],
        &account,
    )
    .await?;
    ensure!(
        status == StatusCode::CREATED,
        "POST /api/accounts: {status} {answer}, expected 201"
    );
    let answer: serde_json::Value = serde_json::from_str(&answer)
        .with_context(|| format!("POST /api/accounts answered {answer:?}"))?;
    let key = answer["key"]
        .as_str()
        .with_context(|| format!("POST /api/accounts answered no key: {answer}"))?
        .to_owned();
    let auth = format!("Bearer {key}");

    let type_path = "/bench/typed:click";
    let (status, answer) = call(
        port,
        Method::PUT,
        type_path,
        &[("Authorization", &auth)],
        SCHEMA,
    )
    .await?;
    ensure!(
        status.is_success(),
        "PUT {type_path}: {status} {answer}, expected 2xx"
    );

    let post = async |headers: &[(&str, &str)], body: &str| {
        call(port, Method::POST, "/bench/typed", headers, body).await
    };
    let typed = [("Event-Type", "click"), ("Authorization", auth.as_str())];
    let valid = typed_click_json(0, 0);
    let (status, answer) = post(&typed, &valid).await?;
    ensure!(
        status == StatusCode::CREATED,
        "a valid typed event with the key: {status} {answer}, expected 201"
    );
    let invalid = [
        // right types, but `url` fails the schema's pattern
        r#"{"url":"ftp://www.example.com/products/1","x":1,"y":2,"ref":"r"}"#,
        // wrong types and a missing property
        r#"{"url":"https://www.example.com/products/1","x":"1","ref":3}"#,
    ];
    for body in invalid {
        let (status, answer) = post(&typed, body).await?;
        ensure!(
            status == StatusCode::BAD_REQUEST,
            "an invalid typed event {body}: {status} {answer}, expected 400"
        );
        let answer: serde_json::Value = serde_json::from_str(&answer)
            .with_context(|| format!("an invalid typed event was answered {answer:?}"))?;
        ensure!(
            answer["errors"].as_array().is_some_and(|e| !e.is_empty()),
            "an invalid typed event {body}: 400 without errors[]: {answer}"
        );
    }
    let (status, answer) = post(&[("Event-Type", "click")], &valid).await?;
    ensure!(
        status == StatusCode::UNAUTHORIZED,
        "a typed event without the key: {status} {answer}, expected 401"
    );
    Ok(key)
}
