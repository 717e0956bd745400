//! One account cannot slow another down (API §10): reducers run on a pool of threads
//! in fair slices, state reads never wait for a busy reducer thread, the JavaScript
//! memory of all streams is bounded together, and a shutdown stops reducers within
//! its grace without losing or repeating a fold.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{ChildServer, TestServer, client, silent_listener, spawn_server_with};
use crate::reducers::deploy;

/// A reducer that uses its whole time limit on every event.
const SPIN: &str = "(n = 0, e) => { while (true) {} }";

/// Appends `n` events to `path` in one batch.
async fn batch(base: &str, path: &str, n: usize) {
    let events: Vec<Value> = (0..n)
        .map(|i| json!({"type": "t", "data": {"i": i}}))
        .collect();
    let r = client()
        .post(format!("{base}{path}"))
        .header("Content-Type", "application/vnd.eddy.events+json")
        .json(&events)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
}

/// One thread for both accounts, so that only fair slices keep B going; outbound calls
/// may reach the loopback listener of the blocked case.
fn shared_thread(c: &mut eddy_server::Config) {
    c.reducer_threads = 1;
    c.reducer_time_ms = 100;
    c.allow_private_targets = true;
}

/// With A's reducer `a_code` deployed on /a/slow and 100 events to fold (ten seconds of
/// work), B's events are folded and its state and A's status are read within a second
/// or two: they never wait for A's backlog.
async fn b_stays_fast_while_a_is_busy(s: &TestServer, a_code: &str) {
    assert_eq!(deploy(s, "/a/slow.busy", a_code).await.status(), 201);
    assert_eq!(
        deploy(s, "/b/fast.n", "(n = 0, e) => n + 1").await.status(),
        201
    );
    // ten seconds of work for A's reducer (its events are live: request() is sent)
    batch(&s.base, "/a/slow", 100).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    let mut folds = Vec::new();
    let mut reads = Vec::new();
    for i in 0..5 {
        s.post_ok("/b/fast", "t", json!({})).await;
        let at = Instant::now();
        let r = s.get(&format!("/b/fast.n?min-index={i}&wait=10000")).await;
        folds.push(at.elapsed());
        assert_eq!(r.headers()["reducer-index"], i.to_string().as_str());
        assert_eq!(r.json::<Value>().await.unwrap(), json!(i + 1));
        let at = Instant::now();
        assert_eq!(s.get("/b/fast.n").await.status(), 200);
        assert_eq!(s.get("/a/slow/reducers").await.status(), 200);
        assert_eq!(s.get("/a/slow.busy").await.status(), 200);
        reads.push(at.elapsed());
    }
    // A is still busy: B was not served by waiting for A's backlog
    let status = s.get_json("/a/slow/reducers", 200).await;
    assert!(status[0]["lag"].as_i64().unwrap() > 0, "{status}");
    let worst_fold = folds.iter().max().unwrap();
    let worst_read = reads.iter().max().unwrap();
    assert!(
        *worst_fold < Duration::from_millis(3000),
        "B's events waited {folds:?} to be folded"
    );
    assert!(
        *worst_read < Duration::from_millis(2000),
        "reads took {reads:?} while A was busy"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reducer_spending_its_time_limit_on_every_event_does_not_stall_another_account() {
    let s = spawn_server_with(shared_thread).await;
    b_stays_fast_while_a_is_busy(&s, SPIN).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reducer_whose_requests_never_get_an_answer_does_not_stall_another_account() {
    let s = spawn_server_with(shared_thread).await;
    let (port, held) = silent_listener().await;
    let r = s
        .call(
            "PUT",
            "/a/slow/settings",
            &[],
            json!({ "requestHosts": ["127.0.0.1"] }),
        )
        .await;
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let code = format!(
        "(n = 0, e) => {{ try {{ request('http://127.0.0.1:{port}/never'); }} catch (_) {{}} return n + 1; }}"
    );
    b_stays_fast_while_a_is_busy(&s, &code).await;
    held.abort();
}

#[tokio::test]
async fn the_javascript_memory_of_all_streams_is_bounded_together() {
    let s = spawn_server_with(|c| {
        c.reducer_threads = 1;
        c.reducer_memory_mb = 32;
        c.reducer_memory_total_mb = 48;
    })
    .await;
    // each event keeps about 3 MB alive in the module's scope
    let hog = "const hog = [];\nexport default (n = 0, e) => {\n  for (let i = 0; i < 200; i++) hog.push(new Array(2000).fill(i));\n  return n + 1;\n};";
    for k in 0..4 {
        assert_eq!(deploy(&s, &format!("/m{k}/s.hog"), hog).await.status(), 201);
    }
    for k in 0..4 {
        batch(&s.base, &format!("/m{k}/s"), 12).await;
    }
    for k in 0..4 {
        let r = s.get(&format!("/m{k}/s.hog?min-index=11&wait=20000")).await;
        assert_eq!(r.headers()["reducer-index"], "11");
    }
    let used = crate::common::metric(&s.base, "eddy_reducer_memory_bytes").await as f64;
    assert!(
        used > 24.0 * 1048576.0,
        "{used} bytes: the hogs did not run"
    );
    assert!(
        used <= 48.0 * 1048576.0,
        "{used} bytes over the 48 MiB server-wide limit"
    );
    // the streams that found the budget spent say so in their logs, which their next
    // checkpoint writes (awaited: the states above are published before it)
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let shared = loop {
        let mut shared = 0;
        for k in 0..4 {
            let logs = s.get_json(&format!("/m{k}/s/logs"), 200).await;
            if logs.as_array().unwrap().iter().any(|l| {
                l["data"]["message"]
                    .as_str()
                    .unwrap_or("")
                    .contains("server-wide limit")
            }) {
                shared += 1;
            }
        }
        if shared >= 1 || std::time::Instant::now() > deadline {
            break shared;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        shared >= 1,
        "streams refused by the shared budget: {shared}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_reducer_backlog_exits_within_the_grace_and_folds_the_rest_once() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--shutdown-grace-ms", "1500", "--reducer-time-ms", "2000"];
    let mut server = ChildServer::start_with(dir.path(), &args).await;
    let client = client();
    // about 40 ms an event: a backlog of several seconds
    let slow = "(n = 0, e) => { let x = 0; for (let i = 0; i < 400000; i++) x += i; return x > 0 ? n + 1 : n; }";
    let r = client
        .put(format!("{}/k/s.n", server.base))
        .header("Content-Type", "application/javascript")
        .body(slow)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    batch(&server.base, "/k/s", 200).await;
    let r = client
        .get(format!("{}/k/s.n?min-index=2&wait=10000", server.base))
        .send()
        .await
        .unwrap();
    let folded: i64 = r.headers()["reducer-index"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(folded >= 2, "folding has begun ({folded})");
    let lag = client
        .get(format!("{}/k/s/reducers", server.base))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()[0]["lag"]
        .as_i64()
        .unwrap();
    assert!(lag > 100, "the backlog is {lag} events");
    let at = Instant::now();
    server.signal("-TERM");
    let status = tokio::time::timeout(Duration::from_secs(20), server.child.wait())
        .await
        .expect("eddy did not exit")
        .unwrap();
    let took = at.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(
        took < Duration::from_millis(3000),
        "exited {took:?} after SIGTERM with a grace of 1.5 s"
    );
    // the rest is folded after the restart, every event exactly once
    let server = ChildServer::start_with(dir.path(), &args).await;
    let r = client
        .get(format!("{}/k/s.n?min-index=199&wait=60000", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["reducer-index"], "199");
    assert_eq!(r.json::<Value>().await.unwrap(), json!(200));
}

/// Two reducer threads folding at once cannot both be given what the other is about to
/// take: a sandbox holds its whole allowance while it folds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_threads_folding_at_once_stay_within_the_shared_memory_limit() {
    let s = spawn_server_with(|c| {
        c.reducer_threads = 2;
        c.reducer_memory_mb = 32;
        c.reducer_memory_total_mb = 48;
    })
    .await;
    // each event keeps 20 MB alive in the module's scope
    let hog = "const keep = [];\nexport default (n = 0, e) => {\n  for (let i = 0; i < 2; i++) keep.push('y'.repeat(10e6 + i));\n  return n + 1;\n};";
    for k in 0..6 {
        assert_eq!(deploy(&s, &format!("/t{k}/s.hog"), hog).await.status(), 201);
    }
    let posts: Vec<_> = (0..6)
        .map(|k| {
            let base = s.base.clone();
            tokio::spawn(async move { batch(&base, &format!("/t{k}/s"), 1).await })
        })
        .collect();
    for p in posts {
        p.await.unwrap();
    }
    // every stream has folded (or failed) its event
    for k in 0..6 {
        let r = s.get(&format!("/t{k}/s.hog?min-index=0&wait=20000")).await;
        assert_eq!(r.headers()["reducer-index"], "0");
    }
    let used = crate::common::metric(&s.base, "eddy_reducer_memory_bytes").await as f64;
    assert!(
        used <= 48.0 * 1048576.0,
        "{used} bytes over the 48 MiB server-wide limit"
    );
    assert!(used > 20e6, "{used} bytes: no hog ran");
}
