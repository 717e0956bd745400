//! Code sent in a request body: reducers (API §7) and pipe functions (API §8), in
//! JavaScript or TypeScript by `Content-Type`.

use axum::body::Body;
use axum::http::HeaderMap;
use eddy_runtime_js::Language;

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::params;

/// Code larger than this is refused.
const MAX_CODE_BYTES: usize = 1024 * 1024;

/// Reads the code and its language; `None` for an empty (or all-blank) body. `what`
/// names the code in errors ("reducer code", "the pipe function").
pub async fn read(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    what: &str,
) -> ApiResult<Option<(String, Language)>> {
    let bytes = crate::body::read(state, body, MAX_CODE_BYTES, &format!("the {what}")).await?;
    let source = String::from_utf8(bytes.to_vec())
        .map_err(|_| ApiError::invalid(format!("the {what} is not valid UTF-8")))?;
    if source.trim().is_empty() {
        return Ok(None);
    }
    let (_, media) = params::media_type(headers)?;
    let language = match media.as_str() {
        // curl's --data-binary sends application/x-www-form-urlencoded unless told
        // otherwise, and plain text is what editors save: both are taken as JavaScript
        ""
        | "application/javascript"
        | "text/javascript"
        | "application/x-javascript"
        | "text/plain"
        | "application/x-www-form-urlencoded" => Language::JavaScript,
        "application/typescript" | "text/typescript" | "application/x-typescript" => {
            Language::TypeScript
        }
        other => {
            return Err(ApiError::from(eddy_engine::EngineError::new(
                eddy_engine::ErrorCode::UnsupportedMediaType,
                format!(
                    "Content-Type {other} is not {what}: send application/javascript or \
                     application/typescript"
                ),
            )));
        }
    };
    Ok(Some((source, language)))
}
