//! The one HTTP error type: maps engine error codes to statuses and writes
//! `{"error": "...", ...details}`. 5xx bodies stay generic; the cause is logged.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use eddy_engine::{EngineError, ErrorCode};
use serde_json::{Map, Value};

#[derive(Debug)]
pub struct ApiError(pub EngineError);

pub type ApiResult<T> = Result<T, ApiError>;

impl<E: Into<EngineError>> From<E> for ApiError {
    fn from(e: E) -> Self {
        Self(e.into())
    }
}

impl ApiError {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self(EngineError::invalid(message))
    }

    pub fn not_implemented(what: &str) -> Self {
        Self(EngineError::new(
            ErrorCode::NotImplemented,
            format!("{what} are not available in this version of eddy yet"),
        ))
    }

    pub fn method(method: &axum::http::Method, allowed: &'static str) -> Self {
        Self(
            EngineError::new(
                ErrorCode::MethodNotAllowed,
                format!("method {method} is not allowed here; allowed: {allowed}"),
            )
            .with("allow", allowed),
        )
    }
}

fn status(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::Invalid => StatusCode::BAD_REQUEST,
        ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::Conflict => StatusCode::CONFLICT,
        ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::Timeout => StatusCode::REQUEST_TIMEOUT,
        ErrorCode::NotImplemented => StatusCode::NOT_IMPLEMENTED,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let e = self.0;
        let status = status(e.code);
        let mut body = Map::new();
        if e.code == ErrorCode::Internal {
            tracing::error!(error = %e.message, "internal error");
            body.insert(
                "error".into(),
                "internal server error; the cause is in the server log".into(),
            );
        } else {
            body.insert("error".into(), Value::String(e.message));
            body.extend(e.details.clone());
        }
        let mut resp = (status, Json(Value::Object(body))).into_response();
        if let Some(Value::String(allow)) = e.details.get("allow")
            && let Ok(v) = HeaderValue::from_str(allow)
        {
            resp.headers_mut().insert(header::ALLOW, v);
        }
        if let Some(secs) = e.details.get("retryAfter").and_then(Value::as_u64) {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if e.code == ErrorCode::Unauthorized {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"eddy\", HMAC realm=\"eddy\""),
            );
        }
        resp
    }
}
