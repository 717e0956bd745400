//! `dispatch()` and `request()` from reducers (API §7): dispatched events are appended
//! exactly once per source event, also across a redeploy's rebuild; requests reach only
//! the hosts in `requestHosts` and are voided while a reducer replays history.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::json;

use crate::common::{TestServer, read_all, spawn_server, spawn_server_with};
use crate::pipes::{put_pipe, wait_for_events};
use crate::sandbox::settled;

async fn deploy(s: &TestServer, path: &str, code: &str) -> u16 {
    let r = s
        .client
        .put(s.url(path))
        .header("Content-Type", "application/javascript")
        .body(code.to_owned())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    assert!(status == 200 || status == 201, "{:?}", r.text().await);
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatch_is_exactly_once_across_a_redeploy() {
    let s = spawn_server().await;
    let v1 = "(n = 0, e) => {\n\
                dispatch('audit', { type: 'seen', data: { i: e.data.i } });\n\
                if (e.data.i % 2 === 0) dispatch(\"totals('even')\", { type: 'even' });\n\
                return n + 1;\n\
              }";
    assert_eq!(deploy(&s, "/acme/orders.count", v1).await, 201);
    for i in 0..5 {
        s.post_ok("/acme/orders", "o", json!({ "i": i })).await;
    }
    let audit = wait_for_events(&s.base, "/acme/audit", 5).await;
    assert_eq!(
        audit[4]["origin"],
        json!({"stream": "acme/orders", "index": 4})
    );
    assert_eq!(audit[4]["data"], json!({"i": 4}));
    wait_for_events(&s.base, "/acme/totals('even')", 3).await;

    // the new version rebuilds from index 0 and dispatches the same events again
    let v2 = v1.replace("n + 1", "n + 10");
    assert_eq!(deploy(&s, "/acme/orders.count", &v2).await, 200);
    assert_eq!(settled(&s, "/acme/orders", "count", 4).await, json!(50));
    s.post_ok("/acme/orders", "o", json!({ "i": 5 })).await;
    let audit = wait_for_events(&s.base, "/acme/audit", 6).await;
    let indexes: Vec<u64> = audit
        .iter()
        .map(|e| e["origin"]["index"].as_u64().unwrap())
        .collect();
    assert_eq!(
        indexes,
        [0, 1, 2, 3, 4, 5],
        "dispatched once per source event"
    );
    assert_eq!(
        wait_for_events(&s.base, "/acme/totals('even')", 3)
            .await
            .len(),
        3
    );

    // a dispatch to a stream of another account is refused, in the log
    let v3 = "(n = 0, e) => { dispatch('/other/x', { type: 't' }); return n; }";
    deploy(&s, "/acme/more.r", v3).await;
    s.post_ok("/acme/more", "o", json!({})).await;
    let logs = wait_for_events(&s.base, "/acme/more/logs", 1).await;
    let message = logs[0]["data"]["message"].as_str().unwrap();
    assert!(message.contains("own streams"), "{message}");
}

/// The `hops` of each event of `events`: 0 for an appended one, 1 when its origin has none.
fn hops(events: &[serde_json::Value]) -> Vec<u64> {
    events
        .iter()
        .map(|e| match &e["origin"] {
            serde_json::Value::Null => 0,
            o => o["hops"].as_u64().unwrap_or(1),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loops_of_pipes_and_dispatches_stop_after_ten_steps() {
    let s = spawn_server().await;
    // a pipe a → b, and b's reducer dispatching each event back into a: a loop no
    // check at creation sees
    assert_eq!(
        put_pipe(&s, "/acme/a/pipe/acme/b", None).await.status(),
        201
    );
    deploy(
        &s,
        "/acme/b.back",
        "(n = 0, e) => { dispatch('a', { type: 'again' }); return n + 1; }",
    )
    .await;
    // and two reducers dispatching to each other's streams
    deploy(
        &s,
        "/acme/x.on",
        "(n = 0, e) => { dispatch('y', { type: 'ping' }); return n + 1; }",
    )
    .await;
    deploy(
        &s,
        "/acme/y.on",
        "(n = 0, e) => { dispatch('x', { type: 'pong' }); return n + 1; }",
    )
    .await;
    s.post_ok("/acme/a", "start", json!({})).await;
    s.post_ok("/acme/x", "start", json!({})).await;

    // the pipe refuses to copy the event ten steps from the appended one
    let logs = wait_for_events(&s.base, "/acme/a/logs/pipe/acme/b", 1).await;
    let message = logs[0]["data"]["message"].as_str().unwrap();
    assert!(
        message.contains("the most a chain may take (10)") && message.contains("loop"),
        "{message}"
    );
    assert_eq!(logs[0]["data"]["index"], json!(5));
    let a = read_all(&s.client, &s.url("/acme/a")).await;
    let b = read_all(&s.client, &s.url("/acme/b")).await;
    assert_eq!(hops(&a), [0, 2, 4, 6, 8, 10], "{a:?}");
    assert_eq!(hops(&b), [1, 3, 5, 7, 9], "{b:?}");
    assert_eq!(
        b[1]["origin"],
        json!({"stream": "acme/a", "index": 1, "hops": 3})
    );

    // x's reducer refuses to dispatch from the event ten steps away
    let logs = wait_for_events(&s.base, "/acme/x/logs", 1).await;
    let message = logs[0]["data"]["message"].as_str().unwrap();
    assert!(
        message.contains("the most a chain may take (10)"),
        "{message}"
    );
    assert_eq!(logs[0]["data"]["index"], json!(5));
    assert_eq!(settled(&s, "/acme/x", "on", 5).await, json!(6));
    let x = read_all(&s.client, &s.url("/acme/x")).await;
    let y = read_all(&s.client, &s.url("/acme/y")).await;
    assert_eq!(hops(&x), [0, 2, 4, 6, 8, 10], "{x:?}");
    assert_eq!(hops(&y), [1, 3, 5, 7, 9], "{y:?}");
    assert_eq!(settled(&s, "/acme/y", "on", 4).await, json!(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loop_through_the_account_events_stops_too() {
    let s = spawn_server().await;
    // each stream created comes back as an account event, piped to `created`, whose
    // reducer dispatches into a new stream: a loop through streams that do not exist
    // yet, whose account events count on from the dispatch that made them
    let r = put_pipe(
        &s,
        "/eddy/events(acme)/pipe/acme/created?type=stream-created",
        None,
    )
    .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    deploy(
        &s,
        "/acme/created.more",
        "(n = 0, e) => { dispatch('made' + n, { type: 'x' }); return n + 1; }",
    )
    .await;

    let logs = wait_for_events(&s.base, "/eddy/events(acme)/logs/pipe/acme/created", 1).await;
    let message = logs[0]["data"]["message"].as_str().unwrap();
    assert!(
        message.contains("the most a chain may take (10)"),
        "{message}"
    );
    let created = read_all(&s.client, &s.url("/acme/created")).await;
    assert_eq!(hops(&created), [1, 3, 5, 7, 9], "{created:?}");
    let made = read_all(&s.client, &s.url("/acme/made4")).await;
    assert_eq!(hops(&made), [10]);
    assert_eq!(settled(&s, "/acme/created", "more", 4).await, json!(5));
    let r = s.get("/acme/made5").await;
    assert_eq!(r.status(), 404, "the chain ends at made4");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatch_into_the_stream_it_runs_on_goes_one_step_deep() {
    let s = spawn_server().await;
    // twice per event into its own stream: from an appended event it may (a summary
    // event); from a dispatched one it may not, or the stream would double without end
    let code = "(n = 0, e) => {\n\
                  dispatch('loop', { type: 'again' });\n\
                  dispatch('loop', { type: 'again' });\n\
                  return n + 1;\n\
                }";
    deploy(&s, "/acme/loop.r", code).await;
    // on a factory, to a sibling substream: a note once, no ping-pong after
    let fan = "(n = 0, e) => { dispatch(\"fan('b')\", { type: 'note' }); return n + 1; }";
    s.post_ok("/acme/fan('a')", "first", json!({})).await;
    deploy(&s, "/acme/fan.r", fan).await;
    s.post_ok("/acme/loop", "first", json!({})).await;
    s.post_ok("/acme/loop", "second", json!({})).await;
    // two appended, four dispatched from them, all six folded
    assert_eq!(settled(&s, "/acme/loop", "r", 5).await, json!(6));
    let logs = wait_for_events(&s.base, "/acme/loop/logs", 8).await;
    let message = logs[0]["data"]["message"].as_str().unwrap();
    assert!(
        message.contains("acme/loop is the stream this code runs on"),
        "{message}"
    );
    let logs = wait_for_events(&s.base, "/acme/fan/logs", 1).await;
    let message = logs[0]["data"]["message"].as_str().unwrap();
    assert!(message.contains("acme/fan is the stream"), "{message}");
    // and nothing more was dispatched
    assert_eq!(read_all(&s.client, &s.url("/acme/loop")).await.len(), 6);
    let fan = read_all(&s.client, &s.url("/acme/fan")).await;
    let types: Vec<&str> = fan.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["first", "note"]);
    assert_eq!(
        wait_for_events(&s.base, "/acme/loop/logs", 8).await.len(),
        8
    );
}

/// A local HTTP service that counts its calls and answers JSON.
async fn service() -> (u16, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let app = axum::Router::new().route(
        "/price",
        axum::routing::post(move |body: String| {
            let hits = counted.clone();
            async move {
                let n = hits.fetch_add(1, Ordering::SeqCst) + 1;
                axum::Json(json!({ "calls": n, "echo": body }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, hits)
}

const CALLER: &str = "export default (s = { got: [], refused: [] }, e) => {\n\
  try {\n\
    const r = request(e.data.url, { method: 'POST', body: { i: e.index } });\n\
    s.got.push(r.voided ? 'voided' : r.status + ':' + r.json().calls + ':' + r.json().echo);\n\
  } catch (err) {\n\
    s.refused.push(err.message);\n\
  }\n\
  return s;\n\
};";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_reaches_allowed_hosts_only_and_never_during_a_rebuild() {
    let s = spawn_server_with(crate::request::allow_private_targets).await;
    let (port, hits) = service().await;
    let r = s
        .call(
            "PUT",
            "/acme/quotes/settings",
            &[],
            json!({"requestHosts": ["127.0.0.1"]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(deploy(&s, "/acme/quotes.prices", CALLER).await, 201);
    let allowed = format!("http://127.0.0.1:{port}/price");
    let other = format!("http://localhost:{port}/price");
    s.post_ok("/acme/quotes", "q", json!({ "url": allowed }))
        .await;
    s.post_ok("/acme/quotes", "q", json!({ "url": other }))
        .await;
    let state = settled(&s, "/acme/quotes", "prices", 1).await;
    assert_eq!(state["got"], json!(["200:1:{\"i\":0}"]));
    let refused = state["refused"][0].as_str().unwrap();
    assert!(refused.contains("requestHosts"), "{refused}");
    assert!(refused.contains("localhost"), "{refused}");
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    // a redeploy rebuilds from index 0: its requests are voided, none is sent
    let v2 = format!("{CALLER}\n// v2");
    assert_eq!(deploy(&s, "/acme/quotes.prices", &v2).await, 200);
    let state = settled(&s, "/acme/quotes", "prices", 1).await;
    // voided calls are not sent anywhere, so no host is refused either
    assert_eq!(state["got"], json!(["voided", "voided"]));
    assert_eq!(state["refused"], json!([]));
    assert_eq!(hits.load(Ordering::SeqCst), 1, "a rebuild sent a request");
    // and the rebuilt version calls out for new events
    s.post_ok("/acme/quotes", "q", json!({ "url": allowed }))
        .await;
    let state = settled(&s, "/acme/quotes", "prices", 2).await;
    assert_eq!(state["got"], json!(["voided", "voided", "200:2:{\"i\":2}"]));
    assert_eq!(hits.load(Ordering::SeqCst), 2);
}
