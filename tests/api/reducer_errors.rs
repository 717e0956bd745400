//! Reducer errors that only the server can find (API §7): a state over the size
//! limit, and a dispatched event that does not match its destination's type. Only the
//! event at fault is an error, skipped as if it had thrown (or, with
//! `on-error=halt`, where the reducer stops); the events before and after it count.
//! Log entries come out in the order of the events they are about.

use serde_json::{Value, json};

use crate::common::{TestServer, spawn_server};
use crate::pipes::wait_for_events;
use crate::reducers::{deploy, wait_for_logs};

/// Appends `events` (JSON data of type `x`) in one batch, so they commit together and
/// are folded between the same two checkpoints.
async fn batch(s: &TestServer, path: &str, events: &[Value]) {
    let body: Vec<Value> = events
        .iter()
        .map(|d| json!({"type": "x", "data": d}))
        .collect();
    let r = s
        .client
        .post(s.url(path))
        .header("Content-Type", "application/vnd.eddy.events+json")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
}

/// The status of reducer `name` of `stream` once `done` holds for it.
async fn status_when(
    s: &TestServer,
    stream: &str,
    name: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    for _ in 0..200 {
        let list = s.get_json(&format!("{stream}/reducers"), 200).await;
        if let Some(r) = list.as_array().unwrap().iter().find(|r| r["name"] == name)
            && done(r)
        {
            return r.clone();
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("reducer {name} of {stream} never got there");
}

/// A state that only grows past the limit at event 5 and keeps the big part.
const GROW: &str = "(s = { n: 0, items: [] }, e) => ({ n: s.n + 1, \
     items: e.data.big ? [...s.items, 'x'.repeat(200000)] : s.items })";

fn ten_with_big_fifth() -> Vec<Value> {
    (0..10)
        .map(|i| {
            if i == 5 {
                json!({"big": true})
            } else {
                json!({})
            }
        })
        .collect()
}

#[tokio::test]
async fn an_oversize_state_skips_only_the_event_that_made_it() {
    let mut s = spawn_server().await;
    assert_eq!(deploy(&s, "/acme/g.grow", GROW).await.status(), 201);
    batch(&s, "/acme/g", &ten_with_big_fifth()).await;
    let logs = wait_for_logs(&s, "/acme/g/logs", |l| {
        l.iter().any(|e| e["type"] == "error")
    })
    .await;
    let errors: Vec<&Value> = logs.iter().filter(|e| e["type"] == "error").collect();
    assert_eq!(errors.len(), 1, "{logs:?}");
    assert_eq!(errors[0]["data"]["index"], 5);
    let message = errors[0]["data"]["message"].as_str().unwrap();
    assert!(
        message.contains("over the limit of 102400 bytes"),
        "{message}"
    );
    // events 0-4 and 6-9 count, event 5 does not
    let r = s.get("/acme/g.grow?min-index=9").await;
    assert_eq!(r.headers()["reducer-index"], "9");
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"n": 9, "items": []})
    );
    let status = status_when(&s, "/acme/g", "grow", |r| r["errors"] == 1).await;
    assert_eq!(status["status"], "running");
    // and that is what was saved
    s.restart().await;
    let r = s.get("/acme/g.grow").await;
    assert_eq!(r.headers()["reducer-index"], "9");
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"n": 9, "items": []})
    );
}

#[tokio::test]
async fn an_oversize_state_halts_a_halting_reducer_at_its_event() {
    let s = spawn_server().await;
    let r = deploy(&s, "/acme/h.grow?on-error=halt", GROW).await;
    assert_eq!(r.status(), 201);
    batch(&s, "/acme/h", &ten_with_big_fifth()).await;
    let status = status_when(&s, "/acme/h", "grow", |r| r["status"] == "halted").await;
    let why = status["halted"].as_str().unwrap();
    assert!(
        why.contains("index 5") && why.contains("over the limit"),
        "{why}"
    );
    // nothing from event 5 on is folded
    let r = s.get("/acme/h.grow").await;
    assert_eq!(r.headers()["reducer-index"], "4");
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"n": 5, "items": []})
    );
}

/// API §7's example reducer changes its state in place. The event that makes it too
/// large is skipped with its change, and every later one that would as well: the
/// state keeps what the events before it made, skipping or halting.
#[tokio::test]
async fn a_state_changed_in_place_past_the_limit_keeps_what_came_before() {
    const PAGES: &str = "(state = {total: 0, pages: {}}, e) => { state.total++; \
                         state.pages[e.data.url] = (state.pages[e.data.url] || 0) + 1; \
                         return state; }";
    let mut s = spawn_server().await;
    assert_eq!(deploy(&s, "/acme/v.views", PAGES).await.status(), 201);
    let r = deploy(&s, "/acme/w.views?on-error=halt", PAGES).await;
    assert_eq!(r.status(), 201);
    // about 1 KB of state an event: the limit of 100 KiB is passed near event 100
    let events: Vec<Value> = (0..120)
        .map(|i| json!({"url": format!("/{i:03}/{}", "x".repeat(1000))}))
        .collect();
    batch(&s, "/acme/v", &events).await;
    batch(&s, "/acme/w", &events).await;
    status_when(&s, "/acme/v", "views", |r| r["errors"].as_i64() > Some(0)).await;
    let r = s.get("/acme/v.views?min-index=119&wait=20000").await;
    assert_eq!(r.headers()["reducer-index"], "119");
    let state = r.json::<Value>().await.unwrap();
    let kept = state["total"].as_i64().expect("a state, not null");
    assert!((90..110).contains(&kept), "{state}");
    assert_eq!(state["pages"].as_object().unwrap().len() as i64, kept);
    let skipped = status_when(&s, "/acme/v", "views", |r| {
        r["errors"].as_i64() == Some(120 - kept)
    })
    .await;
    assert_eq!(skipped["status"], "running");
    // halting: at the same event, with the same state
    let halted = status_when(&s, "/acme/w", "views", |r| r["status"] == "halted").await;
    assert!(
        halted["halted"]
            .as_str()
            .unwrap()
            .contains(&format!("index {kept}")),
        "{halted}"
    );
    let r = s.get("/acme/w.views").await;
    assert_eq!(
        r.headers()["reducer-index"],
        (kept - 1).to_string().as_str()
    );
    assert_eq!(r.json::<Value>().await.unwrap()["total"], kept);
    // and that is what was saved
    s.restart().await;
    let r = s.get("/acme/v.views").await;
    assert_eq!(r.json::<Value>().await.unwrap()["total"], kept);
}

#[tokio::test]
async fn a_dispatch_that_fails_its_type_is_a_reducer_error() {
    let s = spawn_server().await;
    let r = s
        .call("PUT", "/acme/dt:t", &[], json!({"type": "int32"}))
        .await;
    assert_eq!(r.status(), 201);
    let code = "(n = 0, e) => { dispatch('dt', { type: 't', data: e.data.v }); return n + 1; }";
    assert_eq!(deploy(&s, "/acme/src.d", code).await.status(), 201);
    batch(
        &s,
        "/acme/src",
        &[json!({"v": 1}), json!({"v": "no"}), json!({"v": 3})],
    )
    .await;
    // skipped as if it had thrown: not appended, not counted, logged
    let logs = wait_for_logs(&s, "/acme/src/logs", |l| {
        l.iter().any(|e| e["type"] == "error")
    })
    .await;
    let error = logs.iter().find(|e| e["type"] == "error").unwrap();
    assert_eq!(error["data"]["index"], 1);
    let message = error["data"]["message"].as_str().unwrap();
    for needle in ["acme/dt", "\"t\"", "integer"] {
        assert!(message.contains(needle), "{needle}: {message}");
    }
    let r = s.get("/acme/src.d?min-index=2").await;
    assert_eq!(r.json::<Value>().await.unwrap(), json!(2));
    let stored = wait_for_events(&s.base, "/acme/dt", 2).await;
    let data: Vec<&Value> = stored.iter().map(|e| &e["data"]).collect();
    assert_eq!(data, [&json!(1), &json!(3)]);
    // with on-error=halt the reducer stops at that event
    let r = s
        .call("PUT", "/acme/dt2:t", &[], json!({"type": "int32"}))
        .await;
    assert_eq!(r.status(), 201);
    let code = code.replace("'dt'", "'dt2'");
    let r = deploy(&s, "/acme/src.h?on-error=halt", &code).await;
    assert_eq!(r.status(), 201);
    let status = status_when(&s, "/acme/src", "h", |r| r["status"] == "halted").await;
    let why = status["halted"].as_str().unwrap();
    assert!(why.contains("index 1") && why.contains("acme/dt2"), "{why}");
    let r = s.get("/acme/src.h").await;
    assert_eq!(r.headers()["reducer-index"], "0");
    let stored = wait_for_events(&s.base, "/acme/dt2", 1).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["data"], 1);
    // a valid dispatch to a typed stream still goes through
    let r = s.get("/acme/dt/0").await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn log_entries_come_in_event_order() {
    let s = spawn_server().await;
    batch(&s, "/acme/lo", &[json!({}), json!({}), json!({})]).await;
    let code = "(n = 0, e) => { console.log('before', e.index); \
                if (e.index === 1) throw new Error('at 1'); \
                console.log('after', e.index); return n + 1; }";
    assert_eq!(deploy(&s, "/acme/lo.x", code).await.status(), 201);
    let logs = wait_for_logs(&s, "/acme/lo/logs", |l| l.len() >= 6).await;
    let seen: Vec<String> = logs
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["type"].as_str().unwrap(),
                e["data"]["message"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            "log before 0",
            "log after 0",
            "log before 1",
            "error Error: at 1",
            "log before 2",
            "log after 2"
        ]
    );
}

#[tokio::test]
async fn on_a_factory_halting_at_an_oversize_state_unfolds_later_substream_events() {
    let s = spawn_server().await;
    let r = s
        .call("PUT", "/acme/f/settings", &[], json!({"factory": true}))
        .await;
    assert_eq!(r.status(), 200);
    let r = deploy(&s, "/acme/f.grow?on-error=halt", GROW).await;
    assert_eq!(r.status(), 201);
    let keep = deploy(&s, "/acme/f.keep", GROW).await;
    assert_eq!(keep.status(), 201);
    // whichever checkpoint finds the big state, nothing after it is folded by the
    // halting reducer; the skipping one goes on
    for (sub, data) in [
        ("a", json!({})),
        ("b", json!({})),
        ("a", json!({"big": true})),
        ("b", json!({})),
        ("a", json!({})),
    ] {
        s.post_ok(&format!("/acme/f('{sub}')"), "x", data).await;
    }
    let status = status_when(&s, "/acme/f", "grow", |r| r["status"] == "halted").await;
    let why = status["halted"].as_str().unwrap();
    assert!(why.contains("index 1 of acme/f('a')"), "{why}");
    for sub in ["a", "b"] {
        let r = s.get(&format!("/acme/f('{sub}').grow")).await;
        assert_eq!(r.headers()["reducer-index"], "0", "{sub}");
        assert_eq!(
            r.json::<Value>().await.unwrap(),
            json!({"n": 1, "items": []})
        );
    }
    status_when(&s, "/acme/f", "keep", |r| r["errors"] == 1).await;
    let r = s.get("/acme/f('a').keep?min-index=2").await;
    assert_eq!(r.headers()["reducer-index"], "2");
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"n": 2, "items": []})
    );
    let r = s.get("/acme/f('b').keep?min-index=1").await;
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"n": 2, "items": []})
    );
}
