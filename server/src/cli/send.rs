//! `eddy send`: stdin to a stream as it arrives, one JSON event per line (NDJSON), or
//! `--bytes` as a byte stream (API §13); the server stores each piece as it comes, so
//! `tail -f app.log | eddy send /acme/logs --bytes` is live, and Ctrl-C ends the
//! request with every whole line read before it stored.

use std::convert::Infallible;

use anyhow::Result;
use bytes::Bytes;
use reqwest::Method;
use reqwest::header::CONTENT_TYPE;
use tokio::sync::mpsc;

use super::client::{Server, unreachable};

#[derive(clap::Args)]
#[command(after_help = "Examples:
  tail -f app.log | eddy send /acme/logs --bytes
  jq -c '.items[]' orders.json | eddy send /acme/orders --type created
  some-build 2>&1 | eddy send \"/ci/builds('42')\" --bytes --content-type text/plain

Each line of stdin is one event's JSON data (NDJSON) unless --bytes. A bad line stops
the request; the lines before it are stored. The count is printed at the end.")]
pub struct SendArgs {
    /// The stream: `/acct/strm`, `/acct/strm('id')`, or a full URL.
    stream: String,
    /// The events' type (for --bytes, the pieces' type; `chunk` when not given).
    #[arg(long = "type")]
    event_type: Option<String>,
    /// Send stdin as a byte stream (`?chunks=true`), each piece stored as it arrives.
    #[arg(long)]
    bytes: bool,
    /// The Content-Type of --bytes pieces (text/* is kept as text).
    #[arg(long, default_value = "application/octet-stream", requires = "bytes")]
    content_type: String,
    #[command(flatten)]
    server: Server,
}

pub async fn run(a: SendArgs) -> Result<()> {
    let target = a.server.target(&a.stream)?;
    target.stream()?;
    let server = target.server.clone();
    let client = server.client()?;
    let mut url = target.url()?;
    if a.bytes {
        url.push_str(if url.contains('?') {
            "&chunks=true"
        } else {
            "?chunks=true"
        });
    }
    // stdin is read on a thread of its own, in pieces of what is there (up to
    // 256 KiB): a live pipe sends each line as it comes, a file in large pieces
    let (piece_tx, mut pieces) = mpsc::channel::<Bytes>(4);
    let lines = !a.bytes;
    let reading = std::thread::Builder::new()
        .name("eddy-send-stdin".into())
        .spawn(move || -> std::io::Result<()> {
            let mut stdin = std::io::stdin().lock();
            let mut buf = vec![0u8; 256 * 1024];
            // lines go whole: a piece ends at its last newline, the rest waits for
            // the next (so Ctrl-C never leaves half a line in the request)
            let mut partial: Vec<u8> = Vec::new();
            loop {
                let n = std::io::Read::read(&mut stdin, &mut buf)?;
                if n == 0 {
                    if !partial.is_empty() {
                        let _ = piece_tx.blocking_send(Bytes::from(partial));
                    }
                    return Ok(());
                }
                let piece = if lines {
                    partial.extend_from_slice(&buf[..n]);
                    match partial.iter().rposition(|b| *b == b'\n') {
                        Some(end) => {
                            let rest = partial.split_off(end + 1);
                            Bytes::from(std::mem::replace(&mut partial, rest))
                        }
                        None => continue,
                    }
                } else {
                    Bytes::copy_from_slice(&buf[..n])
                };
                if piece_tx.blocking_send(piece).is_err() {
                    return Ok(());
                }
            }
        })?;
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    tokio::spawn(async move {
        // one listener for the whole run: a Ctrl-C that comes while a piece waits
        // for the request to take it is seen at the next turn, not lost (a listener
        // made anew each turn misses a signal that comes between two)
        let interrupted = tokio::signal::ctrl_c();
        tokio::pin!(interrupted);
        loop {
            let piece = tokio::select! {
                biased;
                // Ctrl-C ends the body: what was read before it goes too (whole lines
                // only), then the server stores what it got and answers
                _ = &mut interrupted => {
                    let mut taken = Vec::new();
                    while let Ok(piece) = pieces.try_recv() {
                        taken.push(piece);
                    }
                    // the reading thread may be blocked handing over one more piece,
                    // read before the signal, until the channel had room: it has now
                    let late = std::time::Duration::from_millis(50);
                    if let Ok(Some(piece)) = tokio::time::timeout(late, pieces.recv()).await {
                        taken.push(piece);
                    }
                    for piece in taken {
                        if tx.send(piece).await.is_err() {
                            break;
                        }
                    }
                    break;
                }
                p = pieces.recv() => match p {
                    Some(p) => p,
                    None => break,
                },
            };
            if tx.send(piece).await.is_err() {
                break;
            }
        }
    });
    let body = reqwest::Body::wrap_stream(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    }));
    let content_type = match a.bytes {
        true => a.content_type.as_str(),
        false => "application/x-ndjson",
    };
    let mut req = server
        .request(&client, Method::POST, &url)
        .header(CONTENT_TYPE, content_type)
        .body(body);
    if let Some(t) = &a.event_type {
        req = req.header("Event-Type", t);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| unreachable(&server.server, e))?;
    let answer: serde_json::Value = match resp.status().is_success() {
        true => resp.json().await?,
        // the lines before a refused one are stored: say how many
        false => {
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap_or_default();
            let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            let message = v["error"]
                .as_str()
                .map_or_else(|| text.trim().to_owned(), str::to_owned);
            let stored = match v["count"].as_u64() {
                Some(0) => " (nothing before it was stored)".to_owned(),
                Some(1) => " (the 1 event before it is stored)".to_owned(),
                Some(n) => format!(" (the {n} events before it are stored)"),
                None => String::new(),
            };
            anyhow::bail!("the server answered {status}: {message}{stored}");
        }
    };
    // a failed read of stdin is a failure, not its end (what was sent is stored)
    if reading.is_finished()
        && let Ok(Err(e)) = reading.join()
    {
        anyhow::bail!("stdin could not be read: {e} (what came before is stored)");
    }
    let count = answer["count"].as_u64().unwrap_or(0);
    let events = if count == 1 { "event" } else { "events" };
    match (answer["first"].as_u64(), answer["last"].as_u64()) {
        (Some(first), Some(last)) => eprintln!(
            "sent {count} {events} to {} (indexes {first} to {last})",
            a.stream
        ),
        _ => eprintln!("sent {count} {events} to {}", a.stream),
    }
    Ok(())
}
