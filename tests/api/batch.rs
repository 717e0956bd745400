//! Atomic batches in eddy's and EventStoreDB's media types (API §2).

use serde_json::{Value, json};

use crate::common::{assert_error, spawn_server};

pub(crate) const EDDY: &str = "application/vnd.eddy.events+json";
const ES: &str = "application/vnd.eventstore.events+json";

/// POSTs `body` as a batch of media type `ct`.
pub(crate) async fn post_batch(
    s: &crate::common::TestServer,
    path: &str,
    ct: &str,
    body: Value,
) -> reqwest::Response {
    s.client
        .post(s.url(path))
        .header("Content-Type", ct)
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn eddy_batch_is_written_whole_with_every_field() {
    let s = spawn_server().await;
    s.post_ok("/a/b", "first", json!(0)).await;
    let id = "7d444840-9dc0-11d1-b245-5ffdce74fad2";
    let r = post_batch(
        &s,
        "/a/b",
        EDDY,
        json!([
            {"type": "a", "data": {"x": 1}},
            {"id": id, "type": "b", "data": [1, 2], "timestamp": 4_102_444_800_000i64},
            {"type": "c", "data": "plain text", "contentType": "text/plain", "timestamp": "2100-01-01T00:00:00.001Z"},
            {"type": "d", "data": "AAEC", "contentType": "application/octet-stream"},
        ]),
    )
    .await;
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["location"], "/a/b/1");
    let b: Value = r.json().await.unwrap();
    assert_eq!(b, json!({"first": 1, "last": 4, "count": 4}));
    let events = s.get_json("/a/b", 200).await;
    let e = events.as_array().unwrap();
    assert_eq!(e.len(), 5);
    assert_eq!(e[1]["data"], json!({"x": 1}));
    assert_eq!(e[2]["id"], id);
    assert_eq!(e[2]["timestamp"], 4_102_444_800_000i64);
    assert_eq!(e[3]["data"], "plain text");
    assert_eq!(e[3]["timestamp"], 4_102_444_800_001i64);
    assert_eq!(e[4]["data"], "AAEC");
    assert_eq!(e[4]["encoding"], "base64");
    assert_eq!(
        e[4]["timestamp"], 4_102_444_800_001i64,
        "later events keep the future timestamp"
    );
}

#[tokio::test]
async fn one_bad_event_refuses_the_whole_batch() {
    let s = spawn_server().await;
    let good = json!({"type": "ok", "data": 1});
    for (bad, needle) in [
        (json!({"data": 1}), "event type"),
        (json!({"type": "t"}), "data"),
        (json!({"type": "t", "data": 1, "colour": "red"}), "colour"),
        (json!({"type": "t", "data": 1, "id": "x"}), "UUID"),
        (
            json!({"type": "t", "data": 1, "timestamp": "soon"}),
            "timestamp",
        ),
        (
            json!({"type": "t", "data": 5, "contentType": "text/plain"}),
            "must be a string",
        ),
        (
            json!({"type": "t", "data": "@@", "contentType": "application/octet-stream"}),
            "base64",
        ),
        (
            json!({"type": "t", "data": 1, "contentType": "image/png"}),
            "image/png",
        ),
        (
            json!({"type": "t", "data": 1, "timestamp": 1.5}),
            "whole number",
        ),
    ] {
        let r = post_batch(&s, "/a/atomic", EDDY, json!([good, good, bad])).await;
        let e = assert_error(r, 400, "event 2 of the batch").await;
        assert_eq!(e["position"], 2);
        assert!(
            e["error"]
                .as_str()
                .unwrap()
                .to_lowercase()
                .contains(&needle.to_lowercase()),
            "{e}"
        );
    }
    let big = "x".repeat(102_401);
    let r = post_batch(
        &s,
        "/a/atomic",
        EDDY,
        json!([good, {"type": "t", "data": big}]),
    )
    .await;
    let e = assert_error(r, 413, "event 1 of the batch").await;
    assert_eq!(e["position"], 1);
    // metadata beyond 16 KiB, in either format
    let meta = json!({"note": "m".repeat(16_384)});
    let r = post_batch(
        &s,
        "/a/atomic",
        EDDY,
        json!([good, {"type": "t", "data": 1, "metadata": meta}]),
    )
    .await;
    let e = assert_error(r, 413, "\"metadata\" is 16395 bytes").await;
    assert_eq!(e["position"], 1);
    let r = post_batch(
        &s,
        "/a/atomic",
        ES,
        json!([{"eventId": uuid::Uuid::new_v4(), "eventType": "t", "data": 1, "metadata": meta}]),
    )
    .await;
    assert_error(r, 413, "event 0 of the batch").await;
    assert_error(
        post_batch(&s, "/a/atomic", EDDY, json!([])).await,
        400,
        "empty",
    )
    .await;
    assert_error(
        post_batch(&s, "/a/atomic", EDDY, json!({"type": "t"})).await,
        400,
        "JSON array",
    )
    .await;
    // a timestamp going backwards inside the batch
    let r = post_batch(&s, "/a/atomic", EDDY, json!([{"type": "t", "data": 1, "timestamp": 5000}, {"type": "t", "data": 1, "timestamp": 4000}])).await;
    let e = assert_error(r, 409, "event 1 of the batch").await;
    assert_eq!(e["lastTimestamp"], 5000);
    // over 10 MiB
    let chunk = "y".repeat(100_000);
    let many: Vec<Value> = (0..106)
        .map(|_| json!({"type": "t", "data": chunk}))
        .collect();
    assert_error(
        post_batch(&s, "/a/atomic", EDDY, json!(many)).await,
        413,
        "10485760",
    )
    .await;
    assert_error(s.get("/a/atomic").await, 404, "does not exist").await;
}

#[tokio::test]
async fn eventstore_batches_and_duplicate_batches() {
    let s = spawn_server().await;
    let ids = [
        "fbf4a1a1-b4a3-4dfe-a01f-ec52c34e16e4",
        "0f9fad5b-d9cb-469f-a165-70867728950e",
    ];
    let batch = json!([
        {"eventId": ids[0], "eventType": "event-type", "data": {"a": "1"}, "metadata": {"m": true, "by": "Zoë"}},
        {"eventId": ids[1], "eventType": "other", "data": {"b": 2}},
    ]);
    let r = post_batch(&s, "/a/es", ES, batch.clone()).await;
    assert_eq!(r.status(), 201);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"first": 0, "last": 1, "count": 2})
    );
    let e = s.get_json("/a/es/0", 200).await;
    assert_eq!(e["type"], "event-type");
    assert_eq!(e["id"], ids[0]);
    assert_eq!(e["metadata"], json!({"m": true, "by": "Zoë"}));
    // ?raw carries the metadata in a header, as ASCII JSON, and the envelope's stream
    let raw = s.get("/a/es/0?raw").await;
    assert_eq!(raw.headers()["event-stream"], "a/es");
    let m: Value = serde_json::from_slice(raw.headers()["event-metadata"].as_bytes()).unwrap();
    assert_eq!(m, json!({"m": true, "by": "Zoë"}));
    // the same batch again is a duplicate: nothing new
    let r = post_batch(&s, "/a/es", ES, batch).await;
    assert_eq!(r.status(), 201);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"first": 0, "last": 1, "count": 2, "duplicate": true})
    );
    // a batch mixing a stored id with new ones is refused whole
    let mixed = json!([{"eventId": "a4c1c2f0-3e55-4a36-9a53-4b0cbd1c9c80", "eventType": "n", "data": 1}, {"eventId": ids[1], "eventType": "o", "data": 2}]);
    let e = assert_error(
        post_batch(&s, "/a/es", ES, mixed).await,
        409,
        "already stored",
    )
    .await;
    assert_eq!(e["position"], 1);
    let twice =
        json!([{"id": ids[0], "type": "n", "data": 1}, {"id": ids[0], "type": "n", "data": 2}]);
    assert_error(post_batch(&s, "/a/es2", EDDY, twice).await, 400, "same id").await;
    // expected index applies to the batch as a whole
    let r = s
        .client
        .post(s.url("/a/es"))
        .header("Content-Type", EDDY)
        .header("Expected-Index", "0")
        .body(json!([{"type": "t", "data": 1}]).to_string())
        .send()
        .await
        .unwrap();
    let e = assert_error(r, 409, "last index").await;
    assert_eq!(e["lastIndex"], 1);
    assert_eq!(s.get_json("/a/es", 200).await.as_array().unwrap().len(), 2);
}
