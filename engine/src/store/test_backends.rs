//! What the storage tests share: paths, events, and migrated databases of both
//! backends: a SQLite file in a
//! temporary directory, and a fresh database of the test program's throwaway
//! PostgreSQL cluster (`None`, with the skip announced by `eddy-testpg`, where no
//! PostgreSQL server is installed).

use std::path::PathBuf;

use super::migrations::{migrator, postgres_migrator};
use crate::event::NewEvent;
use crate::path::StreamPath;

/// The stream path `p` (`acct/strm` or `acct/strm('args')`).
pub(super) fn path(p: &str) -> StreamPath {
    match crate::path::parse(&format!("/{p}")).unwrap() {
        crate::path::Resource::Stream(s) => s,
        other => panic!("{p} is not a stream: {other:?}"),
    }
}

/// A JSON event of type `event_type` with `data`, no id or timestamp of its own.
pub(super) fn event(event_type: &str, data: &'static [u8]) -> NewEvent {
    NewEvent {
        id: None,
        event_type: event_type.into(),
        content_type: "application/json".into(),
        data: bytes::Bytes::from_static(data),
        timestamp: None,
        metadata: None,
        origin: None,
    }
}

/// `eddy.db` in `dir`, migrated.
pub(super) async fn migrated_sqlite(dir: &tempfile::TempDir) -> PathBuf {
    let file = dir.path().join("eddy.db");
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(
            sqlx::sqlite::SqliteConnectOptions::new()
                .filename(&file)
                .create_if_missing(true),
        )
        .await
        .unwrap();
    migrator().run(&pool).await.unwrap();
    pool.close().await;
    file
}

/// The URL of a new database named after `label`, migrated.
pub(super) async fn migrated_postgres(label: &str) -> Option<String> {
    let cluster = eddy_testpg::shared_cluster()?;
    let url = cluster.fresh_database(label).unwrap();
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    postgres_migrator().run(&pool).await.unwrap();
    pool.close().await;
    Some(url)
}
