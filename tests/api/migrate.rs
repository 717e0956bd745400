//! `eddy migrate` (API §10): a data directory written by a real server (events in plain
//! streams and factories, a reducer, a pipe, a webhook, an event type, settings, an
//! account with a key) is copied into a throwaway PostgreSQL, and every table is
//! compared row by row with the SQLite file. A second copy into the same database is
//! refused, as is a database with data of its own (left untouched) and a data
//! directory a server holds; a copy killed with SIGKILL is finished by running it again,
//! with no row twice.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use reqwest::Client;
use serde_json::{Value, json};
use sqlx::postgres::{PgConnection, PgRow};
use sqlx::{Column as _, Connection as _, Row as _, TypeInfo as _};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::common::{ChildServer, client, silent_listener};

const ADMIN: &str = "migrate-test-admin-token-0123456789";
const EDDY_BATCH: &str = "application/vnd.eddy.events+json";
const ES_BATCH: &str = "application/vnd.eventstore.events+json";

/// A server (child process) over `data`, with an admin token, answering as the admin.
struct Source {
    server: ChildServer,
    client: Client,
}

impl Source {
    async fn start(data: &Path) -> Self {
        let server =
            ChildServer::start_embedded(data, &["--admin-token", ADMIN, "--allow-private-targets"])
                .await;
        Self {
            server,
            client: client(),
        }
    }

    async fn send(&self, method: &str, path: &str, ct: &str, body: String) -> Value {
        let mut r = self
            .client
            .request(
                method.parse().unwrap(),
                format!("{}{path}", self.server.base),
            )
            .header("authorization", format!("Bearer {ADMIN}"))
            .header("event-type", "order");
        if !ct.is_empty() {
            r = r.header("content-type", ct).body(body);
        }
        let r = r.send().await.unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        assert!(status.is_success(), "{method} {path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    async fn json(&self, method: &str, path: &str, body: Value) -> Value {
        self.send(method, path, "application/json", body.to_string())
            .await
    }

    async fn get(&self, path: &str) -> Value {
        self.send("GET", path, "application/json", String::new())
            .await
    }

    /// A server over the PostgreSQL database at `url` (a copy of `data`'s).
    async fn on_postgres(data: &Path, url: &str) -> Self {
        let args = ["--admin-token", ADMIN, "--allow-private-targets"];
        Self {
            server: ChildServer::start_postgres(data, url, &args).await,
            client: client(),
        }
    }

    /// Stops the server gracefully (SIGTERM) and waits for it.
    async fn stop(mut self) {
        self.server.signal("-TERM");
        tokio::time::timeout(Duration::from_secs(20), self.server.child.wait())
            .await
            .expect("eddy stops")
            .unwrap();
    }
}

/// Fills `data` through a real server with something of every kind eddy stores, plus
/// `bulk` more events in batches; answers the account's key once the server stopped.
async fn write_source(data: &Path, bulk: usize) -> String {
    let (port, _held) = silent_listener().await;
    let s = Source::start(data).await;
    s.json("POST", "/api/accounts", json!({"name": "acme"}))
        .await;
    let key = s
        .send(
            "POST",
            "/api/accounts/acme/keys",
            "application/json",
            "{}".into(),
        )
        .await["key"]
        .as_str()
        .expect("a key")
        .to_owned();
    s.json(
        "PUT",
        "/acme/orders/settings",
        json!({"factory": true, "public": {"read": true}}),
    )
    .await;
    let code = "(s = 0, e) => s + e.data.amount";
    s.send(
        "PUT",
        "/acme/orders.total",
        "application/javascript",
        code.into(),
    )
    .await;
    s.send(
        "PUT",
        "/acme/clicks:click",
        "application/json",
        r#"{"properties": {"url": {"type": "string"}}}"#.into(),
    )
    .await;
    s.send("PUT", "/acme/clicks/pipe/acme/copies", "", String::new())
        .await;
    s.json(
        "POST",
        "/acme/clicks/webhooks",
        json!({"url": format!("http://127.0.0.1:{port}/hook"), "data": true}),
    )
    .await;
    s.json(
        "POST",
        "/acme/orders/webhooks",
        json!({"url": format!("http://127.0.0.1:{port}/other"), "selector": "type=order"}),
    )
    .await;

    for (who, amount) in [("a", 1), ("b", 10), ("a", 2), ("c", 100)] {
        s.json(
            "POST",
            &format!("/acme/orders('{who}')"),
            json!({"amount": amount}),
        )
        .await;
    }
    s.send(
        "POST",
        "/acme/clicks",
        EDDY_BATCH,
        json!([
            {"type": "click", "data": {"url": "/a"}},
            {"id": "7d444840-9dc0-11d1-b245-5ffdce74fad2", "type": "click", "data": {"url": "/b"}},
            {"type": "note", "data": "plain text", "contentType": "text/plain"},
            {"type": "blob", "data": "AAEC/w==", "contentType": "application/octet-stream"},
        ])
        .to_string(),
    )
    .await;
    s.send(
        "POST",
        "/acme/clicks",
        ES_BATCH,
        json!([{"eventId": "a4c1c2f0-3e55-4a36-9a53-4b0cbd1c9c80", "eventType": "es",
                "data": {"k": "Zoë"}, "metadata": {"by": "x", "n": 1}}])
        .to_string(),
    )
    .await;
    for batch in 0..bulk.div_ceil(1000) {
        let events: Vec<Value> = (0..1000.min(bulk - batch * 1000))
            .map(
                |i| json!({"type": "bulk", "data": {"n": batch * 1000 + i, "pad": "x".repeat(40)}}),
            )
            .collect();
        let path = if batch % 2 == 0 {
            "/acme/bulk".to_owned()
        } else {
            format!("/acme/orders('bulk{}')", batch % 7)
        };
        s.send("POST", &path, EDDY_BATCH, Value::from(events).to_string())
            .await;
    }

    // the reducer has folded what it was given, and the pipe has copied
    let state = s
        .get("/acme/orders('a').total?min-index=1&wait=10000")
        .await;
    assert_eq!(state, json!(3));
    for _ in 0..500 {
        if s.get("/acme/clicks/pipe/acme/copies").await["piped"] == 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(s.get("/acme/clicks/pipe/acme/copies").await["piped"], 5);
    s.stop().await;
    key
}

/// What a server answers about everything `write_source` made, as the admin, and
/// whether the account's `key` reads its streams; volatile fields left out (the
/// webhooks' attempts against the silent receiver, a caught-up reducer's position).
async fn reads(s: &Source, key: &str) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for path in [
        "/acme",
        "/acme/orders",
        "/acme/orders?limit=1000",
        "/acme/clicks",
        "/acme/copies",
        "/acme/bulk?limit=1000",
        "/acme/bulk?from=1000&limit=1000",
        "/acme/orders('a').total",
        "/acme/orders('b').total",
        "/acme/orders.total",
        "/acme/clicks/pipe/acme/copies",
        "/acme/clicks:click",
        "/acme/orders/settings",
        "/eddy/events(acme)",
        "/acme/orders/logs",
    ] {
        out.push((path.to_owned(), s.get(path).await));
    }
    // a caught-up reducer's position moves to the head when it next wakes, and the
    // count of states it holds in memory follows the reads it served: left out
    let mut reducers = s.get("/acme/orders/reducers").await;
    for r in reducers.as_array_mut().unwrap() {
        let r = r.as_object_mut().unwrap();
        r.remove("position");
        r.remove("liveStates");
    }
    out.push(("/acme/orders/reducers".into(), reducers));
    for path in ["/acme/clicks/webhooks", "/acme/orders/webhooks"] {
        let mut hooks = s.get(path).await;
        for h in hooks.as_array_mut().unwrap() {
            let h = h.as_object_mut().unwrap();
            for volatile in ["status", "failures", "lastError", "retryAt"] {
                h.remove(volatile);
            }
        }
        out.push((path.to_owned(), hooks));
    }
    let with_key = s
        .client
        .get(format!("{}/acme/clicks", s.server.base))
        .header("authorization", format!("Bearer {key}"))
        .send()
        .await
        .unwrap();
    out.push(("key".into(), json!(with_key.status().as_u16())));
    out
}

/// Runs `eddy migrate` to its end: (success, stderr).
async fn migrate(data: &Path, url: &str) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_eddy"))
        .arg("migrate")
        .arg("--from")
        .arg(data)
        .env("EDDY_DATABASE_URL", url)
        .stdout(Stdio::null())
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() {
        eprint!("{err}");
    } else {
        assert_eq!(out.status.code(), Some(1), "{err}");
    }
    (out.status.success(), err)
}

/// A value as both databases would compare it: flags and integers alike.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Cell {
    Null,
    Int(i64),
    Text(String),
    Bytes(Vec<u8>),
}

type Tables = BTreeMap<String, Vec<Vec<Cell>>>;

/// Every table of the SQLite file (but sqlx's record), its rows sorted, and each
/// table's column names.
fn sqlite_tables(data: &Path) -> (Tables, BTreeMap<String, Vec<String>>) {
    let conn = rusqlite::Connection::open_with_flags(
        data.join("eddy.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let names: Vec<String> = conn
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table' \
             AND name NOT LIKE 'sqlite%' AND name <> '_sqlx_migrations'",
        )
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut tables = Tables::new();
    let mut columns = BTreeMap::new();
    for name in names {
        let mut stmt = conn.prepare(&format!("SELECT * FROM \"{name}\"")).unwrap();
        let cols: Vec<String> = stmt.column_names().iter().map(|c| c.to_string()).collect();
        let mut rows: Vec<Vec<Cell>> = stmt
            .query_map([], |r| {
                Ok((0..cols.len())
                    .map(|i| match r.get_ref(i).unwrap() {
                        rusqlite::types::ValueRef::Null => Cell::Null,
                        rusqlite::types::ValueRef::Integer(n) => Cell::Int(n),
                        rusqlite::types::ValueRef::Text(t) => {
                            Cell::Text(String::from_utf8(t.to_vec()).unwrap())
                        }
                        rusqlite::types::ValueRef::Blob(b) => Cell::Bytes(b.to_vec()),
                        rusqlite::types::ValueRef::Real(f) => panic!("{name}: a real {f}"),
                    })
                    .collect())
            })
            .unwrap()
            .map(Result::unwrap)
            .collect();
        rows.sort();
        tables.insert(name.clone(), rows);
        columns.insert(name, cols);
    }
    (tables, columns)
}

fn pg_cell(row: &PgRow, i: usize) -> Cell {
    let ty = row.columns()[i].type_info().name().to_owned();
    match ty.as_str() {
        "INT8" => row.get::<Option<i64>, _>(i).map_or(Cell::Null, Cell::Int),
        "BOOL" => row
            .get::<Option<bool>, _>(i)
            .map_or(Cell::Null, |b| Cell::Int(b.into())),
        "TEXT" => row
            .get::<Option<String>, _>(i)
            .map_or(Cell::Null, Cell::Text),
        "BYTEA" => row
            .get::<Option<Vec<u8>>, _>(i)
            .map_or(Cell::Null, Cell::Bytes),
        other => panic!("a column of type {other}"),
    }
}

/// The same tables read from PostgreSQL, columns in SQLite's order, rows sorted.
async fn pg_tables(pg: &mut PgConnection, columns: &BTreeMap<String, Vec<String>>) -> Tables {
    let mut tables = Tables::new();
    for (name, cols) in columns {
        let list: Vec<String> = cols.iter().map(|c| format!("\"{c}\"")).collect();
        let sql = format!("SELECT {} FROM \"{name}\"", list.join(", "));
        let mut rows: Vec<Vec<Cell>> = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&mut *pg)
            .await
            .unwrap()
            .iter()
            .map(|r| (0..cols.len()).map(|i| pg_cell(r, i)).collect())
            .collect();
        rows.sort();
        tables.insert(name.clone(), rows);
    }
    tables
}

/// The target equals the source table by table, row by row; the position counter and
/// every identity stand at the largest copied value; nothing of the copy is left.
async fn assert_same(data: &Path, url: &str) -> Tables {
    let (lite, columns) = sqlite_tables(data);
    let mut pg = PgConnection::connect(url).await.unwrap();
    let copied = pg_tables(&mut pg, &columns).await;
    for (name, rows) in &lite {
        assert_eq!(
            rows.len(),
            copied[name].len(),
            "{name}: {} rows in SQLite, {} on PostgreSQL",
            rows.len(),
            copied[name].len()
        );
        for (i, (a, b)) in rows.iter().zip(&copied[name]).enumerate() {
            assert_eq!(a, b, "{name}, row {i} (columns {:?})", columns[name]);
        }
    }
    let (last, max): (i64, Option<i64>) =
        sqlx::query_as("SELECT last, (SELECT max(pos) FROM events) FROM event_positions")
            .fetch_one(&mut pg)
            .await
            .unwrap();
    assert_eq!(Some(last), max);
    for (table, column) in [
        ("streams", "id"),
        ("substreams", "id"),
        ("reducers", "id"),
        ("pipes", "id"),
    ] {
        let (seq, max): (Option<i64>, Option<i64>) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT pg_sequence_last_value(pg_get_serial_sequence('{table}', '{column}')), \
             (SELECT max({column}) FROM {table})"
        )))
        .fetch_one(&mut pg)
        .await
        .unwrap();
        assert_eq!(seq, max, "the identity of {table}");
    }
    let left: bool = sqlx::query_scalar("SELECT to_regclass('eddy_migrate_progress') IS NOT NULL")
        .fetch_one(&mut pg)
        .await
        .unwrap();
    assert!(!left, "the progress table is dropped");
    lite
}

#[tokio::test]
async fn a_data_directory_is_copied_whole_and_only_once() {
    let Some(pg) = eddy_testpg::shared_cluster() else {
        return;
    };
    crate::common::tls_ready();
    let data = tempfile::tempdir().unwrap();
    let key = write_source(data.path(), 3_000).await;
    let before = Source::start(data.path()).await;
    let embedded = reads(&before, &key).await;
    before.stop().await;
    let url = pg.fresh_database("migrate_whole").unwrap();

    let (ok, err) = migrate(data.path(), &url).await;
    assert!(ok, "{err}");
    assert!(err.contains("events: "), "{err}");
    let lite = assert_same(data.path(), &url).await;
    // every kind of thing made it, not only the events
    for table in [
        "instance",
        "accounts",
        "api_keys",
        "streams",
        "substreams",
        "events",
        "reducers",
        "reducer_states",
        "pipes",
        "webhooks",
        "event_types",
    ] {
        assert!(!lite[table].is_empty(), "the source has no {table}");
    }
    assert!(lite["events"].len() > 3_000);

    // a second run finds the target full and changes nothing
    let (ok, err) = migrate(data.path(), &url).await;
    assert!(!ok);
    assert!(err.contains("not empty"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one sentence: {err}");
    assert_same(data.path(), &url).await;

    // a server on the copy answers every read as the embedded one did
    let after = Source::on_postgres(data.path(), &url).await;
    let moved = reads(&after, &key).await;
    after.stop().await;
    assert_eq!(moved.last().unwrap().1, json!(200), "the key reads");
    for ((path, was), (_, is)) in embedded.iter().zip(&moved) {
        assert_eq!(was, is, "GET {path}");
    }
}

#[tokio::test]
async fn a_killed_copy_resumes_where_it_stopped() {
    let Some(pg) = eddy_testpg::shared_cluster() else {
        return;
    };
    crate::common::tls_ready();
    let data = tempfile::tempdir().unwrap();
    write_source(data.path(), 200_000).await;
    let url = pg.fresh_database("migrate_killed").unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_eddy"))
        .args(["migrate", "--to", &url, "--from"])
        .arg(data.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let first = lines.next_line().await.unwrap().expect("a progress line");
    assert!(first.starts_with("copying "), "{first}");
    // killed once some batches of events are in, not all
    let mut pg_conn = PgConnection::connect(&url).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let copied = loop {
        let events: Option<(i64, i64, bool)> = sqlx::query_as(
            "SELECT copied_rows, source_rows, done FROM eddy_migrate_progress \
             WHERE table_name = 'events'",
        )
        .fetch_optional(&mut pg_conn)
        .await
        .unwrap();
        if let Some((copied, total, done)) = events
            && copied > 0
        {
            assert!(!done && copied < total, "the copy ended before the kill");
            break copied;
        }
        assert!(Instant::now() < deadline, "no events copied in 60 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let (in_target, left): (i64, bool) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM events), \
         (SELECT NOT done FROM eddy_migrate_progress WHERE table_name = 'events')",
    )
    .fetch_one(&mut pg_conn)
    .await
    .unwrap();
    assert!(
        left && in_target >= copied,
        "{in_target} events after the kill"
    );
    eprintln!("killed with {in_target} events copied");
    pg_conn.close().await.unwrap();

    let (ok, err) = migrate(data.path(), &url).await;
    assert!(ok, "{err}");
    assert!(err.contains("resuming"), "{err}");
    assert!(err.contains("by the earlier run"), "{err}");
    // equal row by row, so no row twice either
    let lite = assert_same(data.path(), &url).await;
    assert!(lite["events"].len() > 200_000);
}

/// A server over `data` with one account and one event (still running).
async fn small_source(data: &Path) -> Source {
    crate::common::tls_ready();
    let s = Source::start(data).await;
    s.json("POST", "/api/accounts", json!({"name": "acme"}))
        .await;
    s.json("POST", "/acme/s", json!(1)).await;
    s
}

#[tokio::test]
async fn a_database_with_data_of_its_own_is_refused_and_left_alone() {
    let Some(pg) = eddy_testpg::shared_cluster() else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let s = small_source(data.path()).await;
    s.stop().await;
    let url = pg.fresh_database("migrate_taken").unwrap();
    let mut conn = PgConnection::connect(&url).await.unwrap();
    sqlx::query("CREATE TABLE customers (id INT PRIMARY KEY, name TEXT)")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("INSERT INTO customers VALUES (1, 'ada')")
        .execute(&mut conn)
        .await
        .unwrap();

    let (ok, err) = migrate(data.path(), &url).await;
    assert!(!ok);
    assert!(
        err.contains("not empty") && err.contains("customers"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one sentence: {err}");
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::TEXT FROM information_schema.tables \
         WHERE table_schema NOT IN ('pg_catalog', 'information_schema')",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(tables, ["customers"]);
    let rows: Vec<(i32, String)> = sqlx::query_as("SELECT id, name FROM customers")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert_eq!(rows, [(1, "ada".to_owned())]);
}

#[tokio::test]
async fn a_data_directory_in_use_is_refused() {
    let Some(pg) = eddy_testpg::shared_cluster() else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let s = small_source(data.path()).await;
    let url = pg.fresh_database("migrate_in_use").unwrap();
    let (ok, err) = migrate(data.path(), &url).await;
    assert!(!ok);
    assert!(err.contains("in use"), "{err}");
    s.stop().await;
    // and nothing was written to the target
    let mut conn = PgConnection::connect(&url).await.unwrap();
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(n, 0);
}
