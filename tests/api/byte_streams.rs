//! Byte streams (API §13): `?chunks=true` uploads store each piece of the body as it
//! arrives; `Accept: application/octet-stream` reads the data concatenated, live with
//! `follow=true` until no upload is open and everything was sent, or
//! `follow=forever`.

use std::convert::Infallible;
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

use crate::common::{TestServer, assert_error, spawn_server};

/// An upload whose body the test writes piece by piece.
struct Upload {
    tx: Option<mpsc::Sender<Bytes>>,
    answer: tokio::task::JoinHandle<reqwest::Response>,
}

impl Upload {
    fn start(s: &TestServer, path: &str, content_type: Option<&str>) -> Self {
        let (tx, rx) = mpsc::channel::<Bytes>(4);
        let body = reqwest::Body::wrap_stream(futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
        }));
        let mut req = s.client.post(s.url(path)).body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let answer = tokio::spawn(async move { req.send().await.unwrap() });
        Self {
            tx: Some(tx),
            answer,
        }
    }

    async fn write(&self, data: &'static [u8]) {
        self.tx
            .as_ref()
            .unwrap()
            .send(Bytes::from_static(data))
            .await
            .unwrap();
    }

    async fn finish(mut self) -> reqwest::Response {
        self.tx.take();
        self.answer.await.unwrap()
    }
}

/// A byte read that the test takes piece by piece.
struct Tail {
    body: futures::stream::BoxStream<'static, reqwest::Result<Bytes>>,
    got: Vec<u8>,
}

impl Tail {
    async fn open(s: &TestServer, path: &str) -> Self {
        let r = s
            .client
            .get(s.url(path))
            .header("accept", "application/octet-stream")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "GET {path}");
        assert_eq!(r.headers()["content-type"], "application/octet-stream");
        Self {
            body: r.bytes_stream().boxed(),
            got: Vec::new(),
        }
    }

    /// Reads until `want` bytes in all have arrived.
    async fn until(&mut self, want: &[u8]) {
        while self.got.len() < want.len() {
            let piece = tokio::time::timeout(Duration::from_secs(10), self.body.next())
                .await
                .expect("data within 10 s")
                .expect("the read is still open")
                .unwrap();
            self.got.extend_from_slice(&piece);
        }
        assert_eq!(self.got, want);
    }

    /// Reads to the end of the response.
    async fn end(mut self) -> Vec<u8> {
        while let Some(piece) = tokio::time::timeout(Duration::from_secs(10), self.body.next())
            .await
            .expect("the read ends within 10 s")
        {
            self.got.extend_from_slice(&piece.unwrap());
        }
        self.got
    }
}

async fn bytes_of(s: &TestServer, path: &str) -> Vec<u8> {
    let r = s
        .client
        .get(s.url(path))
        .header("accept", "application/octet-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "GET {path}");
    r.bytes().await.unwrap().to_vec()
}

#[tokio::test]
async fn pieces_are_readable_while_the_upload_is_open_and_two_tails_follow_it() {
    let s = spawn_server().await;
    let up = Upload::start(&s, "/ci/build-7?chunks=true", Some("text/plain"));
    up.write(b"compiling\n").await;
    // the first piece is durable and readable before the upload ends
    let early = s.get_json("/ci/build-7?wait=10000", 200).await;
    assert_eq!(early[0]["data"], "compiling\n");
    assert_eq!(early[0]["type"], "chunk");
    assert_eq!(early[0]["contentType"], "text/plain");

    let mut first = Tail::open(&s, "/ci/build-7?follow=true").await;
    first.until(b"compiling\n").await;
    up.write(b"linking\n").await;
    first.until(b"compiling\nlinking\n").await;
    // a reader that starts late gets everything from the start, then what follows
    let mut late = Tail::open(&s, "/ci/build-7?follow=true").await;
    late.until(b"compiling\nlinking\n").await;
    up.write(b"done\n").await;
    first.until(b"compiling\nlinking\ndone\n").await;

    let r = up.finish().await;
    assert_eq!(r.status(), 201);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["first"], 0);
    assert_eq!(answer["count"], 3);
    // both reads end once the upload closed and they sent everything
    assert_eq!(first.end().await, b"compiling\nlinking\ndone\n");
    assert_eq!(late.end().await, b"compiling\nlinking\ndone\n");
    // a plain byte read answers the whole, and selectors apply
    assert_eq!(
        bytes_of(&s, "/ci/build-7").await,
        b"compiling\nlinking\ndone\n"
    );
    assert_eq!(bytes_of(&s, "/ci/build-7?from=1&to=1").await, b"linking\n");
}

#[tokio::test]
async fn follow_forever_stays_open_after_the_upload_and_follow_true_waits_for_a_new_stream() {
    let s = spawn_server().await;
    // a tail that starts before the stream exists waits for it
    let mut waiting = Tail::open(&s, "/ci/log?follow=true").await;
    let up = Upload::start(&s, "/ci/log?chunks=true", None);
    up.write(b"\x00\x01binary").await;
    waiting.until(b"\x00\x01binary").await;
    let mut forever = Tail::open(&s, "/ci/log?follow=forever").await;
    forever.until(b"\x00\x01binary").await;
    assert_eq!(up.finish().await.status(), 201);
    assert_eq!(waiting.end().await, b"\x00\x01binary");
    // forever outlives the upload: a second upload's data still reaches it
    let again = Upload::start(&s, "/ci/log?chunks=true", None);
    again.write(b"more").await;
    assert_eq!(again.finish().await.status(), 201);
    forever.until(b"\x00\x01binarymore").await;
    let events = s.get_json("/ci/log", 200).await;
    assert_eq!(events[0]["contentType"], "application/octet-stream");
}

#[tokio::test]
async fn text_is_cut_between_characters_and_large_pieces_at_the_event_limit() {
    let s = spawn_server().await;
    let up = Upload::start(&s, "/ci/utf?chunks=true", Some("text/plain; charset=utf-8"));
    // "é" split across two pieces of the body
    up.write(b"caf\xc3").await;
    let early = s.get_json("/ci/utf?wait=10000", 200).await;
    assert_eq!(early[0]["data"], "caf");
    up.write(b"\xa9 ok").await;
    let big: &'static [u8] = Box::leak(vec![b'x'; 250 * 1024].into_boxed_slice());
    up.write(big).await;
    assert_eq!(up.finish().await.status(), 201);
    let events = s.get_json("/ci/utf", 200).await;
    let sizes: Vec<usize> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["data"].as_str().unwrap().len())
        .collect();
    assert!(sizes.iter().all(|n| *n <= 100 * 1024), "{sizes:?}");
    let mut want = "café ok".as_bytes().to_vec();
    want.extend_from_slice(big);
    assert_eq!(bytes_of(&s, "/ci/utf").await, want);
}

#[tokio::test]
async fn bad_uploads_are_refused_and_store_nothing_wrong() {
    let s = spawn_server().await;
    let post = |path: &str, ct: &str, body: &'static [u8]| {
        s.client
            .post(s.url(path))
            .header("content-type", ct)
            .body(body)
            .send()
    };
    let r = post("/ci/j?chunks=true", "application/json", b"{\"a\":1}")
        .await
        .unwrap();
    assert_error(r, 400, "application/x-ndjson").await;
    let r = post("/ci/j?chunks=true", "application/x-ndjson", b"{}\n")
        .await
        .unwrap();
    assert_error(r, 400, "without chunks=true").await;
    let r = post("/ci/j?chunks=maybe", "text/plain", b"x")
        .await
        .unwrap();
    assert_error(r, 400, "chunks").await;
    let r = s
        .client
        .post(s.url("/ci/j?chunks=true"))
        .header("content-type", "text/plain")
        .header("event-id", "3f2b8a40-1c1d-4d2e-9a8b-2a1b3c4d5e6f")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_error(r, 400, "Event-Id").await;
    assert_eq!(s.get("/ci/j").await.status(), 404, "nothing was created");
    // text that is not UTF-8 stops the upload at the bad piece; what came before stays
    let up = Upload::start(&s, "/ci/t?chunks=true", Some("text/plain"));
    up.write(b"fine\n").await;
    s.get_json("/ci/t?wait=10000", 200).await;
    up.write(b"\xff\xfe").await;
    let body = assert_error(up.finish().await, 400, "not valid UTF-8").await;
    assert_eq!(body["piece"], 2);
    assert_eq!(body["count"], 1);
    assert_eq!(bytes_of(&s, "/ci/t").await, b"fine\n");
    // follow needs a live representation
    let r = s.get("/ci/t?follow=true").await;
    assert_error(r, 400, "application/octet-stream").await;
    let r = s
        .client
        .get(s.url("/ci/t?follow=later"))
        .header("accept", "application/octet-stream")
        .send()
        .await
        .unwrap();
    assert_error(r, 400, "forever").await;
    // a PUT without chunks=true is not an append
    let r = s.client.put(s.url("/ci/t")).body("x").send().await.unwrap();
    assert_eq!(r.headers()["allow"], "GET, HEAD, POST");
    assert_error(r, 405, "upload of bytes (curl -T) with ?chunks=true").await;
}

#[tokio::test]
async fn curl_uploads_from_a_pipe_and_curl_tails_each_line_as_it_is_written() {
    let s = spawn_server().await;
    let url = s.url("/ci/pipe:line?chunks=true");
    let mut producer = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "for i in 1 2 3; do echo $i; sleep 1; done | curl -sS -f -T - '{url}'"
        ))
        .stdout(Stdio::piped())
        .spawn()
        .expect("sh and curl");
    // the stream exists once the first line is stored
    s.get_json("/ci/pipe?wait=10000", 200).await;
    let mut tail = tokio::process::Command::new("curl")
        .args(["-sS", "-N", "-H", "Accept: application/octet-stream"])
        .arg(s.url("/ci/pipe?follow=true"))
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("curl");
    let mut lines = BufReader::new(tail.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    while let Some(line) = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .expect("a line within 10 s")
        .unwrap()
    {
        if seen.is_empty() {
            // the first line reaches the tail while the producer is still writing
            assert!(
                producer.try_wait().unwrap().is_none(),
                "the upload is still open"
            );
        }
        seen.push(line);
    }
    assert_eq!(seen, ["1", "2", "3"]);
    let out = producer.wait_with_output().await.unwrap();
    assert!(out.status.success());
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["count"], json!(3));
    assert!(tail.wait().await.unwrap().success());
    let events = s.get_json("/ci/pipe", 200).await;
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["type"] == "line")
    );
}
