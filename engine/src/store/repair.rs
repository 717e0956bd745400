//! Repairs made at every start to states an earlier version could leave behind; each
//! is a no-op on a database that does not need it.

use super::Reads;
use super::query::args;
use crate::builtins;
use crate::error::Result;
use crate::path::AccountName;

/// Runs every repair.
pub(super) async fn run(reads: &Reads) -> Result<()> {
    account_events(reads).await?;
    refused_accounts(reads).await
}

/// An account whose name read as a number (`/123/s`) once had its account events
/// written to a plain stream `eddy/events`, after which every account event, and so
/// every new stream, was refused. That plain stream is renamed to an internal name
/// (kept for inspection, invisible to reads), so `eddy/events` is made again as the
/// factory it is on the next account event.
async fn account_events(reads: &Reads) -> Result<()> {
    let renamed = reads
        .execute(
            "UPDATE streams SET name = 'events/unusable-' || id \
             WHERE account = $1 AND name = 'events' AND factory = FALSE",
            args![builtins::ACCOUNT],
        )
        .await?;
    if renamed > 0 {
        tracing::warn!(
            "repaired the account events: a plain stream eddy/events (written for an account \
             whose name reads as a number) was renamed to eddy/events/unusable-<id>, and \
             stream and account changes work again"
        );
    }
    Ok(())
}

/// Names the stored accounts whose names are no longer accepted (they read as a number
/// or keyword in factory arguments): their data stays, unreachable over HTTP.
async fn refused_accounts(reads: &Reads) -> Result<()> {
    let rows = reads
        .all(
            "SELECT account FROM streams UNION SELECT name FROM accounts ORDER BY 1",
            args![],
        )
        .await?;
    for row in rows {
        let name = row.text(0)?;
        if let Err(e) = AccountName::new(&name) {
            tracing::warn!(
                account = %name,
                "a stored account has a name that is no longer accepted, so its data is \
                 unreachable over HTTP: {e}"
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::super::{DB_FILE, Store};
    use crate::error::ErrorCode;
    use crate::event::{ExpectedIndex, NewEvent};
    use crate::path::{Resource, StreamPath};
    use crate::store::AppendRequest;

    fn append(path: &str) -> AppendRequest {
        let Ok(Resource::Stream(stream)) = crate::path::parse(path) else {
            panic!("{path}")
        };
        let stream: StreamPath = stream;
        AppendRequest {
            metadata: None,
            stream,
            events: vec![NewEvent {
                id: None,
                event_type: "t".into(),
                content_type: "application/json".into(),
                data: Bytes::from_static(b"1"),
                timestamp: None,
                metadata: None,
                origin: None,
            }],
            expected: ExpectedIndex::Any,
        }
    }

    fn count(dir: &std::path::Path, sql: &str) -> i64 {
        let db = rusqlite::Connection::open(dir.join(DB_FILE)).unwrap();
        db.query_row(sql, [], |r| r.get(0)).unwrap()
    }

    /// A change whose account event is refused writes nothing (the group rolls back
    /// instead of committing the stream without its event), and the plain
    /// `eddy/events` that refused it is moved aside at the next start.
    #[tokio::test]
    async fn a_refused_account_event_writes_nothing_and_is_repaired_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Arc::default(), Default::default())
            .await
            .unwrap();
        let db = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
        db.execute(
            "INSERT INTO streams (account, name, factory, settings, created_at) \
             VALUES ('eddy', 'events', 0, '{}', 1)",
            [],
        )
        .unwrap();
        drop(db);
        let e = store.writer.append(append("/acme/s")).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::Internal, "{}", e.message);
        let acme = "SELECT COUNT(*) FROM streams WHERE account = 'acme'";
        assert_eq!(count(dir.path(), acme), 0);
        // the writer still works for what needs no account event
        store
            .writer
            .append(append("/eddy/cron('* * * * *')"))
            .await
            .unwrap();
        store.shutdown().await;

        let store = Store::open(dir.path(), Arc::default(), Default::default())
            .await
            .unwrap();
        store.writer.append(append("/acme/s")).await.unwrap();
        store.shutdown().await;
        assert_eq!(count(dir.path(), acme), 1);
        let events = "SELECT COUNT(*) FROM streams WHERE account = 'eddy' AND name = 'events' \
                      AND factory = 1";
        assert_eq!(count(dir.path(), events), 1);
    }
}
