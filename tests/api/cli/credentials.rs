//! Credentials and the server of the client subcommands against a server with access
//! control: `send`, `tail`, `export`, `import` and `deploy` each with `EDDY_KEY` and
//! with `--key`, each without a key refused in one line naming the server's 401, and
//! `--server` winning over `EDDY_SERVER`. One server for all of it.

use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

use crate::common::free_port;

/// How a run is given its key.
#[derive(Clone, Copy, Debug)]
enum Key {
    Env,
    Flag,
    None,
}

/// `eddy <args>` against `server` (through `EDDY_SERVER`), with the key as `how` says.
fn eddy(server: &str, key: &str, how: Key, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_eddy"));
    cmd.args(args)
        .env("EDDY_SERVER", server)
        .env_remove("EDDY_KEY")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    match how {
        Key::Env => {
            cmd.env("EDDY_KEY", key);
        }
        Key::Flag => {
            cmd.args(["--key", key]);
        }
        Key::None => {}
    }
    cmd
}

/// Runs `cmd` with `input` on stdin: (exit code, stdout, stderr).
async fn run(mut cmd: Command, input: &[u8]) -> (Option<i32>, String, String) {
    let mut child = cmd.stdin(Stdio::piped()).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn client_subcommands_send_the_key_from_eddy_key_or_key_and_say_401_without_one() {
    let s = crate::access::secured().await;
    let key = crate::access::account(&s, "acme").await;
    let dir = tempfile::tempdir().unwrap();
    let code = dir.path().join("count.js");
    std::fs::write(&code, "(n = 0) => n + 1").unwrap();
    let code = code.to_str().unwrap();
    let export = dir.path().join("orders.ndjson");
    let export = export.to_str().unwrap();

    for (round, how) in [Key::Env, Key::Flag].into_iter().enumerate() {
        // send: the events land
        let input = format!("{{\"n\":{}}}\n{{\"n\":{}}}\n", 2 * round, 2 * round + 1);
        let send = ["send", "/acme/orders", "--type", "placed"];
        let (exit, _, said) = run(eddy(&s.base, &key, how, &send), input.as_bytes()).await;
        assert_eq!(exit, Some(0), "{how:?}: {said}");
        assert!(said.contains("sent 2 events to /acme/orders"), "{said}");

        // tail: the first event shows
        let tail = ["tail", "/acme/orders", "--from", "0", "--data"];
        let mut tail = eddy(&s.base, &key, how, &tail).spawn().unwrap();
        let mut lines = BufReader::new(tail.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(std::time::Duration::from_secs(20), lines.next_line())
            .await
            .expect("a line within 20 s")
            .unwrap()
            .expect("tail still running");
        let first: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(first["data"]["n"], 0, "{how:?}: {line}");
        tail.kill().await.unwrap();

        // a command that exits 0 and says `what`
        let succeeds = async |args: &[&str], what: String| {
            let (exit, _, said) = run(eddy(&s.base, &key, how, args), b"").await;
            assert_eq!(exit, Some(0), "{how:?}: {said}");
            assert!(said.contains(&what), "{how:?}: {said}");
        };

        // export, then import into a stream of its own
        let events = 2 * round + 2;
        let args = ["export", "/acme/orders", "--output", export];
        succeeds(&args, format!("exported {events} events")).await;
        let copy = format!("/acme/copy{round}");
        succeeds(
            &["import", &copy, export],
            format!("imported {events} events"),
        )
        .await;

        // deploy: the reducer folds what is there
        let reducer = format!("/acme/orders.count{round}");
        let args = ["deploy", &reducer, code];
        succeeds(&args, format!("count{round} caught up")).await;
    }
    let copied = s
        .client
        .get(s.url("/acme/copy1"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json::<Vec<serde_json::Value>>()
        .await
        .unwrap();
    assert_eq!(copied.len(), 4, "{copied:?}");

    // without a key: one line naming the server's 401, exit code 1, nothing written
    let refused: [(&str, &[&str]); 5] = [
        ("send", &["send", "/acme/orders", "--type", "placed"]),
        ("tail", &["tail", "/acme/orders", "--from", "0"]),
        ("import", &["import", "/acme/copy2", export]),
        ("export", &["export", "/acme/orders", "--output", export]),
        ("deploy", &["deploy", "/acme/orders.nokey", code]),
    ];
    for (name, args) in refused {
        let run = run(eddy(&s.base, &key, Key::None, args), b"{\"n\":99}\n");
        let (exit, out, said) = tokio::time::timeout(std::time::Duration::from_secs(20), run)
            .await
            .unwrap_or_else(|_| panic!("eddy {name} without a key did not end"));
        assert_eq!(exit, Some(1), "{name}: {said}");
        assert!(out.is_empty(), "{name}: {out}");
        assert_eq!(said.lines().count(), 1, "{name}: {said}");
        assert!(
            said.starts_with(&format!("eddy {name}: ")),
            "{name}: {said}"
        );
        assert!(said.contains("the server answered 401"), "{name}: {said}");
    }
    let orders = s
        .client
        .get(s.url("/acme/orders"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json::<Vec<serde_json::Value>>()
        .await
        .unwrap();
    assert_eq!(orders.len(), 4, "nothing sent without a key landed");

    // --server wins over EDDY_SERVER (which names a port where nothing listens)
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let args = [
        "send",
        "/acme/orders",
        "--type",
        "placed",
        "--server",
        &s.base,
    ];
    let (exit, _, said) = run(eddy(&nowhere, &key, Key::Env, &args), b"{\"n\":4}\n").await;
    assert_eq!(exit, Some(0), "{said}");
    assert!(
        said.contains("sent 1 event to /acme/orders (indexes 4 to 4)"),
        "{said}"
    );
    // and EDDY_SERVER alone is used: nothing listens there
    let args = ["send", "/acme/orders", "--type", "placed"];
    let (exit, _, said) = run(eddy(&nowhere, &key, Key::Env, &args), b"{\"n\":5}\n").await;
    assert_eq!(exit, Some(1), "{said}");
    assert!(
        said.starts_with(&format!("eddy send: cannot reach {nowhere}")),
        "{said}"
    );
}
