//! Appends through the group-commit writer on both backends: the same requests give
//! the same answers (indexes, positions, retried ids, expected-index and timestamp
//! refusals, factory shape) on a SQLite file and on a throwaway PostgreSQL database.

use std::sync::Arc;
use std::sync::atomic::AtomicI64;

use tokio::sync::broadcast;

use super::apply::{AppendRequest, Appended};
use super::test_backends::{self, path};
use super::writer::{self, WriterHandle};
use crate::error::ErrorCode;
use crate::event::{ExpectedIndex, NewEvent};
use crate::order::Index;

fn event(id: Option<uuid::Uuid>, ts: Option<i64>) -> NewEvent {
    NewEvent {
        id,
        timestamp: ts,
        ..test_backends::event("placed", b"{\"n\":1}")
    }
}

async fn append(
    w: &WriterHandle,
    p: &str,
    events: Vec<NewEvent>,
    expected: ExpectedIndex,
) -> crate::error::Result<Appended> {
    w.append(AppendRequest {
        metadata: None,
        stream: path(p),
        events,
        expected,
    })
    .await
}

type Started = (WriterHandle, std::thread::JoinHandle<()>);

async fn sqlite_writer(dir: &tempfile::TempDir) -> Started {
    let file = test_backends::migrated_sqlite(dir).await;
    writer::spawn(
        &file,
        broadcast::channel(16).0,
        Arc::new(AtomicI64::new(0)),
        Arc::default(),
        Default::default(),
    )
    .unwrap()
}

async fn postgres_writer(label: &str) -> Option<Started> {
    let url = test_backends::migrated_postgres(label).await?;
    let started = writer::spawn_postgres(
        &url,
        "node-test".into(),
        tokio::sync::mpsc::unbounded_channel().0,
        Arc::new(AtomicI64::new(0)),
        Arc::default(),
        Default::default(),
    );
    Some(started.await.unwrap())
}

async fn appends_follow_the_rules((w, thread): Started) {
    // concurrent single appends form groups; indexes and positions are gapless
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let w = w.clone();
        tasks.push(tokio::spawn(async move {
            append(&w, "acme/log", vec![event(None, None)], ExpectedIndex::Any)
                .await
                .unwrap()
        }));
    }
    let mut written = Vec::new();
    for t in tasks {
        written.push(t.await.unwrap().events[0]);
    }
    written.sort_unstable_by_key(|e| e.index);
    let indexes: Vec<u64> = written.iter().map(|e| e.index.get()).collect();
    assert_eq!(indexes, (0..40).collect::<Vec<u64>>());
    let positions: Vec<i64> = written.iter().map(|e| e.position.get()).collect();
    // (position 1 is the account event announcing the new stream)
    assert_eq!(
        positions,
        (2..=41).collect::<Vec<i64>>(),
        "positions in index order"
    );

    // a retried id answers what was written, without writing again
    let id = uuid::Uuid::new_v4();
    let send = || {
        append(
            &w,
            "acme/log",
            vec![event(Some(id), None)],
            ExpectedIndex::Any,
        )
    };
    let first = send().await.unwrap();
    let again = send().await.unwrap();
    assert!(!first.duplicate && again.duplicate);
    assert_eq!(first.events[0].index, 40);
    assert_eq!(again.events[0].position, first.events[0].position);
    // so does a server-generated id, found through the position it encodes
    let generated_again = append(
        &w,
        "acme/log",
        vec![event(Some(written[0].id), None)],
        ExpectedIndex::Any,
    )
    .await
    .unwrap();
    assert!(generated_again.duplicate);
    assert_eq!(generated_again.events[0].index, 0);

    // expected index, timestamps and the shape of the path are refused, writing nothing
    let refused = |p: &'static str, e: NewEvent, expected: ExpectedIndex, needle: &'static str| {
        let w = w.clone();
        async move {
            let err = append(&w, p, vec![e], expected).await.unwrap_err();
            assert!(err.message.contains(needle), "{}", err.message);
            err.code
        }
    };
    let last_index = "last index of acme/log is 40";
    let stale = refused(
        "acme/log",
        event(None, None),
        ExpectedIndex::Last(Index(3)),
        last_index,
    );
    assert_eq!(stale.await, ErrorCode::Conflict);
    let past = refused(
        "acme/log",
        event(None, Some(5)),
        ExpectedIndex::Any,
        "never decrease",
    );
    assert_eq!(past.await, ErrorCode::Conflict);
    let shaped = refused(
        "acme/log('x')",
        event(None, None),
        ExpectedIndex::Any,
        "plain stream",
    );
    assert_eq!(shaped.await, ErrorCode::Invalid);
    let next = append(
        &w,
        "acme/log",
        vec![event(None, None)],
        ExpectedIndex::Last(Index(40)),
    )
    .await
    .unwrap();
    assert_eq!(next.events[0].index, 41);

    // a factory's substreams each count from 0, in one global order
    let a = append(
        &w,
        "acme/orders('a')",
        vec![event(None, None), event(None, None)],
        ExpectedIndex::NoEvents,
    )
    .await
    .unwrap();
    let b = append(
        &w,
        "acme/orders('b')",
        vec![event(None, None)],
        ExpectedIndex::Any,
    )
    .await
    .unwrap();
    assert_eq!(
        (a.events[1].index.get(), b.events[0].index.get()),
        (1, 0),
        "substreams count apart"
    );
    assert!(b.events[0].position > a.events[1].position);
    w.shutdown().await;
    thread.join().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_follow_the_rules_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    appends_follow_the_rules(sqlite_writer(&dir).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_follow_the_rules_on_postgres() {
    let Some(started) = postgres_writer("writer_appends").await else {
        return;
    };
    appends_follow_the_rules(started).await;
}
