//! An import killed (SIGKILL) after some of its batches landed, then run again with
//! the same input: the copy reads as the source does, with every event once.

use std::process::Stdio;

use tokio::io::AsyncWriteExt;

use super::{client_command, run_with_input, stored};
use crate::common::{client, spawn_server};

/// Events in the source stream: three full batches of the import and a part of one.
const EVENTS: u64 = 3500;

#[tokio::test]
async fn an_import_killed_midway_and_run_again_gives_every_event_once() {
    let server = spawn_server().await;
    let http = client();
    for part in 0..EVENTS / 500 {
        let batch: Vec<serde_json::Value> = (0..500)
            .map(|i| {
                let n = part * 500 + i;
                serde_json::json!({"type": "t", "data": {"n": n}, "metadata": {"m": n % 7}})
            })
            .collect();
        let r = http
            .post(server.url("/acme/src"))
            .header("content-type", "application/vnd.eddy.events+json")
            .json(&batch)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{:?}", r.text().await);
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("acme.ndjson");
    let out = client_command(
        &server.base,
        &["export", "/acme/src", "--output", file.to_str().unwrap()],
    )
    .output()
    .await
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    let export = std::fs::read(&file).unwrap();
    let lines: Vec<&[u8]> = export.split_inclusive(|b| *b == b'\n').collect();
    assert_eq!(lines.len() as u64, EVENTS);

    // the first 2500 lines, stdin left open: two batches of 1000 go, the rest waits
    let mut import = client_command(&server.base, &["import", "/copy"])
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = import.stdin.take().unwrap();
    stdin.write_all(&lines[..2500].concat()).await.unwrap();
    stdin.flush().await.unwrap();
    // both batches landed (a read of a stream not there yet waits for its first
    // event, then for index 1999); nothing more is sent until stdin has more
    let landed = http
        .get(server.url("/copy/src?from=1999&limit=1&wait=20000"))
        .send()
        .await
        .unwrap()
        .json::<Vec<serde_json::Value>>()
        .await
        .unwrap();
    assert_eq!(landed.len(), 1, "two batches landed within 20 s");
    import.kill().await.unwrap(); // SIGKILL
    drop(stdin);
    let before = stored(&server.base, "/copy/src").await.len() as u64;
    assert_eq!(before, 2000, "whole batches only");

    // again, with all of it: what landed is there already, the rest is appended
    let (code, said) = run_with_input(&server.base, &["import", "/copy"], &export).await;
    assert_eq!(code, Some(0), "{said}");
    assert!(
        said.contains(&format!(
            "imported {} events ({before} were there already)",
            EVENTS - before
        )),
        "{said}"
    );
    let (source, copy) = (
        stored(&server.base, "/acme/src").await,
        stored(&server.base, "/copy/src").await,
    );
    assert_eq!(copy.len() as u64, EVENTS, "no event twice, none missing");
    let without_stream = |events: Vec<serde_json::Value>| -> Vec<serde_json::Value> {
        events
            .into_iter()
            .map(|mut e| {
                e.as_object_mut().unwrap().remove("stream");
                e
            })
            .collect()
    };
    assert_eq!(without_stream(source), without_stream(copy));
}
