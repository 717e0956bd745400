//! The event model: what a client appends ([`NewEvent`]), what is stored and read back
//! ([`StoredEvent`] and its JSON envelope), and the rules every event obeys (content
//! types, size and type-name limits, timestamps, ids, expected index).

use base64::Engine as _;
use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::error::{EngineError, ErrorCode, Result};
use crate::order::{Index, Position};

/// The most data one event may carry, in bytes (100 KiB).
pub const MAX_EVENT_DATA: usize = 102_400;
/// The most bytes one batch request may carry (10 MiB).
pub const MAX_BATCH_BYTES: usize = 10 * 1024 * 1024;
/// The longest event type, in characters.
pub const MAX_TYPE_CHARS: usize = 100;

/// How an event's data is stored and shown, decided by its content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataKind {
    /// `application/json` (and `application/*+json`): shown as the JSON value.
    Json,
    /// `text/*` and `application/x-www-form-urlencoded`: UTF-8 text, shown as a string.
    Text,
    /// `application/octet-stream`: any bytes, shown base64-encoded.
    Binary,
}

impl DataKind {
    /// The kind of a lowercased media type without parameters; `None` when eddy does
    /// not store that type.
    pub fn of(essence: &str) -> Option<Self> {
        match essence {
            "application/json" => Some(DataKind::Json),
            "application/x-www-form-urlencoded" => Some(DataKind::Text),
            "application/octet-stream" => Some(DataKind::Binary),
            e if e.starts_with("text/") && e.len() > 5 => Some(DataKind::Text),
            e if e.starts_with("application/") && e.ends_with("+json") => Some(DataKind::Json),
            _ => None,
        }
    }
}

/// A parsed `Content-Type` for event data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentType {
    /// The media type as stored and shown (lowercased type, parameters kept).
    pub value: String,
    pub kind: DataKind,
}

impl ContentType {
    /// Parses a Content-Type header for event data. `None` (no header) is taken as
    /// `application/octet-stream`.
    pub fn parse(header: Option<&str>) -> Result<Self> {
        let Some(raw) = header.map(str::trim).filter(|s| !s.is_empty()) else {
            return Ok(Self {
                value: "application/octet-stream".into(),
                kind: DataKind::Binary,
            });
        };
        let (essence, params) = match raw.split_once(';') {
            Some((e, p)) => (e.trim().to_ascii_lowercase(), Some(p.trim())),
            None => (raw.to_ascii_lowercase(), None),
        };
        let kind = match DataKind::of(&essence) {
            Some(kind) => kind,
            None => {
                return Err(EngineError::new(
                    ErrorCode::UnsupportedMediaType,
                    format!(
                        "Content-Type \"{raw}\" is not supported: use application/json, \
                         application/x-www-form-urlencoded, text/csv, text/*, \
                         application/octet-stream, application/vnd.eddy.events+json, \
                         application/vnd.eventstore.events+json or application/x-ndjson"
                    ),
                ));
            }
        };
        if kind != DataKind::Binary
            && let Some(charset) = params.and_then(charset)
            && !["utf-8", "utf8", "us-ascii"].contains(&charset.to_ascii_lowercase().as_str())
        {
            return Err(EngineError::new(
                ErrorCode::UnsupportedMediaType,
                format!(
                    "charset \"{charset}\" of Content-Type \"{raw}\" is not supported: eddy \
                     keeps text and JSON as UTF-8, so send the data as UTF-8 \
                     (charset=utf-8)"
                ),
            ));
        }
        let value = match params {
            Some(p) if !p.is_empty() => format!("{essence};{p}"),
            _ => essence,
        };
        Ok(Self { value, kind })
    }

    pub fn json() -> Self {
        Self {
            value: "application/json".into(),
            kind: DataKind::Json,
        }
    }
}

/// The `charset` parameter of a media type's parameters, unquoted.
fn charset(params: &str) -> Option<&str> {
    params
        .split(';')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("charset"))
        .map(|(_, v)| v.trim().trim_matches('"'))
}

/// The most metadata one event may carry, as JSON text (the limit of a stream's).
pub const MAX_EVENT_METADATA: usize = 16_384;

/// Fails with 413 when an event's metadata is over [`MAX_EVENT_METADATA`].
pub fn check_metadata_size(len: usize) -> Result<()> {
    if len > MAX_EVENT_METADATA {
        return Err(EngineError::too_large(format!(
            "\"metadata\" is {len} bytes; the limit is {MAX_EVENT_METADATA} bytes (16 KiB) \
             per event"
        ))
        .with("limit", MAX_EVENT_METADATA));
    }
    Ok(())
}

/// Fails with 413 when an event's data is over [`MAX_EVENT_DATA`].
pub fn check_size(len: usize) -> Result<()> {
    if len > MAX_EVENT_DATA {
        return Err(EngineError::too_large(format!(
            "event data is {len} bytes; the limit is {MAX_EVENT_DATA} bytes (100 KiB) per event"
        ))
        .with("limit", MAX_EVENT_DATA));
    }
    Ok(())
}

/// Checks an event type: 1 to 100 characters, no control characters.
pub fn check_type(ty: &str) -> Result<()> {
    let n = ty.chars().count();
    if n == 0 {
        return Err(EngineError::invalid(
            "event type is empty: give it in the Event-Type header, the event-type query \
             parameter, or POST to /{acct}/{strm}:{type}",
        ));
    }
    if n > MAX_TYPE_CHARS {
        return Err(EngineError::invalid(format!(
            "event type is {n} characters long; the limit is {MAX_TYPE_CHARS}"
        )));
    }
    if ty.chars().any(char::is_control) {
        return Err(EngineError::invalid(format!(
            "event type {ty:?} contains a control character"
        )));
    }
    // what a selector could never pick: `type=a,b` lists types, `type=!a` excludes
    if ty.contains(',') || ty.starts_with('!') {
        return Err(EngineError::invalid(format!(
            "event type {ty:?} has a comma or begins with \"!\", which no type= selector \
             could pick (type=a,b lists types, type=!a excludes one)"
        )));
    }
    // what an HTTP header drops around its value: spaces and tabs
    if ty.trim_matches([' ', '\t']) != ty {
        return Err(EngineError::invalid(format!(
            "event type {ty:?} begins or ends with white space, which an Event-Type header \
             would lose"
        )));
    }
    Ok(())
}

/// The latest timestamp an event may carry: 9999-12-31T23:59:59.999Z, the end of
/// RFC 3339's range (and well inside what JavaScript numbers hold exactly).
pub const MAX_TIMESTAMP: i64 = 253_402_300_799_999;

/// Parses an event timestamp: unix milliseconds or RFC 3339, from the unix epoch to
/// the end of year 9999.
pub fn parse_timestamp(field: &str, raw: &str) -> Result<i64> {
    let raw = raw.trim();
    let ms = match raw.parse::<i64>() {
        Ok(ms) => ms,
        Err(_) => {
            // an unencoded `+` of a UTC offset arrives from a query string as a space
            let parsed = chrono::DateTime::parse_from_rfc3339(raw).or_else(|e| {
                chrono::DateTime::parse_from_rfc3339(&raw.replace(' ', "+")).map_err(|_| e)
            });
            match parsed {
                Ok(t) => t.timestamp_millis(),
                Err(_) => {
                    return Err(EngineError::invalid(format!(
                        "{field} \"{raw}\" is neither unix milliseconds nor an RFC 3339 \
                         date-time (e.g. 2026-11-22T08:00:00Z)"
                    )));
                }
            }
        }
    };
    if !(0..=MAX_TIMESTAMP).contains(&ms) {
        return Err(EngineError::invalid(format!(
            "{field} \"{raw}\" is out of range: timestamps go from the unix epoch \
             (0, 1970-01-01T00:00:00Z) to {MAX_TIMESTAMP} (9999-12-31T23:59:59.999Z)"
        )));
    }
    Ok(ms)
}

/// Parses an event id: a UUID in any of its usual spellings.
pub fn parse_event_id(field: &str, raw: &str) -> Result<Uuid> {
    Uuid::parse_str(raw.trim()).map_err(|_| {
        EngineError::invalid(format!(
            "{field} \"{raw}\" is not a UUID (e.g. 0b9e2a4c-6f7d-4f55-9b44-3c1d2e5f6a7b)"
        ))
    })
}

/// The `Expected-Index` condition of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExpectedIndex {
    /// `-2`: any state (the default).
    #[default]
    Any,
    /// `-1`: the (sub)stream must have no events.
    NoEvents,
    /// `n`: the last index must be `n`.
    Last(Index),
}

impl ExpectedIndex {
    pub fn parse(field: &str, raw: &str) -> Result<Self> {
        match raw.trim().parse::<i64>() {
            Ok(-2) => Ok(Self::Any),
            Ok(-1) => Ok(Self::NoEvents),
            Ok(n) if n >= 0 => Ok(Self::Last(Index(n as u64))),
            _ => Err(EngineError::invalid(format!(
                "{field} \"{raw}\" must be -2 (any), -1 (no events yet) or the last index (0 or more)"
            ))),
        }
    }
}

/// An event id derived from a source's time (`ms`, unix milliseconds) and `parts`: what
/// pipes, dispatches and cron ticks give the events they write, so that writing the
/// same event again (after a restart, a redeploy or a rebuild) finds it already stored
/// instead of appending a duplicate. A UUIDv8 laid out like a UUIDv7: the 48-bit time
/// first, then 74 bits of the parts' SHA-256. Ids made in time order land at the end of
/// the id index, as clients' UUIDv7 ids do, instead of at random places in it (which
/// slows inserts and lookups once the index outgrows the cache).
pub fn derived_id(ms: i64, parts: &[&[u8]]) -> Uuid {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    let digest = h.finalize();
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&(ms.max(0) as u64).to_be_bytes()[2..]);
    bytes[6..].copy_from_slice(&digest[..10]);
    Uuid::new_v8(bytes)
}

/// One event as a client appends it.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// The client's event id; the writer generates one (see `store::event_ids`) when absent.
    pub id: Option<Uuid>,
    pub event_type: String,
    pub content_type: String,
    pub data: Bytes,
    /// Client timestamp in unix ms; the writer stamps `max(now, last)` when absent.
    pub timestamp: Option<i64>,
    /// EventStoreDB-style metadata as JSON text.
    pub metadata: Option<String>,
    /// Where a piped or dispatched event came from: `{"stream","index"}` as JSON text.
    pub origin: Option<String>,
}

impl NewEvent {
    /// A JSON entry of a stream's log (`error`, `info`, ...), stamped by the writer.
    pub fn log_entry(level: &str, entry: &serde_json::Value) -> NewEvent {
        NewEvent {
            id: None,
            event_type: level.to_owned(),
            content_type: "application/json".to_owned(),
            data: entry.to_string().into(),
            timestamp: None,
            metadata: None,
            origin: None,
        }
    }
}

/// One stored event, as read back.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// The (sub)stream path without leading slash: `acct/strm('a')`.
    pub stream: String,
    pub index: Index,
    pub id: Uuid,
    pub event_type: String,
    pub timestamp: i64,
    pub content_type: String,
    pub data: Bytes,
    pub metadata: Option<String>,
    /// `{"stream","index"}` as JSON text, for an event a pipe or a dispatch wrote.
    pub origin: Option<String>,
    /// The global append position.
    pub position: Position,
}

impl StoredEvent {
    /// How the data is shown, from the stored content type.
    pub fn kind(&self) -> DataKind {
        // stored content types are already normalized (lowercased media type), so this
        // needs no allocation on the read path
        let essence = self.content_type.split(';').next().unwrap_or("").trim();
        DataKind::of(essence).unwrap_or(DataKind::Binary)
    }

    /// The default consumer payload `{"stream","index","type"}` (API §5).
    pub fn reference(&self) -> Reference<'_> {
        Reference {
            stream: &self.stream,
            index: self.index,
            event_type: &self.event_type,
        }
    }

    /// The JSON envelope of §3: `{"stream","index","id","type","timestamp",
    /// "contentType","data"}` (+ `"encoding":"base64"` for binary data, `"metadata"`
    /// and `"origin"` when present).
    pub fn envelope(&self) -> Envelope<'_> {
        let (data, encoding) = render_data(self.kind(), &self.data);
        Envelope {
            stream: &self.stream,
            index: self.index,
            id: self.id,
            event_type: &self.event_type,
            timestamp: self.timestamp,
            content_type: &self.content_type,
            data,
            encoding,
            metadata: self
                .metadata
                .as_deref()
                .and_then(|m| serde_json::from_str::<&RawValue>(m).ok()),
            origin: self
                .origin
                .as_deref()
                .and_then(|m| serde_json::from_str::<&RawValue>(m).ok()),
        }
    }
}

/// The data of an envelope: the JSON itself, a string, or base64.
#[derive(Serialize)]
#[serde(untagged)]
pub enum EnvelopeData<'a> {
    Raw(&'a RawValue),
    Owned(Box<RawValue>),
    Text(&'a str),
    Base64(String),
}

fn render_data(kind: DataKind, data: &[u8]) -> (EnvelopeData<'_>, Option<&'static str>) {
    let b64 = || {
        (
            EnvelopeData::Base64(base64::engine::general_purpose::STANDARD.encode(data)),
            Some("base64"),
        )
    };
    let Ok(text) = std::str::from_utf8(data) else {
        return b64();
    };
    match kind {
        DataKind::Json => {
            // Pretty-printed bodies are compacted so an envelope is always one line
            // (NDJSON); JSON strings cannot hold raw newlines, so any is whitespace.
            // (Not through `serde_json::Value`: its recursion limit would refuse
            // stored JSON nested 128 levels deep.)
            if text.contains(['\n', '\r']) {
                match RawValue::from_string(minify_json(text)) {
                    Ok(raw) => (EnvelopeData::Owned(raw), None),
                    Err(_) => b64(),
                }
            } else {
                match serde_json::from_str::<&RawValue>(text) {
                    Ok(raw) => (EnvelopeData::Raw(raw), None),
                    Err(_) => b64(),
                }
            }
        }
        DataKind::Text => (EnvelopeData::Text(text), None),
        DataKind::Binary => b64(),
    }
}

/// `text` (valid JSON) without the whitespace between its tokens. Written out because
/// serde_json offers no minifier that keeps the text as it is (number spellings, key
/// order, duplicate keys) without building a recursive value.
fn minify_json(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in text.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            out.push(c);
        }
    }
    out
}

/// What a consumer receives by default (API §5): where the event is, not what it
/// holds; the consumer reads the data itself when it needs it.
#[derive(Serialize)]
pub struct Reference<'a> {
    pub stream: &'a str,
    pub index: Index,
    #[serde(rename = "type")]
    pub event_type: &'a str,
}

/// The JSON envelope of one event.
#[derive(Serialize)]
pub struct Envelope<'a> {
    pub stream: &'a str,
    pub index: Index,
    pub id: Uuid,
    #[serde(rename = "type")]
    pub event_type: &'a str,
    pub timestamp: i64,
    #[serde(rename = "contentType")]
    pub content_type: &'a str,
    pub data: EnvelopeData<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoding: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<&'a RawValue>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_map_to_kinds() {
        let k = |h: &str| ContentType::parse(Some(h)).unwrap().kind;
        assert_eq!(k("application/json; charset=utf-8"), DataKind::Json);
        assert_eq!(k("Application/JSON"), DataKind::Json);
        assert_eq!(k("text/csv;header=present"), DataKind::Text);
        assert_eq!(k("application/x-www-form-urlencoded"), DataKind::Text);
        assert_eq!(k("application/octet-stream"), DataKind::Binary);
        assert_eq!(ContentType::parse(None).unwrap().kind, DataKind::Binary);
        let e = ContentType::parse(Some("image/png")).unwrap_err();
        assert_eq!(e.code, ErrorCode::UnsupportedMediaType);
        assert!(e.message.contains("image/png"));
        assert_eq!(
            ContentType::parse(Some("text/csv; header=present"))
                .unwrap()
                .value,
            "text/csv;header=present"
        );
    }

    #[test]
    fn charsets() {
        for fine in [
            "text/plain; charset=UTF-8",
            "application/json;charset=\"utf-8\"",
        ] {
            assert!(ContentType::parse(Some(fine)).is_ok(), "{fine}");
        }
        let latin = ContentType::parse(Some("text/plain; charset=ISO-8859-1")).unwrap_err();
        assert_eq!(latin.code, ErrorCode::UnsupportedMediaType);
        assert!(
            latin.message.contains("charset \"ISO-8859-1\""),
            "{}",
            latin.message
        );
    }

    #[test]
    fn types_timestamps_ids_expected() {
        assert!(check_type("click").is_ok());
        assert!(check_type("").is_err());
        assert!(check_type(&"x".repeat(100)).is_ok());
        assert!(check_type(&"x".repeat(101)).is_err());
        for unselectable in ["a,b", "!x", ","] {
            assert!(check_type(unselectable).is_err(), "{unselectable}");
        }
        assert!(check_type("x!").is_ok());
        assert_eq!(
            parse_timestamp("t", "1700000000000").unwrap(),
            1_700_000_000_000
        );
        assert_eq!(
            parse_timestamp("t", "2023-11-14T22:13:20Z").unwrap(),
            1_700_000_000_000
        );
        assert_eq!(
            parse_timestamp("t", "2023-11-14T23:13:20.5+01:00").unwrap(),
            1_700_000_000_500
        );
        assert_eq!(
            parse_timestamp("t", "2023-11-14T23:13:20 01:00").unwrap(),
            1_700_000_000_000
        );
        assert!(parse_timestamp("t", "yesterday").is_err());
        assert!(parse_timestamp("t", "-5").is_err());
        assert_eq!(
            parse_timestamp("t", "9999-12-31T23:59:59.999Z").unwrap(),
            MAX_TIMESTAMP
        );
        for out_of_range in [
            "253402300800000",
            "9223372036854775807",
            "1969-12-31T23:59:59Z",
        ] {
            let e = parse_timestamp("t", out_of_range).unwrap_err();
            assert!(e.message.contains("out of range"), "{}", e.message);
        }
        assert!(parse_event_id("id", "not-a-uuid").is_err());
        assert_eq!(ExpectedIndex::parse("e", "-2").unwrap(), ExpectedIndex::Any);
        assert_eq!(
            ExpectedIndex::parse("e", "-1").unwrap(),
            ExpectedIndex::NoEvents
        );
        assert_eq!(
            ExpectedIndex::parse("e", "7").unwrap(),
            ExpectedIndex::Last(Index(7))
        );
        assert!(ExpectedIndex::parse("e", "-3").is_err());
        assert!(ExpectedIndex::parse("e", "x").is_err());
    }

    #[test]
    fn envelopes_render_data_by_kind() {
        let mut e = StoredEvent {
            stream: "a/s".into(),
            index: Index(0),
            id: Uuid::nil(),
            event_type: "t".into(),
            timestamp: 1,
            content_type: "application/json".into(),
            data: Bytes::from_static(b"{\n  \"a\": [1, 2]\n}\n"),
            metadata: None,
            origin: None,
            position: Position(1),
        };
        let j = serde_json::to_value(e.envelope()).unwrap();
        assert_eq!(j["data"], serde_json::json!({"a": [1, 2]}));
        assert!(!serde_json::to_string(&e.envelope()).unwrap().contains('\n'));
        // compacting keeps strings whole and needs no recursion (nesting past 128)
        e.data = Bytes::from_static(b"{\"k\" :\n \"a \\\" b\\\\\",\"n\": 1.50}");
        let line = serde_json::to_string(&e.envelope()).unwrap();
        assert!(
            line.contains(r#""data":{"k":"a \" b\\","n":1.50}"#),
            "{line}"
        );
        let deep = format!("{}\n{}", "[".repeat(300), "]".repeat(300));
        e.data = Bytes::from(deep);
        let line = serde_json::to_string(&e.envelope()).unwrap();
        assert!(
            line.contains(&format!("\"data\":{}", "[".repeat(300))),
            "{line}"
        );
        assert!(!line.contains("base64"));
        e.content_type = "text/plain".into();
        e.data = Bytes::from_static(b"hi");
        assert_eq!(serde_json::to_value(e.envelope()).unwrap()["data"], "hi");
        e.content_type = "text/csv;header=present".into();
        assert_eq!(serde_json::to_value(e.envelope()).unwrap()["data"], "hi");
        e.content_type = "application/cloudevents+json".into();
        e.data = Bytes::from_static(b"[1]");
        assert_eq!(
            serde_json::to_value(e.envelope()).unwrap()["data"],
            serde_json::json!([1])
        );
        e.data = Bytes::from_static(b"hi");
        e.content_type = "application/octet-stream".into();
        let j = serde_json::to_value(e.envelope()).unwrap();
        assert_eq!(j["data"], "aGk=");
        assert_eq!(j["encoding"], "base64");
    }
}
