//! Accounts and API keys in memory: every key's SHA-256 with its account, loaded at
//! start and kept in step with the writer's commits, so checking a key costs one hash
//! and one map lookup.
//!
//! A key is `eddy_{id}_{secret}`: the id (12 hex digits) names it in the API
//! (`DELETE /api/accounts/{acct}/keys/{id}`), the secret is 32 random bytes. Only the
//! hash is stored. Keys are 256-bit random, so SHA-256 (no salt, no stretching) cannot
//! be searched backwards; a slow password hash would only slow every request.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::RwLock;

use crate::store::{Reads, access_reads};
use base64::Engine as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::Result;
use crate::store::access_writes::NewKey;

/// Who a key or token is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    Admin,
    Account(String),
}

#[derive(Default)]
struct Registry {
    accounts: HashSet<String>,
    /// key hash → (account, key id)
    keys: HashMap<[u8; 32], (String, String)>,
}

/// The admin token and every account's keys.
pub struct Keys {
    /// SHA-256 of the admin token; `None`: the server runs open.
    admin: Option<[u8; 32]>,
    /// A std lock: held for a map lookup, never across an await.
    inner: RwLock<Registry>,
}

fn digest(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if text.len() != 64 {
        return None;
    }
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    if getrandom::fill(&mut b).is_err() {
        for chunk in b.chunks_mut(16) {
            let u = uuid::Uuid::new_v4();
            chunk.copy_from_slice(&u.as_bytes()[..chunk.len()]);
        }
    }
    b
}

impl Keys {
    pub fn new(admin_token: Option<&str>) -> Self {
        Self {
            admin: admin_token.map(digest),
            inner: RwLock::new(Registry::default()),
        }
    }

    /// Whether an admin token was given (and so requests are checked).
    pub fn admin_enabled(&self) -> bool {
        self.admin.is_some()
    }

    /// Loads every account and key hash.
    pub(crate) async fn load(&self, reads: &Reads) -> Result<()> {
        let (accounts, keys) = access_reads::accounts_and_keys(reads).await?;
        let mut reg = Registry {
            accounts: accounts.into_iter().collect(),
            keys: HashMap::new(),
        };
        for (id, account, hash) in keys {
            if let Some(h) = unhex(&hash) {
                reg.keys.insert(h, (account, id));
            }
        }
        if let Ok(mut inner) = self.inner.write() {
            *inner = reg;
        }
        Ok(())
    }

    /// Who `presented` (a bearer key or token) is; `None` when it is no one's.
    pub fn identify(&self, presented: &str) -> Option<Identity> {
        let h = digest(presented);
        if let Some(admin) = &self.admin
            && bool::from(admin.ct_eq(&h))
        {
            return Some(Identity::Admin);
        }
        let inner = self.inner.read().ok()?;
        inner
            .keys
            .get(&h)
            .map(|(account, _)| Identity::Account(account.clone()))
    }

    /// Every account, by name.
    pub fn accounts(&self) -> Vec<String> {
        let Ok(inner) = self.inner.read() else {
            return Vec::new();
        };
        let mut names: Vec<String> = inner.accounts.iter().cloned().collect();
        names.sort_unstable();
        names
    }

    pub fn account_exists(&self, name: &str) -> bool {
        self.inner
            .read()
            .is_ok_and(|inner| inner.accounts.contains(name))
    }

    /// The ids of an account's keys.
    pub fn key_ids(&self, account: &str) -> Vec<String> {
        let Ok(inner) = self.inner.read() else {
            return Vec::new();
        };
        let ids: BTreeMap<&str, ()> = inner
            .keys
            .values()
            .filter(|(a, _)| a == account)
            .map(|(_, id)| (id.as_str(), ()))
            .collect();
        ids.into_keys().map(str::to_owned).collect()
    }

    /// A new key: what to store, and the key to show once.
    pub(crate) fn generate() -> (NewKey, String) {
        let id = hex(&random::<6>());
        let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random::<32>());
        let key = format!("eddy_{id}_{secret}");
        let hash = hex(&digest(&key));
        (NewKey { id, hash }, key)
    }

    /// Records a committed account.
    pub(crate) fn add_account(&self, name: &str) {
        if let Ok(mut inner) = self.inner.write() {
            inner.accounts.insert(name.to_owned());
        }
    }

    /// Records a committed key.
    pub(crate) fn add_key(&self, account: &str, key: &NewKey) {
        if let (Ok(mut inner), Some(h)) = (self.inner.write(), unhex(&key.hash)) {
            inner.keys.insert(h, (account.to_owned(), key.id.clone()));
        }
    }

    /// Forgets a deleted key.
    pub(crate) fn remove_key(&self, account: &str, id: &str) {
        if let Ok(mut inner) = self.inner.write() {
            inner.keys.retain(|_, (a, i)| !(a == account && i == id));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_identified_by_hash() {
        let keys = Keys::new(Some("admin-secret-token"));
        let (stored, key) = Keys::generate();
        assert!(key.starts_with(&format!("eddy_{}_", stored.id)));
        assert_eq!(stored.hash.len(), 64);
        assert!(!stored.hash.contains(&key));
        keys.add_account("acme");
        keys.add_key("acme", &stored);
        assert_eq!(keys.identify(&key), Some(Identity::Account("acme".into())));
        assert_eq!(keys.identify("admin-secret-token"), Some(Identity::Admin));
        assert_eq!(keys.identify("eddy_000000000000_nope"), None);
        assert_eq!(keys.key_ids("acme"), vec![stored.id.clone()]);
        keys.remove_key("acme", &stored.id);
        assert_eq!(keys.identify(&key), None);
    }
}
