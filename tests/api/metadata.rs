//! Stream metadata (API §13): `X-Stream-Metadata` on the POST that creates a stream,
//! `"metadata"` in its settings, the header on every read of the stream and the field
//! in the account's listing; bad metadata is a 400 that creates nothing.

use serde_json::{Value, json};

use crate::common::{TestServer, assert_error, spawn_server};

async fn post_with(s: &TestServer, path: &str, metadata: &str) -> reqwest::Response {
    s.client
        .post(s.url(path))
        .header("content-type", "application/json")
        .header("event-type", "order")
        // raw UTF-8, as curl sends it
        .header(
            "x-stream-metadata",
            reqwest::header::HeaderValue::from_bytes(metadata.as_bytes()).unwrap(),
        )
        .body(r#"{"n": 1}"#)
        .send()
        .await
        .unwrap()
}

/// The `X-Stream-Metadata` header of a read, parsed.
async fn header_of(s: &TestServer, path: &str, accept: &str) -> Option<Value> {
    let r = s
        .client
        .get(s.url(path))
        .header("accept", accept)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "GET {path}");
    r.headers()
        .get("x-stream-metadata")
        .map(|v| serde_json::from_slice(v.as_bytes()).expect("the header is JSON"))
}

fn listed(listing: &Value, name: &str) -> Value {
    listing
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("{name} is not listed in {listing}"))
        .clone()
}

#[tokio::test]
async fn metadata_given_at_creation_comes_back_on_every_read_and_in_listings() {
    let s = spawn_server().await;
    let meta = json!({"owner": "shop team", "retention": {"days": 30}, "city": "Zürich ✓"});
    let r = post_with(&s, "/acme/orders", &meta.to_string()).await;
    assert_eq!(r.status(), 201);

    // non-ASCII text travels as \u escapes, which read back as the same JSON
    assert_eq!(
        header_of(&s, "/acme/orders", "application/json").await,
        Some(meta.clone())
    );
    assert_eq!(
        header_of(&s, "/acme/orders", "application/x-ndjson").await,
        Some(meta.clone())
    );
    assert_eq!(
        header_of(&s, "/acme/orders/0", "application/json").await,
        Some(meta.clone())
    );
    assert_eq!(
        header_of(&s, "/acme/orders/0?raw=true", "*/*").await,
        Some(meta.clone())
    );
    // an SSE subscription answers it with its headers, before any event
    assert_eq!(
        header_of(&s, "/acme/orders", "text/event-stream").await,
        Some(meta.clone())
    );
    assert_eq!(
        listed(&s.get_json("/acme", 200).await, "orders")["metadata"],
        meta
    );
    assert_eq!(
        s.get_json("/acme/orders/settings", 200).await["metadata"],
        meta
    );

    // a stream that exists keeps its metadata: the header only describes a new one
    let r = post_with(&s, "/acme/orders", r#"{"owner": "someone else"}"#).await;
    assert_eq!(r.status(), 201);
    assert_eq!(
        header_of(&s, "/acme/orders", "application/json").await,
        Some(meta)
    );

    // a stream created without metadata has none to show
    s.post_ok("/acme/plain", "x", json!(1)).await;
    assert_eq!(header_of(&s, "/acme/plain", "application/json").await, None);
    assert!(
        listed(&s.get_json("/acme", 200).await, "plain")
            .get("metadata")
            .is_none()
    );

    // a factory created by a substream's first event takes it too
    let r = post_with(&s, "/acme/carts('c1')", r#"{"kind": "cart"}"#).await;
    assert_eq!(r.status(), 201);
    assert_eq!(
        header_of(&s, "/acme/carts", "application/json").await,
        Some(json!({"kind": "cart"}))
    );
    assert_eq!(
        header_of(&s, "/acme/carts('c1')", "application/json").await,
        Some(json!({"kind": "cart"}))
    );
}

#[tokio::test]
async fn settings_change_metadata_and_null_removes_it() {
    let s = spawn_server().await;
    s.post_ok("/acme/orders", "x", json!(1)).await;
    let patch = |body: Value| {
        s.client
            .patch(s.url("/acme/orders/settings"))
            .json(&body)
            .send()
    };
    let r = patch(json!({"metadata": {"tier": "gold"}})).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        header_of(&s, "/acme/orders", "application/json").await,
        Some(json!({"tier": "gold"}))
    );
    let r = patch(json!({"metadata": null})).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        header_of(&s, "/acme/orders", "application/json").await,
        None
    );

    // not an object, or too large: refused by name, nothing changed
    patch(json!({"metadata": {"tier": "gold"}})).await.unwrap();
    let e = assert_error(
        patch(json!({"metadata": [1, 2]})).await.unwrap(),
        400,
        "metadata",
    )
    .await;
    assert_eq!(e["field"], "metadata");
    let big = json!({"notes": "x".repeat(17 * 1024)});
    assert_error(
        patch(json!({"metadata": big})).await.unwrap(),
        400,
        "at most 16384",
    )
    .await;
    let deep = format!(
        "{{\"metadata\": {{\"x\": {}{}}}}}",
        "[".repeat(130),
        "]".repeat(130)
    );
    let r = (s.client.patch(s.url("/acme/orders/settings")))
        .header("content-type", "application/json")
        .body(deep)
        .send()
        .await
        .unwrap();
    assert_error(r, 400, "settings nest deeper than 128 levels").await;
    assert_eq!(
        header_of(&s, "/acme/orders", "application/json").await,
        Some(json!({"tier": "gold"}))
    );
}

#[tokio::test]
async fn bad_metadata_headers_are_refused_and_create_nothing() {
    let s = spawn_server().await;
    for (bad, needle) in [
        ("{not json", "X-Stream-Metadata is not JSON"),
        ("[1, 2]", "must be a JSON object"),
        ("\"text\"", "must be a JSON object"),
    ] {
        let e = assert_error(post_with(&s, "/acme/orders", bad).await, 400, needle).await;
        assert!(
            e["field"].as_str().unwrap().contains("X-Stream-Metadata"),
            "{e}"
        );
    }
    let big = json!({"notes": "x".repeat(17 * 1024)}).to_string();
    assert_error(
        post_with(&s, "/acme/orders", &big).await,
        400,
        "at most 16384",
    )
    .await;
    // twice, even the same
    let r = s
        .client
        .post(s.url("/acme/orders"))
        .header("Event-Type", "t")
        .header("X-Stream-Metadata", "{}")
        .header("X-Stream-Metadata", "{}")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_error(r, 400, "X-Stream-Metadata is given more than once").await;
    // none of them created the stream
    assert_error(s.get("/acme/orders").await, 404, "orders").await;
    let listing = s.get_json("/acme", 200).await;
    assert!(listing.as_array().unwrap().is_empty(), "{listing}");
}

/// The other ways a stream is made carry metadata too: a `?chunks=true` upload and a
/// settings `PUT`; byte reads and long-polls answer the header like every read.
#[tokio::test]
async fn uploads_and_settings_that_create_a_stream_keep_its_metadata() {
    let s = spawn_server().await;
    let meta = json!({"source": "build 42"});
    let r = s
        .client
        .post(s.url("/acme/build-log?chunks=true"))
        .header("content-type", "text/plain")
        .header("x-stream-metadata", meta.to_string())
        .body("line 1\nline 2\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    assert_eq!(
        header_of(&s, "/acme/build-log", "application/octet-stream").await,
        Some(meta.clone())
    );
    assert_eq!(
        header_of(&s, "/acme/build-log?wait=100", "application/json").await,
        Some(meta.clone())
    );
    // a bad header on an upload refuses it before anything is stored
    let r = s
        .client
        .post(s.url("/acme/other-log?chunks=true"))
        .header("content-type", "text/plain")
        .header("x-stream-metadata", "[1, 2]")
        .body("line\n")
        .send()
        .await
        .unwrap();
    assert_error(r, 400, "X-Stream-Metadata").await;
    assert_error(s.get("/acme/other-log").await, 404, "does not exist").await;

    // a PUT of settings creates the stream with its metadata
    let r = s
        .call(
            "PUT",
            "/acme/planned/settings",
            &[],
            json!({"metadata": {"team": "ops"}}),
        )
        .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    s.post_ok("/acme/planned", "note", json!({})).await;
    assert_eq!(
        header_of(&s, "/acme/planned", "application/json").await,
        Some(json!({"team": "ops"}))
    );
}
