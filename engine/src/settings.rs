//! Stream settings (API §9): the document behind `GET/PUT/PATCH /{acct}/{strm}/settings`.
//!
//! Every field is checked here, with a message naming the field and the value at
//! fault; a field this server does not know is refused rather than silently stored.
//! The access rules that use them live in `access`.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{EngineError, Result};

/// The settings fields this server knows.
pub const FIELDS: [&str; 9] = [
    "factory",
    "metadata",
    "public",
    "rateLimit",
    "blocklist",
    "accountSubstreams",
    "hmacSecret",
    "requestHosts",
    "snapshotEvery",
];

/// Most hosts `requestHosts` may list.
pub const MAX_REQUEST_HOSTS: usize = 100;
/// Most entries each blocklist may hold.
pub const MAX_BLOCKLIST: usize = 1000;
/// Highest `rateLimit.perSecond` and `rateLimit.burst`.
pub const MAX_RATE: u64 = 1_000_000;
/// Fewest bytes an `hmacSecret` may decode to.
pub const MIN_SECRET_BYTES: usize = 16;
/// Events of a (sub)stream between two snapshots of its reducers' states, unless
/// `snapshotEvery` says otherwise: `?at=` folds at most about this many events.
pub const DEFAULT_SNAPSHOT_EVERY: u64 = 5_000;
/// Fewest events `snapshotEvery` may set between snapshots (0 turns them off).
pub const MIN_SNAPSHOT_EVERY: u64 = 100;
/// Most bytes a stream's `metadata` object may take as JSON.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StreamSettings {
    /// A factory holds substreams `strm(args)`; a plain stream holds events itself.
    #[serde(default)]
    pub factory: bool,
    /// The owner's description of the stream (API §13): any JSON object, answered
    /// with every read of the stream (`X-Stream-Metadata`) and in listings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
    /// What anyone may do without credentials.
    #[serde(default)]
    pub public: Public,
    /// Appends allowed per second for each (sub)stream; `None`: no limit.
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    /// Appends refused by their Referer or their substream's args.
    #[serde(default)]
    pub blocklist: Blocklist,
    /// What the keys of account `bob` may do with the substreams `strm(bob)`.
    #[serde(default)]
    pub account_substreams: AccountSubstreams,
    /// A factory's secret for HMAC tokens granting one substream (base64url, 32
    /// random bytes unless the owner sets one); generated when the factory is made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hmac_secret: Option<String>,
    /// Hosts (`api.example.com`, or `host:port` for one port only) that reducers of
    /// the stream may call with `request()`; none by default.
    #[serde(default)]
    pub request_hosts: Vec<String>,
    /// Events of a (sub)stream between two snapshots of each reducer's state, for
    /// `?at=` reads (API §14); 0: none.
    #[serde(default = "default_snapshot_every")]
    pub snapshot_every: u64,
}

fn default_snapshot_every() -> u64 {
    DEFAULT_SNAPSHOT_EVERY
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            factory: false,
            metadata: None,
            public: Public::default(),
            rate_limit: None,
            blocklist: Blocklist::default(),
            account_substreams: AccountSubstreams::default(),
            hmac_secret: None,
            request_hosts: Vec::new(),
            snapshot_every: DEFAULT_SNAPSHOT_EVERY,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Public {
    #[serde(default)]
    pub read: bool,
    #[serde(default)]
    pub write: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimit {
    pub per_second: u64,
    /// Appends allowed at once after a quiet period; defaults to `perSecond`.
    pub burst: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Blocklist {
    /// Referer globs (`*` matches any run of characters).
    #[serde(default)]
    pub referers: Vec<String>,
    /// Factory argument lists; a string may hold `*` globs, as in `sub=`.
    #[serde(default)]
    pub args: Vec<Vec<Value>>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccountSubstreams {
    #[default]
    None,
    Read,
    Write,
    Readwrite,
}

impl AccountSubstreams {
    pub fn reads(self) -> bool {
        matches!(self, Self::Read | Self::Readwrite)
    }

    pub fn writes(self) -> bool {
        matches!(self, Self::Write | Self::Readwrite)
    }
}

impl StreamSettings {
    /// Reads the stored document; the `factory` column is the authority for that field.
    pub fn from_stored(json: &str, factory: bool) -> Self {
        let mut s: Self = serde_json::from_str(json).unwrap_or_default();
        s.factory = factory;
        s
    }

    pub fn to_stored(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }

    /// The settings without the HMAC secret, for account events and anyone but the
    /// owner.
    pub fn without_secret(&self) -> Self {
        Self {
            hmac_secret: None,
            ..self.clone()
        }
    }

    /// Gives a factory its HMAC secret: `previous` when it had one, else a new random
    /// one; a plain stream has none.
    pub fn with_secret(mut self, previous: Option<&str>) -> Self {
        if !self.factory {
            self.hmac_secret = None;
        } else if self.hmac_secret.is_none() {
            self.hmac_secret = Some(match previous {
                Some(p) => p.to_owned(),
                None => new_secret(),
            });
        }
        self
    }

    /// The HMAC secret's bytes.
    pub fn secret_bytes(&self) -> Option<Vec<u8>> {
        let s = self.hmac_secret.as_deref()?;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s.trim_end_matches('='))
            .ok()
    }

    /// Applies `fields` over these settings, refusing unknown fields and wrong types
    /// with a message naming the field.
    pub fn merged(&self, fields: Map<String, Value>) -> Result<Self> {
        let mut doc = match serde_json::to_value(self) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        };
        for (k, v) in fields {
            if !FIELDS.contains(&k.as_str()) {
                return Err(EngineError::invalid(format!(
                    "settings field \"{k}\" is not supported (known fields: {})",
                    FIELDS.join(", ")
                ))
                .with("field", k));
            }
            if k == "rateLimit"
                && let Value::Object(m) = &v
                && !m.contains_key("burst")
                && let Some(per_second) = m.get("perSecond")
            {
                let mut m = m.clone();
                m.insert("burst".into(), per_second.clone());
                doc.insert(k, Value::Object(m));
                continue;
            }
            doc.insert(k, v);
        }
        // null returns a field to its default (no rate limit, a new HMAC secret...)
        doc.retain(|_, v| !v.is_null());
        for (k, v) in &doc {
            check_field(k, v)?;
        }
        serde_json::from_value(Value::Object(doc))
            .map_err(|e| EngineError::invalid(format!("settings are not valid: {e}")))
    }
}

/// A new HMAC secret: 32 bytes from the operating system, base64url.
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    if getrandom::fill(&mut bytes).is_err() {
        // never expected; two v4 UUIDs come from the same source through another path
        bytes[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        bytes[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn bad(field: &str, v: &Value, why: String) -> EngineError {
    EngineError::invalid(why)
        .with("field", field)
        .with("value", v.clone())
}

/// Checks one field's value; `field` is its name in the document.
fn check_field(field: &str, v: &Value) -> Result<()> {
    match field {
        "factory" if !v.is_boolean() => Err(bad(
            field,
            v,
            format!("settings field \"factory\" must be a boolean, not {v}"),
        )),
        "metadata" => check_metadata(field, "settings field \"metadata\"", v).map(drop),
        "public" => check_public(v),
        "rateLimit" => check_rate(v),
        "blocklist" => check_blocklist(v),
        "accountSubstreams" => match v.as_str() {
            Some("none" | "read" | "write" | "readwrite") => Ok(()),
            _ => Err(bad(
                field,
                v,
                format!(
                    "settings field \"accountSubstreams\" must be \"none\", \"read\", \"write\" \
                     or \"readwrite\", not {v}"
                ),
            )),
        },
        "hmacSecret" => check_secret(v),
        "requestHosts" => check_hosts(v),
        "snapshotEvery" => match v.as_u64() {
            Some(n) if n == 0 || (MIN_SNAPSHOT_EVERY..=1_000_000_000).contains(&n) => Ok(()),
            _ => Err(bad(
                field,
                v,
                format!(
                    "settings field \"snapshotEvery\" must be 0 (no snapshots) or a whole \
                     number of events from {MIN_SNAPSHOT_EVERY} to 1000000000, not {v}"
                ),
            )),
        },
        _ => Ok(()),
    }
}

/// A stream's metadata: a JSON object of at most [`MAX_METADATA_BYTES`]. `field` is
/// where it came from (the settings field, the header) and `label` how errors name it.
fn check_metadata<'v>(field: &str, label: &str, v: &'v Value) -> Result<&'v Map<String, Value>> {
    let Some(m) = v.as_object() else {
        let shown: String = v.to_string().chars().take(200).collect();
        return Err(
            EngineError::invalid(format!("{label} must be a JSON object, not {shown}"))
                .with("field", field),
        );
    };
    // as the header carries it: characters past ASCII escaped
    let len = crate::json::ascii_json(&v.to_string()).len();
    if len > MAX_METADATA_BYTES {
        return Err(EngineError::invalid(format!(
            "{label} is {len} bytes of JSON (with characters past ASCII as \\u escapes, \
             as headers carry them); at most {MAX_METADATA_BYTES} are allowed"
        ))
        .with("field", field));
    }
    Ok(m)
}

/// The metadata a `X-Stream-Metadata` header gives a stream it creates.
pub fn metadata_header(raw: &[u8]) -> Result<Map<String, Value>> {
    const FIELD: &str = "X-Stream-Metadata";
    let shown = || String::from_utf8_lossy(&raw[..raw.len().min(200)]).into_owned();
    let v: Value = serde_json::from_slice(raw).map_err(|e| {
        EngineError::invalid(format!("header {FIELD} is not JSON ({e}): {}", shown()))
            .with("field", FIELD)
            .with("value", shown())
    })?;
    check_metadata(FIELD, "header X-Stream-Metadata", &v).cloned()
}

fn check_public(v: &Value) -> Result<()> {
    let Some(m) = v.as_object() else {
        return Err(bad(
            "public",
            v,
            format!(
                "settings field \"public\" must be an object such as {{\"read\": true, \"write\": false}}, not {v}"
            ),
        ));
    };
    for (k, x) in m {
        if k != "read" && k != "write" {
            return Err(bad(
                "public",
                v,
                format!("settings field \"public\" has no field \"{k}\" (it has read and write)"),
            ));
        }
        if !x.is_boolean() {
            return Err(bad(
                &format!("public.{k}"),
                x,
                format!("settings field \"public.{k}\" must be a boolean, not {x}"),
            ));
        }
    }
    Ok(())
}

fn check_rate(v: &Value) -> Result<()> {
    let Some(m) = v.as_object() else {
        return Err(bad(
            "rateLimit",
            v,
            format!(
                "settings field \"rateLimit\" must be an object such as {{\"perSecond\": 10, \
                 \"burst\": 20}}, or null for no limit, not {v}"
            ),
        ));
    };
    for (k, x) in m {
        if k != "perSecond" && k != "burst" {
            return Err(bad(
                "rateLimit",
                v,
                format!(
                    "settings field \"rateLimit\" has no field \"{k}\" (it has perSecond and burst)"
                ),
            ));
        }
        if !x.as_u64().is_some_and(|n| (1..=MAX_RATE).contains(&n)) {
            return Err(bad(
                &format!("rateLimit.{k}"),
                x,
                format!(
                    "settings field \"rateLimit.{k}\" must be a whole number from 1 to {MAX_RATE}, \
                     not {x}"
                ),
            ));
        }
    }
    if !m.contains_key("perSecond") {
        return Err(bad(
            "rateLimit.perSecond",
            v,
            "settings field \"rateLimit\" needs \"perSecond\"".into(),
        ));
    }
    Ok(())
}

fn check_blocklist(v: &Value) -> Result<()> {
    let Some(m) = v.as_object() else {
        return Err(bad(
            "blocklist",
            v,
            format!(
                "settings field \"blocklist\" must be an object such as {{\"referers\": \
                 [\"https://spam.example/*\"], \"args\": [[\"bot-*\"]]}}, not {v}"
            ),
        ));
    };
    for (k, x) in m {
        let field = format!("blocklist.{k}");
        let Some(items) = x.as_array() else {
            return Err(bad(
                &field,
                x,
                format!("settings field \"{field}\" must be an array, not {x}"),
            ));
        };
        if items.len() > MAX_BLOCKLIST {
            return Err(bad(
                &field,
                x,
                format!(
                    "settings field \"{field}\" lists {} entries; at most {MAX_BLOCKLIST} are allowed",
                    items.len()
                ),
            ));
        }
        for (i, item) in items.iter().enumerate() {
            let ok = match k.as_str() {
                "referers" => item
                    .as_str()
                    .is_some_and(|s| !s.is_empty() && s.len() <= 2048),
                "args" => item.as_array().is_some_and(|a| {
                    !a.is_empty() && a.iter().all(|x| !x.is_array() && !x.is_object())
                }),
                _ => {
                    return Err(bad(
                        "blocklist",
                        v,
                        format!(
                            "settings field \"blocklist\" has no field \"{k}\" (it has referers \
                             and args)"
                        ),
                    ));
                }
            };
            if !ok {
                let want = if k == "referers" {
                    "a Referer glob such as \"https://spam.example/*\""
                } else {
                    "an argument list such as [\"bot-*\", 1] (strings, numbers, booleans, null)"
                };
                return Err(bad(
                    &format!("{field}[{i}]"),
                    item,
                    format!("settings field \"{field}\" item {i} ({item}) is not {want}"),
                ));
            }
        }
    }
    Ok(())
}

fn check_secret(v: &Value) -> Result<()> {
    let decoded = v.as_str().and_then(|s| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s.trim_end_matches('='))
            .ok()
    });
    match decoded {
        Some(b) if b.len() >= MIN_SECRET_BYTES => Ok(()),
        _ => Err(bad(
            "hmacSecret",
            v,
            format!(
                "settings field \"hmacSecret\" must be base64url text of at least \
                 {MIN_SECRET_BYTES} bytes (or null for a new random one), not {v}"
            ),
        )),
    }
}

/// `requestHosts` is an array of host names, each optionally with a port.
fn check_hosts(v: &Value) -> Result<()> {
    let Some(hosts) = v.as_array() else {
        return Err(bad(
            "requestHosts",
            v,
            format!("settings field \"requestHosts\" must be an array of host names, not {v}"),
        ));
    };
    if hosts.len() > MAX_REQUEST_HOSTS {
        return Err(bad(
            "requestHosts",
            v,
            format!(
                "settings field \"requestHosts\" lists {} hosts; at most {MAX_REQUEST_HOSTS} are allowed",
                hosts.len()
            ),
        ));
    }
    for (i, h) in hosts.iter().enumerate() {
        let ok = h.as_str().is_some_and(|h| {
            !h.is_empty()
                && h.len() <= 253
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        });
        if !ok {
            return Err(bad(
                "requestHosts",
                v,
                format!(
                    "settings field \"requestHosts\" item {i} ({h}) is not a host name such as \
                     \"api.example.com\" or \"127.0.0.1:8080\""
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn merge(base: &StreamSettings, v: Value) -> Result<StreamSettings> {
        let Value::Object(m) = v else { panic!() };
        base.merged(m)
    }

    #[test]
    fn access_fields_round_trip() {
        let s = merge(
            &StreamSettings::default(),
            json!({"public": {"read": true}, "rateLimit": {"perSecond": 5},
                   "blocklist": {"referers": ["https://x/*"], "args": [["bot-*", 1]]},
                   "accountSubstreams": "readwrite"}),
        )
        .unwrap();
        assert!(s.public.read && !s.public.write);
        assert_eq!(
            s.rate_limit,
            Some(RateLimit {
                per_second: 5,
                burst: 5
            })
        );
        assert!(s.account_substreams.reads() && s.account_substreams.writes());
        let back = StreamSettings::from_stored(&s.to_stored(), false);
        assert_eq!(back, s);
        // null removes the limit
        let s = merge(&s, json!({"rateLimit": null})).unwrap();
        assert_eq!(s.rate_limit, None);
    }

    #[test]
    fn bad_fields_are_named() {
        let cases = [
            (json!({"public": {"read": "yes"}}), "public.read"),
            (json!({"public": true}), "public"),
            (
                json!({"rateLimit": {"perSecond": 0}}),
                "rateLimit.perSecond",
            ),
            (json!({"rateLimit": {"burst": 3}}), "rateLimit.perSecond"),
            (
                json!({"blocklist": {"referers": [1]}}),
                "blocklist.referers[0]",
            ),
            (json!({"blocklist": {"args": ["x"]}}), "blocklist.args[0]"),
            (json!({"accountSubstreams": "all"}), "accountSubstreams"),
            (json!({"hmacSecret": "short"}), "hmacSecret"),
        ];
        for (doc, field) in cases {
            let e = merge(&StreamSettings::default(), doc.clone()).unwrap_err();
            assert_eq!(e.details["field"], field, "{doc}: {}", e.message);
        }
    }

    #[test]
    fn factories_keep_their_secret() {
        let s = StreamSettings {
            factory: true,
            ..Default::default()
        }
        .with_secret(None);
        let secret = s.hmac_secret.clone().unwrap();
        assert_eq!(s.secret_bytes().unwrap().len(), 32);
        let replaced = StreamSettings {
            factory: true,
            ..Default::default()
        }
        .with_secret(Some(&secret));
        assert_eq!(replaced.hmac_secret, Some(secret));
        let plain = StreamSettings::default().with_secret(Some("abc"));
        assert_eq!(plain.hmac_secret, None);
    }
}
