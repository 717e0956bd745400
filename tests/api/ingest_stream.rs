//! Streaming NDJSON ingest (API §2): lines become durable and visible while the
//! request is still open; a bad line stops the request and earlier lines stay.

use std::convert::Infallible;

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::common::{assert_error, spawn_server};

#[tokio::test]
async fn lines_are_visible_while_the_request_is_open() {
    let s = spawn_server().await;
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let body = reqwest::Body::wrap_stream(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    }));
    let req = s
        .client
        .post(s.url("/iot/sensor"))
        .header("Content-Type", "application/x-ndjson")
        .header("Event-Type", "reading")
        .body(body)
        .send();
    let pending = tokio::spawn(req);
    tx.send(Bytes::from_static(b"{\"t\": 20.5}\n{\"t\": 21"))
        .await
        .unwrap();
    // the first line is readable before the request ends (long-poll until it is)
    let first = s.get_json("/iot/sensor?wait=10000", 200).await;
    assert_eq!(first.as_array().unwrap().len(), 1);
    assert_eq!(first[0]["data"], json!({"t": 20.5}));
    tx.send(Bytes::from_static(b".0}\n\n{\"t\": 22}"))
        .await
        .unwrap();
    let second = s.get_json("/iot/sensor?from=1&wait=10000", 200).await;
    assert_eq!(second[0]["data"], json!({"t": 21.0}));
    drop(tx); // end of body: the last line has no newline
    let r = pending.await.unwrap().unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"first": 0, "last": 2, "count": 3})
    );
    let all = s.get_json("/iot/sensor", 200).await;
    assert_eq!(all.as_array().unwrap().len(), 3);
    assert!(
        all.as_array()
            .unwrap()
            .iter()
            .all(|e| e["type"] == "reading")
    );
}

#[tokio::test]
async fn a_bad_line_stops_the_request_and_earlier_lines_stay() {
    let s = spawn_server().await;
    let post = |body: &'static str, ty: Option<&'static str>| {
        let mut r = s
            .client
            .post(s.url("/iot/nd"))
            .header("Content-Type", "application/x-ndjson")
            .body(body);
        if let Some(t) = ty {
            r = r.header("Event-Type", t);
        }
        r.send()
    };
    let e = assert_error(
        post("{\"a\":1}\r\n{\"a\":2}\nnot json\n{\"a\":4}\n", Some("t"))
            .await
            .unwrap(),
        400,
        "line 3",
    )
    .await;
    assert_eq!(e["line"], 3);
    assert_eq!(e["count"], 2);
    assert_eq!(
        s.get_json("/iot/nd", 200).await.as_array().unwrap().len(),
        2
    );
    assert_error(post("{}\n", None).await.unwrap(), 400, "event type").await;
    let long: &'static str =
        Box::leak(format!("{{\"a\":\"{}\"}}\n", "x".repeat(102_400)).into_boxed_str());
    let e = assert_error(post(long, Some("t")).await.unwrap(), 413, "line 1").await;
    assert_eq!(e["line"], 1);
    let r = post("\n\n", Some("t")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["count"], 0);
    assert_eq!(
        s.get_json("/iot/nd", 200).await.as_array().unwrap().len(),
        2
    );
}
