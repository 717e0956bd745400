//! The daily digest example (`examples/daily-digest`), set up as its README says: the
//! reducer `digest.js` on acme/activity, a cron stream piped in, and digests dispatched
//! to acme/digests; here the cron ticks every second instead of every day.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use crate::common::{TestServer, spawn_server};

const DIGEST: &str = include_str!("../../examples/daily-digest/digest.js");

/// `* * * * * *`: six fields, seconds first, so a tick every second.
const EVERY_SECOND: &str = "/eddy/cron('*%20*%20*%20*%20*%20*')";

/// `curl -X PUT $B/acme/activity.digest -H 'Content-Type: application/javascript'
/// --data-binary @digest.js`
async fn deploy_digest(s: &TestServer) -> u16 {
    s.client
        .put(s.url("/acme/activity.digest"))
        .header("Content-Type", "application/javascript")
        .body(DIGEST)
        .send()
        .await
        .expect("PUT reducer")
        .status()
        .as_u16()
}

/// Every event of a stream (NDJSON); none while the stream does not exist yet.
async fn events(s: &TestServer, path: &str) -> Vec<Value> {
    let r = s
        .client
        .get(s.url(path))
        .header("Accept", "application/x-ndjson")
        .send()
        .await
        .expect("GET");
    if r.status() == 404 {
        return Vec::new();
    }
    assert_eq!(r.status(), 200, "GET {path}");
    let text = r.text().await.expect("body");
    text.lines()
        .map(|l| serde_json::from_str(l).expect("NDJSON line"))
        .collect()
}

/// Polls every 100 ms until `done` holds for the digests (read whole), or fails
/// after 30 s naming what was seen.
async fn digests_until(s: &TestServer, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let digests = events(s, "/acme/digests").await;
        if done(&digests) {
            return digests;
        }
        assert!(
            Instant::now() < deadline,
            "no {what} within 30 s; digests: {digests:#?}\nactivity: {:#?}\nlogs: {:#?}",
            events(s, "/acme/activity").await,
            events(s, "/acme/activity/logs").await,
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn origin_index(digest: &Value) -> u64 {
    digest["origin"]["index"]
        .as_u64()
        .unwrap_or_else(|| panic!("digest without origin index: {digest}"))
}

#[tokio::test]
async fn cron_ticks_close_periods_into_digest_events() {
    let s = spawn_server().await;
    assert_eq!(deploy_digest(&s).await, 201);
    // the pipe from the cron stream, as setup.sh puts it
    let r = s
        .client
        .put(s.url(&format!("{EVERY_SECOND}/pipe/acme/activity")))
        .send()
        .await
        .expect("PUT pipe");
    assert_eq!(r.status(), 201, "{:?}", r.text().await);

    // the app's events; a tick may land between any two of them
    let mut last = 0;
    for (ty, data) in [
        ("signup", json!({"user": "ada"})),
        ("order", json!({"amount": 12.5})),
        ("order", json!({"amount": 7.25})),
        ("signup", json!({"user": "bob"})),
        ("order", json!({"amount": 0.1})),
    ] {
        last = s.post_ok("/acme/activity", ty, data).await["index"]
            .as_u64()
            .unwrap();
    }

    // a digest closed by a tick after the last event covers every event before it
    let digests = digests_until(&s, "digest after the last event", |d| {
        d.iter().any(|d| origin_index(d) > last)
    })
    .await;

    let activity = events(&s, "/acme/activity").await;
    let mut counts = Map::new();
    let mut total = 0.0;
    let mut previous_to: Option<i64> = None;
    for d in &digests {
        assert_eq!(d["stream"], "acme/digests");
        assert_eq!(d["type"], "digest");
        assert_eq!(d["contentType"], "application/json");
        // the origin is the tick in acme/activity that closed the period
        assert_eq!(d["origin"]["stream"], "acme/activity", "{d}");
        let tick = &activity[origin_index(d) as usize];
        assert_eq!(tick["index"], d["origin"]["index"]);
        assert_eq!(tick["type"], "tick", "origin of {d} is {tick}");
        assert_eq!(
            tick["origin"]["stream"], "eddy/cron('* * * * * *')",
            "{tick}"
        );
        let data = &d["data"];
        // `to` is the tick's scheduled time, a whole second (UTC); periods chain
        let to = data["to"].as_i64().expect("to");
        assert_eq!(data["to"], tick["data"]["timestamp"], "{d}");
        assert_eq!(to % 1000, 0, "{d}");
        let from = data["from"].as_i64().expect("from");
        assert!(from < to, "{d}");
        if let Some(p) = previous_to {
            assert_eq!(from, p, "periods chain: {d}");
        }
        previous_to = Some(to);
        for (ty, n) in data["counts"].as_object().expect("counts") {
            let n = n.as_u64().expect("count");
            let sum = counts.get(ty).and_then(Value::as_u64).unwrap_or(0) + n;
            counts.insert(ty.clone(), json!(sum));
        }
        total += data["ordersTotal"].as_f64().expect("ordersTotal");
    }
    assert_eq!(Value::Object(counts), json!({"signup": 2, "order": 3}));
    assert!(
        (total - 19.85).abs() < 1e-9,
        "ordersTotal summed to {total}"
    );
    // the first digest covers the period from the first event
    assert_eq!(
        digests[0]["data"]["from"], activity[0]["timestamp"],
        "{:#}",
        digests[0]
    );

    // after the tick, the state is a fresh, empty period
    let closing = digests.iter().find(|d| origin_index(d) > last).unwrap();
    let r = s
        .get(&format!(
            "/acme/activity.digest?min-index={}&wait=10000",
            origin_index(closing)
        ))
        .await;
    assert_eq!(r.status(), 200);
    let state: Value = r.json().await.unwrap();
    assert_eq!(state["counts"], json!({}), "{state}");
    assert_eq!(state["ordersTotal"], 0, "{state}");
    let to = closing["data"]["to"].as_i64().unwrap();
    assert!(state["from"].as_i64().is_some_and(|f| f >= to), "{state}");

    // redeploying rebuilds the state from index 0 and dispatches nothing twice: wait
    // until the rebuild has folded every tick seen so far and two more digests exist,
    // then every tick has at most one
    let seen = digests.len();
    let end = events(&s, "/acme/activity").await.len() - 1;
    assert_eq!(deploy_digest(&s).await, 200, "a redeploy replaces the code");
    let r = s
        .get(&format!("/acme/activity.digest?min-index={end}&wait=10000"))
        .await;
    assert_eq!(r.status(), 200);
    let folded: i64 = r.headers()["reducer-index"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(folded >= end as i64, "rebuilt only to {folded} of {end}");
    let digests = digests_until(&s, "digests after the redeploy", |d| d.len() >= seen + 2).await;
    let mut ticks = HashSet::new();
    for d in &digests {
        assert!(
            ticks.insert(origin_index(d)),
            "a tick dispatched twice: {d}"
        );
    }
}
