//! Several nodes on one PostgreSQL database (API §11): three `eddy serve` child
//! processes on one throwaway database, driven over HTTP. Appends through every node,
//! live delivery across nodes, work that moves when its node is killed or paused, and
//! changes that reach every node.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::common::{ChildServer, client, read_all};

/// The lease time of these nodes: short, so that takeovers are quick to wait for.
const LEASE_MS: u64 = 2_000;

/// Three nodes on one fresh database, with `args`.
async fn three_nodes(label: &str, args: &[&str]) -> Option<(Vec<ChildServer>, String)> {
    let cluster = eddy_testpg::shared_cluster()?;
    let url = cluster.fresh_database(label).unwrap();
    let lease = LEASE_MS.to_string();
    let mut all = vec!["--lease-ms", lease.as_str(), "--allow-private-targets"];
    all.extend_from_slice(args);
    let mut nodes = Vec::new();
    for _ in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        nodes.push(ChildServer::start_postgres(dir.path(), &url, &all).await);
        // the data directory is unused with --database
        drop(dir);
    }
    Some((nodes, url))
}

/// Waits (up to `within`) until `check` holds, polling.
async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `GET /api/cluster` of a node.
async fn cluster_status(node: &ChildServer) -> Value {
    status_at(&node.base).await
}

/// `GET /api/cluster` of the node at `base`.
async fn status_at(base: &str) -> Value {
    let r = client()
        .get(format!("{base}/api/cluster"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// The id of a node, as it answers.
async fn node_id(node: &ChildServer) -> String {
    cluster_status(node).await["node"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The node id holding the lease on `work`, with the status it was read from.
async fn owner(node: &ChildServer, work: &str) -> Option<String> {
    let status = cluster_status(node).await;
    status["leases"]
        .as_array()?
        .iter()
        .find(|l| l["work"] == work && l["expiresInMs"].as_i64().unwrap_or(-1) >= 0)
        .map(|l| l["node"].as_str().unwrap().to_owned())
}

/// Which of `nodes` is the node `id` (by the node each answers as).
async fn node_named<'a>(nodes: &'a [ChildServer], id: &str) -> &'a ChildServer {
    for n in nodes {
        if cluster_status(n).await["node"] == id {
            return n;
        }
    }
    panic!("no node {id}");
}

async fn post(base: &str, path: &str, id: Option<&str>, data: Value) -> (u16, Value) {
    let mut r = client()
        .post(format!("{base}{path}"))
        .header("Event-Type", "t")
        .json(&data);
    if let Some(id) = id {
        r = r.header("Event-Id", id);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_through_three_nodes_are_gapless_and_idempotent() {
    let Some((nodes, _)) = three_nodes("cluster_appends", &[]).await else {
        return;
    };
    let bases: Vec<String> = nodes.iter().map(|n| n.base.clone()).collect();
    const WRITERS: usize = 6;
    const EACH: usize = 40;
    let acked = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (bases, acked) = (bases.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            for n in 0..EACH {
                let id = uuid::Uuid::new_v4().to_string();
                let base = &bases[(w + n) % bases.len()];
                let (status, body) = post(
                    base,
                    "/acme/orders('c1')",
                    Some(&id),
                    json!({"w": w, "n": n}),
                )
                .await;
                assert_eq!(status, 201, "{body}");
                let index = body["index"].as_u64().unwrap();
                // the same id again, through another node: the same event
                if n % 5 == 0 {
                    let other = &bases[(w + n + 1) % bases.len()];
                    let (again, body) = post(
                        other,
                        "/acme/orders('c1')",
                        Some(&id),
                        json!({"w": w, "n": n}),
                    )
                    .await;
                    assert!(again == 200 || again == 201, "{again}: {body}");
                    assert_eq!(body["index"].as_u64(), Some(index), "{body}");
                }
                acked.lock().unwrap().insert(id, index);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert_eq!(acked.len(), WRITERS * EACH);
    for base in &bases {
        let events = read_all(&client(), &format!("{base}/acme/orders('c1')")).await;
        assert_eq!(events.len(), WRITERS * EACH, "each event once, on {base}");
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e["index"], i as u64, "gapless");
            assert_eq!(acked.get(e["id"].as_str().unwrap()), Some(&(i as u64)));
        }
    }
    // the factory's global order is one order: read whole, its substream's events
    // come in index order
    let whole = read_all(&client(), &format!("{}/acme/orders", bases[1])).await;
    let indexes: Vec<u64> = whole.iter().map(|e| e["index"].as_u64().unwrap()).collect();
    assert_eq!(indexes, (0..(WRITERS * EACH) as u64).collect::<Vec<_>>());
    // an expected index holds across nodes: one of two racing appends wins
    let c = client();
    let race = |base: String| {
        let c = c.clone();
        async move {
            c.post(format!("{base}/acme/orders('c1')"))
                .header("Event-Type", "t")
                .header("Expected-Index", (WRITERS * EACH - 1).to_string())
                .json(&json!({}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let (a, b) = tokio::join!(race(bases[0].clone()), race(bases[2].clone()));
    let mut got = [a, b];
    got.sort_unstable();
    assert_eq!(got, [201, 409], "one wins, one conflicts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_source_on_one_node_follows_another_and_resumes_on_a_third() {
    let Some((nodes, _)) = three_nodes("cluster_sse", &[]).await else {
        return;
    };
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    post(&a.base, "/acme/s", None, json!({"n": -1})).await;
    let subscribe = |base: String, last: Option<String>| async move {
        let mut req = client()
            .get(format!("{base}/acme/s"))
            .header("Accept", "text/event-stream");
        if let Some(id) = last {
            req = req.header("Last-Event-ID", id);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 200);
        Box::pin(r.bytes_stream().eventsource())
    };
    let mut sub = subscribe(b.base.clone(), Some("0".into())).await;
    for n in 0..20 {
        let (status, _) = post(&a.base, "/acme/s", None, json!({"n": n})).await;
        assert_eq!(status, 201);
    }
    let mut seen = Vec::new();
    take(&mut sub, &mut seen, 10, "events from node A on node B").await;
    drop(sub);
    for n in 20..30 {
        post(&a.base, "/acme/s", None, json!({"n": n})).await;
    }
    let last = seen.last().unwrap().0.clone();
    let mut sub = subscribe(c.base.clone(), Some(last)).await;
    take(&mut sub, &mut seen, 30, "the rest on node C").await;
    let indexes: Vec<i64> = seen.iter().map(|s| s.1).collect();
    assert_eq!(indexes, (1..=30).collect::<Vec<_>>(), "in order, once each");

    // the firehose of node C shows what node A appends
    let r = client()
        .get(format!("{}/eddy/spy", c.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut body = r.bytes_stream();
    post(&a.base, "/acme/s", None, json!({"n": 30})).await;
    let mut buf = Vec::new();
    let line = loop {
        if let Some(at) = buf.iter().position(|b| *b == b'\n') {
            break String::from_utf8(buf[..at].to_vec()).unwrap();
        }
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .expect("a firehose line from node A's append on node C")
            .unwrap()
            .unwrap();
        buf.extend_from_slice(&chunk);
    };
    let event: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(
        (&event["stream"], &event["index"]),
        (&json!("acme/s"), &json!(31))
    );

    // a reducer's state, folded by whichever node holds its lease, pushed live on B
    let r = client()
        .put(format!("{}/acme/s.count", a.base))
        .header("content-type", "application/javascript")
        .body("(n = 0, e) => n + 1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = client()
        .get(format!("{}/acme/s.count", b.base))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut states = Box::pin(r.bytes_stream().eventsource());
    post(&a.base, "/acme/s", None, json!({"n": 31})).await;
    loop {
        let e = tokio::time::timeout(Duration::from_secs(10), states.next())
            .await
            .expect("node B pushes the state that reaches 33 events")
            .unwrap()
            .unwrap();
        if e.data == "33" {
            assert_eq!(e.id, "32");
            break;
        }
    }
    // the state as of an index, on every node, whichever folds the reducer
    for node in [a, b, c] {
        let r = client()
            .get(format!("{}/acme/s.count?at=20", node.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["reducer-index"], "20");
        assert_eq!(r.text().await.unwrap(), "21");
    }

    // a splice approved on node A: a subscriber on node C hears of it and reads the
    // new history from index 0, and the reducer folds it again wherever it runs
    let r = client()
        .get(format!("{}/acme/s?from=0", c.base))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    let mut sub = Box::pin(r.bytes_stream().eventsource());
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .expect("an event on node C")
            .unwrap()
            .unwrap()
    };
    for _ in 0..33 {
        next().await;
    }
    splice(
        &a.base,
        "/acme/s",
        "export default (e) => e.index < 10 ? e : null",
    )
    .await;
    let notice = next().await;
    assert_eq!(
        (notice.event.as_str(), notice.id.as_str()),
        ("eddy.splice", "-1")
    );
    for i in 0..10 {
        assert_eq!(next().await.id, i.to_string());
    }
    // B reads the rebuilt state once the splice's change notice has reached it
    let url = format!("{}/acme/s.count?min-index=9&wait=10000", b.base);
    eventually(
        Duration::from_secs(20),
        "B answers the rebuilt state",
        || {
            let url = url.clone();
            async move {
                client()
                    .get(url)
                    .send()
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap()
                    == "10"
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_crash_under_appends_through_three_nodes_loses_nothing_acknowledged() {
    // a crash of PostgreSQL (an immediate stop: what its WAL buffers held is lost)
    // while the nodes take turns at the head row keeps every acknowledged event, at
    // its index, and the nodes append again once it is back
    let Some(pg) = eddy_testpg::private_cluster() else {
        return;
    };
    let url = pg.fresh_database("cluster_crash").unwrap();
    let lease = LEASE_MS.to_string();
    let mut nodes = Vec::new();
    for _ in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        nodes.push(ChildServer::start_postgres(dir.path(), &url, &["--lease-ms", &lease]).await);
    }
    let bases: Vec<String> = nodes.iter().map(|n| n.base.clone()).collect();
    let acked = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));
    let crashed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..9 {
        let (base, acked, crashed) = (bases[w % 3].clone(), acked.clone(), crashed.clone());
        writers.push(tokio::spawn(async move {
            let c = client();
            while !crashed.load(std::sync::atomic::Ordering::Acquire) {
                let id = uuid::Uuid::new_v4().to_string();
                let r = c
                    .post(format!("{base}/acme/c"))
                    .header("Event-Type", "t")
                    .header("Event-Id", &id)
                    .json(&json!({"w": w}))
                    .send()
                    .await;
                let Ok(r) = r else { continue };
                if r.status() == 201 {
                    let body: Value = r.json().await.unwrap();
                    acked
                        .lock()
                        .unwrap()
                        .insert(id, body["index"].as_u64().unwrap());
                }
            }
        }));
    }
    // the nodes take turns: some hundreds of groups
    eventually(
        Duration::from_secs(30),
        "appends through every node",
        || {
            let n = acked.lock().unwrap().len();
            async move { n >= 600 }
        },
    )
    .await;
    pg.stop_immediate().unwrap();
    crashed.store(true, std::sync::atomic::Ordering::Release);
    for w in writers {
        w.await.unwrap();
    }
    pg.restart().unwrap();
    // every node appends again once it reconnected
    for base in &bases {
        eventually(
            Duration::from_secs(30),
            "an append after the restart",
            || {
                let base = base.clone();
                async move { post(&base, "/acme/after", None, json!({})).await.0 == 201 }
            },
        )
        .await;
    }
    let acked = acked.lock().unwrap().clone();
    let events = read_all(&client(), &format!("{}/acme/c", bases[1])).await;
    let stored: BTreeMap<String, u64> = events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            assert_eq!(e["index"], i as u64, "gapless");
            (e["id"].as_str().unwrap().to_owned(), i as u64)
        })
        .collect();
    for (id, index) in &acked {
        assert_eq!(
            stored.get(id),
            Some(index),
            "acknowledged event {id} kept at {index}"
        );
    }
}

/// An NDJSON follow of `path` on `base` (it holds no live subscription: it reads for
/// itself whenever a commit notice names its stream).
async fn follow_ndjson(base: &str, path: &str) -> impl futures::Stream<Item = Value> + Unpin {
    let r = client()
        .get(format!("{base}{path}"))
        .header("Accept", "application/x-ndjson")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let lines = r.bytes_stream().scan(Vec::new(), |buf, chunk| {
        buf.extend_from_slice(&chunk.unwrap());
        let mut out = Vec::new();
        while let Some(at) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=at).collect();
            out.push(serde_json::from_slice::<Value>(&line).unwrap());
        }
        futures::future::ready(Some(futures::stream::iter(out)))
    });
    Box::pin(lines.flatten())
}

/// The next `n` events of `follow`, each within ten seconds.
async fn next_events(
    follow: &mut (impl futures::Stream<Item = Value> + Unpin),
    n: usize,
    what: &str,
) -> Vec<Value> {
    let mut out = Vec::new();
    while out.len() < n {
        let e = tokio::time::timeout(Duration::from_secs(10), follow.next())
            .await
            .unwrap_or_else(|_| panic!("{what}: {} of {n} events within 10 s", out.len()))
            .expect("the follow goes on");
        out.push(e);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_that_read_for_themselves_see_every_nodes_commits_in_order() {
    // with no live subscriber on a node, other nodes' commits reach it as their
    // notifications describe them (streams, paths, splices), without their events:
    // its NDJSON follows and long polls read what they need
    let Some((nodes, _)) = three_nodes("cluster_follow", &[]).await else {
        return;
    };
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let (status, _) = post(&a.base, "/acme/f", None, json!({"w": -1})).await;
    assert_eq!(status, 201);
    let mut follow = follow_ndjson(&b.base, "/acme/f?follow=true").await;
    let first = next_events(&mut follow, 1, "the first event").await;
    assert_eq!(first[0]["index"], 0);

    // writers through all three nodes at once, node B's own commits among the others'
    const EACH: usize = 30;
    let mut writers = Vec::new();
    for (w, node) in nodes.iter().enumerate() {
        let base = node.base.clone();
        writers.push(tokio::spawn(async move {
            for n in 0..EACH {
                let (status, body) = post(&base, "/acme/f", None, json!({"w": w, "n": n})).await;
                assert_eq!(status, 201, "{body}");
            }
        }));
    }
    let seen = next_events(&mut follow, 3 * EACH, "appends through three nodes on B").await;
    for w in writers {
        w.await.unwrap();
    }
    let indexes: Vec<u64> = seen.iter().map(|e| e["index"].as_u64().unwrap()).collect();
    assert_eq!(
        indexes,
        (1..=3 * EACH as u64).collect::<Vec<_>>(),
        "in order, once each"
    );
    assert!(
        crate::common::metric(&b.base, "eddy_cluster_commits_notified_total").await > 0,
        "node B, with no live subscriber, took other nodes' commits from their notifications"
    );
    let mut per_writer = [0; 3];
    for e in &seen {
        let w = e["data"]["w"].as_u64().unwrap() as usize;
        assert_eq!(
            e["data"]["n"], per_writer[w],
            "each writer's events in its order"
        );
        per_writer[w] += 1;
    }

    // a long poll on node C answers with node A's append, well before its wait ends
    let next = 3 * EACH + 1;
    let poll = tokio::spawn({
        let base = c.base.clone();
        async move {
            let started = Instant::now();
            let r = client()
                .get(format!("{base}/acme/f?from={next}&wait=20000"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            (r.json::<Value>().await.unwrap(), started.elapsed())
        }
    });
    // the poll is waiting before the append (its first read found nothing)
    tokio::time::sleep(Duration::from_millis(300)).await;
    post(&a.base, "/acme/f", None, json!({"w": 0, "n": EACH})).await;
    let (events, took) = poll.await.unwrap();
    assert_eq!(events[0]["index"], next as u64, "{events}");
    assert!(took < Duration::from_secs(5), "answered after {took:?}");
    next_events(&mut follow, 1, "the polled event on B").await;

    // a splice approved on node A restarts the follow on node B at the new history
    splice(
        &a.base,
        "/acme/f",
        "export default (e) => e.index < 3 ? e : null",
    )
    .await;
    let again = next_events(&mut follow, 3, "the spliced history on B").await;
    let indexes: Vec<u64> = again.iter().map(|e| e["index"].as_u64().unwrap()).collect();
    assert_eq!(indexes, [0, 1, 2], "from the start of the new history");
    // node B, whose writer last appended to the replaced history, appends after the
    // new one
    let (status, body) = post(&b.base, "/acme/f", None, json!({"after": "splice"})).await;
    assert_eq!((status, &body["index"]), (201, &json!(3)), "{body}");
    let next = next_events(&mut follow, 1, "B's append after the splice").await;
    assert_eq!(
        (&next[0]["index"], &next[0]["data"]["after"]),
        (&json!(3), &json!("splice"))
    );
    let old = read_all(&client(), &format!("{}/acme/f@1", c.base)).await;
    assert_eq!(
        old.len(),
        3 * EACH + 2,
        "the replaced history keeps its events only"
    );
}

/// Splices `stream` on `base` with the map function `map`, and approves it.
async fn splice(base: &str, stream: &str, map: &'static str) {
    let id = crate::splices::splice_at(base, stream, map).await;
    let r = client()
        .post(format!("{base}{stream}/splices/{id}/approve"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

/// Takes events from `sub` into `seen` ((Last-Event-ID, index) each) until it holds
/// `n`, failing the test after 10 s without one.
async fn take<S, E>(sub: &mut S, seen: &mut Vec<(String, i64)>, n: usize, what: &str)
where
    S: futures::Stream<Item = Result<eventsource_stream::Event, E>> + Unpin,
    E: std::fmt::Debug,
{
    while seen.len() < n {
        let e = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .unwrap_or_else(|_| panic!("{what} within 10 s"))
            .expect("the stream goes on")
            .expect("a well-formed event");
        let data: Value = serde_json::from_str(&e.data).unwrap();
        seen.push((e.id.clone(), data["index"].as_i64().unwrap()));
    }
}

/// A webhook receiver that records the position of every delivery, in arrival order.
async fn receiver() -> (String, Arc<Mutex<Vec<i64>>>) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let record = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap| {
            let record = record.clone();
            async move {
                let id = headers["webhook-id"].to_str().unwrap().to_owned();
                let pos: i64 = id.rsplit('_').next().unwrap().parse().unwrap();
                record.lock().unwrap().push(pos);
                "ok"
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, got)
}

/// Deploys a counting reducer that dispatches one event per event, a copy pipe and a
/// webhook on `/acme/s`, and a pipe from an every-second cron stream, all through
/// `node`.
async fn set_up_work(node: &ChildServer, hook: &str) -> Value {
    let c = client();
    let code = "(n = 0, e) => { dispatch('audit', { type: 'seen', data: { i: e.data.i } }); \
                return n + 1; }";
    let r = c
        .put(format!("{}/acme/s.count", node.base))
        .header("Content-Type", "application/javascript")
        .body(code)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    let r = c
        .put(format!("{}/acme/s/pipe/acme/copy", node.base))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{:?}", r.text().await);
    let r = c
        .put(format!(
            "{}/eddy/cron('*%20*%20*%20*%20*%20*')/pipe/acme/ticks",
            node.base
        ))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{:?}", r.text().await);
    let r = c
        .post(format!("{}/acme/s/webhooks", node.base))
        .json(&json!({"url": hook, "selector": "from=0"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    r.json().await.unwrap()
}

/// Every piece of work on `/acme/s`, as its leases name it.
async fn work_keys(node: &ChildServer) -> Vec<String> {
    let status = cluster_status(node).await;
    let keys: Vec<String> = status["leases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["work"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(keys.len(), 4, "{status}");
    keys
}

/// Checks, through `node`, that `count` events were folded, piped, dispatched and
/// delivered exactly once (deliveries in order; a takeover may repeat the last ones).
async fn assert_exactly_once(node: &ChildServer, count: u64, hooks: &Mutex<Vec<i64>>) {
    let c = client();
    let r = c
        .get(format!(
            "{}/acme/s.count?min-index={}&wait=20000",
            node.base,
            count - 1
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let state: Value = r.json().await.unwrap();
    assert_eq!(state, json!(count), "the state equals a fresh fold");
    for (stream, what) in [("/acme/copy", "piped"), ("/acme/audit", "dispatched")] {
        let url = format!("{}{stream}", node.base);
        eventually(Duration::from_secs(20), what, || {
            let url = url.clone();
            async move { read_all(&client(), &url).await.len() as u64 >= count }
        })
        .await;
        let events = read_all(&client(), &url).await;
        let origins: HashSet<String> = events.iter().map(|e| e["origin"].to_string()).collect();
        assert_eq!(events.len() as u64, count, "{what} exactly once");
        assert_eq!(origins.len() as u64, count, "{what} once per origin");
    }
    // each tick piped once, whichever node ticked it
    let ticks = read_all(&client(), &format!("{}/acme/ticks", node.base)).await;
    let origins: HashSet<String> = ticks.iter().map(|t| t["origin"].to_string()).collect();
    assert_eq!(origins.len(), ticks.len(), "a tick piped twice: {ticks:?}");
    eventually(Duration::from_secs(20), "every delivery", || async {
        let got = hooks.lock().unwrap();
        got.iter().collect::<HashSet<_>>().len() as u64 >= count
    })
    .await;
    // in order: a redelivery after a takeover goes back (to what the last saved cursor
    // had not covered), then on in order again; never two deliverers at once
    let got = hooks.lock().unwrap().clone();
    let rewinds = got.windows(2).filter(|w| w[1] < w[0]).count();
    assert!(
        rewinds <= 2,
        "deliveries went back {rewinds} times: {got:?}"
    );
    let mut firsts = Vec::new();
    for p in &got {
        if !firsts.contains(p) {
            firsts.push(*p);
        }
    }
    assert!(
        firsts.windows(2).all(|w| w[0] < w[1]),
        "first deliveries in order: {got:?}"
    );
    assert_eq!(firsts.len() as u64, count, "each event delivered: {got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_moves_to_another_node_when_its_node_is_killed() {
    let Some((mut nodes, _)) = three_nodes("cluster_kill", &[]).await else {
        return;
    };
    let (hook, hooks) = receiver().await;
    set_up_work(&nodes[0], &hook).await;
    let keys = work_keys(&nodes[0]).await;
    // the node that made the work took its leases at once (and lets go of what is
    // beyond its share at its next round)
    let first = node_id(&nodes[0]).await;
    let mut held = Vec::new();
    for key in &keys {
        if owner(&nodes[1], key).await.as_deref() == Some(first.as_str()) {
            held.push(key.clone());
        }
    }
    assert!(held.len() >= 2, "{held:?} of {keys:?}");
    // load through the other nodes while the owner dies
    let writers: Vec<_> = [nodes[1].base.clone(), nodes[2].base.clone()]
        .into_iter()
        .enumerate()
        .map(|(w, base)| {
            tokio::spawn(async move {
                for i in 0..40 {
                    let (status, body) =
                        post(&base, "/acme/s", None, json!({"i": w * 100 + i})).await;
                    assert_eq!(status, 201, "{body}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let killed_at = Instant::now();
    nodes[0].signal("-KILL");
    let _ = nodes[0].child.wait().await;
    let dead = nodes.remove(0);
    // within the lease time and a few seconds, every piece of work runs elsewhere
    let deadline = Duration::from_millis(LEASE_MS) + Duration::from_secs(3);
    for key in &keys {
        eventually(deadline, key, || async {
            owner(&nodes[0], key).await.is_some_and(|o| o != first)
        })
        .await;
    }
    let moved_in = killed_at.elapsed();
    assert!(moved_in < deadline, "moved in {moved_in:?}");
    for w in writers {
        w.await.unwrap();
    }
    // the cron pipe ticks on elsewhere
    let killed_ms = (std::time::SystemTime::now() - killed_at.elapsed())
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let ticks_url = format!("{}/acme/ticks", nodes[0].base);
    eventually(Duration::from_secs(10), "a tick after the kill", || {
        let url = ticks_url.clone();
        async move {
            read_all(&client(), &url)
                .await
                .iter()
                .any(|t| t["data"]["timestamp"].as_i64().unwrap_or(0) > killed_ms + 1000)
        }
    })
    .await;
    let status = cluster_status(&nodes[1]).await;
    let live: Vec<&str> = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    assert!(!live.contains(&first.as_str()), "{status}");
    assert_exactly_once(&nodes[0], 80, &hooks).await;
    assert_exactly_once(&nodes[1], 80, &hooks).await;
    drop(dead);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_node_writes_nothing_stale() {
    let Some((nodes, _)) = three_nodes("cluster_pause", &[]).await else {
        return;
    };
    let (hook, hooks) = receiver().await;
    set_up_work(&nodes[0], &hook).await;
    let keys = work_keys(&nodes[0]).await;
    let first = node_id(&nodes[0]).await;
    for i in 0..10 {
        post(&nodes[1].base, "/acme/s", None, json!({"i": i})).await;
    }
    assert_exactly_once(&nodes[1], 10, &hooks).await;
    // paused past its lease: the others take the work over
    nodes[0].signal("-STOP");
    for key in &keys {
        eventually(
            Duration::from_millis(LEASE_MS) + Duration::from_secs(5),
            key,
            || async { owner(&nodes[1], key).await.is_some_and(|o| o != first) },
        )
        .await;
    }
    for i in 10..30 {
        post(&nodes[2].base, "/acme/s", None, json!({"i": i})).await;
    }
    nodes[0].signal("-CONT");
    for i in 30..40 {
        post(&nodes[1].base, "/acme/s", None, json!({"i": i})).await;
    }
    // the resumed node noticed its leases were gone and wrote nothing twice
    let resumed = node_named(&nodes, &first).await;
    eventually(
        Duration::from_secs(10),
        "the resumed node renews",
        || async {
            cluster_status(resumed).await["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n["id"] == first.as_str())
        },
    )
    .await;
    assert_exactly_once(&nodes[2], 40, &hooks).await;
    assert_exactly_once(resumed, 40, &hooks).await;
    assert!(
        crate::common::metric(&resumed.base, "eddy_leases_lost_total").await > 0,
        "the resumed node counts its lost leases"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_deleted_on_one_node_is_refused_on_another_within_a_second() {
    let token = "cluster-admin-token-0123456789";
    let Some((nodes, _)) = three_nodes("cluster_keys", &["--admin-token", token]).await else {
        return;
    };
    let (a, b) = (&nodes[0], &nodes[1]);
    let c = client();
    let r = c
        .post(format!("{}/api/accounts", a.base))
        .bearer_auth(token)
        .json(&json!({"name": "acme"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    let created: Value = r.json().await.unwrap();
    let key = created["key"].as_str().unwrap().to_owned();
    let key_id = created["keyId"].as_str().map(str::to_owned);
    let append = |base: String| {
        let (c, key) = (c.clone(), key.clone());
        async move {
            c.post(format!("{base}/acme/s"))
                .bearer_auth(key)
                .header("Event-Type", "t")
                .json(&json!({}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    // the new key works on another node (it was made there a moment ago)
    eventually(Duration::from_secs(1), "the key works on B", || {
        let f = append(b.base.clone());
        async move { f.await == 201 }
    })
    .await;
    let key_id = match key_id {
        Some(id) => id,
        None => {
            let keys: Value = c
                .get(format!("{}/api/accounts/acme/keys", a.base))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            keys[0]["id"].as_str().unwrap().to_owned()
        }
    };
    let r = c
        .delete(format!("{}/api/accounts/acme/keys/{key_id}", a.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{:?}", r.text().await);
    let deleted = Instant::now();
    eventually(Duration::from_secs(1), "B refuses the deleted key", || {
        let f = append(b.base.clone());
        async move { matches!(f.await, 401 | 403) }
    })
    .await;
    assert!(deleted.elapsed() < Duration::from_secs(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn types_and_settings_changed_on_one_node_apply_on_another_within_a_second() {
    let Some((nodes, _)) = three_nodes("cluster_changes", &[]).await else {
        return;
    };
    let (a, b) = (&nodes[0], &nodes[1]);
    let c = client();
    let append = |base: String, ty: &'static str, data: Value| {
        let c = c.clone();
        async move {
            c.post(format!("{base}/acme/s"))
                .header("Event-Type", ty)
                .json(&data)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    // B caches the stream's controls (no type, no limit) by appending once
    assert_eq!(append(b.base.clone(), "n", json!("text")).await, 201);
    let r = c
        .put(format!("{}/acme/s:n", a.base))
        .header("Content-Type", "application/json")
        .body(r#"{"type": "int32"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    eventually(Duration::from_secs(1), "B checks the new type", || {
        let f = append(b.base.clone(), "n", json!("text"));
        async move { f.await == 400 }
    })
    .await;
    assert_eq!(append(b.base.clone(), "n", json!(7)).await, 201);
    let r = c
        .patch(format!("{}/acme/s/settings", a.base))
        .json(&json!({"rateLimit": {"perSecond": 1, "burst": 1}}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{:?}", r.text().await);
    // two appends a try: the first may take the one token of the burst
    eventually(Duration::from_secs(1), "B limits the rate", || {
        let first = append(b.base.clone(), "m", json!(1));
        let second = append(b.base.clone(), "m", json!(1));
        async move { first.await == 429 || second.await == 429 }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_holds_for_the_three_nodes_together() {
    let Some((nodes, _)) = three_nodes("cluster_rates", &[]).await else {
        return;
    };
    let c = client();
    let append = |base: String| async move { post(&base, "/acme/r", None, json!({})).await.0 };
    assert_eq!(append(nodes[0].base.clone()).await, 201);
    let (rate, burst) = (30u64, 3u64);
    let r = c
        .patch(format!("{}/acme/r/settings", nodes[0].base))
        .json(&json!({"rateLimit": {"perSecond": rate, "burst": burst}}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{:?}", r.text().await);
    // every node counts the three and limits the stream (spending its burst)
    for node in &nodes {
        eventually(
            Duration::from_secs(10),
            "each node counts three",
            || async { crate::common::metric(&node.base, "eddy_cluster_nodes").await == 3 },
        )
        .await;
        eventually(
            Duration::from_secs(2),
            "each node limits the stream",
            || {
                let base = node.base.clone();
                async move {
                    // at once, so that no refill comes in between
                    let tries = (0..burst + 2).map(|_| append(base.clone()));
                    futures::future::join_all(tries).await.contains(&429)
                }
            },
        )
        .await;
    }
    // four clients on each node, as fast as they can, for three seconds
    let started = Instant::now();
    let mut loads = Vec::new();
    for node in &nodes {
        for _ in 0..4 {
            let base = node.base.clone();
            loads.push(tokio::spawn(async move {
                let (mut admitted, mut refused) = (0u64, 0u64);
                while started.elapsed() < Duration::from_secs(3) {
                    match append(base.clone()).await {
                        201 => admitted += 1,
                        429 => refused += 1,
                        other => panic!("an append answered {other}"),
                    }
                }
                (admitted, refused)
            }));
        }
    }
    let (mut admitted, mut refused) = (0, 0);
    for load in loads {
        let (a, r) = load.await.unwrap();
        admitted += a;
        refused += r;
    }
    let secs = started.elapsed().as_secs_f64();
    // each node: its share (rate / 3, rounded up) a second, and the whole burst; one
    // node alone would admit the whole rate, three times as many
    let most = (3 * burst) as f64 + rate as f64 * secs + 1.0;
    assert!(
        (admitted as f64) <= most,
        "{admitted} admitted in {secs:.2} s (at most {most:.0}), {refused} refused"
    );
    assert!(
        (admitted as f64) >= rate as f64 * secs / 2.0,
        "{admitted} admitted in {secs:.2} s, {refused} refused"
    );
    assert!(refused > admitted, "{admitted} admitted, {refused} refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_spreads_to_joining_nodes_and_a_stopping_node_hands_it_over_at_once() {
    let Some(cluster) = eddy_testpg::shared_cluster() else {
        return;
    };
    let url = cluster.fresh_database("cluster_balance").unwrap();
    // a long lease: only balancing and handing over can move work within the test
    let args = ["--lease-ms", "60000"];
    let dir = tempfile::tempdir().unwrap();
    let first = ChildServer::start_postgres(dir.path(), &url, &args).await;
    let c = client();
    for n in 0..3 {
        let r = c
            .put(format!("{}/acme/s/pipe/acme/copy{n}", first.base))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{:?}", r.text().await);
    }
    let owned_by = |node: String| async move {
        let status = status_at(&node).await;
        let me = status["node"].as_str().unwrap().to_owned();
        status["leases"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["node"] == me.as_str() && l["expiresInMs"].as_i64().unwrap_or(-1) >= 0)
            .count()
    };
    assert_eq!(owned_by(first.base.clone()).await, 3);
    let mut nodes = vec![first];
    for _ in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        nodes.push(ChildServer::start_postgres(dir.path(), &url, &args).await);
    }
    // the first lets its excess go; the others take one each
    for node in &nodes {
        let base = node.base.clone();
        eventually(Duration::from_secs(10), "one pipe per node", || {
            let f = owned_by(base.clone());
            async move { f.await == 1 }
        })
        .await;
    }
    // a node stopped with SIGTERM lets its lease go at once, long before it expires
    let stopping = nodes.pop().unwrap();
    stopping.signal("-TERM");
    let stopped = Instant::now();
    let mut stopping = stopping;
    let _ = stopping.child.wait().await;
    let (a, b) = (nodes[0].base.clone(), nodes[1].base.clone());
    eventually(
        Duration::from_secs(5),
        "the two left hold all three",
        || {
            let (fa, fb) = (owned_by(a.clone()), owned_by(b.clone()));
            async move { fa.await + fb.await == 3 }
        },
    )
    .await;
    assert!(stopped.elapsed() < Duration::from_secs(5));
}

/// A byte stream uploaded through node A is tailed with `follow=true` on node B: B
/// writes each piece as it is stored and ends only once A's upload has closed.
#[tokio::test]
async fn a_byte_upload_on_one_node_is_tailed_to_its_end_on_another() {
    let Some((nodes, _url)) = three_nodes("bytes", &[]).await else {
        return;
    };
    let (a, b) = (&nodes[0], &nodes[1]);
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(4);
    let body = reqwest::Body::wrap_stream(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::convert::Infallible>(b), rx))
    }));
    let upload = client()
        .post(format!("{}/ci/build?chunks=true", a.base))
        .header("content-type", "text/plain")
        .body(body)
        .send();
    let uploading = tokio::spawn(upload);
    tx.send(bytes::Bytes::from_static(b"one\n")).await.unwrap();
    // the first piece is stored (through A) before the tail on B starts
    eventually(
        Duration::from_secs(10),
        "the first piece is stored",
        || async {
            client()
                .get(format!("{}/ci/build", b.base))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        },
    )
    .await;
    let r = client()
        .get(format!("{}/ci/build?follow=true", b.base))
        .header("accept", "application/octet-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut tail = r.bytes_stream();
    let mut got = Vec::new();
    let mut read_until = async |want: &[u8], got: &mut Vec<u8>| {
        while got.len() < want.len() {
            let piece = tokio::time::timeout(Duration::from_secs(10), tail.next())
                .await
                .expect("data on node B within 10 s")
                .expect("the tail on node B is still open")
                .unwrap();
            got.extend_from_slice(&piece);
        }
        assert_eq!(got.as_slice(), want);
    };
    read_until(b"one\n", &mut got).await;
    // the upload on A is still open: B waits for more rather than ending
    tx.send(bytes::Bytes::from_static(b"two\n")).await.unwrap();
    read_until(b"one\ntwo\n", &mut got).await;
    drop(tx);
    assert_eq!(uploading.await.unwrap().unwrap().status(), 201);
    let end = tokio::time::timeout(Duration::from_secs(10), tail.next())
        .await
        .expect("node B ends the tail once A's upload closed");
    assert!(end.is_none(), "nothing more: {end:?}");
}
