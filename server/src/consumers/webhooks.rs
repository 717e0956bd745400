//! `/{acct}/{strm}[({args})]/webhooks[/{id}[/resume]]` (API §5): create, list, show,
//! delete and resume webhook consumers. Deliveries are the engine's
//! (`eddy_engine::consumers::webhooks`).

use axum::body::Body;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use eddy_engine::consumers::webhooks::NewWebhook;
use eddy_engine::path::StreamPath;
use serde_json::Value;

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::params::Params;

/// A webhook definition is small; anything larger is refused.
const MAX_BODY_BYTES: usize = 16 * 1024;

/// `POST .../webhooks` `{"url", "selector"?, "data"?, "secret"?}` → 201 `{"id", "secret"}`.
pub async fn create(
    state: AppState,
    path: StreamPath,
    uri: &Uri,
    body: Body,
) -> ApiResult<Response> {
    Params::parse(uri)?.finish()?;
    let bytes = crate::body::read(&state, body, MAX_BODY_BYTES, "a webhook").await?;
    let fields = match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(m)) => m,
        Ok(other) => {
            return Err(ApiError::invalid(format!(
                "a webhook is a JSON object like {{\"url\": \"https://...\"}}, not {other}"
            )));
        }
        Err(e) => {
            return Err(ApiError::invalid(format!(
                "the webhook body is not valid JSON: {e}"
            )));
        }
    };
    let mut new = NewWebhook::default();
    for (key, value) in fields {
        match (key.as_str(), value) {
            ("url", Value::String(s)) => new.url = s,
            ("selector", Value::String(s)) => new.selector = s,
            ("selector", Value::Null) => {}
            ("data", Value::Bool(b)) => new.data = b,
            ("secret", Value::String(s)) => new.secret = Some(s),
            ("secret", Value::Null) => {}
            (k @ ("url" | "selector" | "secret"), v) => {
                return Err(ApiError::invalid(format!(
                    "field \"{k}\" must be a string, not {v}"
                )));
            }
            ("data", v) => {
                return Err(ApiError::invalid(format!(
                    "field \"data\" must be true or false, not {v}"
                )));
            }
            (k, _) => {
                return Err(ApiError::invalid(format!(
                    "unknown field \"{k}\"; a webhook has url, selector, data and secret"
                )));
            }
        }
    }
    let created = state.engine.create_webhook(&path, new).await?;
    let location = format!("{}/webhooks/{}", path.url(), created.id);
    let mut resp = (StatusCode::CREATED, axum::Json(created)).into_response();
    if let Ok(v) = axum::http::HeaderValue::from_str(&location) {
        resp.headers_mut().insert(axum::http::header::LOCATION, v);
    }
    Ok(resp)
}

pub async fn list(state: AppState, path: StreamPath, uri: &Uri) -> ApiResult<Response> {
    Params::parse(uri)?.finish()?;
    Ok(axum::Json(state.engine.webhooks(&path).await?).into_response())
}

pub async fn get(state: AppState, path: StreamPath, id: &str, uri: &Uri) -> ApiResult<Response> {
    Params::parse(uri)?.finish()?;
    Ok(axum::Json(state.engine.webhook(&path, id).await?).into_response())
}

pub async fn delete(state: AppState, path: StreamPath, id: &str, uri: &Uri) -> ApiResult<Response> {
    Params::parse(uri)?.finish()?;
    state.engine.delete_webhook(&path, id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST .../webhooks/{id}/replay?from={i}[&to={j}]`: those events are delivered
/// again, in order, with their first deliveries' `webhook-id`s (API §14); `202` once
/// the replay is recorded, the deliveries follow.
pub async fn replay(state: AppState, path: StreamPath, id: &str, uri: &Uri) -> ApiResult<Response> {
    let mut q = Params::parse(uri)?;
    let from = q.number("from")?.ok_or_else(|| {
        ApiError::invalid("a replay needs from={index}: the first index to deliver again")
    })?;
    let to = q.number("to")?;
    q.finish()?;
    let replay = state.engine.replay_webhook(&path, id, from, to).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(replay)).into_response())
}

/// `POST .../webhooks/{id}/pause`: deliveries stop until a resume (a paused webhook
/// is left as it is).
pub async fn pause(state: AppState, path: StreamPath, id: &str, uri: &Uri) -> ApiResult<Response> {
    Params::parse(uri)?.finish()?;
    Ok(axum::Json(state.engine.pause_webhook(&path, id).await?).into_response())
}

/// `POST .../webhooks/{id}/resume`: a paused webhook delivers again from its cursor.
pub async fn resume(state: AppState, path: StreamPath, id: &str, uri: &Uri) -> ApiResult<Response> {
    Params::parse(uri)?.finish()?;
    Ok(axum::Json(state.engine.resume_webhook(&path, id).await?).into_response())
}
