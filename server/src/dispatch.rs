//! The fallback handler: every URL of API §1 is parsed by `eddy_engine::path` and
//! routed here to its resource module by (resource, method).

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use eddy_engine::builtins::{self, Builtin};
use eddy_engine::path::{self, Resource, StreamPath};

use crate::consumers::webhooks;
use crate::error::{ApiError, ApiResult};
use crate::{AppState, auth, events, pipes, reducers, settings, splices, streams, types};

/// Takes the request whole: extracting the method, URI and headers separately would
/// clone the header map of every request.
pub async fn dispatch(State(state): State<AppState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    match route(state, parts.method, parts.uri, parts.headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn route(
    state: AppState,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    // the admin endpoints have routes of their own: any other /api path is a 404
    if crate::admin::is_api_path(uri.path()) {
        return Err(crate::admin::unknown_endpoint(&state));
    }
    let (creds, uri) = auth::credentials(&headers, &uri)?;
    let resource = path::parse(uri.path())?;
    check_account(&state, &resource)?;
    // `curl -T` uploads with PUT: a PUT with ?chunks=true is the append it means
    let appendable = matches!(
        resource,
        Resource::Stream(_) | Resource::EventType { format: None, .. }
    );
    let method = match method {
        Method::PUT if appendable && events::append::is_upload(&uri) => Method::POST,
        m => m,
    };
    let resource = builtin(resource, &method)?;
    auth::check(&state, &creds, &resource, &method).await?;
    let get = method == Method::GET || method == Method::HEAD;
    // a history a splice replaced (`strm@{n}`) is read-only: its events, and no more;
    // its owner may delete it
    if let Some(p) = replaced_history(&resource) {
        match &resource {
            Resource::Stream(p) if method == Method::DELETE => {
                return crate::splices::delete_history(state, p.clone(), &uri).await;
            }
            Resource::Stream(_) if !get => {
                return Err(ApiError::method(&method, "GET, DELETE"));
            }
            Resource::Event(..) if !get => {
                return Err(ApiError::method(&method, "GET"));
            }
            Resource::Stream(_) | Resource::Event(..) => {}
            _ => {
                return Err(ApiError::invalid(format!(
                    "{p} is a history a splice replaced: only its events can be read"
                )));
            }
        }
    }
    match resource {
        Resource::Account(account) if get => streams::list(state, account, &uri, &headers).await,
        Resource::Account(_) => Err(ApiError::method(&method, "GET")),
        Resource::Stream(p) if method == Method::POST => {
            events::append::post(state, creds, p, None, &uri, headers, body).await
        }
        Resource::Stream(p) if get => events::read::get(state, p, &uri, &headers).await,
        // `curl -T` with ?chunks=true is an upload, handled as a POST above
        Resource::Stream(p) if method == Method::PUT => Err(ApiError(
            eddy_engine::error::EngineError::new(
                eddy_engine::error::ErrorCode::MethodNotAllowed,
                format!(
                    "method PUT is not allowed on {p} but as an upload of bytes (curl -T) with \
                     ?chunks=true; allowed: GET, HEAD, POST"
                ),
            )
            .with("allow", "GET, HEAD, POST"),
        )),
        Resource::Stream(_) => Err(ApiError::method(&method, "GET, HEAD, POST")),
        Resource::EventType {
            stream,
            event_type,
            format: None,
        } if method == Method::POST => {
            events::append::post(state, creds, stream, Some(event_type), &uri, headers, body).await
        }
        Resource::Event(p, index) if get => events::read::one(state, p, index, &uri).await,
        Resource::Event(..) => Err(ApiError::method(&method, "GET")),
        Resource::Settings(p) => match method {
            Method::GET | Method::HEAD => settings::get(state, p, &uri).await,
            Method::PUT => settings::put(state, p, &uri, body, true).await,
            Method::PATCH => settings::put(state, p, &uri, body, false).await,
            _ => Err(ApiError::method(&method, "GET, PUT, PATCH")),
        },
        Resource::Substreams(p) if get => streams::substreams(state, p, &uri).await,
        Resource::Substreams(_) => Err(ApiError::method(&method, "GET")),
        Resource::EventType {
            stream,
            event_type,
            format,
        } => match (method.clone(), format) {
            (Method::GET | Method::HEAD, format) => {
                types::get(state, stream, event_type, format, &uri).await
            }
            (Method::PUT, None) => types::put(state, &creds, stream, event_type, &uri, body).await,
            (Method::DELETE, None) => types::delete(state, stream, event_type, &uri).await,
            (_, None) => Err(ApiError::method(&method, "GET, PUT, POST, DELETE")),
            (_, Some(_)) => Err(ApiError::method(&method, "GET")),
        },
        Resource::Reducer(p, name) => match method {
            Method::GET | Method::HEAD => {
                reducers::get(state, &creds, p, name, &uri, &headers).await
            }
            Method::PUT => reducers::put(state, p, name, &uri, &headers, body).await,
            Method::DELETE => reducers::delete(state, p, name, &uri).await,
            _ => Err(ApiError::method(&method, "GET, PUT, DELETE")),
        },
        Resource::Reducers(p) if get => reducers::status(state, p, &uri).await,
        Resource::Reducers(_) => Err(ApiError::method(&method, "GET")),
        Resource::Pipe { from, to } => match method {
            Method::GET | Method::HEAD => pipes::get(state, from, to, &uri).await,
            Method::PUT => pipes::put(state, from, to, &uri, &headers, body).await,
            Method::DELETE => pipes::delete(state, from, to, &uri).await,
            _ => Err(ApiError::method(&method, "GET, PUT, DELETE")),
        },
        Resource::PipeLogs { from, to } if get => {
            pipes::logs(state, from, to, &uri, &headers).await
        }
        Resource::PipeLogs { .. } => Err(ApiError::method(&method, "GET")),
        // a stream's log is a stream of its own, read with the read API of §3
        Resource::Logs(p) if get => events::read::get(state, p.logs(), &uri, &headers).await,
        Resource::Logs(_) => Err(ApiError::method(&method, "GET")),
        Resource::Webhooks(p) => match method {
            Method::GET | Method::HEAD => webhooks::list(state, p, &uri).await,
            Method::POST => webhooks::create(state, p, &uri, body).await,
            _ => Err(ApiError::method(&method, "GET, POST")),
        },
        Resource::Webhook(p, id) => match method {
            Method::GET | Method::HEAD => webhooks::get(state, p, &id, &uri).await,
            Method::DELETE => webhooks::delete(state, p, &id, &uri).await,
            _ => Err(ApiError::method(&method, "GET, DELETE")),
        },
        Resource::WebhookResume(p, id) if method == Method::POST => {
            webhooks::resume(state, p, &id, &uri).await
        }
        Resource::WebhookResume(..) => Err(ApiError::method(&method, "POST")),
        Resource::WebhookPause(p, id) if method == Method::POST => {
            webhooks::pause(state, p, &id, &uri).await
        }
        Resource::WebhookPause(..) => Err(ApiError::method(&method, "POST")),
        Resource::Pipes(p) if get => pipes::list(state, p, &uri).await,
        Resource::Pipes(_) => Err(ApiError::method(&method, "GET")),
        Resource::Types(p) if get => types::list(state, p, &uri).await,
        Resource::Types(_) => Err(ApiError::method(&method, "GET")),
        Resource::WebhookReplay(p, id) if method == Method::POST => {
            webhooks::replay(state, p, &id, &uri).await
        }
        Resource::WebhookReplay(..) => Err(ApiError::method(&method, "POST")),
        Resource::Splices(p) => match method {
            Method::GET | Method::HEAD => splices::list(state, p, &uri).await,
            Method::POST => splices::create(state, p, &uri, &headers, body).await,
            _ => Err(ApiError::method(&method, "GET, POST")),
        },
        Resource::Splice(p, id) => match method {
            Method::GET | Method::HEAD => splices::get(state, p, &id, &uri).await,
            Method::DELETE => splices::reject(state, p, &id, &uri).await,
            _ => Err(ApiError::method(&method, "GET, DELETE")),
        },
        Resource::SpliceApprove(p, id) if method == Method::POST => {
            splices::approve(state, p, &id, &uri).await
        }
        Resource::SpliceApprove(..) => Err(ApiError::method(&method, "POST")),
    }
}

/// Reserved accounts belong to the server: `eddy` holds the builtin streams (see
/// [`builtin`]); the others name server endpoints.
fn check_account(state: &AppState, resource: &Resource) -> ApiResult<()> {
    let account = match resource {
        Resource::Account(a) => a,
        Resource::Stream(p)
        | Resource::Event(p, _)
        | Resource::Reducer(p, _)
        | Resource::Logs(p)
        | Resource::Settings(p)
        | Resource::Substreams(p)
        | Resource::Reducers(p)
        | Resource::Webhooks(p)
        | Resource::Webhook(p, _)
        | Resource::Pipes(p)
        | Resource::Types(p)
        | Resource::WebhookResume(p, _)
        | Resource::WebhookPause(p, _)
        | Resource::WebhookReplay(p, _)
        | Resource::Splices(p)
        | Resource::Splice(p, _)
        | Resource::SpliceApprove(p, _) => &p.account,
        Resource::EventType { stream, .. } => &stream.account,
        Resource::Pipe { from, .. } | Resource::PipeLogs { from, .. } => &from.account,
    };
    if !account.is_reserved() {
        return Ok(());
    }
    if account.as_str() == "api" {
        return Err(crate::admin::unknown_endpoint(state));
    }
    if account.as_str() == builtins::ACCOUNT {
        return Ok(());
    }
    Err(ApiError::invalid(format!(
        "account name \"{account}\" is reserved for the server"
    )))
}

/// The builtin streams of the `eddy` account (API §8) are read, followed and piped
/// from like any stream, in their canonical form (`/eddy/events('acme')` is
/// `/eddy/events(acme)`); only the server writes them. Other resources pass unchanged.
fn builtin(resource: Resource, method: &Method) -> ApiResult<Resource> {
    let canonical = |p: &StreamPath| -> ApiResult<StreamPath> {
        Ok(match builtins::builtin(p)? {
            Builtin::Cron(s) => builtins::cron_stream(s.expr()),
            Builtin::Events(a) => builtins::account_events(&a)?,
        })
    };
    let is_builtin = |p: &StreamPath| p.account.as_str() == builtins::ACCOUNT;
    let read = method == Method::GET || method == Method::HEAD;
    let written_by_server = |p: &StreamPath| {
        ApiError::from(
            eddy_engine::EngineError::new(
                eddy_engine::ErrorCode::MethodNotAllowed,
                format!(
                    "/{p} is a builtin stream: only the server appends to it; read it with \
                     GET, follow it with Accept: text/event-stream, or pipe from it"
                ),
            )
            .with("allow", "GET"),
        )
    };
    Ok(match resource {
        Resource::Account(a) if a.as_str() == builtins::ACCOUNT => {
            return Err(ApiError::from(eddy_engine::EngineError::not_found(
                "the eddy account holds the builtin streams /eddy/cron('<expression>') and \
                 /eddy/events(<account>), and /eddy/spy follows every stream; it has no \
                 listing",
            )));
        }
        Resource::Stream(p) if is_builtin(&p) => {
            let p = canonical(&p)?;
            if !read {
                return Err(written_by_server(&p));
            }
            Resource::Stream(p)
        }
        Resource::Event(p, i) if is_builtin(&p) => {
            let p = canonical(&p)?;
            if !read {
                return Err(written_by_server(&p));
            }
            Resource::Event(p, i)
        }
        Resource::EventType { stream, .. } if is_builtin(&stream) => {
            let p = canonical(&stream)?;
            return Err(written_by_server(&p));
        }
        Resource::Pipe { from, to } if is_builtin(&from) => Resource::Pipe {
            from: canonical(&from)?,
            to,
        },
        Resource::PipeLogs { from, to } if is_builtin(&from) => Resource::PipeLogs {
            from: canonical(&from)?,
            to,
        },
        other => {
            if let Some(p) = other.stream_paths().first()
                && is_builtin(p)
            {
                return Err(ApiError::invalid(format!(
                    "/{p} is a builtin stream: it has no reducers, settings, substream \
                     listing, logs or webhooks of its own; read it, follow it or pipe from it"
                )));
            }
            other
        }
    })
}

/// The history a splice replaced (`strm@{n}`) that `resource` names, if any; looked
/// at on every request, so without allocating for the common resources.
fn replaced_history(resource: &Resource) -> Option<&StreamPath> {
    let replaced = |p: &&StreamPath| p.stream.as_str().contains('@');
    match resource {
        Resource::Account(_) => None,
        Resource::Stream(p)
        | Resource::Event(p, _)
        | Resource::Reducer(p, _)
        | Resource::EventType { stream: p, .. } => Some(p).filter(replaced),
        other => other.stream_paths().into_iter().find(replaced),
    }
}
