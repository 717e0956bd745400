use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::Duration;

use tokio::sync::broadcast;

use super::{Announce, Foreign, Touched, commit_heard, start_sequencer};
use crate::metrics::Metrics;
use crate::order::Position;
use crate::store::notice::Committed;
use crate::store::test_backends::{migrated_postgres, path};
use crate::store::{Pool, Reads};

fn touched(paths: &[(&str, &str, &str)], spliced: &[(&str, &str)]) -> Touched {
    Touched {
        streams: vec![7],
        paths: (paths.iter())
            .map(|(a, s, x)| ((*a).to_owned(), (*s).to_owned(), (*x).to_owned()))
            .collect(),
        spliced: (spliced.iter())
            .map(|(a, s)| ((*a).to_owned(), (*s).to_owned()))
            .collect(),
    }
}

#[test]
fn a_commit_notification_names_what_it_touched() {
    let t = touched(&[("acme", "orders", "'c1'")], &[]);
    let payload = format!("node-a 12 10 {}", t.payload());
    let Some(Announce::Foreign(f)) = commit_heard(&payload, "node-b") else {
        panic!("another node's commit with what it touched");
    };
    assert_eq!((f.first, f.last), (10, 12));
    assert_eq!(f.touched.streams, vec![7]);
    assert_eq!(f.touched.paths, t.paths);
    // this node's own commits reach the sequencer from its writer
    assert!(commit_heard(&payload, "node-a").is_none());
    // too much to tell, or an older node's form: the head alone, read back
    for head_only in ["node-a 12 10 -", "node-a 12"] {
        assert!(matches!(
            commit_heard(head_only, "node-b"),
            Some(Announce::Head(12))
        ));
    }
    assert!(commit_heard("node-a twelve", "node-b").is_none());
}

#[test]
fn what_does_not_fit_a_notification_is_left_to_a_read() {
    let long = "x".repeat(100);
    let many: Vec<(&str, &str, &str)> = (0..100)
        .map(|_| ("acme", "orders", long.as_str()))
        .collect();
    assert_eq!(touched(&many, &[]).payload(), "-");
    let fits = touched(&many[..10], &[]).payload();
    assert!(
        fits.len() < super::TOUCHED_MAX && fits.starts_with('{'),
        "{fits}"
    );
}

#[test]
fn a_notice_from_a_notification_carries_paths_and_splices_and_no_events() {
    let t = touched(
        &[("acme", "orders", "'c1'"), ("acme", "s", "")],
        &[("acme", "old")],
    );
    let notice = t.notice(12);
    assert_eq!(notice.last_position, Position(12));
    assert!(
        notice.events.is_empty() && !notice.complete,
        "consumers read for themselves"
    );
    assert_eq!(notice.streams, vec![7]);
    let paths: Vec<String> = notice.paths.iter().map(|p| p.to_string()).collect();
    assert_eq!(paths, ["acme/orders('c1')", "acme/s", "acme/old"]);
    assert_eq!(*notice.spliced[0], path("acme/old"));
}

/// A sequencer over the database at `url` (connected on first use), what it
/// announces, and its metrics.
fn sequencer(
    url: &str,
) -> (
    tokio::sync::mpsc::UnboundedSender<Announce>,
    broadcast::Receiver<Arc<Committed>>,
    Arc<Metrics>,
) {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .connect_lazy(url)
        .unwrap();
    let reads = Reads {
        pool: Pool::Postgres(pool),
    };
    let (notices, rx) = broadcast::channel(16);
    let metrics = Arc::new(Metrics::default());
    let (tx, _) = start_sequencer(reads, notices, Arc::new(AtomicI64::new(0)), metrics.clone());
    (tx, rx, metrics)
}

async fn next(rx: &mut broadcast::Receiver<Arc<Committed>>) -> Arc<Committed> {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a notice")
        .unwrap()
}

fn local(last: i64) -> Box<Committed> {
    Box::new(Committed::new(
        Position(last),
        Vec::new(),
        Vec::new(),
        true,
        Vec::new(),
    ))
}

#[tokio::test]
async fn commits_are_announced_in_position_order_whatever_order_they_arrive_in() {
    // no live subscriber: nothing is read, so no database is needed
    let (tx, mut rx, metrics) = sequencer("postgres://nobody@127.0.0.1:1/none");
    tx.send(Announce::Local {
        first: 3,
        notice: local(4),
    })
    .ok();
    tx.send(Announce::Foreign(Box::new(Foreign {
        first: 1,
        last: 2,
        touched: touched(&[("acme", "s", "")], &[]),
    })))
    .ok();
    tx.send(Announce::Foreign(Box::new(Foreign {
        first: 5,
        last: 5,
        touched: touched(&[("acme", "s", "")], &[]),
    })))
    .ok();
    // announced already: nothing more
    tx.send(Announce::Foreign(Box::new(Foreign {
        first: 1,
        last: 2,
        touched: touched(&[], &[]),
    })))
    .ok();
    let order: Vec<i64> = [
        next(&mut rx).await,
        next(&mut rx).await,
        next(&mut rx).await,
    ]
    .iter()
    .map(|n| n.last_position.get())
    .collect();
    assert_eq!(order, [2, 4, 5]);
    assert!(rx.try_recv().is_err(), "each commit once");
    assert_eq!(metrics.foreign_commits_notified.get(), 2);
    assert_eq!(metrics.foreign_reads.get(), 0, "nothing read back");
}

/// A database holding two events of `acme/s`, at positions 1 and 2.
async fn two_events(label: &str) -> Option<String> {
    let url = migrated_postgres(label).await?;
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    for sql in [
        "INSERT INTO streams (id, account, name, created_at) VALUES (1, 'acme', 's', 0)",
        "INSERT INTO substreams (id, stream_id, args, created_at) VALUES (1, 1, '', 0)",
        "INSERT INTO events (pos, sid, idx, eid, type, ts, content_type, data) VALUES \
         (1, 1, 0, '\\x00000000000000000000000000000001', 't', 5, 'text/plain', 'a'), \
         (2, 1, 1, '\\x00000000000000000000000000000002', 't', 6, 'text/plain', 'b')",
    ] {
        sqlx::query(sql).execute(&pool).await.unwrap();
    }
    Some(url)
}

/// The data of the events `notice` carries.
fn data(notice: &Committed) -> Vec<&[u8]> {
    notice
        .events
        .iter()
        .map(|e| e.event.data.as_ref())
        .collect()
}

#[tokio::test]
async fn a_gap_whose_notification_does_not_come_is_read() {
    let Some(url) = two_events("sequencer_gap").await else {
        return;
    };
    let (tx, mut rx, _) = sequencer(&url);
    let sent = tokio::time::Instant::now();
    tx.send(Announce::Local {
        first: 3,
        notice: local(3),
    })
    .ok();
    let read = next(&mut rx).await;
    assert!(
        sent.elapsed() >= super::GAP_WAIT,
        "the gap's notification was waited for"
    );
    assert_eq!(read.last_position, Position(2));
    assert_eq!(data(&read), [b"a", b"b"], "read with their data");
    assert_eq!(next(&mut rx).await.last_position, Position(3));
}

#[tokio::test]
async fn live_subscribers_get_other_nodes_events_read_back_once() {
    let Some(url) = two_events("sequencer_subscribers").await else {
        return;
    };
    let (tx, mut rx, metrics) = sequencer(&url);
    metrics.subscribers.inc();
    // a poll's head, then a notification of a commit it covered part of
    tx.send(Announce::Head(1)).ok();
    tx.send(Announce::Foreign(Box::new(Foreign {
        first: 1,
        last: 2,
        touched: touched(&[("acme", "s", "")], &[]),
    })))
    .ok();
    let (first, second) = (next(&mut rx).await, next(&mut rx).await);
    assert_eq!(data(&first), [b"a"], "the part the head covered");
    assert_eq!(data(&second), [b"b"], "the rest of the notified commit");
    assert_eq!(second.last_position, Position(2));
    assert_eq!(metrics.foreign_commits_notified.get(), 0, "all read back");
    assert!(rx.try_recv().is_err(), "each event once");
}
