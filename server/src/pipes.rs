//! Pipes (API §8): `PUT`, `GET` and `DELETE /{acct}/{strm}/pipe/{acct2}/{strm2}`, and
//! the pipe's log at `/{acct}/{strm}/logs/pipe/{acct2}/{strm2}`.

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use eddy_engine::path::StreamPath;
use eddy_engine::pipes::PipeRequest;

use crate::AppState;
use crate::error::ApiResult;
use crate::params::Params;

/// `PUT`: 201 with the pipe's status when it is new, 200 when it replaced the code and
/// selector of the pipe between the same streams (which keeps its cursor).
pub async fn put(
    state: AppState,
    from: StreamPath,
    to: StreamPath,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let mut q = Params::parse(uri)?;
    let selector = q.selector()?;
    let replay_from = q.number("replay-from")?;
    q.finish()?;
    let code = crate::code::read(&state, headers, body, "pipe function").await?;
    let location = format!("{}/pipe{}", from.url(), to.url());
    let (status, created) = state
        .engine
        .put_pipe(PipeRequest {
            from,
            to,
            selector,
            code,
            replay_from,
        })
        .await?;
    let code = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((code, [(header::LOCATION, location)], axum::Json(status)).into_response())
}

pub async fn get(
    state: AppState,
    from: StreamPath,
    to: StreamPath,
    uri: &Uri,
) -> ApiResult<Response> {
    Params::parse(uri)?.finish()?;
    let status = state.engine.pipe(&from, &to).await?;
    Ok(axum::Json(status).into_response())
}

/// `GET /{acct}/{strm}/pipes`: the pipes from the stream (from a factory, also those
/// from its substreams), each with its status.
pub async fn list(state: AppState, from: StreamPath, uri: &Uri) -> ApiResult<Response> {
    Params::parse(uri)?.finish()?;
    Ok(axum::Json(state.engine.pipes_from(&from).await?).into_response())
}

pub async fn delete(
    state: AppState,
    from: StreamPath,
    to: StreamPath,
    uri: &Uri,
) -> ApiResult<Response> {
    Params::parse(uri)?.finish()?;
    state.engine.delete_pipe(&from, &to).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The pipe's log, read like any stream (API §3), and followed with SSE.
pub async fn logs(
    state: AppState,
    from: StreamPath,
    to: StreamPath,
    uri: &Uri,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    let from = state.engine.pipe_origin(&from)?;
    crate::events::read::get(state, from.pipe_logs(&to), uri, headers).await
}
