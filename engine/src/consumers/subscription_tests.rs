//! Subscriptions against a real store: a subscriber that stops reading falls behind the
//! fan-out and is caught up from storage with nothing lost or repeated.

use std::sync::Arc;

use bytes::Bytes;

use super::{Follow, Start};
use crate::event::{ExpectedIndex, NewEvent};
use crate::order::Position;
use crate::path::{Resource, StreamPath};
use crate::selector::Selector;
use crate::{AppendRequest, Engine};

async fn engine(dir: &std::path::Path) -> Arc<Engine> {
    let metrics = Arc::new(crate::metrics::Metrics::default());
    Engine::open(
        &crate::store::Storage::Embedded(dir.to_owned()),
        metrics,
        crate::Options {
            reducers: crate::reducers::PoolSettings {
                limits: eddy_runtime_js::Limits::default(),
                threads: 2,
                memory_total: 256 * 1024 * 1024,
            },
            webhooks: crate::consumers::webhooks::WebhookSettings::default(),
            admin_token: None,
            fanout_merge_rate: crate::consumers::hub::DEFAULT_MERGE_RATE,
            json: crate::json::JsonLimits::default(),
            cluster: Default::default(),
            splice_write_budget: 0,
        },
    )
    .await
    .expect("open")
}

fn path(p: &str) -> StreamPath {
    match crate::path::parse(p).expect("path") {
        Resource::Stream(s) => s,
        other => panic!("{other:?}"),
    }
}

async fn append(engine: &Engine, p: &str, ty: &str, data: &[u8]) {
    engine
        .append(AppendRequest {
            metadata: None,
            stream: path(p),
            events: vec![NewEvent {
                id: None,
                event_type: ty.to_owned(),
                content_type: "application/octet-stream".to_owned(),
                data: Bytes::copy_from_slice(data),
                timestamp: None,
                metadata: None,
                origin: None,
            }],
            expected: ExpectedIndex::Any,
        })
        .await
        .expect("append");
}

/// An index-only subscription to the stream at `p`, from the live end.
async fn follow_live(engine: &Arc<Engine>, p: &str) -> super::Subscription {
    engine
        .follow(
            Follow::Stream(path(p)),
            Selector::default(),
            false,
            Start::Live,
        )
        .await
        .expect("follow")
}

async fn collect(sub: &mut super::Subscription, n: usize) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    while out.len() < n {
        let batch = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            sub.next(std::future::pending()),
        )
        .await
        .expect("events within 10 s")
        .expect("next");
        out.extend(batch.iter().map(|e| (e.stream.clone(), e.index.get())));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_stops_reading_catches_up_from_storage() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path()).await;
    let mut sub = follow_live(&engine, "/acme/s").await;
    // one commit each: far more notices than the subscriber's queue holds
    for i in 0..600u32 {
        append(&engine, "/acme/s", "t", &i.to_le_bytes()).await;
    }
    let got = collect(&mut sub, 600).await;
    let want: Vec<(String, u64)> = (0..600).map(|i| ("acme/s".to_owned(), i)).collect();
    assert_eq!(got, want);
    // and it follows live again afterwards
    append(&engine, "/acme/s", "t", b"x").await;
    assert_eq!(collect(&mut sub, 1).await, [("acme/s".to_owned(), 600)]);
    drop(sub);
    assert_eq!(engine.subscribers(), 0);
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_left_out_of_a_notice_is_read_from_storage() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path()).await;
    let mut sub = engine
        .follow(
            Follow::Account(crate::path::AccountName::new("acme").unwrap()),
            Selector::default(),
            true,
            Start::Live,
        )
        .await
        .unwrap();
    let big = vec![7u8; 100 * 1024];
    append(&engine, "/acme/a", "t", &big).await;
    append(&engine, "/acme/b('k')", "t", b"small").await;
    let mut events = Vec::new();
    while events.len() < 2 {
        events.extend(sub.next(std::future::pending()).await.unwrap());
    }
    assert_eq!(events[0].data.len(), big.len());
    assert_eq!(events[1].stream, "acme/b('k')");
    assert_eq!(&events[1].data[..], b"small");
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_left_out_of_a_large_commit_are_read_from_storage() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path()).await;
    let mut sub = follow_live(&engine, "/acme/big").await;
    let n = crate::store::notice::LIVE_EVENTS_MAX as u64 * 2 + 7;
    let events = (0..n)
        .map(|i| NewEvent {
            id: None,
            event_type: "t".to_owned(),
            content_type: "application/octet-stream".to_owned(),
            data: Bytes::from(i.to_le_bytes().to_vec()),
            timestamp: None,
            metadata: None,
            origin: None,
        })
        .collect();
    engine
        .append(AppendRequest {
            metadata: None,
            stream: path("/acme/big"),
            events,
            expected: ExpectedIndex::Any,
        })
        .await
        .unwrap();
    let got = collect(&mut sub, n as usize).await;
    let want: Vec<(String, u64)> = (0..n).map(|i| ("acme/big".to_owned(), i)).collect();
    assert_eq!(got, want);
    engine.shutdown().await;
}

/// The next delivery, within 10 s.
/// A new event of type `ty` with the data `x`, for batches.
fn event_x(ty: &str) -> NewEvent {
    NewEvent {
        id: None,
        event_type: ty.to_owned(),
        content_type: "application/octet-stream".to_owned(),
        data: Bytes::from_static(b"x"),
        timestamp: None,
        metadata: None,
        origin: None,
    }
}

async fn delivery(sub: &mut super::Subscription) -> super::Delivery {
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        sub.next_delivery(std::future::pending()),
    )
    .await
    .expect("a delivery within 10 s")
    .expect("next_delivery")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notice_wholly_for_a_subscriber_comes_whole_and_renders_once() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path()).await;
    // (the commit that creates a stream also records it in the account's own stream)
    append(&engine, "/acme/s", "first", b"0").await;
    let follow = |selector| {
        engine.follow(
            Follow::Stream(path("/acme/s")),
            selector,
            false,
            Start::Live,
        )
    };
    let mut all = follow(Selector::default()).await.unwrap();
    let mut also = follow(Selector::default()).await.unwrap();
    let mut typed = follow(Selector {
        types: vec!["b".to_owned()],
        ..Selector::default()
    })
    .await
    .unwrap();
    append(&engine, "/acme/s", "a", b"1").await;
    append(&engine, "/acme/s", "b", b"2").await;

    // every event of each notice is for `all` and `also`: they get the notices, and a
    // rendering asked for by both is made once
    let renders = std::sync::atomic::AtomicUsize::new(0);
    let mut seen = Vec::new();
    for sub in [&mut all, &mut also] {
        for want in 1..3u64 {
            let super::Delivery::Notice(n) = delivery(sub).await else {
                panic!("a whole notice for an unfiltered subscriber (want {want})");
            };
            assert_eq!(n.events.len(), 1);
            assert_eq!(n.events[0].event.index, want);
            let kind = sub.cursor_kind() * 2;
            let bytes = n.rendered(kind, |n| {
                renders.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Bytes::from(format!("{}", n.events[0].event.index))
            });
            assert_eq!(bytes, want.to_string());
            seen.push(bytes);
        }
    }
    assert_eq!(renders.load(std::sync::atomic::Ordering::Relaxed), 2);
    assert_eq!(seen, ["1", "2", "1", "2"]);

    // the type selector passes over the notice of "a"; the one of "b" is all for it
    let super::Delivery::Notice(n) = delivery(&mut typed).await else {
        panic!("a whole notice when all its events match the selector");
    };
    assert_eq!(n.events[0].event.event_type, "b");
    // a notice with events the selector passes over comes event by event
    engine
        .append(AppendRequest {
            metadata: None,
            stream: path("/acme/s"),
            events: vec![event_x("a"), event_x("b")],
            expected: ExpectedIndex::Any,
        })
        .await
        .unwrap();
    let super::Delivery::Events(events) = delivery(&mut typed).await else {
        panic!("events, not a notice, when the selector passes over some");
    };
    assert_eq!(
        events
            .iter()
            .map(|e| (e.event_type.as_str(), e.index.get()))
            .collect::<Vec<_>>(),
        [("b", 4)]
    );
    assert_eq!(
        collect(&mut all, 2).await,
        [("acme/s".to_owned(), 3), ("acme/s".to_owned(), 4)]
    );

    // `next` still gives a whole notice's events as events
    append(&engine, "/acme/s", "c", b"5").await;
    assert_eq!(
        collect(&mut also, 3).await.last().unwrap(),
        &("acme/s".to_owned(), 5)
    );
    engine.shutdown().await;
}

/// A complete notice of `n` events of `acme/s`.
fn notice(n: usize) -> crate::store::Committed {
    let at = Arc::new(path("/acme/s"));
    let events = (0..n)
        .map(|i| crate::store::LiveEvent::for_test(&at, i as u64, i as i64 + 1))
        .collect();
    crate::store::Committed::new(Position(n as i64), vec![1], events, true, vec![at])
}

#[tokio::test]
async fn gathering_waits_for_a_sustained_rate_not_a_large_notice() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path()).await;
    let mut sub = follow_live(&engine, "/acme/s").await;
    let ms = |n: u64| std::time::Duration::from_millis(n);
    let t0 = std::time::Instant::now();
    assert!(!sub.busy());
    // what a 300 ms stall at 1000 events/s leaves behind, in two notices at once
    sub.saw_notice_at(&notice(150), t0);
    sub.saw_notice_at(&notice(150), t0 + ms(1));
    assert!(!sub.busy());
    // then the producer's pace again: one event a millisecond
    for i in 2..60 {
        sub.saw_notice_at(&notice(1), t0 + ms(i));
    }
    assert!(!sub.busy());
    // a lone batch of 1000 events, long after: one notice, written at once
    sub.saw_notice_at(&notice(1000), t0 + ms(120));
    assert!(!sub.busy());
    // 25 events a millisecond (25 000/s), in commits of 50, for 30 ms
    let t1 = t0 + ms(200);
    for i in 0..15 {
        sub.saw_notice_at(&notice(50), t1 + ms(2 * i));
    }
    assert!(sub.busy());
    // a gap in the load longer than two spans ends it at the next notice
    sub.saw_notice_at(&notice(50), t1 + ms(100));
    assert!(!sub.busy());
    // a stall at 1000 events/s that ends in several large notices, then the pace
    let t2 = t0 + ms(400);
    for i in 0..4 {
        sub.saw_notice_at(&notice(40), t2 + ms(i));
    }
    for i in 4..60 {
        sub.saw_notice_at(&notice(1), t2 + ms(i));
    }
    assert!(!sub.busy());
    // the load of a slower machine: 7 000 events/s in commits of 12, for 40 ms
    let t3 = t0 + ms(600);
    for i in 0..24 {
        sub.saw_notice_at(&notice(12), t3 + std::time::Duration::from_micros(1700 * i));
    }
    assert!(sub.busy());
    drop(sub);
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notice_reaching_past_the_selector_range_comes_event_by_event() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path()).await;
    append(&engine, "/acme/s", "first", b"0").await;
    let mut ranged = engine
        .follow(
            Follow::Stream(path("/acme/s")),
            Selector::parse_query("to=2").unwrap(),
            false,
            Start::Live,
        )
        .await
        .unwrap();
    // one commit of indexes 1..=3: the notice's last event is past `to=2`
    engine
        .append(AppendRequest {
            metadata: None,
            stream: path("/acme/s"),
            events: vec![event_x("t"), event_x("t"), event_x("t")],
            expected: ExpectedIndex::Any,
        })
        .await
        .unwrap();
    let super::Delivery::Events(events) = delivery(&mut ranged).await else {
        panic!("events, not the whole notice, when some are past the range");
    };
    assert_eq!(events.iter().map(|e| e.index).collect::<Vec<_>>(), [1, 2]);
    engine.shutdown().await;
}
