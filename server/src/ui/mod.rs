//! The web console (API §15): a page, a script and a style sheet, compiled into the
//! binary with `include_str!` (no Node.js, no build step), served at `/ui`. The
//! console speaks the HTTP contract to its own server like any client; see
//! `docs/guide/console.md`.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::AppState;
use crate::error::ApiError;

const INDEX: &str = include_str!("index.html");
const SCRIPT: &str = include_str!("app.js");
const STYLE: &str = include_str!("app.css");

/// Only the console's own files run in its page: event data, which tenants write,
/// is only ever put into text nodes, and this policy stops any script that would
/// slip in all the same.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'; \
     require-trusted-types-for 'script'";

pub fn routes(router: Router<AppState>) -> Router<AppState> {
    router
        .route("/ui", get(page).fallback(refuse))
        .route("/ui/", get(page).fallback(refuse))
        .route("/ui/{file}", get(file).fallback(refuse))
}

async fn refuse(method: Method) -> ApiError {
    ApiError::method(&method, "GET, HEAD")
}

async fn page() -> Response {
    serve(INDEX, "text/html; charset=utf-8")
}

async fn file(Path(name): Path<String>) -> Response {
    match name.as_str() {
        "app.js" => serve(SCRIPT, "text/javascript; charset=utf-8"),
        "app.css" => serve(STYLE, "text/css; charset=utf-8"),
        "" | "index.html" => serve(INDEX, "text/html; charset=utf-8"),
        other => ApiError(eddy_engine::EngineError::not_found(format!(
            "the console has no file \"{other}\": it is served at /ui"
        )))
        .into_response(),
    }
}

fn serve(body: &'static str, content_type: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // a new binary may bring a new console: revalidate rather than cache
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}
