//! Account events (API §8): every change to an account, appended to
//! `/eddy/events({acct})` inside the transaction that makes the change, so the account
//! log and the change commit (or fail) together.

use serde_json::Value;

use super::apply::{AppendRequest, Ledger, Staged};
use crate::builtins;
use crate::error::Result;
use crate::event::{ExpectedIndex, NewEvent};
use crate::path::AccountName;

/// What changed: the event type of the account event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    StreamCreated,
    StreamSpliced,
    StreamDeleted,
    ReducerDeployed,
    ReducerDeleted,
    PipeAdded,
    PipeRemoved,
    PipeReplayed,
    WebhookAdded,
    WebhookRemoved,
    WebhookReplayed,
    SettingsChanged,
    TypeDefined,
    TypeDeleted,
    KeyCreated,
    KeyDeleted,
}

impl Change {
    pub(crate) fn event_type(self) -> &'static str {
        match self {
            Change::StreamCreated => "stream-created",
            Change::StreamSpliced => "stream-spliced",
            Change::StreamDeleted => "stream-deleted",
            Change::ReducerDeployed => "reducer-deployed",
            Change::ReducerDeleted => "reducer-deleted",
            Change::PipeAdded => "pipe-added",
            Change::PipeRemoved => "pipe-removed",
            Change::PipeReplayed => "pipe-replayed",
            Change::WebhookAdded => "webhook-added",
            Change::WebhookRemoved => "webhook-removed",
            Change::WebhookReplayed => "webhook-replayed",
            Change::SettingsChanged => "settings-changed",
            Change::TypeDefined => "type-defined",
            Change::TypeDeleted => "type-deleted",
            Change::KeyCreated => "key-created",
            Change::KeyDeleted => "key-deleted",
        }
    }
}

/// Appends `change` with `data` to the account's events. Changes of the server's own
/// streams (the `eddy` account) and of internal streams (logs, whose names hold a
/// `/`) are not account events. An empty `stream` is a change of the account itself
/// (its keys).
pub(super) fn account_event(
    l: &mut Ledger,
    staged: &mut Staged,
    account: &str,
    stream: &str,
    change: Change,
    data: Value,
) -> Result<()> {
    account_event_after(l, staged, (account, stream), change, data, 0)
}

/// [`account_event`] for a change that an event `hops` pipes and dispatches from an
/// appended one made (a stream created by a dispatch or a pipe's output): the account
/// event records `origin: {"hops": n}`, so that what is piped or dispatched from it
/// counts on from there. Otherwise a loop through the account events (a pipe from
/// them, and code that dispatches into new streams) would start from 0 at every turn.
pub(super) fn account_event_after(
    l: &mut Ledger,
    staged: &mut Staged,
    (account, stream): (&str, &str),
    change: Change,
    data: Value,
    hops: u32,
) -> Result<()> {
    if stream.contains('/') {
        return Ok(());
    }
    let Ok(account) = AccountName::new(account) else {
        return Ok(());
    };
    if account.is_reserved() {
        return Ok(());
    }
    let mut fields = serde_json::Map::new();
    if !stream.is_empty() {
        fields.insert(
            "stream".into(),
            Value::String(format!("{account}/{stream}")),
        );
    }
    if let Value::Object(m) = data {
        fields.extend(m);
    }
    let request = AppendRequest {
        metadata: None,
        stream: builtins::account_events(&account)?,
        events: vec![NewEvent {
            id: None,
            event_type: change.event_type().into(),
            content_type: "application/json".into(),
            data: Value::Object(fields).to_string().into(),
            timestamp: None,
            metadata: None,
            origin: (hops > 0).then(|| serde_json::json!({ "hops": hops }).to_string()),
        }],
        expected: ExpectedIndex::Any,
    };
    l.append(request, staged).map(|_| ())
}
