//! The throwaway cluster against the real PostgreSQL binaries: databases, connections,
//! a crash-like stop and restart, killed connections, and cleanup.

use std::net::{Ipv4Addr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use eddy_testpg::{private_cluster, shared_cluster, wait_until};

/// Two databases of the shared cluster answer over TCP and through psql, each as
/// itself, with fsync on.
#[test]
fn two_databases_answer() {
    let Some(pg) = shared_cluster() else { return };
    let a = pg.fresh_database("two_a").unwrap();
    let b = pg.fresh_database("two_b").unwrap();
    assert_ne!(a, b);
    assert!(a.starts_with(&format!("postgres://postgres@127.0.0.1:{}/", pg.port())));
    TcpStream::connect((Ipv4Addr::LOCALHOST, pg.port())).unwrap();
    for url in [&a, &b] {
        let db = url.rsplit('/').next().unwrap();
        assert_eq!(
            pg.query(db, "SELECT current_database()").unwrap().trim(),
            db
        );
        assert_eq!(pg.query(db, "SHOW fsync").unwrap().trim(), "on");
        assert_eq!(pg.query(db, "SHOW server_encoding").unwrap().trim(), "UTF8");
    }
    // the socket lives in the cluster's own directory
    let socket = pg.socket_dir().join(format!(".s.PGSQL.{}", pg.port()));
    assert!(socket.exists(), "{} missing", socket.display());
}

/// A database that exists is refused, and so is a name that is not plain.
#[test]
fn create_database_refuses_existing_and_odd_names() {
    let Some(pg) = shared_cluster() else { return };
    pg.create_database("refused_twice").unwrap();
    let err = pg.create_database("refused_twice").unwrap_err();
    assert!(err.contains("already exists"), "{err}");
    let err = pg.create_database("x\"; DROP").unwrap_err();
    assert!(err.contains("lowercase"), "{err}");
}

/// A committed row survives an immediate (crash-like) stop, and the server comes
/// back on the same port.
#[test]
fn committed_rows_survive_an_immediate_stop() {
    let Some(pg) = private_cluster() else { return };
    pg.create_database("crash").unwrap();
    pg.query(
        "crash",
        "CREATE TABLE t (v BIGINT); INSERT INTO t VALUES (42)",
    )
    .unwrap();
    pg.stop_immediate().unwrap();
    assert!(!pg.accepts_connections());
    pg.restart().unwrap();
    assert!(pg.accepts_connections());
    assert_eq!(pg.query("crash", "SELECT v FROM t").unwrap().trim(), "42");
}

/// kill_connections ends another session on the database, as a lost connection would.
#[test]
fn kill_connections_ends_other_sessions() {
    let Some(pg) = private_cluster() else { return };
    let url = pg.create_database("victim").unwrap();
    let psql = Command::new(pg.bin_dir().join("psql"))
        .args(["-X", "-q", "-d", &url, "-c", "SELECT pg_sleep(600)"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let connected = wait_until(Duration::from_secs(30), || {
        pg.query(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = 'victim' AND backend_type = 'client backend'",
        )
        .is_ok_and(|n| n.trim() == "1")
    });
    assert!(connected, "the sleeping session never showed up");
    assert_eq!(pg.kill_connections("victim").unwrap(), 1);
    let out = psql.wait_with_output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("terminat"), "{stderr}");
    assert_eq!(pg.kill_connections("victim").unwrap(), 0);
}

/// Dropping a cluster stops its server and removes its directory.
#[test]
fn drop_stops_the_server_and_removes_the_directory() {
    let Some(pg) = private_cluster() else { return };
    let dir = pg.socket_dir().to_path_buf();
    let port = pg.port();
    assert!(dir.join("data").is_dir());
    drop(pg);
    assert!(!dir.exists(), "{} left behind", dir.display());
    assert!(TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err());
}
