//! Splices (API §12): `POST /{acct}/{strm}/splices` (a map function; answers the
//! preview), `GET .../splices[/{id}]`, `POST .../splices/{id}/approve` and `DELETE
//! .../splices/{id}` (reject). The work is the engine's (`eddy_engine::splices`).

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use eddy_engine::path::StreamPath;
use eddy_engine::splices::{SpliceRequest, SpliceView};
use serde_json::{Value, json};

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::params::Params;

fn view(stream: &StreamPath, v: &SpliceView) -> Value {
    json!({
        "id": v.id,
        "stream": stream.to_string(),
        "status": v.status,
        "selector": v.selector,
        "createdAt": v.created_at,
        "decidedAt": v.decided_at,
        "replaced": v.version.map(|n| format!("{}@{n}", stream)),
        "preview": v.preview,
    })
}

pub async fn create(
    state: AppState,
    path: StreamPath,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let mut q = Params::parse(uri)?;
    let selector = q.selector()?;
    q.finish()?;
    if !selector.subs.is_empty() {
        return Err(ApiError::invalid(format!(
            "selector sub= picks substreams of a factory, and a splice changes a plain \
             stream ({path})"
        )));
    }
    let Some((source, language)) = crate::code::read(&state, headers, body, "map function").await?
    else {
        return Err(ApiError::invalid(
            "the map function is empty: send a module whose default export maps each event \
             to an event, an array of events, or null",
        ));
    };
    let v = state
        .engine
        .create_splice(SpliceRequest {
            stream: path.clone(),
            source,
            language,
            selector,
        })
        .await?;
    let mut resp = (StatusCode::CREATED, axum::Json(view(&path, &v))).into_response();
    if let Ok(location) = HeaderValue::try_from(format!("{}/splices/{}", path.url(), v.id)) {
        resp.headers_mut().insert(header::LOCATION, location);
    }
    Ok(resp)
}

pub async fn list(state: AppState, path: StreamPath, uri: &Uri) -> ApiResult<Response> {
    Params::parse(uri)?.finish()?;
    let all = state.engine.splices(&path).await?;
    let items: Vec<Value> = all.iter().map(|v| view(&path, v)).collect();
    Ok(axum::Json(Value::Array(items)).into_response())
}

pub async fn get(state: AppState, path: StreamPath, id: &str, uri: &Uri) -> ApiResult<Response> {
    Params::parse(uri)?.finish()?;
    let v = state.engine.splice(&path, id).await?;
    Ok(axum::Json(view(&path, &v)).into_response())
}

pub async fn reject(state: AppState, path: StreamPath, id: &str, uri: &Uri) -> ApiResult<Response> {
    Params::parse(uri)?.finish()?;
    let v = state.engine.reject_splice(&path, id).await?;
    Ok(axum::Json(view(&path, &v)).into_response())
}

pub async fn approve(
    state: AppState,
    path: StreamPath,
    id: &str,
    uri: &Uri,
) -> ApiResult<Response> {
    Params::parse(uri)?.finish()?;
    let v = state.engine.approve_splice(&path, id).await?;
    Ok(axum::Json(view(&path, &v)).into_response())
}

/// `DELETE /{acct}/{strm}@{n}`: deletes a history a splice replaced, with its events.
pub async fn delete_history(state: AppState, path: StreamPath, uri: &Uri) -> ApiResult<Response> {
    Params::parse(uri)?.finish()?;
    let events = state.engine.delete_history(&path).await?;
    Ok(axum::Json(json!({ "deleted": path.to_string(), "events": events })).into_response())
}
