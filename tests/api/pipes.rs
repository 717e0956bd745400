//! Pipes (API §8): copy and mapping pipes, routing into factories, status, logs,
//! replacing and deleting, cycles, errors, and exactly once across `kill -9`.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::Response;
use serde_json::{Value, json};

use crate::common::{
    ChildServer, TestServer, assert_error, client, read_all, spawn_server, spawn_server_with,
};

pub(crate) async fn put_pipe(s: &TestServer, path: &str, code: Option<&str>) -> Response {
    let mut r = s.client.put(s.url(path));
    if let Some(code) = code {
        r = r
            .header("Content-Type", "application/javascript")
            .body(code.to_owned());
    }
    r.send().await.expect("PUT pipe")
}

/// Reads `path` until it holds at least `n` events (10 s at most).
pub async fn wait_for_events(base: &str, path: &str, n: usize) -> Vec<Value> {
    let client = client();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let url = format!("{base}{path}");
        let r = client.get(&url).send().await.expect("GET");
        let events: Vec<Value> = if r.status() == 200 {
            read_all(&client, &url).await
        } else {
            Vec::new()
        };
        if events.len() >= n {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "{path} has {} events, not {n}: {events:?}",
            events.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn origins(events: &[Value]) -> Vec<(String, u64)> {
    events
        .iter()
        .map(|e| {
            (
                e["origin"]["stream"].as_str().unwrap().to_owned(),
                e["origin"]["index"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_copy_pipe_with_a_type_selector() {
    let s = spawn_server().await;
    let r = put_pipe(&s, "/acme/clicks/pipe/acme/copies?type=a", None).await;
    assert_eq!(r.status(), 201);
    assert_eq!(
        r.headers()["location"].to_str().unwrap(),
        "/acme/clicks/pipe/acme/copies"
    );
    let status: Value = r.json().await.unwrap();
    assert_eq!(status["mode"], "copy");
    assert_eq!(status["selector"], "type=a");
    for (ty, n) in [("a", 1), ("b", 2), ("a", 3)] {
        s.post_ok("/acme/clicks", ty, json!({"n": n})).await;
    }
    let copies = wait_for_events(&s.base, "/acme/copies", 2).await;
    assert_eq!(copies.len(), 2);
    assert_eq!(copies[0]["type"], "a");
    assert_eq!(copies[0]["data"], json!({"n": 1}));
    assert_eq!(copies[1]["data"], json!({"n": 3}));
    assert_eq!(
        origins(&copies),
        [("acme/clicks".into(), 0), ("acme/clicks".into(), 2)]
    );
    let status = s.get_json("/acme/clicks/pipe/acme/copies", 200).await;
    assert_eq!(status["piped"], 2);
    assert_eq!(status["status"], "running");

    // putting it again keeps its cursor: nothing is copied twice
    let r = put_pipe(&s, "/acme/clicks/pipe/acme/copies?type=a", None).await;
    assert_eq!(r.status(), 200);
    s.post_ok("/acme/clicks", "a", json!({"n": 4})).await;
    let copies = wait_for_events(&s.base, "/acme/copies", 3).await;
    assert_eq!(copies.len(), 3);
    assert_eq!(copies[2]["origin"]["index"], 3);
    let raw = s.get("/acme/copies/2?raw").await;
    let origin: Value = serde_json::from_slice(raw.headers()["event-origin"].as_bytes()).unwrap();
    assert_eq!(origin, copies[2]["origin"]);

    // deleted, and put again: it starts from the beginning, but the ids it derives
    // from each source event find the copies already there
    let r = s.send("DELETE", "/acme/clicks/pipe/acme/copies").await;
    assert_eq!(r.status(), 204);
    assert_error(s.get("/acme/clicks/pipe/acme/copies").await, 404, "no pipe").await;
    let r = put_pipe(&s, "/acme/clicks/pipe/acme/copies?type=a", None).await;
    assert_eq!(r.status(), 201);
    s.post_ok("/acme/clicks", "a", json!({"n": 5})).await;
    let copies = wait_for_events(&s.base, "/acme/copies", 4).await;
    let indexes: Vec<u64> = origins(&copies).iter().map(|o| o.1).collect();
    assert_eq!(indexes, [0, 2, 3, 4]);
}

#[tokio::test]
async fn a_mapping_pipe_routes_into_a_factory_by_args() {
    let s = spawn_server().await;
    let code = "export default (e) => {\n\
                  if (e.type === 'skip') return null;\n\
                  if (e.type === 'bad') throw new Error('cannot map ' + e.index);\n\
                  console.log('mapping', e.index);\n\
                  return [\n\
                    { type: 'line', data: { n: e.data.n, from: e.args[0] }, args: [e.data.day] },\n\
                    { type: 'mirror' },\n\
                  ];\n\
                };";
    let r = put_pipe(&s, "/acme/orders/pipe/acme/byday", Some(code)).await;
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    s.call("PUT", "/acme/byday/settings", &[], json!({"factory": true}))
        .await;
    s.post_ok("/acme/orders('c1')", "o", json!({"n": 1, "day": "mon"}))
        .await;
    s.post_ok("/acme/orders('c2')", "skip", json!({})).await;
    s.post_ok("/acme/orders('c2')", "bad", json!({})).await;
    s.post_ok("/acme/orders('c2')", "o", json!({"n": 2, "day": "tue"}))
        .await;
    let mon = wait_for_events(&s.base, "/acme/byday('mon')", 1).await;
    assert_eq!(mon[0]["type"], "line");
    assert_eq!(mon[0]["data"], json!({"n": 1, "from": "c1"}));
    assert_eq!(
        mon[0]["origin"],
        json!({"stream": "acme/orders('c1')", "index": 0})
    );
    let tue = wait_for_events(&s.base, "/acme/byday('tue')", 1).await;
    assert_eq!(tue[0]["data"], json!({"n": 2, "from": "c2"}));
    // an output without args goes to the source's substream, with the source data
    let c1 = wait_for_events(&s.base, "/acme/byday('c1')", 1).await;
    assert_eq!(c1[0]["type"], "mirror");
    assert_eq!(c1[0]["data"], json!({"n": 1, "day": "mon"}));
    let c2 = wait_for_events(&s.base, "/acme/byday('c2')", 1).await;
    assert_eq!(c2.len(), 1, "skip maps to nothing, bad fails: {c2:?}");
    assert_eq!(c2[0]["origin"]["index"], 2);

    // the failure and the console lines are in the pipe's log
    let logs = wait_for_events(&s.base, "/acme/orders/logs/pipe/acme/byday", 3).await;
    let error = logs
        .iter()
        .find(|l| l["type"] == "error")
        .expect("an error");
    assert_eq!(error["data"]["stream"], "acme/orders('c2')");
    assert_eq!(error["data"]["index"], 1);
    assert!(
        error["data"]["message"]
            .as_str()
            .unwrap()
            .contains("cannot map 1"),
        "{error}"
    );
    // the stack in a field of its own, as in reducers' entries
    assert!(
        !error["data"]["message"].as_str().unwrap().contains('\n'),
        "{error}"
    );
    assert!(
        error["data"]["stack"]
            .as_str()
            .is_some_and(|st| !st.is_empty()),
        "{error}"
    );
    let lines: Vec<&Value> = logs.iter().map(|l| &l["data"]["message"]).collect();
    assert_eq!(lines[0], "mapping 0");
    assert_eq!(lines[2], "mapping 2");
    let status = s.get_json("/acme/orders/pipe/acme/byday", 200).await;
    assert_eq!(status["mode"], "map");
    assert_eq!(status["errors"], 1);
    assert_eq!(status["piped"], 4);
}

#[tokio::test]
async fn a_pipe_over_its_time_limit_is_named_in_its_log() {
    let s = spawn_server().await;
    let code = "export default (e) => { if (e.type === 'slow') { while (true) {} } return null; }";
    let r = put_pipe(&s, "/acme/src/pipe/acme/dst", Some(code)).await;
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    s.post_ok("/acme/src", "slow", json!({})).await;
    let logs = wait_for_events(&s.base, "/acme/src/logs/pipe/acme/dst", 1).await;
    let message = logs[0]["data"]["message"].as_str().unwrap();
    assert_eq!(logs[0]["type"], "error");
    assert!(
        message.contains("the pipe function ran longer than the time limit"),
        "{message}"
    );
    assert!(!message.contains("reducer"), "{message}");
}

#[tokio::test]
async fn pipe_cycles_are_refused() {
    let s = spawn_server().await;
    assert_eq!(put_pipe(&s, "/a/x/pipe/a/y", None).await.status(), 201);
    assert_eq!(put_pipe(&s, "/a/y/pipe/b/z", None).await.status(), 201);
    let e = assert_error(put_pipe(&s, "/b/z/pipe/a/x", None).await, 409, "cycle").await;
    assert_eq!(e["cycle"], json!(["b/z", "a/x", "a/y", "b/z"]));
    assert_error(put_pipe(&s, "/a/x/pipe/a/x", None).await, 409, "cycle").await;
    // substreams of one factory count as the factory
    assert_error(put_pipe(&s, "/a/y('k')/pipe/a/x", None).await, 409, "cycle").await;
}

#[tokio::test]
async fn bad_pipes_are_refused() {
    let s = spawn_server().await;
    let e = assert_error(
        put_pipe(&s, "/a/x/pipe/a/y", Some("export default (e) => {")).await,
        400,
        "syntax error",
    )
    .await;
    assert_eq!(e["line"], 1);
    assert_error(
        put_pipe(&s, "/a/x/pipe/a/y", Some("42")).await,
        400,
        "not a function",
    )
    .await;
    assert_error(
        put_pipe(&s, "/a/x/pipe/eddy/events(a)", None).await,
        400,
        "builtin",
    )
    .await;
    assert_error(put_pipe(&s, "/a/x/pipe/api/y", None).await, 400, "reserved").await;
    assert_error(put_pipe(&s, "/a/x/pipe/a/y?type=", None).await, 400, "type").await;
    assert_error(
        put_pipe(&s, "/a/x/pipe/a/y?limit=3", None).await,
        400,
        "limit",
    )
    .await;
    assert_error(s.get("/a/x/pipe/a/y").await, 404, "no pipe").await;
    let r = s.send("DELETE", "/a/x/pipe/a/y").await;
    assert_error(r, 404, "no pipe").await;
    let r = s
        .client
        .put(s.url("/a/x/pipe/a/y"))
        .header("Content-Type", "application/json")
        .body("{\"not\": \"code\"}")
        .send()
        .await
        .unwrap();
    assert_error(r, 415, "application/javascript").await;
    // nothing was created by the refusals
    assert_error(s.get("/a/x/pipe/a/y").await, 404, "no pipe").await;
}

/// Writes events to `/p/src` until the server dies; counts the acknowledged ones.
fn start_writer(base: String, count: Arc<AtomicUsize>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let client = client();
        for i in 0.. {
            let r = client
                .post(format!("{base}/p/src"))
                .header("Event-Type", "t")
                .json(&json!({ "i": i }))
                .timeout(Duration::from_secs(10))
                .send()
                .await;
            match r {
                Ok(r) if r.status() == 201 => count.fetch_add(1, Ordering::SeqCst),
                _ => return,
            };
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn piping_is_exactly_once_across_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let server = ChildServer::start(dir.path()).await;
    let c = client();
    for dest in ["copy", "mapped"] {
        let mut r = c.put(format!("{}/p/src/pipe/p/{dest}", server.base));
        if dest == "mapped" {
            r = r
                .header("Content-Type", "application/javascript")
                .body("(e) => [{ data: { i: e.data.i } }, { type: 'twice' }]");
        }
        assert_eq!(r.send().await.unwrap().status(), 201);
    }
    let count = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..4)
        .map(|_| start_writer(server.base.clone(), count.clone()))
        .collect();
    while count.load(Ordering::SeqCst) < 300 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.signal("-KILL");
    for w in writers {
        w.await.unwrap();
    }
    let mut server = server;
    let _ = server.child.wait().await;
    let restarted = ChildServer::start(dir.path()).await;
    // every stored source event (acknowledged or not) is piped exactly once
    let sources = read_all(&c, &format!("{}/p/src", restarted.base)).await;
    assert!(sources.len() >= 300);
    for (dest, per_source) in [("copy", 1), ("mapped", 2)] {
        let path = format!("/p/{dest}");
        let piped = wait_for_events(&restarted.base, &path, sources.len() * per_source).await;
        assert_eq!(piped.len(), sources.len() * per_source, "{dest}");
        let mut seen = HashSet::new();
        for (e, (stream, index)) in piped.iter().zip(origins(&piped)) {
            assert_eq!(stream, "p/src");
            assert!(
                seen.insert((index, e["type"].as_str().unwrap().to_owned())),
                "{dest}: source event {index} piped twice"
            );
        }
        let status = client()
            .get(format!("{}/p/src/pipe/p/{dest}", restarted.base))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap();
        assert_eq!(status["errors"], 0, "{status}");
    }
}

/// `PUT` with `?replay-from=` re-runs new code over past events: outputs it does not
/// make again are recalled, new ones appended, each once; what comes later is piped
/// by the new code.
#[tokio::test]
async fn replay_from_recalls_what_the_new_code_does_not_make_and_appends_what_it_does() {
    let s = spawn_server().await;
    let big = |limit: u64, extra: &str| {
        format!(
            "(e) => e.data.amount > {limit} ? {{type: 'big', data: {{amount: e.data.amount{extra}}}}} : null"
        )
    };
    let pipe = "/acme/orders/pipe/acme/big";
    let r = put_pipe(&s, pipe, Some(&big(100, ""))).await;
    assert_eq!(r.status(), 201);
    for amount in [50, 150, 300, 80, 120] {
        s.post_ok("/acme/orders", "order", json!({ "amount": amount }))
            .await;
    }
    wait_for_events(&s.base, "/acme/big", 3).await;

    // from index 2, only amounts over 200: 300 is made again, 120 no longer
    let r = put_pipe(&s, &format!("{pipe}?replay-from=2"), Some(&big(200, ""))).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let status: Value = r.json().await.unwrap();
    assert_eq!(
        status["replayed"],
        json!({"from": 2, "events": 3, "recalled": 1, "appended": 0, "errors": 0})
    );
    let out = s.get_json("/acme/big", 200).await;
    let types: Vec<&str> = out
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["big", "big", "big", "eddy.recall"]);
    assert_eq!(out[3]["data"]["recalled"]["index"], 2);
    assert_eq!(out[3]["data"]["recalled"]["id"], out[2]["id"]);

    // from the start with different content: every remaining output is recalled and
    // made anew, the one recalled before too (its id is free again)
    let r = put_pipe(
        &s,
        &format!("{pipe}?replay-from=0"),
        Some(&big(100, ", v: 2")),
    )
    .await;
    let status: Value = r.json().await.unwrap();
    assert_eq!(
        status["replayed"],
        json!({"from": 0, "events": 5, "recalled": 2, "appended": 3, "errors": 0})
    );
    // later events are piped by the new code, once
    s.post_ok("/acme/orders", "order", json!({ "amount": 500 }))
        .await;
    let out = wait_for_events(&s.base, "/acme/big", 10).await;
    let tail: Vec<Value> = out[4..]
        .iter()
        .map(|e| json!([e["type"], e["data"]]))
        .collect();
    assert_eq!(
        tail,
        [
            json!(["eddy.recall", {"recalled": {"stream": "acme/big", "index": 0, "id": out[0]["id"]}}]),
            json!(["eddy.recall", {"recalled": {"stream": "acme/big", "index": 1, "id": out[1]["id"]}}]),
            json!(["big", {"amount": 150, "v": 2}]),
            json!(["big", {"amount": 300, "v": 2}]),
            json!(["big", {"amount": 120, "v": 2}]),
            json!(["big", {"amount": 500, "v": 2}]),
        ]
    );
    // new code that throws on some events: each is skipped with an entry in the pipe's
    // log and counted, as a live run does (its earlier output is recalled)
    let throwing = "(e) => { if (e.data.amount === 300) throw new Error('no 300'); \
                    return {type: 'big', data: {amount: e.data.amount, v: 2}}; }";
    let r = put_pipe(&s, &format!("{pipe}?replay-from=2"), Some(throwing)).await;
    let status: Value = r.json().await.unwrap();
    assert_eq!(status["replayed"]["errors"], 1, "{status}");
    assert_eq!(status["replayed"]["recalled"], 1, "{status}");
    let logs = wait_for_events(&s.base, "/acme/orders/logs/pipe/acme/big", 1).await;
    let entry = &logs[logs.len() - 1]["data"];
    assert!(
        entry["message"].as_str().unwrap().contains("no 300"),
        "{entry}"
    );
    assert_eq!(entry["index"], 2, "{entry}");
    assert!(entry["stack"].as_str().is_some(), "{entry}");
    let listed = s.get_json("/acme/orders/pipes", 200).await;
    assert_eq!(listed[0]["errors"], 1, "{listed}");
    // the account's log records each replay
    let log = s.get_json("/eddy/events(acme)", 200).await;
    let replays = log
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "pipe-replayed")
        .count();
    assert_eq!(replays, 3);
    // a pipe that does not exist has nothing to replay
    let r = put_pipe(&s, "/acme/orders/pipe/acme/other?replay-from=0", None).await;
    assert_error(r, 404, "does not exist yet").await;
    let r = put_pipe(&s, &format!("{pipe}?replay-from=x"), None).await;
    assert_error(r, 400, "replay-from").await;
}

#[tokio::test]
async fn a_streams_pipes_are_listed_with_their_status() {
    let s = spawn_server().await;
    assert_eq!(s.get_json("/acme/src/pipes", 200).await, json!([]));
    assert_eq!(
        put_pipe(&s, "/acme/src/pipe/acme/copy", None)
            .await
            .status(),
        201
    );
    let code = "export default (e) => ({ data: { n: e.data.n * 2 } })";
    assert_eq!(
        put_pipe(&s, "/acme/src/pipe/acme/double?type=n", Some(code))
            .await
            .status(),
        201
    );
    assert_eq!(
        put_pipe(&s, "/acme/other/pipe/acme/copy", None)
            .await
            .status(),
        201
    );
    s.post_ok("/acme/src", "n", json!({"n": 2})).await;
    wait_for_events(&s.base, "/acme/double", 1).await;
    let list = s.get_json("/acme/src/pipes", 200).await;
    let list = list.as_array().unwrap();
    let ends: Vec<(&str, &str, &str)> = list
        .iter()
        .map(|p| {
            (
                p["destination"].as_str().unwrap(),
                p["mode"].as_str().unwrap(),
                p["selector"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        ends,
        [("acme/copy", "copy", ""), ("acme/double", "map", "type=n")]
    );
    assert!(list.iter().all(|p| p["origin"] == "acme/src"), "{list:?}");
    // a factory lists the pipes from its substreams too; a substream its own
    assert_eq!(
        put_pipe(&s, "/acme/f('a')/pipe/acme/fa", None)
            .await
            .status(),
        201
    );
    assert_eq!(
        put_pipe(&s, "/acme/f/pipe/acme/all", None).await.status(),
        201
    );
    assert_eq!(
        s.get_json("/acme/f/pipes", 200)
            .await
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let own = s.get_json("/acme/f('a')/pipes", 200).await;
    assert_eq!(own.as_array().unwrap().len(), 1, "{own}");
    assert_eq!(own[0]["destination"], "acme/fa");
    let r = s.send("POST", "/acme/src/pipes").await;
    assert_error(r, 405, "GET").await;
    assert_error(s.get("/acme/src/pipes?x=1").await, 400, "x").await;
    assert_error(s.get("/acme/src/pipes/more").await, 400, "more").await;
}

#[tokio::test]
async fn replays_count_against_the_accounts_write_budget_and_a_refused_one_changes_nothing() {
    let s = spawn_server_with(|c| c.splice_write_budget = 10).await;
    let pipe = "/acme/src/pipe/acme/dst";
    assert_eq!(put_pipe(&s, pipe, None).await.status(), 201);
    for n in 0..6 {
        s.post_ok("/acme/src", "t", json!({ "n": n })).await;
    }
    wait_for_events(&s.base, "/acme/dst", 6).await;

    // six recalls and six new outputs: more than ten, but the window is empty
    let r = put_pipe(
        &s,
        &format!("{pipe}?replay-from=0"),
        Some("(e) => ({type: 'a'})"),
    )
    .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let status: Value = r.json().await.unwrap();
    assert_eq!(status["replayed"]["recalled"], 6);
    assert_eq!(status["replayed"]["appended"], 6);

    // twelve more do not fit: refused for now, and the pipe goes on with the code
    // of the replay before
    let r = put_pipe(
        &s,
        &format!("{pipe}?replay-from=0"),
        Some("(e) => ({type: 'b'})"),
    )
    .await;
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((590..=601).contains(&retry), "Retry-After {retry}");
    assert_error(
        r,
        429,
        "this replay of the pipe from acme/src to acme/dst would write 12",
    )
    .await;
    s.post_ok("/acme/src", "t", json!({ "n": 6 })).await;
    let out = wait_for_events(&s.base, "/acme/dst", 19).await;
    assert_eq!(out.len(), 19, "{out:?}");
    assert_eq!(out[18]["type"], "a", "{}", out[18]);
    assert_eq!(out[18]["data"], json!({ "n": 6 }));
}
