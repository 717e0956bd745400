//! The fan-out's merging of notices, driven through its real broadcast channel.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;

use super::{Hub, Interest};
use crate::order::Position;
use crate::path::{Resource, StreamPath};
use crate::store::{Committed, LiveEvent};

fn path(p: &str) -> Arc<StreamPath> {
    match crate::path::parse(p).expect("path") {
        Resource::Stream(s) => Arc::new(s),
        other => panic!("{other:?}"),
    }
}

/// A notice of `n` events of `at` from global position `from`.
fn notice(at: &Arc<StreamPath>, from: i64, n: i64, complete: bool) -> Arc<Committed> {
    let events = (from..from + n)
        .map(|pos| LiveEvent::for_test(at, pos as u64, pos))
        .collect();
    Arc::new(Committed::new(
        Position(from + n - 1),
        vec![1],
        events,
        complete,
        vec![at.clone()],
    ))
}

fn hub() -> (broadcast::Sender<Arc<Committed>>, Hub) {
    let (tx, rx) = broadcast::channel(4096);
    let hub = Hub::start(
        rx,
        Arc::new(crate::metrics::Metrics::default()),
        super::DEFAULT_MERGE_RATE,
    );
    (tx, hub)
}

fn factory_interest() -> Interest {
    Interest::Stream {
        account: "acme".into(),
        stream: "f".into(),
    }
}

#[test]
fn merged_notices_read_as_one_commit() {
    let at = path("/acme/f('a')");
    let parts = [notice(&at, 1, 2, true), notice(&at, 3, 3, true)];
    let m = Committed::merged(&parts);
    assert_eq!(m.last_position, 5);
    assert_eq!(m.commits, 2);
    assert!(m.complete);
    assert_eq!(m.paths, vec![at.clone()]);
    let positions: Vec<i64> = m.events.iter().map(|l| l.event.position.get()).collect();
    assert_eq!(positions, [1, 2, 3, 4, 5]);
    assert_eq!(
        (m.summary.min_index.get(), m.summary.max_index.get()),
        (1, 5)
    );
}

/// Notices in 16s every 2 ms, at 8 000 commits a second: after the first span they
/// come merged, never across an incomplete notice or a change of substream, and every
/// event arrives once, in order. Time is paused (it moves only when every task
/// waits), so a loaded machine cannot stretch the sender's pauses below the rate at
/// which notices merge.
#[tokio::test(start_paused = true)]
async fn under_load_notices_of_the_same_substream_merge() {
    let (tx, hub) = hub();
    let mut reg = hub.register(factory_interest());
    let (a, b) = (path("/acme/f('a')"), path("/acme/f('b')"));
    let sent = 800;
    let pos = 1 + 3 * sent;
    // received meanwhile: the subscriber's queue holds fewer than are sent
    tokio::spawn(async move {
        for i in 0..sent {
            // every 20 notices another substream; every 50th incomplete
            let at = if (i / 20) % 2 == 0 { &a } else { &b };
            tx.send(notice(at, 1 + 3 * i, 3, i % 50 != 49))
                .expect("a receiver");
            if i % 16 == 15 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    });
    let mut next = 1;
    let (mut received, mut merged, mut commits) = (Vec::new(), 0, 0);
    while next < pos {
        let n = tokio::time::timeout(Duration::from_secs(5), reg.rx.recv())
            .await
            .expect("every notice within 5 s")
            .expect("the hub runs");
        for l in &n.events {
            assert_eq!(l.event.position, next, "events once each, in order");
            assert_eq!(l.path, n.paths[0], "a notice holds one substream's events");
            next += 1;
        }
        if n.commits > 1 {
            merged += 1;
            assert!(n.complete, "an incomplete notice is never merged");
        }
        commits += n.commits;
        received.push(n);
    }
    assert_eq!(commits, sent as usize, "every commit is in one notice");
    assert_eq!(received[0].commits, 1, "the first span is not merged");
    assert!(
        merged > 10 && received.len() < sent as usize / 2,
        "{merged} merged notices of {} received",
        received.len()
    );
    assert!(!reg.signal.take_lagged());
}

/// At a few hundred commits a second each notice goes out alone, as it comes.
#[tokio::test(start_paused = true)]
async fn at_a_low_rate_notices_are_not_held() {
    let (tx, hub) = hub();
    let mut reg = hub.register(factory_interest());
    let at = path("/acme/f('a')");
    for i in 0..30 {
        let sent = tokio::time::Instant::now();
        tx.send(notice(&at, 1 + i, 1, true)).expect("a receiver");
        let n = tokio::time::timeout(Duration::from_secs(5), reg.rx.recv())
            .await
            .expect("the notice")
            .expect("the hub runs");
        assert_eq!((n.commits, n.last_position.get()), (1, 1 + i));
        // paused time moves only if the hub waits on its merge timer
        assert_eq!(sent.elapsed(), Duration::ZERO, "notice {i} was held");
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
}

#[test]
fn the_merge_rate_is_counted_per_span() {
    // 25 ms spans: 40 a second
    assert_eq!(super::merge_from(super::DEFAULT_MERGE_RATE), Some(40));
    assert_eq!(super::merge_from(41), Some(2));
    assert_eq!(super::merge_from(1), Some(1));
    assert_eq!(super::merge_from(0), None, "0: never merge");
}
