//! `eddy tail`: follows a stream over Server-Sent Events, one line per event, and
//! after a dropped connection or a server restart resumes with `Last-Event-ID`, so
//! that nothing is missed or repeated. Colour on a terminal, plain JSON lines when
//! piped.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::Result;
use eventsource_stream::Eventsource;
use futures::StreamExt;
use reqwest::Method;

use super::client::{Server, check, unreachable};

#[derive(clap::Args)]
#[command(after_help = "Examples:
  eddy tail /acme/orders                     # from now on
  eddy tail /acme/orders --from 0 --data     # every event, whole
  eddy tail \"/acme/carts('c1')\" --type added
  eddy tail /acme/orders | jq .index

Runs until Ctrl-C. On a terminal each line is `stream #index type data`, in colour;
piped, each line is the event's JSON (a reference, or the envelope with --data).")]
pub struct TailArgs {
    /// The stream: `/acct/strm`, `/acct/strm('id')`, a factory, or a full URL.
    stream: String,
    /// Start with the event at this index (of a plain stream or substream) rather
    /// than with the next one appended.
    #[arg(long)]
    from: Option<u64>,
    /// Only events of this type (repeatable).
    #[arg(long = "type")]
    types: Vec<String>,
    /// Whole envelopes (with data) rather than references.
    #[arg(long)]
    data: bool,
    /// Colours: auto (on a terminal), always or never.
    #[arg(long, default_value = "auto", value_parser = ["auto", "always", "never"])]
    color: String,
    #[command(flatten)]
    server: Server,
}

pub async fn run(a: TailArgs) -> Result<()> {
    let target = a.server.target(&a.stream)?;
    target.stream()?;
    let server = target.server.clone();
    let client = server.client()?;
    let mut url = target.url()?;
    let mut query: Vec<String> = Vec::new();
    if a.data {
        query.push("data=true".into());
    }
    if let Some(from) = a.from {
        query.push(format!("from={from}"));
    }
    for t in &a.types {
        query.push(format!(
            "type={}",
            percent_encoding::utf8_percent_encode(t, percent_encoding::NON_ALPHANUMERIC)
        ));
    }
    if !query.is_empty() {
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(&query.join("&"));
    }
    let color = match a.color.as_str() {
        "always" => true,
        "never" => false,
        _ => std::io::stdout().is_terminal(),
    };
    let mut last_id: Option<String> = None;
    let mut retry = Duration::from_secs(1);
    let mut told = false;
    // a server that cannot be reached at the start is an error; one that goes away
    // later is waited for
    let mut connected = false;
    loop {
        let mut req = server
            .request(&client, Method::GET, &url)
            .header("Accept", "text/event-stream");
        if let Some(id) = &last_id {
            req = req.header("Last-Event-ID", id);
        }
        let resp = tokio::select! {
            r = req.send() => r,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let resp = match resp {
            Ok(r) if r.status().is_server_error() => Err(format!("answered {}", r.status())),
            Ok(r) => Ok(check(r).await?),
            Err(e) if !connected => return Err(unreachable(&server.server, e)),
            Err(e) => Err(e.to_string()),
        };
        let resp = match resp {
            Ok(r) => r,
            Err(why) => {
                if !told {
                    eprintln!("eddy tail: {} {why}; trying again", server.server);
                    told = true;
                }
                tokio::select! {
                    _ = tokio::time::sleep(retry) => continue,
                    _ = tokio::signal::ctrl_c() => return Ok(()),
                }
            }
        };
        told = false;
        connected = true;
        let mut events = resp.bytes_stream().eventsource();
        loop {
            let next = tokio::select! {
                e = events.next() => e,
                _ = tokio::signal::ctrl_c() => return Ok(()),
            };
            let event = match next {
                Some(Ok(e)) => e,
                // dropped: resume after the last event shown
                Some(Err(_)) | None => break,
            };
            if let Some(r) = event.retry {
                retry = r;
            }
            if !event.id.is_empty() {
                last_id = Some(event.id.clone());
            }
            if event.event == "eddy.splice" && !color {
                // a notice, not an event: beside the lines, not among them
                eprintln!(
                    "eddy tail: the stream was spliced; its new history follows from index 0"
                );
                continue;
            }
            let line = render(&event.event, &event.data, color);
            let mut out = std::io::stdout().lock();
            if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
                // the reader went away (a closed pipe)
                return Ok(());
            }
        }
        if !told {
            eprintln!("eddy tail: the connection dropped; resuming after the last event shown");
            told = true;
        }
        tokio::select! {
            _ = tokio::time::sleep(retry) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// One event's line: its JSON when not in colour, else `stream #index type data`.
fn render(event_type: &str, data: &str, color: bool) -> String {
    if !color {
        return data.to_owned();
    }
    let v: serde_json::Value = serde_json::from_str(data).unwrap_or_default();
    if event_type == "eddy.splice" {
        return format!(
            "\x1b[1;35m{} was spliced: its new history follows from index 0\x1b[0m",
            v["stream"].as_str().unwrap_or("the stream")
        );
    }
    let body = match v.get("data") {
        Some(d) => format!(" {d}"),
        None => String::new(),
    };
    format!(
        "\x1b[36m{}\x1b[0m \x1b[2m#{}\x1b[0m \x1b[1;33m{}\x1b[0m{body}",
        v["stream"].as_str().unwrap_or(""),
        v["index"],
        event_type
    )
}
