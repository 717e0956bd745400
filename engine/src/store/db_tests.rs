//! The statement layer (`db`) against both backends: the same statements the writer
//! runs, on a migrated SQLite file and on a migrated database of a throwaway
//! PostgreSQL cluster (skipped, loudly, where no PostgreSQL server is installed).

use super::db::{Db, Pg, vals};
use super::test_backends;
use crate::error::ErrorCode;

async fn sqlite_db(dir: &tempfile::TempDir) -> Db {
    let file = test_backends::migrated_sqlite(dir).await;
    Db::Sqlite(super::writer::open_connection(&file).unwrap())
}

async fn postgres_db(label: &str) -> Option<Db> {
    let url = test_backends::migrated_postgres(label).await?;
    let pg = tokio::task::spawn_blocking(move || Pg::connect(&url))
        .await
        .unwrap()
        .unwrap();
    Some(Db::Postgres(Box::new(pg)))
}

/// What the writer does with a stream, a substream and its events, in one
/// transaction that commits, then one that rolls back.
fn writes_and_reads_back(db: Db) {
    let begin = if db.is_postgres() {
        "BEGIN"
    } else {
        "BEGIN IMMEDIATE"
    };
    db.control(begin).unwrap();
    let before = db.total_changes();
    let stream = db
        .insert_id(
            "INSERT INTO streams (account, name, factory, settings, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
            vals!["acme", "orders", true, "{}", 1_i64],
        )
        .unwrap();
    let sub = db
        .insert_id(
            "INSERT INTO substreams (stream_id, args, created_at) VALUES (?1, ?2, ?3)",
            vals![stream, "'c-1'", 1_i64],
        )
        .unwrap();
    assert_ne!(stream, sub + 1000, "ids are real ids");
    let client_id = [7u8; 16];
    db.batch(
        "INSERT INTO events (pos, factory_id, sid, idx, eid, cid, type, ts, content_type, data, \
         metadata, origin) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        |insert| {
            for i in 0..3_i64 {
                let cid: Option<&[u8]> = (i == 1).then_some(client_id.as_slice());
                let metadata: Option<String> = (i == 2).then(|| "{\"m\":1}".to_owned());
                insert.exec(vals![
                    i + 1,
                    Some(stream),
                    sub,
                    i,
                    [i as u8; 16].as_slice(),
                    cid,
                    "placed",
                    100 + i,
                    "application/json",
                    b"{}".as_slice(),
                    metadata,
                    None::<&str>,
                ])?;
            }
            Ok(())
        },
    )
    .unwrap();
    let changed = db
        .exec(
            "UPDATE substreams SET event_count = ?1, last_index = ?2, last_timestamp = ?3 \
             WHERE id = ?4",
            vals![3_i64, 2_i64, 102_i64, sub],
        )
        .unwrap();
    assert_eq!(changed, 1);
    assert_eq!(
        db.total_changes() - before,
        6,
        "2 inserts, 3 events, 1 update"
    );
    db.control("COMMIT").unwrap();

    let row = db
        .row(
            "SELECT id, factory, settings FROM streams WHERE account = ?1 AND name = ?2",
            vals!["acme", "orders"],
            |r| Ok((r.int(0)?, r.flag(1)?, r.text(2)?)),
        )
        .unwrap();
    assert_eq!(row, Some((stream, true, "{}".to_owned())));
    let found = db
        .row(
            "SELECT idx, ts, pos FROM events WHERE sid = ?1 AND cid = ?2",
            vals![sub, client_id.as_slice()],
            |r| Ok((r.int(0)?, r.int(1)?, r.int(2)?)),
        )
        .unwrap();
    assert_eq!(found, Some((1, 101, 2)));
    let events = db
        .rows(
            "SELECT idx, eid, metadata FROM events WHERE sid = ?1 AND idx > ?2 ORDER BY idx",
            vals![sub, -1_i64],
            |r| Ok((r.int(0)?, r.blob(1)?, r.text(2).ok())),
        )
        .unwrap();
    assert_eq!(events.len(), 3);
    assert_eq!(events[2].1, vec![2u8; 16]);
    assert_eq!(events[2].2.as_deref(), Some("{\"m\":1}"));
    let missing = db
        .row("SELECT 1 FROM streams WHERE id = ?1", vals![-5_i64], |_| {
            Ok(())
        })
        .unwrap();
    assert_eq!(missing, None);

    // a rolled-back transaction leaves nothing behind
    db.control(begin).unwrap();
    db.exec("DELETE FROM events WHERE sid = ?1", vals![sub])
        .unwrap();
    db.control("ROLLBACK").unwrap();
    let count = db
        .row("SELECT COUNT(*) FROM events", vals![], |r| r.int(0))
        .unwrap();
    assert_eq!(count, Some(3));

    // a statement the database refuses is a storage error, not a panic
    let err = db
        .exec(
            "INSERT INTO streams (account, name, factory, settings, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
            vals!["acme", "orders", false, "{}", 2_i64],
        )
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::Internal);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_statements_work_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_db(&dir).await;
    tokio::task::spawn_blocking(move || writes_and_reads_back(db))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_statements_work_on_postgres() {
    let Some(db) = postgres_db("db_statements").await else {
        return;
    };
    // the writer thread blocks on the runtime: so does this one
    tokio::task::spawn_blocking(move || writes_and_reads_back(db))
        .await
        .unwrap();
}

/// A batch longer than a piece: every row lands, in order, on commit; a failing row
/// in a later piece fails the batch (or the statement after it) and the rollback
/// leaves nothing of any piece.
fn a_long_batch_goes_in_pieces(db: Db) {
    let n = 2 * super::db::PIECE_ROWS as i64 + 7;
    let begin = if db.is_postgres() {
        "BEGIN"
    } else {
        "BEGIN IMMEDIATE"
    };
    let insert = |db: &Db, sub: i64, rows: i64, bad_at: Option<i64>| {
        db.batch(
            "INSERT INTO events (pos, factory_id, sid, idx, eid, cid, type, ts, content_type, \
             data, metadata, origin) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            |insert| {
                for i in 0..rows {
                    // a duplicate index where asked: the unique index refuses it
                    let idx = if Some(i) == bad_at { 0 } else { i };
                    insert.exec(vals![
                        sub * 1_000_000 + i + 1,
                        None::<i64>,
                        sub,
                        idx,
                        (sub * 1_000_000 + i).to_le_bytes().repeat(2).as_slice(),
                        None::<&[u8]>,
                        "t",
                        i,
                        "application/json",
                        i.to_string().as_bytes(),
                        None::<&str>,
                        None::<&str>,
                    ])?;
                }
                Ok(())
            },
        )?;
        // what is still in flight lands with the next statement
        db.row("SELECT COUNT(*) FROM events", vals![], |r| r.int(0))
    };
    db.control(begin).unwrap();
    insert(&db, 1, n, None).unwrap();
    db.control("COMMIT").unwrap();
    let rows = db
        .rows(
            "SELECT idx, data FROM events WHERE sid = 1 ORDER BY pos",
            vals![],
            |r| Ok((r.int(0)?, r.blob(1)?)),
        )
        .unwrap();
    assert_eq!(rows.len() as i64, n);
    assert!(
        rows.iter()
            .enumerate()
            .all(|(i, (idx, data))| *idx == i as i64 && *data == i.to_string().into_bytes())
    );

    // in the first piece (sent ahead, its error met later) and in the last one
    for (sub, bad) in [(2, 5), (3, n - 3)] {
        db.control(begin).unwrap();
        let err = insert(&db, sub, n, Some(bad)).unwrap_err();
        assert_eq!(err.code, ErrorCode::Internal, "{}", err.message);
        db.control("ROLLBACK").unwrap();
        let count = db
            .row(
                "SELECT COUNT(*) FROM events WHERE sid = ?1",
                vals![sub],
                |r| r.int(0),
            )
            .unwrap();
        assert_eq!(count, Some(0));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_batch_goes_in_pieces_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_db(&dir).await;
    tokio::task::spawn_blocking(move || a_long_batch_goes_in_pieces(db))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_batch_goes_in_pieces_on_postgres() {
    let Some(db) = postgres_db("db_pieces").await else {
        return;
    };
    tokio::task::spawn_blocking(move || a_long_batch_goes_in_pieces(db))
        .await
        .unwrap();
}

/// A session PostgreSQL ends for its idle timeout (as it ends a paused node's writer
/// session in the middle of a group) is a lost connection, whose requests are told to
/// retry (503), not a failed statement (500).
#[tokio::test(flavor = "multi_thread")]
async fn a_session_ended_for_its_idle_timeout_is_a_lost_connection() {
    use sqlx::Connection as _;
    let Some(cluster) = eddy_testpg::shared_cluster() else {
        return;
    };
    let url = cluster.fresh_database("idle_timeout").unwrap();
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::raw_sql("SET idle_in_transaction_session_timeout = '100ms'; BEGIN")
        .execute(&mut conn)
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let e = sqlx::query("SELECT 1")
        .execute(&mut conn)
        .await
        .unwrap_err();
    assert!(crate::error::connection_lost(&e), "{e:?}");
    assert_eq!(
        crate::error::EngineError::from(e).code,
        ErrorCode::Unavailable
    );
}
