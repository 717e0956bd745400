//! `eddy tail`: follows a stream over Server-Sent Events, one line per event, and
//! after a dropped connection or a server restart resumes with `Last-Event-ID`, so
//! that nothing is missed or repeated. Started at the live end, it first learns
//! where that end is (the stream's next index, or a factory's global position) and
//! subscribes from there, so that a drop before the first event loses nothing
//! either. Colour on a terminal, plain JSON lines when piped.

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
  eddy tail /acme/orders type=placed         # a selector (API §4)
  eddy tail /acme/carts \"sub=('c*')&since=2026-12-01T00:00:00Z\"
  eddy tail \"/acme/carts('c1')\" --type added
  eddy tail /acme/orders | jq .index

Runs until Ctrl-C. On a terminal each line is `stream #index type data`, in colour;
piped, each line is the event's JSON (a reference, or the envelope with --data).")]
pub struct TailArgs {
    /// The stream: `/acct/strm`, `/acct/strm('id')`, a factory, or a full URL.
    stream: String,
    /// A selector in query form (`type=placed`, `type=a,b&since=...`), added to any
    /// query the URL has.
    selector: Option<String>,
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
    if let Some(selector) = &a.selector {
        let selector = selector.trim_start_matches(['?', '&']);
        if !selector.is_empty() {
            query.push(selector.to_owned());
        }
    }
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
    // where the subscription starts: given (from=, since=, after=), or the live end,
    // learned before the first connection so that a reconnect resumes from it
    let given = url.split_once('?').is_some_and(|(_, q)| {
        q.split('&')
            .any(|p| ["from", "since", "after"].contains(&p.split('=').next().unwrap_or("")))
    });
    let mut last_id: Option<String> = None;
    if !given {
        match live_end(&server, &client, &target).await {
            Some(LiveEnd::Index(0)) => {
                url.push(if url.contains('?') { '&' } else { '?' });
                url.push_str("from=0");
            }
            Some(LiveEnd::Index(next)) => last_id = Some((next - 1).to_string()),
            Some(LiveEnd::Position(p)) => last_id = Some(p.to_string()),
            // (the subscription's own answer tells what is wrong)
            None => {}
        }
    }
    let mut retry = Duration::from_secs(1);
    let mut told = false;
    // a server that cannot be reached at the start is an error; one that goes away
    // later is waited for
    let mut connected = false;
    // one listener for the whole run: a Ctrl-C that comes while a line is written is
    // not lost (a listener made afresh at each wait misses it, and the handler it
    // installed keeps the signal from ending the process)
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        let mut req = server
            .request(&client, Method::GET, &url)
            .header("Accept", "text/event-stream");
        if let Some(id) = &last_id {
            req = req.header("Last-Event-ID", id);
        }
        let resp = tokio::select! {
            r = req.send() => r,
            _ = &mut interrupted => return Ok(()),
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
                    _ = &mut interrupted => return Ok(()),
                }
            }
        };
        told = false;
        connected = true;
        let mut events = resp.bytes_stream().eventsource();
        loop {
            let next = tokio::select! {
                e = events.next() => e,
                _ = &mut interrupted => return Ok(()),
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
            _ = &mut interrupted => return Ok(()),
        }
    }
}

/// The live end of a stream: the index its next event gets (a plain stream or a
/// substream), or the server's last global position (a factory, whose events are
/// resumed by position).
enum LiveEnd {
    Index(u64),
    Position(u64),
}

/// Finds the live end with plain reads (the stream's first event tells whether it is
/// a factory; indexes have no gaps, so the next one is found by doubling and halving,
/// in about 2·log₂(n) reads); `None` when the server does not tell.
async fn live_end(
    server: &Server,
    client: &reqwest::Client,
    target: &super::client::Target,
) -> Option<LiveEnd> {
    let path = target.stream().ok()?;
    let base = format!("{}{}", server.server.trim_end_matches('/'), path.url());
    // the first event at `index` or after, if any
    let first_from = async |index: u64| -> Option<Option<serde_json::Value>> {
        let resp = server
            .request(client, Method::GET, &format!("{base}?from={index}&limit=1"))
            .header("Accept", "application/json")
            .send()
            .await
            .ok()?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Some(None);
        }
        let events: Vec<serde_json::Value> = check(resp).await.ok()?.json().await.ok()?;
        Some(events.into_iter().next())
    };
    let Some(first) = first_from(0).await? else {
        return Some(LiveEnd::Index(0));
    };
    if path.args.is_none() && first["stream"].as_str().is_some_and(|s| s.ends_with(')')) {
        let url = format!("{}/healthz", server.server.trim_end_matches('/'));
        let health: serde_json::Value = client.get(url).send().await.ok()?.json().await.ok()?;
        return health["lastPosition"].as_u64().map(LiveEnd::Position);
    }
    // the next index is in (known, above]
    let (mut known, mut above) = (0u64, 1u64);
    while first_from(above).await?.is_some() {
        known = above;
        above = above.checked_mul(2)?;
    }
    while above - known > 1 {
        let mid = known + (above - known) / 2;
        match first_from(mid).await? {
            Some(_) => known = mid,
            None => above = mid,
        }
    }
    Some(LiveEnd::Index(above))
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
