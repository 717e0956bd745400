//! `eddy export` and `eddy import`: a stream, a factory or a whole account as NDJSON
//! envelopes, ids, timestamps and metadata kept. The first envelope of each stream
//! exported also carries the stream's metadata (`"streamMetadata"`, API §13), which an
//! import gives the stream it creates. An import appends in atomic batches of
//! consecutive events of one stream, cut at the same places every time, with the
//! events' own ids: a batch already stored answers as a duplicate, so an interrupted
//! import is run again from the start and resumes where it stopped. An event's
//! `origin` is never sent: only the server records where an event came from.

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
data, metadata?, ...}), streams one after another, each in its own order; the first
line of a stream with metadata carries it as \"streamMetadata\".")]
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
event goes there (a factory's events keep their substream). Ids, types, timestamps,
data and metadata are kept, and a stream created gets its exported metadata; origins
are not (the server records them). An event already there is not appended again, so
an interrupted import can simply be run again.")]
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
        let resp = check(resp).await?;
        // the stream's metadata goes into its first line: until that line is whole,
        // its bytes wait here
        let mut first_line = resp
            .headers()
            .get("x-stream-metadata")
            .and_then(|v| v.to_str().ok())
            .map(|m| (m.to_owned(), Vec::new()));
        let mut body = resp.bytes_stream();
        let mut n = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.with_context(|| format!("the export of {url} broke off"))?;
            n += chunk.iter().filter(|b| **b == b'\n').count() as u64;
            let rest: &[u8] = match &mut first_line {
                None => &chunk,
                Some((metadata, line)) => {
                    line.extend_from_slice(&chunk);
                    let Some(end) = line.iter().position(|b| *b == b'\n') else {
                        continue;
                    };
                    out.write_all(&with_stream_metadata(&line[..end], metadata))
                        .and_then(|()| out.write_all(&line[end..]))
                        .context("cannot write the export")?;
                    first_line = None;
                    continue;
                }
            };
            out.write_all(rest).context("cannot write the export")?;
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
        if let Some((metadata, line)) = first_line
            && !line.is_empty()
        {
            out.write_all(&with_stream_metadata(&line, &metadata))
                .context("cannot write the export")?;
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

/// An envelope's JSON `line` with the stream's `metadata` (a JSON object, as the
/// `X-Stream-Metadata` header gives it) as its last field, `"streamMetadata"`.
fn with_stream_metadata(line: &[u8], metadata: &str) -> Vec<u8> {
    let trimmed = line.trim_ascii_end();
    let Some(open) = trimmed.strip_suffix(b"}") else {
        return line.to_vec();
    };
    let mut out = Vec::with_capacity(line.len() + metadata.len() + 20);
    out.extend_from_slice(open);
    out.extend_from_slice(b",\"streamMetadata\":");
    out.extend_from_slice(metadata.as_bytes());
    out.push(b'}');
    out
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
    /// The metadata of the stream (the plain stream or factory) the batch goes to, as
    /// its export gave it: sent along, it is kept by the append that creates the
    /// stream and ignored by later ones (API §13).
    stream_metadata: Option<String>,
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
    // each destination stream's metadata (by its URL path without args), from the
    // first line that gave one
    let mut metadata: HashMap<String, String> = HashMap::new();
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
        let root = StreamPath {
            args: None,
            ..dest.clone()
        }
        .url();
        let dest = dest.url();
        if let Some(m) = e.get("streamMetadata") {
            metadata
                .entry(root.clone())
                .or_insert_with(|| eddy_engine::json::ascii_json(m.get()));
        }
        let data = data_of(&e).with_context(|| format!("line {n}"))?;
        // an envelope without an id gets one made from where it goes, its line and
        // what it says, so that importing the same input again adds nothing
        let made_id = (!e.contains_key("id")).then(|| {
            use sha2::Digest as _;
            let digest = sha2::Sha256::digest(format!("{dest}\n{n}\n{line}"));
            let mut bytes = [0u8; 16];
            bytes.copy_from_slice(&digest[..16]);
            format!(
                "\"{}\"",
                uuid::Builder::from_custom_bytes(bytes).into_uuid()
            )
        });
        // the fields an append takes; not `origin`, which the server alone writes
        let mut event = String::from("{");
        for field in ["id", "type", "timestamp", "contentType", "data", "metadata"] {
            let value = match field {
                "data" => data.as_deref(),
                "id" if made_id.is_some() => made_id.as_deref(),
                _ => e.get(field).map(|v| v.get()),
            };
            if let Some(v) = value {
                if event.len() > 1 {
                    event.push(',');
                }
                event.push_str(&format!("\"{field}\":{v}"));
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
        if batch.stream_metadata.is_none() {
            batch.stream_metadata = metadata.get(&root).cloned();
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

/// An envelope's `data` as a batch takes it: as written, unless `"encoding": "base64"`
/// gives bytes of a JSON or text content type, which a batch takes as JSON or as a
/// string (binary data stays base64, as batches take it).
fn data_of(e: &HashMap<String, Box<RawValue>>) -> Result<Option<String>> {
    let Some(data) = e.get("data") else {
        return Ok(None);
    };
    let encoding: Option<String> = match e.get("encoding") {
        None => None,
        Some(v) => Some(
            serde_json::from_str(v.get())
                .ok()
                .context("\"encoding\" is not a string")?,
        ),
    };
    match encoding.as_deref() {
        None => return Ok(Some(data.get().to_owned())),
        Some("base64") => {}
        Some(other) => bail!("\"encoding\" is \"{other}\": only \"base64\" is known"),
    }
    let content_type: String = e
        .get("contentType")
        .and_then(|v| serde_json::from_str(v.get()).ok())
        .unwrap_or_else(|| "application/json".into());
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let kind = eddy_engine::event::DataKind::of(&essence);
    if kind.is_none() || kind == Some(eddy_engine::event::DataKind::Binary) {
        return Ok(Some(data.get().to_owned()));
    }
    use base64::Engine as _;
    let text: String = serde_json::from_str(data.get())
        .ok()
        .context("\"data\" with \"encoding\": \"base64\" is not a string")?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .context("\"data\" is not valid base64")?;
    let text = String::from_utf8(bytes).ok().with_context(|| {
        format!("\"data\" decodes to bytes that are not UTF-8, for {content_type}")
    })?;
    if kind == Some(eddy_engine::event::DataKind::Json) {
        serde_json::from_str::<&RawValue>(&text)
            .ok()
            .with_context(|| {
                format!("\"data\" decodes to text that is not JSON, for {content_type}")
            })?;
        Ok(Some(text))
    } else {
        Ok(Some(serde_json::to_string(&text)?))
    }
}

/// Where an event of `source` (`acct/strm('a')`) goes: into the
/// account, its own stream there; into a stream, that stream (a factory's event to the
/// substream of its args, unless the target names one).
fn destination(account: &str, stream: Option<&StreamPath>, source: &str) -> Result<StreamPath> {
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
    Ok(to)
}

/// Appends the gathered batch; answers (events appended, events already there).
async fn flush(server: &Server, client: &reqwest::Client, batch: &mut Batch) -> Result<(u64, u64)> {
    if batch.events.is_empty() {
        return Ok((0, 0));
    }
    let count = batch.events.len() as u64;
    let url = format!("{}{}", server.server.trim_end_matches('/'), batch.stream);
    let body = format!("[{}]", batch.events.join(","));
    let mut req = server
        .request(client, Method::POST, &url)
        .header("Content-Type", "application/vnd.eddy.events+json");
    if let Some(m) = batch.stream_metadata.take() {
        req = req.header("X-Stream-Metadata", m);
    }
    let resp = req
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
