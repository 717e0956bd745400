//! Webhooks (API §5) against a real receiver on a local port: Standard Webhooks
//! signatures checked with the secret, retries with `Retry-After`, order, a receiver
//! down across a server restart, pause and resume, and the SSRF guard.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use base64::Engine as _;
use hmac::{KeyInit, Mac};
use serde_json::{Value, json};

use crate::common::{TestServer, assert_error, free_port, spawn_server, spawn_server_with};

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Delivery {
    id: String,
    body: Value,
    status: u16,
    at: Instant,
}

/// A `Retry-After` to answer with.
#[derive(Debug, Clone, Copy)]
enum RetryAfter {
    Seconds(u64),
    /// An HTTP-date this far ahead of the moment of the answer.
    DateIn(Duration),
}

#[derive(Default)]
struct Script {
    /// Answers to give, in order: (status, Retry-After value); 200 once empty.
    answers: VecDeque<(u16, Option<RetryAfter>)>,
    /// Answer every request with 500.
    failing: bool,
    got: Vec<Delivery>,
}

/// A webhook receiver that checks every signature with the secret it is given.
#[derive(Clone)]
struct Receiver {
    script: Arc<Mutex<Script>>,
    secret: Arc<Mutex<Vec<u8>>>,
    url: String,
}

impl Receiver {
    async fn start() -> Self {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(l).await
    }

    async fn on_port(port: u16) -> Self {
        let l = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        Self::serve(l).await
    }

    async fn serve(listener: tokio::net::TcpListener) -> Self {
        let r = Receiver {
            script: Arc::default(),
            secret: Arc::default(),
            url: format!("http://{}/hook", listener.local_addr().unwrap()),
        };
        let handler = r.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: bytes::Bytes| {
                let r = handler.clone();
                async move { r.receive(&headers, &body) }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        r
    }

    fn set_secret(&self, whsec: &str) {
        let key = base64::engine::general_purpose::STANDARD
            .decode(whsec.strip_prefix("whsec_").expect("whsec_ prefix"))
            .expect("base64 secret");
        assert!(key.len() >= 24, "secret of {} bytes", key.len());
        *self.secret.lock().unwrap() = key;
    }

    fn receive(&self, headers: &HeaderMap, body: &[u8]) -> axum::response::Response {
        let h = |n: &str| headers.get(n).expect(n).to_str().unwrap().to_owned();
        let (id, ts, sig) = (
            h("webhook-id"),
            h("webhook-timestamp"),
            h("webhook-signature"),
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!(
            (ts.parse::<i64>().unwrap() - now).abs() < 60,
            "timestamp {ts}"
        );
        let key = self.secret.lock().unwrap().clone();
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
        mac.update(format!("{id}.{ts}.").as_bytes());
        mac.update(body);
        let expected = format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
        );
        assert_eq!(sig, expected, "signature of {id}");
        assert_eq!(h("content-type"), "application/json");
        let mut script = self.script.lock().unwrap();
        let (status, retry_after) = if script.failing {
            (500, None)
        } else {
            script.answers.pop_front().unwrap_or((200, None))
        };
        script.got.push(Delivery {
            id,
            body: serde_json::from_slice(body).expect("JSON body"),
            status,
            at: Instant::now(),
        });
        let mut resp = StatusCode::from_u16(status).unwrap().into_response();
        let value = match retry_after {
            Some(RetryAfter::Seconds(s)) => Some(s.to_string()),
            Some(RetryAfter::DateIn(d)) => {
                Some(httpdate::fmt_http_date(std::time::SystemTime::now() + d))
            }
            None => None,
        };
        if let Some(v) = value {
            resp.headers_mut().insert("retry-after", v.parse().unwrap());
        }
        resp
    }

    fn got(&self) -> Vec<Delivery> {
        self.script.lock().unwrap().got.clone()
    }

    /// Waits (up to 20 s) until `n` distinct messages were accepted; returns their
    /// bodies in the order first accepted.
    async fn accepted(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut ids: Vec<String> = Vec::new();
            let mut bodies = Vec::new();
            for d in self.got().into_iter().filter(|d| d.status == 200) {
                if !ids.contains(&d.id) {
                    ids.push(d.id);
                    bodies.push(d.body);
                }
            }
            if bodies.len() >= n {
                return bodies;
            }
            assert!(
                Instant::now() < deadline,
                "only {} of {n} delivered: {bodies:?}",
                bodies.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn fast_retries(c: &mut eddy_server::Config) {
    c.allow_private_webhooks = true;
    c.webhook_retry_initial_ms = 50;
    c.webhook_retry_max_ms = 400;
    c.webhook_timeout_ms = 2_000;
}

async fn create(s: &TestServer, stream: &str, body: Value) -> (String, String) {
    let r = s
        .client
        .post(s.url(&format!("{stream}/webhooks")))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    let v: Value = r.json().await.unwrap();
    (
        v["id"].as_str().unwrap().to_owned(),
        v["secret"].as_str().unwrap().to_owned(),
    )
}

fn indexes(bodies: &[Value]) -> Vec<u64> {
    bodies
        .iter()
        .map(|b| b["index"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn signed_deliveries_in_order_through_failures_and_retry_after() {
    let s = spawn_server_with(fast_retries).await;
    let rx = Receiver::start().await;
    rx.script.lock().unwrap().answers = [(500, None), (503, Some(RetryAfter::Seconds(1)))].into();
    let (id, secret) = create(&s, "/acme/s", json!({"url": rx.url, "selector": "type=a"})).await;
    assert!(secret.starts_with("whsec_"), "{secret}");
    rx.set_secret(&secret);
    for ty in ["a", "b", "a", "a", "b"] {
        s.post_ok("/acme/s", ty, json!({"t": ty})).await;
    }
    let bodies = rx.accepted(3).await;
    assert_eq!(indexes(&bodies), [0, 2, 3]);
    assert_eq!(
        bodies[0],
        json!({"stream": "acme/s", "index": 0, "type": "a"})
    );
    let got = rx.got();
    // the same message three times: webhook-id is stable across retries
    assert_eq!(
        (got[0].status, got[1].status, got[2].status),
        (500, 503, 200)
    );
    assert!(got[0].id == got[1].id && got[1].id == got[2].id, "{got:?}");
    assert!(
        got[2].at - got[1].at >= Duration::from_millis(900),
        "Retry-After: 1 was not honoured: {:?}",
        got[2].at - got[1].at
    );
    assert!(
        got[1].at - got[0].at < Duration::from_secs(5),
        "first retry within 5 s"
    );
    let listed = s.get_json("/acme/s/webhooks", 200).await;
    assert_eq!(listed[0]["id"], id.as_str());
    assert_eq!(listed[0]["status"], "active");
    assert_eq!(listed[0]["selector"], "type=a");
    assert!(
        listed[0].get("secret").is_none(),
        "the secret is shown once"
    );
}

#[tokio::test]
async fn retry_after_as_an_http_date_is_honoured() {
    let s = spawn_server_with(fast_retries).await;
    let rx = Receiver::start().await;
    // the date has whole seconds: 2 s ahead is 1 to 2 s after the answer
    rx.script.lock().unwrap().answers =
        [(503, Some(RetryAfter::DateIn(Duration::from_secs(2))))].into();
    let (_, secret) = create(&s, "/acme/s", json!({"url": rx.url})).await;
    rx.set_secret(&secret);
    s.post_ok("/acme/s", "a", json!(1)).await;
    assert_eq!(indexes(&rx.accepted(1).await), [0]);
    let got = rx.got();
    assert_eq!((got[0].status, got[1].status), (503, 200));
    let waited = got[1].at - got[0].at;
    // the backoff alone would retry after 25-50 ms
    assert!(
        waited >= Duration::from_millis(900),
        "Retry-After as an HTTP-date was not honoured: retried after {waited:?}"
    );
}

#[tokio::test]
async fn a_receiver_down_across_a_restart_still_gets_everything() {
    let mut s = spawn_server_with(fast_retries).await;
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let (_, secret) = create(&s, "/acme/orders", json!({"url": url, "data": true})).await;
    for n in 0..3 {
        s.post_ok(
            &format!("/acme/orders('c{n}')"),
            "placed",
            json!({ "n": n }),
        )
        .await;
    }
    s.restart().await;
    for n in 3..5 {
        s.post_ok(
            &format!("/acme/orders('c{n}')"),
            "placed",
            json!({ "n": n }),
        )
        .await;
    }
    let rx = Receiver::on_port(port).await;
    rx.set_secret(&secret);
    let bodies = rx.accepted(5).await;
    let ns: Vec<Value> = bodies.iter().map(|b| b["data"]["n"].clone()).collect();
    assert_eq!(ns, [json!(0), json!(1), json!(2), json!(3), json!(4)]);
    assert_eq!(bodies[4]["stream"], "acme/orders('c4')");
    assert!(bodies[4]["id"].is_string() && bodies[4]["timestamp"].is_i64());
    // the cursor saved at a graceful stop: nothing is delivered twice after it
    s.restart().await;
    s.post_ok("/acme/orders('c5')", "placed", json!({"n": 5}))
        .await;
    assert_eq!(rx.accepted(6).await[5]["data"]["n"], 5);
    let accepted = rx.got().into_iter().filter(|d| d.status == 200).count();
    assert_eq!(accepted, 6, "{:?}", rx.got());
    // metrics count the attempts, and the failures while the receiver was down
    let metrics = s.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("eddy_webhook_attempts_total"), "{metrics}");
    assert!(
        metrics.contains("eddy_webhook_delivery_lag_seconds"),
        "{metrics}"
    );
}

#[tokio::test]
async fn pauses_after_the_retry_budget_and_resumes_where_it_stopped() {
    let s = spawn_server_with(|c| {
        fast_retries(c);
        c.webhook_retry_budget_ms = 300;
    })
    .await;
    let rx = Receiver::start().await;
    rx.script.lock().unwrap().failing = true;
    let (id, secret) = create(&s, "/acme/s", json!({"url": rx.url})).await;
    rx.set_secret(&secret);
    s.post_ok("/acme/s", "a", json!(1)).await;
    s.post_ok("/acme/s", "a", json!(2)).await;
    let hook = format!("/acme/s/webhooks/{id}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        let v = s.get_json(&hook, 200).await;
        if v["status"] == "paused" {
            break v;
        }
        assert!(Instant::now() < deadline, "not paused: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let reason = status["pausedReason"].as_str().unwrap();
    assert!(reason.contains("500"), "{reason}");
    // the entry commits with the pause, and reads show it once that commit is flushed
    // (the status may show the pause a moment earlier)
    loop {
        let logs = s.get_json("/acme/s/logs", 200).await;
        let logged = logs
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "error" && e["data"]["webhook"] == id.as_str());
        if logged {
            break;
        }
        assert!(Instant::now() < deadline, "no log entry: {logs}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // at least the first attempt failed; how many retries fit in the 300 ms budget
    // depends on how busy the machine is
    let failed = rx.got().len();
    assert!(failed >= 1, "{failed} attempts");
    // the paused status counts them, also after a restart
    assert_eq!(status["failures"], failed, "{status}");
    assert_eq!(s.get_json(&hook, 200).await["failures"], failed);
    let mut s = s;
    s.restart().await;
    let after = s.get_json(&hook, 200).await;
    assert_eq!(
        (after["status"].as_str(), after["failures"].as_u64()),
        (Some("paused"), Some(failed as u64)),
        "{after}"
    );
    rx.script.lock().unwrap().failing = false;
    let r = s.send("POST", &format!("{hook}/resume")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(indexes(&rx.accepted(2).await), [0, 1]);
    let active = s.get_json(&hook, 200).await;
    assert_eq!(
        (active["status"].as_str(), active["failures"].as_u64()),
        (Some("active"), Some(0)),
        "{active}"
    );
}

#[tokio::test]
async fn bad_webhooks_are_refused_and_private_targets_need_the_flag() {
    let s = spawn_server().await;
    s.post_ok("/acme/s", "a", json!(1)).await;
    let post = |body: Value| s.client.post(s.url("/acme/s/webhooks")).json(&body).send();
    for (body, needle) in [
        (
            json!({"url": "http://127.0.0.1:9/x"}),
            "--allow-private-targets",
        ),
        (json!({"url": "http://localhost:9/x"}), "url"),
        (json!({"url": "http://[::1]:9/x"}), "url"),
        (json!({"url": "http://169.254.169.254/latest"}), "url"),
        (json!({"url": "ftp://example.com/"}), "url"),
        (json!({}), "url"),
        (json!({"url": 7}), "url"),
        (
            json!({"url": "https://example.com/", "secret": "nope"}),
            "secret",
        ),
        (
            json!({"url": "https://example.com/", "selector": "type="}),
            "type",
        ),
        (
            json!({"url": "https://example.com/", "selector": "sub=('a')"}),
            "sub=",
        ),
        (
            json!({"url": "https://example.com/", "selector": "limit=3"}),
            "limit",
        ),
        (
            json!({"url": "https://example.com/", "data": "yes"}),
            "data",
        ),
        (
            json!({"url": "https://example.com/", "colour": 1}),
            "colour",
        ),
    ] {
        assert_error(post(body.clone()).await.unwrap(), 400, needle).await;
    }
    assert_eq!(s.get_json("/acme/s/webhooks", 200).await, json!([]));
    // a public target is accepted (it is never reached in this test)
    let (id, _) = create(
        &s,
        "/acme/s",
        json!({"url": "https://example.com/hook", "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}),
    )
    .await;
    let hook = format!("/acme/s/webhooks/{id}");
    assert_eq!(
        s.get_json(&hook, 200).await["url"],
        "https://example.com/hook"
    );
    assert_error(s.get("/acme/s/webhooks/wh_nope").await, 404, "wh_nope").await;
    assert_error(s.get(&format!("/acme/other/webhooks/{id}")).await, 404, &id).await;
    let r = s.send("DELETE", &hook).await;
    assert_eq!(r.status(), 204);
    assert_error(s.get(&hook).await, 404, &id).await;
}

/// Waits (up to 20 s) until `n` requests were accepted, counting repeats; answers them.
async fn delivered(rx: &Receiver, n: usize) -> Vec<Delivery> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ok: Vec<Delivery> = rx.got().into_iter().filter(|d| d.status == 200).collect();
        if ok.len() >= n {
            return ok;
        }
        assert!(Instant::now() < deadline, "{} of {n} deliveries", ok.len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_replay_sends_an_index_range_again_in_order_with_the_same_ids() {
    let s = spawn_server_with(fast_retries).await;
    let rx = Receiver::start().await;
    let (id, secret) = create(&s, "/acme/s", json!({"url": rx.url})).await;
    rx.set_secret(&secret);
    for n in 0..5 {
        s.post_ok("/acme/s", "a", json!({"n": n})).await;
    }
    rx.accepted(5).await;
    let live = delivered(&rx, 5).await;
    let replay = |query: &str| {
        s.client
            .post(s.url(&format!("/acme/s/webhooks/{id}/replay?{query}")))
            .send()
    };
    let r = replay("from=1&to=3").await.unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"id": id, "from": 1, "to": 3})
    );
    let all = delivered(&rx, 8).await;
    let again = &all[5..8];
    let bodies: Vec<Value> = again.iter().map(|d| d.body.clone()).collect();
    assert_eq!(indexes(&bodies), [1, 2, 3], "in order");
    // each with the webhook-id of its first delivery, so the receiver can tell
    for (d, first) in again.iter().zip(&live[1..4]) {
        assert_eq!((&d.id, &d.body), (&first.id, &first.body));
    }
    // the live cursor was kept: the next event is delivered once, after the replay
    s.post_ok("/acme/s", "a", json!({"n": 5})).await;
    let all = delivered(&rx, 9).await;
    assert_eq!(all[8].body["index"], 5);
    assert_eq!(all.iter().filter(|d| d.body["index"] == 5).count(), 1);
    // the account's log records the replay
    let log = s.get_json("/eddy/events(acme)", 200).await;
    let recorded = log
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "webhook-replayed")
        .expect("a webhook-replayed account event");
    assert_eq!(
        recorded["data"],
        json!({"stream": "acme/s", "id": id, "from": 1, "to": 3})
    );

    // an open range replays to the end
    let r = replay("from=4").await.unwrap();
    assert_eq!(r.status(), 202);
    let all = delivered(&rx, 11).await;
    assert_eq!(
        indexes(&[all[9].body.clone(), all[10].body.clone()]),
        [4, 5]
    );

    // refusals name what is wrong, and record nothing
    assert_error(replay("from=3&to=1").await.unwrap(), 400, "to=1").await;
    assert_error(replay("to=3").await.unwrap(), 400, "from=").await;
    assert_error(replay("from=x").await.unwrap(), 400, "from").await;
    let r = s
        .send("POST", "/acme/s/webhooks/wh_nope/replay?from=0")
        .await;
    assert_error(r, 404, "wh_nope").await;
    let r = s
        .send("GET", &format!("/acme/s/webhooks/{id}/replay"))
        .await;
    assert_error(r, 405, "POST").await;
    // a receiver that fails keeps replays under way: two at a time, then a 409
    rx.script.lock().unwrap().failing = true;
    for _ in 0..2 {
        assert_eq!(replay("from=0").await.unwrap().status(), 202);
    }
    assert_error(replay("from=0").await.unwrap(), 409, "under way").await;
    let log = s.get_json("/eddy/events(acme)", 200).await;
    let replays = log
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "webhook-replayed")
        .count();
    assert_eq!(replays, 4, "refused replays are not recorded");
}

#[tokio::test]
async fn a_splice_is_delivered_as_its_own_type_then_the_new_history_from_index_0() {
    let s = spawn_server_with(fast_retries).await;
    let rx = Receiver::start().await;
    let (_, secret) = create(&s, "/acme/s", json!({"url": rx.url, "data": true})).await;
    rx.set_secret(&secret);
    for n in 0..4 {
        s.post_ok("/acme/s", "a", json!({"n": n})).await;
    }
    rx.accepted(4).await;
    let r = crate::splices::splice(
        &s,
        "/acme/s/splices",
        "export default (e) => e.data.n % 2 ? e : null",
    )
    .await;
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = s
        .call(
            "POST",
            &format!("/acme/s/splices/{id}/approve"),
            &[],
            json!(null),
        )
        .await;
    assert_eq!(r.status(), 200);
    let all = rx.accepted(7).await;
    assert_eq!(all[4]["type"], "eddy.splice");
    assert_eq!(all[4]["data"], json!({"stream": "acme/s"}));
    assert_eq!(indexes(&all[5..7]), [0, 1]);
    let ns: Vec<&Value> = all[5..7].iter().map(|b| &b["data"]["n"]).collect();
    assert_eq!(ns, [&json!(1), &json!(3)]);
}

#[tokio::test]
async fn a_webhook_paused_by_request_keeps_its_place_across_a_restart_and_resumes_there() {
    let s = spawn_server_with(fast_retries).await;
    let rx = Receiver::start().await;
    let (id, secret) = create(&s, "/acme/s", json!({"url": rx.url})).await;
    rx.set_secret(&secret);
    s.post_ok("/acme/s", "a", json!(0)).await;
    assert_eq!(indexes(&rx.accepted(1).await), [0]);
    let hook = format!("/acme/s/webhooks/{id}");
    let pause = |s: &TestServer| {
        let url = s.url(&format!("{hook}/pause"));
        let client = s.client.clone();
        async move { client.post(url).send().await.unwrap() }
    };
    let r = pause(&s).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (v["status"].as_str(), v["pausedReason"].as_str()),
        (Some("paused"), Some("paused by request")),
        "{v}"
    );
    // pausing again changes nothing
    assert_eq!(pause(&s).await.status(), 200);
    for n in 1..4 {
        s.post_ok("/acme/s", "a", json!(n)).await;
    }
    // the log says who paused it (an info entry, not an error)
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let logs = s.get_json("/acme/s/logs", 200).await;
        if logs.as_array().unwrap().iter().any(|e| {
            e["type"] == "info"
                && e["data"]["webhook"] == id.as_str()
                && e["data"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("paused by request"))
        }) {
            break;
        }
        assert!(Instant::now() < deadline, "no log entry: {logs}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut s = s;
    s.restart().await;
    assert_eq!(s.get_json(&hook, 200).await["status"], "paused");
    // nothing was sent while paused: the receiver still has the one event
    assert_eq!(rx.got().len(), 1);
    let r = s.send("POST", &format!("{hook}/resume")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(indexes(&rx.accepted(4).await), [0, 1, 2, 3]);

    // hostile and wrong requests
    let r = s.send("GET", &format!("{hook}/pause")).await;
    assert_error(r, 405, "POST").await;
    let r = s.send("POST", "/acme/s/webhooks/nope/pause").await;
    assert_error(r, 404, "nope").await;
    let r = s.send("POST", &format!("{hook}/pause?now=1")).await;
    assert_error(r, 400, "now").await;
}

#[tokio::test]
async fn a_stream_has_at_most_twenty_webhooks() {
    let s = spawn_server().await;
    s.post_ok("/acme/t", "a", json!(1)).await;
    // public targets, never reached: the webhooks start at the live end
    let body = json!({"url": "https://example.com/hook"});
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(create(&s, "/acme/t", body.clone()).await.0);
    }
    let post = || s.client.post(s.url("/acme/t/webhooks")).json(&body).send();
    assert_error(post().await.unwrap(), 409, "the most a stream may have").await;
    assert_eq!(
        s.get_json("/acme/t/webhooks", 200)
            .await
            .as_array()
            .unwrap()
            .len(),
        20
    );
    // another stream has its own twenty; a deleted one makes room
    create(&s, "/acme/u", body.clone()).await;
    let r = s
        .client
        .delete(s.url(&format!("/acme/t/webhooks/{}", ids[0])))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    create(&s, "/acme/t", body.clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_aimed_back_at_eddy_stops_after_ten_steps() {
    let s = spawn_server_with(fast_retries).await;
    s.post_ok("/acme/w", "t", json!({"n": 0})).await;
    // each delivery appends to the stream it follows: a loop through HTTP
    let url = format!("{}/acme/w?event-type=t", s.base);
    let body = json!({"url": url, "selector": "from=0", "data": true});
    let (id, _) = create(&s, "/acme/w", body).await;
    // the eleventh delivery is refused with 400 and retried, never appended
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let w = s.get_json(&format!("/acme/w/webhooks/{id}"), 200).await;
        if w["lastError"].as_str().is_some_and(|e| e.contains("400")) {
            break;
        }
        assert!(Instant::now() < deadline, "no 400 yet: {w}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let events = s.get_json("/acme/w", 200).await;
    let hops: Vec<u64> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["origin"]["hops"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(hops, (0..=10).collect::<Vec<u64>>(), "{events}");

    // a client may say so itself; a bad value is named
    let r = s
        .client
        .post(s.url("/acme/x"))
        .header("event-type", "t")
        .header("eddy-hops", "11")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_error(r, 400, "more than a chain may take").await;
    let r = s
        .client
        .post(s.url("/acme/x"))
        .header("event-type", "t")
        .header("eddy-hops", "many")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_error(r, 400, "Eddy-Hops").await;
    let r = s
        .client
        .delete(s.url(&format!("/acme/w/webhooks/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
}
