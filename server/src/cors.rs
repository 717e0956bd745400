//! CORS for browsers: any origin may call the API (access is decided by credentials,
//! API §9, never by origin).
//!
//! A request with an `Origin` header (every cross-origin browser request, preflights
//! included) goes through tower-http's CORS layer, which answers preflights and adds
//! the allow-origin, exposed-headers and `Vary` headers. A request without one (curl,
//! backends, IoT devices, the load of a benchmark) cannot be a CORS request: it skips
//! the layer and gets only `Access-Control-Allow-Origin: *` and `Vary: Origin`, which
//! keeps responses that a cache may store valid for browsers too, and spares them the
//! layer's cost (docs/internals/decisions/0006-cors-only-with-origin.md).

use std::convert::Infallible;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::response::Response;
use futures::future::{Either, FutureExt, Map};
use tower_http::cors::{AllowHeaders, AllowOrigin, Cors};
use tower_service::Service;

/// `inner`, with CORS for requests that carry an `Origin`.
#[derive(Clone)]
pub struct OriginGate<S> {
    plain: S,
    cors: Cors<S>,
}

impl<S: Clone> OriginGate<S> {
    pub fn new(inner: S) -> Self {
        Self {
            cors: cors(inner.clone()),
            plain: inner,
        }
    }
}

type Plain<F> = Map<F, fn(Result<Response, Infallible>) -> Result<Response, Infallible>>;

impl<S> Service<Request> for OriginGate<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Plain<S::Future>, <Cors<S> as Service<Request>>::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // either may take the request (axum's router is always ready)
        std::task::ready!(self.plain.poll_ready(cx))?;
        self.cors.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        if req.headers().contains_key(header::ORIGIN) {
            Either::Right(self.cors.call(req))
        } else {
            Either::Left(self.plain.call(req).map(allow_any_origin as fn(_) -> _))
        }
    }
}

/// `Access-Control-Allow-Origin: *`, and `Vary: Origin`: a response to a request
/// with an `Origin` carries more (the exposed headers), so a shared cache must not
/// hand this one to a browser.
fn allow_any_origin(r: Result<Response, Infallible>) -> Result<Response, Infallible> {
    r.map(|mut resp| {
        let headers = resp.headers_mut();
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
        headers.append(header::VARY, HeaderValue::from_static("origin"));
        resp
    })
}

/// The CORS rules: preflights are answered and the headers clients read are exposed.
/// Browser EventSource needs only `Access-Control-Allow-Origin`.
fn cors<S>(inner: S) -> Cors<S> {
    Cors::new(inner)
        .allow_origin(AllowOrigin::any())
        .allow_methods([
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        // mirrored rather than `*`, which would not cover Authorization
        .allow_headers(AllowHeaders::mirror_request())
        .expose_headers([
            HeaderName::from_static("location"),
            HeaderName::from_static("link"),
            HeaderName::from_static("retry-after"),
            HeaderName::from_static("reducer-index"),
            HeaderName::from_static("event-id"),
            HeaderName::from_static("event-type"),
            HeaderName::from_static("event-timestamp"),
            HeaderName::from_static("event-index"),
            HeaderName::from_static("event-stream"),
            HeaderName::from_static("event-metadata"),
            HeaderName::from_static("event-origin"),
            HeaderName::from_static("x-stream-metadata"),
        ])
        .max_age(Duration::from_secs(86_400))
}
