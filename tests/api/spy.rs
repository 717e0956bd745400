//! The firehose (API §13): `GET /eddy/spy` follows every stream of every account, as
//! Server-Sent Events (read by a real EventSource parser), NDJSON, or plain text lines
//! in colour; selectors apply, internal log streams do not show, a cursor resumes
//! across accounts, and only the admin may spy once access control is on.

use std::time::Duration;

use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde_json::{Value, json};

use crate::access::{ADMIN, account, secured};
use crate::common::{TestServer, assert_error, spawn_server};
use crate::reducers::deploy;

/// The lines of a streamed response, as they come.
struct Lines {
    body: std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buf: Vec<u8>,
}

impl Lines {
    async fn open(
        s: &TestServer,
        path: &str,
        accept: Option<&str>,
    ) -> (reqwest::header::HeaderMap, Self) {
        let mut req = s.client.get(s.url(path));
        if let Some(a) = accept {
            req = req.header("accept", a);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 200, "GET {path}");
        let headers = r.headers().clone();
        let body = Box::pin(r.bytes_stream());
        (
            headers,
            Self {
                body,
                buf: Vec::new(),
            },
        )
    }

    /// The next line, failing the test after 10 s.
    async fn next(&mut self) -> String {
        loop {
            if let Some(at) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=at).collect();
                return String::from_utf8(line[..line.len() - 1].to_vec()).unwrap();
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.body.next())
                .await
                .expect("a line within 10 s")
                .expect("the response is still open")
                .unwrap();
            self.buf.extend_from_slice(&chunk);
        }
    }
}

/// Appends to streams of two accounts and to a factory's substream. The first time,
/// each creation also appends an account event (`eddy/events(acct)`), which the
/// firehose shows too: the tests make the streams first, to see only their events.
async fn traffic(s: &TestServer) {
    s.post_ok("/acme/orders", "order", json!({"n": 1})).await;
    s.post_ok("/bob/clicks", "click", json!({"x": 2})).await;
    s.post_ok("/acme/carts('c1')", "add", json!({"sku": "a"}))
        .await;
}

#[tokio::test]
async fn every_account_s_streams_arrive_as_ndjson_in_append_order() {
    let s = spawn_server().await;
    let logging = "(n = 0, e) => { console.log('saw', e.type); return n + 1; }";
    assert_eq!(
        deploy(&s, "/acme/orders.count", logging).await.status(),
        201
    );
    traffic(&s).await;
    let (headers, mut lines) = Lines::open(&s, "/eddy/spy", None).await;
    assert_eq!(headers["content-type"], "application/x-ndjson");
    traffic(&s).await;
    let got: Vec<Value> = [lines.next().await, lines.next().await, lines.next().await]
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // from the live end: the events before the request are not replayed
    let streams: Vec<&str> = got.iter().map(|e| e["stream"].as_str().unwrap()).collect();
    assert_eq!(streams, ["acme/orders", "bob/clicks", "acme/carts('c1')"]);
    assert_eq!(got[1]["data"], json!({"x": 2}));
    assert_eq!(got[2]["type"], "add");
    assert_eq!(got[0]["index"], 1);

    // the reducer's log stream is internal: once its two entries are stored, the
    // next line is what comes after them
    let logged = async {
        loop {
            let logs = s.get_json("/acme/orders/logs", 200).await;
            if logs.as_array().is_some_and(|l| l.len() >= 2) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), logged)
        .await
        .expect("the reducer logs both orders");
    // a new stream's account event shows, then its event
    s.post_ok("/bob/new", "first", json!(1)).await;
    let created: Value = serde_json::from_str(&lines.next().await).unwrap();
    assert_eq!(
        (&created["stream"], &created["type"]),
        (&json!("eddy/events(bob)"), &json!("stream-created"))
    );
    let first: Value = serde_json::from_str(&lines.next().await).unwrap();
    assert_eq!(first["stream"], "bob/new");
}

#[tokio::test]
async fn sse_spies_through_selectors_and_resumes_across_accounts() {
    let s = spawn_server().await;
    traffic(&s).await;
    let open = |last: Option<String>| {
        let mut req = s
            .client
            .get(s.url("/eddy/spy?type=!add&data=true"))
            .header("accept", "text/event-stream");
        if let Some(id) = last {
            req = req.header("last-event-id", id);
        }
        req.send()
    };
    let r = open(None).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let mut events = r.bytes_stream().eventsource();
    // (the streams exist before the subscription: their creations are not in it)
    traffic(&s).await;
    s.post_ok("/bob/clicks", "click", json!({"x": 3})).await;
    let mut got = Vec::new();
    for _ in 0..3 {
        let e = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("an event within 10 s")
            .unwrap()
            .unwrap();
        got.push(e);
    }
    let streams: Vec<Value> = got
        .iter()
        .map(|e| serde_json::from_str::<Value>(&e.data).unwrap()["stream"].clone())
        .collect();
    // the substream's "add" is filtered out by the selector
    assert_eq!(
        streams,
        [
            json!("acme/orders"),
            json!("bob/clicks"),
            json!("bob/clicks")
        ]
    );
    assert_eq!(got[0].event, "order");
    // ids are global positions: resuming after the first replays the rest from storage
    let r = open(Some(got[0].id.clone())).await.unwrap();
    let mut again = r.bytes_stream().eventsource();
    for want in &got[1..] {
        let e = tokio::time::timeout(Duration::from_secs(10), again.next())
            .await
            .expect("a replayed event within 10 s")
            .unwrap()
            .unwrap();
        assert_eq!((&e.id, &e.data), (&want.id, &want.data));
    }
}

#[tokio::test]
async fn text_lines_give_each_stream_its_colour() {
    let s = spawn_server().await;
    traffic(&s).await;
    let (headers, mut lines) = Lines::open(&s, "/eddy/spy?color", Some("text/plain")).await;
    assert_eq!(headers["content-type"], "text/plain; charset=utf-8");
    traffic(&s).await;
    s.post_ok("/acme/orders", "order", json!({"n": 2})).await;
    let got = [
        lines.next().await,
        lines.next().await,
        lines.next().await,
        lines.next().await,
    ];
    let colour = |line: &str| -> String {
        assert!(line.starts_with("\x1b[3"), "a coloured line: {line:?}");
        line[..5].to_owned()
    };
    assert!(
        got[0].ends_with("acme/orders\x1b[0m #1 order {\"n\":1}"),
        "{:?}",
        got[0]
    );
    assert!(
        got[3].ends_with("acme/orders\x1b[0m #2 order {\"n\":2}"),
        "{:?}",
        got[3]
    );
    assert_eq!(colour(&got[0]), colour(&got[3]), "one stream, one colour");

    // without ?color, the same lines with no escapes
    let (_, mut plain) = Lines::open(&s, "/eddy/spy", Some("text/plain")).await;
    s.post_ok("/bob/clicks", "click", json!({"x": 9})).await;
    assert_eq!(plain.next().await, "bob/clicks #2 click {\"x\":9}");
}

#[tokio::test]
async fn only_the_admin_may_spy_and_bad_requests_are_named() {
    let s = secured().await;
    let key = account(&s, "acme").await;
    let spy = |token: Option<&str>| {
        let mut req = s.client.get(s.url("/eddy/spy"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    assert_error(spy(None).await.unwrap(), 401, "admin token").await;
    assert_error(spy(Some(&key)).await.unwrap(), 403, "admin").await;
    // an HMAC token, which grants one substream, does not open the firehose
    let r = s
        .client
        .put(s.url("/acme/f/settings"))
        .bearer_auth(&key)
        .json(&json!({"factory": true}))
        .send()
        .await
        .unwrap();
    let secret: Value = r.json().await.unwrap();
    let token = crate::access::hmac_token(secret["hmacSecret"].as_str().unwrap(), "/acme/f('a')");
    let r = s
        .client
        .get(s.url("/eddy/spy"))
        .header("authorization", format!("HMAC {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = spy(Some(ADMIN)).await.unwrap();
    assert_eq!(r.status(), 200);
    drop(r);

    let open = spawn_server().await;
    for (query, needle) in [
        ("sub=('a')", "firehose follows every stream"),
        ("follow=false", "only follows"),
        (
            "follow=maybe",
            "follow=\"maybe\" must be true, false or forever",
        ),
        ("nonsense=1", "nonsense"),
    ] {
        let r = open.get(&format!("/eddy/spy?{query}")).await;
        assert_error(r, 400, needle).await;
    }
    let r = open.send("POST", "/eddy/spy").await;
    assert_error(r, 405, "GET").await;
}
