//! Reducers over HTTP (API §7): deploy, per-substream state, read-your-writes,
//! TypeScript, `current`, redeploy, errors and limits contained, logs, restarts.

use std::time::Duration;

use reqwest::{Client, Response};
use serde_json::{Value, json};

use crate::common::{ChildServer, TestServer, assert_error, spawn_server};

async fn deploy_at(
    client: &Client,
    base: &str,
    path: &str,
    content_type: &str,
    code: &str,
) -> Response {
    client
        .put(format!("{base}{path}"))
        .header("Content-Type", content_type)
        .body(code.to_owned())
        .send()
        .await
        .expect("PUT")
}

pub async fn deploy(s: &TestServer, path: &str, code: &str) -> Response {
    deploy_at(&s.client, &s.base, path, "application/javascript", code).await
}

/// Reads a state once `index` is folded: answers (state, Reducer-Index).
async fn state_at(client: &Client, base: &str, path: &str, index: u64) -> (Value, i64) {
    let sep = if path.contains('?') { '&' } else { '?' };
    let r = client
        .get(format!("{base}{path}{sep}min-index={index}&wait=10000"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{path}");
    let at: i64 = r.headers()["reducer-index"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    (r.json().await.unwrap(), at)
}

async fn state(s: &TestServer, path: &str, index: u64) -> Value {
    let (v, at) = state_at(&s.client, &s.base, path, index).await;
    assert!(at >= index as i64, "{path}: folded only to {at}");
    v
}

const PAGES: &str = "export default (state = { total: 0, pages: {} }, event) => {\n  state.total++;\n  state.pages[event.data.url] = (state.pages[event.data.url] ?? 0) + 1;\n  return state;\n};";

#[tokio::test]
async fn a_reducer_folds_a_stream_and_reads_its_own_writes() {
    let s = spawn_server().await;
    s.post_ok("/acme/clicks", "click", json!({"url": "/a"}))
        .await;
    let r = deploy(&s, "/acme/clicks.pages", PAGES).await;
    assert_eq!(r.status(), 201);
    s.post_ok("/acme/clicks", "click", json!({"url": "/b"}))
        .await;
    let last = s
        .post_ok("/acme/clicks", "click", json!({"url": "/a"}))
        .await;
    assert_eq!(last["index"], 2);
    // min-index waits until the write just made is folded
    assert_eq!(
        state(&s, "/acme/clicks.pages", 2).await,
        json!({"total": 3, "pages": {"/a": 2, "/b": 1}})
    );
    let source = s.get("/acme/clicks.pages?source").await;
    assert_eq!(source.headers()["content-type"], "application/javascript");
    assert_eq!(source.text().await.unwrap(), PAGES);
    let status = s.get_json("/acme/clicks/reducers", 200).await;
    assert_eq!(status[0]["name"], "pages");
    assert_eq!(status[0]["status"], "running");
    assert_eq!(status[0]["lag"], 0);
    assert_eq!(status[0]["index"], 2);
    assert_eq!(status[0]["errors"], 0);
    assert!(
        status[0]["codeHash"]
            .as_str()
            .is_some_and(|h| !h.is_empty())
    );
    // delete
    assert_eq!(
        s.call("DELETE", "/acme/clicks.pages", &[], Value::Null)
            .await
            .status(),
        204
    );
    assert_error(s.get("/acme/clicks.pages").await, 404, "pages").await;
}

#[tokio::test]
async fn a_factory_keeps_one_state_per_substream() {
    let s = spawn_server().await;
    let r = s
        .call(
            "PUT",
            "/acme/orders/settings",
            &[],
            json!({"factory": true}),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        deploy(&s, "/acme/orders.sum", "(s = 0, e) => s + e.data.amount")
            .await
            .status(),
        201
    );
    for (who, amount) in [("a", 1), ("b", 10), ("a", 2), ("c", 100), ("a", 3)] {
        s.post_ok(
            &format!("/acme/orders('{who}')"),
            "order",
            json!({"amount": amount}),
        )
        .await;
    }
    assert_eq!(state(&s, "/acme/orders('a').sum", 2).await, json!(6));
    assert_eq!(state(&s, "/acme/orders('b').sum", 0).await, json!(10));
    assert_eq!(state(&s, "/acme/orders('c').sum", 0).await, json!(100));
    // event.args on factories
    deploy(&s, "/acme/orders.who", "(s, e) => e.args[0]").await;
    assert_eq!(state(&s, "/acme/orders('b').who", 0).await, json!("b"));
    // the factory URL lists the substream states, paged
    let r = s.get("/acme/orders.sum?limit=2").await;
    assert!(r.headers()["link"].to_str().unwrap().contains("after="));
    let page: Value = r.json().await.unwrap();
    assert_eq!(page[0]["stream"], "acme/orders('a')");
    // args as /substreams shows them: the canonical text
    assert_eq!(page[0]["args"], "'a'");
    assert_eq!(page[0]["state"], 6);
    assert_eq!(page[1]["state"], 10);
    let subs = s.get_json("/acme/orders/substreams", 200).await;
    assert_eq!(page[1]["args"], subs[1]["args"]);
    // an exactly full last page has no Link, as event reads and /substreams
    let r = s.get("/acme/orders.sum?limit=3").await;
    assert!(r.headers().get("link").is_none(), "{:?}", r.headers());
    let page: Value = r.json().await.unwrap();
    assert_eq!(page.as_array().unwrap().len(), 3);
    assert_eq!(page[2]["state"], 100);
    // a number arg is shown as written, not as a float
    s.post_ok("/acme/orders(7)", "order", json!({"amount": 5}))
        .await;
    assert_eq!(state(&s, "/acme/orders(7).sum", 0).await, json!(5));
    let r = s.get("/acme/orders.sum?limit=3").await;
    let link = r.headers()["link"].to_str().unwrap().to_owned();
    let after = link
        .split("after=")
        .nth(1)
        .and_then(|x| x.split('>').next())
        .unwrap()
        .to_owned();
    let page = s
        .get_json(&format!("/acme/orders.sum?limit=3&after={after}"), 200)
        .await;
    assert_eq!(
        page,
        json!([{"stream": "acme/orders(7)", "args": "7", "index": 0, "state": 5}])
    );
    // a substream with no events has no state yet
    let r = s.get("/acme/orders('zed').sum").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["reducer-index"], "-1");
    assert_eq!(r.json::<Value>().await.unwrap(), Value::Null);
}

#[tokio::test]
async fn typescript_is_stripped_and_current_reads_another_reducer() {
    let s = spawn_server().await;
    let ts = "interface Count { n: number }\nexport default (state: Count = { n: 0 }, event: { type: string }): Count => ({ n: state.n + 1 });";
    let r = deploy_at(
        &s.client,
        &s.base,
        "/acme/t.count",
        "application/typescript",
        ts,
    )
    .await;
    assert_eq!(r.status(), 201);
    let r = deploy(
        &s,
        "/acme/t.double",
        "(s, e, i, current) => current.count.n * 2",
    )
    .await;
    assert_eq!(r.status(), 201);
    for _ in 0..3 {
        s.post_ok("/acme/t", "x", json!({})).await;
    }
    assert_eq!(state(&s, "/acme/t.count", 2).await, json!({"n": 3}));
    // double folds after count for each event, so it sees count's state including it
    assert_eq!(state(&s, "/acme/t.double", 2).await, json!(6));
    // a cycle is refused at deploy
    let r = deploy(&s, "/acme/t.count", "(s, e, i, current) => current.double").await;
    let body = assert_error(r, 400, "cycle").await;
    assert_eq!(body["cycle"], json!(["count", "double", "count"]));
}

#[tokio::test]
async fn bad_code_is_refused_with_line_and_column() {
    let s = spawn_server().await;
    let r = deploy(
        &s,
        "/acme/c.bad",
        "export default (s, e) => {\n  return s +;\n};",
    )
    .await;
    let body = assert_error(r, 400, "syntax error").await;
    assert_eq!(
        (body["line"].clone(), body["column"].clone()),
        (json!(2), json!(13))
    );
    // sub= picks substreams, which a plain stream (or a missing one) has not
    let r = deploy(&s, "/acme/c.subs?sub=('a')", "(n = 0) => n + 1").await;
    assert_error(r, 400, "sub= picks substreams of a factory").await;
    s.post_ok("/acme/fc('a')", "t", json!({})).await;
    let r = deploy(&s, "/acme/fc.subs?sub=('a')", "(n = 0) => n + 1").await;
    assert_eq!(r.status(), 201);
    let r = deploy_at(
        &s.client,
        &s.base,
        "/acme/c.bad",
        "application/typescript",
        "(s: number, e) => s +* 1",
    )
    .await;
    assert_error(r, 400, "line 1").await;
    assert_error(
        deploy(&s, "/acme/c.bad", "export default 42;").await,
        400,
        "not a function",
    )
    .await;
    assert_error(deploy(&s, "/acme/c.bad", "   ").await, 400, "empty").await;
    assert_error(
        deploy(&s, "/acme/c('x').bad", "(s) => s").await,
        400,
        "on the stream, not on a substream",
    )
    .await;
    assert_error(
        deploy(&s, "/acme/c.bad?on-error=maybe", "(s) => s").await,
        400,
        "on-error",
    )
    .await;
    let r = deploy_at(&s.client, &s.base, "/acme/c.bad", "image/png", "x").await;
    assert_error(r, 415, "image/png").await;
    // nothing was stored
    assert_error(s.get("/acme/c.bad").await, 404, "").await;
}

#[tokio::test]
async fn a_throw_is_logged_and_skipped_and_halt_stops() {
    let s = spawn_server().await;
    deploy(&s, "/acme/e.skip", "(n = 0, e) => { if (e.data.bad) throw new Error('bad event'); console.log('ok', e.index); return n + 1; }").await;
    deploy(
        &s,
        "/acme/e.halt?on-error=halt",
        "(n = 0, e) => { if (e.data.bad) throw new Error('bad event'); return n + 1; }",
    )
    .await;
    s.post_ok("/acme/e", "x", json!({})).await;
    s.post_ok("/acme/e", "x", json!({"bad": true})).await;
    s.post_ok("/acme/e", "x", json!({})).await;
    assert_eq!(state(&s, "/acme/e.skip", 2).await, json!(2));
    let (halted, _) = state_at(&s.client, &s.base, "/acme/e.halt", 0).await;
    assert_eq!(halted, json!(1));
    let status = s.get_json("/acme/e/reducers", 200).await;
    let halt = status
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "halt")
        .unwrap();
    assert_eq!(halt["status"], "halted");
    assert!(
        halt["halted"].as_str().unwrap().contains("index 1"),
        "{halt}"
    );
    // halting inside one batch: nothing after the failed event is folded
    let batch = json!([{"type": "x", "data": {}}, {"type": "x", "data": {"bad": true}}, {"type": "x", "data": {}}]);
    let r = s
        .client
        .post(s.url("/acme/h"))
        .header("Content-Type", "application/vnd.eddy.events+json")
        .body(batch.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    deploy(
        &s,
        "/acme/h.halt?on-error=halt",
        "(n = 0, e) => { if (e.data.bad) throw new Error('bad event'); return n + 1; }",
    )
    .await;
    for _ in 0..200 {
        if s.get_json("/acme/h/reducers", 200).await[0]["status"] == "halted" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let r = s.get("/acme/h.halt").await;
    assert_eq!(r.headers()["reducer-index"], "0");
    assert_eq!(r.json::<Value>().await.unwrap(), json!(1));
    // the log holds the error with index and stack, and console lines
    let logs = wait_for_logs(&s, "/acme/e/logs", |l| {
        l.iter().filter(|e| e["type"] == "error").count() >= 2
    })
    .await;
    let error = logs
        .iter()
        .find(|e| e["type"] == "error" && e["data"]["reducer"] == "skip")
        .unwrap();
    assert_eq!(error["data"]["index"], 1);
    assert_eq!(error["data"]["message"], "Error: bad event");
    assert!(error["data"]["stack"].as_str().unwrap().contains("skip"));
    assert!(
        logs.iter()
            .any(|e| e["type"] == "log" && e["data"]["message"] == "ok 2"),
        "{logs:?}"
    );
}

/// Polls the log until `done` holds: entries land with each checkpoint, every 200 ms.
pub async fn wait_for_logs(
    s: &TestServer,
    path: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let mut logs = Vec::new();
    for _ in 0..100 {
        let r = s.get(&format!("{path}?limit=1000")).await;
        if r.status() == 200 {
            logs = r.json().await.unwrap();
            if done(&logs) {
                return logs;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("logs never matched at {path}: {logs:#?}");
}

#[tokio::test]
async fn runaway_reducers_are_contained_while_another_keeps_folding() {
    let s = spawn_server().await;
    deploy(&s, "/acme/r.good", "(n = 0, e) => n + 1").await;
    deploy(
        &s,
        "/acme/r.spin",
        "(n = 0, e) => { if (e.data.spin) while (true) {} return n + 1; }",
    )
    .await;
    deploy(&s, "/acme/r.bomb", "(n = 0, e) => { if (e.data.bomb) { const a = []; while (true) a.push(new Array(100000).fill(1)); } return n + 1; }").await;
    deploy(
        &s,
        "/acme/r.huge",
        "(s, e) => e.data.huge ? 'x'.repeat(1000000) : 'small'",
    )
    .await;
    s.post_ok("/acme/r", "x", json!({"spin": true})).await;
    s.post_ok("/acme/r", "x", json!({"bomb": true})).await;
    s.post_ok("/acme/r", "x", json!({})).await;
    // the state size is checked when states are saved (docs/reference/http.md §7), so the huge
    // state comes last, where a save finds it
    s.post_ok("/acme/r", "x", json!({"huge": true})).await;
    assert_eq!(state(&s, "/acme/r.good", 3).await, json!(4));
    assert_eq!(state(&s, "/acme/r.spin", 3).await, json!(3));
    assert_eq!(state(&s, "/acme/r.bomb", 3).await, json!(3));
    let logs = wait_for_logs(&s, "/acme/r/logs", |l| {
        ["spin", "bomb", "huge"]
            .iter()
            .all(|r| l.iter().any(|e| e["data"]["reducer"] == *r))
    })
    .await;
    let message = |r: &str| {
        logs.iter().find(|e| e["data"]["reducer"] == r).unwrap()["data"]["message"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert!(
        message("spin").contains("time limit"),
        "{}",
        message("spin")
    );
    assert!(
        message("bomb").contains("memory limit"),
        "{}",
        message("bomb")
    );
    assert!(
        message("huge").contains("over the limit"),
        "{}",
        message("huge")
    );
    // the huge state was refused; the server goes on
    let huge = s.get("/acme/r.huge").await.text().await.unwrap();
    assert!(huge.len() < 1000, "{} bytes", huge.len());
    s.post_ok("/acme/r", "x", json!({})).await;
    assert_eq!(state(&s, "/acme/r.good", 4).await, json!(5));
}

#[tokio::test]
async fn a_redeploy_rebuilds_from_the_start() {
    let s = spawn_server().await;
    deploy(&s, "/acme/d.n", "(n = 0, e) => n + 1").await;
    for _ in 0..5 {
        s.post_ok("/acme/d", "x", json!({})).await;
    }
    assert_eq!(state(&s, "/acme/d.n", 4).await, json!(5));
    let r = deploy(&s, "/acme/d.n", "(n = 0, e) => n + 10").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["rebuilding"], true);
    // the old state answers until the rebuild has caught up, then the new one does
    let mut seen = Vec::new();
    for _ in 0..200 {
        let v = s.get_json("/acme/d.n", 200).await;
        if seen.last() != Some(&v) {
            seen.push(v.clone());
        }
        if v == json!(50) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // never a partial rebuild (10, 20, ...): the old state, then the rebuilt one
    assert!(
        seen.iter().all(|v| *v == json!(5) || *v == json!(50)),
        "{seen:?}"
    );
    assert_eq!(seen.last(), Some(&json!(50)));
    let status = s.get_json("/acme/d/reducers", 200).await;
    assert_eq!(status.as_array().unwrap().len(), 1, "{status}");
    assert_eq!(status[0]["status"], "running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_the_state_equals_a_fresh_fold() {
    let dir = tempfile::tempdir().unwrap();
    let server = ChildServer::start(dir.path()).await;
    let client = crate::common::client();
    let code = "(s = { n: 0, sum: 0, last: -1 }, e, i) => { if (i !== s.last + 1) throw new Error('gap'); return { n: s.n + 1, sum: s.sum + e.data.v, last: i }; }";
    assert_eq!(
        deploy_at(
            &client,
            &server.base,
            "/k/s.total",
            "application/javascript",
            code
        )
        .await
        .status(),
        201
    );
    // enough events that folding is still going on when the process dies
    let batch: Vec<Value> = (0..1000)
        .map(|v| json!({"type": "v", "data": {"v": v}}))
        .collect();
    for _ in 0..20 {
        let r = client
            .post(format!("{}/k/s", server.base))
            .header("Content-Type", "application/vnd.eddy.events+json")
            .json(&batch)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    server.signal("-KILL");
    let mut server = server;
    let _ = server.child.wait().await;
    let restarted = ChildServer::start(dir.path()).await;
    let (after_kill, at) = state_at(&client, &restarted.base, "/k/s.total", 19_999).await;
    assert_eq!(at, 19_999);
    // a fresh fold of the same events by the same code, as a second reducer
    deploy_at(
        &client,
        &restarted.base,
        "/k/s.fresh",
        "application/javascript",
        code,
    )
    .await;
    let (fresh, _) = state_at(&client, &restarted.base, "/k/s.fresh", 19_999).await;
    assert_eq!(after_kill, fresh);
    assert_eq!(
        after_kill,
        json!({"n": 20_000, "sum": 20 * 999 * 1000 / 2, "last": 19_999})
    );
    let logs = client
        .get(format!("{}/k/s/logs", restarted.base))
        .send()
        .await
        .unwrap();
    assert_eq!(logs.status(), 200);
    let logs: Value = logs.json().await.unwrap();
    assert_eq!(logs, json!([]), "no reducer error was logged");
}

#[tokio::test]
async fn state_survives_a_restart_without_refolding() {
    let mut s = spawn_server().await;
    // every call logs its index: a refold would log an index twice
    deploy(
        &s,
        "/acme/p.n",
        "(n = 0, e, i) => { console.log('folded', i); return n + 1; }",
    )
    .await;
    for _ in 0..3 {
        s.post_ok("/acme/p", "x", json!({})).await;
    }
    assert_eq!(state(&s, "/acme/p.n", 2).await, json!(3));
    // events elsewhere move the reducer's position past its stream's last event
    let position = |v: &Value| v[0]["position"].as_i64().unwrap();
    let before = position(&s.get_json("/acme/p/reducers", 200).await);
    s.post_ok("/acme/elsewhere", "x", json!({})).await;
    for _ in 0..200 {
        if position(&s.get_json("/acme/p/reducers", 200).await) > before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    s.restart().await;
    assert_eq!(state(&s, "/acme/p.n", 2).await, json!(3));
    let status = s.get_json("/acme/p/reducers", 200).await;
    assert_eq!(status[0]["lag"], 0);
    s.post_ok("/acme/p", "x", json!({})).await;
    assert_eq!(state(&s, "/acme/p.n", 3).await, json!(4));
    let logs = wait_for_logs(&s, "/acme/p/logs", |l| l.len() >= 4).await;
    let folded: Vec<&str> = logs
        .iter()
        .map(|e| e["data"]["message"].as_str().unwrap())
        .collect();
    assert_eq!(folded, ["folded 0", "folded 1", "folded 2", "folded 3"]);
}
