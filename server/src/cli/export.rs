//! `eddy export` and `eddy import`: a stream, a factory or a whole account as NDJSON
//! envelopes, ids and timestamps kept. An import appends in atomic batches of
//! consecutive events of one stream, cut at the same places every time, with the
//! events' own ids: a batch already stored answers as a duplicate, so an interrupted
//! import is run again from the start and resumes where it stopped.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use reqwest::Method;
use std::collections::HashMap;

use eddy_engine::path::{Resource, StreamPath};
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::io::{AsyncBufReadExt, BufReader};

use super::client::{Server, check, unreachable};

#[derive(clap::Args)]
#[command(after_help = "Examples:
  eddy export /acme/orders > orders.ndjson
  eddy export /acme > acme.ndjson                # every stream of the account
  eddy export \"/acme/carts('c1')\" --output c1.ndjson

Each line is an event's envelope ({stream, index, id, type, timestamp, contentType,
data, ...}), streams one after another, each in its own order.")]
pub struct ExportArgs {
    /// An account (`/acct`), a stream, a factory or a substream, or a full URL.
    target: String,
    /// Write here rather than to stdout.
    #[arg(long, short)]
    output: Option<PathBuf>,
    #[command(flatten)]
    server: Server,
}

#[derive(clap::Args)]
#[command(after_help = "Examples:
  eddy import /acme < acme.ndjson                # each event to its own stream
  eddy import /staging/orders orders.ndjson      # every event to this stream
  eddy import /acme acme.ndjson --server https://eddy.example.com --key \"$KEY\"

Into an account, each event goes to its stream of that account; into a stream, every
event goes there (a factory's events keep their substream). Ids, types, timestamps and
data are kept; an event already there is not appended again, so an interrupted import
can simply be run again.")]
pub struct ImportArgs {
    /// The account (`/acct`) or stream to import into.
    target: String,
    /// The NDJSON file of envelopes (stdin when not given).
    file: Option<PathBuf>,
    #[command(flatten)]
    server: Server,
}

/// Events per batch, and bytes of events per batch, at most.
const BATCH_EVENTS: usize = 1000;
const BATCH_BYTES: usize = 4 * 1024 * 1024;

pub async fn export(a: ExportArgs) -> Result<()> {
    let target = a.server.target(&a.target)?;
    let server = target.server.clone();
    let client = server.client()?;
    // (stream URL, events it held when listed, if known)
    let streams: Vec<(String, Option<i64>)> = match &target.resource {
        Resource::Account(account) => list_streams(&server, &client, account.as_str())
            .await?
            .into_iter()
            .map(|(name, events)| {
                let path = format!("/{account}/{name}");
                (
                    format!("{}{path}", server.server.trim_end_matches('/')),
                    Some(events),
                )
            })
            .collect(),
        Resource::Stream(_) => vec![(target.url()?, None)],
        _ => bail!("{} names no account or stream", a.target),
    };
    let mut out: Box<dyn Write> = match &a.output {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let progress = std::io::stderr().is_terminal();
    let mut total = 0u64;
    for (url, listed) in &streams {
        let resp = server
            .request(&client, Method::GET, url)
            .header("Accept", "application/x-ndjson")
            .send()
            .await
            .map_err(|e| unreachable(&server.server, e))?;
        let mut body = check(resp).await?.bytes_stream();
        let mut n = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.with_context(|| format!("the export of {url} broke off"))?;
            n += chunk.iter().filter(|b| **b == b'\n').count() as u64;
            out.write_all(&chunk).context("cannot write the export")?;
            if progress && n % 10_000 < 1000 {
                eprint!("\r{url}: {n} events");
            }
        }
        // a read the server ended early is an error, not a short stream
        if let Some(listed) = listed
            && (n as i64) < *listed
        {
            bail!("the export of {url} ended after {n} of its {listed} events");
        }
        total += n;
        if progress {
            eprintln!("\r{url}: {n} events");
        }
    }
    out.flush().context("cannot write the export")?;
    eprintln!(
        "exported {total} events of {} stream{}",
        streams.len(),
        if streams.len() == 1 { "" } else { "s" }
    );
    Ok(())
}

/// The streams of an account with their event counts (not histories a splice
/// replaced, which take no events).
async fn list_streams(
    server: &Server,
    client: &reqwest::Client,
    account: &str,
) -> Result<Vec<(String, i64)>> {
    let mut names = Vec::new();
    let mut after = String::new();
    loop {
        let url = format!(
            "{}/{account}?limit=1000&after={}",
            server.server.trim_end_matches('/'),
            percent_encoding::utf8_percent_encode(&after, percent_encoding::NON_ALPHANUMERIC)
        );
        let resp = server
            .request(client, Method::GET, &url)
            .send()
            .await
            .map_err(|e| unreachable(&server.server, e))?;
        let page: Vec<Value> = check(resp).await?.json().await?;
        let done = page.len() < 1000;
        for s in &page {
            if let Some(name) = s["name"].as_str() {
                after = name.to_owned();
                if !name.contains('@') {
                    names.push((name.to_owned(), s["events"].as_i64().unwrap_or(0)));
                }
            }
        }
        if done {
            return Ok(names);
        }
    }
}

/// One batch being gathered: its stream path and events.
#[derive(Default)]
struct Batch {
    stream: String,
    /// The events as JSON objects, ready to join into the batch array.
    events: Vec<String>,
    bytes: usize,
    /// The input line of its first event, for errors.
    line: u64,
}

pub async fn import(a: ImportArgs) -> Result<()> {
    let target = a.server.target(&a.target)?;
    let server = target.server.clone();
    let client = server.client()?;
    let (account, stream) = match &target.resource {
        Resource::Account(account) => (account.to_string(), None),
        Resource::Stream(p) => (p.account.to_string(), Some(p.clone())),
        _ => bail!("{} names no account or stream", a.target),
    };
    let input: Box<dyn tokio::io::AsyncRead + Unpin + Send> = match &a.file {
        Some(p) => Box::new(
            tokio::fs::File::open(p)
                .await
                .with_context(|| format!("cannot read {}", p.display()))?,
        ),
        None => Box::new(tokio::io::stdin()),
    };
    let mut lines = BufReader::new(input).lines();
    let mut batch = Batch::default();
    let (mut sent, mut already, mut n) = (0u64, 0u64, 0u64);
    let progress = std::io::stderr().is_terminal();
    while let Some(line) = lines.next_line().await.context("cannot read the input")? {
        n += 1;
        if line.trim().is_empty() {
            continue;
        }
        // the fields as they are written, data byte for byte
        let e: HashMap<String, Box<RawValue>> = serde_json::from_str(&line)
            .with_context(|| format!("line {n} is not a JSON envelope"))?;
        let source: String = e
            .get("stream")
            .and_then(|v| serde_json::from_str(v.get()).ok())
            .with_context(|| format!("line {n} has no \"stream\""))?;
        let dest =
            destination(&account, stream.as_ref(), &source).with_context(|| format!("line {n}"))?;
        let mut event = String::from("{");
        for (k, field) in [
            ("id", "id"),
            ("type", "type"),
            ("timestamp", "timestamp"),
            ("contentType", "contentType"),
            ("data", "data"),
        ] {
            if let Some(v) = e.get(field) {
                if event.len() > 1 {
                    event.push(',');
                }
                event.push_str(&format!("\"{k}\":{}", v.get()));
            }
        }
        event.push('}');
        if dest != batch.stream
            || batch.events.len() == BATCH_EVENTS
            || batch.bytes + line.len() > BATCH_BYTES
        {
            let (s, d) = flush(&server, &client, &mut batch).await?;
            (sent, already) = (sent + s, already + d);
            if progress {
                eprint!("\r{} events imported", sent + already);
            }
            batch.stream = dest;
            batch.line = n;
        }
        batch.bytes += line.len();
        batch.events.push(event);
    }
    let (s, d) = flush(&server, &client, &mut batch).await?;
    (sent, already) = (sent + s, already + d);
    if progress {
        eprintln!();
    }
    eprintln!("imported {sent} events ({already} were there already)");
    Ok(())
}

/// Where an event of `source` (`acct/strm('a')`) goes, as a URL path: into the
/// account, its own stream there; into a stream, that stream (a factory's event to the
/// substream of its args, unless the target names one).
fn destination(account: &str, stream: Option<&StreamPath>, source: &str) -> Result<String> {
    let parsed = eddy_engine::path::parse(&format!("/{source}"))
        .map_err(|e| anyhow::anyhow!("\"stream\": {source:?} is not acct/strm: {e}"))?;
    let Resource::Stream(from) = parsed else {
        bail!("\"stream\": {source:?} is not acct/strm");
    };
    let to = match stream {
        None => StreamPath {
            account: eddy_engine::path::AccountName::new(account)?,
            ..from
        },
        Some(target) if target.args.is_some() => target.clone(),
        Some(target) => StreamPath {
            args: from.args,
            ..target.clone()
        },
    };
    Ok(to.url())
}

/// Appends the gathered batch; answers (events appended, events already there).
async fn flush(server: &Server, client: &reqwest::Client, batch: &mut Batch) -> Result<(u64, u64)> {
    if batch.events.is_empty() {
        return Ok((0, 0));
    }
    let count = batch.events.len() as u64;
    let url = format!("{}{}", server.server.trim_end_matches('/'), batch.stream);
    let body = format!("[{}]", batch.events.join(","));
    let resp = server
        .request(client, Method::POST, &url)
        .header("Content-Type", "application/vnd.eddy.events+json")
        .body(body)
        .send()
        .await
        .map_err(|e| unreachable(&server.server, e))?;
    let answer: Value = check(resp)
        .await
        .with_context(|| format!("the events from line {} to {}", batch.line, batch.stream))?
        .json()
        .await?;
    batch.events.clear();
    batch.bytes = 0;
    Ok(match answer["duplicate"].as_bool() {
        Some(true) => (0, count),
        _ => (count, 0),
    })
}
