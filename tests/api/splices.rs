//! Splices (API §12): a stream's history replaced by an edited copy, previewed, then
//! approved by its owner or rejected; what the old history caused downstream and the
//! new one does not is recalled once; subscribers start again at index 0; the old
//! history stays readable as `strm@{n}`.

use futures::StreamExt;
use reqwest::Response;
use serde_json::{Value, json};

use crate::common::{TestServer, assert_error, spawn_server, spawn_server_with};
use crate::reducers::deploy;
use crate::sse::{data, subscribe};

/// POSTs a splice with the map function `code` (JavaScript).
pub(crate) async fn splice(s: &TestServer, path: &str, code: &str) -> Response {
    s.client
        .post(s.url(path))
        .header("content-type", "application/javascript")
        .body(code.to_owned())
        .send()
        .await
        .unwrap()
}

/// Makes a splice of `stream` on the server at `base` with the map function `code`
/// (JavaScript) and answers its id: for servers run as child processes.
pub(crate) async fn splice_at(base: &str, stream: &str, code: &str) -> String {
    let r = crate::common::client()
        .post(format!("{base}{stream}/splices"))
        .header("content-type", "application/javascript")
        .body(code.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// `POST {stream}/splices/{id}/approve`.
async fn approve(s: &TestServer, stream: &str, id: &str) -> Response {
    s.call(
        "POST",
        &format!("{stream}/splices/{id}/approve"),
        &[],
        json!(null),
    )
    .await
}

async fn created(s: &TestServer, path: &str, code: &str) -> Value {
    let r = splice(s, path, code).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    r.json().await.unwrap()
}

fn ts(events: &Value) -> Vec<i64> {
    events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["data"]["t"].as_i64().unwrap())
        .collect()
}

/// Appends `{"t": 0}` .. `{"t": n - 1}` to `stream` in one NDJSON request.
async fn post_readings(s: &TestServer, stream: &str, n: i64) {
    let lines: String = (0..n).map(|t| format!("{{\"t\":{t}}}\n")).collect();
    let r = s
        .client
        .post(s.url(stream))
        .header("content-type", "application/x-ndjson")
        .header("event-type", "reading")
        .body(lines)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
}

/// The distinct ids that the `eddy.recall` events among `events` name.
fn recalled_ids(events: &[Value]) -> std::collections::HashSet<&str> {
    events
        .iter()
        .filter(|e| e["type"] == "eddy.recall")
        .map(|e| e["data"]["recalled"]["id"].as_str().unwrap())
        .collect()
}

/// A stream of readings whose reducer dispatches an alert for each above 100, and a
/// downstream reducer that counts alerts, undoing recalled ones.
async fn readings_with_alerts(s: &TestServer) {
    let alerting = "(n = 0, e) => { if (e.data.t > 100) \
                    dispatch('alerts', {type: 'alert', data: {t: e.data.t}}); return n + 1 }";
    assert_eq!(
        deploy(s, "/acme/readings.seen", alerting).await.status(),
        201
    );
    let counting = "(s = {n: 0, recalled: 0}, e) => e.type === 'eddy.recall' \
                    ? {n: s.n - 1, recalled: s.recalled + 1} : {n: s.n + 1, recalled: s.recalled}";
    assert_eq!(
        deploy(s, "/acme/alerts.count", counting).await.status(),
        201
    );
    for t in [20, 150, 30, 200, 40] {
        s.post_ok("/acme/readings", "reading", json!({ "t": t }))
            .await;
    }
    let count = s
        .get_json("/acme/alerts.count?min-index=1&wait=10000", 200)
        .await;
    assert_eq!(count, json!({"n": 2, "recalled": 0}));
}

#[tokio::test]
async fn dropping_an_event_recalls_the_alert_it_caused_once() {
    let s = spawn_server().await;
    readings_with_alerts(&s).await;
    let mut sub = subscribe(&s, "/acme/readings?from=0", None).await;
    assert_eq!(sub.take(5).await.len(), 5);
    let follow = s
        .client
        .get(s.url("/acme/readings?follow=true"))
        .header("accept", "application/x-ndjson")
        .send()
        .await
        .unwrap();
    let mut follow = follow.bytes_stream();

    let made = created(
        &s,
        "/acme/readings/splices",
        "export default (e) => e.data.t === 150 ? null : e",
    )
    .await;
    assert_eq!(made["status"], "pending");
    let p = &made["preview"];
    assert_eq!(
        p["events"],
        json!({"before": 5, "after": 4, "kept": 4, "changed": 0, "dropped": 1, "added": 0})
    );
    assert_eq!(p["differences"][0]["index"], 1);
    assert_eq!(p["differences"][0]["after"], json!([]));
    assert_eq!(p["reducers"]["seen"], 4);
    // the alert of 150 goes; the alert of 200 moves from index 3 to 2, so it is
    // recalled and caused again
    let recalled: Vec<i64> = p["downstream"]["recalled"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["causedBy"].as_i64().unwrap())
        .collect();
    assert_eq!(recalled, [1, 3]);
    assert_eq!(p["downstream"]["addedCount"], 1);
    // nothing changed yet
    assert_eq!(
        ts(&s.get_json("/acme/readings", 200).await),
        [20, 150, 30, 200, 40]
    );

    let id = made["id"].as_str().unwrap();
    let r = approve(&s, "/acme/readings", id).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let approved: Value = s
        .get_json(&format!("/acme/readings/splices/{id}"), 200)
        .await;
    assert_eq!(approved["status"], "approved");
    assert_eq!(approved["replaced"], "acme/readings@1");

    // the new history from index 0; the old one as it was, read-only
    let now = s.get_json("/acme/readings", 200).await;
    assert_eq!(ts(&now), [20, 30, 200, 40]);
    let indexes: Vec<u64> = now
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indexes, [0, 1, 2, 3]);
    assert_eq!(
        ts(&s.get_json("/acme/readings@1", 200).await),
        [20, 150, 30, 200, 40]
    );
    assert_eq!(
        s.post("/acme/readings@1", "reading", json!({"t": 1}))
            .await
            .status(),
        405
    );

    // each alert recalled once; the downstream count is what it would be without 150
    let count = s
        .get_json("/acme/alerts.count?min-index=4&wait=10000", 200)
        .await;
    assert_eq!(count, json!({"n": 1, "recalled": 2}));
    let alerts = s.get_json("/acme/alerts", 200).await;
    let types: Vec<&str> = alerts
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        ["alert", "alert", "eddy.recall", "eddy.recall", "alert"]
    );
    assert_eq!(
        alerts[2]["data"]["recalled"],
        json!({"stream": "acme/alerts", "index": 0, "id": alerts[0]["id"]})
    );
    // the reducer of the stream folded the new history from the start
    assert_eq!(
        s.get_json("/acme/readings.seen?min-index=3&wait=10000", 200)
            .await,
        4
    );

    // the subscriber was told, and goes on from index 0 of the new history
    let notice = sub.next().await;
    assert_eq!(notice.event, "eddy.splice");
    assert_eq!(notice.id, "-1");
    assert_eq!(data(&notice)["stream"], "acme/readings");
    let again = sub.take(4).await;
    let ids: Vec<&str> = again.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["0", "1", "2", "3"]);
    // an EventSource that reconnects after the notice sends its id, -1: it starts
    // the new history from index 0, whatever after= its URL holds
    let mut back = subscribe(&s, "/acme/readings?after=2", Some("-1")).await;
    let ids: Vec<String> = back.take(4).await.into_iter().map(|e| e.id).collect();
    assert_eq!(ids, ["0", "1", "2", "3"]);

    // an NDJSON follower reads the new history again from index 0
    let mut lines = String::new();
    while lines.lines().count() < 9 {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(10), follow.next())
            .await
            .expect("NDJSON lines within 10 s")
            .unwrap()
            .unwrap();
        lines.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    let indexes: Vec<u64> = lines
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["index"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(indexes, [0, 1, 2, 3, 4, 0, 1, 2, 3]);

    // decided once
    let r = approve(&s, "/acme/readings", id).await;
    assert_error(r, 409, "approved already").await;
    // an account event records it
    let log = s.get_json("/eddy/events(acme)", 200).await;
    assert!(
        log.as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "stream-spliced" && e["data"]["recalled"] == 2),
        "{log}"
    );
}

/// A reducer that is behind when the splice is previewed dispatches alerts the preview
/// never saw: the approval recalls them too, each once.
#[tokio::test]
async fn alerts_dispatched_after_the_preview_are_recalled_on_approval() {
    // a time limit no busy machine reaches with the slow reducer below
    let s = spawn_server_with(|c| c.reducer_time_ms = 2000).await;
    // slow on purpose (about 15-60 ms per event): the stream's reducer is still
    // folding when the preview reads what it caused
    let alerting = "(n = 0, e) => { let x = 0; for (let i = 0; i < 450000; i++) x += i; \
                    dispatch('warnings', {type: 'alert', data: {t: e.data.t}}); return n + 1 }";
    assert_eq!(deploy(&s, "/acme/temps.seen", alerting).await.status(), 201);
    let counting = "(s = {n: 0, recalled: 0}, e) => e.type === 'eddy.recall' \
                    ? {n: s.n - 1, recalled: s.recalled + 1} : {n: s.n + 1, recalled: s.recalled}";
    assert_eq!(
        deploy(&s, "/acme/warnings.count", counting).await.status(),
        201
    );
    const N: i64 = 60;
    post_readings(&s, "/acme/temps", N).await;

    // dropping the first reading moves every other one: each alert is caused anew
    let made = created(
        &s,
        "/acme/temps/splices",
        "export default (e) => e.data.t === 0 ? null : e",
    )
    .await;
    let seen = made["preview"]["downstream"]["recalledCount"]
        .as_i64()
        .unwrap();
    assert!(
        seen < N,
        "the reducer was not behind at the preview: {seen} alerts seen"
    );
    assert_eq!(made["preview"]["downstream"]["addedCount"], N - 1);
    // every alert is out before the approval
    let count = s
        .get_json(
            &format!("/acme/warnings.count?min-index={}&wait=20000", N - 1),
            200,
        )
        .await;
    assert_eq!(count, json!({"n": N, "recalled": 0}));

    let id = made["id"].as_str().unwrap();
    let r = approve(&s, "/acme/temps", id).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    // N alerts, N recalls, N - 1 alerts of the new history
    let count = s
        .get_json(
            &format!("/acme/warnings.count?min-index={}&wait=20000", 3 * N - 2),
            200,
        )
        .await;
    assert_eq!(count, json!({"n": N - 1, "recalled": N}));
    let warnings = s.get_json("/acme/warnings?limit=1000", 200).await;
    let warnings = warnings.as_array().unwrap();
    assert_eq!(warnings.len() as i64, 3 * N - 1);
    let recalls = warnings.iter().filter(|e| e["type"] == "eddy.recall");
    assert_eq!(recalls.count() as i64, N);
    assert_eq!(
        recalled_ids(warnings).len() as i64,
        N,
        "each alert recalled once"
    );
    let log = s.get_json("/eddy/events(acme)", 200).await;
    assert!(
        log.as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "stream-spliced" && e["data"]["recalled"] == N),
        "{log}"
    );
}

/// A pipe still mapping the old history when a splice is approved: what it made
/// before the approval is recalled, what it makes of the old history after the
/// approval is not written, and the new history is piped once.
#[tokio::test]
async fn a_pipe_behind_a_splice_leaves_exactly_the_new_historys_outputs() {
    let s = spawn_server().await;
    // slow on the even readings (which the splice drops), so the pipe is behind
    // through the preview and the approval, and the preview (which maps the new
    // history only) is quick; an event over the time limit is logged, not piped
    let code = "export default (e) => { if (e.data.t % 2 === 0) { let x = 0; \
                for (let i = 0; i < 400000; i++) x += i; } \
                return {type: 'copy', data: {t: e.data.t}} }";
    let r = s
        .client
        .put(s.url("/acme/src2/pipe/acme/dst2"))
        .header("content-type", "application/javascript")
        .body(code)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    const N: i64 = 60;
    post_readings(&s, "/acme/src2", N).await;
    let made = created(
        &s,
        "/acme/src2/splices",
        "export default (e) => e.data.t % 2 === 0 ? null : e",
    )
    .await;
    let id = made["id"].as_str().unwrap();
    let r = approve(&s, "/acme/src2", id).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    // the pipe had not handled the whole old history when the approval answered
    let pipe = s.get_json("/acme/src2/pipe/acme/dst2", 200).await;
    let handled = pipe["piped"].as_i64().unwrap() + pipe["errors"].as_i64().unwrap();
    assert!(handled < N, "the pipe was not behind: {pipe}");

    // the outputs not recalled are those of the new history, each once
    let want: Vec<i64> = (0..N).filter(|t| t % 2 == 1).collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let r = s.get("/acme/dst2?limit=1000").await;
        // created by the pipe's first output
        let out: Vec<Value> = match r.status().as_u16() {
            404 => Vec::new(),
            _ => r.json().await.unwrap(),
        };
        let recalled = recalled_ids(&out);
        let mut live: Vec<i64> = out
            .iter()
            .filter(|e| e["type"] == "copy" && !recalled.contains(e["id"].as_str().unwrap()))
            .map(|e| e["data"]["t"].as_i64().unwrap())
            .collect();
        live.sort();
        if live == want {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the outputs not recalled are {live:?}, not the new history's {want:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_stale_preview_is_refused_and_a_rejected_splice_changes_nothing() {
    let s = spawn_server().await;
    for t in [1, 2, 3] {
        s.post_ok("/acme/m", "reading", json!({ "t": t })).await;
    }
    let doubled = created(
        &s,
        "/acme/m/splices?type=reading",
        "export default (e) => ({data: {t: e.data.t * 2}})",
    )
    .await;
    assert_eq!(doubled["preview"]["events"]["changed"], 3);
    let rejected = created(&s, "/acme/m/splices", "export default (e) => [e, e]").await;
    assert_eq!(rejected["preview"]["events"]["added"], 3);
    let rid = rejected["id"].as_str().unwrap();
    let r = s
        .call(
            "DELETE",
            &format!("/acme/m/splices/{rid}"),
            &[],
            json!(null),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "rejected");
    let r = approve(&s, "/acme/m", rid).await;
    assert_error(r, 409, "rejected").await;
    // an append after the preview makes it stale
    s.post_ok("/acme/m", "reading", json!({ "t": 4 })).await;
    let id = doubled["id"].as_str().unwrap();
    let r = approve(&s, "/acme/m", id).await;
    assert_error(r, 409, "preview it again").await;
    assert_eq!(ts(&s.get_json("/acme/m", 200).await), [1, 2, 3, 4]);
    assert_eq!(s.get("/acme/m@1").await.status(), 404);
    let list = s.get_json("/acme/m/splices", 200).await;
    assert_eq!(list.as_array().unwrap().len(), 2);
    // a fresh preview is approved: the selector limited the map to the readings
    let again = created(
        &s,
        "/acme/m/splices",
        "export default (e) => ({data: {t: e.data.t * 2}})",
    )
    .await;
    let id = again["id"].as_str().unwrap();
    let r = approve(&s, "/acme/m", id).await;
    assert_eq!(r.status(), 200);
    assert_eq!(ts(&s.get_json("/acme/m", 200).await), [2, 4, 6, 8]);
    // the latest preview's history is kept for its approval; an older one is mapped
    // again, to the same history
    let first = created(
        &s,
        "/acme/m/splices",
        "export default (e) => e.data.t > 4 ? e : null",
    )
    .await;
    created(&s, "/acme/m/splices", "export default (e) => e").await;
    let r = approve(&s, "/acme/m", first["id"].as_str().unwrap()).await;
    assert_eq!(r.status(), 200);
    assert_eq!(ts(&s.get_json("/acme/m", 200).await), [6, 8]);
    // a kept preview is stale after an append as well
    let kept = created(&s, "/acme/m/splices", "export default (e) => e").await;
    s.post_ok("/acme/m", "reading", json!({ "t": 10 })).await;
    let r = approve(&s, "/acme/m", kept["id"].as_str().unwrap()).await;
    assert_error(r, 409, "preview it again").await;
    assert_eq!(ts(&s.get_json("/acme/m", 200).await), [6, 8, 10]);
}

#[tokio::test]
async fn bad_splices_are_refused_with_what_is_wrong() {
    let s = spawn_server().await;
    s.post_ok("/acme/m", "reading", json!({ "t": 1 })).await;
    s.post_ok("/acme/f('a')", "reading", json!({ "t": 1 }))
        .await;
    let r = splice(&s, "/acme/m/splices", "export default (e) => {").await;
    assert_error(r, 400, "syntax error").await;
    let r = splice(
        &s,
        "/acme/m/splices",
        "export default (e) => { throw new Error('no') }",
    )
    .await;
    let body = assert_error(r, 400, "failed on the event at index 0").await;
    assert_eq!(body["index"], 0);
    let r = splice(
        &s,
        "/acme/m/splices",
        "export default (e) => ({timestamp: -5})",
    )
    .await;
    assert_error(r, 400, "timestamp").await;
    // new data nests no deeper than any appended data may
    let deep = "export default (e) => { let o = 1; for (let i = 0; i < 100; i++) o = {a: o}; \
                return {data: o}; }";
    let r = splice(&s, "/acme/m/splices", deep).await;
    let body = assert_error(r, 400, "nests deeper than 64 levels").await;
    assert_eq!(body["index"], 0);
    // timestamps never decrease: refused at the preview, naming the event
    s.post_ok("/acme/m", "reading", json!({ "t": 2 })).await;
    let decreasing = "export default (e) => e.index === 1 ? {timestamp: 1} : e";
    let r = splice(&s, "/acme/m/splices", decreasing).await;
    assert_error(r, 409, "timestamp 1 is before").await;
    // at most ten pending splices per stream
    for _ in 0..10 {
        created(&s, "/acme/m/splices", "export default (e) => e").await;
    }
    let r = splice(&s, "/acme/m/splices", "export default (e) => e").await;
    assert_error(r, 409, "pending splices").await;
    let r = splice(&s, "/acme/f/splices", "export default (e) => e").await;
    assert_error(r, 400, "plain stream").await;
    let r = splice(&s, "/acme/m/splices?sub=('a')", "export default (e) => e").await;
    assert_error(r, 400, "sub= picks substreams of a factory").await;
    let r = splice(&s, "/acme/nope/splices", "export default (e) => e").await;
    assert_eq!(r.status(), 404);
    assert_error(s.get("/acme/m/splices/spl_nope").await, 404, "spl_nope").await;
    assert_eq!(
        s.get_json("/acme/m/splices", 200)
            .await
            .as_array()
            .unwrap()
            .len(),
        10
    );
}

/// Kill -9 while an approval is being applied, at several moments: after a restart
/// the stream has either its old history (and the splice is pending) or the new one
/// (and the splice is approved, the old history at `strm@1`), never a mix.
#[tokio::test]
async fn a_kill_during_the_approval_leaves_one_history() {
    use crate::common::{ChildServer, client, read_all};
    let dir = tempfile::tempdir().unwrap();
    let mut server = ChildServer::start(dir.path()).await;
    let http = client();
    const N: usize = 20_000;
    let mut seen = Vec::new();
    for (k, delay_ms) in [0u64, 30, 150, 250, 300, 350, 400, 450, 500, 3000]
        .into_iter()
        .enumerate()
    {
        let stream = format!("/acme/s{k}");
        // an alert for one event in a thousand, each of which the splice drops
        let alerting = format!(
            "(n = 0, e) => {{ if (e.data.n % 1000 === 1) \
             dispatch('alerts{k}', {{type: 'alert', data: {{n: e.data.n}}}}); return n + 1 }}"
        );
        let r = http
            .put(format!("{}{stream}.seen", server.base))
            .header("content-type", "application/javascript")
            .body(alerting)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        for part in 0..N / 2000 {
            let batch: Vec<Value> = (0..2000)
                .map(|i| json!({"type": "n", "data": {"n": part * 2000 + i}}))
                .collect();
            let r = http
                .post(format!("{}{stream}", server.base))
                .header("content-type", "application/vnd.eddy.events+json")
                .json(&batch)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
        }
        let r = http
            .get(format!(
                "{}{stream}.seen?min-index={}&wait=30000",
                server.base,
                N - 1
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["reducer-index"], (N - 1).to_string().as_str());
        // the state is published before its checkpoint stores the alerts: wait for
        // them, so that the approval has every alert to recall
        let alerts = format!("/acme/alerts{k}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while read_all(&http, &format!("{}{alerts}", server.base))
            .await
            .len()
            < N / 1000
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the alerts of {stream} were never stored"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let id = splice_at(
            &server.base,
            &stream,
            "export default (e) => e.data.n % 2 ? null : e",
        )
        .await;
        let approve = http
            .post(format!("{}{stream}/splices/{id}/approve", server.base))
            .send();
        let mut approving = tokio::spawn(approve);
        let mut answered =
            tokio::time::timeout(std::time::Duration::from_millis(delay_ms), &mut approving)
                .await
                .is_ok();
        // the last kill comes after the approval's answer, however slow the machine
        if k == 9 && !answered {
            let answer = (&mut approving).await.unwrap().unwrap();
            assert_eq!(answer.status(), 200, "the approval");
            answered = true;
        }
        server.signal("-KILL");
        let _ = server.child.wait().await;
        if !answered {
            let _ = approving.await;
        }
        server = ChildServer::start(dir.path()).await;

        let status = http
            .get(format!("{}{stream}/splices/{id}", server.base))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()["status"]
            .as_str()
            .unwrap()
            .to_owned();
        let now = read_all(&http, &format!("{}{stream}", server.base)).await;
        let old = http
            .get(format!("{}{stream}@1?limit=1", server.base))
            .send()
            .await
            .unwrap()
            .status();
        println!("killed {delay_ms} ms into the approval: {status}");
        seen.push(status.clone());
        // the reducer folds whichever history is there, from its first event
        let folded = http
            .get(format!(
                "{}{stream}.seen?min-index={}&wait=30000",
                server.base,
                now.len() - 1
            ))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap();
        assert_eq!(folded, now.len(), "kill after {delay_ms} ms: the fold");
        // the alerts, all stored before the approval, and their recalls
        let alerts = read_all(&http, &format!("{}{alerts}", server.base)).await;
        let count = |t: &str| alerts.iter().filter(|e| e["type"] == t).count();
        let recalled = recalled_ids(&alerts);
        match status.as_str() {
            "pending" => {
                assert_eq!(now.len(), N, "kill after {delay_ms} ms: old history whole");
                assert_eq!(old, 404, "kill after {delay_ms} ms: no replaced history");
                assert_eq!((count("alert"), count("eddy.recall")), (N / 1000, 0));
            }
            "approved" => {
                assert_eq!(
                    now.len(),
                    N / 2,
                    "kill after {delay_ms} ms: new history whole"
                );
                assert!(
                    now.iter()
                        .enumerate()
                        .all(|(i, e)| e["index"] == i && e["data"]["n"].as_u64().unwrap() % 2 == 0)
                );
                assert_eq!(old, 200);
                let replaced = read_all(&http, &format!("{}{stream}@1", server.base)).await;
                assert_eq!(replaced.len(), N);
                // every alert recalled, once, and none caused again
                assert_eq!(
                    (count("alert"), count("eddy.recall"), recalled.len()),
                    (N / 1000, N / 1000, N / 1000),
                    "kill after {delay_ms} ms: the recalls"
                );
            }
            other => panic!("splice {id} is {other} after a kill at {delay_ms} ms"),
        }
    }
    // killed before the approval was applied, and after
    assert_eq!(seen.first().map(String::as_str), Some("pending"));
    assert_eq!(seen.last().map(String::as_str), Some("approved"));
}

/// The status of [`send`]'s answer.
async fn status(
    s: &TestServer,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: Option<Value>,
) -> u16 {
    crate::access::send(s, method, path, auth, body)
        .await
        .status()
        .as_u16()
}

/// Only the stream's account (or the admin) may splice, read, approve or reject its
/// splices, or read its history as it was; another account's key, no credentials or
/// an HMAC token may not, and the same holds for `?at=` and byte uploads.
#[tokio::test]
async fn splices_time_travel_and_uploads_are_the_owners() {
    use crate::access::{ADMIN, account, hmac_token, secured, send};
    let s = secured().await;
    let acme = format!("Bearer {}", account(&s, "acme").await);
    let bob = format!("Bearer {}", account(&s, "bob").await);
    let r = send(
        &s,
        "PUT",
        "/acme/m/settings",
        Some(&acme),
        Some(json!({"public": {"read": true}})),
    )
    .await;
    assert_eq!(r.status(), 200);
    for t in [1, 2, 3] {
        let r = send(&s, "POST", "/acme/m", Some(&acme), Some(json!({ "t": t }))).await;
        assert_eq!(r.status(), 201);
    }
    let r = s
        .client
        .put(s.url("/acme/m.count"))
        .header("authorization", &acme)
        .header("content-type", "application/javascript")
        .body("(n = 0) => n + 1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let code = "export default (e) => e.data.t === 2 ? null : e";
    let post = |auth: Option<String>| {
        let mut r = s
            .client
            .post(s.url("/acme/m/splices"))
            .header("content-type", "application/javascript")
            .body(code);
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        r.send()
    };
    assert_eq!(post(None).await.unwrap().status(), 401);
    assert_eq!(post(Some(bob.clone())).await.unwrap().status(), 403);
    let r = post(Some(acme.clone())).await.unwrap();
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // public reads open the events, not the splices
    assert_eq!(status(&s, "GET", "/acme/m", None, None).await, 200);
    assert_eq!(status(&s, "GET", "/acme/m/splices", None, None).await, 401);
    assert_eq!(
        status(&s, "GET", "/acme/m/splices", Some(&bob), None).await,
        403
    );
    let approve = format!("/acme/m/splices/{id}/approve");
    assert_eq!(status(&s, "POST", &approve, Some(&bob), None).await, 403);
    assert_eq!(
        status(
            &s,
            "DELETE",
            &format!("/acme/m/splices/{id}"),
            Some(&bob),
            None
        )
        .await,
        403
    );
    // an HMAC token grants one substream of a factory, never a splice
    let r = send(
        &s,
        "PUT",
        "/acme/f/settings",
        Some(&acme),
        Some(json!({"factory": true})),
    )
    .await;
    let secret: Value = r.json().await.unwrap();
    let token = format!(
        "HMAC {}",
        hmac_token(secret["hmacSecret"].as_str().unwrap(), "/acme/f('a')")
    );
    assert_eq!(
        status(&s, "GET", "/acme/f('a')/splices", Some(&token), None).await,
        403
    );
    // the owner approves; the admin may read it
    assert_eq!(status(&s, "POST", &approve, Some(&acme), None).await, 200);
    let admin = format!("Bearer {ADMIN}");
    assert_eq!(
        status(
            &s,
            "GET",
            &format!("/acme/m/splices/{id}"),
            Some(&admin),
            None
        )
        .await,
        200
    );
    // the replaced history is the account's alone (a splice that removed data does
    // not leave it public) and takes no writes from anyone
    assert_eq!(status(&s, "GET", "/acme/m@1", None, None).await, 401);
    assert_eq!(status(&s, "GET", "/acme/m@1", Some(&bob), None).await, 403);
    assert_eq!(status(&s, "GET", "/acme/m@1", Some(&acme), None).await, 200);
    assert_eq!(
        status(&s, "POST", "/acme/m@1", Some(&acme), Some(json!({"t": 9}))).await,
        405
    );
    // the owner alone may delete it, with its events
    assert_eq!(status(&s, "DELETE", "/acme/m@1", None, None).await, 401);
    assert_eq!(
        status(&s, "DELETE", "/acme/m@1", Some(&bob), None).await,
        403
    );
    let r = send(&s, "DELETE", "/acme/m@1", Some(&acme), None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"deleted": "acme/m@1", "events": 3})
    );
    assert_eq!(status(&s, "GET", "/acme/m@1", Some(&acme), None).await, 404);
    assert_eq!(
        status(&s, "DELETE", "/acme/m@1", Some(&acme), None).await,
        404
    );
    // the stream itself is not deleted this way, and keeps its new history
    assert_eq!(
        status(&s, "DELETE", "/acme/m", Some(&acme), None).await,
        405
    );
    let r = send(&s, "GET", "/acme/m", Some(&acme), None).await;
    assert_eq!(
        r.json::<Value>().await.unwrap().as_array().unwrap().len(),
        2
    );
    let log = send(&s, "GET", "/eddy/events(acme)", Some(&acme), None).await;
    let log: Value = log.json().await.unwrap();
    assert!(
        log.as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "stream-deleted"
                && e["data"] == json!({"stream": "acme/m@1", "events": 3})),
        "{log}"
    );
    // time travel: the account's, or anyone's where states are public
    assert_eq!(
        status(&s, "GET", "/acme/m.count?at=0", Some(&bob), None).await,
        200
    );
    let r = send(
        &s,
        "PUT",
        "/acme/m/settings",
        Some(&acme),
        Some(json!({"public": {"read": false}})),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        status(&s, "GET", "/acme/m.count?at=0", Some(&bob), None).await,
        403
    );
    assert_eq!(
        status(&s, "GET", "/acme/m.count?at=0", Some(&acme), None).await,
        200
    );
    // a byte upload to another account's stream is refused before any of it is stored
    let r = s
        .client
        .post(s.url("/acme/log?chunks=true"))
        .header("authorization", &bob)
        .body("secret lines\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(status(&s, "GET", "/acme/log", Some(&acme), None).await, 404);
}

/// Appends that arrive while an approval is applied are kept: after the spliced
/// history, in order.
#[tokio::test]
async fn appends_during_an_approval_land_after_the_spliced_history() {
    // a time limit no busy machine reaches with the slow map function below
    let s = spawn_server_with(|c| c.reducer_time_ms = 5000).await;
    let batch: Vec<Value> = (0..4000)
        .map(|n| json!({"type": "n", "data": {"n": n}}))
        .collect();
    let r = s
        .client
        .post(s.url("/acme/busy"))
        .header("content-type", "application/vnd.eddy.events+json")
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // a map function slow enough that the approval takes a while
    let slow = "export default (e) => { let x = 0; for (let i = 0; i < 40000; i++) x += i; \
                return e.data.n % 2 ? null : e }";
    let id = created(&s, "/acme/busy/splices", slow).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // a later preview takes the place of its kept history, so the approval maps the
    // stream again
    created(&s, "/acme/busy/splices", "export default (e) => e").await;
    let approve = s
        .client
        .post(s.url(&format!("/acme/busy/splices/{id}/approve")))
        .send();
    let approving = tokio::spawn(approve);
    // the approval reads the stream at once, then maps it for seconds: appends from
    // here on come during it
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let mut late = Vec::new();
    while !approving.is_finished() {
        let k = late.len();
        let r = s.post("/acme/busy", "late", json!({ "late": k })).await;
        assert_eq!(r.status(), 201);
        late.push(k);
    }
    let status = approving.await.unwrap().unwrap().status();
    let all = crate::common::read_all(&s.client, &s.url("/acme/busy")).await;
    let lates: Vec<u64> = all
        .iter()
        .filter(|e| e["type"] == "late")
        .map(|e| e["data"]["late"].as_u64().unwrap())
        .collect();
    assert!(
        lates == (0..late.len() as u64).collect::<Vec<_>>(),
        "every late append, in order: {} of {}",
        lates.len(),
        late.len()
    );
    let first_late = all
        .iter()
        .position(|e| e["type"] == "late")
        .unwrap_or(all.len());
    assert!(
        all[first_late..].iter().all(|e| e["type"] == "late"),
        "the late ones come last"
    );
    // the approval read the stream before the first late append (1.5 s in), and
    // maps it for far longer than that
    assert_eq!(status, 200);
    assert!(late.len() > 1, "{} appends during the approval", late.len());
    assert_eq!(
        first_late, 2000,
        "the spliced history, then the late appends"
    );
}

#[tokio::test]
async fn an_accounts_approvals_write_at_most_its_budget_and_others_go_on() {
    let s = spawn_server_with(|c| c.splice_write_budget = 10).await;
    post_readings(&s, "/acme/readings", 6).await;
    post_readings(&s, "/bob/readings", 6).await;
    let keep = "(e) => e";

    // six events of acme's ten
    let first = created(&s, "/acme/readings/splices", keep).await;
    let id = first["id"].as_str().unwrap();
    let r = approve(&s, "/acme/readings", id).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    // six more would pass ten: refused for now, with how long to wait, and nothing
    // changes
    let second = created(
        &s,
        "/acme/readings/splices",
        "(e) => e.data.t < 5 ? e : null",
    )
    .await;
    let id = second["id"].as_str().unwrap();
    let r = approve(&s, "/acme/readings", id).await;
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((590..=601).contains(&retry), "Retry-After {retry}");
    let e = assert_error(r, 429, "may write 10 events in ten minutes").await;
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains("would write 5 (its new history and recalls)"),
        "{e}"
    );
    assert_eq!(e["retryAfter"], json!(retry));
    let splice = s
        .get_json(&format!("/acme/readings/splices/{id}"), 200)
        .await;
    assert_eq!(splice["status"], "pending", "{splice}");
    let events = s.get_json("/acme/readings", 200).await;
    assert_eq!(ts(&events), [0, 1, 2, 3, 4, 5]);

    // another account's budget is its own
    let other = created(&s, "/bob/readings/splices", keep).await;
    let r = approve(&s, "/bob/readings", other["id"].as_str().unwrap()).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accounts_previews_run_one_at_a_time_and_others_go_on() {
    let s = spawn_server_with(|c| c.reducer_time_ms = 5000).await;
    post_readings(&s, "/acme/slow", 10).await;
    post_readings(&s, "/acme/quick", 3).await;
    post_readings(&s, "/bob/quick", 3).await;
    // about 150-600 ms an event (the sandbox's clock stands still), seconds in all
    let slow = "(e) => { let x = 0; for (let i = 0; i < 5000000; i++) x += i; return e; }";
    let started = std::time::Instant::now();
    let finish = |path: &'static str, code: &'static str| {
        let s = &s;
        async move {
            let r = splice(s, path, code).await;
            assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
            started.elapsed()
        }
    };
    let first = finish("/acme/slow/splices", slow);
    let later = async {
        // once the slow preview has surely begun
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        tokio::join!(
            finish("/acme/quick/splices", "(e) => e"),
            finish("/bob/quick/splices", "(e) => e")
        )
    };
    let (slow_done, (acme_done, bob_done)) = tokio::join!(first, later);
    assert!(
        acme_done > slow_done,
        "acme's second preview waited for its first: {acme_done:?} against {slow_done:?}"
    );
    assert!(
        bob_done < slow_done,
        "bob's preview did not wait for acme's: {bob_done:?} against {slow_done:?}"
    );
}
