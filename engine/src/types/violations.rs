//! Turning jtd's error indicators (an instance path and a schema path) into
//! [`Violation`]s that name the field, the value and the rule, by reading the rule out of
//! the schema document and the value out of the event data.

use std::borrow::Cow;

use jtd::ValidationErrorIndicator;
use serde_json::{Map, Value};

use super::Violation;
use super::text::{field, kept, one_of, pointer, quoted, show, type_requirement};

type Schema = Map<String, Value>;

/// Where a jtd schema path ends in the document.
enum End<'s> {
    /// At a schema: the instance has a property this (properties form) schema lacks.
    Schema,
    /// At a keyword of a schema (`type`, `enum`, `elements`, `discriminator`...).
    Keyword(&'s Schema, String),
    /// At a property of `properties`: either the instance lacks that required property,
    /// or the property's own (properties form) schema has an additional property.
    Property(String, Option<&'s Schema>),
}

/// A jtd schema path followed through the document: where it ends, how many instance
/// tokens the schemas on the way consumed (one per property, element or value), and
/// whether it starts in a definition (a `ref` was followed, so the instance path has a
/// prefix the schema path does not show).
struct Walked<'s> {
    end: End<'s>,
    consumed: usize,
    in_definition: bool,
}

fn walk<'s>(doc: &'s Value, tokens: &[Cow<'_, str>]) -> Option<Walked<'s>> {
    let mut s = doc.as_object()?;
    let mut consumed = 0;
    let mut i = 0;
    while let Some(token) = tokens.get(i) {
        let keyword = token.as_ref();
        let next = tokens.get(i + 1).map(AsRef::as_ref);
        match (keyword, next) {
            ("properties", Some(name)) if i + 2 == tokens.len() => {
                let schema = s
                    .get(keyword)
                    .and_then(|p| p.get(name))
                    .and_then(Value::as_object);
                return Some(Walked {
                    end: End::Property(name.to_owned(), schema),
                    consumed,
                    in_definition: tokens[0] == "definitions",
                });
            }
            ("definitions" | "mapping" | "properties" | "optionalProperties", Some(name)) => {
                s = s.get(keyword)?.get(name)?.as_object()?;
                if keyword.ends_with("roperties") {
                    consumed += 1;
                }
                i += 2;
            }
            ("elements" | "values", Some(_)) => {
                s = s.get(keyword)?.as_object()?;
                consumed += 1;
                i += 1;
            }
            (_, None) => {
                return Some(Walked {
                    end: End::Keyword(s, keyword.to_owned()),
                    consumed,
                    in_definition: tokens[0] == "definitions",
                });
            }
            _ => return None,
        }
    }
    Some(Walked {
        end: End::Schema,
        consumed,
        in_definition: tokens.first().is_some_and(|t| t == "definitions"),
    })
}

/// The value at `tokens` in `data`.
fn resolve<'v, S: AsRef<str>>(data: &'v Value, tokens: &[S]) -> Option<&'v Value> {
    tokens.iter().try_fold(data, |v, t| match v {
        Value::Object(o) => o.get(t.as_ref()),
        Value::Array(a) => a.get(t.as_ref().parse::<usize>().ok()?),
        _ => None,
    })
}

/// " or null" when the schema is nullable.
fn or_null(s: &Schema) -> &'static str {
    if s.get("nullable") == Some(&Value::Bool(true)) {
        " or null"
    } else {
        ""
    }
}

fn string_keys(s: &Schema, keyword: &str) -> Vec<String> {
    match s.get(keyword) {
        Some(Value::Object(m)) => m.keys().cloned().collect(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(String::from)
            .collect(),
        _ => Vec::new(),
    }
}

/// The violation jtd's `indicator` stands for.
pub(super) fn describe(
    doc: &Value,
    data: &Value,
    indicator: &ValidationErrorIndicator<'_>,
) -> Violation {
    let tokens = &indicator.instance_path;
    let instance_path = pointer(tokens);
    let schema_path = pointer(&indicator.schema_path);
    let value = resolve(data, tokens);
    let at = field(&instance_path).to_owned();
    let shown = value.map(show).unwrap_or_else(|| "absent".into());
    let violation = |rule: &str, value: Option<&Value>, message: String| Violation {
        instance_path: instance_path.clone(),
        schema_path: schema_path.clone(),
        rule: rule.to_owned(),
        value: value.and_then(kept),
        message,
    };
    let Some(walked) = walk(doc, &indicator.schema_path) else {
        let message = format!("{at} does not match the schema at {}", quoted(&schema_path));
        return violation("schema", value, message);
    };
    let requires = |what: &str, s: &Schema| {
        format!(
            "{at} is {shown}, but the schema requires {what}{}",
            or_null(s)
        )
    };
    match &walked.end {
        End::Property(name, schema) if is_missing(data, tokens, &walked, name, *schema) => {
            violation(
                "required",
                None,
                format!("{at} is missing the required property {}", quoted(name)),
            )
        }
        End::Schema | End::Property(..) => {
            let name = tokens.last().map(AsRef::as_ref).unwrap_or_default();
            let message = format!(
                "{at} is not allowed: the schema lists no property {}",
                quoted(name)
            );
            violation("additionalProperties", value, message)
        }
        End::Keyword(s, keyword) => match keyword.as_str() {
            "type" => {
                let name = s.get("type").and_then(Value::as_str).unwrap_or_default();
                violation("type", value, requires(&type_requirement(name), s))
            }
            "enum" => {
                let allowed = string_keys(s, "enum");
                let message = format!(
                    "{at} is {shown}, but the schema allows only {}{}",
                    one_of(allowed.iter().map(String::as_str)),
                    or_null(s)
                );
                violation("enum", value, message)
            }
            "elements" => violation("elements", value, requires("an array", s)),
            "values" => violation("values", value, requires("an object", s)),
            "properties" | "optionalProperties" => {
                violation("properties", value, requires("an object", s))
            }
            "discriminator" => {
                let tag = s.get("discriminator").and_then(Value::as_str).unwrap_or("");
                let tags = string_keys(s, "mapping");
                let tags = one_of(tags.iter().map(String::as_str));
                if tag_not_a_string(data, tokens, &walked, tag) {
                    let message =
                        format!("{at} is {shown}, but the tag must be a string: one of {tags}");
                    violation("discriminator", value, message)
                } else if value.is_some_and(Value::is_object) {
                    let message = format!(
                        "{at} is missing the tag property {}, which must be one of {tags}",
                        quoted(tag)
                    );
                    violation("discriminator", None, message)
                } else {
                    let what = format!("an object with a {} tag", quoted(tag));
                    violation("discriminator", value, requires(&what, s))
                }
            }
            "mapping" => {
                let tags = string_keys(s, "mapping");
                let message = format!(
                    "{at} is {shown}, but the tag must be one of {}",
                    one_of(tags.iter().map(String::as_str))
                );
                violation("mapping", value, message)
            }
            other => {
                let message = format!("{at} does not match the schema at {}", quoted(&schema_path));
                violation(other, value, message)
            }
        },
    }
}

/// Whether a `discriminator` failure is a tag that is not a string (the instance path
/// names the tag) rather than an object missing its tag or no object at all (the path
/// names the object). Outside a ref the path's length says which; inside one, the tag
/// case is the one where the path ends at a non-string tag of an object.
fn tag_not_a_string(data: &Value, tokens: &[Cow<'_, str>], walked: &Walked<'_>, tag: &str) -> bool {
    if !walked.in_definition {
        return tokens.len() > walked.consumed;
    }
    let Some((last, parent)) = tokens.split_last() else {
        return false;
    };
    last == tag
        && resolve(data, parent)
            .and_then(|p| p.as_object())
            .and_then(|p| p.get(tag))
            .is_some_and(|t| !t.is_string())
}

/// Whether a failure at `properties/{name}` is that property missing (the instance path
/// names the object lacking it) rather than an additional property in the property's
/// own object (the path names `.../{name}/{extra}`). Outside a ref the path's length
/// says which; inside one, a missing property is an object without `name` at the path,
/// unless the path reads as an extra property of that schema too.
fn is_missing(
    data: &Value,
    tokens: &[Cow<'_, str>],
    walked: &Walked<'_>,
    name: &str,
    schema: Option<&Schema>,
) -> bool {
    if !walked.in_definition {
        return tokens.len() == walked.consumed;
    }
    let lacks_it = resolve(data, tokens)
        .and_then(Value::as_object)
        .is_some_and(|o| !o.contains_key(name));
    let extra = match tokens {
        [.., parent, extra] if parent == name => schema.is_some_and(|s| {
            s.get("additionalProperties") != Some(&Value::Bool(true))
                && ["properties", "optionalProperties"]
                    .iter()
                    .all(|k| s.get(*k).and_then(|p| p.get(extra.as_ref())).is_none())
        }),
        _ => false,
    };
    lacks_it && !extra
}
