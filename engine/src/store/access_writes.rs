//! Access writes inside the writer's transaction: accounts, API keys (stored as hashes)
//! and event types, each with its account event in the same transaction.

use super::account_events::{Change, account_event};
use super::apply::{Ledger, Staged};
use super::db::vals;
use super::writer::now_ms;
use crate::error::{EngineError, Result};

pub(crate) enum AccessWrite {
    /// A new account with its first key.
    CreateAccount {
        name: String,
        key: NewKey,
    },
    CreateKey {
        account: String,
        key: NewKey,
    },
    DeleteKey {
        account: String,
        id: String,
    },
    /// Defines (or redefines) an event type of a stream.
    PutType(Box<TypeRow>),
    DeleteType {
        account: String,
        stream: String,
        name: String,
    },
}

/// A key as stored: its id and the hex SHA-256 of the key.
#[derive(Clone)]
pub(crate) struct NewKey {
    pub(crate) id: String,
    pub(crate) hash: String,
}

/// An event type as stored.
#[derive(Debug, Clone)]
pub struct TypeRow {
    pub account: String,
    pub stream: String,
    pub name: String,
    pub schema: String,
    pub imported: Option<String>,
}

/// Applies an access write; `Ok(false)` when the thing to change or delete does
/// not exist (for a type put: when it is new).
pub(super) fn access(l: &mut Ledger, write: AccessWrite, staged: &mut Staged) -> Result<bool> {
    staged.changed("access");
    match write {
        AccessWrite::CreateAccount { name, key } => {
            let exists =
                l.db.row(
                    "SELECT 1 FROM accounts WHERE name = ?1",
                    vals![name],
                    |_| Ok(()),
                )?
                .is_some();
            if exists {
                return Err(
                    EngineError::conflict(format!("account \"{name}\" already exists"))
                        .with("field", "name"),
                );
            }
            l.db.exec(
                "INSERT INTO accounts (name, created_at) VALUES (?1, ?2)",
                vals![name, now_ms()],
            )?;
            insert_key(l, staged, &name, &key)?;
            Ok(true)
        }
        AccessWrite::CreateKey { account, key } => {
            insert_key(l, staged, &account, &key)?;
            Ok(true)
        }
        AccessWrite::DeleteKey { account, id } => {
            let n = l.db.exec(
                "DELETE FROM api_keys WHERE account = ?1 AND id = ?2",
                vals![account, id],
            )?;
            if n > 0 {
                account_event(
                    l,
                    staged,
                    &account,
                    "",
                    Change::KeyDeleted,
                    serde_json::json!({ "id": id }),
                )?;
            }
            Ok(n > 0)
        }
        AccessWrite::PutType(row) => {
            let n = l.db.exec(
                "UPDATE event_types SET schema = ?4, imported = ?5, updated_at = ?6 \
                         WHERE account = ?1 AND stream = ?2 AND name = ?3",
                vals![
                    row.account,
                    row.stream,
                    row.name,
                    row.schema,
                    row.imported,
                    now_ms()
                ],
            )?;
            if n == 0 {
                l.db.exec(
                    "INSERT INTO event_types (account, stream, name, schema, imported, \
                             updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    vals![
                        row.account,
                        row.stream,
                        row.name,
                        row.schema,
                        row.imported,
                        now_ms()
                    ],
                )?;
            }
            let mut data = serde_json::json!({ "type": row.name });
            if let Some(from) = &row.imported {
                data["imported"] = from.clone().into();
            }
            account_event(
                l,
                staged,
                &row.account,
                &row.stream,
                Change::TypeDefined,
                data,
            )?;
            Ok(n == 0)
        }
        AccessWrite::DeleteType {
            account,
            stream,
            name,
        } => {
            let n = l.db.exec(
                "DELETE FROM event_types WHERE account = ?1 AND stream = ?2 AND name = ?3",
                vals![account, stream, name],
            )?;
            if n > 0 {
                account_event(
                    l,
                    staged,
                    &account,
                    &stream,
                    Change::TypeDeleted,
                    serde_json::json!({ "type": name }),
                )?;
            }
            Ok(n > 0)
        }
    }
}

fn insert_key(l: &mut Ledger, staged: &mut Staged, account: &str, key: &NewKey) -> Result<()> {
    l.db.exec(
        "INSERT INTO api_keys (id, account, hash, created_at) VALUES (?1, ?2, ?3, ?4)",
        vals![key.id, account, key.hash, now_ms()],
    )?;
    account_event(
        l,
        staged,
        account,
        "",
        Change::KeyCreated,
        serde_json::json!({ "id": key.id }),
    )
}
