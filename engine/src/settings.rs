//! Stream settings (API §9): the document behind `GET/PUT/PATCH /{acct}/{strm}/settings`.
//!
//! Only `factory` exists so far; the access, rate-limit and blocklist fields arrive
//! with the access-control work, and until then a field this server does not know is
//! refused rather than silently stored.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{EngineError, Result};

/// The settings fields this server knows.
pub const FIELDS: [&str; 1] = ["factory"];

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StreamSettings {
    /// A factory holds substreams `strm(args)`; a plain stream holds events itself.
    #[serde(default)]
    pub factory: bool,
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
            let ok = match k.as_str() {
                "factory" => v.is_boolean(),
                _ => true,
            };
            if !ok {
                return Err(EngineError::invalid(format!(
                    "settings field \"{k}\" must be a boolean, not {v}"
                ))
                .with("field", k.as_str()));
            }
        }
        serde_json::from_value(Value::Object(doc))
            .map_err(|e| EngineError::invalid(format!("settings are not valid: {e}")))
    }
}
