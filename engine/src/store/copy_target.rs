//! The PostgreSQL side of `eddy migrate` (see `copy`): whether the target is empty,
//! the columns each table is copied with, the progress table an interrupted copy
//! resumes from, and the transaction that completes a copy.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Connection as _, Row as _};

use super::copy::{CopyError, PROGRESS, TABLES, TARGET_ONLY, target};
use super::copy_rows::{Column, Kind, TablePlan, quoted};
use super::copy_source::{Count, Source, sqlite_columns};

pub(super) async fn relation_exists(pg: &mut PgConnection, name: &str) -> Result<bool, CopyError> {
    sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(quoted(name))
        .fetch_one(pg)
        .await
        .map_err(target("looking at the target database"))
}

/// Refuses a target that holds anything but eddy's empty schema (which an earlier run
/// that stopped before its first row may have left): tables or views of its own in
/// any schema, or eddy tables with rows.
pub(super) async fn check_empty(pg: &mut PgConnection) -> Result<(), CopyError> {
    let relations: Vec<(String, String, bool)> = sqlx::query_as(
        "SELECT n.nspname::TEXT, c.relname::TEXT, n.nspname = current_schema() \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') \
           AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
           AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%' \
         ORDER BY 1, 2",
    )
    .fetch_all(&mut *pg)
    .await
    .map_err(target("looking at the target database"))?;
    let ours = |name: &str| TABLES.contains(&name) || TARGET_ONLY.contains(&name);
    if let Some((schema, name, _)) = relations.iter().find(|(_, n, home)| !(*home && ours(n))) {
        return Err(CopyError::TargetNotEmpty(format!(
            "it has a table {schema}.{name}"
        )));
    }
    // the event log first: the one a reader most likely recognises
    let present: BTreeSet<&str> = relations.iter().map(|(_, n, _)| n.as_str()).collect();
    let order = ["events"].iter().chain(&TABLES).chain(&["event_positions"]);
    for name in order.filter(|n| present.contains(**n)) {
        let sql = if *name == "event_positions" {
            "SELECT EXISTS (SELECT 1 FROM event_positions WHERE last <> 0)".to_owned()
        } else {
            format!("SELECT EXISTS (SELECT 1 FROM {})", quoted(name))
        };
        let has_rows: bool = sqlx::query_scalar(AssertSqlSafe(sql))
            .fetch_one(&mut *pg)
            .await
            .map_err(target("looking at the target database"))?;
        if has_rows {
            return Err(CopyError::TargetNotEmpty(format!(
                "it already holds eddy data: its table {name} has rows"
            )));
        }
    }
    Ok(())
}

/// Each table's columns, with the kind its PostgreSQL type asks for. Both databases
/// must have the tables of [`TABLES`] (and PostgreSQL those of [`TARGET_ONLY`]) with
/// the same columns: a schema change that one backend's migrations forgot stops the
/// copy here rather than leaving data behind.
pub(super) async fn plan_tables(
    source: &mut Source,
    pg: &mut PgConnection,
) -> Result<Vec<TablePlan>, CopyError> {
    let lite = source.run(sqlite_columns).await?;
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT table_name::TEXT, column_name::TEXT, data_type::TEXT \
         FROM information_schema.columns WHERE table_schema = current_schema() \
         ORDER BY table_name, ordinal_position",
    )
    .fetch_all(&mut *pg)
    .await
    .map_err(target("reading the target's schema"))?;
    let mut pg_tables: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for (table, column, data_type) in rows {
        pg_tables
            .entry(table)
            .or_default()
            .push((column, data_type));
    }
    let expected: BTreeSet<&str> = TABLES.iter().chain(&TARGET_ONLY).copied().collect();
    let found: BTreeSet<&str> = pg_tables
        .keys()
        .map(String::as_str)
        .filter(|t| *t != PROGRESS)
        .collect();
    if found != expected {
        return Err(CopyError::Schema(format!(
            "PostgreSQL has tables {found:?}, where eddy's schema has {expected:?}"
        )));
    }
    let lite_tables: BTreeSet<&str> = lite.keys().map(String::as_str).collect();
    if lite_tables != TABLES.into() {
        return Err(CopyError::Schema(format!(
            "the embedded database has tables {lite_tables:?}, where eddy copies {TABLES:?}"
        )));
    }
    TABLES
        .iter()
        .map(|table| {
            let mut columns = Vec::new();
            for (name, data_type) in &pg_tables[*table] {
                let kind = Kind::of(data_type).ok_or_else(|| {
                    CopyError::Schema(format!(
                        "column {table}.{name} has type {data_type}, which eddy does not copy"
                    ))
                })?;
                columns.push(Column {
                    name: name.clone(),
                    kind,
                });
            }
            let on_pg: BTreeSet<&str> = columns.iter().map(|c| c.name.as_str()).collect();
            let on_lite: BTreeSet<&str> = lite[*table].iter().map(String::as_str).collect();
            if on_pg != on_lite {
                return Err(CopyError::Schema(format!(
                    "table {table} has columns {on_lite:?} in the embedded database and \
                     {on_pg:?} on PostgreSQL"
                )));
            }
            Ok(TablePlan { table, columns })
        })
        .collect()
}

/// One table's line of the progress table.
#[derive(Debug, Clone, Copy)]
pub(super) struct ProgressRow {
    pub(super) total: u64,
    pub(super) copied_through: i64,
    pub(super) copied: u64,
    pub(super) done: bool,
}

/// Creates the progress table with a line per table, each at its start.
pub(super) async fn start_progress(
    pg: &mut PgConnection,
    counts: &BTreeMap<&'static str, Count>,
) -> Result<BTreeMap<&'static str, ProgressRow>, CopyError> {
    let doing = "creating the progress table";
    let mut tx = pg.begin().await.map_err(target(doing))?;
    sqlx::query(AssertSqlSafe(format!(
        // the source's row count, largest rowid and digest, to check it is unchanged
        // on resume; the rowid up to which (and the rows that) this table is copied
        "CREATE TABLE {PROGRESS} (\
             table_name       TEXT    PRIMARY KEY, \
             source_rows      BIGINT  NOT NULL, \
             source_max_rowid BIGINT  NOT NULL, \
             source_digest    BIGINT  NOT NULL, \
             copied_through   BIGINT  NOT NULL, \
             copied_rows      BIGINT  NOT NULL, \
             done             BOOLEAN NOT NULL)"
    )))
    .execute(&mut *tx)
    .await
    .map_err(target(doing))?;
    let mut progress = BTreeMap::new();
    for (table, count) in counts {
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {PROGRESS} VALUES ($1, $2, $3, $4, 0, 0, FALSE)"
        )))
        .bind(*table)
        .bind(count.rows as i64)
        .bind(count.max_rowid)
        .bind(count.digest)
        .execute(&mut *tx)
        .await
        .map_err(target(doing))?;
        progress.insert(
            *table,
            ProgressRow {
                total: count.rows,
                copied_through: 0,
                copied: 0,
                done: false,
            },
        );
    }
    tx.commit().await.map_err(target(doing))?;
    Ok(progress)
}

/// Reads the progress an interrupted copy left, after checking that the source still
/// is the database it was copying.
pub(super) async fn load_progress(
    pg: &mut PgConnection,
    counts: &BTreeMap<&'static str, Count>,
) -> Result<BTreeMap<&'static str, ProgressRow>, CopyError> {
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT table_name, source_rows, source_max_rowid, source_digest, copied_through, \
         copied_rows, done FROM {PROGRESS}"
    )))
    .fetch_all(&mut *pg)
    .await
    .map_err(target("reading the progress table"))?;
    let mut recorded = BTreeMap::new();
    let mut progress = BTreeMap::new();
    for row in rows {
        let name: String = row.get(0);
        let Some(table) = TABLES.iter().find(|t| **t == name) else {
            return Err(CopyError::Schema(format!(
                "the progress table names a table {name} that eddy does not copy"
            )));
        };
        let count = Count {
            rows: row.get::<i64, _>(1) as u64,
            max_rowid: row.get(2),
            digest: row.get(3),
        };
        recorded.insert(*table, count);
        progress.insert(
            *table,
            ProgressRow {
                total: count.rows,
                copied_through: row.get(4),
                copied: row.get::<i64, _>(5) as u64,
                done: row.get(6),
            },
        );
    }
    // rows added first: the likeliest change, and the clearest to name
    for (table, now) in counts {
        let then = recorded.get(table).ok_or_else(|| {
            CopyError::Schema(format!("the progress table has no line for {table}"))
        })?;
        if then.rows != now.rows {
            return Err(CopyError::SourceChanged(format!(
                "table {table} had {} rows and now has {}",
                then.rows, now.rows
            )));
        }
    }
    if let Some((table, _)) = counts.iter().find(|(t, now)| recorded[*t] != **now) {
        return Err(CopyError::SourceChanged(format!(
            "the rows of table {table} changed"
        )));
    }
    Ok(progress)
}

/// Checks that every row arrived, moves each identity past the largest copied id and
/// the position counter to the last copied position, and drops the progress table, in
/// one transaction: the copy is complete, and a later run finds the target not empty.
pub(super) async fn finish(pg: &mut PgConnection) -> Result<(), CopyError> {
    let doing = "completing the copy";
    let mut tx = pg.begin().await.map_err(target(doing))?;
    let short: Vec<(String, i64, i64)> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT table_name, copied_rows, source_rows FROM {PROGRESS} \
         WHERE NOT done OR copied_rows <> source_rows ORDER BY table_name"
    )))
    .fetch_all(&mut *tx)
    .await
    .map_err(target(doing))?;
    if let Some((table, copied, total)) = short.first() {
        return Err(CopyError::Schema(format!(
            "table {table} has {copied} of its {total} rows on PostgreSQL after the copy"
        )));
    }
    let identities: Vec<(String, String)> = sqlx::query_as(
        "SELECT table_name::TEXT, column_name::TEXT FROM information_schema.columns \
         WHERE table_schema = current_schema() AND is_identity = 'YES' ORDER BY 1",
    )
    .fetch_all(&mut *tx)
    .await
    .map_err(target(doing))?;
    for (table, column) in identities {
        // setval(.., NULL) of an empty table leaves the identity at its start
        sqlx::query(AssertSqlSafe(format!(
            "SELECT setval(pg_get_serial_sequence($1, $2), (SELECT max({}) FROM {}))",
            quoted(&column),
            quoted(&table)
        )))
        .bind(quoted(&table))
        .bind(&column)
        .execute(&mut *tx)
        .await
        .map_err(target(doing))?;
    }
    sqlx::query("UPDATE event_positions SET last = (SELECT COALESCE(max(pos), 0) FROM events)")
        .execute(&mut *tx)
        .await
        .map_err(target(doing))?;
    sqlx::query(AssertSqlSafe(format!("DROP TABLE {PROGRESS}")))
        .execute(&mut *tx)
        .await
        .map_err(target(doing))?;
    tx.commit().await.map_err(target(doing))
}
