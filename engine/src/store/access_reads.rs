//! Reads for access control: the event types of a stream.

use sqlx::SqlitePool;

use super::access_writes::TypeRow;
use crate::error::Result;

/// Every event type defined on `account/stream`.
pub async fn event_types(pool: &SqlitePool, account: &str, stream: &str) -> Result<Vec<TypeRow>> {
    let rows: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT name, schema, imported FROM event_types WHERE account = ? AND stream = ? \
         ORDER BY name",
    )
    .bind(account)
    .bind(stream)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(name, schema, imported)| TypeRow {
            account: account.to_owned(),
            stream: stream.to_owned(),
            name,
            schema,
            imported,
        })
        .collect())
}
