//! How paths, values and rules read in the messages of this module: JSON Pointers,
//! values shortened for a sentence or for a violation's `value`, quoted lists, and the
//! requirement each JTD type makes.

use std::io;

use serde_json::Value;

/// Longest string a message quotes whole; a longer one is cut and ends with "…".
const SHOWN_CHARS: usize = 100;
/// Longest string a violation's `value` keeps whole, and the largest JSON text of an
/// array or object it keeps at all.
const VALUE_CHARS: usize = 200;
/// Most choices a message lists (enum values, discriminator tags, definitions).
const LISTED: usize = 10;

/// The JTD types in RFC 8927's order.
pub(super) const TYPES: [&str; 11] = [
    "boolean",
    "string",
    "timestamp",
    "float32",
    "float64",
    "int8",
    "uint8",
    "int16",
    "uint16",
    "int32",
    "uint32",
];

/// A JSON Pointer (RFC 6901) from unescaped tokens: "" for none, "/a/b~1c".
pub(super) fn pointer<S: AsRef<str>>(tokens: &[S]) -> String {
    let mut out = String::new();
    for token in tokens {
        out.push('/');
        push_token(&mut out, token.as_ref());
    }
    out
}

/// Appends one token to a pointer, escaping `~` and `/`, without the leading `/`.
pub(super) fn push_token(out: &mut String, token: &str) {
    for c in token.chars() {
        match c {
            '~' => out.push_str("~0"),
            '/' => out.push_str("~1"),
            c => out.push(c),
        }
    }
}

/// An instance pointer as a message names the field: "/" for the root.
pub(super) fn field(pointer: &str) -> &str {
    if pointer.is_empty() { "/" } else { pointer }
}

/// The JSON text of a string: what a message shows between quotes.
pub(super) fn quoted(s: &str) -> String {
    Value::from(s).to_string()
}

/// `s` cut after `max` characters, ending with "…" when cut.
pub(super) fn cut(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// A value as a sentence shows it: scalars as JSON (long strings cut), containers by kind.
pub(super) fn show(value: &Value) -> String {
    match value {
        Value::String(s) => quoted(&cut(s, SHOWN_CHARS)),
        Value::Array(a) if a.is_empty() => "an empty array".into(),
        Value::Array(_) => "an array".into(),
        Value::Object(o) if o.is_empty() => "an empty object".into(),
        Value::Object(_) => "an object".into(),
        scalar => scalar.to_string(),
    }
}

/// The offending value as a violation carries it: long strings cut, and arrays or
/// objects only when their JSON is short.
pub(super) fn kept(value: &Value) -> Option<Value> {
    match value {
        Value::String(s) => Some(Value::String(cut(s, VALUE_CHARS))),
        Value::Array(_) | Value::Object(_) => {
            let mut counter = Counter(0);
            serde_json::to_writer(&mut counter, value)
                .is_ok()
                .then(|| value.clone())
        }
        scalar => Some(scalar.clone()),
    }
}

/// A writer that fails once more than [`VALUE_CHARS`] bytes are written, so measuring
/// a large object stops early.
struct Counter(usize);

impl io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len();
        if self.0 > VALUE_CHARS {
            return Err(io::Error::other("too long"));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Choices quoted and joined: `"a"`, `"a" or "b"`, `"a", "b" or "c"`, with at most
/// [`LISTED`] shown (`"a", ..., "j" or 5 more`).
pub(super) fn one_of<'a>(choices: impl IntoIterator<Item = &'a str>) -> String {
    let all: Vec<String> = choices.into_iter().map(quoted).collect();
    match all.len() {
        0 => "nothing".into(),
        1 => all[0].clone(),
        n if n > LISTED => format!("{} or {} more", all[..LISTED].join(", "), n - LISTED),
        n => format!("{} or {}", all[..n - 1].join(", "), all[n - 1]),
    }
}

/// What a value of JTD type `name` must be, as a message says it.
pub(super) fn type_requirement(name: &str) -> String {
    let int = |min: i64, max: i64| format!("an integer from {min} to {max} ({name})");
    match name {
        "boolean" => "a boolean (true or false)".into(),
        "string" => "a string".into(),
        "timestamp" => "an RFC 3339 timestamp (a string like \"2024-01-31T12:00:00Z\")".into(),
        "float32" | "float64" => format!("a number ({name})"),
        "int8" => int(-128, 127),
        "uint8" => int(0, 255),
        "int16" => int(-32768, 32767),
        "uint16" => int(0, 65535),
        "int32" => int(-2147483648, 2147483647),
        "uint32" => int(0, 4294967295),
        other => format!("a value of type {}", quoted(other)),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn pointers_escape_tilde_and_slash() {
        assert_eq!(pointer::<&str>(&[]), "");
        assert_eq!(pointer(&["a/b", "c~d", "0"]), "/a~1b/c~0d/0");
        assert_eq!(field(""), "/");
        assert_eq!(field("/x"), "/x");
    }

    #[test]
    fn values_are_shortened() {
        let long = "é".repeat(300);
        assert_eq!(show(&json!(long)).chars().count(), 100 + 3);
        assert_eq!(
            kept(&json!(long)),
            Some(json!(format!("{}…", "é".repeat(200))))
        );
        assert_eq!(kept(&json!({"a": 1})), Some(json!({"a": 1})));
        assert_eq!(kept(&json!({"a": "x".repeat(300)})), None);
        assert_eq!(show(&json!({"a": 1})), "an object");
        assert_eq!(show(&json!(null)), "null");
    }

    #[test]
    fn lists_read_as_sentences() {
        assert_eq!(one_of(["a"]), "\"a\"");
        assert_eq!(one_of(["a", "b"]), "\"a\" or \"b\"");
        assert_eq!(one_of(["a", "b", "c"]), "\"a\", \"b\" or \"c\"");
        let many: Vec<String> = (0..12).map(|i| i.to_string()).collect();
        assert!(one_of(many.iter().map(String::as_str)).ends_with("\"9\" or 2 more"));
    }
}
