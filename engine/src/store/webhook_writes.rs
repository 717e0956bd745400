//! Webhook writes inside the writer's transaction: creating and deleting webhooks,
//! moving their cursors, pausing (with a log entry in the same transaction) and
//! resuming.

use super::account_events::{Change, account_event};
use super::apply::{AppendRequest, Ledger, Staged};
use super::db::vals;
use super::writer::now_ms;
use crate::error::{EngineError, Result};
use crate::event::{ExpectedIndex, NewEvent};
use crate::path::StreamPath;

/// A webhook as stored.
#[derive(Debug, Clone)]
pub struct WebhookRow {
    pub id: String,
    pub account: String,
    pub stream: String,
    /// Canonical args of the substream followed; empty for the whole stream.
    pub args: String,
    pub url: String,
    pub selector: String,
    pub data: bool,
    pub secret: String,
    /// Every event at or below this global position was delivered or passed over.
    pub cursor: crate::order::Position,
    /// Why deliveries stopped; `None` while active.
    pub paused: Option<String>,
    /// The failed attempts of the delivery that paused the webhook; 0 while active.
    pub failures: u32,
    pub created_at: i64,
}

pub(crate) enum WebhookWrite {
    Create(Box<WebhookRow>),
    Delete(String),
    Cursor {
        id: String,
        cursor: crate::order::Position,
        fence: Option<super::cluster::Fence>,
    },
    /// Stops deliveries and says why in the stream's log; `Ok(false)` (and no log
    /// entry) when the webhook is gone or already paused.
    Pause {
        id: String,
        cursor: crate::order::Position,
        reason: String,
        failures: u32,
        log: Box<(StreamPath, NewEvent)>,
        fence: Option<super::cluster::Fence>,
    },
    Resume(String),
    /// Records, as an account event, that the index range was sent again.
    Replayed {
        id: String,
        from: u64,
        to: Option<u64>,
    },
}

/// The most webhooks a stream (with all its substreams) may have: each sends every
/// event it picks once more, so a stream with many is a fan-out of outbound calls.
pub(crate) const MAX_PER_STREAM: usize = 20;

/// Applies a webhook write; `Ok(false)` when the webhook does not exist.
pub(super) fn webhook(l: &mut Ledger, write: WebhookWrite, staged: &mut Staged) -> Result<bool> {
    match &write {
        WebhookWrite::Create(row) => staged.changed(format!("webhook:{}", row.id)),
        WebhookWrite::Delete(id) | WebhookWrite::Resume(id) => {
            staged.changed(format!("webhook:{id}"))
        }
        WebhookWrite::Pause { id, fence, .. } => {
            l.check_fence(fence.as_ref())?;
            staged.changed(format!("webhook:{id}"));
        }
        WebhookWrite::Cursor { fence, .. } => l.check_fence(fence.as_ref())?,
        WebhookWrite::Replayed { .. } => {}
    }
    let changed = match write {
        WebhookWrite::Create(row) => {
            let count = l.db.row(
                "SELECT COUNT(*) FROM webhooks WHERE account = ?1 AND stream = ?2",
                vals![row.account, row.stream],
                |r| r.int(0),
            )?;
            if count.unwrap_or(0) >= MAX_PER_STREAM as i64 {
                return Err(EngineError::conflict(format!(
                    "/{}/{} has {MAX_PER_STREAM} webhooks (its substreams' among them), the \
                     most a stream may have: delete one first",
                    row.account, row.stream
                )));
            }
            let n = l.db.exec(
                "INSERT INTO webhooks (id, account, stream, args, url, selector, data, \
                     secret, cursor, paused, created_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, NULL, ?10)",
                vals![
                    row.id,
                    row.account,
                    row.stream,
                    row.args,
                    row.url,
                    row.selector,
                    row.data,
                    row.secret,
                    row.cursor,
                    now_ms(),
                ],
            )?;
            account_event(
                l,
                staged,
                &row.account,
                &row.stream,
                Change::WebhookAdded,
                serde_json::json!({ "id": row.id, "url": row.url, "selector": row.selector }),
            )?;
            n
        }
        WebhookWrite::Delete(id) => {
            let owner = l.db.row(
                "SELECT account, stream FROM webhooks WHERE id = ?1",
                vals![id],
                |r| Ok((r.text(0)?, r.text(1)?)),
            )?;
            let n = l.db.exec("DELETE FROM webhooks WHERE id = ?1", vals![id])?;
            if let Some((account, stream)) = owner {
                account_event(
                    l,
                    staged,
                    &account,
                    &stream,
                    Change::WebhookRemoved,
                    serde_json::json!({ "id": id }),
                )?;
            }
            n
        }
        WebhookWrite::Cursor { id, cursor, .. } => l.db.exec(
            "UPDATE webhooks SET cursor = ?1 WHERE id = ?2 AND cursor < ?1",
            vals![cursor, id],
        )?,
        WebhookWrite::Pause {
            id,
            cursor,
            reason,
            failures,
            log,
            ..
        } => {
            let (stream, entry) = *log;
            let n = l.db.exec(
                    "UPDATE webhooks SET paused = ?1, cursor = CASE WHEN cursor > ?2 THEN cursor ELSE ?2 END, failures = ?4 \
                         WHERE id = ?3 AND paused IS NULL",
                    vals![reason, cursor, id, failures],
                )?;
            if n > 0 {
                l.append(
                    AppendRequest {
                        metadata: None,
                        stream,
                        events: vec![entry],
                        expected: ExpectedIndex::Any,
                    },
                    staged,
                )?;
            }
            n
        }
        WebhookWrite::Resume(id) => l.db.exec(
            "UPDATE webhooks SET paused = NULL, failures = 0 WHERE id = ?1",
            vals![id],
        )?,
        WebhookWrite::Replayed { id, from, to } => {
            let owner = l.db.row(
                "SELECT account, stream FROM webhooks WHERE id = ?1",
                vals![id],
                |r| Ok((r.text(0)?, r.text(1)?)),
            )?;
            let Some((account, stream)) = owner else {
                return Ok(false);
            };
            account_event(
                l,
                staged,
                &account,
                &stream,
                Change::WebhookReplayed,
                serde_json::json!({ "id": id, "from": from, "to": to }),
            )?;
            1
        }
    };
    Ok(changed > 0)
}

/// The error for a write to a webhook that is gone.
pub(crate) fn missing(id: &str) -> EngineError {
    EngineError::not_found(format!("webhook {id} does not exist"))
}
