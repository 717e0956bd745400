//! `request()` from reducers (API §7, §10) goes through the outbound guard that
//! webhooks use: no private targets unless the server allows them
//! (`--allow-private-targets`), and its waiting counts against the event's time limit.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{TestServer, silent_listener, spawn_server, spawn_server_with};
use crate::reducers::{deploy, wait_for_logs};
use crate::sandbox::settled;

/// Lets outbound calls reach loopback, as local test services need.
pub fn allow_private_targets(c: &mut eddy_server::Config) {
    c.allow_private_targets = true;
    // a request() waits within the event's time limit: room for a loaded machine
    c.reducer_time_ms = 5000;
}

/// A local HTTP service answering `{"ok": true}` on every path; counts its calls.
async fn service() -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::Ordering;
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = hits.clone();
    let app = axum::Router::new().fallback(move || {
        let hits = counted.clone();
        async move {
            hits.fetch_add(1, Ordering::SeqCst);
            axum::Json(json!({ "ok": true }))
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, hits)
}

const CALLER: &str = "(s = [], e) => { try { const r = request(e.data.url); \
    return [...s, r.status + ' ' + r.body]; } catch (err) { return [...s, err.message]; } }";

async fn allow_hosts(s: &TestServer, stream: &str, hosts: Value) {
    let r = s
        .call(
            "PUT",
            &format!("{stream}/settings"),
            &[],
            json!({ "requestHosts": hosts }),
        )
        .await;
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_to_a_private_target_is_refused_without_the_flag() {
    let s = spawn_server().await;
    let (port, hits) = service().await;
    allow_hosts(&s, "/acme/q", json!(["127.0.0.1", "localhost", "[::1]"])).await;
    assert_eq!(deploy(&s, "/acme/q.r", CALLER).await.status(), 201);
    for url in [
        format!("http://127.0.0.1:{port}/secret"),
        format!("http://localhost:{port}/secret"),
        format!("http://[::1]:{port}/secret"),
    ] {
        s.post_ok("/acme/q", "x", json!({ "url": url })).await;
    }
    let state = settled(&s, "/acme/q", "r", 2).await;
    let answers: Vec<&str> = state
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(answers.len(), 3, "{state}");
    for answer in &answers {
        assert!(answer.contains("was refused"), "{answer}");
        assert!(answer.contains("--allow-private-targets"), "{answer}");
    }
    assert!(
        answers[0].contains("127.0.0.1, a loopback address"),
        "{answers:?}"
    );
    assert!(answers[1].contains("loopback host name"), "{answers:?}");
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_to_a_private_target_is_allowed_with_the_flag() {
    let s = spawn_server_with(allow_private_targets).await;
    let (port, hits) = service().await;
    allow_hosts(&s, "/acme/q", json!(["127.0.0.1", "localhost"])).await;
    assert_eq!(deploy(&s, "/acme/q.r", CALLER).await.status(), 201);
    for host in ["127.0.0.1", "localhost"] {
        let url = format!("http://{host}:{port}/page");
        s.post_ok("/acme/q", "x", json!({ "url": url })).await;
    }
    let state = settled(&s, "/acme/q", "r", 1).await;
    assert_eq!(state, json!(["200 {\"ok\":true}", "200 {\"ok\":true}"]));
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_never_answers_fails_its_event_within_the_time_limit() {
    fn config(c: &mut eddy_server::Config) {
        c.allow_private_targets = true;
        c.reducer_time_ms = 300;
    }
    let s = spawn_server_with(config).await;
    let (port, held) = silent_listener().await;
    allow_hosts(&s, "/acme/w", json!(["127.0.0.1"])).await;
    let code = "(n = 0, e) => { if (e.data.url) { try { request(e.data.url); } catch (_) {} } return n + 1; }";
    assert_eq!(deploy(&s, "/acme/w.r", code).await.status(), 201);
    let started = Instant::now();
    let url = format!("http://127.0.0.1:{port}/never");
    s.post_ok("/acme/w", "x", json!({ "url": url })).await;
    s.post_ok("/acme/w", "x", json!({})).await;
    // the first event failed (the code caught the error, in vain), the second counts
    assert_eq!(settled(&s, "/acme/w", "r", 1).await, json!(1));
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "took {took:?}");
    let logs = wait_for_logs(&s, "/acme/w/logs", |l| {
        l.iter().any(|e| e["type"] == "error")
    })
    .await;
    let error = logs.iter().find(|e| e["type"] == "error").unwrap();
    assert_eq!(error["data"]["index"], 0, "{error}");
    let message = error["data"]["message"].as_str().unwrap();
    assert!(
        message.contains("waited in request() until the time limit of 300 ms"),
        "{message}"
    );
    held.abort();
}
