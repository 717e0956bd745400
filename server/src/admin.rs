//! The admin API (API §9): `POST /api/accounts` (the admin token only), and an
//! account's keys under `/api/accounts/{acct}/keys` (the admin token or one of the
//! account's own keys). Keys are shown once, when created. Without an admin token the
//! server runs open and has no admin API.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use eddy_engine::EngineError;
use eddy_engine::access::{Credentials, Need, Target};
use eddy_engine::path::AccountName;
use serde_json::{Value, json};

use crate::AppState;
use crate::auth;
use crate::error::{ApiError, ApiResult};

/// The 404 for a path under `/api` that is not an admin endpoint.
pub fn unknown_endpoint() -> ApiError {
    ApiError(EngineError::not_found(
        "no such admin endpoint: the admin API has POST /api/accounts, GET and POST \
         /api/accounts/{acct}/keys, and DELETE /api/accounts/{acct}/keys/{id}",
    ))
}

/// Checks the server runs with an admin token, and reads the credentials.
fn open(state: &AppState, headers: &HeaderMap, uri: &Uri) -> ApiResult<Credentials> {
    if !state.engine.access_enabled() {
        return Err(ApiError(EngineError::not_found(
            "the admin API needs an admin token: this server runs open (every request is \
             allowed), so it has no accounts or keys; start it with --admin-token or \
             EDDY_ADMIN_TOKEN",
        )));
    }
    let (creds, uri) = auth::credentials(headers, uri)?;
    if uri.query().is_some_and(|q| !q.is_empty()) {
        return Err(ApiError::invalid(format!(
            "the admin API takes no query parameters (got \"{}\")",
            uri.query().unwrap_or("")
        )));
    }
    Ok(creds)
}

fn account(name: &str, field: &str) -> ApiResult<AccountName> {
    AccountName::new(name).map_err(|e| {
        ApiError(
            EngineError::invalid(format!("{e}"))
                .with("field", field)
                .with("value", name),
        )
    })
}

/// An account's keys are managed by the admin or by the account's own keys: checks
/// the request may, and answers the account.
async fn keys_of(
    state: &AppState,
    headers: &HeaderMap,
    uri: &Uri,
    acct: &str,
) -> ApiResult<AccountName> {
    let creds = open(state, headers, uri)?;
    let acct = account(acct, "account")?;
    state
        .engine
        .authorize(&creds, Target::Account(&acct), Need::Manage)
        .await?;
    Ok(acct)
}

pub async fn create_account(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> ApiResult<Response> {
    let creds = open(&state, &headers, &uri)?;
    state.engine.authorize_admin(&creds)?;
    let doc: Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::invalid(format!(
            "the body must be JSON such as {{\"name\": \"acme\"}}: {e}"
        ))
    })?;
    let Some(m) = doc.as_object() else {
        return Err(ApiError::invalid(format!(
            "the body must be a JSON object such as {{\"name\": \"acme\"}}, not {doc}"
        )));
    };
    if let Some(k) = m.keys().find(|k| *k != "name") {
        return Err(ApiError(
            EngineError::invalid(format!(
                "field \"{k}\" is not known (an account has a name)"
            ))
            .with("field", k.as_str()),
        ));
    }
    let name = match m.get("name") {
        Some(Value::String(n)) => account(n, "name")?,
        other => {
            return Err(ApiError(
                EngineError::invalid(format!(
                    "field \"name\" must be an account name ([A-Za-z0-9_-], 1 to 64), not {}",
                    other.map_or("missing".to_owned(), Value::to_string)
                ))
                .with("field", "name"),
            ));
        }
    };
    let key = state.engine.create_account(&name).await?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/{name}"))],
        Json(json!({"name": name.as_str(), "key": key})),
    )
        .into_response())
}

pub async fn create_key(
    State(state): State<AppState>,
    Path(acct): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> ApiResult<Response> {
    let acct = keys_of(&state, &headers, &uri, &acct).await?;
    let (id, key) = state.engine.create_key(&acct).await?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/api/accounts/{acct}/keys/{id}"))],
        Json(json!({"id": id, "key": key})),
    )
        .into_response())
}

pub async fn list_keys(
    State(state): State<AppState>,
    Path(acct): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> ApiResult<Response> {
    let acct = keys_of(&state, &headers, &uri, &acct).await?;
    let ids = state.engine.key_ids(&acct)?;
    let keys: Vec<Value> = ids.into_iter().map(|id| json!({"id": id})).collect();
    Ok(Json(keys).into_response())
}

pub async fn delete_key(
    State(state): State<AppState>,
    Path((acct, id)): Path<(String, String)>,
    headers: HeaderMap,
    uri: Uri,
) -> ApiResult<Response> {
    let acct = keys_of(&state, &headers, &uri, &acct).await?;
    state.engine.delete_key(&acct, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
