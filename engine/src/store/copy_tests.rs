//! The copy into PostgreSQL (`copy`) in process, against a real SQLite file and a
//! throwaway PostgreSQL: a copy dropped half way resumes to the same rows, a source
//! that changed since is refused, and so is a source an older eddy wrote. (The
//! black-box tests in tests/api/migrate.rs run the `eddy migrate` binary.)

use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use sqlx::Connection as _;
use sqlx::postgres::PgConnection;

use super::copy::{CopyError, CopyEvent, copy_to_postgres};
use super::{AppendRequest, DB_FILE, Store, migrations};
use crate::event::{ExpectedIndex, NewEvent};
use crate::path::{Resource, parse};

/// Appends `n` events to `stream` in batches, through a store opened on `dir`.
async fn write_events(dir: &Path, stream: &str, n: usize) {
    let store = Store::open(dir, Arc::default(), Default::default())
        .await
        .unwrap();
    let Ok(Resource::Stream(path)) = parse(stream) else {
        panic!("{stream} is a stream path")
    };
    for start in (0..n).step_by(1000) {
        let events = (start..n.min(start + 1000))
            .map(|i| NewEvent {
                id: None,
                event_type: "t".into(),
                content_type: "application/json".into(),
                data: Bytes::from(format!("{{\"n\":{i}}}")),
                timestamp: None,
                metadata: None,
                origin: None,
            })
            .collect();
        store
            .writer
            .append(AppendRequest {
                metadata: None,
                stream: path.clone(),
                events,
                expected: ExpectedIndex::Any,
            })
            .await
            .unwrap();
    }
    store.shutdown().await;
}

/// Runs a copy and drops it once some events are committed but not all: as a kill
/// would, it leaves its progress behind.
async fn interrupted_copy(dir: &Path, url: &str) {
    let (seen, mut first_batch) = tokio::sync::mpsc::unbounded_channel();
    let mut report = move |e: CopyEvent<'_>| {
        if let CopyEvent::Table(p) = e
            && p.table == "events"
            && !p.done
        {
            let _ = seen.send(());
        }
    };
    tokio::select! {
        r = copy_to_postgres(dir, url, &mut report) => panic!("the copy ended: {r:?}"),
        _ = first_batch.recv() => {}
    }
}

/// A copy (which waits for a dropped one's session to end and free the target).
async fn copy(dir: &Path, url: &str) -> Result<super::copy::CopySummary, CopyError> {
    copy_to_postgres(dir, url, &mut |_| {}).await
}

async fn count(url: &str, sql: &'static str) -> i64 {
    let mut pg = PgConnection::connect(url).await.unwrap();
    sqlx::query_scalar(sql).fetch_one(&mut pg).await.unwrap()
}

#[tokio::test]
async fn a_dropped_copy_resumes_and_a_changed_source_is_refused() {
    let Some(cluster) = eddy_testpg::shared_cluster() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    write_events(dir.path(), "/a/s", 23_000).await;

    let url = cluster.fresh_database("copy_resumed").unwrap();
    interrupted_copy(dir.path(), &url).await;
    let partial = count(&url, "SELECT count(*) FROM events").await;
    assert!(
        (5_000..23_000).contains(&partial),
        "{partial} events copied"
    );
    let summary = copy(dir.path(), &url).await.unwrap();
    assert!(summary.resumed);
    // (the account events of the stream's creation are events too)
    let rows = |table: &str| summary.tables.iter().find(|t| t.0 == table).unwrap().1 as i64;
    let events = rows("events");
    assert!(events >= 23_000);
    // the batches committed before the drop, and the tables before them, were not
    // copied again
    let before: i64 = ["instance", "accounts", "api_keys", "streams", "substreams"]
        .map(rows)
        .iter()
        .sum();
    let total: i64 = summary.tables.iter().map(|t| t.1 as i64).sum();
    assert_eq!(summary.this_run as i64, total - before - partial);
    assert_eq!(
        count(&url, "SELECT count(DISTINCT pos) FROM events").await,
        events
    );
    assert_eq!(
        count(&url, "SELECT last FROM event_positions").await,
        events
    );

    // an interrupted copy of a source that has grown since is not resumed
    let url = cluster.fresh_database("copy_changed").unwrap();
    interrupted_copy(dir.path(), &url).await;
    write_events(dir.path(), "/a/s", 1).await;
    let err = copy(dir.path(), &url).await.unwrap_err();
    assert!(matches!(err, CopyError::SourceChanged(_)), "{err}");
    assert!(err.to_string().contains("table events had"), "{err}");

    // nor is one whose rows changed with no row added (a server ran and, say, changed
    // settings or moved a cursor)
    let url = cluster.fresh_database("copy_edited").unwrap();
    interrupted_copy(dir.path(), &url).await;
    rusqlite::Connection::open(dir.path().join(DB_FILE))
        .unwrap()
        .execute(
            "UPDATE streams SET settings = '{\"public\":{\"read\":true}}' WHERE name = 's'",
            [],
        )
        .unwrap();
    let err = copy(dir.path(), &url).await.unwrap_err();
    assert!(matches!(err, CopyError::SourceChanged(_)), "{err}");
    assert!(err.to_string().contains("table streams changed"), "{err}");
}

#[tokio::test]
async fn a_database_an_older_eddy_wrote_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let opts = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(dir.path().join(DB_FILE))
        .create_if_missing(true);
    let pool = sqlx::SqlitePool::connect_with(opts).await.unwrap();
    let mut older = migrations::migrator();
    older.migrations = Cow::Owned(older.migrations[..6].to_vec());
    older.run(&pool).await.unwrap();
    pool.close().await;
    // refused before the target is even looked at
    let err = copy_to_postgres(
        dir.path(),
        "postgres://nobody@127.0.0.1:1/none",
        &mut |_| {},
    )
    .await
    .unwrap_err();
    assert!(matches!(err, CopyError::SourceVersion(_)), "{err}");
    assert!(err.to_string().contains("older eddy"), "{err}");

    let empty = tempfile::tempdir().unwrap();
    let err = copy_to_postgres(empty.path(), "postgres://x@127.0.0.1:1/x", &mut |_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, CopyError::NoSource(_)), "{err}");
}
