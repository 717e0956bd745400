//! `eddy tail` started at the live end (no `--from`) keeps its place across an
//! outage before it has shown any event, and takes a selector after the stream.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use super::{client_command, healthy};
use crate::common::{client, free_port, storage_args};

/// `eddy serve` on `port` with the suite's storage for `data`, once it answers.
async fn serve_on(port: u16, data: &Path) -> Child {
    let child = Command::new(env!("CARGO_BIN_EXE_eddy"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(storage_args(data))
        .env("EDDY_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    assert!(
        healthy(&format!("http://127.0.0.1:{port}")).await,
        "eddy serve on port {port} did not start"
    );
    child
}

/// Kills a child server (SIGKILL) and waits for it.
async fn kill(mut server: Child) {
    server.kill().await.unwrap();
    server.wait().await.unwrap();
}

async fn post(base: &str, ty: &str, n: u64) {
    let r = client()
        .post(format!("{base}/acme/feed"))
        .header("event-type", ty)
        .json(&serde_json::json!({ "n": n }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
}

/// The `n` of a tail's next line (20 s at most).
async fn next_n(lines: &mut Lines<BufReader<ChildStdout>>) -> u64 {
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("a line within 20 s")
        .unwrap()
        .expect("tail still running");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    v["data"]["n"].as_u64().unwrap()
}

/// Waits (20 s at most) until the server counts `n` live subscriptions.
async fn subscribers(base: &str, n: u64) {
    for _ in 0..400 {
        if crate::common::metric(base, "eddy_subscribers").await == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the server never counted {n} subscribers");
}

#[tokio::test]
async fn tail_from_the_live_end_loses_nothing_across_an_outage_and_takes_a_selector() {
    crate::common::tls_ready();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let server = serve_on(port, dir.path()).await;
    for n in 0..3 {
        post(&base, "tick", n).await;
    }
    // from the live end: none of the 3 events there already
    let mut tail = client_command(&base, &["tail", "/acme/feed", "--data"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(tail.stdout.take().unwrap()).lines();
    subscribers(&base, 1).await;
    // the outage, before the tail has shown anything: the server goes away, events
    // are appended on another port (where the tail does not look), then it comes back
    kill(server).await;
    let elsewhere = free_port();
    let server = serve_on(elsewhere, dir.path()).await;
    for n in 3..6 {
        post(&format!("http://127.0.0.1:{elsewhere}"), "tick", n).await;
    }
    kill(server).await;
    let server = serve_on(port, dir.path()).await;
    for n in 3..6 {
        assert_eq!(next_n(&mut lines).await, n, "no gap, no repeat");
    }
    post(&base, "tick", 6).await;
    assert_eq!(next_n(&mut lines).await, 6);

    // a selector after the stream, merged with the URL's own query
    let mut picky = client_command(&base, &["tail", "/acme/feed?from=0", "type=keep", "--data"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut picked = BufReader::new(picky.stdout.take().unwrap()).lines();
    for (ty, n) in [
        ("keep", 7),
        ("drop", 8),
        ("keep", 9),
        ("drop", 10),
        ("keep", 11),
    ] {
        post(&base, ty, n).await;
    }
    for n in [7, 9, 11] {
        assert_eq!(next_n(&mut picked).await, n, "only type keep");
    }
    for n in 7..12 {
        assert_eq!(next_n(&mut lines).await, n, "the first tail has them all");
    }
    // a selector the server refuses: its message, in one line, exit code 1
    let out = client_command(&base, &["tail", "/acme/feed", "colour=red"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.starts_with("eddy tail: the server answered 400"),
        "{said}"
    );
    assert_eq!(said.lines().count(), 1, "{said}");
    tail.kill().await.unwrap();
    picky.kill().await.unwrap();
    kill(server).await;
}
