//! Query parameters and headers as handlers read them: each taken by name, malformed
//! values refused with a 400 naming them, leftovers refused as unknown.

use axum::http::{HeaderMap, HeaderValue, Uri};
use eddy_engine::selector::{SELECTOR_PARAMS, Selector};

use crate::error::{ApiError, ApiResult};

/// The most events one JSON page holds.
pub const MAX_LIMIT: usize = 1000;
/// Events per JSON page unless `limit` says otherwise.
pub const DEFAULT_LIMIT: usize = 100;

/// The decoded query pairs of a request.
pub struct Params {
    pairs: Vec<(String, String)>,
    known: Vec<&'static str>,
}

impl Params {
    pub fn parse(uri: &Uri) -> ApiResult<Self> {
        Ok(Self {
            pairs: eddy_engine::query::pairs(uri.query().unwrap_or(""))?,
            known: Vec::new(),
        })
    }

    /// Takes a parameter (the last one when repeated).
    pub fn take(&mut self, key: &'static str) -> Option<String> {
        self.known.push(key);
        let mut found = None;
        self.pairs.retain(|(k, v)| {
            if k == key {
                found = Some(v.clone());
                false
            } else {
                true
            }
        });
        found
    }

    /// Takes a flag: present without value or `true` is true; `false` is false.
    pub fn flag(&mut self, key: &'static str) -> ApiResult<bool> {
        match self.take(key).as_deref() {
            None | Some("false") | Some("0") => Ok(false),
            Some("") | Some("true") | Some("1") => Ok(true),
            Some(v) => Err(ApiError::invalid(format!(
                "query parameter {key}=\"{v}\" must be true or false"
            ))),
        }
    }

    /// Takes a non-negative integer (at most `i64::MAX`, the range storage keeps).
    pub fn number(&mut self, key: &'static str) -> ApiResult<Option<u64>> {
        self.take(key)
            .map(|v| {
                eddy_engine::query::whole_number(&v).ok_or_else(|| {
                    ApiError::invalid(format!(
                        "query parameter {key}=\"{v}\" must be a whole number from 0 to {}",
                        i64::MAX
                    ))
                })
            })
            .transpose()
    }

    /// Takes `limit`: 1 or more, at most [`MAX_LIMIT`] (larger asks are capped; the
    /// `Link` header pages on).
    pub fn limit(&mut self) -> ApiResult<Option<usize>> {
        match self.number("limit")? {
            Some(0) => Err(ApiError::invalid(
                "query parameter limit=\"0\" must be at least 1",
            )),
            n => Ok(n.map(|n| n as usize)),
        }
    }

    /// Takes the selector parameters.
    pub fn selector(&mut self) -> ApiResult<Selector> {
        self.known.extend(SELECTOR_PARAMS);
        Ok(Selector::take_from(&mut self.pairs)?)
    }

    /// Refuses any parameter not taken.
    pub fn finish(self) -> ApiResult<()> {
        Ok(eddy_engine::query::refuse_unknown(
            &self.pairs,
            &self.known,
        )?)
    }
}

/// Reads the first of `names` present as a header, as UTF-8.
pub fn header(headers: &HeaderMap, names: &[&str]) -> ApiResult<Option<String>> {
    for name in names {
        if let Some(v) = headers.get(*name) {
            return text(v, name).map(Some);
        }
    }
    Ok(None)
}

/// A header's value, trimmed; the error names the header as `name`.
fn text(value: &HeaderValue, name: &str) -> ApiResult<String> {
    value
        .to_str()
        .map(|s| s.trim().to_owned())
        .map_err(|_| ApiError::invalid(format!("header {name} is not valid visible ASCII text")))
}

/// The media type of the Content-Type header, lowercased, without parameters.
pub fn media_type(headers: &HeaderMap) -> ApiResult<(Option<String>, String)> {
    // looked up by its pre-parsed name: a `&str` name is parsed on every lookup
    let raw = headers
        .get(axum::http::header::CONTENT_TYPE)
        .map(|v| text(v, "content-type"))
        .transpose()?;
    let essence = raw
        .as_deref()
        .map(|r| {
            r.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    Ok((raw, essence))
}

/// Whether the Accept header asks for `media`.
pub fn accepts(headers: &HeaderMap, media: &str) -> bool {
    headers
        .get_all(axum::http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|m| {
            m.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case(media)
        })
}
