//! The events `eddy test` folds, read from a fixture file: a JSON array, or NDJSON, of
//! objects `{"type", "data", ...}` or of the envelopes `eddy export` writes. Each is
//! turned into what a reducer on the server sees: the data by its content type through
//! the server's own conversion ([`for_reducer`]), a factory substream's args as
//! `event.args`, the event's own id, time, index and stream.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine as _;
use eddy_engine::event::{ContentType, DataKind};
use eddy_engine::path::{Args, Resource, StreamPath};
use eddy_engine::reducers::for_reducer;
use eddy_runtime_js::EventIn;
use serde_json::Value;

/// One event to fold, with everything the sandbox's event object holds.
pub(super) struct Event {
    /// Where it is in the file (0-based), for messages.
    pub(super) at: usize,
    /// `event.stream`: `acct/strm`, or `acct/strm(args)` on a factory.
    pub(super) stream: String,
    /// The substream's canonical args (`'c1',2`), on a factory.
    pub(super) args: Option<String>,
    /// `event.args`, as a JSON array.
    args_json: Option<String>,
    pub(super) index: i64,
    id: String,
    event_type: String,
    timestamp: i64,
    content_type: String,
    data_json: String,
    encoding: Option<&'static str>,
}

impl Event {
    /// The event as the sandbox takes it, the fields as the server fills them.
    pub(super) fn input(&self) -> EventIn<'_> {
        EventIn {
            stream: &self.stream,
            index: self.index,
            id: &self.id,
            event_type: &self.event_type,
            timestamp: self.timestamp,
            content_type: &self.content_type,
            data_json: &self.data_json,
            encoding: self.encoding,
            args_json: self.args_json.as_deref(),
        }
    }
}

/// The events of `path`, in order; `name` (the reducer's) names the stream of events
/// that give none (`test/{name}`).
pub(super) fn read(path: &Path, name: &str) -> Result<Vec<Event>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let values: Vec<Value> = match serde_json::from_str(&text) {
        Ok(Value::Array(events)) => events,
        _ => text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(n, l)| {
                serde_json::from_str(l)
                    .with_context(|| format!("{} line {} is not JSON", path.display(), n + 1))
            })
            .collect::<Result<_>>()?,
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let mut events = Vec::with_capacity(values.len());
    // the next index of each substream ("" for a plain stream), for events without one
    let mut next: HashMap<String, i64> = HashMap::new();
    // the stream (without args) of the first event, and whether it is a factory's
    let mut first: Option<(String, bool)> = None;
    for (at, v) in values.iter().enumerate() {
        let e = one(at, v, name, now, &mut next)
            .with_context(|| format!("event {at} of {}", path.display()))?;
        let root = e.stream.split('(').next().unwrap_or("").to_owned();
        match &first {
            None => first = Some((root, e.args.is_some())),
            Some((r, factory)) => {
                if *factory != e.args.is_some() {
                    bail!(
                        "event {at} of {} {} args while event 0 {}: a factory's events all \
                         belong to substreams, a plain stream's to none",
                        path.display(),
                        if e.args.is_some() { "has" } else { "has no" },
                        if *factory { "has" } else { "has none" },
                    );
                }
                if *r != root && v.get("stream").is_some() {
                    bail!(
                        "event {at} of {} is of {root}, event 0 of {r}: a reducer folds \
                         one stream (export one stream, not an account)",
                        path.display()
                    );
                }
            }
        }
        events.push(e);
    }
    Ok(events)
}

/// One event of the file, at position `at`.
fn one(
    at: usize,
    v: &Value,
    name: &str,
    now: i64,
    next: &mut HashMap<String, i64>,
) -> Result<Event> {
    let Value::Object(o) = v else {
        bail!("is {v}, not an object {{\"type\", \"data\", ...}}");
    };
    let text = |field: &str| -> Result<Option<&str>> {
        match o.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => bail!("\"{field}\" must be a string, not {other}"),
        }
    };
    // the stream an envelope names, and the substream's args: `args` (an array, or
    // the text between the parentheses) or the envelope's stream's
    let named: Option<StreamPath> = match text("stream")? {
        None => None,
        Some(s) => match eddy_engine::path::parse(&format!("/{s}")) {
            Ok(Resource::Stream(p)) => Some(p),
            Ok(_) => bail!("\"stream\" {s:?} is not acct/strm or acct/strm(args)"),
            Err(e) => bail!("\"stream\" {s:?} is not acct/strm or acct/strm(args): {e}"),
        },
    };
    let args: Option<Args> = match o.get("args") {
        None | Some(Value::Null) => named.as_ref().and_then(|p| p.args.clone()),
        Some(Value::Array(values)) => {
            Some(Args::from_json(values).map_err(|e| anyhow!("\"args\": {e}"))?)
        }
        Some(Value::String(s)) => Some(Args::parse(s).map_err(|e| anyhow!("\"args\" {s:?}: {e}"))?),
        Some(other) => bail!(
            "\"args\" must be an array of the substream's args or their text ('a',1), \
             not {other}"
        ),
    };
    let canonical = args.as_ref().map(Args::canonical);
    let stream = match &named {
        Some(p) => StreamPath {
            args: args.clone(),
            ..p.clone()
        }
        .to_string(),
        None => match &canonical {
            Some(c) => format!("test/{name}({c})"),
            None => format!("test/{name}"),
        },
    };
    let key = canonical.clone().unwrap_or_default();
    let index = match o.get("index") {
        None | Some(Value::Null) => *next.get(&key).unwrap_or(&0),
        Some(Value::Number(n)) if n.as_u64().is_some() => n.as_u64().unwrap_or(0) as i64,
        Some(other) => bail!("\"index\" must be a whole number from 0, not {other}"),
    };
    next.insert(key, index + 1);
    let id = text("id")?
        .map(str::to_owned)
        .unwrap_or_else(|| format!("00000000-0000-7000-8000-{at:012}"));
    let timestamp = match o.get("timestamp") {
        None | Some(Value::Null) => now,
        Some(Value::Number(n)) if n.as_i64().is_some() => n.as_i64().unwrap_or(now),
        Some(Value::String(t)) => eddy_engine::event::parse_timestamp("timestamp", t)
            .map_err(|e| anyhow!("{}", e.message))?,
        Some(other) => bail!("\"timestamp\" must be unix milliseconds or RFC 3339, not {other}"),
    };
    let content_type = ContentType::parse(Some(text("contentType")?.unwrap_or("application/json")))
        .map_err(|e| anyhow!("\"contentType\": {}", e.message))?;
    let bytes = data(o, &content_type)?;
    let (data_json, encoding) = for_reducer(&content_type.value, &bytes);
    Ok(Event {
        at,
        stream,
        args: canonical,
        args_json: args.map(|a| a.to_json().to_string()),
        index,
        id,
        event_type: text("type")?.unwrap_or("event").to_owned(),
        timestamp,
        content_type: content_type.value,
        data_json: data_json.into_owned(),
        encoding,
    })
}

/// The stored bytes of an event's `data`, as an export writes it (and a batch append
/// reads it): JSON as the value itself, text as a string, other bytes (or any data with
/// `"encoding": "base64"`) as base64.
fn data(o: &serde_json::Map<String, Value>, content_type: &ContentType) -> Result<Vec<u8>> {
    let data = o.get("data").unwrap_or(&Value::Null);
    let base64 = match o.get("encoding") {
        None | Some(Value::Null) => content_type.kind == DataKind::Binary,
        Some(Value::String(e)) if e == "base64" => true,
        Some(other) => bail!("\"encoding\" is {other}; only \"base64\" is known"),
    };
    if !base64 && content_type.kind == DataKind::Json {
        return Ok(data.to_string().into_bytes());
    }
    let Value::String(s) = data else {
        bail!(
            "\"data\" must be a string for contentType {} ({})",
            content_type.value,
            if base64 {
                "base64 of the bytes"
            } else {
                "the text"
            }
        );
    };
    if !base64 {
        return Ok(s.clone().into_bytes());
    }
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map_err(|e| anyhow!("\"data\" is not valid base64: {e}"))
}
