//! `eddy send` on a pipe that stays open: Ctrl-C (SIGINT) ends the request with every
//! whole line it read stored and the count printed, exit code 0; `--bytes` pieces are
//! readable on the server before stdin closes.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::AsyncWriteExt;
use tokio::process::Child;

use super::{client_command, data_at, stored};
use crate::common::ChildServer;

/// Sends SIGINT to `child`, as Ctrl-C on a terminal does.
fn interrupt(child: &Child) {
    let pid = child.id().expect("still running").to_string();
    let ok = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill -INT {pid}");
}

/// Waits (20 s at most) for `child` to exit: (exit code, stderr).
async fn finished(child: Child) -> (Option<i32>, String) {
    let out = tokio::time::timeout(std::time::Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("eddy send exits within 20 s of SIGINT")
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The count in `sent N events to ...`.
fn count_in(said: &str) -> u64 {
    let at = said
        .find("sent ")
        .unwrap_or_else(|| panic!("no count: {said}"));
    said[at + 5..]
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count: {said}"))
}

#[tokio::test]
async fn sigint_stores_every_whole_line_read_and_prints_the_count() {
    let dir = tempfile::tempdir().unwrap();
    let server = ChildServer::start(dir.path()).await;

    // a producer that never stops writing: the signal comes mid-stream
    let send = ["send", "/acme/busy", "--type", "line"];
    let mut sender = client_command(&server.base, &send)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = sender.stdin.take().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let line = format!("{{\"n\":{n},\"pad\":\"{}\"}}\n", "x".repeat(200));
                // (a closed pipe: eddy send has exited)
                if stdin.write_all(line.as_bytes()).await.is_err() || stdin.flush().await.is_err() {
                    return;
                }
                n += 1;
                tokio::task::yield_now().await;
            }
            // held open until the test is done with the sender
            std::future::pending::<()>().await;
        })
    };
    data_at(&server.base, "/acme/busy", 50).await;
    interrupt(&sender);
    let (code, said) = finished(sender).await;
    stop.store(true, Ordering::SeqCst);
    writer.abort();
    assert_eq!(code, Some(0), "{said}");
    let events = stored(&server.base, "/acme/busy").await;
    assert!(events.len() > 50, "{} events", events.len());
    assert_eq!(count_in(&said), events.len() as u64, "{said}");
    for (i, e) in events.iter().enumerate() {
        assert_eq!(
            e["data"]["n"], i as u64,
            "whole lines, in order, none missing"
        );
        assert_eq!(e["data"]["pad"].as_str().map(str::len), Some(200));
    }

    // everything read has landed, half a line is pending: the lines are all stored,
    // the half line is not
    let mut sender = client_command(&server.base, &["send", "/acme/idle", "--type", "line"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = sender.stdin.take().unwrap();
    for n in 0..5 {
        stdin
            .write_all(format!("{{\"n\":{n}}}\n").as_bytes())
            .await
            .unwrap();
    }
    stdin.write_all(b"{\"n\":").await.unwrap();
    stdin.flush().await.unwrap();
    assert_eq!(data_at(&server.base, "/acme/idle", 4).await["n"], 4);
    interrupt(&sender);
    let (code, said) = finished(sender).await;
    drop(stdin);
    assert_eq!(code, Some(0), "{said}");
    assert!(
        said.contains("sent 5 events to /acme/idle (indexes 0 to 4)"),
        "{said}"
    );
    assert_eq!(stored(&server.base, "/acme/idle").await.len(), 5);
}

#[tokio::test]
async fn bytes_are_readable_on_the_server_while_stdin_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let server = ChildServer::start(dir.path()).await;
    let bytes = [
        "send",
        "/acme/build",
        "--bytes",
        "--content-type",
        "text/plain",
    ];
    let mut sender = client_command(&server.base, &bytes)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = sender.stdin.take().unwrap();
    stdin.write_all(b"compiling a\n").await.unwrap();
    stdin.flush().await.unwrap();
    // a long-poll read answers it while the pipe is still open
    assert_eq!(
        data_at(&server.base, "/acme/build", 0).await,
        "compiling a\n"
    );
    // a piece without a newline goes as it is, too (bytes are not lines)
    stdin.write_all(b"50%").await.unwrap();
    stdin.flush().await.unwrap();
    assert_eq!(data_at(&server.base, "/acme/build", 1).await, "50%");
    assert!(
        sender.try_wait().unwrap().is_none(),
        "eddy send still runs: stdin is open"
    );
    stdin.write_all(b" done\n").await.unwrap();
    drop(stdin);
    let out = sender.wait_with_output().await.unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(said.contains("sent 3 events to /acme/build"), "{said}");
    let r = crate::common::client()
        .get(format!("{}/acme/build", server.base))
        .header("accept", "application/octet-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "compiling a\n50% done\n");
}
