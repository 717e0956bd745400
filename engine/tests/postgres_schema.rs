//! PostgreSQL's migrations against a real server (a throwaway cluster from
//! `eddy-testpg`): they build the schema SQLite's migrations build, with the same
//! tables, columns and indexes, run once, and store events that read back through the
//! columns the SQLite read code selects.

use std::collections::BTreeSet;

use eddy_engine::store::migrations::{migrator, postgres_migrator};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::SqlitePoolOptions;
use sqlx::{Row, SqlitePool};

/// A migrated fresh database of the shared cluster; `None` when PostgreSQL is skipped.
async fn migrated(label: &str) -> Option<PgPool> {
    let pg = eddy_testpg::shared_cluster()?;
    let url = pg.fresh_database(label).unwrap();
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect(&url)
        .await
        .unwrap();
    postgres_migrator().run(&pool).await.unwrap();
    Some(pool)
}

async fn sqlite_schema() -> SqlitePool {
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect("sqlite::memory:")
        .await
        .unwrap();
    migrator().run(&pool).await.unwrap();
    pool
}

async fn pg_tables(pool: &PgPool) -> BTreeSet<String> {
    sqlx::query_scalar(
        "SELECT table_name::TEXT FROM information_schema.tables WHERE table_schema = 'public'",
    )
    .fetch_all(pool)
    .await
    .unwrap()
    .into_iter()
    .collect()
}

/// Every table of the SQLite schema exists on PostgreSQL with the same columns, every
/// named SQLite index exists too (partial ones still partial), the tables only several
/// nodes need are there besides, and the migrations record their versions; running
/// them again changes nothing.
#[tokio::test]
async fn the_schema_matches_sqlite_and_migrates_once() {
    let Some(pool) = migrated("schema").await else {
        return;
    };
    let tables = pg_tables(&pool).await;
    let expected: BTreeSet<String> = [
        "_sqlx_migrations",
        "accounts",
        "api_keys",
        "eddy_leases",
        "eddy_nodes",
        "eddy_uploads",
        "event_positions",
        "event_types",
        "events",
        "instance",
        "pipes",
        "reducer_snapshots",
        "reducer_states",
        "reducers",
        "splices",
        "streams",
        "substreams",
        "webhooks",
    ]
    .map(String::from)
    .into();
    assert_eq!(tables, expected);

    let lite = sqlite_schema().await;
    let lite_tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
    )
    .fetch_all(&lite)
    .await
    .unwrap();
    assert_eq!(lite_tables.len(), 14, "{lite_tables:?}");
    for table in &lite_tables {
        assert!(tables.contains(table), "{table} missing on PostgreSQL");
        let lite_columns: BTreeSet<String> =
            sqlx::query_scalar("SELECT name FROM pragma_table_info(?)")
                .bind(table)
                .fetch_all(&lite)
                .await
                .unwrap()
                .into_iter()
                .collect();
        let pg_columns: BTreeSet<String> = sqlx::query_scalar(
            "SELECT column_name::TEXT FROM information_schema.columns \
             WHERE table_schema = 'public' AND table_name = $1",
        )
        .bind(table)
        .fetch_all(&pool)
        .await
        .unwrap()
        .into_iter()
        .collect();
        assert_eq!(pg_columns, lite_columns, "columns of {table}");
    }

    let lite_indexes: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL",
    )
    .fetch_all(&lite)
    .await
    .unwrap();
    assert_eq!(lite_indexes.len(), 6, "{lite_indexes:?}");
    for index in &lite_indexes {
        let def: Option<String> =
            sqlx::query_scalar("SELECT indexdef FROM pg_indexes WHERE indexname = $1")
                .bind(index)
                .fetch_optional(&pool)
                .await
                .unwrap();
        let def = def.unwrap_or_else(|| panic!("index {index} missing on PostgreSQL"));
        let partial = index == "events_by_factory_pos" || index == "events_by_substream_client_id";
        assert_eq!(def.contains(" WHERE "), partial, "{def}");
    }
    lite.close().await;

    let versions = || async {
        sqlx::query_scalar::<_, i64>("SELECT version FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&pool)
            .await
            .unwrap()
    };
    assert_eq!(versions().await, [1, 2, 3, 4, 5]);
    postgres_migrator().run(&pool).await.unwrap();
    assert_eq!(versions().await, [1, 2, 3, 4, 5]);
    assert_eq!(pg_tables(&pool).await, expected);
    let last: i64 = sqlx::query_scalar("SELECT last FROM event_positions")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(last, 0);
    pool.close().await;
}

/// An event stored with the columns the writer fills reads back through the SQLite
/// read code's column lists (`store/read.rs`), as the same Rust types.
#[tokio::test]
async fn an_event_reads_back_through_the_sqlite_read_columns() {
    let Some(pool) = migrated("event_row").await else {
        return;
    };
    let stream_id: i64 = sqlx::query_scalar(
        "INSERT INTO streams (account, name, factory, settings, created_at) \
         VALUES ('acct', 'orders', TRUE, '{}', 7) RETURNING id",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let sid: i64 = sqlx::query_scalar(
        "INSERT INTO substreams (stream_id, args, created_at) VALUES ($1, '''eu''', 7) \
         RETURNING id",
    )
    .bind(stream_id)
    .fetch_one(&pool)
    .await
    .unwrap();
    let pos: i64 = sqlx::query_scalar("UPDATE event_positions SET last = last + 1 RETURNING last")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(pos, 1);
    let eid = uuid::Uuid::now_v7();
    let insert = "INSERT INTO events (pos, factory_id, sid, idx, eid, cid, type, ts, \
                  content_type, data, metadata, origin) \
                  VALUES ($1, $2, $3, $4, $5, $6, 'created', 1700000000000, \
                  'application/json', $7, $8, $9)";
    sqlx::query(insert)
        .bind(pos)
        .bind(stream_id)
        .bind(sid)
        .bind(0_i64)
        .bind(eid.as_bytes().as_slice())
        .bind(eid.as_bytes().as_slice())
        .bind(&b"{\"n\": 1}"[..])
        .bind(Some("{\"by\":\"test\"}"))
        .bind(None::<String>)
        .execute(&pool)
        .await
        .unwrap();

    // store/read.rs: stream_from_row
    let row = sqlx::query(
        "SELECT id, factory, settings, created_at FROM streams WHERE account = $1 AND name = $2",
    )
    .bind("acct")
    .bind("orders")
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(row.get::<i64, _>(0), stream_id);
    assert!(row.get::<bool, _>(1));
    assert_eq!(row.get::<&str, _>(2), "{}");
    assert_eq!(row.get::<i64, _>(3), 7);

    // store/read.rs: EVENT_COLUMNS and event_from_row, for a factory read
    let row = sqlx::query(
        "SELECT e.pos, e.idx, e.eid, e.type, e.ts, e.content_type, e.data, \
         e.metadata, s.args, e.sid, e.origin FROM events e JOIN substreams s ON s.id = e.sid \
         WHERE e.factory_id = $1 AND e.pos > $2 AND e.pos <= $3 ORDER BY e.pos LIMIT $4",
    )
    .bind(stream_id)
    .bind(0_i64)
    .bind(pos)
    .bind(10_i64)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(row.get::<i64, _>(0), pos);
    assert_eq!(row.get::<i64, _>(1), 0);
    assert_eq!(row.get::<&[u8], _>(2), eid.as_bytes());
    assert_eq!(row.get::<String, _>(3), "created");
    assert_eq!(row.get::<i64, _>(4), 1_700_000_000_000);
    assert_eq!(row.get::<String, _>(5), "application/json");
    assert_eq!(row.get::<Vec<u8>, _>(6), b"{\"n\": 1}");
    assert_eq!(
        row.get::<Option<String>, _>(7).as_deref(),
        Some("{\"by\":\"test\"}")
    );
    assert_eq!(row.get::<&str, _>(8), "'eu'");
    assert_eq!(row.get::<i64, _>(9), sid);
    assert_eq!(row.get::<Option<String>, _>("origin"), None);

    // the client id is unique per substream; server-generated ids (NULL cid) are not
    // in that index
    let err = sqlx::query(insert)
        .bind(2_i64)
        .bind(stream_id)
        .bind(sid)
        .bind(1_i64)
        .bind(eid.as_bytes().as_slice())
        .bind(eid.as_bytes().as_slice())
        .bind(&b"2"[..])
        .bind(None::<String>)
        .bind(None::<String>)
        .execute(&pool)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("events_by_substream_client_id"),
        "{err}"
    );
    for (pos, idx) in [(2_i64, 1_i64), (3, 2)] {
        sqlx::query(insert)
            .bind(pos)
            .bind(stream_id)
            .bind(sid)
            .bind(idx)
            .bind(uuid::Uuid::now_v7().as_bytes().as_slice())
            .bind(None::<&[u8]>)
            .bind(&b"2"[..])
            .bind(None::<String>)
            .bind(None::<String>)
            .execute(&pool)
            .await
            .unwrap();
    }
    let indexes: Vec<i64> =
        sqlx::query_scalar("SELECT idx FROM events WHERE sid = $1 ORDER BY idx")
            .bind(sid)
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(indexes, [0, 1, 2]);
    pool.close().await;
}
