//! Live reducer state (API §14): `Accept: text/event-stream` on a state URL, read with
//! an EventSource parser: the state now, then each newer one with the folded index as
//! its id; `Last-Event-ID` skips what the client has; a factory's URL sends the states
//! of the substreams its selector picks.

use std::time::Duration;

use eventsource_stream::{Event, Eventsource};
use futures::{Stream, StreamExt};
use serde_json::{Value, json};

use crate::access::{ADMIN, account, secured, send};
use crate::common::{TestServer, assert_error, spawn_server};
use crate::reducers::deploy;

type Events = std::pin::Pin<Box<dyn Stream<Item = Result<Event, String>> + Send>>;

async fn watch(s: &TestServer, path: &str, last_id: Option<&str>) -> Events {
    let mut req = s
        .client
        .get(s.url(path))
        .header("accept", "text/event-stream");
    if let Some(id) = last_id {
        req = req.header("last-event-id", id);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 200, "GET {path}");
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    Box::pin(
        r.bytes_stream()
            .eventsource()
            .map(|e| e.map_err(|e| e.to_string())),
    )
}

async fn next(events: &mut Events) -> (String, Value) {
    let e = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("a state within 10 s")
        .expect("the stream is open")
        .expect("a well-formed event");
    (e.id, serde_json::from_str(&e.data).expect("data is JSON"))
}

/// States until the one with id `want`: folds may be coalesced, never reordered.
async fn until(events: &mut Events, want: &str) -> Vec<(String, Value)> {
    let mut seen = Vec::new();
    loop {
        let (id, state) = next(events).await;
        let done = id == want;
        seen.push((id, state));
        if done {
            return seen;
        }
    }
}

const COUNT: &str = "(n = 0, e) => n + 1";

#[tokio::test]
async fn a_state_is_pushed_as_it_changes_and_resumes_after_its_id() {
    let s = spawn_server().await;
    assert_eq!(deploy(&s, "/acme/orders.count", COUNT).await.status(), 201);
    s.post_ok("/acme/orders", "order", json!({})).await;
    let r = s.get("/acme/orders.count?min-index=0&wait=10000").await;
    assert_eq!(r.headers()["reducer-index"], "0");

    let mut live = watch(&s, "/acme/orders.count", None).await;
    assert_eq!(next(&mut live).await, ("0".to_owned(), json!(1)));
    for _ in 0..3 {
        s.post_ok("/acme/orders", "order", json!({})).await;
    }
    let seen = until(&mut live, "3").await;
    // ids are the folded indexes and only grow; so do the counts that go with them
    let ids: Vec<i64> = seen.iter().map(|(id, _)| id.parse().unwrap()).collect();
    let counts: Vec<i64> = seen.iter().map(|(_, n)| n.as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    assert!(counts.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    assert_eq!(seen.last().unwrap().1, json!(4));

    // reconnecting with the last id gets nothing until the next fold
    let mut again = watch(&s, "/acme/orders.count", Some("3")).await;
    s.post_ok("/acme/orders", "order", json!({})).await;
    assert_eq!(next(&mut again).await, ("4".to_owned(), json!(5)));
    // with an older id, the current state first
    let mut behind = watch(&s, "/acme/orders.count", Some("1")).await;
    assert_eq!(next(&mut behind).await, ("4".to_owned(), json!(5)));

    // a splice drops three events: an id from the old history, past the new one's
    // end, gets the state now, not after three more events
    let id =
        crate::splices::splice_at(&s.base, "/acme/orders", "(e) => e.index < 2 ? e : null").await;
    let r = s
        .call(
            "POST",
            &format!("/acme/orders/splices/{id}/approve"),
            &[],
            json!(null),
        )
        .await;
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while s.get("/acme/orders.count").await.headers()["reducer-index"] != "1" {
        assert!(std::time::Instant::now() < deadline, "not rebuilt");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut stale = watch(&s, "/acme/orders.count", Some("4")).await;
    assert_eq!(next(&mut stale).await, ("1".to_owned(), json!(2)));
}

#[tokio::test]
async fn a_redeploy_sends_the_rebuilt_state_once_it_takes_over_at_the_same_index() {
    let s = spawn_server().await;
    assert_eq!(deploy(&s, "/acme/orders.count", COUNT).await.status(), 201);
    for _ in 0..3 {
        s.post_ok("/acme/orders", "order", json!({})).await;
    }
    let r = s.get("/acme/orders.count?min-index=2&wait=10000").await;
    assert_eq!(r.headers()["reducer-index"], "2");
    let mut live = watch(&s, "/acme/orders.count", None).await;
    assert_eq!(next(&mut live).await, ("2".to_owned(), json!(3)));
    let r = deploy(&s, "/acme/orders.count", "(n = 0, e) => n + 10").await;
    assert_eq!(r.status(), 200);
    // no new event: the same index, the new version's state
    assert_eq!(next(&mut live).await, ("2".to_owned(), json!(30)));
    s.post_ok("/acme/orders", "order", json!({})).await;
    assert_eq!(next(&mut live).await, ("3".to_owned(), json!(40)));
}

#[tokio::test]
async fn a_factory_sends_the_states_of_the_substreams_it_picks() {
    let s = spawn_server().await;
    s.post_ok("/acme/carts('c1')", "add", json!({})).await;
    assert_eq!(deploy(&s, "/acme/carts.items", COUNT).await.status(), 201);
    let mut live = watch(&s, "/acme/carts.items?sub=('c1')", None).await;
    s.post_ok("/acme/carts('c2')", "add", json!({})).await;
    s.post_ok("/acme/carts('c1')", "add", json!({})).await;
    let (id, first) = next(&mut live).await;
    assert_eq!(
        first,
        json!({"stream": "acme/carts('c1')", "index": 1, "state": 2})
    );
    // the id is the event's global position: resuming after it sends what followed
    s.post_ok("/acme/carts('c1')", "add", json!({})).await;
    let (_, second) = next(&mut live).await;
    assert_eq!(second["state"], 3);
    let mut again = watch(&s, "/acme/carts.items?sub=('c1')", Some(&id)).await;
    let (_, replayed) = next(&mut again).await;
    assert_eq!(replayed, second);
}

#[tokio::test]
async fn live_state_of_what_does_not_exist_is_refused() {
    let s = spawn_server().await;
    s.post_ok("/acme/orders", "order", json!({})).await;
    let get = |path: &'static str| {
        s.client
            .get(s.url(path))
            .header("accept", "text/event-stream")
            .send()
    };
    assert_error(get("/acme/orders.nothing").await.unwrap(), 404, "nothing").await;
    assert_error(get("/acme/missing.count").await.unwrap(), 404, "missing").await;
    let r = s
        .client
        .get(s.url("/acme/orders.count"))
        .header("accept", "text/event-stream")
        .header("last-event-id", "soon")
        .send()
        .await
        .unwrap();
    assert_error(r, 400, "Last-Event-ID").await;
}

#[tokio::test]
async fn another_account_may_not_watch_a_state_or_replay_a_webhook() {
    let s = secured().await;
    let acme = format!("Bearer {}", account(&s, "acme").await);
    let bob = format!("Bearer {}", account(&s, "bob").await);
    let r = s
        .client
        .put(s.url("/acme/orders.count"))
        .header("authorization", &acme)
        .header("content-type", "application/javascript")
        .body(COUNT)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(
        send(&s, "POST", "/acme/orders", Some(&acme), Some(json!({})))
            .await
            .status(),
        201
    );
    let watch_as = |auth: String| {
        s.client
            .get(s.url("/acme/orders.count"))
            .header("accept", "text/event-stream")
            .header("authorization", auth)
            .send()
    };
    assert_error(watch_as(bob.clone()).await.unwrap(), 403, "bob").await;
    assert_eq!(watch_as(acme.clone()).await.unwrap().status(), 200);
    assert_eq!(
        watch_as(format!("Bearer {ADMIN}")).await.unwrap().status(),
        200
    );
    // a replay is the account's own: refused before the webhook is even looked up
    let r = send(
        &s,
        "POST",
        "/acme/orders/webhooks/wh_any/replay?from=0",
        Some(&bob),
        None,
    )
    .await;
    assert_error(r, 403, "acme's keys").await;
    // so is re-running a pipe over its origin's history
    let r = s
        .client
        .put(s.url("/acme/orders/pipe/acme/copies?replay-from=0"))
        .header("authorization", &bob)
        .header("content-type", "application/javascript")
        .body("export default (e) => e")
        .send()
        .await
        .unwrap();
    assert_error(r, 403, "acme's keys").await;
}
