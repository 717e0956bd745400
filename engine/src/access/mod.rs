//! Who may do what (API §9).
//!
//! Without an admin token the server is open: every request is allowed (and the server
//! listens on loopback only). With one, a request proves who it is with
//! `Authorization: Bearer <key>` (an account's API key, or the admin token),
//! `Authorization: HMAC <token>` (one substream of a factory), or `?token=` carrying
//! any of those (EventSource cannot send headers). Then:
//!
//! - the admin may do anything, in accounts that exist;
//! - an account's keys may do anything in that account;
//! - anyone may read or append where the stream's `public` settings say so;
//! - the keys of `bob` may read or append to `strm(bob)` where `accountSubstreams`
//!   says so (any bare account argument names an account: `chat(alice,bob)` is open to
//!   both);
//! - an HMAC token grants reading and appending to the one substream it signs.
//!
//! Anything else is 401 when no credentials were given and 403 when the ones given do
//! not allow it, whether or not the stream exists: a refusal never reveals what exists.
//! Stream controls (rate limits, blocklists, types) live in [`controls`]; keys in
//! [`keys`]; the append policy that applies them to every ingest path in [`admit`].

pub mod admit;
pub mod controls;
pub mod keys;
mod ops;

use std::sync::Arc;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::error::{EngineError, ErrorCode, Result};
use crate::metrics::Metrics;
use crate::path::{AccountName, Arg, StreamPath};
use crate::settings::StreamSettings;
pub use keys::{Identity, Keys};

/// What a request does with its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Reads events, states, schemas; follows with SSE.
    Read,
    /// Appends events.
    Write,
    /// Everything else: settings, reducers' code, pipes, webhooks, logs, types,
    /// listings. Only the account (and the admin) may.
    Manage,
}

impl Need {
    fn verb(self) -> &'static str {
        match self {
            Need::Read => "read",
            Need::Write => "append to",
            Need::Manage => "manage",
        }
    }
}

/// What a request acts on.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// The account itself: its listing, its account events, its keys.
    Account(&'a AccountName),
    /// A stream, factory or substream.
    Stream(&'a StreamPath),
}

impl Target<'_> {
    fn account(&self) -> &AccountName {
        match self {
            Target::Account(a) => a,
            Target::Stream(p) => &p.account,
        }
    }

    fn describe(&self) -> String {
        match self {
            Target::Account(a) => format!("account {a}"),
            Target::Stream(p) => format!("/{p}"),
        }
    }
}

/// Credentials as the request gave them.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// The `Authorization: Bearer` value: an API key or the admin token.
    pub bearer: Option<String>,
    /// The `Authorization: HMAC` value.
    pub hmac: Option<String>,
    /// The `?token=` value: any of the above.
    pub token: Option<String>,
    /// An `Authorization` header eddy cannot use (another scheme, such as `Basic`, or
    /// no credentials after the scheme): why. Refused with 401 like no credentials,
    /// since none eddy understands were given.
    pub unusable: Option<String>,
}

impl Credentials {
    pub fn is_empty(&self) -> bool {
        self.bearer.is_none() && self.hmac.is_none() && self.token.is_none()
    }
}

/// Who a request was allowed as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// The server runs open.
    Open,
    Admin,
    /// A key of this account.
    Account(String),
    /// Public settings, an account substream or an HMAC token allowed it.
    Stream,
}

/// The access rules: the admin token (hashed) and the keys of every account.
pub struct Access {
    keys: Keys,
    metrics: Arc<Metrics>,
}

impl Access {
    pub fn new(keys: Keys, metrics: Arc<Metrics>) -> Self {
        Self { keys, metrics }
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Loads the accounts and keys again (after another node changed them).
    pub(crate) async fn reload(&self, reads: &crate::store::Reads) -> crate::error::Result<()> {
        if self.keys.admin_enabled() {
            self.keys.load(reads).await?;
        }
        Ok(())
    }

    /// Whether requests are checked at all (an admin token was given).
    pub fn enabled(&self) -> bool {
        self.keys.admin_enabled()
    }

    /// Counts a refusal by the rule that made it.
    pub fn refused(&self, rule: &str) {
        self.metrics.refused(rule);
    }

    /// Decides whether `creds` may do `need` to `target`; `settings` are the target
    /// stream's (defaults when it does not exist), needed only for stream targets.
    pub fn decide(
        &self,
        creds: &Credentials,
        target: Target<'_>,
        need: Need,
        settings: Option<&StreamSettings>,
    ) -> Result<Grant> {
        if !self.enabled() {
            return Ok(Grant::Open);
        }
        self.check_usable(creds)?;
        let account = target.account();
        let mut identities = Vec::new();
        let mut hmac_tokens = Vec::new();
        if let Some(b) = &creds.bearer {
            match self.keys.identify(b) {
                Some(id) => identities.push(id),
                None => {
                    return Err(self.refuse(
                        ErrorCode::Forbidden,
                        "key",
                        "the key in Authorization: Bearer is not valid (unknown or deleted)".into(),
                    ));
                }
            }
        }
        if let Some(h) = &creds.hmac {
            hmac_tokens.push(h.as_str());
        }
        if let Some(t) = &creds.token {
            match self.keys.identify(t) {
                Some(id) => identities.push(id),
                None => hmac_tokens.push(t.as_str()),
            }
        }
        for id in &identities {
            match id {
                Identity::Admin => {
                    if !self.keys.account_exists(account.as_str()) {
                        return Err(EngineError::not_found(format!(
                            "account {account} does not exist; create it with POST /api/accounts"
                        )));
                    }
                    return Ok(Grant::Admin);
                }
                Identity::Account(a) if a == account.as_str() => {
                    return Ok(Grant::Account(a.clone()));
                }
                Identity::Account(_) => {}
            }
        }
        if let (Target::Stream(p), Some(s)) = (target, settings)
            && need != Need::Manage
        {
            let public = match need {
                Need::Read => s.public.read,
                _ => s.public.write,
            };
            if public {
                return Ok(Grant::Stream);
            }
            let allowed = match need {
                Need::Read => s.account_substreams.reads(),
                _ => s.account_substreams.writes(),
            };
            if allowed
                && identities.iter().any(|id| match id {
                    Identity::Account(b) => names_account(p, b),
                    Identity::Admin => false,
                })
            {
                return Ok(Grant::Stream);
            }
            if p.args.is_some()
                && let Some(secret) = &s.hmac_secret
                && hmac_tokens.iter().any(|t| verify_hmac(secret, p, t))
            {
                return Ok(Grant::Stream);
            }
        }
        let what = target.describe();
        let verb = need.verb();
        if creds.is_empty() {
            return Err(self.refuse(
                ErrorCode::Unauthorized,
                "credentials",
                format!(
                    "credentials are needed to {verb} {what}: send Authorization: Bearer <key> \
                     (or, for one substream, Authorization: HMAC <token>; EventSource: ?token=)"
                ),
            ));
        }
        let token_only = creds.bearer.is_none()
            && creds.hmac.is_none()
            && creds.token.is_some()
            && identities.is_empty();
        let (rule, why) = match (need, target, identities.first()) {
            (Need::Manage, _, _) => (
                "account",
                format!("only account {account}'s keys may {verb} {what}"),
            ),
            // a ?token= that is no key is taken for an HMAC token, but may as well be
            // a mistyped or deleted key: on a plain stream it cannot be anything else
            (_, Target::Stream(p), _) if token_only && p.args.is_none() => (
                "key",
                format!(
                    "the ?token= value is not a valid key or admin token (unknown or \
                     deleted); an HMAC token would grant one substream of a factory, not {what}"
                ),
            ),
            (_, Target::Stream(_), _) if token_only => (
                "hmac",
                format!(
                    "the ?token= value is not a valid key (unknown or deleted), and as an \
                     HMAC token it does not grant {what}: a token signs one substream"
                ),
            ),
            (_, Target::Stream(p), _) if !hmac_tokens.is_empty() && identities.is_empty() => (
                "hmac",
                if p.args.is_some() {
                    format!("the HMAC token does not grant {what}: a token signs one substream")
                } else {
                    format!("an HMAC token grants one substream only, not the whole of {what}")
                },
            ),
            (_, _, Some(Identity::Account(b))) => (
                "account",
                format!(
                    "the key of account {b} may not {verb} {what}: it belongs to account \
                     {account}, and its settings (public, accountSubstreams) do not allow it"
                ),
            ),
            _ => (
                "account",
                format!("the credentials given may not {verb} {what}"),
            ),
        };
        Err(self.refuse(ErrorCode::Forbidden, rule, why))
    }

    /// Allows only the admin token (the `/api/accounts` endpoint).
    pub fn decide_admin(&self, creds: &Credentials) -> Result<()> {
        self.check_usable(creds)?;
        let given = [&creds.bearer, &creds.token];
        if given
            .iter()
            .filter_map(|c| c.as_deref())
            .any(|c| self.keys.identify(c) == Some(Identity::Admin))
        {
            return Ok(());
        }
        if creds.is_empty() {
            return Err(self.refuse(
                ErrorCode::Unauthorized,
                "credentials",
                "the admin token is needed here: send Authorization: Bearer <admin token>".into(),
            ));
        }
        Err(self.refuse(
            ErrorCode::Forbidden,
            "admin",
            "only the admin token may do this, and the credentials given are not it".into(),
        ))
    }

    /// 401 for an `Authorization` header eddy cannot use, whatever else was given.
    /// Refuses credentials that are no one's where everyone may read (a cron
    /// stream), as a public stream does: an unusable scheme is `401`, a key that is
    /// not valid `403`.
    pub fn check_given(&self, creds: &Credentials) -> Result<()> {
        if !self.enabled() {
            return Ok(());
        }
        self.check_usable(creds)?;
        // (a `?token=` that is no key is taken for an HMAC token, which a public
        // stream lets pass: so does a cron stream)
        if let Some(given) = &creds.bearer
            && self.keys.identify(given).is_none()
        {
            return Err(self.refuse(
                ErrorCode::Forbidden,
                "key",
                "the key given is not valid (unknown or deleted); cron streams need no \
                 credentials"
                    .into(),
            ));
        }
        Ok(())
    }

    fn check_usable(&self, creds: &Credentials) -> Result<()> {
        match &creds.unusable {
            None => Ok(()),
            Some(why) => Err(self.refuse(
                ErrorCode::Unauthorized,
                "credentials",
                format!(
                    "{why}; eddy takes Authorization: Bearer <key> or, for one substream, \
                     Authorization: HMAC <token>"
                ),
            )),
        }
    }

    fn refuse(&self, code: ErrorCode, rule: &str, message: String) -> EngineError {
        self.refused(rule);
        EngineError::new(code, message).with("rule", rule)
    }
}

/// Whether code of `account` (a pipe it made) may append to `p` now, by the stream's
/// `settings`: its own account's streams, or another's whose settings let anyone
/// append (`public.write`) or let the account append to its own substreams
/// (`accountSubstreams`). An HMAC token, which a request may carry, is not kept.
pub(crate) fn account_may_append(account: &str, p: &StreamPath, settings: &StreamSettings) -> bool {
    p.account.as_str() == account
        || settings.public.write
        || (settings.account_substreams.writes() && names_account(p, account))
}

/// Whether a bare account argument of `p` names `account`.
fn names_account(p: &StreamPath, account: &str) -> bool {
    p.args.as_ref().is_some_and(|args| {
        args.as_slice()
            .iter()
            .any(|a| matches!(a, Arg::Account(n) if n.as_str() == account))
    })
}

/// The HMAC token of a substream: unpadded base64url of HMAC-SHA256(secret, path),
/// where the secret is the decoded bytes of `hmacSecret` and the path the canonical
/// `/acct/strm(args)`.
pub fn hmac_token(secret: &[u8], path: &StreamPath) -> String {
    use base64::Engine as _;
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("any key length");
    mac.update(format!("/{path}").as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

/// Checks an HMAC token in constant time. The key is the secret's decoded bytes; the
/// secret's text itself is accepted as the key too, for clients that sign with the
/// string they were shown.
fn verify_hmac(secret: &str, path: &StreamPath, token: &str) -> bool {
    use base64::Engine as _;
    let Ok(given) =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token.trim_end_matches('='))
    else {
        return false;
    };
    let message = format!("/{path}");
    let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(secret.trim_end_matches('='))
        .ok();
    let keys = decoded.iter().map(Vec::as_slice).chain([secret.as_bytes()]);
    let mut ok = false;
    for key in keys {
        if let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(key) {
            mac.update(message.as_bytes());
            ok |= mac.verify_slice(&given).is_ok();
        }
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::{Resource, parse};

    fn stream(p: &str) -> StreamPath {
        match parse(p).unwrap() {
            Resource::Stream(s) => s,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn hmac_tokens_sign_one_canonical_substream() {
        let secret = crate::settings::new_secret();
        let s = StreamSettings {
            factory: true,
            hmac_secret: Some(secret.clone()),
            ..Default::default()
        };
        let bytes = s.secret_bytes().unwrap();
        let x = stream("/acme/orders('x')");
        let token = hmac_token(&bytes, &x);
        assert!(verify_hmac(&secret, &x, &token));
        // the same substream however it was written
        assert!(verify_hmac(
            &secret,
            &stream("/acme/orders(%22x%22)"),
            &token
        ));
        assert!(!verify_hmac(&secret, &stream("/acme/orders('y')"), &token));
        assert!(!verify_hmac(&secret, &stream("/acme/other('x')"), &token));
        assert!(!verify_hmac(&secret, &x, "not-a-token"));
        // signed with the secret's text as the key
        let text_token = hmac_token(secret.as_bytes(), &x);
        assert!(verify_hmac(&secret, &x, &text_token));
    }

    #[test]
    fn account_arguments_name_accounts() {
        assert!(names_account(&stream("/a/chat(alice,bob)"), "bob"));
        assert!(!names_account(&stream("/a/chat('bob')"), "bob"));
        assert!(!names_account(&stream("/a/chat"), "bob"));
    }
}
