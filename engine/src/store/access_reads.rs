//! Reads for access control: the event types of a stream, the accounts and the keys.

use super::Reads;
use super::access_writes::TypeRow;
use super::query::args;
use crate::error::Result;

/// Every event type defined on `account/stream`.
pub async fn event_types(reads: &Reads, account: &str, stream: &str) -> Result<Vec<TypeRow>> {
    let rows = reads
        .all(
            "SELECT name, schema, imported FROM event_types WHERE account = $1 AND stream = $2 \
             ORDER BY name",
            args![account, stream],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(TypeRow {
                account: account.to_owned(),
                stream: stream.to_owned(),
                name: r.text(0)?,
                schema: r.text(1)?,
                imported: r.opt_text(2)?,
            })
        })
        .collect()
}

/// Every account name, and every key as (id, account, hash).
pub(crate) async fn accounts_and_keys(
    reads: &Reads,
) -> Result<(Vec<String>, Vec<(String, String, String)>)> {
    let accounts = reads.all("SELECT name FROM accounts", args![]).await?;
    let keys = reads
        .all("SELECT id, account, hash FROM api_keys", args![])
        .await?;
    Ok((
        accounts.iter().map(|r| r.text(0)).collect::<Result<_>>()?,
        keys.iter()
            .map(|r| Ok((r.text(0)?, r.text(1)?, r.text(2)?)))
            .collect::<Result<_>>()?,
    ))
}
