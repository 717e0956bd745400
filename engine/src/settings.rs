//! Stream settings (API §9): the document behind `GET/PUT/PATCH /{acct}/{strm}/settings`.
//!
//! `factory` and `requestHosts` exist so far; the access, rate-limit and blocklist
//! fields arrive with the access-control work, and until then a field this server does
//! not know is refused rather than silently stored.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{EngineError, Result};

/// The settings fields this server knows.
pub const FIELDS: [&str; 2] = ["factory", "requestHosts"];

/// Most hosts `requestHosts` may list.
pub const MAX_REQUEST_HOSTS: usize = 100;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StreamSettings {
    /// A factory holds substreams `strm(args)`; a plain stream holds events itself.
    #[serde(default)]
    pub factory: bool,
    /// Hosts (`api.example.com`, or `host:port` for one port only) that reducers of
    /// the stream may call with `request()`; none by default.
    #[serde(default)]
    pub request_hosts: Vec<String>,
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
            doc.insert(k, v);
        }
        for (k, v) in &doc {
            match k.as_str() {
                "factory" if !v.is_boolean() => {
                    return Err(EngineError::invalid(format!(
                        "settings field \"{k}\" must be a boolean, not {v}"
                    ))
                    .with("field", k.as_str()));
                }
                "requestHosts" => check_hosts(v)?,
                _ => {}
            }
        }
        serde_json::from_value(Value::Object(doc))
            .map_err(|e| EngineError::invalid(format!("settings are not valid: {e}")))
    }
}

/// `requestHosts` is an array of host names, each optionally with a port.
fn check_hosts(v: &Value) -> Result<()> {
    let bad = |why: String| {
        Err(EngineError::invalid(why)
            .with("field", "requestHosts")
            .with("value", v.clone()))
    };
    let Some(hosts) = v.as_array() else {
        return bad(format!(
            "settings field \"requestHosts\" must be an array of host names, not {v}"
        ));
    };
    if hosts.len() > MAX_REQUEST_HOSTS {
        return bad(format!(
            "settings field \"requestHosts\" lists {} hosts; at most {MAX_REQUEST_HOSTS} are allowed",
            hosts.len()
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
            return bad(format!(
                "settings field \"requestHosts\" item {i} ({h}) is not a host name such as \
                 \"api.example.com\" or \"127.0.0.1:8080\""
            ));
        }
    }
    Ok(())
}
