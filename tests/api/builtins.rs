//! The builtin streams (API §8): cron streams and account events.

use std::time::Duration;

use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde_json::{Value, json};

use crate::common::{assert_error, spawn_server, spawn_server_with};
use crate::pipes::wait_for_events;

const EVERY_SECOND: &str = "/eddy/cron('*%20*%20*%20*%20*%20*')";

#[tokio::test]
async fn an_every_second_cron_piped_into_a_stream_ticks() {
    let s = spawn_server().await;
    let r = s
        .client
        .put(s.url(&format!("{EVERY_SECOND}/pipe/acme/ticks")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let status: Value = r.json().await.unwrap();
    assert_eq!(status["origin"], "eddy/cron('* * * * * *')");
    let ticks = wait_for_events(&s.base, "/acme/ticks", 3).await;
    let mut last = 0;
    for t in &ticks {
        assert_eq!(t["type"], "tick");
        assert_eq!(
            t["stream"], "acme/ticks",
            "a cron's args are not carried over"
        );
        assert_eq!(t["origin"]["stream"], "eddy/cron('* * * * * *')");
        let ms = t["data"]["timestamp"].as_i64().unwrap();
        assert!(ms > last, "tick timestamps increase: {ticks:?}");
        assert_eq!(ms % 1000, 0, "ticks fall on the second");
        last = ms;
    }
    // the cron stream itself is public to read, and never written by clients
    let own = wait_for_events(&s.base, EVERY_SECOND, 3).await;
    assert_eq!(own[0]["stream"], "eddy/cron('* * * * * *')");
    let r = s.post(EVERY_SECOND, "tick", json!({"timestamp": 1})).await;
    let e = assert_error(r, 405, "only the server").await;
    assert_eq!(e["allow"], "GET");
    let r = s
        .post(&format!("{EVERY_SECOND}:tick"), "tick", json!({}))
        .await;
    assert_error(r, 405, "builtin").await;

    // deleted, the pipe stops the ticking: at most one more tick lands meanwhile
    let r = s
        .client
        .delete(s.url(&format!("{EVERY_SECOND}/pipe/acme/ticks")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let before = wait_for_events(&s.base, EVERY_SECOND, 1).await.len();
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let after = wait_for_events(&s.base, EVERY_SECOND, 1).await.len();
    assert!(after <= before + 1, "ticks went on: {before} → {after}");
}

#[tokio::test]
async fn malformed_cron_expressions_name_the_field() {
    let s = spawn_server().await;
    for path in [
        "/eddy/cron('61%20*%20*%20*%20*')",
        "/eddy/cron('*%20*')",
        "/eddy/cron('*%20*%20*%20*%20*%20*%20*')",
        "/eddy/cron('0%200%2031%202%20*')",
    ] {
        let e = assert_error(s.get(path).await, 400, "cron expression").await;
        assert_eq!(e["field"], "expr", "{path}");
    }
    let e = assert_error(s.get("/eddy/cron(1)").await, 400, "cron stream").await;
    assert_eq!(e["field"], "expr");
    assert_error(s.get("/eddy/nothing").await, 404, "builtin").await;
    // 5 fields (minutes) and 6 (seconds first) are both expressions; a cron stream
    // that never ticked reads as empty
    assert_eq!(
        s.get_json("/eddy/cron('0%209%20*%20*%201-5')", 200).await,
        json!([])
    );
    assert_eq!(s.get_json("/eddy/events(nobody)", 200).await, json!([]));
    let r = s
        .client
        .put(s.url("/eddy/cron('61%20*%20*%20*%20*')/pipe/a/b"))
        .send()
        .await
        .unwrap();
    assert_error(r, 400, "cron expression").await;
}

#[tokio::test]
async fn a_cron_stream_ticks_for_its_subscribers() {
    let s = spawn_server().await;
    let r = s
        .client
        .get(s.url("/eddy/cron('*/1%20*%20*%20*%20*%20*')"))
        .header("Accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut events = r.bytes_stream().eventsource();
    let mut ticks = Vec::new();
    while ticks.len() < 2 {
        let e = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .expect("a tick within 5 s")
            .expect("open")
            .expect("event");
        if e.event == "tick" {
            ticks.push(e.id.parse::<u64>().unwrap());
        }
    }
    assert_eq!(ticks, [0, 1]);
}

fn allow_private(c: &mut eddy_server::Config) {
    c.allow_private_webhooks = true;
}

#[tokio::test]
async fn account_events_record_every_change() {
    let s = spawn_server_with(allow_private).await;
    // followed live while the changes happen
    let r = s
        .client
        .get(s.url("/eddy/events(acme)"))
        .header("Accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut live = r.bytes_stream().eventsource();

    s.post_ok("/acme/orders", "o", json!({})).await;
    s.call(
        "PATCH",
        "/acme/orders/settings",
        &[],
        json!({"requestHosts": ["api.example.com"]}),
    )
    .await;
    let r = s
        .client
        .put(s.url("/acme/orders.total"))
        .body("(n = 0) => n + 1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = s
        .client
        .delete(s.url("/acme/orders.total"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = s
        .client
        .put(s.url("/acme/orders/pipe/acme/copy"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    wait_for_events(&s.base, "/acme/copy", 1).await;
    let r = s
        .client
        .delete(s.url("/acme/orders/pipe/acme/copy"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let hook: Value = s
        .call(
            "POST",
            "/acme/orders/webhooks",
            &[],
            json!({"url": "http://127.0.0.1:9/hook"}),
        )
        .await
        .json()
        .await
        .unwrap();
    let id = hook["id"].as_str().unwrap();
    let r = s
        .client
        .delete(s.url(&format!("/acme/orders/webhooks/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    // another account's changes are not acme's
    s.post_ok("/other/x", "o", json!({})).await;

    let expected = [
        ("stream-created", "acme/orders"),
        ("settings-changed", "acme/orders"),
        ("reducer-deployed", "acme/orders"),
        ("reducer-deleted", "acme/orders"),
        ("pipe-added", "acme/orders"),
        ("stream-created", "acme/copy"),
        ("pipe-removed", "acme/orders"),
        ("webhook-added", "acme/orders"),
        ("webhook-removed", "acme/orders"),
    ];
    let events = wait_for_events(&s.base, "/eddy/events(acme)", expected.len()).await;
    let got: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_owned(),
                e["data"]["stream"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = expected
        .iter()
        .map(|(t, s)| (t.to_string(), s.to_string()))
        .collect();
    assert_eq!(got, want, "{events:#?}");
    let settings = events
        .iter()
        .find(|e| e["type"] == "settings-changed")
        .unwrap();
    assert_eq!(
        settings["data"]["settings"]["requestHosts"],
        json!(["api.example.com"])
    );
    let deployed = events
        .iter()
        .find(|e| e["type"] == "reducer-deployed")
        .unwrap();
    assert_eq!(deployed["data"]["reducer"], "total");
    assert!(
        wait_for_events(&s.base, "/eddy/events(other)", 1)
            .await
            .len()
            == 1
    );
    // the string form of the account names the same stream
    assert_eq!(
        s.get_json("/eddy/events('acme')?limit=1", 200).await[0]["stream"],
        "eddy/events(acme)"
    );

    let mut types = Vec::new();
    while types.len() < expected.len() {
        let e = tokio::time::timeout(Duration::from_secs(5), live.next())
            .await
            .expect("an account event within 5 s")
            .expect("open")
            .expect("event");
        if !e.event.is_empty() && e.event != "message" {
            types.push(e.event);
        }
    }
    assert_eq!(types[0], "stream-created");
    assert!(types.contains(&"webhook-removed".to_owned()));
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_cron_does_not_replay_every_missed_tick() {
    let mut s = spawn_server().await;
    let r = s
        .client
        .put(s.url(&format!("{EVERY_SECOND}/pipe/acme/ticks")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    wait_for_events(&s.base, "/acme/ticks", 1).await;
    s.stop().await;
    let stopped_at = now_ms();
    // down for three seconds: three occurrences are missed
    tokio::time::sleep(Duration::from_millis(3300)).await;
    let restart_began = now_ms();
    s.restart().await;
    let before = wait_for_events(&s.base, "/acme/ticks", 1).await.len();
    let ticks = wait_for_events(&s.base, "/acme/ticks", before + 2).await;
    let times: Vec<i64> = ticks
        .iter()
        .map(|t| t["data"]["timestamp"].as_i64().unwrap())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] < w[1]),
        "ticks are in order, once each: {times:?}"
    );
    let caught_up = times
        .iter()
        .filter(|&&t| t > stopped_at && t <= restart_began)
        .count();
    assert!(caught_up <= 1, "missed ticks were replayed: {times:?}");
    assert!(
        times.iter().any(|&t| t > restart_began),
        "ticking resumed: {times:?}"
    );
}

/// The pipe changes in an account's events: (type, stream, origin, destination).
async fn pipe_changes(s: &crate::common::TestServer, acct: &str, n: usize) -> Vec<[String; 4]> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let events =
            crate::common::read_all(&s.client, &s.url(&format!("/eddy/events({acct})"))).await;
        let got: Vec<[String; 4]> = events
            .iter()
            .filter(|e| e["type"].as_str().unwrap().starts_with("pipe-"))
            .map(|e| {
                let f = |v: &Value| v.as_str().unwrap().to_owned();
                [
                    f(&e["type"]),
                    f(&e["data"]["stream"]),
                    f(&e["data"]["origin"]),
                    f(&e["data"]["destination"]),
                ]
            })
            .collect();
        if got.len() >= n {
            return got;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "/eddy/events({acct}) has {} pipe changes, not {n}: {got:?}",
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn pipe_changes_are_recorded_in_every_account_they_touch() {
    let s = spawn_server().await;
    let put_delete = |path: String| {
        let s = &s;
        async move {
            let r = s.client.put(s.url(&path)).send().await.unwrap();
            assert_eq!(r.status(), 201, "PUT {path}: {:?}", r.text().await);
            let r = s.client.delete(s.url(&path)).send().await.unwrap();
            assert_eq!(r.status(), 204, "DELETE {path}");
        }
    };
    let row =
        |t: &str, stream: &str, from: &str, to: &str| [t, stream, from, to].map(str::to_owned);
    // from a builtin origin: recorded in the destination's account
    put_delete(format!("{EVERY_SECOND}/pipe/c/ticks")).await;
    let cron = "eddy/cron('* * * * * *')";
    assert_eq!(
        pipe_changes(&s, "c", 2).await,
        [
            row("pipe-added", "c/ticks", cron, "c/ticks"),
            row("pipe-removed", "c/ticks", cron, "c/ticks"),
        ]
    );
    put_delete("/eddy/events(p)/pipe/p/audit".into()).await;
    assert_eq!(
        pipe_changes(&s, "p", 2).await,
        [
            row("pipe-added", "p/audit", "eddy/events(p)", "p/audit"),
            row("pipe-removed", "p/audit", "eddy/events(p)", "p/audit"),
        ]
    );
    // across accounts: in both, each once
    put_delete("/p/clicks/pipe/q2/dest".into()).await;
    assert_eq!(
        pipe_changes(&s, "q2", 2).await,
        [
            row("pipe-added", "q2/dest", "p/clicks", "q2/dest"),
            row("pipe-removed", "q2/dest", "p/clicks", "q2/dest"),
        ]
    );
    let in_p = pipe_changes(&s, "p", 4).await;
    assert_eq!(
        in_p[2..],
        [
            row("pipe-added", "p/clicks", "p/clicks", "q2/dest"),
            row("pipe-removed", "p/clicks", "p/clicks", "q2/dest"),
        ]
    );
    // within one account: once
    put_delete("/a/x/pipe/a/y".into()).await;
    assert_eq!(
        pipe_changes(&s, "a", 2).await,
        [
            row("pipe-added", "a/x", "a/x", "a/y"),
            row("pipe-removed", "a/x", "a/x", "a/y"),
        ]
    );
    // nothing more arrives later
    s.post_ok("/z/flush", "t", json!(1)).await;
    for (acct, n) in [("c", 2), ("p", 4), ("q2", 2), ("a", 2)] {
        assert_eq!(pipe_changes(&s, acct, n).await.len(), n, "{acct}");
    }
}

/// Anyone may follow a cron stream, and each one that ticks stores its ticks for good:
/// subscriptions alone keep at most 64 cron streams ticking; pipes are not limited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_alone_keep_a_bounded_number_of_cron_streams_ticking() {
    // heartbeats often enough that a closed subscription is noticed soon
    let s = spawn_server_with(|c| c.sse_heartbeat_ms = 300).await;
    // schedules far from now: nothing ticks while the test runs
    let cron = |m: usize, h: usize| format!("/eddy/cron('{m}%20{h}%201%201%20*')");
    let follow = |path: String| {
        s.client
            .get(s.url(&path))
            .header("accept", "text/event-stream")
            .send()
    };
    let mut held = Vec::new();
    for k in 0..64 {
        let r = follow(cron(k % 60, k / 60)).await.unwrap();
        assert_eq!(r.status(), 200, "subscription {k}");
        held.push(r);
    }
    let r = follow(cron(30, 5)).await.unwrap();
    let v = assert_error(r, 503, "cron streams ticking already").await;
    assert_eq!(v["limit"], 64);
    // one that ticks already takes more subscribers, and a pipe starts any
    assert_eq!(follow(cron(0, 0)).await.unwrap().status(), 200);
    let r = s
        .client
        .put(s.url(&format!("{}/pipe/acme/ticks", cron(30, 5))))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    // a subscription that ends makes room
    held.pop();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = follow(cron(31, 5)).await.unwrap();
        if r.status() == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no room made");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
