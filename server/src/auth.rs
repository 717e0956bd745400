//! Access control at the HTTP edge (API §9): credentials read from the request, and
//! what each resource and method needs, decided by `eddy_engine::access`. Appends are
//! checked by the append handlers themselves: write access first, then the stream's
//! blocklists and rate limit, then types
//! (docs/internals/decisions/0010-append-check-order.md).

use axum::http::{HeaderMap, Method, Uri, header};
use eddy_engine::access::{Credentials, Need, Target};
use eddy_engine::builtins::{self, Builtin};
use eddy_engine::path::{Resource, StreamPath};

use crate::AppState;
use crate::error::{ApiError, ApiResult};

/// Reads the credentials of a request, and removes `?token=` from its URI so that
/// handlers, which refuse unknown parameters, never see it.
pub fn credentials(headers: &HeaderMap, uri: &Uri) -> ApiResult<(Credentials, Uri)> {
    let mut creds = Credentials::default();
    for value in headers.get_all(header::AUTHORIZATION) {
        let v = value
            .to_str()
            .map_err(|_| ApiError::invalid("header Authorization is not visible ASCII text"))?
            .trim();
        let (scheme, rest) = v.split_once(' ').unwrap_or((v, ""));
        let rest = rest.trim();
        // credentials eddy cannot use are refused as none given (401, with the
        // schemes it takes in WWW-Authenticate) when access is checked
        let slot = if rest.is_empty() {
            creds.unusable = Some(format!(
                "header Authorization \"{scheme}\" has no credentials after the scheme"
            ));
            continue;
        } else if scheme.eq_ignore_ascii_case("bearer") {
            &mut creds.bearer
        } else if scheme.eq_ignore_ascii_case("hmac") {
            &mut creds.hmac
        } else {
            creds.unusable = Some(format!(
                "header Authorization uses the scheme \"{scheme}\", which eddy does not take"
            ));
            continue;
        };
        if slot.is_some() {
            return Err(ApiError::invalid(format!(
                "header Authorization gives {scheme} credentials twice"
            )));
        }
        *slot = Some(rest.to_owned());
    }
    let Some(query) = uri.query() else {
        return Ok((creds, uri.clone()));
    };
    let mut kept = Vec::new();
    for part in query.split('&') {
        let key = part.split_once('=').map_or(part, |(k, _)| k);
        if key == "token" {
            let value = form_urlencoded::parse(part.as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            if value.is_empty() {
                return Err(ApiError::invalid("query parameter token is empty"));
            }
            creds.token = Some(value);
        } else {
            kept.push(part);
        }
    }
    if creds.token.is_none() {
        return Ok((creds, uri.clone()));
    }
    let path_and_query = if kept.is_empty() {
        uri.path().to_owned()
    } else {
        format!("{}?{}", uri.path(), kept.join("&"))
    };
    let uri = path_and_query
        .parse()
        .map_err(|_| ApiError::invalid("the request URI is malformed"))?;
    Ok((creds, uri))
}

/// Checks that the request may do `method` to `resource`. Appends (POST of events)
/// pass here and are checked by their handler.
pub async fn check(
    state: &AppState,
    creds: &Credentials,
    resource: &Resource,
    method: &Method,
) -> ApiResult<()> {
    if !state.engine.access_enabled() {
        return Ok(());
    }
    let read = method == Method::GET || method == Method::HEAD;
    let read_or = |other: Need| if read { Need::Read } else { other };
    let engine = &state.engine;
    let stream = |p, need| check_stream(engine, creds, p, need);
    match resource {
        Resource::Account(a) => {
            engine
                .authorize(creds, Target::Account(a), Need::Manage)
                .await?;
        }
        Resource::Stream(_) if method == Method::POST => {}
        Resource::EventType { format: None, .. } if method == Method::POST => {}
        // reads of events, states and schemas; their other methods manage
        Resource::Stream(p)
        | Resource::Event(p, _)
        | Resource::Substreams(p)
        | Resource::Reducer(p, _)
        | Resource::EventType { stream: p, .. } => stream(p, read_or(Need::Manage)).await?,
        Resource::Settings(p)
        | Resource::Reducers(p)
        | Resource::Logs(p)
        | Resource::Webhooks(p)
        | Resource::Webhook(p, _)
        | Resource::Pipes(p)
        | Resource::Types(p)
        | Resource::WebhookResume(p, _)
        | Resource::WebhookPause(p, _)
        | Resource::WebhookReplay(p, _)
        // splices: the owner's alone (never an HMAC token, which manages nothing)
        | Resource::Splices(p)
        | Resource::Splice(p, _)
        | Resource::SpliceApprove(p, _) => stream(p, Need::Manage).await?,
        Resource::Pipe { from, to } | Resource::PipeLogs { from, to } => {
            // a pipe belongs to its origin's account and appends to its destination;
            // from a cron stream (which everyone may read), it belongs to the
            // destination's account: one who may only append there could otherwise
            // replace its owner's cron pipe, or replay it to recall what it wrote
            let cron = matches!(builtins::builtin(from), Ok(Builtin::Cron(_)));
            // the destination's owner may remove a pipe into its stream, which another
            // account made while it was open to them
            let removing = matches!(resource, Resource::Pipe { .. }) && *method == Method::DELETE;
            if !cron {
                match stream(from, Need::Manage).await {
                    Err(_) if removing && stream(to, Need::Manage).await.is_ok() => return Ok(()),
                    other => other?,
                }
            }
            let creating = matches!(resource, Resource::Pipe { .. }) && *method == Method::PUT;
            if cron {
                stream(to, Need::Manage).await?;
            } else if creating {
                stream(to, Need::Write).await?;
            }
        }
    }
    Ok(())
}

/// Checks that the request may manage stream `p` (what its owner alone may do), for
/// parts of a resource that are not public even where the resource is readable (a
/// reducer's `?source`).
pub async fn owner(state: &AppState, creds: &Credentials, p: &StreamPath) -> ApiResult<()> {
    if !state.engine.access_enabled() {
        return Ok(());
    }
    check_stream(&state.engine, creds, p, Need::Manage).await
}

/// Checks a stream target: cron streams are public to read; account events belong to
/// their account; other streams follow their account and settings.
async fn check_stream(
    engine: &eddy_engine::Engine,
    creds: &Credentials,
    p: &StreamPath,
    need: Need,
) -> ApiResult<()> {
    match builtins::builtin(p) {
        Ok(Builtin::Cron(_)) if need != Need::Manage => {
            engine.check_credentials(creds)?;
            Ok(())
        }
        Ok(Builtin::Events(a)) => {
            engine
                .authorize(creds, Target::Account(&a), Need::Manage)
                .await?;
            Ok(())
        }
        _ => {
            engine.authorize(creds, Target::Stream(p), need).await?;
            Ok(())
        }
    }
}
