//! Enforcing `metadata.pattern`, which jtd ignores (metadata carries no rules in RFC
//! 8927): a walk of the schema document and the event data together that checks every
//! string a `type: "string"` schema with a pattern covers. The walk follows refs as jtd
//! does, so it also finds where a ref chain goes deeper than [`MAX_REF_DEPTH`].

use std::collections::HashMap;

use regex::Regex;
use serde_json::{Map, Value};

use super::text::{cut, field, kept, push_token, show};
use super::{MAX_REF_DEPTH, Violation};

/// Longest pattern a message quotes whole.
const SHOWN_PATTERN_CHARS: usize = 100;

/// One walk over one event's data.
pub(super) struct Walk<'d> {
    doc: &'d Value,
    patterns: &'d HashMap<String, Regex>,
    /// How many more violations the walk may report.
    budget: usize,
    /// The pattern violations found, in document order.
    pub(super) found: Vec<Violation>,
    /// Where the walk stopped because refs nested deeper than [`MAX_REF_DEPTH`].
    pub(super) too_deep: Option<Violation>,
}

impl<'d> Walk<'d> {
    pub(super) fn new(doc: &'d Value, patterns: &'d HashMap<String, Regex>, budget: usize) -> Self {
        Self {
            doc,
            patterns,
            budget,
            found: Vec::new(),
            too_deep: None,
        }
    }

    /// Walks `data` against the whole schema.
    pub(super) fn run(mut self, data: &Value) -> Self {
        if self.budget > 0 {
            self.schema(self.doc, &mut String::new(), data, &mut String::new(), 0);
        }
        self
    }

    /// Walks the instance `value` at `ipath` against the schema `s` at `spath`, having
    /// followed `refs` refs to get there. Returns false when the walk must stop.
    fn schema(
        &mut self,
        s: &'d Value,
        spath: &mut String,
        value: &Value,
        ipath: &mut String,
        refs: usize,
    ) -> bool {
        let Some(s) = s.as_object() else {
            return true;
        };
        if value.is_null() && s.get("nullable") == Some(&Value::Bool(true)) {
            return true;
        }
        if let Some(name) = s.get("ref").and_then(Value::as_str) {
            return self.reference(name, spath, value, ipath, refs);
        }
        if let Some(regex) = self.patterns.get(spath.as_str())
            && let Some(text) = value.as_str()
            && !regex.is_match(text)
        {
            self.found.push(Violation {
                instance_path: ipath.clone(),
                schema_path: format!("{spath}/metadata/pattern"),
                rule: "pattern".into(),
                value: kept(value),
                message: format!(
                    "{} is {}, which does not match the pattern {}",
                    field(ipath),
                    show(value),
                    cut(regex.as_str(), SHOWN_PATTERN_CHARS)
                ),
            });
            return self.found.len() < self.budget;
        }
        match value {
            Value::Array(items) => match s.get("elements") {
                Some(elements) => items.iter().enumerate().all(|(i, item)| {
                    let token = i.to_string();
                    self.child(elements, spath, &["elements"], item, ipath, &token, refs)
                }),
                None => true,
            },
            Value::Object(object) => self.object(s, spath, object, value, ipath, refs),
            _ => true,
        }
    }

    fn object(
        &mut self,
        s: &'d Map<String, Value>,
        spath: &mut String,
        object: &Map<String, Value>,
        value: &Value,
        ipath: &mut String,
        refs: usize,
    ) -> bool {
        for keyword in ["properties", "optionalProperties"] {
            let Some(Value::Object(properties)) = s.get(keyword) else {
                continue;
            };
            for (name, sub) in properties {
                if let Some(item) = object.get(name)
                    && !self.child(sub, spath, &[keyword, name], item, ipath, name, refs)
                {
                    return false;
                }
            }
        }
        if let Some(values) = s.get("values") {
            for (name, item) in object {
                if !self.child(values, spath, &["values"], item, ipath, name, refs) {
                    return false;
                }
            }
        }
        if let Some(tag) = s.get("discriminator").and_then(Value::as_str)
            && let Some(tag) = object.get(tag).and_then(Value::as_str)
            && let Some(variant) = s.get("mapping").and_then(|m| m.get(tag))
        {
            let len = spath.len();
            spath.push_str("/mapping/");
            push_token(spath, tag);
            let go_on = self.schema(variant, spath, value, ipath, refs);
            spath.truncate(len);
            return go_on;
        }
        true
    }

    /// Walks `value` (at `ipath` plus `itoken`) against the schema `s` at `spath` plus
    /// `stokens`.
    #[allow(clippy::too_many_arguments)]
    fn child(
        &mut self,
        s: &'d Value,
        spath: &mut String,
        stokens: &[&str],
        value: &Value,
        ipath: &mut String,
        itoken: &str,
        refs: usize,
    ) -> bool {
        let (slen, ilen) = (spath.len(), ipath.len());
        for token in stokens {
            spath.push('/');
            push_token(spath, token);
        }
        ipath.push('/');
        push_token(ipath, itoken);
        let go_on = self.schema(s, spath, value, ipath, refs);
        spath.truncate(slen);
        ipath.truncate(ilen);
        go_on
    }

    /// Follows a ref, unless that makes more than [`MAX_REF_DEPTH`] in a chain.
    fn reference(
        &mut self,
        name: &str,
        spath: &str,
        value: &Value,
        ipath: &mut String,
        refs: usize,
    ) -> bool {
        if refs >= MAX_REF_DEPTH {
            self.too_deep = Some(too_deep(ipath, &format!("{spath}/ref")));
            return false;
        }
        let Some(target) = self.doc.get("definitions").and_then(|d| d.get(name)) else {
            return true; // refused when the schema was compiled
        };
        let mut target_path = String::from("/definitions/");
        push_token(&mut target_path, name);
        self.schema(target, &mut target_path, value, ipath, refs + 1)
    }
}

/// The one violation of an event whose check follows refs deeper than [`MAX_REF_DEPTH`].
pub(super) fn too_deep(instance_path: &str, schema_path: &str) -> Violation {
    Violation {
        instance_path: instance_path.to_owned(),
        schema_path: schema_path.to_owned(),
        rule: "ref".into(),
        value: None,
        message: format!(
            "{} cannot be checked: the schema's refs nest more than {MAX_REF_DEPTH} deep there",
            field(instance_path)
        ),
    }
}
