//! The admin API (API §9): `POST /api/accounts` (the admin token only), and an
//! account's keys under `/api/accounts/{acct}/keys` (the admin token or one of the
//! account's own keys). Keys are shown once, when created. Without an admin token the
//! server runs open and has no admin API.

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use eddy_engine::EngineError;
use eddy_engine::access::{Credentials, Need, Target};
use eddy_engine::path::AccountName;
use serde_json::{Value, json};

use crate::AppState;
use crate::auth;
use crate::error::{ApiError, ApiResult};

/// The 404 for a path under `/api` that is not an admin endpoint (in open mode, the
/// 404 of every `/api` path: there is no admin API).
pub fn unknown_endpoint(state: &AppState) -> ApiError {
    if !state.engine.access_enabled() {
        return no_admin_api();
    }
    ApiError(EngineError::not_found(
        "no such admin endpoint: the admin API has GET and POST /api/accounts, GET and \
         POST /api/accounts/{acct}/keys, and DELETE /api/accounts/{acct}/keys/{id}",
    ))
}

/// An open server's `/api/accounts`: the listing, and for any other method the 404
/// of the admin API it does not have.
pub async fn open_accounts(
    method: Method,
    state: State<AppState>,
    headers: HeaderMap,
    uri: Uri,
) -> ApiResult<Response> {
    if method != Method::GET && method != Method::HEAD {
        return Err(unknown_endpoint(&state));
    }
    list_accounts(state, headers, uri).await
}

/// Whether a request path is under `/api` (its first segment, percent-decoded).
pub fn is_api_path(path: &str) -> bool {
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    percent_encoding::percent_decode_str(first).decode_utf8_lossy() == "api"
}

/// An admin endpoint's route with its methods: any other method is 405 naming
/// `allowed`, in the `Allow` header and the message.
pub fn endpoint(methods: MethodRouter<AppState>, allowed: &'static str) -> MethodRouter<AppState> {
    methods.fallback(move |method: Method| async move { ApiError::method(&method, allowed) })
}

/// Admin request bodies are tiny JSON documents; anything larger is refused.
const MAX_ADMIN_BODY: usize = 16 * 1024;

/// The path segments of an admin route, or a JSON 400 when they are not valid
/// percent-encoded UTF-8.
fn path_arg<T>(p: Result<Path<T>, PathRejection>) -> ApiResult<T> {
    p.map(|Path(v)| v).map_err(|e| {
        ApiError::invalid(format!(
            "the path is not valid: {} (path segments are percent-encoded UTF-8)",
            e.body_text()
        ))
    })
}

fn no_admin_api() -> ApiError {
    ApiError(EngineError::not_found(
        "the admin API needs an admin token: this server runs open (every request is \
         allowed), so it has no accounts or keys; start it with --admin-token or \
         EDDY_ADMIN_TOKEN",
    ))
}

/// Checks the server runs with an admin token, and reads the credentials.
fn open(state: &AppState, headers: &HeaderMap, uri: &Uri) -> ApiResult<Credentials> {
    if !state.engine.access_enabled() {
        return Err(no_admin_api());
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
    body: Body,
) -> ApiResult<Response> {
    let creds = open(&state, &headers, &uri)?;
    state.engine.authorize_admin(&creds)?;
    let body = crate::body::read(&state, body, MAX_ADMIN_BODY, "an admin request").await?;
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
    acct: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    uri: Uri,
    body: Body,
) -> ApiResult<Response> {
    let acct = keys_of(&state, &headers, &uri, &path_arg(acct)?).await?;
    let body = crate::body::read(&state, body, MAX_ADMIN_BODY, "an admin request").await?;
    no_fields(&body)?;
    let (id, key) = state.engine.create_key(&acct).await?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/api/accounts/{acct}/keys/{id}"))],
        Json(json!({"id": id, "key": key})),
    )
        .into_response())
}

/// A key is made from nothing: the body is empty or `{}`, and any field in it is
/// refused, as account creation refuses fields it does not know.
fn no_fields(body: &[u8]) -> ApiResult<()> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    let doc: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::invalid(format!(
            "the body of POST /api/accounts/{{acct}}/keys must be empty or {{}}: {e}"
        ))
    })?;
    let Some(m) = doc.as_object() else {
        return Err(ApiError::invalid(format!(
            "the body of POST /api/accounts/{{acct}}/keys must be empty or {{}}, not {doc}"
        )));
    };
    match m.keys().next() {
        None => Ok(()),
        Some(k) => Err(ApiError(
            EngineError::invalid(format!(
                "field \"{k}\" is not known (a key has no fields: send an empty body or {{}})"
            ))
            .with("field", k.as_str()),
        )),
    }
}

pub async fn list_keys(
    State(state): State<AppState>,
    acct: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    uri: Uri,
) -> ApiResult<Response> {
    let acct = keys_of(&state, &headers, &uri, &path_arg(acct)?).await?;
    let ids = state.engine.key_ids(&acct)?;
    let keys: Vec<Value> = ids.into_iter().map(|id| json!({"id": id})).collect();
    Ok(Json(keys).into_response())
}

pub async fn delete_key(
    State(state): State<AppState>,
    args: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    uri: Uri,
) -> ApiResult<Response> {
    let (acct, id) = path_arg(args)?;
    let acct = keys_of(&state, &headers, &uri, &acct).await?;
    state.engine.delete_key(&acct, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /api/accounts`: the accounts the caller may see (see
/// [`eddy_engine::Engine::visible_accounts`]), on an open server too: the web console
/// starts here, and it tells a key which account it belongs to.
pub async fn list_accounts(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
) -> ApiResult<Response> {
    let (creds, uri) = auth::credentials(&headers, &uri)?;
    if uri.query().is_some_and(|q| !q.is_empty()) {
        return Err(ApiError::invalid(format!(
            "the admin API takes no query parameters (got \"{}\")",
            uri.query().unwrap_or("")
        )));
    }
    let names = state.engine.visible_accounts(&creds).await?;
    let counts: std::collections::HashMap<String, (i64, i64)> = (state.engine)
        .account_counts()
        .await?
        .into_iter()
        .map(|(name, streams, events)| (name, (streams, events)))
        .collect();
    let list: Vec<Value> = (names.into_iter())
        .map(|name| {
            let (streams, events) = counts.get(&name).copied().unwrap_or_default();
            json!({ "name": name, "streams": streams, "events": events })
        })
        .collect();
    Ok(Json(list).into_response())
}

/// `GET /api/cluster`: the live nodes, what each holds leases on, and every lease
/// (admin; anyone on an open server, which listens on loopback only). A server on the
/// embedded database is a cluster of one and answers so.
pub async fn cluster(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
) -> ApiResult<Response> {
    if state.engine.access_enabled() {
        let creds = open(&state, &headers, &uri)?;
        state.engine.authorize_admin(&creds)?;
    }
    let status = match state.engine.cluster_status().await? {
        Some(status) => serde_json::to_value(status)
            .map_err(|e| ApiError(EngineError::internal(e.to_string())))?,
        None => json!({
            "node": null,
            "storage": "embedded",
            "nodes": [],
            "leases": [],
            "message": "this server keeps its data in an embedded database: it is the only node"
        }),
    };
    Ok(Json(status).into_response())
}
