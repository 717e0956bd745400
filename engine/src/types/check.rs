//! Checking a schema document against RFC 8927's rules before jtd sees it, so a refusal
//! names the keyword and where it is, and compiling its `metadata.pattern` regexes.

use std::collections::HashMap;

use regex::{Regex, RegexBuilder};
use serde_json::{Map, Value};

use super::text::{TYPES, one_of, pointer, quoted, show};

/// Largest compiled size of one `metadata.pattern`, so a pattern cannot take much memory.
pub(super) const PATTERN_SIZE_LIMIT: usize = 1 << 20;
/// Deepest nesting of schemas in one document (JSON parsing caps it near this anyway).
pub(super) const MAX_SCHEMA_DEPTH: usize = 64;

/// The keywords of RFC 8927.
const KEYWORDS: [&str; 13] = [
    "definitions",
    "metadata",
    "nullable",
    "ref",
    "type",
    "enum",
    "elements",
    "properties",
    "optionalProperties",
    "additionalProperties",
    "values",
    "discriminator",
    "mapping",
];

/// The keywords that decide a schema's form, with the form each belongs to.
const FORM_KEYWORDS: [(&str, &str); 10] = [
    ("ref", "ref"),
    ("type", "type"),
    ("enum", "enum"),
    ("elements", "elements"),
    ("properties", "properties"),
    ("optionalProperties", "properties"),
    ("additionalProperties", "properties"),
    ("values", "values"),
    ("discriminator", "discriminator"),
    ("mapping", "discriminator"),
];

/// A schema refused: where (pointer tokens into the document) and why.
#[derive(Debug)]
pub(super) struct SchemaError {
    pub(super) path: Vec<String>,
    pub(super) message: String,
    /// Whether RFC 8927 refuses it (otherwise one of eddy's rules does: patterns, depth).
    pub(super) jtd: bool,
}

impl SchemaError {
    /// The 400: `schema is not valid JTD: "properties/age/type": ...`.
    pub(super) fn into_engine(self) -> crate::EngineError {
        let what = if self.jtd {
            "schema is not valid JTD"
        } else {
            "schema is not valid"
        };
        let at = pointer(&self.path);
        let place = match at.strip_prefix('/') {
            None => "at the root".to_owned(),
            Some(rest) => quoted(rest),
        };
        crate::EngineError::invalid(format!("{what}: {place}: {}", self.message))
            .with("field", "schema")
            .with("schemaPath", at)
    }
}

type Checked<T = ()> = Result<T, SchemaError>;

/// Checks a whole schema document; returns its patterns compiled, keyed by the JSON
/// Pointer of the schema that carries each.
pub(super) fn check(doc: &Value) -> Checked<HashMap<String, Regex>> {
    let definitions = match doc.get("definitions") {
        None => None,
        Some(Value::Object(d)) => Some(d),
        Some(other) => {
            return Err(SchemaError {
                path: vec!["definitions".into()],
                message: format!(
                    "definitions must be an object of schemas, not {}",
                    show(other)
                ),
                jtd: true,
            });
        }
    };
    let mut checker = Checker {
        definitions,
        path: Vec::new(),
        patterns: HashMap::new(),
    };
    checker.schema(doc, 0)?;
    Ok(checker.patterns)
}

struct Checker<'d> {
    /// The root's definitions, which every `ref` names.
    definitions: Option<&'d Map<String, Value>>,
    /// Where the check is, as unescaped pointer tokens.
    path: Vec<String>,
    patterns: HashMap<String, Regex>,
}

impl<'d> Checker<'d> {
    /// An error at the current path plus `tokens`.
    fn fail<T>(&self, tokens: &[&str], message: String) -> Checked<T> {
        self.fail_as(tokens, message, true)
    }

    fn fail_as<T>(&self, tokens: &[&str], message: String, jtd: bool) -> Checked<T> {
        let mut path = self.path.clone();
        path.extend(tokens.iter().map(|t| (*t).to_owned()));
        Err(SchemaError { path, message, jtd })
    }

    /// Checks the schema at `tokens` below the current path.
    fn child(&mut self, tokens: &[&str], node: &'d Value, depth: usize) -> Checked {
        let len = self.path.len();
        self.path.extend(tokens.iter().map(|t| (*t).to_owned()));
        let checked = self.schema(node, depth + 1);
        self.path.truncate(len);
        checked
    }

    fn schema(&mut self, node: &'d Value, depth: usize) -> Checked {
        if depth > MAX_SCHEMA_DEPTH {
            let message = format!("schemas nest more than {MAX_SCHEMA_DEPTH} deep");
            return self.fail_as(&[], message, false);
        }
        let Value::Object(s) = node else {
            return self.fail(
                &[],
                format!("a schema must be a JSON object, not {}", show(node)),
            );
        };
        if let Some(k) = s.keys().find(|k| !KEYWORDS.contains(&k.as_str())) {
            let message = format!(
                "unknown keyword {} (JTD's keywords are {}; custom data goes in \"metadata\")",
                quoted(k),
                KEYWORDS.join(", ")
            );
            return self.fail(&[], message);
        }
        self.form(s)?;
        for (keyword, value) in s {
            self.keyword(s, keyword, value, depth)?;
        }
        self.pattern(s)
    }

    /// Refuses keywords of two forms together, and a form missing its partner keyword.
    fn form(&self, s: &Map<String, Value>) -> Checked {
        let present: Vec<(&str, &str)> = FORM_KEYWORDS
            .iter()
            .copied()
            .filter(|(k, _)| s.contains_key(*k))
            .collect();
        if let Some(&(first, form)) = present.first()
            && let Some(&(other, _)) = present.iter().find(|(_, f)| *f != form)
        {
            let message = format!(
                "{} and {} cannot be used together: a schema has one form (ref, type, enum, \
                 elements, properties, values or discriminator)",
                quoted(first),
                quoted(other)
            );
            return self.fail(&[], message);
        }
        let needs = |k: &str, partner: &str| {
            let message = format!("{} needs {partner} beside it", quoted(k));
            self.fail(&[k], message)
        };
        if s.contains_key("additionalProperties")
            && !s.contains_key("properties")
            && !s.contains_key("optionalProperties")
        {
            return needs(
                "additionalProperties",
                "\"properties\" or \"optionalProperties\"",
            );
        }
        match (s.contains_key("discriminator"), s.contains_key("mapping")) {
            (true, false) => needs("discriminator", "\"mapping\""),
            (false, true) => needs("mapping", "\"discriminator\""),
            _ => Ok(()),
        }
    }

    fn keyword(
        &mut self,
        s: &'d Map<String, Value>,
        keyword: &str,
        value: &'d Value,
        depth: usize,
    ) -> Checked {
        let bad = |what: &str| Err(format!("{keyword} must be {what}, not {}", show(value)));
        let checked: Result<(), String> = match (keyword, value) {
            ("definitions", _) if depth > 0 => Err(
                "definitions are allowed only at the root of a schema (refs name the root's)"
                    .into(),
            ),
            ("definitions" | "properties" | "optionalProperties" | "mapping", Value::Object(m)) => {
                for (name, sub) in m {
                    self.child(&[keyword, name], sub, depth)?;
                }
                if keyword == "optionalProperties" {
                    self.repeated_property(s, m)?;
                }
                if keyword == "mapping" {
                    self.mapping(s, m)?;
                }
                Ok(())
            }
            ("definitions" | "properties" | "optionalProperties" | "mapping", _) => {
                bad("an object of schemas")
            }
            ("elements" | "values", sub) => return self.child(&[keyword], sub, depth),
            ("metadata", Value::Object(_)) => Ok(()),
            ("metadata", _) => bad("an object"),
            ("nullable" | "additionalProperties", Value::Bool(_)) => Ok(()),
            ("nullable" | "additionalProperties", _) => bad("true or false"),
            ("discriminator", Value::String(_)) => Ok(()),
            ("discriminator", _) => bad("a string (the name of the tag property)"),
            ("ref", Value::String(name)) => self.reference(name),
            ("ref", _) => bad("a string (the name of a definition)"),
            ("type", Value::String(t)) if TYPES.contains(&t.as_str()) => Ok(()),
            ("type", Value::String(t)) => Err(format!(
                "{} is not a JTD type ({})",
                quoted(t),
                TYPES.join(", ")
            )),
            ("type", _) => bad(&format!(
                "a string naming a JTD type ({})",
                TYPES.join(", ")
            )),
            ("enum", Value::Array(values)) => return self.enumeration(values),
            ("enum", _) => bad("a non-empty array of strings"),
            _ => Ok(()),
        };
        checked.or_else(|message| self.fail(&[keyword], message))
    }

    fn reference(&self, name: &str) -> Result<(), String> {
        match self.definitions {
            Some(d) if d.contains_key(name) => Ok(()),
            Some(d) if !d.is_empty() => Err(format!(
                "ref {} names no definition (the definitions are {})",
                quoted(name),
                one_of(d.keys().map(String::as_str))
            )),
            _ => Err(format!(
                "ref {} names no definition (the schema has no definitions)",
                quoted(name)
            )),
        }
    }

    fn enumeration(&self, values: &[Value]) -> Checked {
        if values.is_empty() {
            return self.fail(&["enum"], "enum must list at least one string".into());
        }
        for (i, v) in values.iter().enumerate() {
            let at = i.to_string();
            let Value::String(s) = v else {
                let message = format!("enum values must be strings, not {}", show(v));
                return self.fail(&["enum", &at], message);
            };
            if values[..i].iter().any(|earlier| earlier == v) {
                let message = format!("enum lists {} twice", quoted(s));
                return self.fail(&["enum", &at], message);
            }
        }
        Ok(())
    }

    fn repeated_property(&self, s: &Map<String, Value>, optional: &Map<String, Value>) -> Checked {
        let Some(Value::Object(required)) = s.get("properties") else {
            return Ok(());
        };
        match optional.keys().find(|k| required.contains_key(*k)) {
            Some(k) => self.fail(
                &["optionalProperties", k],
                format!(
                    "property {} is in both properties and optionalProperties",
                    quoted(k)
                ),
            ),
            None => Ok(()),
        }
    }

    /// A mapping's schemas are of the properties form, not nullable, and leave the tag
    /// property to the discriminator.
    fn mapping(&self, s: &Map<String, Value>, mapping: &Map<String, Value>) -> Checked {
        let tag = s.get("discriminator").and_then(Value::as_str).unwrap_or("");
        for (name, variant) in mapping {
            let Some(v) = variant.as_object() else {
                continue; // refused by the schema check already
            };
            if !v.contains_key("properties") && !v.contains_key("optionalProperties") {
                let message = "a mapping's schemas must be of the properties form (with \
                               \"properties\" or \"optionalProperties\")"
                    .into();
                return self.fail(&["mapping", name], message);
            }
            if v.get("nullable") == Some(&Value::Bool(true)) {
                let message = "a mapping's schemas cannot be nullable".into();
                return self.fail(&["mapping", name, "nullable"], message);
            }
            for keyword in ["properties", "optionalProperties"] {
                if v.get(keyword).and_then(|p| p.get(tag)).is_some() {
                    let message = format!(
                        "the discriminator {} cannot be a property of a mapping's schema \
                         (the mapping sets it)",
                        quoted(tag)
                    );
                    return self.fail(&["mapping", name, keyword, tag], message);
                }
            }
        }
        Ok(())
    }

    /// Compiles the schema's `metadata.pattern`, which only a `type: "string"` may have.
    fn pattern(&mut self, s: &Map<String, Value>) -> Checked {
        let Some(pattern) = s.get("metadata").and_then(|m| m.get("pattern")) else {
            return Ok(());
        };
        let at = ["metadata", "pattern"];
        let Value::String(pattern) = pattern else {
            let message = format!(
                "metadata.pattern must be a string (a regex), not {}",
                show(pattern)
            );
            return self.fail_as(&at, message, false);
        };
        if s.get("type").and_then(Value::as_str) != Some("string") {
            let message = "metadata.pattern applies only to a schema with \"type\": \"string\"";
            return self.fail_as(&at, message.into(), false);
        }
        let compiled = RegexBuilder::new(pattern)
            .size_limit(PATTERN_SIZE_LIMIT)
            .build();
        match compiled {
            Ok(regex) => {
                self.patterns.insert(pointer(&self.path), regex);
                Ok(())
            }
            Err(e) => {
                let message = format!(
                    "{} is not a valid regex: {}",
                    quoted(pattern),
                    regex_error(&e)
                );
                self.fail_as(&at, message, false)
            }
        }
    }
}

/// The regex crate's error in one line: its last line (`error: unclosed group`) without
/// the diagram above it.
fn regex_error(e: &regex::Error) -> String {
    match e {
        regex::Error::CompiledTooBig(limit) => {
            format!("it compiles to more than the limit of {limit} bytes")
        }
        other => {
            let text = other.to_string();
            let last = text.lines().last().unwrap_or_default();
            last.strip_prefix("error: ").unwrap_or(last).to_owned()
        }
    }
}
