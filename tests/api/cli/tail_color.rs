//! `eddy tail` colours its lines on a terminal (a pseudo-terminal from script(1), as
//! the deploy test uses) and writes plain JSON lines, without escapes, when piped or
//! told `--color never`; Ctrl-C typed on the terminal ends it.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

use super::client_command;
use crate::common::spawn_server;

/// What `eddy tail <args>` shows on a pseudo-terminal, read until it holds `until`
/// (20 s at most); the tail (and script) are killed then.
async fn on_a_terminal(base: &str, args: &str, until: &str) -> String {
    // exec: the terminal's Ctrl-C reaches the tail alone (a shell left waiting for it,
    // such as dash, the usual /bin/sh, would die of the SIGINT and fail script -e)
    let command = format!("exec {} tail {args}", env!("CARGO_BIN_EXE_eddy"));
    let mut script = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("EDDY_SERVER", base)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut out = script.stdout.take().unwrap();
    let mut shown = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&shown).contains(until) {
            let n = out.read(&mut buf).await.unwrap();
            assert!(n > 0, "the tail ended: {}", String::from_utf8_lossy(&shown));
            shown.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .unwrap_or_else(|_| panic!("{until:?} not shown within 20 s"));
    // Ctrl-C typed on the terminal ends the tail, and with it script
    let mut stdin = script.stdin.take().unwrap();
    stdin.write_all(b"\x03").await.unwrap();
    stdin.flush().await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(20), script.wait())
        .await
        .expect("Ctrl-C ends the tail within 20 s")
        .unwrap();
    assert!(status.success(), "{status:?}");
    String::from_utf8_lossy(&shown).into_owned()
}

#[tokio::test]
async fn tail_is_coloured_on_a_terminal_and_plain_when_piped() {
    let s = spawn_server().await;
    for n in 0..2 {
        s.post_ok("/acme/feed", "tick", serde_json::json!({ "n": n }))
            .await;
    }
    let shown = on_a_terminal(&s.base, "/acme/feed --from 0", "#1").await;
    assert!(
        shown.contains("\x1b[36macme/feed\x1b[0m \x1b[2m#0\x1b[0m \x1b[1;33mtick\x1b[0m"),
        "{shown:?}"
    );
    assert!(shown.contains("#1"), "{shown:?}");
    // told not to, on a terminal: no escapes, JSON lines
    let shown = on_a_terminal(&s.base, "/acme/feed --from 0 --color never", "\"index\":1").await;
    assert!(!shown.contains('\x1b'), "{shown:?}");

    // piped: JSON lines, no escapes
    let mut tail = client_command(&s.base, &["tail", "/acme/feed", "--from", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(tail.stdout.take().unwrap()).lines();
    for n in 0..2 {
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("a line within 20 s")
            .unwrap()
            .expect("tail still running");
        assert!(!line.contains('\x1b'), "{line:?}");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["index"], n, "{line}");
        assert_eq!(v["type"], "tick", "{line}");
    }
    tail.kill().await.unwrap();
}
