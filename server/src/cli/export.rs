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
use serde_json::{Value, json};
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

/// `(account, Some(stream path after the account))` of a target path.
fn split_target(target: &str) -> Result<(String, Option<String>)> {
    let path = target
        .split_once("://")
        .map(|(_, rest)| rest.split_once('/').map_or("", |(_, p)| p))
        .unwrap_or(target)
        .trim_matches('/');
    match path.split_once('/') {
        Some((account, rest)) if !rest.is_empty() => {
            Ok((account.to_owned(), Some(rest.to_owned())))
        }
        _ if !path.is_empty() => Ok((path.to_owned(), None)),
        _ => bail!("{target} names no account or stream"),
    }
}

/// A path made safe for a URL: what the stream grammar needs stays as it is.
fn in_url(path: &str) -> String {
    const ESCAPE: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
        .add(b' ')
        .add(b'"')
        .add(b'#')
        .add(b'%')
        .add(b'?')
        .add(b'<')
        .add(b'>')
        .add(b'`');
    percent_encoding::utf8_percent_encode(path, ESCAPE).to_string()
}

pub async fn export(a: ExportArgs) -> Result<()> {
    let client = a.server.client()?;
    let (account, stream) = split_target(&a.target)?;
    let streams = match stream {
        Some(s) => vec![s],
        None => list_streams(&a.server, &client, &account).await?,
    };
    let mut out: Box<dyn Write> = match &a.output {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let progress = std::io::stderr().is_terminal();
    let mut total = 0u64;
    for s in &streams {
        let url = a.server.url(&in_url(&format!("/{account}/{s}")));
        let resp = a
            .server
            .request(&client, Method::GET, &url)
            .header("Accept", "application/x-ndjson")
            .send()
            .await
            .map_err(|e| unreachable(&a.server.server, e))?;
        let mut body = check(resp).await?.bytes_stream();
        let mut n = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.with_context(|| format!("the export of /{account}/{s} broke off"))?;
            n += chunk.iter().filter(|b| **b == b'\n').count() as u64;
            out.write_all(&chunk).context("cannot write the export")?;
            if progress && n % 10_000 < 1000 {
                eprint!("\r/{account}/{s}: {n} events");
            }
        }
        total += n;
        if progress {
            eprintln!("\r/{account}/{s}: {n} events");
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

/// The streams of an account (not histories a splice replaced, which take no events).
async fn list_streams(
    server: &Server,
    client: &reqwest::Client,
    account: &str,
) -> Result<Vec<String>> {
    let mut names = Vec::new();
    let mut after = String::new();
    loop {
        let url = server.url(&format!(
            "/{account}?limit=1000&after={}",
            percent_encoding::utf8_percent_encode(&after, percent_encoding::NON_ALPHANUMERIC)
        ));
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
                    names.push(name.to_owned());
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
    events: Vec<Value>,
    bytes: usize,
    /// The input line of its first event, for errors.
    line: u64,
}

pub async fn import(a: ImportArgs) -> Result<()> {
    let client = a.server.client()?;
    let (account, stream) = split_target(&a.target)?;
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
        let e: Value = serde_json::from_str(&line)
            .with_context(|| format!("line {n} is not a JSON envelope"))?;
        let source = e["stream"]
            .as_str()
            .with_context(|| format!("line {n} has no \"stream\""))?;
        let dest = destination(&account, stream.as_deref(), source)
            .with_context(|| format!("line {n}"))?;
        let event = json!({
            "id": e["id"], "type": e["type"], "timestamp": e["timestamp"],
            "contentType": e["contentType"], "data": e["data"],
        });
        if dest != batch.stream
            || batch.events.len() == BATCH_EVENTS
            || batch.bytes + line.len() > BATCH_BYTES
        {
            let (s, d) = flush(&a.server, &client, &mut batch).await?;
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
    let (s, d) = flush(&a.server, &client, &mut batch).await?;
    (sent, already) = (sent + s, already + d);
    if progress {
        eprintln!();
    }
    eprintln!("imported {sent} events ({already} were there already)");
    Ok(())
}

/// Where an event of `source` (`acct/strm('a')`) goes: into the account, its own
/// stream there; into a stream, that stream (with the source's substream args).
fn destination(account: &str, stream: Option<&str>, source: &str) -> Result<String> {
    let (_, rest) = source
        .split_once('/')
        .with_context(|| format!("\"stream\": {source:?} is not acct/strm"))?;
    Ok(match stream {
        None => format!("/{account}/{rest}"),
        Some(target) if target.contains('(') => format!("/{account}/{target}"),
        Some(target) => match rest.find('(') {
            Some(open) => format!("/{account}/{target}{}", &rest[open..]),
            None => format!("/{account}/{target}"),
        },
    })
}

/// Appends the gathered batch; answers (events appended, events already there).
async fn flush(server: &Server, client: &reqwest::Client, batch: &mut Batch) -> Result<(u64, u64)> {
    if batch.events.is_empty() {
        return Ok((0, 0));
    }
    let count = batch.events.len() as u64;
    let url = server.url(&in_url(&batch.stream));
    let resp = server
        .request(client, Method::POST, &url)
        .header("Content-Type", "application/vnd.eddy.events+json")
        .json(&batch.events)
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
