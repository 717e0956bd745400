//! Listings: `GET /{acct}` (the account's streams) and `GET /{acct}/{strm}/substreams`
//! (a factory's substreams), both paged with `limit` and `after` and a `Link` header.

use axum::http::{HeaderMap, HeaderValue, Uri, header};
use axum::response::{IntoResponse, Response};
use eddy_engine::path::{AccountName, StreamPath};
use serde_json::json;

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::params::{DEFAULT_LIMIT, MAX_LIMIT, Params};

pub fn with_next(body: serde_json::Value, next: Option<String>) -> Response {
    let mut resp = axum::Json(body).into_response();
    if let Some(link) = next
        && let Ok(v) = HeaderValue::from_str(&format!("<{link}>; rel=\"next\""))
    {
        resp.headers_mut().insert(header::LINK, v);
    }
    resp
}

pub async fn list(
    state: AppState,
    account: AccountName,
    uri: &Uri,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    if crate::consumers::sse::wanted(headers) {
        let follow = eddy_engine::consumers::Follow::Account(account);
        return crate::consumers::sse::subscribe(state, follow, uri, headers).await;
    }
    let mut q = Params::parse(uri)?;
    let limit = q.limit()?.unwrap_or(DEFAULT_LIMIT).min(MAX_LIMIT);
    let after = q.take("after").unwrap_or_default();
    q.finish()?;
    let mut streams = state
        .engine
        .list_streams(account.as_str(), &after, limit + 1)
        .await?;
    let more = streams.len() > limit;
    streams.truncate(limit);
    let next = more.then(|| streams.last()).flatten().map(|s| {
        format!(
            "/{account}?limit={limit}&after={}",
            eddy_engine::query::encode(&s.name)
        )
    });
    // the same URL answers an event stream to `Accept: text/event-stream`
    let mut response = with_next(json!(streams), next);
    response
        .headers_mut()
        .append(header::VARY, HeaderValue::from_static("accept"));
    Ok(response)
}

pub async fn substreams(state: AppState, path: StreamPath, uri: &Uri) -> ApiResult<Response> {
    if path.args.is_some() {
        return Err(ApiError::invalid(format!(
            "substreams are listed on the factory: /{}/{}/substreams",
            path.account, path.stream
        )));
    }
    let mut q = Params::parse(uri)?;
    let limit = q.limit()?.unwrap_or(DEFAULT_LIMIT).min(MAX_LIMIT);
    let after = q.number("after")?.unwrap_or(0) as i64;
    q.finish()?;
    let resolved = state.engine.resolve_existing(&path).await?;
    if !resolved.info.factory {
        return Err(ApiError::invalid(format!(
            "{path} is a plain stream, not a factory, so it has no substreams"
        )));
    }
    let mut subs = state
        .engine
        .list_substreams(resolved.info.id, after, limit + 1)
        .await?;
    let more = subs.len() > limit;
    subs.truncate(limit);
    let next = more
        .then(|| subs.last())
        .flatten()
        .map(|s| format!("{}/substreams?limit={limit}&after={}", path.url(), s.id));
    let items: Vec<_> = subs
        .iter()
        .map(|s| {
            json!({
                "stream": format!("{path}({})", s.args),
                "args": s.args,
                "events": s.events,
                "lastIndex": s.last_index,
                "lastTimestamp": s.last_timestamp,
            })
        })
        .collect();
    Ok(with_next(json!(items), next))
}
