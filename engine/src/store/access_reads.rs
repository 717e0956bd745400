//! Reads for access control: the event types of a stream.

use super::Reads;

use super::access_writes::TypeRow;
use crate::error::Result;

/// Every event type defined on `account/stream`.
pub async fn event_types(reads: &Reads, account: &str, stream: &str) -> Result<Vec<TypeRow>> {
    let rows: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT name, schema, imported FROM event_types WHERE account = ? AND stream = ? \
         ORDER BY name",
    )
    .bind(account)
    .bind(stream)
    .fetch_all(&reads.pool)
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

/// Every account name, and every key as (id, account, hash).
pub(crate) async fn accounts_and_keys(
    reads: &Reads,
) -> Result<(Vec<String>, Vec<(String, String, String)>)> {
    let accounts: Vec<(String,)> = sqlx::query_as("SELECT name FROM accounts")
        .fetch_all(&reads.pool)
        .await?;
    let keys = sqlx::query_as("SELECT id, account, hash FROM api_keys")
        .fetch_all(&reads.pool)
        .await?;
    Ok((accounts.into_iter().map(|(a,)| a).collect(), keys))
}
