//! Atomic batches: `application/vnd.eddy.events+json` (`{"id"?, "type", "data",
//! "timestamp"?, "contentType"?, "metadata"?}`) and EventStoreDB's
//! `application/vnd.eventstore.events+json` (`{"eventId", "eventType", "data",
//! "metadata"}`). One bad event refuses the batch with its position.

use base64::Engine as _;
use bytes::Bytes;
use eddy_engine::EngineError;
use eddy_engine::event::{self, ContentType, DataKind, NewEvent};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::append::AppendInputs;
use crate::error::{ApiError, ApiResult};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EddyEvent<'a> {
    id: Option<String>,
    #[serde(rename = "type")]
    event_type: Option<String>,
    #[serde(borrow)]
    data: &'a RawValue,
    #[serde(borrow)]
    timestamp: Option<&'a RawValue>,
    #[serde(rename = "contentType")]
    content_type: Option<String>,
    /// The event's metadata, as EventStoreDB's batches carry it (so that `eddy
    /// import` restores what an export read); never its `origin`, which only the
    /// server writes.
    #[serde(borrow)]
    metadata: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct EventStoreEvent<'a> {
    #[serde(rename = "eventId")]
    event_id: Option<String>,
    #[serde(rename = "eventType")]
    event_type: Option<String>,
    #[serde(borrow)]
    data: &'a RawValue,
    #[serde(borrow)]
    metadata: Option<&'a RawValue>,
}

/// Parses a batch body into events, all checked.
pub(super) fn parse(
    body: &[u8],
    eventstore: bool,
    inputs: &AppendInputs,
) -> ApiResult<Vec<NewEvent>> {
    if inputs.id.is_some() {
        return Err(ApiError::invalid(
            "Event-Id names one event; in a batch give each event its own \"id\"",
        ));
    }
    let items: Vec<&RawValue> = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid(format!("the batch is not a JSON array of events: {e}")))?;
    if items.is_empty() {
        return Err(ApiError::invalid(
            "the batch is an empty array; send at least one event",
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, raw)| {
            one(raw, eventstore, inputs).map_err(|e| {
                ApiError(
                    e.context(format_args!("event {i} of the batch"))
                        .with("position", i),
                )
            })
        })
        .collect()
}

fn one(raw: &RawValue, eventstore: bool, inputs: &AppendInputs) -> Result<NewEvent, EngineError> {
    let invalid = |e: serde_json::Error| EngineError::invalid(e.to_string());
    if !raw.get().starts_with('{') {
        let shown: String = raw.get().chars().take(40).collect();
        let fields = if eventstore {
            r#"{"eventId", "eventType", "data", "metadata"}"#
        } else {
            r#"{"id"?, "type", "data", "timestamp"?, "contentType"?, "metadata"?}"#
        };
        return Err(EngineError::invalid(format!(
            "is {shown}, not an event object {fields}"
        )));
    }
    let (id, ty, data, ts, ct, metadata) = if eventstore {
        let e: EventStoreEvent = serde_json::from_str(raw.get()).map_err(invalid)?;
        (
            e.event_id,
            e.event_type,
            e.data,
            None,
            None,
            e.metadata.map(|m| m.get().to_owned()),
        )
    } else {
        let e: EddyEvent = serde_json::from_str(raw.get()).map_err(invalid)?;
        (
            e.id,
            e.event_type,
            e.data,
            e.timestamp,
            e.content_type,
            e.metadata.map(|m| m.get().to_owned()),
        )
    };
    if let Some(m) = &metadata {
        event::check_metadata_size(m.len())?;
        // within the default JSON limits, whatever the stream's own for data
        eddy_engine::json::JsonLimits::default().check_metadata(m)?;
    }
    let event_type = ty.or_else(|| inputs.event_type.clone()).unwrap_or_default();
    event::check_type(&event_type)?;
    let ct = match ct {
        // inside a batch a bad content type is a bad event: 400 with its position
        Some(c) => ContentType::parse(Some(&c)).map_err(|e| EngineError::invalid(e.message))?,
        None => ContentType::json(),
    };
    // the data itself (size, JSON within the limits, UTF-8 text, type) is checked by the
    // engine's append policy, once
    let bytes = match ct.kind {
        DataKind::Json => Bytes::copy_from_slice(data.get().as_bytes()),
        kind => {
            let s: String = serde_json::from_str(data.get()).map_err(|_| {
                EngineError::invalid(format!(
                    "\"data\" must be a string for contentType {} ({})",
                    ct.value,
                    if kind == DataKind::Text {
                        "the text"
                    } else {
                        "base64 of the bytes"
                    }
                ))
            })?;
            if kind == DataKind::Text {
                Bytes::from(s)
            } else {
                Bytes::from(
                    base64::engine::general_purpose::STANDARD
                        .decode(s.trim())
                        .map_err(|e| {
                            EngineError::invalid(format!("\"data\" is not valid base64: {e}"))
                        })?,
                )
            }
        }
    };
    let id = id.map(|v| event::parse_event_id("id", &v)).transpose()?;
    let timestamp = match ts {
        Some(raw) => {
            let text = match serde_json::from_str::<serde_json::Value>(raw.get()) {
                Ok(serde_json::Value::String(t)) => t,
                Ok(serde_json::Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
                _ => {
                    return Err(EngineError::invalid(format!(
                        "\"timestamp\" {} must be unix milliseconds (a whole number) or an \
                         RFC 3339 string",
                        raw.get()
                    )));
                }
            };
            Some(event::parse_timestamp("timestamp", &text)?)
        }
        None => inputs.timestamp,
    };
    Ok(NewEvent {
        id,
        event_type,
        content_type: ct.value,
        data: bytes,
        timestamp,
        metadata,
        origin: inputs.origin.clone(),
    })
}
