//! Every subcommand's `--help` ends with examples, and `eddy serve` tells a setting it
//! cannot use in one line on stderr, as the client subcommands tell their errors.

use tokio::process::Command;

#[tokio::test]
async fn every_subcommand_help_shows_examples() {
    for sub in [
        "serve", "migrate", "send", "tail", "deploy", "test", "export", "import", "backup",
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_eddy"))
            .args([sub, "--help"])
            .output()
            .await
            .unwrap();
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "eddy {sub} --help: {help}");
        assert!(
            help.lines()
                .any(|l| l.to_lowercase().starts_with("example")),
            "eddy {sub} --help has no examples: {help}"
        );
        // an example is an indented command line running the subcommand
        assert!(
            help.lines()
                .any(|l| l.starts_with("  ") && l.contains(&format!("eddy {sub} "))),
            "eddy {sub} --help has no example of it: {help}"
        );
    }
}

#[tokio::test]
async fn eddy_serve_tells_an_unusable_setting_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    // a data directory that is a file, and an admin token too short
    let file = dir.path().join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    let cases: [(&[&str], &str); 2] = [
        (
            &["--data", file.to_str().unwrap()],
            "eddy serve: cannot open the storage",
        ),
        (
            &["--admin-token", "short", "--data", file.to_str().unwrap()],
            "eddy serve: the admin token is 5 characters long",
        ),
    ];
    for (args, start) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_eddy"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .env_remove("EDDY_DATABASE_URL")
            .env("EDDY_LOG", "warn")
            .output()
            .await
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {said}");
        assert_eq!(said.lines().count(), 1, "{args:?}: one line: {said}");
        assert!(said.starts_with(start), "{args:?}: {said}");
        assert!(!said.contains("Caused by"), "{said}");
    }
}

/// What `eddy serve --database` says of a PostgreSQL it cannot use, in one line of a
/// user's words: nothing listening, no such database, a database with tables of its
/// own.
#[tokio::test]
async fn eddy_serve_tells_why_a_postgresql_database_cannot_be_used() {
    let Some(cluster) = eddy_testpg::shared_cluster() else {
        return;
    };
    let url = cluster.fresh_database("foreign_tables").unwrap();
    let (head, db) = url.rsplit_once('/').unwrap();
    cluster.query(db, "CREATE TABLE streams (x int)").unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let nothing = format!("postgres://postgres@127.0.0.1:{closed_port}/x");
    let missing = format!("{head}/no_such_database");
    let cases = [
        (nothing.as_str(), "Connection refused"),
        (
            missing.as_str(),
            "database \"no_such_database\" does not exist",
        ),
        (
            url.as_str(),
            "it holds tables that are not eddy's (relation \"streams\" already exists): give \
             eddy a database of its own",
        ),
    ];
    for (database, needle) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_eddy"))
            .args(["serve", "--listen", "127.0.0.1:0", "--database", database])
            .env("EDDY_LOG", "warn")
            .output()
            .await
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{database}: {said}");
        assert_eq!(said.lines().count(), 1, "{database}: one line: {said}");
        assert!(said.contains(needle), "{database}: {said}");
        assert!(!said.contains(" at line "), "{said}");
    }
}
