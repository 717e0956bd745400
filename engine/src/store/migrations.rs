//! The migrations in `migrations/`, embedded in the binary: `migrations/sqlite/` for the
//! embedded database and `migrations/postgres/` for PostgreSQL. Each backend has its own
//! list and numbering; sqlx records what ran in each database's `_sqlx_migrations`.
//!
//! They are listed by hand rather than with `sqlx::migrate!`, whose `macros` feature
//! would compile sqlx and the bundled SQLite a second time for the build host.

use std::borrow::Cow;

use sqlx::SqlStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};

/// (version, description, SQL), in order; never edit one that has landed.
type MigrationList = [(i64, &'static str, &'static str)];

/// SQLite's migrations, in order.
const MIGRATIONS: [(i64, &str, &str); 9] = [
    (
        1,
        "create event log",
        include_str!("../../../migrations/sqlite/0001_create_event_log.sql"),
    ),
    (
        2,
        "create reducers",
        include_str!("../../../migrations/sqlite/0002_create_reducers.sql"),
    ),
    (
        3,
        "create webhooks",
        include_str!("../../../migrations/sqlite/0003_create_webhooks.sql"),
    ),
    (
        4,
        "create pipes",
        include_str!("../../../migrations/sqlite/0004_create_pipes.sql"),
    ),
    (
        5,
        "create access",
        include_str!("../../../migrations/sqlite/0005_create_access.sql"),
    ),
    (
        6,
        "add webhook failures",
        include_str!("../../../migrations/sqlite/0006_add_webhook_failures.sql"),
    ),
    (
        7,
        "index only client event ids",
        include_str!("../../../migrations/sqlite/0007_index_only_client_event_ids.sql"),
    ),
    (
        8,
        "create reducer snapshots",
        include_str!("../../../migrations/sqlite/0008_create_reducer_snapshots.sql"),
    ),
    (
        9,
        "create splices",
        include_str!("../../../migrations/sqlite/0009_create_splices.sql"),
    ),
];

/// PostgreSQL's migrations, in order: one schema equal to SQLite's after its seven,
/// then the cluster's tables, then what both gained since.
const POSTGRES_MIGRATIONS: [(i64, &str, &str); 5] = [
    (
        1,
        "create schema",
        include_str!("../../../migrations/postgres/0001_create_schema.sql"),
    ),
    (
        2,
        "create cluster",
        include_str!("../../../migrations/postgres/0002_create_cluster.sql"),
    ),
    (
        3,
        "create reducer snapshots",
        include_str!("../../../migrations/postgres/0003_create_reducer_snapshots.sql"),
    ),
    (
        4,
        "create splices",
        include_str!("../../../migrations/postgres/0004_create_splices.sql"),
    ),
    (
        5,
        "create uploads",
        include_str!("../../../migrations/postgres/0005_create_uploads.sql"),
    ),
];

/// The migrator over every embedded SQLite migration.
pub fn migrator() -> Migrator {
    migrator_over(&MIGRATIONS)
}

/// The migrator over every embedded PostgreSQL migration.
pub fn postgres_migrator() -> Migrator {
    migrator_over(&POSTGRES_MIGRATIONS)
}

fn migrator_over(list: &'static MigrationList) -> Migrator {
    let migrations: Vec<Migration> = list
        .iter()
        .map(|(version, desc, sql)| {
            Migration::new(
                *version,
                Cow::Borrowed(*desc),
                MigrationType::Simple,
                SqlStr::from_static(sql),
                false,
            )
        })
        .collect();
    Migrator {
        migrations: Cow::Owned(migrations),
        ..Migrator::DEFAULT
    }
}

/// The SQL of every SQLite migration, for tools that build the schema themselves (the
/// benchmark's raw SQLite loop).
pub fn schema_sql() -> impl Iterator<Item = &'static str> {
    MIGRATIONS.iter().map(|(_, _, sql)| *sql)
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;
    use std::sync::Arc;

    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
    use uuid::Uuid;

    use super::*;
    use crate::event::{ExpectedIndex, NewEvent};
    use crate::path::{Resource, parse};
    use crate::store::{AppendRequest, DB_FILE, Store};

    fn append(id: Option<Uuid>) -> AppendRequest {
        let Ok(Resource::Stream(stream)) = parse("/a/s") else {
            panic!("/a/s is a stream path")
        };
        AppendRequest {
            metadata: None,
            stream,
            events: vec![NewEvent {
                id,
                event_type: "t".into(),
                content_type: "application/json".into(),
                data: bytes::Bytes::from_static(b"1"),
                timestamp: None,
                metadata: None,
                origin: None,
            }],
            expected: ExpectedIndex::Any,
        }
    }

    /// A database written before migration 7 keeps its ids: a retry of an event
    /// stored then is still recognised, and ids generated after it are too.
    #[tokio::test]
    async fn ids_stored_before_the_client_id_index_stay_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let opts = SqliteConnectOptions::from_str(&format!(
            "sqlite://{}",
            dir.path().join(DB_FILE).display()
        ))
        .unwrap()
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts)
            .await
            .unwrap();
        let mut before = migrator();
        before.migrations = Cow::Owned(before.migrations[..6].to_vec());
        before.run(&pool).await.unwrap();
        let old = Uuid::now_v7();
        for sql in [
            "INSERT INTO streams (id, account, name, created_at) VALUES (1, 'a', 's', 0)",
            "INSERT INTO substreams (id, stream_id, args, event_count, last_index, \
             last_timestamp, created_at) VALUES (1, 1, '', 1, 0, 5, 0)",
        ] {
            sqlx::query(sql).execute(&pool).await.unwrap();
        }
        sqlx::query(
            "INSERT INTO events (pos, sid, idx, eid, type, ts, content_type, data) \
             VALUES (1, 1, 0, ?1, 't', 5, 'application/json', X'31')",
        )
        .bind(old.as_bytes().as_slice())
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;

        let store = Store::open(dir.path(), Arc::default(), Default::default())
            .await
            .unwrap();
        // (the page size of a new database applies to new databases only)
        assert_eq!(page_size(&store).await, 4096);
        let again = store.writer.append(append(Some(old))).await.unwrap();
        assert!(again.duplicate);
        assert_eq!(
            (again.events[0].index.get(), again.events[0].position.get()),
            (0, 1)
        );
        let new = store.writer.append(append(None)).await.unwrap();
        assert!(!new.duplicate);
        assert_eq!(new.events[0].index, 1);
        let retry = store
            .writer
            .append(append(Some(new.events[0].id)))
            .await
            .unwrap();
        assert!(retry.duplicate);
        assert_eq!(retry.events[0].index, 1);
        store.shutdown().await;
    }

    async fn page_size(store: &Store) -> i64 {
        sqlx::query_scalar("PRAGMA page_size")
            .fetch_one(&store.reads.sqlite_pool())
            .await
            .unwrap()
    }

    /// A new database gets eddy's page size, and keeps it when it is opened again.
    #[tokio::test]
    async fn a_new_database_has_small_pages() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Arc::default(), Default::default())
            .await
            .unwrap();
        assert_eq!(page_size(&store).await, 2048);
        store.writer.append(append(None)).await.unwrap();
        store.shutdown().await;
        let store = Store::open(dir.path(), Arc::default(), Default::default())
            .await
            .unwrap();
        assert_eq!(page_size(&store).await, 2048);
        assert_eq!(
            store.writer.append(append(None)).await.unwrap().events[0].index,
            1
        );
        store.shutdown().await;
    }
}
