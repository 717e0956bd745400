//! The engine's access operations: deciding requests, the checks before an append,
//! accounts and keys, and event types.

use std::sync::Arc;

use serde_json::Value;

use super::controls::StreamControls;
use super::keys::Keys;
use super::{Credentials, Grant, Need, Target};
use crate::Engine;
use crate::error::{EngineError, Result};
use crate::path::{AccountName, StreamPath};
use crate::store::access_writes::{AccessWrite, TypeRow};
use crate::types::EventTypeDef;

impl Engine {
    /// Whether requests are checked (the server was given an admin token).
    pub fn access_enabled(&self) -> bool {
        self.access.enabled()
    }

    /// The controls (settings, rate limit, blocklists, types) of `path`'s stream.
    pub async fn controls(&self, path: &StreamPath) -> Result<Arc<StreamControls>> {
        self.controls
            .get(path.account.as_str(), path.stream.as_str())
            .await
    }

    /// Refuses credentials that are no one's on what anyone may read (see
    /// [`crate::access::Access::check_given`]).
    pub fn check_credentials(&self, creds: &Credentials) -> Result<()> {
        self.access.check_given(creds)
    }

    /// Decides whether `creds` may do `need` to `target` (401/403 when not).
    pub async fn authorize(
        &self,
        creds: &Credentials,
        target: Target<'_>,
        need: Need,
    ) -> Result<Grant> {
        if !self.access.enabled() {
            return Ok(Grant::Open);
        }
        let controls = match target {
            Target::Stream(p) if need != Need::Manage => Some(self.controls(p).await?),
            _ => None,
        };
        self.access
            .decide(creds, target, need, controls.as_ref().map(|c| &c.settings))
    }

    /// The accounts the credentials may see, by name: every account for the admin
    /// (and anyone on an open server, where the accounts are those with streams), the
    /// key's own account for an account key.
    pub async fn visible_accounts(&self, creds: &Credentials) -> Result<Vec<String>> {
        if !self.access.enabled() {
            return crate::store::read::stream_accounts(&self.store.reads).await;
        }
        let keys = self.access.keys();
        // every credential given must be someone's, as everywhere else; the admin
        // token outranks an account key given with it
        let given: Vec<Option<super::Identity>> = [&creds.bearer, &creds.token]
            .into_iter()
            .filter_map(|c| c.as_deref())
            .map(|c| keys.identify(c))
            .collect();
        let known = creds.unusable.is_none()
            && creds.hmac.is_none()
            && !given.is_empty()
            && given.iter().all(Option::is_some);
        if known && !given.contains(&Some(super::Identity::Admin)) {
            let mut own: Vec<String> = given
                .into_iter()
                .filter_map(|i| match i {
                    Some(super::Identity::Account(a)) => Some(a),
                    _ => None,
                })
                .collect();
            own.sort_unstable();
            own.dedup();
            return Ok(own);
        }
        self.access.decide_admin(creds)?;
        Ok(keys.accounts())
    }

    /// Allows only the admin token.
    pub fn authorize_admin(&self, creds: &Credentials) -> Result<()> {
        self.access.decide_admin(creds)
    }

    /// Creates an account with its first key; answers the key (shown once).
    pub async fn create_account(&self, name: &AccountName) -> Result<String> {
        if name.is_reserved() {
            return Err(EngineError::invalid(format!(
                "account name \"{name}\" is reserved for the server"
            ))
            .with("field", "name"));
        }
        let (key, shown) = Keys::generate();
        self.store
            .writer
            .access(AccessWrite::CreateAccount {
                name: name.as_str().to_owned(),
                key: key.clone(),
            })
            .await?;
        self.access.keys().add_account(name.as_str());
        self.access.keys().add_key(name.as_str(), &key);
        Ok(shown)
    }

    /// Creates a key of an existing account; answers (id, key).
    pub async fn create_key(&self, account: &AccountName) -> Result<(String, String)> {
        self.existing_account(account)?;
        let (key, shown) = Keys::generate();
        self.store
            .writer
            .access(AccessWrite::CreateKey {
                account: account.as_str().to_owned(),
                key: key.clone(),
            })
            .await?;
        self.access.keys().add_key(account.as_str(), &key);
        Ok((key.id, shown))
    }

    /// Deletes a key; 404 when the account has no key with that id.
    pub async fn delete_key(&self, account: &AccountName, id: &str) -> Result<()> {
        self.existing_account(account)?;
        let deleted = self
            .store
            .writer
            .access(AccessWrite::DeleteKey {
                account: account.as_str().to_owned(),
                id: id.to_owned(),
            })
            .await?;
        if !deleted {
            return Err(EngineError::not_found(format!(
                "account {account} has no key {id}"
            )));
        }
        self.access.keys().remove_key(account.as_str(), id);
        Ok(())
    }

    /// The ids of an account's keys.
    pub fn key_ids(&self, account: &AccountName) -> Result<Vec<String>> {
        self.existing_account(account)?;
        Ok(self.access.keys().key_ids(account.as_str()))
    }

    fn existing_account(&self, account: &AccountName) -> Result<()> {
        if self.access.keys().account_exists(account.as_str()) {
            Ok(())
        } else {
            Err(EngineError::not_found(format!(
                "account {account} does not exist"
            )))
        }
    }

    /// Defines an event type of `path`'s stream from a JTD schema (or an imported
    /// one, `imported` naming where from); answers whether the type is new.
    pub async fn put_type(
        &self,
        path: &StreamPath,
        name: &str,
        schema: &Value,
        imported: Option<String>,
    ) -> Result<bool> {
        EventTypeDef::compile(schema)?;
        let created = self
            .store
            .writer
            .access(AccessWrite::PutType(Box::new(TypeRow {
                account: path.account.as_str().to_owned(),
                stream: path.stream.as_str().to_owned(),
                name: name.to_owned(),
                schema: schema.to_string(),
                imported,
            })))
            .await?;
        self.controls
            .invalidate(path.account.as_str(), path.stream.as_str());
        Ok(created)
    }

    /// The schema of an event type; 404 when the stream does not define it.
    pub async fn event_type(&self, path: &StreamPath, name: &str) -> Result<Arc<EventTypeDef>> {
        self.controls(path)
            .await?
            .event_type(name)
            .cloned()
            .ok_or_else(|| {
                EngineError::not_found(format!(
                    "/{}/{} defines no event type \"{name}\"",
                    path.account, path.stream
                ))
            })
    }

    /// The event types a stream defines, by name.
    pub async fn event_types(&self, path: &StreamPath) -> Result<Vec<(String, Arc<EventTypeDef>)>> {
        Ok(self
            .controls(path)
            .await?
            .event_types()
            .into_iter()
            .map(|(name, def)| (name.to_owned(), def.clone()))
            .collect())
    }

    /// Deletes an event type; 404 when the stream does not define it.
    pub async fn delete_type(&self, path: &StreamPath, name: &str) -> Result<()> {
        let deleted = self
            .store
            .writer
            .access(AccessWrite::DeleteType {
                account: path.account.as_str().to_owned(),
                stream: path.stream.as_str().to_owned(),
                name: name.to_owned(),
            })
            .await?;
        self.controls
            .invalidate(path.account.as_str(), path.stream.as_str());
        if !deleted {
            return Err(EngineError::not_found(format!(
                "/{}/{} defines no event type \"{name}\"",
                path.account, path.stream
            )));
        }
        Ok(())
    }
}
