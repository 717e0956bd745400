//! Reads of stored webhooks: a stream's webhooks, one webhook, and all of them at start.

use sqlx::Row;

use super::Reads;
use super::webhook_writes::WebhookRow;
use crate::error::Result;

const COLUMNS: &str = "SELECT id, account, stream, args, url, selector, data, secret, cursor, \
                       paused, created_at, failures FROM webhooks";

fn row_from(r: &sqlx::sqlite::SqliteRow) -> WebhookRow {
    WebhookRow {
        id: r.get(0),
        account: r.get(1),
        stream: r.get(2),
        args: r.get(3),
        url: r.get(4),
        selector: r.get(5),
        data: r.get(6),
        secret: r.get(7),
        cursor: r.get(8),
        paused: r.get(9),
        created_at: r.get(10),
        failures: u32::try_from(r.get::<i64, _>(11)).unwrap_or(u32::MAX),
    }
}

/// The webhooks of the (sub)stream named by `account`, `stream` and canonical `args`,
/// oldest first.
pub(crate) async fn of_stream(
    reads: &Reads,
    account: &str,
    stream: &str,
    args: &str,
) -> Result<Vec<WebhookRow>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "{COLUMNS} WHERE account = ? AND stream = ? AND args = ? ORDER BY created_at, id"
    )))
    .bind(account)
    .bind(stream)
    .bind(args)
    .fetch_all(&reads.pool)
    .await?;
    Ok(rows.iter().map(row_from).collect())
}

/// Webhook `id` of that (sub)stream, if it has one.
pub(crate) async fn one(
    reads: &Reads,
    id: &str,
    account: &str,
    stream: &str,
    args: &str,
) -> Result<Option<WebhookRow>> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "{COLUMNS} WHERE id = ? AND account = ? AND stream = ? AND args = ?"
    )))
    .bind(id)
    .bind(account)
    .bind(stream)
    .bind(args)
    .fetch_optional(&reads.pool)
    .await?;
    Ok(row.as_ref().map(row_from))
}

/// Every stored webhook.
pub(crate) async fn all(reads: &Reads) -> Result<Vec<WebhookRow>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(COLUMNS.to_owned()))
        .fetch_all(&reads.pool)
        .await?;
    Ok(rows.iter().map(row_from).collect())
}
