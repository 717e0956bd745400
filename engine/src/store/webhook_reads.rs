//! Reads of stored webhooks: a stream's webhooks, one webhook, and all of them at start.

use super::Reads;
use super::query::{ReadRow, args};
use super::webhook_writes::WebhookRow;
use crate::error::Result;

const COLUMNS: &str = "SELECT id, account, stream, args, url, selector, data, secret, cursor, \
                       paused, created_at, failures FROM webhooks";

fn row_from(r: &ReadRow) -> Result<WebhookRow> {
    Ok(WebhookRow {
        id: r.text(0)?,
        account: r.text(1)?,
        stream: r.text(2)?,
        args: r.text(3)?,
        url: r.text(4)?,
        selector: r.text(5)?,
        data: r.flag(6)?,
        secret: r.text(7)?,
        cursor: r.position(8)?,
        paused: r.opt_text(9)?,
        created_at: r.int(10)?,
        failures: u32::try_from(r.int(11)?).unwrap_or(u32::MAX),
    })
}

/// The webhooks of the (sub)stream named by `account`, `stream` and canonical `args`,
/// oldest first.
pub(crate) async fn of_stream(
    reads: &Reads,
    account: &str,
    stream: &str,
    args: &str,
) -> Result<Vec<WebhookRow>> {
    let rows = reads
        .all(
            &format!(
                "{COLUMNS} WHERE account = $1 AND stream = $2 AND args = $3 \
                 ORDER BY created_at, id"
            ),
            args![account, stream, args],
        )
        .await?;
    rows.iter().map(row_from).collect()
}

/// Webhook `id` of that (sub)stream, if it has one.
pub(crate) async fn one(
    reads: &Reads,
    id: &str,
    account: &str,
    stream: &str,
    args: &str,
) -> Result<Option<WebhookRow>> {
    let row = reads
        .optional(
            &format!("{COLUMNS} WHERE id = $1 AND account = $2 AND stream = $3 AND args = $4"),
            args![id, account, stream, args],
        )
        .await?;
    row.as_ref().map(row_from).transpose()
}

/// Every stored webhook.
pub(crate) async fn all(reads: &Reads) -> Result<Vec<WebhookRow>> {
    let rows = reads.all(COLUMNS, args![]).await?;
    rows.iter().map(row_from).collect()
}

/// Webhook `id`, whatever its stream.
pub(crate) async fn by_id(reads: &Reads, id: &str) -> Result<Option<WebhookRow>> {
    let row = reads
        .optional(&format!("{COLUMNS} WHERE id = $1"), args![id])
        .await?;
    row.as_ref().map(row_from).transpose()
}
