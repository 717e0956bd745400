//! Event types (API §6): `PUT /{acct}/{strm}:{type}` with a JTD schema (or
//! `{"import": "/acct2/strm2:type"}`), `GET` of the schema (`.json` too) or of its
//! TypeScript declaration (`.ts`), `DELETE`.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use eddy_engine::access::{Credentials, Need, Target};
use eddy_engine::path::{self, Resource, StreamPath, TypeFormat};
use serde_json::Value;

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::params::Params;

/// Schemas are small documents; anything larger is refused.
const MAX_SCHEMA_BYTES: usize = 64 * 1024;

fn stream_only(path: &StreamPath, event_type: &str) -> ApiResult<()> {
    if path.args.is_some() {
        return Err(ApiError::invalid(format!(
            "event types belong to the stream, not to a substream: use /{}/{}:{event_type}",
            path.account, path.stream
        )));
    }
    Ok(())
}

fn location(path: &StreamPath, event_type: &str) -> String {
    let encoded: String =
        percent_encoding::utf8_percent_encode(event_type, percent_encoding::NON_ALPHANUMERIC)
            .collect();
    format!("{}:{encoded}", path.url())
}

pub async fn put(
    state: AppState,
    creds: &Credentials,
    path: StreamPath,
    event_type: String,
    uri: &Uri,
    body: Body,
) -> ApiResult<Response> {
    stream_only(&path, &event_type)?;
    Params::parse(uri)?.finish()?;
    let bytes = crate::body::read(&state, body, MAX_SCHEMA_BYTES, "a schema").await?;
    let doc: Value = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError(
            eddy_engine::EngineError::invalid(format!(
                "the schema is not valid JSON: {e}; send a JSON Type Definition (RFC 8927) \
                 document, or {{\"import\": \"/acct/strm:type\"}}"
            ))
            .with("field", "schema"),
        )
    })?;
    let (schema, imported) = match doc.as_object().and_then(|m| m.get("import")) {
        Some(from) if doc.as_object().is_some_and(|m| m.len() == 1) => {
            let (schema, from) = import(&state, creds, from).await?;
            (schema, Some(from))
        }
        _ => (doc, None),
    };
    let created = state
        .engine
        .put_type(&path, &event_type, &schema, imported)
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut resp = (status, axum::Json(schema)).into_response();
    if let Ok(v) = HeaderValue::from_str(&location(&path, &event_type)) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    Ok(resp)
}

/// Reads the schema `from` names (`/acct/strm:type`), which the request must be
/// allowed to read; answers it and the canonical name of where it came from.
async fn import(state: &AppState, creds: &Credentials, from: &Value) -> ApiResult<(Value, String)> {
    let bad = |why: String| {
        ApiError(
            eddy_engine::EngineError::invalid(why)
                .with("field", "import")
                .with("value", from.clone()),
        )
    };
    let Some(text) = from.as_str() else {
        return Err(bad(format!(
            "\"import\" must name an event type such as \"/acme/clicks:click\", not {from}"
        )));
    };
    let (stream, event_type) = match path::parse(text) {
        Ok(Resource::EventType {
            stream,
            event_type,
            format: None | Some(TypeFormat::Json),
        }) if stream.args.is_none() => (stream, event_type),
        _ => {
            return Err(bad(format!(
                "\"import\" is \"{text}\", which is not an event type path such as \
                 \"/acme/clicks:click\""
            )));
        }
    };
    state
        .engine
        .authorize(creds, Target::Stream(&stream), Need::Read)
        .await?;
    let def = state.engine.event_type(&stream, &event_type).await?;
    Ok((
        def.schema().clone(),
        format!("/{}/{}:{event_type}", stream.account, stream.stream),
    ))
}

pub async fn get(
    state: AppState,
    path: StreamPath,
    event_type: String,
    format: Option<TypeFormat>,
    uri: &Uri,
) -> ApiResult<Response> {
    stream_only(&path, &event_type)?;
    Params::parse(uri)?.finish()?;
    let def = state.engine.event_type(&path, &event_type).await?;
    Ok(match format {
        None | Some(TypeFormat::Json) => axum::Json(def.schema().clone()).into_response(),
        Some(TypeFormat::Ts) => (
            [(
                header::CONTENT_TYPE,
                "application/typescript; charset=utf-8",
            )],
            def.typescript(&event_type),
        )
            .into_response(),
    })
}

/// `GET /{acct}/{strm}/types`: the stream's event types, by name, each with its
/// schema and generated TypeScript.
pub async fn list(state: AppState, path: StreamPath, uri: &Uri) -> ApiResult<Response> {
    stream_only(&path, "{type}")?;
    Params::parse(uri)?.finish()?;
    let types = state.engine.event_types(&path).await?;
    let list: Vec<serde_json::Value> = types
        .iter()
        .map(|(name, def)| {
            serde_json::json!({
                "name": name,
                "schema": def.schema(),
                "typescript": def.typescript(name),
            })
        })
        .collect();
    Ok(axum::Json(list).into_response())
}

pub async fn delete(
    state: AppState,
    path: StreamPath,
    event_type: String,
    uri: &Uri,
) -> ApiResult<Response> {
    stream_only(&path, &event_type)?;
    Params::parse(uri)?.finish()?;
    state.engine.delete_type(&path, &event_type).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
