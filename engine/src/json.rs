//! JSON event data parsed once within eddy's limits: nesting at most
//! [`JsonLimits::max_depth`] arrays and objects deep, and every number within a
//! double's range, so that what is stored is what reducers, map pipes and type
//! validation can hold. A refusal names the place (a JSON Pointer) and the value.
//!
//! The parse that accepts tracks no path, so valid data costs one pass without
//! allocations (beyond the value it builds when one is asked for); only refused data
//! is walked a second time to say where.

use std::cell::RefCell;
use std::fmt;

use serde::de::{DeserializeSeed, Error as _, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use crate::error::{EngineError, Result};

/// The nesting limit when none is configured.
pub const DEFAULT_MAX_DEPTH: usize = 64;
/// The highest nesting limit that can be configured: serde_json refuses JSON nested
/// 128 deep whatever eddy allows.
pub const MAX_MAX_DEPTH: usize = 127;

/// JSON text with every character past ASCII, and DEL, written as a `\u` escape, so
/// that it fits a header value (visible ASCII). Such characters occur raw only inside
/// JSON strings, where the escape means the same.
pub fn ascii_json(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c.is_ascii() && c != '\x7f' {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

/// The limits JSON event data must keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonLimits {
    max_depth: usize,
}

impl Default for JsonLimits {
    fn default() -> Self {
        Self {
            max_depth: DEFAULT_MAX_DEPTH,
        }
    }
}

impl JsonLimits {
    /// Limits with `max_depth` nested arrays and objects, from 1 to [`MAX_MAX_DEPTH`].
    pub fn new(max_depth: usize) -> Result<Self> {
        if !(1..=MAX_MAX_DEPTH).contains(&max_depth) {
            return Err(EngineError::invalid(format!(
                "the JSON nesting limit {max_depth} is out of range: 1 to {MAX_MAX_DEPTH}"
            )));
        }
        Ok(Self { max_depth })
    }

    pub fn max_depth(&self) -> usize {
        self.max_depth
    }

    /// Checks JSON data (`content_type` names it in messages) and answers its value
    /// when `build` asks for one: UTF-8, one JSON value, within the limits.
    pub fn parse(&self, data: &[u8], content_type: &str, build: bool) -> Result<Option<Value>> {
        // JSON text is UTF-8 (RFC 8259 §8.1); checked whole so the message has the offset
        if let Err(e) = std::str::from_utf8(data) {
            return Err(EngineError::invalid(format!(
                "event data is not valid JSON (invalid UTF-8 at byte offset {}) but \
                 Content-Type is {content_type}",
                e.valid_up_to()
            )));
        }
        let node = Node {
            left: self.max_depth,
            build,
            trace: None,
        };
        match run(data, node) {
            Ok(v) => Ok(build.then_some(v)),
            Err(e) => Err(self.refusal(data, content_type, &e)),
        }
    }

    /// Checks an event's `metadata` (JSON text) as data is checked, naming it.
    pub fn check_metadata(&self, text: &str) -> Result<()> {
        self.parse(text.as_bytes(), "", false)
            .map(drop)
            .map_err(|mut e| {
                e.message = e
                    .message
                    .replacen("event data", "the event's \"metadata\"", 1)
                    .replacen(" but Content-Type is ", "", 1);
                e
            })
    }

    /// The 400 for data the parse refused: a syntax error as serde_json words it, a
    /// nesting or number refusal with its place, found by a second, tracing walk.
    fn refusal(&self, data: &[u8], content_type: &str, first: &serde_json::Error) -> EngineError {
        let kind = Fault::of(first);
        if kind == Fault::Syntax {
            return EngineError::invalid(format!(
                "event data is not valid JSON ({first}) but Content-Type is {content_type}"
            ));
        }
        let trace = RefCell::new(Trace::default());
        let node = Node {
            left: self.max_depth,
            build: false,
            trace: Some(&trace),
        };
        let at = match run(data, node) {
            Err(_) => pointer(&trace.borrow().path),
            Ok(_) => String::new(),
        };
        let shown = if at.is_empty() { "the root" } else { &at };
        match kind {
            Fault::Number => {
                let literal = number_at(data, first);
                EngineError::invalid(format!(
                    "event data holds the number {literal} at {shown}, which does not fit a \
                     double (64-bit floating point, at most about 1.8e308)"
                ))
                .with("at", at)
                .with("value", literal)
            }
            _ => EngineError::invalid(format!(
                "event data nests deeper than {} levels of arrays and objects at {shown}",
                self.max_depth
            ))
            .with("at", at)
            .with("limit", self.max_depth),
        }
    }
}

/// Why a parse failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Syntax,
    Depth,
    Number,
}

/// What [`Node`] says when the nesting limit is reached.
const TOO_DEEP: &str = "nested too deep";

impl Fault {
    fn of(e: &serde_json::Error) -> Self {
        let text = e.to_string();
        if text.starts_with(TOO_DEEP) || text.starts_with("recursion limit exceeded") {
            Fault::Depth
        } else if text.starts_with("number out of range") {
            Fault::Number
        } else {
            Fault::Syntax
        }
    }
}

fn run(data: &[u8], node: Node<'_>) -> std::result::Result<Value, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(data);
    let v = node.deserialize(&mut de)?;
    de.end()?;
    Ok(v)
}

/// The path to where the tracing walk stopped.
#[derive(Default)]
struct Trace {
    path: Vec<Seg>,
}

enum Seg {
    Index(usize),
    Key(String),
}

/// One JSON value at a depth: numbers are parsed as serde_json parses them for
/// `Value` (so one beyond a double fails), containers count down `left`.
#[derive(Clone, Copy)]
struct Node<'t> {
    left: usize,
    build: bool,
    trace: Option<&'t RefCell<Trace>>,
}

impl Node<'_> {
    fn child(self) -> Self {
        Self {
            left: self.left - 1,
            ..self
        }
    }

    fn push(&self, seg: impl FnOnce() -> Seg) {
        if let Some(t) = self.trace {
            t.borrow_mut().path.push(seg());
        }
    }

    fn pop(&self) {
        if let Some(t) = self.trace {
            t.borrow_mut().path.pop();
        }
    }
}

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        d: D,
    ) -> std::result::Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> std::result::Result<Value, E> {
        Ok(if self.build {
            Value::Bool(v)
        } else {
            Value::Null
        })
    }

    fn visit_i64<E>(self, v: i64) -> std::result::Result<Value, E> {
        Ok(if self.build { v.into() } else { Value::Null })
    }

    fn visit_u64<E>(self, v: u64) -> std::result::Result<Value, E> {
        Ok(if self.build { v.into() } else { Value::Null })
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> std::result::Result<Value, E> {
        match Number::from_f64(v) {
            Some(n) if self.build => Ok(Value::Number(n)),
            Some(_) => Ok(Value::Null),
            None => Err(E::custom("number out of range")),
        }
    }

    fn visit_str<E>(self, v: &str) -> std::result::Result<Value, E> {
        Ok(if self.build {
            Value::String(v.to_owned())
        } else {
            Value::Null
        })
    }

    fn visit_string<E>(self, v: String) -> std::result::Result<Value, E> {
        Ok(if self.build {
            Value::String(v)
        } else {
            Value::Null
        })
    }

    fn visit_unit<E>(self) -> std::result::Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Value, A::Error> {
        if self.left == 0 {
            return Err(A::Error::custom(TOO_DEEP));
        }
        let child = self.child();
        let mut out = Vec::new();
        let mut i = 0;
        loop {
            self.push(|| Seg::Index(i));
            let Some(v) = seq.next_element_seed(child)? else {
                self.pop();
                break;
            };
            self.pop();
            if self.build {
                out.push(v);
            }
            i += 1;
        }
        Ok(if self.build {
            Value::Array(out)
        } else {
            Value::Null
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Value, A::Error> {
        if self.left == 0 {
            return Err(A::Error::custom(TOO_DEEP));
        }
        let child = self.child();
        let mut out = Map::new();
        if self.build || self.trace.is_some() {
            while let Some(k) = map.next_key::<String>()? {
                self.push(|| Seg::Key(k.clone()));
                let v = map.next_value_seed(child)?;
                self.pop();
                if self.build {
                    out.insert(k, v);
                }
            }
        } else {
            while map.next_key::<IgnoredAny>()?.is_some() {
                map.next_value_seed(child)?;
            }
        }
        Ok(if self.build {
            Value::Object(out)
        } else {
            Value::Null
        })
    }
}

/// The JSON Pointer (RFC 6901) of `path`, cut short past 200 characters.
fn pointer(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        out.push('/');
        match seg {
            Seg::Index(i) => out.push_str(&i.to_string()),
            Seg::Key(k) => out.push_str(&k.replace('~', "~0").replace('/', "~1")),
        }
        if out.len() > 200 {
            let mut end = 200;
            while !out.is_char_boundary(end) {
                end -= 1;
            }
            out.truncate(end);
            out.push('…');
            break;
        }
    }
    out
}

/// The number literal where serde_json stopped, as written (at most 40 characters).
fn number_at(data: &[u8], e: &serde_json::Error) -> String {
    // serde_json counts lines from 1 and columns in bytes from 1 after the last newline
    let mut offset = 0;
    for _ in 1..e.line() {
        match data[offset..].iter().position(|b| *b == b'\n') {
            Some(nl) => offset += nl + 1,
            None => break,
        }
    }
    let end = (offset + e.column()).min(data.len());
    let is_num = |b: &u8| b.is_ascii_digit() || b".eE+-".contains(b);
    let mut start = end;
    while start > 0 && is_num(&data[start - 1]) {
        start -= 1;
    }
    let mut stop = end;
    while stop < data.len() && is_num(&data[stop]) {
        stop += 1;
    }
    let literal = String::from_utf8_lossy(&data[start..stop]);
    match literal.char_indices().nth(40) {
        Some((cut, _)) => format!("{}…", &literal[..cut]),
        None => literal.into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_json_escapes_what_a_header_cannot_carry_and_means_the_same() {
        let text = "{\"city\":\"Zürich ✓ 😀\u{7f}\"}";
        let ascii = ascii_json(text);
        assert!(ascii.bytes().all(|b| (0x20..0x7f).contains(&b)), "{ascii}");
        assert!(
            ascii.contains("\\ud83d\\ude00"),
            "a surrogate pair: {ascii}"
        );
        let same: Value = serde_json::from_str(&ascii).unwrap();
        assert_eq!(same, serde_json::from_str::<Value>(text).unwrap());
    }

    fn nested(depth: usize) -> String {
        format!(
            r#"{{"x":"notint","pad":{}1{}}}"#,
            "[".repeat(depth - 1),
            "]".repeat(depth - 1)
        )
    }

    #[test]
    fn depth_up_to_the_limit_is_accepted() {
        let limits = JsonLimits::default();
        for build in [false, true] {
            assert!(limits.parse(nested(64).as_bytes(), "j", build).is_ok());
            let e = limits.parse(nested(65).as_bytes(), "j", build).unwrap_err();
            assert!(
                e.message.starts_with(
                    "event data nests deeper than 64 levels of arrays and objects at /pad/0/0/"
                ),
                "{}",
                e.message
            );
            assert_eq!(e.details["limit"], 64);
            // past serde_json's own ceiling the place is named as well
            let e = limits
                .parse(nested(300).as_bytes(), "j", build)
                .unwrap_err();
            assert!(e.message.contains("at /pad/0/0"), "{}", e.message);
        }
        let one = JsonLimits::new(1).unwrap();
        assert!(one.parse(b"[1,2]", "j", false).is_ok());
        let e = one.parse(br#"{"a":{"b":1}}"#, "j", false).unwrap_err();
        assert_eq!(e.details["at"], "/a");
        let max = JsonLimits::new(MAX_MAX_DEPTH).unwrap();
        assert!(max.parse(nested(127).as_bytes(), "j", true).is_ok());
        assert!(max.parse(nested(128).as_bytes(), "j", true).is_err());
        assert!(JsonLimits::new(0).is_err());
        assert!(JsonLimits::new(128).is_err());
    }

    #[test]
    fn numbers_must_fit_a_double() {
        let limits = JsonLimits::default();
        for build in [false, true] {
            let ok = limits
                .parse(
                    br#"{"a":1e308,"b":-1.7976931348623157e308,"c":1e-400}"#,
                    "j",
                    build,
                )
                .unwrap();
            if build {
                assert_eq!(ok.unwrap()["a"], 1e308);
            }
            let e = limits
                .parse(br#"{"name":5,"age":"x","zz":1e400}"#, "j", build)
                .unwrap_err();
            assert_eq!(
                e.message,
                "event data holds the number 1e400 at /zz, which does not fit a double \
                 (64-bit floating point, at most about 1.8e308)"
            );
            assert_eq!(e.details["at"], "/zz");
            let big = format!("[0,\n {{\"a/b~\": [-{}]}}]", "9".repeat(400));
            let e = limits.parse(big.as_bytes(), "j", build).unwrap_err();
            assert_eq!(e.details["at"], "/1/a~1b~0/0", "{}", e.message);
            assert!(e.message.contains("the number -9999"), "{}", e.message);
            let e = limits.parse(b"1e999", "j", build).unwrap_err();
            assert!(e.message.contains("1e999 at the root"), "{}", e.message);
        }
    }

    #[test]
    fn syntax_errors_keep_their_wording() {
        let limits = JsonLimits::default();
        let e = limits
            .parse(b"{\"a\":", "application/json", false)
            .unwrap_err();
        assert!(
            e.message.starts_with("event data is not valid JSON (")
                && e.message.ends_with(" but Content-Type is application/json"),
            "{}",
            e.message
        );
        let e = limits.parse(b"{\"a\":\"\xff\"}", "j", false).unwrap_err();
        assert!(e.message.contains("invalid UTF-8 at byte offset 6"));
        assert!(limits.parse(b"1 2", "j", false).is_err());
        assert_eq!(
            limits
                .parse(br#"{"a":[1,"x",true,null]}"#, "j", true)
                .unwrap(),
            Some(serde_json::json!({"a":[1,"x",true,null]}))
        );
    }
}
