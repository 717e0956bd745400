//! Server-Sent Events (API §5) with a real EventSource parser (`eventsource-stream`)
//! over reqwest: live delivery through selectors, resumption with `Last-Event-ID`,
//! factories, accounts, heartbeats, CORS and the errors.

use std::pin::Pin;
use std::time::Duration;

use eventsource_stream::{Event, Eventsource};
use futures::{Stream, StreamExt};
use serde_json::{Value, json};

use crate::common::{TestServer, assert_error, spawn_server, spawn_server_with};

type Events = Pin<Box<dyn Stream<Item = Result<Event, String>> + Send>>;

/// An open subscription.
pub(crate) struct Sub {
    events: Events,
    headers: reqwest::header::HeaderMap,
}

pub(crate) async fn subscribe(s: &TestServer, path: &str, last_id: Option<&str>) -> Sub {
    let mut req = s
        .client
        .get(s.url(path))
        .header("Accept", "text/event-stream")
        .header("Origin", "http://page.example");
    if let Some(id) = last_id {
        req = req.header("Last-Event-ID", id);
    }
    let r = req.send().await.expect("subscribe");
    assert_eq!(r.status(), 200, "GET {path}");
    let headers = r.headers().clone();
    let events = r
        .bytes_stream()
        .eventsource()
        .map(|e| e.map_err(|e| e.to_string()));
    Sub {
        events: Box::pin(events),
        headers,
    }
}

impl Sub {
    /// The next event, failing the test after 10 s.
    pub(crate) async fn next(&mut self) -> Event {
        tokio::time::timeout(Duration::from_secs(10), self.events.next())
            .await
            .expect("an event within 10 s")
            .expect("stream still open")
            .expect("a well-formed event")
    }

    pub(crate) async fn take(&mut self, n: usize) -> Vec<Event> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.next().await);
        }
        out
    }

    /// Asserts nothing more arrives for a while.
    async fn quiet(&mut self) {
        let r = tokio::time::timeout(Duration::from_millis(300), self.events.next()).await;
        assert!(r.is_err(), "unexpected event: {r:?}");
    }
}

pub(crate) fn data(e: &Event) -> Value {
    serde_json::from_str(&e.data).expect("data is JSON")
}

#[tokio::test]
async fn live_events_through_a_type_selector() {
    let s = spawn_server().await;
    s.post_ok("/acme/clicks", "click", json!({"n": -1})).await;
    let mut sub = subscribe(&s, "/acme/clicks?type=click", None).await;
    assert_eq!(sub.headers["content-type"], "text/event-stream");
    assert_eq!(sub.headers["access-control-allow-origin"], "*");
    s.post_ok("/acme/clicks", "view", json!({"n": 0})).await;
    s.post_ok("/acme/clicks", "click", json!({"n": 1})).await;
    s.post_ok("/acme/clicks", "click", json!({"n": 2})).await;
    let got = sub.take(2).await;
    // starts at the live end: event 0, sent before, is not replayed
    assert_eq!(got[0].id, "2");
    assert_eq!(got[0].event, "click");
    assert_eq!(
        data(&got[0]),
        json!({"stream": "acme/clicks", "index": 2, "type": "click"})
    );
    assert_eq!(got[1].id, "3");
    sub.quiet().await;
    let metrics = s.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("eddy_subscribers 1\n"), "{metrics}");
}

#[tokio::test]
async fn resumes_after_a_disconnect_with_every_event_exactly_once() {
    let s = spawn_server().await;
    for n in 0..3 {
        s.post_ok("/acme/feed", "tick", json!({ "n": n })).await;
    }
    let mut sub = subscribe(&s, "/acme/feed?from=0", None).await;
    let mut seen: Vec<u64> = Vec::new();
    for e in sub.take(3).await {
        seen.push(data(&e)["index"].as_u64().unwrap());
    }
    let last_id = "2";
    drop(sub);
    // written while disconnected
    for n in 3..6 {
        s.post_ok("/acme/feed", "tick", json!({ "n": n })).await;
    }
    // the reconnect repeats the original URL, as EventSource does
    let mut sub = subscribe(&s, "/acme/feed?from=0", Some(last_id)).await;
    let writer = {
        let (client, url) = (s.client.clone(), s.url("/acme/feed"));
        tokio::spawn(async move {
            for n in 6..40 {
                let r = client
                    .post(&url)
                    .header("Event-Type", "tick")
                    .json(&json!({ "n": n }))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 201);
            }
        })
    };
    for e in sub.take(37).await {
        assert_eq!(e.id, data(&e)["index"].to_string());
        seen.push(data(&e)["index"].as_u64().unwrap());
    }
    writer.await.unwrap();
    sub.quiet().await;
    assert_eq!(seen, (0..40).collect::<Vec<u64>>());
}

#[tokio::test]
async fn factory_substream_globs_with_whole_envelopes() {
    let s = spawn_server().await;
    s.post_ok("/acme/orders('cust-1')", "placed", json!({"o": 0}))
        .await;
    let mut sub = subscribe(&s, "/acme/orders?sub=('cust-*')&data=true", None).await;
    s.post_ok("/acme/orders('other')", "placed", json!({"o": 1}))
        .await;
    s.post_ok("/acme/orders('cust-2')", "placed", json!({"o": 2}))
        .await;
    s.post_ok("/acme/orders('cust-1')", "paid", json!({"o": 3}))
        .await;
    let got = sub.take(2).await;
    let (a, b) = (data(&got[0]), data(&got[1]));
    assert_eq!(a["stream"], "acme/orders('cust-2')");
    assert_eq!(a["data"], json!({"o": 2}));
    assert_eq!(a["index"], 0);
    assert_eq!(b["stream"], "acme/orders('cust-1')");
    assert_eq!(
        (b["index"].clone(), b["type"].clone()),
        (json!(1), json!("paid"))
    );
    // on a factory the cursor is the global position, which resumes across substreams
    let pos_a: u64 = got[0].id.parse().unwrap();
    let pos_b: u64 = got[1].id.parse().unwrap();
    assert!(pos_b > pos_a);
    drop(sub);
    let mut sub = subscribe(
        &s,
        "/acme/orders?sub=('cust-*')&data=true",
        Some(&got[0].id),
    )
    .await;
    assert_eq!(sub.next().await.id, got[1].id);
    sub.quiet().await;
    // one substream by its URL: cursors are its indexes
    let mut one = subscribe(&s, "/acme/orders('cust-1')?from=0", None).await;
    let got = one.take(2).await;
    assert_eq!((got[0].id.as_str(), got[1].id.as_str()), ("0", "1"));
}

#[tokio::test]
async fn an_account_subscription_follows_every_stream() {
    let s = spawn_server().await;
    let mut sub = subscribe(&s, "/acme?type=!noise", None).await;
    s.post_ok("/acme/a", "x", json!(1)).await;
    s.post_ok("/other/a", "x", json!(2)).await;
    s.post_ok("/acme/b('k')", "x", json!(3)).await;
    s.post_ok("/acme/a", "noise", json!(4)).await;
    s.post_ok("/acme/c", "y", json!(5)).await;
    let got = sub.take(3).await;
    let streams: Vec<Value> = got.iter().map(|e| data(e)["stream"].clone()).collect();
    assert_eq!(
        streams,
        [json!("acme/a"), json!("acme/b('k')"), json!("acme/c")]
    );
    sub.quiet().await;
    // resuming by position replays what followed
    let mut again = subscribe(&s, "/acme?type=!noise", Some(&got[0].id)).await;
    let replay = again.take(2).await;
    assert_eq!(replay[0].id, got[1].id);
    assert_eq!(replay[1].id, got[2].id);
}

#[tokio::test]
async fn a_stream_that_does_not_exist_yet_is_waited_for() {
    let s = spawn_server().await;
    let mut sub = subscribe(&s, "/acme/later", None).await;
    let mut sub2 = subscribe(&s, "/acme/later2('x')?from=0", None).await;
    s.post_ok("/acme/later", "first", json!({})).await;
    s.post_ok("/acme/later2('x')", "first", json!({})).await;
    assert_eq!(sub.next().await.id, "0");
    assert_eq!(sub2.next().await.id, "0");
}

/// The counter `name` from `/metrics`.
async fn counter(s: &TestServer, name: &str) -> u64 {
    let text = s.get("/metrics").await.text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
}

/// Appends to `/acme/load` from 8 writers in 20-event batches until the counter
/// `metric` moves (the server has switched to its behaviour under load), then stops
/// them, and asserts that a subscriber that followed all along got every event once,
/// in order.
async fn under_load_until(s: &TestServer, metric: &str) {
    const WRITERS: u64 = 8;
    const BATCH: u64 = 20;
    s.post_ok("/acme/load", "tick", json!({})).await;
    let mut sub = subscribe(s, "/acme/load", None).await;
    assert_eq!(counter(s, metric).await, 0);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (client, url, stop) = (s.client.clone(), s.url("/acme/load"), stop.clone());
            tokio::spawn(async move {
                let mut appended = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let batch: Vec<Value> = (0..BATCH)
                        .map(|n| json!({"type": "tick", "data": {"w": w, "n": appended + n}}))
                        .collect();
                    let r = client
                        .post(&url)
                        .header("Content-Type", "application/vnd.eddy.events+json")
                        .body(Value::from(batch).to_string())
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 201);
                    appended += BATCH;
                }
                appended
            })
        })
        .collect();
    let mut seen: Vec<u64> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut poll = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            e = sub.next() => {
                assert_eq!(e.id, data(&e)["index"].to_string());
                seen.push(data(&e)["index"].as_u64().unwrap());
            }
            _ = poll.tick() => {
                if counter(s, metric).await > 0 {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{metric} still 0 after 30 s of appends by {WRITERS} writers ({} events \
                     seen)",
                    seen.len()
                );
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 1;
    for w in writers {
        total += w.await.unwrap();
    }
    while (seen.len() as u64) < total - 1 {
        let e = sub.next().await;
        seen.push(data(&e)["index"].as_u64().unwrap());
    }
    assert_eq!(seen, (1..total).collect::<Vec<u64>>());
    sub.quiet().await;
}

/// Commits come often enough, with events enough, for the subscriber to gather.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_sustained_load_gathered_writes_still_deliver_every_event_once_in_order() {
    if crate::common::on_postgres() {
        // gathering starts at 8 commits in 25 ms, a commit rate the PostgreSQL writer
        // does not reach on a test machine (each commit waits for PostgreSQL's WAL
        // flush); the fan-out under test is the same for both backends
        eprintln!(
            "SKIPPED on PostgreSQL: its commit rate here stays below the gathering threshold"
        );
        return;
    }
    let s = spawn_server().await;
    under_load_until(&s, "eddy_sse_gathered_writes_total").await;
}

/// With the merge rate lowered to what a test machine reaches, the fan-out hands
/// subscribers merged notices, and they still get every event once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merged_notices_still_deliver_every_event_once_in_order() {
    let s = spawn_server_with(|c| c.fanout_merge_rate = 40).await;
    under_load_until(&s, "eddy_fanout_merged_notices_total").await;
}

#[tokio::test]
async fn heartbeats_and_retry_keep_the_connection_alive() {
    let s = spawn_server_with(|c| c.sse_heartbeat_ms = 100).await;
    let mut r = s
        .client
        .get(s.url("/acme/quiet"))
        .header("Accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while text.matches(": heartbeat").count() < 2 {
        let chunk = tokio::time::timeout_at(deadline, r.chunk())
            .await
            .expect("heartbeats within 10 s")
            .unwrap()
            .expect("open");
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(text.starts_with("retry: 2000\n\n"), "{text}");
}

#[tokio::test]
async fn bad_subscriptions_are_refused() {
    let s = spawn_server().await;
    s.post_ok("/acme/plain", "x", json!(1)).await;
    let sse = |path: &str, last: Option<&str>| {
        let mut r = s
            .client
            .get(s.url(path))
            .header("Accept", "text/event-stream");
        if let Some(l) = last {
            r = r.header("Last-Event-ID", l);
        }
        r.send()
    };
    assert_error(
        sse("/acme/plain", Some("x7")).await.unwrap(),
        400,
        "Last-Event-ID",
    )
    .await;
    assert_error(
        sse("/acme/plain?sub=('a')", None).await.unwrap(),
        400,
        "sub=",
    )
    .await;
    assert_error(sse("/acme?sub=('a')", None).await.unwrap(), 400, "sub=").await;
    assert_error(
        sse("/acme/plain?follow=1", None).await.unwrap(),
        400,
        "follow",
    )
    .await;
    assert_error(sse("/acme/plain?type=", None).await.unwrap(), 400, "type").await;
    // the token of a browser EventSource is accepted as a parameter
    let r = sse("/acme/plain?token=abc", None).await.unwrap();
    assert_eq!(r.status(), 200);
}
