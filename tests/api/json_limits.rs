//! JSON event data within the limits (API §2): nested at most `--json-max-depth`
//! (default 64) arrays and objects deep, numbers that fit a double. Everything else
//! is a 400 naming the place, on typed and untyped streams, for single posts, batches,
//! NDJSON lines, and piped and dispatched events (refused into the logs).

use reqwest::Response;
use serde_json::{Value, json};

use crate::common::{TestServer, assert_error, read_all, spawn_server, spawn_server_with};
use crate::pipes::wait_for_events;

/// A type whose `x` is an int32: the deep and huge cases break it too, so a refusal by
/// the schema would show that the data was parsed after all.
const TYPE: &str = r#"{"properties": {"x": {"type": "int32"}},
  "optionalProperties": {"name": {"type": "int32"}, "age": {"type": "int32"}},
  "additionalProperties": true}"#;

/// `{"x":x,"pad":[[...1...]]}`, `depth` levels deep in all.
fn nested(x: &str, depth: usize) -> String {
    format!(
        r#"{{"x":{x},"pad":{}1{}}}"#,
        "[".repeat(depth - 1),
        "]".repeat(depth - 1)
    )
}

/// The issue's example: a number beyond a double, beside a type violation.
const HUGE: &str = r#"{"x":1,"name":5,"age":"x","zz":1e400}"#;

async fn post(s: &TestServer, path: &str, content_type: &str, body: String) -> Response {
    s.client
        .post(s.url(path))
        .header("content-type", content_type)
        .header("event-type", "t")
        .body(body)
        .send()
        .await
        .unwrap()
}

/// A typed stream and an untyped one.
async fn streams(s: &TestServer) -> [&'static str; 2] {
    let r = s
        .client
        .put(s.url("/acme/typed:t"))
        .header("content-type", "application/json")
        .body(TYPE)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    ["/acme/typed", "/acme/plain"]
}

async fn count(s: &TestServer, path: &str) -> usize {
    let r = s.get(path).await;
    if r.status() == 404 {
        return 0;
    }
    read_all(&s.client, &s.url(path)).await.len()
}

#[tokio::test]
async fn single_posts_refuse_deep_data_and_numbers_beyond_a_double() {
    let s = spawn_server().await;
    for path in streams(&s).await {
        let e = assert_error(
            post(&s, path, "application/json", nested("\"notint\"", 65)).await,
            400,
            "event data nests deeper than 64 levels of arrays and objects at /pad/0/0/",
        )
        .await;
        assert_eq!(e["limit"], 64, "{e}");
        assert_eq!(e["at"], format!("/pad{}", "/0".repeat(63)), "{e}");
        // past serde_json's own recursion limit as well (the lenient path before)
        assert_error(
            post(&s, path, "application/json", nested("\"notint\"", 200)).await,
            400,
            "nests deeper than 64 levels",
        )
        .await;
        let e = assert_error(
            post(&s, path, "application/json", HUGE.into()).await,
            400,
            "event data holds the number 1e400 at /zz, which does not fit a double",
        )
        .await;
        assert_eq!(e["at"], "/zz");
        // any JSON content type, and a huge integer as much as an exponent
        let long = format!("[{}]", "9".repeat(400));
        assert_error(
            post(&s, path, "application/cloudevents+json", long).await,
            400,
            "does not fit a double",
        )
        .await;
        assert_eq!(count(&s, path).await, 0, "{path}: refusals store nothing");

        // as deep as allowed, and the largest doubles, are stored as sent
        let deepest = nested("1", 64);
        let r = post(&s, path, "application/json", deepest.clone()).await;
        assert_eq!(r.status(), 201, "{path}: {:?}", r.text().await);
        let big = r#"{"x":2,"max":1.7976931348623157e308,"n":1e308,"tiny":1e-400}"#;
        let r = post(&s, path, "application/json", big.into()).await;
        assert_eq!(r.status(), 201, "{path}: {:?}", r.text().await);
        let events = read_all(&s.client, &s.url(path)).await;
        let expected: Value = serde_json::from_str(&deepest).unwrap();
        assert_eq!(events[0]["data"], expected);
        assert_eq!(events[1]["data"]["n"], 1e308);
    }
    // the typed stream still refuses by its schema what is within the limits
    assert_error(
        post(&s, "/acme/typed", "application/json", nested("\"no\"", 3)).await,
        400,
        "does not match the schema",
    )
    .await;
}

#[tokio::test]
async fn the_depth_limit_is_a_setting() {
    let s = spawn_server_with(|c| c.json_max_depth = 3).await;
    let r = post(&s, "/acme/s", "application/json", "[[[1]]]".into()).await;
    assert_eq!(r.status(), 201);
    let e = assert_error(
        post(
            &s,
            "/acme/s",
            "application/json",
            r#"{"a":[{"b":[]}]}"#.into(),
        )
        .await,
        400,
        "nests deeper than 3 levels of arrays and objects at /a/0/b",
    )
    .await;
    assert_eq!(e["limit"], 3);
}

#[tokio::test]
async fn batches_and_ndjson_lines_refuse_them_with_their_place() {
    let s = spawn_server().await;
    let batch = "application/vnd.eddy.events+json";
    let eventstore = "application/vnd.eventstore.events+json";
    for path in streams(&s).await {
        let body = format!(
            r#"[{{"type":"t","data":{{"x":1}}}},{{"type":"t","data":{}}}]"#,
            nested("\"notint\"", 65)
        );
        let e = assert_error(
            post(&s, path, batch, body).await,
            400,
            "event 1 of the batch: event data nests deeper than 64 levels",
        )
        .await;
        assert_eq!(e["position"], 1);
        let body = format!(
            r#"[{{"eventId":"0b9e2a4c-6f7d-4f55-9b44-3c1d2e5f6a7b","eventType":"t","data":{HUGE}}}]"#
        );
        assert_error(
            post(&s, path, eventstore, body).await,
            400,
            "event 0 of the batch: event data holds the number 1e400 at /zz",
        )
        .await;
        // an event's metadata is held to the same limits, by name
        let refusals = [
            (batch, format!(r#"[{{"type":"t","data":1,"metadata":{HUGE}}}]"#), "event 0 of the batch: the event's \"metadata\" holds the number 1e400 at /zz"),
            (batch, format!(r#"[{{"type":"t","data":1,"metadata":{}}}]"#, nested("1", 65)), "event 0 of the batch: the event's \"metadata\" nests deeper than 64 levels"),
            (eventstore, r#"[{"eventId":"0b9e2a4c-6f7d-4f55-9b44-3c1d2e5f6a7c","eventType":"t","data":1,"metadata":"\ud800"}]"#.to_owned(), "event 0 of the batch: the event's \"metadata\" is not valid JSON"),
        ];
        for (kind, body, said) in refusals {
            assert_error(post(&s, path, kind, body).await, 400, said).await;
        }
        assert_eq!(
            count(&s, path).await,
            0,
            "{path}: a refused batch stores nothing"
        );

        // NDJSON: the lines before the refused one stay, and the answer names the line
        let lines = format!("{{\"x\":1}}\n{}\n{{\"x\":2}}\n", nested("\"no\"", 65));
        let e = assert_error(
            post(&s, path, "application/x-ndjson", lines).await,
            400,
            "line 2: event data nests deeper than 64 levels",
        )
        .await;
        assert_eq!(
            (e["line"].as_u64(), e["count"].as_u64()),
            (Some(2), Some(1))
        );
        let e = assert_error(
            post(&s, path, "application/x-ndjson", format!("{HUGE}\n")).await,
            400,
            "line 1: event data holds the number 1e400 at /zz",
        )
        .await;
        assert_eq!(e["count"], 0);
        assert_eq!(count(&s, path).await, 1);

        // the happy cases through both
        let body = format!(
            r#"[{{"type":"t","data":{}}},{{"type":"t","data":{{"x":3,"n":1e308}}}}]"#,
            nested("1", 64)
        );
        let r = post(&s, path, batch, body).await;
        assert_eq!(r.status(), 201, "{:?}", r.text().await);
        let lines = format!("{}\n{{\"x\":4,\"n\":-1e308}}\n", nested("1", 64));
        let r = post(&s, path, "application/x-ndjson", lines).await;
        assert_eq!(r.status(), 201, "{:?}", r.text().await);
        assert_eq!(count(&s, path).await, 5);
    }
}

/// A JavaScript function nesting `{d: [[...1...]]}` `n` levels deep in all.
const NEST: &str = "const nest = (n) => { let v = 1; for (let i = 1; i < n; i++) v = [v]; \
                    return { x: 1, d: v }; };";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn piped_and_dispatched_data_nested_too_deep_is_refused_into_the_logs() {
    let s = spawn_server().await;
    let [typed, plain] = streams(&s).await;
    let put_code = |path: &str, code: String| {
        s.client
            .put(s.url(path))
            .header("content-type", "application/javascript")
            .body(code)
            .send()
    };
    // a mapping pipe into each stream
    for to in [typed, plain] {
        let code = format!("{NEST} export default (e) => ({{ type: 't', data: nest(e.data.n) }});");
        let r = put_code(&format!("/acme/src/pipe{to}"), code)
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{:?}", r.text().await);
    }
    // a reducer dispatching into each stream
    for (name, to) in [("r1", "typed"), ("r2", "plain")] {
        let code = format!(
            "{NEST} export default (n = 0, e) => {{ \
               dispatch('{to}', {{ type: 't', data: nest(e.data.n) }}); return n + 1; }};"
        );
        let r = put_code(&format!("/acme/orders.{name}"), code)
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{:?}", r.text().await);
    }
    for n in [64, 65, 63] {
        s.post_ok("/acme/src", "o", json!({ "n": n })).await;
        s.post_ok("/acme/orders", "o", json!({ "n": n })).await;
    }
    for to in [typed, plain] {
        // two events piped and two dispatched: the ones within the limit
        let events = wait_for_events(&s.base, to, 4).await;
        let mut depths: Vec<(String, u64)> = events
            .iter()
            .map(|e| {
                let origin = &e["origin"];
                (
                    origin["stream"].as_str().unwrap().to_owned(),
                    origin["index"].as_u64().unwrap(),
                )
            })
            .collect();
        depths.sort();
        let expected = [
            ("acme/orders", 0),
            ("acme/orders", 2),
            ("acme/src", 0),
            ("acme/src", 2),
        ]
        .map(|(s, i)| (s.to_owned(), i));
        assert_eq!(depths, expected, "{to}");
        let logs = wait_for_events(&s.base, &format!("/acme/src/logs/pipe{to}"), 1).await;
        let m = logs[0]["data"]["message"].as_str().unwrap();
        assert!(m.contains("nests deeper than 64 levels"), "{to}: {m}");
        assert!(m.contains("at /d/0/0"), "{to}: {m}");
        assert_eq!(logs[0]["data"]["index"], 1, "{to}");
    }
    let logs = wait_for_events(&s.base, "/acme/orders/logs", 2).await;
    let messages: Vec<&str> = logs
        .iter()
        .map(|l| l["data"]["message"].as_str().unwrap())
        .collect();
    assert!(
        messages
            .iter()
            .all(|m| m.contains("nests deeper than 64 levels")),
        "{messages:?}"
    );
    let pipes = s.get_json("/acme/src/pipe/acme/plain", 200).await;
    assert_eq!(pipes["errors"], 1, "{pipes}");
}
