//! `GET/PUT/PATCH /{acct}/{strm}/settings` (API §9): PUT replaces the document (fields
//! not given return to their defaults), PATCH changes only the fields given; both
//! create the stream when it does not exist yet.

use axum::body::Body;
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use eddy_engine::SettingsRequest;
use eddy_engine::path::StreamPath;
use serde_json::{Map, Value};

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::params::Params;

/// Settings documents are small; anything larger is refused.
const MAX_SETTINGS_BYTES: usize = 64 * 1024;

fn stream_only(path: &StreamPath) -> ApiResult<()> {
    if path.args.is_some() {
        return Err(ApiError::invalid(format!(
            "settings belong to the stream, not to a substream: use /{}/{}/settings",
            path.account, path.stream
        )));
    }
    Ok(())
}

pub async fn get(state: AppState, path: StreamPath, uri: &Uri) -> ApiResult<Response> {
    stream_only(&path)?;
    Params::parse(uri)?.finish()?;
    let resolved = state.engine.resolve_existing(&path).await?;
    Ok(axum::Json(resolved.info.settings).into_response())
}

pub async fn put(
    state: AppState,
    path: StreamPath,
    uri: &Uri,
    body: Body,
    replace: bool,
) -> ApiResult<Response> {
    stream_only(&path)?;
    Params::parse(uri)?.finish()?;
    let bytes = crate::body::read(&state, body, MAX_SETTINGS_BYTES, "settings").await?;
    let fields: Map<String, Value> = match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(m)) => m,
        Ok(other) => {
            return Err(ApiError::invalid(format!(
                "settings must be a JSON object, not {other}"
            )));
        }
        Err(e) if e.to_string().starts_with("recursion limit exceeded") => {
            return Err(ApiError::invalid(format!(
                "settings nest deeper than 128 levels of arrays and objects (at line {}, \
                 column {}): the metadata field, the only one that takes any JSON, must nest \
                 less",
                e.line(),
                e.column()
            )));
        }
        Err(e) => {
            return Err(ApiError::invalid(format!(
                "settings are not valid JSON: {e}"
            )));
        }
    };
    let settings = state
        .engine
        .put_settings(SettingsRequest {
            stream: path,
            fields,
            replace,
        })
        .await?;
    Ok(axum::Json(settings).into_response())
}
