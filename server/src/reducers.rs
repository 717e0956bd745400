//! Reducers (API §7): `PUT` code, `GET` state (with `Reducer-Index`, `min-index`,
//! `?source`, and a paged listing on a factory), `DELETE`, and
//! `GET /{acct}/{strm}/reducers` with each reducer's status.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use eddy_engine::access::Credentials;
use eddy_engine::path::{ReducerName, StreamPath};
use eddy_engine::reducers::DeployRequest;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::params::{DEFAULT_LIMIT, MAX_LIMIT, Params};

/// How long `min-index` waits unless `wait` says otherwise, and at most.
const DEFAULT_WAIT_MS: u64 = 5_000;
const MAX_WAIT_MS: u64 = 60_000;

fn stream_only(path: &StreamPath, name: &ReducerName) -> ApiResult<()> {
    if path.args.is_some() {
        return Err(ApiError::invalid(format!(
            "a reducer is deployed on the stream, not on a substream: PUT /{}/{}.{name} \
             (it folds every substream separately)",
            path.account, path.stream
        )));
    }
    Ok(())
}

pub async fn put(
    state: AppState,
    path: StreamPath,
    name: ReducerName,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    stream_only(&path, &name)?;
    let mut q = Params::parse(uri)?;
    let selector = q.selector()?;
    let halt_on_error = match q.take("on-error").as_deref() {
        None | Some("skip") => false,
        Some("halt") => true,
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "query parameter on-error=\"{other}\" must be skip or halt"
            )));
        }
    };
    q.finish()?;
    if !selector.subs.is_empty()
        && !(state.engine.resolve(&path).await?).is_some_and(|r| r.info.factory)
    {
        return Err(ApiError::invalid(format!(
            "selector sub= picks substreams of a factory, and {path} is not a factory (a \
             reducer deployed on a missing stream makes it a plain stream)"
        )));
    }
    let Some((source, language)) = crate::code::read(&state, headers, body, "reducer code").await?
    else {
        return Err(ApiError::invalid(
            "the reducer code is empty: send a module with a default export or one function expression",
        ));
    };
    let selector_query = selector.to_query();
    let deployed = state
        .engine
        .deploy_reducer(DeployRequest {
            stream: path.clone(),
            name: name.clone(),
            source,
            language,
            selector,
            halt_on_error,
        })
        .await?;
    let body = json!({
        "stream": path.to_string(),
        "name": name.as_str(),
        "codeHash": deployed.code_hash,
        "rebuilding": deployed.building,
        "selector": selector_query,
        "onError": if halt_on_error { "halt" } else { "skip" },
    });
    let status = if deployed.building {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, axum::Json(body)).into_response())
}

pub async fn get(
    state: AppState,
    creds: &Credentials,
    path: StreamPath,
    name: ReducerName,
    uri: &Uri,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    if crate::consumers::sse::wanted(headers) {
        return crate::consumers::live_state::subscribe(state, path, name, uri, headers).await;
    }
    let mut q = Params::parse(uri)?;
    if q.flag("source")? {
        q.finish()?;
        let stream = StreamPath { args: None, ..path };
        // the code is the account's alone, also where states are public to read
        crate::auth::owner(&state, creds, &stream).await?;
        let (source, content_type) = state.engine.reducer_source(&stream, &name).await?;
        return Ok(([(header::CONTENT_TYPE, content_type)], source).into_response());
    }
    let min_index = q.number("min-index")?;
    let at = q.number("at")?;
    let wait = q
        .number("wait")?
        .unwrap_or(DEFAULT_WAIT_MS)
        .min(MAX_WAIT_MS);
    let resolved = state.engine.resolve_existing(&path).await?;
    if resolved.info.factory && path.args.is_none() {
        let limit = q.limit()?.unwrap_or(DEFAULT_LIMIT).min(MAX_LIMIT);
        let after = q.number("after")?.unwrap_or(0) as i64;
        q.finish()?;
        if min_index.is_some() || at.is_some() {
            let param = if at.is_some() { "at" } else { "min-index" };
            return Err(ApiError::invalid(format!(
                "{param} applies to one substream's state: name the substream, as in \
                 /acct/strm('id').reducer"
            )));
        }
        // one more than the page, to tell whether another page follows (as listings do)
        let mut states = state
            .engine
            .reducer_states(&path, &name, after, limit + 1)
            .await?;
        let more = states.len() > limit;
        states.truncate(limit);
        let next = more
            .then(|| states.last())
            .flatten()
            .map(|s| format!("{}.{name}?limit={limit}&after={}", path.url(), s.sid));
        let items: Vec<Value> = states
            .into_iter()
            .map(|s| {
                json!({
                    "stream": format!("{path}({})", s.args),
                    // the canonical args text, as `/substreams` shows them
                    "args": s.args,
                    "index": s.index,
                    "state": s.json.as_deref().and_then(|j| serde_json::from_str::<Value>(j).ok()),
                })
            })
            .collect();
        return Ok(crate::streams::with_next(Value::Array(items), next));
    }
    q.finish()?;
    let wait = Duration::from_millis(wait);
    let answer = match at {
        Some(_) if min_index.is_some() => {
            return Err(ApiError::invalid(
                "at= and min-index= cannot be combined: at= answers the state as of one \
                 index, and waits for the reducer to fold it",
            ));
        }
        Some(at) => {
            state
                .engine
                .reducer_state_at(&path, &name, at, wait)
                .await?
        }
        None => {
            state
                .engine
                .reducer_state(&path, &name, min_index, wait)
                .await?
        }
    };
    let mut resp = (
        [(header::CONTENT_TYPE, "application/json")],
        answer.json.unwrap_or_else(|| "null".into()),
    )
        .into_response();
    resp.headers_mut()
        .insert("reducer-index", HeaderValue::from(answer.index));
    Ok(resp)
}

pub async fn delete(
    state: AppState,
    path: StreamPath,
    name: ReducerName,
    uri: &Uri,
) -> ApiResult<Response> {
    stream_only(&path, &name)?;
    Params::parse(uri)?.finish()?;
    state.engine.delete_reducer(&path, &name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn status(state: AppState, path: StreamPath, uri: &Uri) -> ApiResult<Response> {
    Params::parse(uri)?.finish()?;
    let list = state.engine.reducer_status(&path).await?;
    let items: Vec<Value> = list
        .into_iter()
        .map(|r| {
            json!({
                "name": r.name,
                "status": if r.halted.is_some() { "halted" } else if r.building { "rebuilding" } else { "running" },
                "codeHash": r.code_hash,
                "position": r.position,
                "index": r.index,
                "lag": r.lag,
                "errors": r.errors,
                "halted": r.halted,
                "selector": r.selector,
                "onError": if r.halt_on_error { "halt" } else { "skip" },
                "liveStates": r.live_states,
            })
        })
        .collect();
    Ok(axum::Json(Value::Array(items)).into_response())
}
