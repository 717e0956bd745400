//! `eddy deploy`: deploys a reducer (or a pipe) from a file, then follows the
//! reducer's rebuild until it has caught up: a progress bar on a terminal (events
//! folded of the total, rate, time left), a line now and then when piped; then the
//! first errors its log recorded since the deploy.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use reqwest::Method;
use serde_json::Value;

use super::client::{Server, check, unreachable};

#[derive(clap::Args)]
#[command(after_help = "Examples:
  eddy deploy /acme/clicks.pages page-counts.js
  eddy deploy /acme/carts.total cart.ts --on-error halt
  eddy deploy \"/acme/orders.big?type=created\" big.js      # with a selector
  eddy deploy /acme/orders/pipe/acme/big big-orders.js     # a pipe

Exit code 0 once the reducer has caught up (or the pipe is stored), 1 when the server
refused the code (a syntax error is shown at its line) or the reducer halted.")]
pub struct DeployArgs {
    /// The reducer (`/acct/strm.name`, selector params allowed) or pipe URL.
    target: String,
    /// The code: JavaScript (.js, .mjs) or TypeScript (.ts, .mts).
    file: PathBuf,
    /// What a throwing event does: skip (the default) or halt.
    #[arg(long, value_parser = ["skip", "halt"])]
    on_error: Option<String>,
    #[command(flatten)]
    server: Server,
}

pub async fn run(a: DeployArgs) -> Result<()> {
    let content_type = match a.file.extension().and_then(|e| e.to_str()) {
        Some("js" | "mjs" | "cjs") => "application/javascript",
        Some("ts" | "mts") => "application/typescript",
        _ => bail!(
            "{} is neither JavaScript (.js) nor TypeScript (.ts)",
            a.file.display()
        ),
    };
    let code = std::fs::read_to_string(&a.file)
        .with_context(|| format!("cannot read {}", a.file.display()))?;
    let target = a.server.target(&a.target)?;
    let server = target.server.clone();
    let pipe = matches!(target.resource, eddy_engine::path::Resource::Pipe { .. });
    let reducer = match &target.resource {
        eddy_engine::path::Resource::Reducer(p, name) => Some((p.url(), name.to_string())),
        _ => None,
    };
    if !pipe && reducer.is_none() {
        bail!(
            "{} is neither a reducer (/acct/strm.name) nor a pipe (/acct/strm/pipe/acct2/strm2)",
            a.target
        );
    }
    let client = server.client()?;
    let mut url = target.url()?;
    if let Some(on_error) = &a.on_error {
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(&format!("on-error={on_error}"));
    }
    let started = Instant::now();
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let head = head(&server, &client).await;
    let resp = server
        .request(&client, Method::PUT, &url)
        .header("Content-Type", content_type)
        .body(code)
        .send()
        .await
        .map_err(|e| unreachable(&server.server, e))?;
    let deployed: Value = check(resp).await?.json().await?;
    let Some((stream_path, name)) = reducer else {
        // a pipe: stored, nothing to follow
        eprintln!(
            "deployed the pipe from {} to {}",
            deployed["origin"].as_str().unwrap_or("?"),
            deployed["destination"].as_str().unwrap_or("?")
        );
        if let Some(why) = deployed["lastError"].as_str() {
            bail!("the pipe stopped: {why}");
        }
        return Ok(());
    };
    let stream_url = format!("{}{stream_path}", server.server.trim_end_matches('/'));
    let name = name.as_str();
    let stream_url = stream_url.as_str();
    let code_hash = deployed["codeHash"].as_str().unwrap_or("").to_owned();
    eprintln!(
        "deployed {name} ({}), code hash {}",
        if deployed["rebuilding"] == true {
            "a new version, folding from the first event beside the old one"
        } else {
            "folding from the first event"
        },
        deployed["codeHash"].as_str().unwrap_or("?")
    );
    let status = follow(
        &server, &client, stream_url, name, &code_hash, head, started,
    )
    .await?;
    // the first errors since the deploy, from the stream's log
    // (log entries are saved with the reducer's checkpoints, a moment after the
    // status counts them: the read waits for them)
    let errors = status["errors"].as_i64().unwrap_or(0);
    let logs = format!("{stream_url}/logs?type=error&since={since}&limit=5&wait=5000");
    if errors > 0
        && let Ok(r) = server.request(&client, Method::GET, &logs).send().await
        && let Ok(r) = check(r).await
        && let Ok(entries) = r.json::<Vec<Value>>().await
    {
        let mine: Vec<&Value> = entries
            .iter()
            .filter(|e| e["data"]["reducer"].as_str().is_none_or(|r| r == name))
            .collect();
        if !mine.is_empty() {
            let events = if errors == 1 { "event" } else { "events" };
            eprintln!("{errors} {events} threw; the first errors in the log:");
            for e in mine {
                let d = &e["data"];
                eprintln!(
                    "  {} #{}: {}",
                    d["stream"].as_str().unwrap_or("?"),
                    d["index"],
                    d["message"].as_str().unwrap_or("?")
                );
            }
        }
    }
    if let Some(why) = status["halted"].as_str() {
        bail!("{name} halted: {why}");
    }
    Ok(())
}

/// The server's head position (`/healthz`), 0 when it cannot tell.
async fn head(server: &Server, client: &reqwest::Client) -> i64 {
    let url = format!("{}/healthz", server.server.trim_end_matches('/'));
    match client.get(url).send().await {
        Ok(r) => r
            .json::<Value>()
            .await
            .map_or(0, |v| v["lastPosition"].as_i64().unwrap_or(0)),
        Err(_) => 0,
    }
}

/// Follows the rebuild of reducer `name` (the version of `code_hash`) until it has
/// folded what the stream held at the deploy (`head`, a position) or caught up, or
/// halted; answers its status.
async fn follow(
    server: &Server,
    client: &reqwest::Client,
    stream_url: &str,
    name: &str,
    code_hash: &str,
    head: i64,
    started: Instant,
) -> Result<Value> {
    let terminal = std::io::stderr().is_terminal();
    let mut total: Option<i64> = None;
    let mut last_line = Instant::now();
    loop {
        let resp = server
            .request(client, Method::GET, &format!("{stream_url}/reducers"))
            .send()
            .await
            .map_err(|e| unreachable(&server.server, e))?;
        let versions: Vec<Value> = check(resp).await?.json().await?;
        // the version just deployed: the newest with its code (the list is in
        // deploy order)
        let Some(v) = versions
            .iter()
            .rev()
            .find(|v| v["name"] == name && v["codeHash"] == code_hash)
            .or_else(|| versions.iter().rev().find(|v| v["name"] == name))
        else {
            bail!("reducer {name} is gone");
        };
        let lag = v["lag"].as_i64().unwrap_or(0);
        // on a plain stream the index says what was folded before the first look;
        // on a factory the first lag stands for the whole
        let all = match v["index"].as_i64() {
            Some(index) => *total.insert(total.unwrap_or(0).max(index + 1 + lag)),
            None => *total.get_or_insert(lag),
        }
        .max(1);
        let folded = (all - lag).max(0);
        let secs = started.elapsed().as_secs_f64().max(0.001);
        let rate = folded as f64 / secs;
        // caught up: no lag, or past what the stream held at the deploy (a busy
        // stream may never show no lag at all)
        let position = v["position"].as_i64().unwrap_or(0);
        let done = v["status"] == "halted"
            || (v["status"] == "running" && (lag == 0 || (head > 0 && position >= head)));
        if terminal {
            let width = 30;
            let filled = (folded as usize * width) / all.max(1) as usize;
            let left = if rate > 0.0 {
                format!("{:.0} s left", (lag as f64 / rate).ceil())
            } else {
                "…".into()
            };
            eprint!(
                "\r[{}{}] {:>3}% {folded}/{all} events, {rate:.0}/s, {left}   ",
                "#".repeat(filled.min(width)),
                ".".repeat(width - filled.min(width)),
                folded * 100 / all.max(1),
            );
            let _ = std::io::stderr().flush();
        } else if last_line.elapsed() >= Duration::from_secs(2) {
            eprintln!("folded {folded} of {all} events ({rate:.0}/s)");
            last_line = Instant::now();
        }
        if done {
            if terminal {
                eprintln!();
            }
            // a halted reducer is said to have halted by the caller, with why
            if v["status"] != "halted" {
                eprintln!(
                    "{name} caught up: folded {} events in {:.1} s",
                    all.max(folded),
                    started.elapsed().as_secs_f64()
                );
            }
            return Ok(v.clone());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
