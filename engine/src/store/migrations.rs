//! The migrations in `migrations/`, embedded in the binary.
//!
//! They are listed by hand rather than with `sqlx::migrate!`, whose `macros` feature
//! would compile sqlx and the bundled SQLite a second time for the build host.

use std::borrow::Cow;

use sqlx::SqlStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};

/// (version, description, SQL), in order; never edit one that has landed.
const MIGRATIONS: [(i64, &str, &str); 6] = [
    (
        1,
        "create event log",
        include_str!("../../../migrations/0001_create_event_log.sql"),
    ),
    (
        2,
        "create reducers",
        include_str!("../../../migrations/0002_create_reducers.sql"),
    ),
    (
        3,
        "create webhooks",
        include_str!("../../../migrations/0003_create_webhooks.sql"),
    ),
    (
        4,
        "create pipes",
        include_str!("../../../migrations/0004_create_pipes.sql"),
    ),
    (
        5,
        "create access",
        include_str!("../../../migrations/0005_create_access.sql"),
    ),
    (
        6,
        "add webhook failures",
        include_str!("../../../migrations/0006_add_webhook_failures.sql"),
    ),
];

/// The migrator over every embedded migration.
pub fn migrator() -> Migrator {
    let migrations: Vec<Migration> = MIGRATIONS
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

/// The SQL of every migration, for tools that build the schema themselves (the
/// benchmark's raw SQLite loop).
pub fn schema_sql() -> impl Iterator<Item = &'static str> {
    MIGRATIONS.iter().map(|(_, _, sql)| *sql)
}
