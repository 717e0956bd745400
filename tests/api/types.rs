//! Event types (API §6): JTD schemas put on a stream, events validated on ingest with
//! `errors[]` (wrong types, missing and extra fields, `metadata.pattern`), in single
//! posts, batches and NDJSON; the schema at `.json`, TypeScript at `.ts`, imports from
//! another stream, and a typed TypeScript reducer that uses the generated interface.

use serde_json::{Value, json};

use crate::common::{TestServer, assert_error, spawn_server};

const CLICK: &str = r#"{
  "properties": {
    "url": {"type": "string", "metadata": {"pattern": "^https?://"}},
    "x": {"type": "int32"},
    "tags": {"elements": {"type": "string"}}
  },
  "optionalProperties": {"button": {"enum": ["left", "right"]}}
}"#;

async fn put_type(s: &TestServer, path: &str, body: &str) -> reqwest::Response {
    s.client
        .put(s.url(path))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn events_are_validated_against_their_type() {
    let s = spawn_server().await;
    // an event stored before the type is not re-validated
    s.post_ok("/acme/clicks", "click", json!({"url": 1})).await;
    let r = put_type(&s, "/acme/clicks:click", CLICK).await;
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["location"], "/acme/clicks:click");
    assert_eq!(
        put_type(&s, "/acme/clicks:click", CLICK).await.status(),
        200
    );
    let schema: Value = serde_json::from_str(CLICK).unwrap();
    assert_eq!(s.get_json("/acme/clicks:click", 200).await, schema);
    assert_eq!(s.get_json("/acme/clicks:click.json", 200).await, schema);

    let good = json!({"url": "https://example.com/", "x": 3, "tags": ["a"], "button": "left"});
    s.post_ok("/acme/clicks", "click", good.clone()).await;
    s.post_ok("/acme/clicks:click", "click", good.clone()).await;
    // other types of the stream are not checked
    s.post_ok("/acme/clicks", "scroll", json!("anything")).await;

    let cases = [
        (
            json!({"url": "https://e/", "x": "3", "tags": []}),
            "/x",
            "/properties/x/type",
            "type",
        ),
        (
            json!({"url": "https://e/", "tags": []}),
            "",
            "/properties/x",
            "required",
        ),
        (
            json!({"url": "https://e/", "x": 1, "tags": [], "y": 2}),
            "/y",
            "",
            "additionalProperties",
        ),
        (
            json!({"url": "ftp://e/", "x": 1, "tags": []}),
            "/url",
            "/properties/url/metadata/pattern",
            "pattern",
        ),
        (
            json!({"url": "https://e/", "x": 1, "tags": [1]}),
            "/tags/0",
            "/properties/tags/elements/type",
            "type",
        ),
        (
            json!({"url": "https://e/", "x": 1, "tags": [], "button": "middle"}),
            "/button",
            "/optionalProperties/button/enum",
            "enum",
        ),
        (
            json!({"url": "https://e/", "x": 3000000000u64, "tags": []}),
            "/x",
            "/properties/x/type",
            "type",
        ),
    ];
    for (data, instance, schema_path, rule) in cases {
        let r = s.post("/acme/clicks", "click", data.clone()).await;
        let v = assert_error(r, 400, "does not match the schema").await;
        let errors = v["errors"].as_array().unwrap();
        assert_eq!(errors.len(), 1, "{data}: {v}");
        let e = &errors[0];
        assert_eq!(e["instancePath"], instance, "{data}: {e}");
        assert_eq!(e["schemaPath"], schema_path, "{data}: {e}");
        assert_eq!(e["rule"], rule, "{data}: {e}");
        assert!(e["message"].as_str().unwrap().contains(instance), "{e}");
        assert_eq!(v["rule"], "type");
    }
    // several errors at once, and not JSON-shaped data
    let r = s
        .post("/acme/clicks", "click", json!({"x": true, "z": 1}))
        .await;
    let v = assert_error(r, 400, "more error").await;
    assert_eq!(v["errors"].as_array().unwrap().len(), 4, "{v}");
    let r = s
        .client
        .post(s.url("/acme/clicks?event-type=click"))
        .header("content-type", "text/plain")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_error(r, 400, "schema").await;
    // JSON that does not parse gets the content-type error, as on an untyped stream
    let r = s
        .client
        .post(s.url("/acme/clicks?event-type=click"))
        .header("content-type", "application/json")
        .body("{\"url\": ")
        .send()
        .await
        .unwrap();
    let v = assert_error(r, 400, "not valid JSON").await;
    assert!(v.get("rule").is_none(), "{v}");

    // a batch names the event; NDJSON names the line and keeps the lines before it
    let r = s
        .client
        .post(s.url("/acme/clicks"))
        .header("content-type", "application/vnd.eddy.events+json")
        .body(
            json!([{"type": "click", "data": good}, {"type": "click", "data": {"x": 1}}])
                .to_string(),
        )
        .send()
        .await
        .unwrap();
    let v = assert_error(r, 400, "event 1 of the batch").await;
    assert_eq!(v["position"], 1);
    let r = s
        .client
        .post(s.url("/acme/clicks?event-type=click"))
        .header("content-type", "application/x-ndjson")
        .body(format!("{good}\n{{\"x\": 1}}\n{good}\n"))
        .send()
        .await
        .unwrap();
    let v = assert_error(r, 400, "line 2").await;
    assert_eq!(v["count"], 1);
    // nothing refused was stored: the first event, 2 good posts, scroll, 1 NDJSON line
    let events = s.get_json("/acme/clicks", 200).await;
    assert_eq!(events.as_array().unwrap().len(), 5, "{events}");
    let m = s.get("/metrics").await.text().await.unwrap();
    assert!(
        m.contains("eddy_refused_requests_total{rule=\"type\"}"),
        "{m}"
    );

    let r = s.send("DELETE", "/acme/clicks:click").await;
    assert_eq!(r.status(), 204);
    s.post_ok("/acme/clicks", "click", json!({"x": "anything"}))
        .await;
}

#[tokio::test]
async fn bad_schemas_are_refused_with_the_reason() {
    let s = spawn_server().await;
    for (body, needle) in [
        ("{\"type\": \"integer\"}", "integer"),
        ("{\"ref\": \"missing\"}", "missing"),
        ("{\"properties\": {\"a\": {}}, \"elements\": {}}", "schema"),
        (
            "{\"type\": \"string\", \"metadata\": {\"pattern\": \"(\"}}",
            "pattern",
        ),
        (
            "{\"type\": \"int8\", \"metadata\": {\"pattern\": \"a\"}}",
            "pattern",
        ),
        ("not json", "not valid JSON"),
        ("{\"import\": \"/acme/nothing:x\"}", "no event type"),
        ("{\"import\": \"acme\"}", "import"),
        (
            "{\"definitions\": {\"a\": {\"ref\": \"b\"}, \"b\": {\"ref\": \"a\"}}, \"ref\": \"a\"}",
            "definitions a → b → a only refer to each other",
        ),
        (
            "{\"definitions\": {\"me\": {\"ref\": \"me\", \"metadata\": {}}}}",
            "definitions me → me only",
        ),
    ] {
        let r = put_type(&s, "/acme/s:t", body).await;
        let status = r.status().as_u16();
        let v = assert_error(r, if needle == "no event type" { 404 } else { 400 }, needle).await;
        assert!(status == 404 || v["field"].is_string(), "{body}: {v}");
    }
    let r = put_type(&s, "/acme/s('a'):t", "{}").await;
    assert_error(r, 400, "substream").await;
    assert_error(s.get("/acme/s:t.ts").await, 404, "no event type").await;
    // nothing was defined
    s.post_ok("/acme/s", "t", json!(1)).await;
}

#[tokio::test]
async fn types_import_and_typed_reducers_use_the_interface() {
    let s = spawn_server().await;
    assert_eq!(
        put_type(&s, "/shared/defs:click", CLICK).await.status(),
        201
    );
    let r = put_type(
        &s,
        "/acme/clicks:click",
        r#"{"import": "/shared/defs:click"}"#,
    )
    .await;
    assert_eq!(r.status(), 201);
    assert_eq!(
        s.get_json("/acme/clicks:click", 200).await,
        serde_json::from_str::<Value>(CLICK).unwrap()
    );
    let r = s.post("/acme/clicks", "click", json!({"url": "x"})).await;
    assert_error(r, 400, "does not match").await;

    let r = s.get("/acme/clicks:click.ts").await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .contains("typescript")
    );
    let ts = r.text().await.unwrap();
    assert!(ts.contains("export interface Click"), "{ts}");
    assert!(ts.contains("button?: \"left\" | \"right\""), "{ts}");

    // a TypeScript reducer imports the interface by type only (stripped on deploy)
    let reducer = r#"
import type { Click } from "./click.ts";
type State = { clicks: number; left: number };
export default function (state: State = { clicks: 0, left: 0 }, event: { data: Click }): State {
  const c: Click = event.data;
  return { clicks: state.clicks + 1, left: state.left + (c.button === "left" ? 1 : 0) };
}
"#;
    let r = s
        .client
        .put(s.url("/acme/clicks.stats"))
        .header("content-type", "application/typescript")
        .body(reducer)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    for button in ["left", "right", "left"] {
        s.post_ok(
            "/acme/clicks",
            "click",
            json!({"url": "https://e/", "x": 1, "tags": [], "button": button}),
        )
        .await;
    }
    let state = s
        .get_json("/acme/clicks.stats?min-index=2&wait=10000", 200)
        .await;
    assert_eq!(state, json!({"clicks": 3, "left": 2}));
}

#[tokio::test]
async fn pipes_into_a_typed_stream_refuse_what_does_not_match() {
    let s = spawn_server().await;
    assert_eq!(put_type(&s, "/acme/dest:click", CLICK).await.status(), 201);
    let good = json!({"url": "https://e/", "x": 1, "tags": []});
    s.post_ok("/acme/src", "click", good.clone()).await;
    s.post_ok("/acme/src", "click", json!({"url": "nope"}))
        .await;
    s.post_ok("/acme/src", "click", good.clone()).await;
    let r = s.send("PUT", "/acme/src/pipe/acme/dest").await;
    assert_eq!(r.status(), 201);
    // the refusal is in the pipe's log, and the two good events are piped
    let logs = crate::pipes::wait_for_events(&s.base, "/acme/src/logs/pipe/acme/dest", 1).await;
    assert_eq!(logs[0]["type"], "error");
    assert_eq!(logs[0]["data"]["index"], 1);
    assert!(
        logs[0]["data"]["message"]
            .as_str()
            .unwrap()
            .contains("does not match the schema"),
        "{}",
        logs[0]
    );
    let piped = crate::pipes::wait_for_events(&s.base, "/acme/dest", 2).await;
    assert_eq!(piped.len(), 2);
    assert_eq!(piped[1]["origin"]["index"], 2);
    let status = s.get_json("/acme/src/pipe/acme/dest", 200).await;
    assert_eq!(status["errors"], 1, "{status}");
}

#[tokio::test]
async fn a_streams_types_are_listed_with_schema_and_typescript() {
    let s = spawn_server().await;
    assert_eq!(s.get_json("/acme/clicks/types", 200).await, json!([]));
    assert_eq!(
        put_type(&s, "/acme/clicks:click", CLICK).await.status(),
        201
    );
    assert_eq!(
        put_type(&s, "/acme/clicks:a-view", r#"{"type": "string"}"#)
            .await
            .status(),
        201
    );
    let list = s.get_json("/acme/clicks/types", 200).await;
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a-view", "click"]);
    assert_eq!(
        list[1]["schema"],
        serde_json::from_str::<Value>(CLICK).unwrap()
    );
    let ts = s.get("/acme/clicks:click.ts").await.text().await.unwrap();
    assert_eq!(list[1]["typescript"], ts.as_str());
    // types belong to the stream, not to a substream
    assert_error(
        s.get("/acme/clicks('x')/types").await,
        400,
        "belong to the stream",
    )
    .await;
    let r = s.send("PUT", "/acme/clicks/types").await;
    assert_error(r, 405, "GET").await;
}
