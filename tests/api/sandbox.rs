//! Reducer sandboxes (API §7, §10): a rebuild over the same events gives the same
//! state, also for code that reads the clock and random numbers, and a reducer cannot
//! change the built-ins that its siblings (same stream, same sandbox) and eddy use.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{TestServer, spawn_server};
use crate::reducers::{deploy, wait_for_logs};

/// The state of reducer `name` of `stream` once no version of it is rebuilding and it
/// has folded `index`.
pub async fn settled(s: &TestServer, stream: &str, name: &str, index: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let list = s.get_json(&format!("{stream}/reducers"), 200).await;
        let building = list
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == name && r["status"] == "rebuilding");
        let r = s
            .get(&format!("{stream}.{name}?min-index={index}&wait=5000"))
            .await;
        assert_eq!(r.status(), 200);
        let state: Value = r.json().await.unwrap();
        if !building {
            return state;
        }
        assert!(Instant::now() < deadline, "still rebuilding: {list}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const CLOCK: &str = "(s = [], e) => [...s, { now: Date.now(), date: new Date().toISOString(), \
    random: [Math.random(), Math.random()] }]";

#[tokio::test]
async fn clock_and_random_give_the_same_state_after_a_redeploy() {
    let s = spawn_server().await;
    assert_eq!(deploy(&s, "/acme/d.clock", CLOCK).await.status(), 201);
    let mut stamps = Vec::new();
    for i in 0..3 {
        let e = s.post_ok("/acme/d", "x", json!({ "i": i })).await;
        stamps.push(e["timestamp"].clone());
    }
    let first = settled(&s, "/acme/d", "clock", 2).await;
    let folded = first.as_array().unwrap();
    assert_eq!(folded.len(), 3, "{first}");
    for (entry, stamp) in folded.iter().zip(&stamps) {
        // the event's own timestamp (unix ms) stands for "now"
        assert_eq!(&entry["now"], stamp, "{entry}");
    }
    assert_ne!(folded[0]["random"], folded[1]["random"]);

    // the same code again rebuilds from the first event to the same state
    let again = format!("{CLOCK}\n// deployed again");
    assert_eq!(deploy(&s, "/acme/d.clock", &again).await.status(), 200);
    let rebuilt = settled(&s, "/acme/d", "clock", 2).await;
    assert_eq!(rebuilt, first);
}

#[tokio::test]
async fn a_reducer_cannot_tamper_with_its_siblings() {
    let mut s = spawn_server().await;
    // sloppy code: the changes are ignored
    let vandal = "(n = 0, e) => { JSON.stringify = () => '\"hacked\"'; \
        Object.prototype.polluted = 'yes'; Array.prototype.push = null; return n + 1; }";
    // strict code: each change throws, and the event is an error in the logs
    let strict =
        "export default (n = 0, e) => { Object.prototype.polluted = 'yes'; return n + 1; };";
    let sibling = "(s = { n: 0 }, e) => { const seen = []; seen.push(e.index); \
        return { n: s.n + 1, polluted: ({}).polluted ?? null, json: JSON.stringify({ seen }) }; }";
    for (name, code) in [("a", vandal), ("b", strict), ("c", sibling)] {
        assert_eq!(
            deploy(&s, &format!("/acme/t.{name}"), code).await.status(),
            201
        );
    }
    for i in 0..3 {
        s.post_ok("/acme/t", "x", json!({ "i": i })).await;
    }
    let expected = json!({"n": 3, "polluted": null, "json": "{\"seen\":[2]}"});
    assert_eq!(settled(&s, "/acme/t", "c", 2).await, expected);
    assert_eq!(settled(&s, "/acme/t", "a", 2).await, json!(3));
    let logs = wait_for_logs(&s, "/acme/t/logs", |l| {
        l.iter().filter(|e| e["type"] == "error").count() >= 3
    })
    .await;
    let message = logs.iter().find(|e| e["type"] == "error").unwrap()["data"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains("TypeError"), "{message}");

    // the saved states are what the reducers returned, also read back after a restart
    s.restart().await;
    assert_eq!(settled(&s, "/acme/t", "c", 2).await, expected);
    s.post_ok("/acme/t", "x", json!({ "i": 3 })).await;
    assert_eq!(
        settled(&s, "/acme/t", "c", 3).await,
        json!({"n": 4, "polluted": null, "json": "{\"seen\":[3]}"})
    );
}
