//! `eddy test` folds as the server does: a factory reducer that uses the event's
//! clock and random numbers, `event.args` and data of several content types ends, on
//! an export of the stream, with the states the server lists; the sandbox's time
//! limit stops a loop; `--current` gives the states a reducer reads, and `--with` folds
//! the reducers it reads alongside, in the server's order.

use serde_json::{Value, json};

use super::eddy_test;
use crate::common::spawn_server;

const SUMMARY: &str = "export default (s = { n: 0, seen: [] }, event, index) => {
  s.n++;
  s.seen.push({
    index,
    now: Date.now(),
    date: new Date().toISOString(),
    roll: Math.random(),
    args: event.args,
    stream: event.stream,
    id: event.id,
    contentType: event.contentType,
    encoding: event.encoding ?? null,
    data: event.data,
  });
  return s;
};
";

#[tokio::test]
async fn an_export_folds_to_the_servers_states_and_a_wrong_expectation_is_a_diff() {
    let s = spawn_server().await;
    // data of each kind, to substreams with a string, a number and two args
    let posts: [(&str, &str, &[u8]); 6] = [
        (
            "/acme/carts('c1')",
            "application/json",
            br#"{"sku":"a","qty":2}"#,
        ),
        ("/acme/carts(7)", "text/plain", b"hello \"there\""),
        (
            "/acme/carts('c1')",
            "text/csv;header=present",
            b"sku,qty\na,1\nb,3\n",
        ),
        ("/acme/carts('c2',true)", "text/csv", b"x,y\n1,2\n"),
        (
            "/acme/carts(7)",
            "application/x-www-form-urlencoded",
            b"sku=c&note=a+b",
        ),
        (
            "/acme/carts('c1')",
            "application/octet-stream",
            &[0, 1, 254, 255],
        ),
    ];
    for (path, content_type, body) in posts {
        let r = s
            .client
            .post(s.url(path))
            .header("event-type", "line")
            .header("content-type", content_type)
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{path}: {:?}", r.text().await);
    }
    let r = s
        .client
        .put(s.url("/acme/carts.summary"))
        .header("content-type", "application/javascript")
        .body(SUMMARY)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{:?}", r.text().await);
    // each substream folded to its last event
    for (sub, last) in [("('c1')", 2), ("(7)", 1), ("('c2',true)", 0)] {
        let r = s
            .get(&format!(
                "/acme/carts{sub}.summary?min-index={last}&wait=20000"
            ))
            .await;
        assert_eq!(r.status(), 200, "{sub}");
    }
    let listing = s.get_json("/acme/carts.summary", 200).await;
    assert_eq!(listing.as_array().unwrap().len(), 3, "{listing}");
    // the server's own states differ by substream, event and id (the checks below
    // would pass vacuously otherwise)
    let c1 = &listing[0]["state"]["seen"];
    assert_eq!(c1[0]["args"], json!(["c1"]), "{listing}");
    assert_eq!(
        c1[1]["data"],
        json!([{"sku": "a", "qty": "1"}, {"sku": "b", "qty": "3"}])
    );
    assert_eq!(c1[2]["encoding"], "base64");
    assert_ne!(c1[0]["roll"], c1[1]["roll"]);
    assert_eq!(listing[1]["state"]["seen"][0]["data"], "hello \"there\"");
    assert_eq!(listing[2]["state"]["seen"][0]["args"], json!(["c2", true]));

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("summary.js"), SUMMARY).unwrap();
    std::fs::write(dir.join("server.json"), listing.to_string()).unwrap();
    let export = dir.join("carts.ndjson");
    let out = super::client_command(
        &s.base,
        &[
            "export",
            "/acme/carts",
            "--output",
            export.to_str().unwrap(),
        ],
    )
    .output()
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let (code, stdout, stderr) = eddy_test(
        dir,
        &[
            "summary.js",
            "--events",
            "carts.ndjson",
            "--expect",
            "server.json",
        ],
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("the state is the one in server.json"),
        "{stderr}"
    );
    let printed: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(printed, listing, "printed as the server lists it");

    // a different expectation: exit code 1, the difference named by substream
    let mut wrong = listing.clone();
    wrong[1]["state"]["n"] = json!(5);
    std::fs::write(dir.join("wrong.json"), wrong.to_string()).unwrap();
    let (code, _, stderr) = eddy_test(
        dir,
        &[
            "summary.js",
            "--events",
            "carts.ndjson",
            "--expect",
            "wrong.json",
        ],
    )
    .await;
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("(7).state.n: expected 5, got 2"),
        "{stderr}"
    );

    // events of a factory and of a plain stream in one file: refused, exit code 2
    let mut mixed = std::fs::read_to_string(&export).unwrap();
    mixed.push_str(r#"{"type":"x","data":{}}"#);
    std::fs::write(dir.join("mixed.ndjson"), mixed).unwrap();
    let (code, _, stderr) = eddy_test(dir, &["summary.js", "--events", "mixed.ndjson"]).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("event 6 of mixed.ndjson has no args"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_loop_is_stopped_by_the_time_limit_at_its_event() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
    write(
        "spin.js",
        "(n = 0, e) => { if (e.data.spin) { while (true) {} } return n + 1 }",
    );
    write(
        "events.json",
        r#"[{"type":"t","data":{}},{"type":"t","data":{"spin":true}},{"type":"t","data":{}}]"#,
    );
    let started = std::time::Instant::now();
    let (code, stdout, stderr) =
        eddy_test(dir.path(), &["spin.js", "--events", "events.json"]).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("[1] error: the reducer ran longer than the time limit of 100 ms"),
        "{stderr}"
    );
    assert!(stderr.contains("1 event was stopped"), "{stderr}");
    // the others folded, as the server skips the event and goes on
    assert_eq!(stdout.trim(), "2");
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    // without the loop: exit code 0
    write("calm.json", r#"[{"type":"t","data":{}}]"#);
    let (code, stdout, stderr) = eddy_test(dir.path(), &["spin.js", "--events", "calm.json"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.trim(), "1");
}

#[tokio::test]
async fn current_gives_the_states_a_reducer_reads() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
    write(
        "share.js",
        "(s = [], e, i, current) => [...s, e.data.v / current.total]",
    );
    write(
        "events.json",
        r#"[{"type":"t","data":{"v":1}},{"type":"t","data":{"v":3}}]"#,
    );
    write("current.json", r#"{"total": 4}"#);
    let (code, stdout, stderr) = eddy_test(
        dir.path(),
        &[
            "share.js",
            "--events",
            "events.json",
            "--current",
            "current.json",
        ],
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        serde_json::from_str::<Value>(&stdout).unwrap(),
        json!([0.25, 0.75])
    );
    // without it, current.total is undefined, and the run says so
    let (code, stdout, stderr) =
        eddy_test(dir.path(), &["share.js", "--events", "events.json"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("reads current.total"), "{stderr}");
    assert_eq!(
        serde_json::from_str::<Value>(&stdout).unwrap(),
        json!([null, null]),
        "NaN is null in JSON"
    );
    // a file that is not an object of states: exit code 2, one sentence
    write("bad.json", "[4]");
    let (code, _, stderr) = eddy_test(
        dir.path(),
        &[
            "share.js",
            "--events",
            "events.json",
            "--current",
            "bad.json",
        ],
    )
    .await;
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.starts_with("eddy test: bad.json must be a JSON object"),
        "{stderr}"
    );
}

#[tokio::test]
async fn with_folds_the_reducers_read_alongside_as_the_server_does() {
    // share reads total, which reads count: the server folds count, total, share
    const COUNT: &str = "(n = 0) => n + 1";
    const TOTAL: &str = "(t = 0, e, i, current) => t + e.data.v * current.count";
    const SHARE: &str = "(s = [], e, i, current) => { console.log('total', current.total); return [...s, e.data.v / current.total]; }";
    // deployed before the events, so that the server folds each event through all
    // three in turn (a reducer deployed later rebuilds against the others' latest
    // states, as API §7 says `current` holds)
    let s = spawn_server().await;
    let r = (s.client.put(s.url("/acme/parts/settings")))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{:?}", r.text().await);
    for (name, code) in [("count", COUNT), ("total", TOTAL), ("share", SHARE)] {
        let r = s
            .client
            .put(s.url(&format!("/acme/parts.{name}")))
            .header("content-type", "application/javascript")
            .body(code)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{name}: {:?}", r.text().await);
    }
    for v in [1, 3, 4] {
        s.post_ok("/acme/parts", "part", json!({ "v": v })).await;
    }
    let r = s.get("/acme/parts.share?min-index=2&wait=20000").await;
    assert_eq!(r.status(), 200);
    let on_server: Value = r.json().await.unwrap();
    // v / (running sum of v·n): 1/1, 3/(1+6), 4/(7+12)
    assert_eq!(on_server, json!([1, 3.0 / 7.0, 4.0 / 19.0]));

    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
    write("count.js", COUNT);
    write("total.js", TOTAL);
    write("share.js", SHARE);
    write(
        "events.json",
        r#"[{"type":"part","data":{"v":1}},{"type":"part","data":{"v":3}},{"type":"part","data":{"v":4}}]"#,
    );
    // given in any order, folded in the server's
    let (code, stdout, stderr) = eddy_test(
        dir.path(),
        &[
            "share.js",
            "--events",
            "events.json",
            "--with",
            "total.js",
            "--with",
            "count.js",
        ],
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(serde_json::from_str::<Value>(&stdout).unwrap(), on_server);
    assert!(stderr.contains("[2] console.log: total 19"), "{stderr}");
    assert!(!stderr.contains("undefined"), "{stderr}");
    // without count, total reads an undefined current.count, and the run says so
    let (code, stdout, stderr) = eddy_test(
        dir.path(),
        &["share.js", "--events", "events.json", "--with", "total.js"],
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("total reads current.count"), "{stderr}");
    assert_eq!(stdout.trim().replace([' ', '\n'], ""), "[null,null,null]");

    // reducers that read each other are refused, as at deploy: exit code 2
    write("a.js", "(s = 0, e, i, current) => current.b");
    write("b.js", "(s = 0, e, i, current) => current.a");
    let (code, _, stderr) = eddy_test(
        dir.path(),
        &["a.js", "--events", "events.json", "--with", "b.js"],
    )
    .await;
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.starts_with("eddy test: the reducers a, b read each other in a cycle"),
        "{stderr}"
    );
    // a name given twice, or both folded and fixed
    write("current.json", r#"{"total": 4}"#);
    let (code, _, stderr) = eddy_test(
        dir.path(),
        &[
            "share.js",
            "--events",
            "events.json",
            "--with",
            "total.js",
            "--current",
            "current.json",
        ],
    )
    .await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("given with --with"), "{stderr}");
}
