//! Event types: JSON Type Definition (RFC 8927) schemas, compiled once and then used to
//! validate each event's JSON data and to generate a TypeScript module for the type.
//!
//! - `check`: the schema document against RFC 8927, with messages that say where, and
//!   the `metadata.pattern` regexes (an eddy extension jtd ignores).
//! - `violations`: jtd's error indicators turned into sentences naming field, value
//!   and rule.
//! - `pattern`: the walk that enforces `metadata.pattern` on the data.
//! - `typescript`: the generated TypeScript.
//! - `text`: how pointers, values and lists read in messages.

mod check;
mod pattern;
mod text;
mod typescript;
mod violations;

#[cfg(test)]
mod compile_tests;
#[cfg(test)]
mod pattern_tests;
#[cfg(test)]
mod validate_tests;

use std::collections::HashMap;

use regex::Regex;
use serde_json::Value;

use crate::{EngineError, Result};

/// Largest number of errors one validation reports.
pub const MAX_ERRORS: usize = 20;
/// Deepest chain of `ref`s followed while validating.
pub const MAX_REF_DEPTH: usize = 32;

/// A compiled event type: the JTD schema as given plus what validation needs.
#[derive(Debug, Clone)]
pub struct EventTypeDef {
    /// The document as given: what GET returns, and where messages read each rule.
    doc: Value,
    /// jtd's form of the document, which checks the structure of the data.
    schema: jtd::Schema,
    /// The compiled `metadata.pattern`s, by the JSON Pointer of the schema carrying each.
    patterns: HashMap<String, Regex>,
}

impl EventTypeDef {
    /// Parses and checks a schema document. Errors are [`EngineError::invalid`] naming
    /// what is wrong and where (`schema is not valid JTD: "properties/age/type": ...`),
    /// with the details `field: "schema"` and `schemaPath` (a JSON Pointer).
    pub fn compile(doc: &Value) -> Result<Self> {
        let patterns = check::check(doc).map_err(check::SchemaError::into_engine)?;
        // The check above refuses what jtd would; jtd's own checks stay as a backstop,
        // since its validation panics on a ref to a missing definition.
        let not_jtd = |e: &dyn std::fmt::Display| {
            EngineError::invalid(format!("schema is not valid JTD: {e}")).with("field", "schema")
        };
        let serde_schema: jtd::SerdeSchema =
            serde_json::from_value(doc.clone()).map_err(|e| not_jtd(&e))?;
        let schema = jtd::Schema::from_serde_schema(serde_schema).map_err(|e| not_jtd(&e))?;
        schema.validate().map_err(|e| not_jtd(&e))?;
        if let Some(cycle) = ref_cycle(doc) {
            return Err(EngineError::invalid(format!(
                "schema definitions {} only refer to each other, so no value can match them \
                 (give one of them a form of its own, or \"nullable\": true)",
                cycle.join(" → ")
            ))
            .with("field", "schema")
            .with("schemaPath", format!("/definitions/{}", cycle[0])));
        }
        Ok(Self {
            doc: doc.clone(),
            schema,
            patterns,
        })
    }

    /// The schema document as given (what `GET .../:type.json` returns).
    pub fn schema(&self) -> &Value {
        &self.doc
    }

    /// Validates an event's JSON data; empty when valid, at most [`MAX_ERRORS`] entries:
    /// jtd's findings first, then the `metadata.pattern` mismatches. A ref chain deeper
    /// than [`MAX_REF_DEPTH`] is one violation saying so.
    pub fn validate(&self, data: &Value) -> Vec<Violation> {
        // jtd counts the schema paths on its stack (the root's too) and refuses the ref
        // that would reach max_depth: + 2 lets exactly MAX_REF_DEPTH refs nest.
        let options = jtd::ValidateOptions::new()
            .with_max_depth(MAX_REF_DEPTH + 2)
            .with_max_errors(MAX_ERRORS);
        match jtd::validate(&self.schema, data, options) {
            Ok(indicators) => {
                let mut found: Vec<Violation> = indicators
                    .iter()
                    .map(|i| violations::describe(&self.doc, data, i))
                    .collect();
                if !self.patterns.is_empty() && found.len() < MAX_ERRORS {
                    let budget = MAX_ERRORS - found.len();
                    let walk = pattern::Walk::new(&self.doc, &self.patterns, budget).run(data);
                    found.extend(walk.found);
                }
                found
            }
            Err(jtd::ValidateError::MaxDepthExceeded) => {
                let no_patterns = HashMap::new();
                let walk = pattern::Walk::new(&self.doc, &no_patterns, 1).run(data);
                vec![walk.too_deep.unwrap_or_else(|| pattern::too_deep("", ""))]
            }
        }
    }

    /// A TypeScript module for this type: `export interface {Name} {...}` (or
    /// `export type {Name} = ...` when the root is not a properties form) plus one
    /// exported type per definition.
    pub fn typescript(&self, type_name: &str) -> String {
        typescript::module(&self.doc, type_name)
    }
}

/// One failed rule, as the 400 body's `errors[]` shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Violation {
    /// JSON Pointer (RFC 6901) into the event data: "" for the root, "/url",
    /// "/items/0/name".
    pub instance_path: String,
    /// JSON Pointer into the schema of the rule that failed: "/properties/url/type",
    /// "/properties/url/metadata/pattern", "/discriminator", "/mapping", "" (an
    /// additional property of the root). Inside a ref it starts at the definition
    /// ("/definitions/item/type"), as RFC 8927 reports it.
    pub schema_path: String,
    /// A short rule name: "type", "enum", "required", "additionalProperties",
    /// "elements", "values", "properties", "discriminator", "mapping", "pattern", "ref".
    pub rule: String,
    /// The offending value (absent for a missing property; long strings are cut to 200
    /// characters, and large arrays and objects left out).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    /// One sentence naming the field, the value and the rule.
    pub message: String,
}

/// The 400 for an event of type `event_type` that fails its schema: the first
/// violation's message in the error, all of them in the `errors` detail.
pub fn violation_error(event_type: &str, violations: &[Violation]) -> EngineError {
    let mut message = format!(
        "event data does not match the schema of type {}",
        text::quoted(event_type)
    );
    if let Some(first) = violations.first() {
        message.push_str(": ");
        message.push_str(&first.message);
        match violations.len() {
            1 => {}
            2 => message.push_str(" (and 1 more error)"),
            n if n >= MAX_ERRORS => message.push_str(&format!(
                " (and more errors: the first {MAX_ERRORS} are listed)"
            )),
            n => message.push_str(&format!(" (and {} more errors)", n - 1)),
        }
    }
    let errors = serde_json::to_value(violations).unwrap_or_default();
    EngineError::invalid(message)
        .with("errors", errors)
        .with("eventType", event_type)
}

/// A cycle of definitions that are each nothing but a ref to the next (`a` → `b` →
/// `a`), which no value can ever match, named from where it starts.
fn ref_cycle(doc: &Value) -> Option<Vec<String>> {
    let definitions = doc.get("definitions")?.as_object()?;
    // the definition a pure ref (no form of its own, not nullable) points to
    let next = |name: &str| -> Option<String> {
        let def = definitions.get(name)?.as_object()?;
        let pure = def
            .keys()
            .all(|k| k == "ref" || k == "metadata" || (k == "nullable" && def[k] == false));
        pure.then(|| def.get("ref")?.as_str().map(str::to_owned))?
    };
    let mut names: Vec<&String> = definitions.keys().collect();
    names.sort();
    for start in names {
        let mut path = vec![start.clone()];
        let mut at = start.clone();
        while let Some(to) = next(&at) {
            if let Some(i) = path.iter().position(|p| *p == to) {
                let mut cycle = path.split_off(i);
                cycle.push(to);
                return Some(cycle);
            }
            path.push(to.clone());
            at = to;
        }
    }
    None
}
