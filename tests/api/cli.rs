//! The `eddy` command line: an open server refuses a non-loopback address unless told
//! `--insecure-open`; one with an admin token may; a second server on a data directory
//! in use refuses to start.

mod credentials;
mod help;
mod interrupted_import;
mod send_live;
mod tail_color;
mod tail_live;
mod test_parity;

use std::process::Stdio;

use tokio::process::Command;

use crate::common::{ChildServer, client, free_port};

#[tokio::test]
async fn open_server_refuses_a_public_listen_address() {
    crate::common::tls_ready();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_eddy"))
        .args(["serve", "--listen", "0.0.0.0:0", "--data"])
        .arg(dir.path())
        .stdout(Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--insecure-open"), "{err}");
    assert!(
        !dir.path().join("eddy.db").exists(),
        "nothing is created before the check"
    );

    let port = free_port();
    let mut child = start_child(
        &format!("0.0.0.0:{port}"),
        &["--insecure-open"],
        &[],
        dir.path(),
        &format!("http://127.0.0.1:{port}"),
    )
    .await;
    child.kill().await.unwrap();
}

#[tokio::test]
async fn a_server_with_an_admin_token_may_listen_publicly() {
    crate::common::tls_ready();
    let dir = tempfile::tempdir().unwrap();
    // a short admin token is refused before anything starts
    let out = Command::new(env!("CARGO_BIN_EXE_eddy"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-token",
            "short",
            "--data",
        ])
        .arg(dir.path())
        .stdout(Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("admin token"), "{err}");

    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut child = start_child(
        &format!("0.0.0.0:{port}"),
        &[],
        &[("EDDY_ADMIN_TOKEN", "a-long-enough-admin-token-0123")],
        dir.path(),
        &base,
    )
    .await;
    let r = reqwest::get(format!("{base}/acme/s")).await.unwrap();
    assert_eq!(r.status(), 401, "requests need credentials");
    child.kill().await.unwrap();
}

#[tokio::test]
async fn a_second_server_on_the_same_data_directory_refuses_to_start() {
    crate::common::tls_ready();
    if crate::common::on_postgres() {
        // on PostgreSQL a second server joins the first as another node
        // (tests/api/cluster.rs)
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut first = ChildServer::start(dir.path()).await;
    let c = client();
    let r = c
        .post(format!("{}/acme/s?event-type=a", first.base))
        .json(&serde_json::json!({"n": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    let out = Command::new(env!("CARGO_BIN_EXE_eddy"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(crate::common::storage_args(dir.path()))
        .stdout(Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(!out.status.success(), "the second server must not start");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by another eddy server"), "{err}");

    // the first server goes on as before
    let r = c
        .post(format!("{}/acme/s?event-type=a", first.base))
        .json(&serde_json::json!({"n": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let events: Vec<serde_json::Value> = c
        .get(format!("{}/acme/s", first.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(events.len(), 2);

    // once it is gone (killed: the kernel drops its lock), the directory opens again
    first.child.kill().await.unwrap();
    let again = ChildServer::start(dir.path()).await;
    let events: Vec<serde_json::Value> = c
        .get(format!("{}/acme/s", again.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(events.len(), 2);
}

#[tokio::test]
async fn listen_takes_a_host_name() {
    crate::common::tls_ready();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = start_child(
        &format!("localhost:{port}"),
        &[],
        &[],
        dir.path(),
        &format!("http://localhost:{port}"),
    )
    .await;
    child.kill().await.unwrap();
}

#[tokio::test]
async fn help_gives_the_admin_token_minimum() {
    let out = Command::new(env!("CARGO_BIN_EXE_eddy"))
        .args(["serve", "--help"])
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    // (words joined again, however clap wraps the lines)
    let help = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let at = help.find("--admin-token").expect("--admin-token in --help");
    assert!(
        help[at..].contains("at least 16"),
        "--help does not give the admin token's minimum length: {help}"
    );
}

/// Starts `eddy serve --listen <listen> <extra…> --data <dir>` with `env`, and waits
/// until `<base>/healthz` answers.
async fn start_child(
    listen: &str,
    extra: &[&str],
    env: &[(&str, &str)],
    dir: &std::path::Path,
    base: &str,
) -> tokio::process::Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_eddy"));
    cmd.args(["serve", "--listen", listen])
        .args(extra)
        .arg("--data")
        .arg(dir)
        .env("EDDY_LOG", "warn")
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().unwrap();
    assert!(
        healthy(base).await,
        "eddy serve --listen {listen} {extra:?} did not start"
    );
    child
}

/// Waits (30 s at most) for a child server's `/healthz` to answer 200.
async fn healthy(base: &str) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        if reqwest::get(format!("{base}/healthz"))
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    false
}

#[tokio::test]
async fn private_targets_are_allowed_by_the_flag_its_old_name_or_either_variable() {
    crate::common::tls_ready();
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], u16);
    let cases: [Case; 5] = [
        (&[], &[], 400),
        (&["--allow-private-targets"], &[], 201),
        (&["--allow-private-webhooks"], &[], 201),
        (&[], &[("EDDY_ALLOW_PRIVATE_TARGETS", "true")], 201),
        (&[], &[("EDDY_ALLOW_PRIVATE_WEBHOOKS", "true")], 201),
    ];
    for (flags, env, status) in cases {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let base = format!("http://127.0.0.1:{port}");
        let mut child =
            start_child(&format!("127.0.0.1:{port}"), flags, env, dir.path(), &base).await;
        let r = client()
            .post(format!("{base}/acme/s/webhooks"))
            .json(&serde_json::json!({"url": "http://127.0.0.1:9/hook"}))
            .send()
            .await
            .unwrap();
        let code = r.status().as_u16();
        let body = r.text().await.unwrap();
        assert_eq!(code, status, "{flags:?} {env:?}: {body}");
        if status == 400 {
            assert!(body.contains("--allow-private-targets"), "{body}");
        }
        child.kill().await.unwrap();
    }
}

/// `eddy test` with `args`, in `dir`: (exit code, stdout, stderr).
async fn eddy_test(dir: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_eddy"))
        .arg("test")
        .args(args)
        .current_dir(dir)
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every reducer in `examples/reducers/` ends in its expected state through `eddy
/// test`, as its README tells reducer authors to check.
#[tokio::test]
async fn eddy_test_passes_every_example_reducer() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/reducers");
    let mut ran = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let Some(ext @ ("js" | "ts")) = path.extension().and_then(|e| e.to_str()) else {
            continue;
        };
        let stem = path.file_stem().unwrap().to_str().unwrap().to_owned();
        let (code, stdout, stderr) = eddy_test(
            &dir,
            &[
                &format!("{stem}.{ext}"),
                "--events",
                &format!("{stem}.events.json"),
                "--expect",
                &format!("{stem}.expected.json"),
            ],
        )
        .await;
        assert_eq!(code, 0, "{stem}: {stderr}");
        let expected: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join(format!("{stem}.expected.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&stdout).unwrap(),
            expected
        );
        ran += 1;
    }
    assert!(ran >= 3, "only {ran} example reducers");
}

#[tokio::test]
async fn eddy_test_shows_a_mismatch_errors_and_dispatches_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
    write(
        "alerts.ts",
        "export default (s: {n: number} = {n: 0}, e: {data: {t: number}}) => {\n\
         if (e.data.t > 100) dispatch('alerts', {type: 'hot', data: {t: e.data.t}});\n\
         if (e.data.t < 0) throw new Error('negative reading');\n\
         console.log('seen', e.data.t);\n\
         return {n: s.n + 1};\n}",
    );
    write(
        "events.ndjson",
        "{\"type\":\"r\",\"data\":{\"t\":150}}\n{\"type\":\"r\",\"data\":{\"t\":-1}}\n{\"type\":\"r\",\"data\":{\"t\":5}}\n",
    );
    write("expected.json", "{\"n\": 3}");
    let (code, stdout, stderr) = eddy_test(
        dir.path(),
        &[
            "alerts.ts",
            "--events",
            "events.ndjson",
            "--expect",
            "expected.json",
        ],
    )
    .await;
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&stdout).unwrap(),
        serde_json::json!({"n": 2})
    );
    assert!(
        stderr.contains(r#"[0] dispatch to alerts: hot {"t":150}"#),
        "{stderr}"
    );
    assert!(stderr.contains("[0] console.log: seen 150"), "{stderr}");
    assert!(
        stderr.contains("[1] error: Error: negative reading"),
        "{stderr}"
    );
    assert!(stderr.contains("state.n: expected 3, got 2"), "{stderr}");
    // --halt stops at the event that threw, and a halt is a failure
    let (code, stdout, stderr) = eddy_test(
        dir.path(),
        &["alerts.ts", "--events", "events.ndjson", "--halt"],
    )
    .await;
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&stdout).unwrap(),
        serde_json::json!({"n": 1})
    );
    assert!(stderr.contains("halted at event 1"), "{stderr}");
    // bad input: one sentence, exit code 2
    let (code, _, stderr) =
        eddy_test(dir.path(), &["missing.js", "--events", "events.ndjson"]).await;
    assert_eq!(code, 2);
    assert!(
        stderr.starts_with("eddy test: cannot read missing.js"),
        "{stderr}"
    );
    write("broken.js", "(s, e) => {");
    let (code, _, stderr) =
        eddy_test(dir.path(), &["broken.js", "--events", "events.ndjson"]).await;
    assert_eq!(code, 2);
    assert!(
        stderr.contains("broken.js: Unexpected token at line 2"),
        "{stderr}"
    );
}

/// `eddy send` and `eddy tail` against `base`.
fn client_command(base: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_eddy"));
    cmd.args(args)
        .env("EDDY_SERVER", base)
        .env_remove("EDDY_KEY")
        .kill_on_drop(true);
    cmd
}

/// Lines of NDJSON events read back from `base`.
async fn stored(base: &str, path: &str) -> Vec<serde_json::Value> {
    crate::common::read_all(&client(), &format!("{base}{path}")).await
}

/// The `X-Stream-Metadata` a read of `path` on `base` answers.
async fn stream_metadata(base: &str, path: &str) -> Option<String> {
    let r = client().get(format!("{base}{path}")).send().await.unwrap();
    assert_eq!(r.status(), 200, "GET {path}");
    r.headers()
        .get("x-stream-metadata")
        .map(|v| v.to_str().unwrap().to_owned())
}

/// The data of event `index` of `path`, waited for (10 s at most).
async fn data_at(base: &str, path: &str, index: u64) -> serde_json::Value {
    let r = client()
        .get(format!("{base}{path}?from={index}&wait=10000"))
        .send()
        .await
        .unwrap();
    r.json::<serde_json::Value>().await.unwrap()[0]["data"].clone()
}

/// Runs `eddy <args>` against `base` with `input` on stdin (closed after it), and
/// answers its exit status and stderr.
async fn run_with_input(base: &str, args: &[&str], input: &[u8]) -> (Option<i32>, String) {
    use tokio::io::AsyncWriteExt;
    let mut child = client_command(base, args)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn eddy_send_streams_stdin_and_a_killed_sender_leaves_what_it_sent() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let server = ChildServer::start(dir.path()).await;
    let mut sender = client_command(&server.base, &["send", "/acme/logs", "--type", "line"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = sender.stdin.take().unwrap();
    stdin.write_all(b"{\"n\":1}\n{\"n\":2}\n").await.unwrap();
    stdin.flush().await.unwrap();
    // stored while the sender still runs: each line as it arrives
    assert_eq!(data_at(&server.base, "/acme/logs", 1).await["n"], 2);
    stdin.write_all(b"{\"n\":3}\n").await.unwrap();
    stdin.flush().await.unwrap();
    assert_eq!(data_at(&server.base, "/acme/logs", 2).await["n"], 3);
    sender.kill().await.unwrap();
    assert_eq!(stored(&server.base, "/acme/logs").await.len(), 3);

    // to the end of stdin: the count, exit code 0
    let send = ["send", "/acme/logs", "--type", "line"];
    let (code, said) = run_with_input(&server.base, &send, b"{\"n\":4}\n{\"n\":5}").await;
    assert_eq!(code, Some(0));
    assert!(
        said.contains("sent 2 events to /acme/logs (indexes 3 to 4)"),
        "{said}"
    );
    // factory args that need escaping in a URL, as a shell user types them
    let odd = ["send", "/acme/f('a b/./c#1')", "--type", "t"];
    let (code, said) = run_with_input(&server.base, &odd, b"{\"odd\":true}\n").await;
    assert_eq!(code, Some(0), "{said}");
    let subs = client()
        .get(format!("{}/acme/f/substreams", server.base))
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(subs[0]["args"], "'a b/./c#1'", "{subs}");
    // bytes, and an error in one sentence with exit code 1
    let bytes = [
        "send",
        "/acme/build",
        "--bytes",
        "--content-type",
        "text/plain",
    ];
    let (code, said) = run_with_input(&server.base, &bytes, b"compiling\n").await;
    assert_eq!(code, Some(0), "{said}");
    let r = client()
        .get(format!("{}/acme/build", server.base))
        .header("accept", "application/octet-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "compiling\n");
    let (code, said) = run_with_input(&server.base, &send, b"not json\n").await;
    assert_eq!(code, Some(1));
    assert!(
        said.starts_with(
            "eddy send: the server answered 400: line 1: event data is not valid JSON"
        ),
        "{said}"
    );
    assert_eq!(said.lines().count(), 1, "{said}");
    // what came before a refused line is stored, and said
    let (code, said) =
        run_with_input(&server.base, &send, b"{\"a\":1}\n{\"a\":2}\nnot json\n").await;
    assert_eq!(code, Some(1));
    assert!(
        said.contains("line 3: ")
            && said
                .trim_end()
                .ends_with("(the 2 events before it are stored)"),
        "{said}"
    );
}

#[tokio::test]
async fn eddy_tail_resumes_across_a_server_restart_without_gaps_or_repeats() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    crate::common::tls_ready();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let base = format!("http://{listen}");
    let mut server = start_child(&listen, &[], &[], dir.path(), &base).await;
    let post = |n: u64| {
        let base = base.clone();
        async move {
            let r = client()
                .post(format!("{base}/acme/feed"))
                .header("event-type", "tick")
                .json(&serde_json::json!({ "n": n }))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
        }
    };
    for n in 0..3 {
        post(n).await;
    }
    let mut tail = client_command(&base, &["tail", "/acme/feed", "--from", "0", "--data"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(tail.stdout.take().unwrap()).lines();
    let mut next = async || -> u64 {
        let line = tokio::time::timeout(std::time::Duration::from_secs(20), lines.next_line())
            .await
            .expect("a line within 20 s")
            .unwrap()
            .expect("tail still running");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        v["data"]["n"].as_u64().unwrap()
    };
    for n in 0..3 {
        assert_eq!(next().await, n);
    }
    server.kill().await.unwrap();
    server.wait().await.unwrap();
    server = start_child(&listen, &[], &[], dir.path(), &base).await;
    for n in 3..6 {
        post(n).await;
    }
    for n in 3..6 {
        assert_eq!(next().await, n, "no gap, no repeat");
    }
    tail.kill().await.unwrap();
    server.kill().await.unwrap();
    server.wait().await.unwrap();
    // a server that cannot be reached at the start: one sentence, exit code 1
    let out = client_command(&base, &["tail", "/acme/feed"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.starts_with(&format!("eddy tail: cannot reach {base}")),
        "{said}"
    );
}

#[tokio::test]
async fn export_then_import_into_a_fresh_server_reads_the_same_and_runs_again_safely() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (
        ChildServer::start(dir_a.path()).await,
        ChildServer::start(dir_b.path()).await,
    );
    let http = client();
    for n in 0..2500u64 {
        let stream = if n % 2 == 0 {
            "/acme/orders"
        } else {
            "/acme/carts('c1')"
        };
        // the first event of each creates its stream, with metadata (a factory's
        // through its first substream)
        let metadata = match n {
            0 => r#"{"owner":"shop team","tier":1}"#,
            1 => r#"{"kind":"carts","note":"caf\u00e9"}"#,
            _ => "{}",
        };
        let r = http
            .post(format!("{}{stream}", a.base))
            .header("event-type", "e")
            .header("x-stream-metadata", metadata)
            .json(&serde_json::json!({ "n": n }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    // events with metadata: EventStore's batch format, and eddy's own
    let es = serde_json::json!([
        {"eventId": "0b7d6f5e-1c2a-4e3b-9f00-000000000001", "eventType": "m",
         "data": {"a": 1}, "metadata": {"trace": "t-1", "user": "zoë"}},
        {"eventId": "0b7d6f5e-1c2a-4e3b-9f00-000000000002", "eventType": "m",
         "data": {"a": 2}, "metadata": [1, "two", null]},
    ]);
    let r = http
        .post(format!("{}/acme/meta", a.base))
        .header("content-type", "application/vnd.eventstore.events+json")
        .json(&es)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    let own = serde_json::json!([
        {"type": "m", "data": {"a": 3}, "metadata": {"trace": "t-3"}},
        {"type": "m", "data": {"a": 4}},
    ]);
    let r = http
        .post(format!("{}/acme/meta", a.base))
        .header("content-type", "application/vnd.eddy.events+json")
        .json(&own)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    // an event's origin is the server's to write, never a client's
    let forged = serde_json::json!([
        {"type": "m", "data": {}, "origin": {"stream": "acme/orders", "index": 0}},
    ]);
    let r = http
        .post(format!("{}/acme/meta", a.base))
        .header("content-type", "application/vnd.eddy.events+json")
        .json(&forged)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "{:?}", r.text().await);
    let r = http
        .post(format!("{}/acme/blob", a.base))
        .header("event-type", "raw")
        .header("content-type", "application/octet-stream")
        .body(vec![0u8, 1, 2, 255])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let file = dir_a.path().join("acme.ndjson");
    let out = client_command(
        &a.base,
        &["export", "/acme", "--output", file.to_str().unwrap()],
    )
    .output()
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("exported 2505 events of 4 streams"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // each stream's first line carries the stream's metadata; events carry their own
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let first_orders = lines.iter().find(|e| e["stream"] == "acme/orders").unwrap();
    assert_eq!(first_orders["streamMetadata"]["owner"], "shop team");
    assert_eq!(
        lines
            .iter()
            .filter(|e| e.get("streamMetadata").is_some())
            .count(),
        2,
        "orders and carts have metadata, blob and meta none"
    );
    assert_eq!(
        lines.iter().filter(|e| e.get("metadata").is_some()).count(),
        3
    );
    let import = async || {
        client_command(&b.base, &["import", "/acme", file.to_str().unwrap()])
            .output()
            .await
            .unwrap()
    };
    let out = import().await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // the same reads: ids, types, timestamps, data, metadata, indexes; and the same
    // stream metadata
    for path in [
        "/acme/orders",
        "/acme/carts('c1')",
        "/acme/carts",
        "/acme/blob",
        "/acme/meta",
    ] {
        let (before, after) = (stored(&a.base, path).await, stored(&b.base, path).await);
        assert!(!before.is_empty());
        assert_eq!(before, after, "{path}");
        let (before, after) = (
            stream_metadata(&a.base, path).await,
            stream_metadata(&b.base, path).await,
        );
        assert_eq!(before, after, "{path}");
    }
    assert_eq!(
        stream_metadata(&b.base, "/acme/carts('c1')").await,
        Some(r#"{"kind":"carts","note":"caf\u00e9"}"#.to_owned())
    );
    assert_eq!(stored(&b.base, "/acme/meta").await[1]["metadata"][1], "two");
    // again: everything is there already, nothing is appended twice
    let out = import().await;
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("imported 0 events (2505 were there already)"),
        "{said}"
    );
    assert_eq!(stored(&b.base, "/acme/orders").await.len(), 1250);
    // into one stream of another account
    let out = client_command(&b.base, &["import", "/bob/copy", file.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    assert!(
        !out.status.success(),
        "a plain stream takes no substream events"
    );
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.starts_with("eddy import: "), "{said}");
    assert_eq!(said.trim().lines().count(), 1, "{said}");
}

/// Hand-written NDJSON: lines without an id are imported once however often the file
/// is, and `"encoding": "base64"` data is decoded for JSON and text as `eddy test`
/// decodes it.
#[tokio::test]
async fn an_import_of_lines_without_ids_or_with_base64_data() {
    use serde_json::json;
    let dir = tempfile::tempdir().unwrap();
    let server = ChildServer::start(dir.path()).await;
    let file = dir.path().join("hand.ndjson");
    std::fs::write(
        &file,
        concat!(
            r#"{"stream":"x/a","type":"t","data":1}"#,
            "\n",
            r#"{"stream":"x/a","type":"t","data":1}"#,
            "\n",
            r#"{"stream":"x/a","type":"t","data":"eyJhIjoxfQ==","encoding":"base64","contentType":"application/json"}"#,
            "\n",
            r#"{"stream":"x/a","type":"t","data":"aGk=","encoding":"base64","contentType":"text/plain"}"#,
            "\n",
            r#"{"stream":"x/a","type":"t","data":"AAE=","encoding":"base64","contentType":"application/octet-stream"}"#,
            "\n",
        ),
    )
    .unwrap();
    for round in 0..2 {
        let out = client_command(&server.base, &["import", "/h", file.to_str().unwrap()])
            .output()
            .await
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{said}");
        let wanted = if round == 0 {
            "imported 5 events (0 were there already)"
        } else {
            "imported 0 events (5 were there already)"
        };
        assert!(said.contains(wanted), "round {round}: {said}");
    }
    let events = stored(&server.base, "/h/a").await;
    let data: Vec<&serde_json::Value> = events.iter().map(|e| &e["data"]).collect();
    assert_eq!(
        data[..4],
        [&json!(1), &json!(1), &json!({"a": 1}), &json!("hi")]
    );
    assert_eq!(
        (&events[4]["data"], &events[4]["encoding"]),
        (&json!("AAE="), &json!("base64"))
    );
    // what cannot be decoded is refused with its line
    std::fs::write(
        &file,
        r#"{"stream":"x/a","type":"t","data":"!!","encoding":"base64","contentType":"application/json"}"#,
    )
    .unwrap();
    let out = client_command(&server.base, &["import", "/h", file.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(said.contains("line 1") && said.contains("base64"), "{said}");
}

/// `eddy backup` under write load: a server started on the copy has every event
/// acknowledged before the backup began.
#[tokio::test]
async fn backup_under_write_load_has_everything_acknowledged_before_it() {
    // (an embedded database whichever backend the suite runs on)
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = ChildServer::start_embedded(&data, &[]).await;
    let acked = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (base, acked, stop) = (server.base.clone(), acked.clone(), stop.clone());
        tokio::spawn(async move {
            let http = client();
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let r = http
                    .post(format!("{base}/acme/load"))
                    .header("event-type", "w")
                    .json(&serde_json::json!({ "n": n }))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 201);
                n += 1;
                acked.store(n, std::sync::atomic::Ordering::SeqCst);
            }
        })
    };
    while acked.load(std::sync::atomic::Ordering::SeqCst) < 200 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let before = acked.load(std::sync::atomic::Ordering::SeqCst);
    let copy = dir.path().join("copy");
    let out = Command::new(env!("CARGO_BIN_EXE_eddy"))
        .args(["backup", "--data"])
        .arg(&data)
        .arg(&copy)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    writer.await.unwrap();
    let restored = ChildServer::start_embedded(&copy, &[]).await;
    let events = stored(&restored.base, "/acme/load").await;
    assert!(
        events.len() as u64 >= before,
        "{} of {before}",
        events.len()
    );
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["data"]["n"], i as u64, "in order, none missing");
    }
    // a second backup to the same place is refused, in one sentence
    let out = Command::new(env!("CARGO_BIN_EXE_eddy"))
        .args(["backup", "--data"])
        .arg(&data)
        .arg(&copy)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("exists already"));
}

#[tokio::test]
async fn eddy_deploy_follows_the_rebuild_piped_and_on_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let server = ChildServer::start(dir.path()).await;
    let http = client();
    for part in 0..10 {
        let batch: Vec<serde_json::Value> = (0..1000)
            .map(|i| serde_json::json!({"type": "n", "data": {"n": part * 1000 + i}}))
            .collect();
        let r = http
            .post(format!("{}/acme/nums", server.base))
            .header("content-type", "application/vnd.eddy.events+json")
            .json(&batch)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let code = dir.path().join("sum.js");
    std::fs::write(
        &code,
        "(s = 0, e) => { if (e.data.n === 7) throw new Error('seven'); return s + e.data.n }",
    )
    .unwrap();
    let code = code.to_str().unwrap();
    let out = client_command(&server.base, &["deploy", "/acme/nums.sum", code])
        .output()
        .await
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("deployed sum"), "{said}");
    assert!(
        said.contains("sum caught up: folded 10000 events"),
        "{said}"
    );
    assert!(
        said.contains("1 event threw; the first errors in the log:"),
        "{said}"
    );
    assert!(said.contains("acme/nums #7: Error: seven"), "{said}");
    assert!(!said.contains('\r'), "no progress bar when piped: {said}");
    let state = http
        .get(format!("{}/acme/nums.sum", server.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        state,
        (0..10_000u64).sum::<u64>().saturating_sub(7).to_string()
    );

    // a reducer that halts is said to halt, not to have caught up, and fails
    let out = client_command(
        &server.base,
        &["deploy", "/acme/nums.h", code, "--on-error", "halt"],
    )
    .output()
    .await
    .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("h halted") && said.contains("seven"),
        "{said}"
    );
    assert!(!said.contains("caught up"), "{said}");

    // on a terminal (a pseudo-terminal from script(1)): a progress bar
    let command = format!(
        "EDDY_SERVER={} {} deploy /acme/nums.count {}",
        server.base,
        env!("CARGO_BIN_EXE_eddy"),
        dir.path().join("count.js").display()
    );
    std::fs::write(dir.path().join("count.js"), "(n = 0) => n + 1").unwrap();
    let out = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .output()
        .await
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{shown}");
    assert!(shown.contains("\r["), "a progress bar: {shown}");
    assert!(shown.contains("100% 10000/10000 events"), "{shown}");
    // a syntax error is refused at its line, in one sentence, exit code 1
    std::fs::write(
        dir.path().join("bad.ts"),
        "export default (s: number, e) => {\n  return s +;\n}",
    )
    .unwrap();
    let bad = dir.path().join("bad.ts");
    let out = client_command(
        &server.base,
        &["deploy", "/acme/nums.bad", bad.to_str().unwrap()],
    )
    .output()
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.starts_with(
            "eddy deploy: the server answered 400: the reducer code has a syntax error"
        ),
        "{said}"
    );
    assert!(said.contains("line 2"), "{said}");
}
