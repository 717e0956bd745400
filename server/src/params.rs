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
    /// Decodes the query; a parameter given twice (but `type` and `sub`) is a 400.
    pub fn parse(uri: &Uri) -> ApiResult<Self> {
        let pairs = eddy_engine::query::pairs(uri.query().unwrap_or(""))?;
        eddy_engine::query::refuse_repeated(&pairs)?;
        Ok(Self {
            pairs,
            known: Vec::new(),
        })
    }

    /// Takes a parameter.
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
        self.take("limit")
            .map(|v| match eddy_engine::query::whole_number(&v) {
                Some(n) if n > 0 => Ok(n.min(usize::MAX as u64) as usize),
                _ => Err(ApiError::invalid(format!(
                    "query parameter limit=\"{v}\" must be a whole number of at least 1 \
                     (a JSON page holds at most {MAX_LIMIT} events)"
                ))),
            })
            .transpose()
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

/// Refuses a body sent with a `Content-Encoding` (gzip, br, …) with a 415 naming it:
/// event data is stored as sent, so compressed bytes would be taken for the data.
pub fn refuse_content_coding(headers: &HeaderMap) -> ApiResult<()> {
    for v in headers.get_all(axum::http::header::CONTENT_ENCODING) {
        let coding = text(v, "content-encoding")?;
        if !coding.eq_ignore_ascii_case("identity") && !coding.is_empty() {
            return Err(ApiError(eddy_engine::EngineError::new(
                eddy_engine::ErrorCode::UnsupportedMediaType,
                format!(
                    "Content-Encoding \"{coding}\" is not supported: send the body \
                     uncompressed (eddy stores event data as sent)"
                ),
            )));
        }
    }
    Ok(())
}

/// What a read answers with, as the Accept header chooses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Representation {
    /// A JSON array (the default).
    Json,
    /// Newline-delimited JSON.
    Ndjson,
    /// Server-Sent Events: a subscription.
    EventStream,
    /// `application/octet-stream`: the events' data concatenated (a byte stream).
    Bytes,
}

/// The offers in the server's order of preference, for ties.
const OFFERS: [(&str, Representation); 4] = [
    ("application/json", Representation::Json),
    ("application/x-ndjson", Representation::Ndjson),
    ("text/event-stream", Representation::EventStream),
    ("application/octet-stream", Representation::Bytes),
];

/// Chooses a read's representation from the Accept header (RFC 9110 §12.5.1): each
/// offer takes the weight of the most specific media range that matches it (`q=0`:
/// not acceptable), the highest weight wins, then the more specific match (a named
/// type over `*/*`), then JSON before NDJSON before SSE before bytes. Without an
/// Accept header, or when it accepts none of them, the answer is JSON.
pub fn representation(headers: &HeaderMap) -> Representation {
    let ranges: Vec<(&str, &str, f32)> = headers
        .get_all(axum::http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(media_range)
        .collect();
    if ranges.is_empty() {
        return Representation::Json;
    }
    let mut best = (0.0_f32, 0_u8, Representation::Json);
    for (offer, repr) in OFFERS {
        let (top, sub) = offer.split_once('/').unwrap_or((offer, ""));
        let matched = ranges
            .iter()
            .filter_map(|&(t, s, q)| {
                let specificity = match (t, s) {
                    _ if t.eq_ignore_ascii_case(top) && s.eq_ignore_ascii_case(sub) => 2,
                    _ if t.eq_ignore_ascii_case(top) && s == "*" => 1,
                    ("*", "*") => 0,
                    _ => return None,
                };
                Some((specificity, q))
            })
            .max_by_key(|&(specificity, _)| specificity);
        if let Some((specificity, q)) = matched
            && q > 0.0
            && (q > best.0 || (q == best.0 && specificity > best.1))
        {
            best = (q, specificity, repr);
        }
    }
    best.2
}

/// One media range of an Accept header: type, subtype and weight (1 unless `q=`
/// says otherwise). A range whose weight is malformed is ignored, as if the client
/// had not sent it (RFC 9110 §12.4.2 weights are 0 to 1 with at most three decimals).
pub(crate) fn media_range(item: &str) -> Option<(&str, &str, f32)> {
    let mut parts = item.split(';');
    let (top, sub) = parts.next()?.trim().split_once('/')?;
    let q = match parts
        .filter_map(|p| p.trim().split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
    {
        Some((_, v)) => weight(v.trim())?,
        None => 1.0,
    };
    Some((top.trim(), sub.trim(), q))
}

/// An RFC 9110 weight: `0`, `1`, or either with up to three decimals (`1` only with
/// zeros).
fn weight(text: &str) -> Option<f32> {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    let valid = matches!(int, "0" | "1")
        && frac.len() <= 3
        && frac.bytes().all(|b| b.is_ascii_digit())
        && (int == "0" || frac.bytes().all(|b| b == b'0'));
    valid.then(|| text.parse().ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_accept(accept: &str) -> Representation {
        let mut h = HeaderMap::new();
        h.insert(axum::http::header::ACCEPT, accept.parse().unwrap());
        representation(&h)
    }

    #[test]
    fn accept_weights_choose_the_representation() {
        use Representation::*;
        assert_eq!(representation(&HeaderMap::new()), Json);
        for (accept, want) in [
            ("*/*", Json),
            ("application/json", Json),
            ("application/x-ndjson", Ndjson),
            ("text/event-stream", EventStream),
            ("TEXT/Event-Stream", EventStream),
            ("application/json, application/x-ndjson;q=0.5", Json),
            ("application/x-ndjson;q=0", Json),
            ("application/x-ndjson;q=0.1, application/json;q=0.9", Json),
            ("application/json;q=0.2, application/x-ndjson", Ndjson),
            ("application/json, text/event-stream;q=0.1", Json),
            ("text/event-stream, */*", EventStream),
            ("*/*;q=0.5, application/x-ndjson", Ndjson),
            ("application/*", Json),
            ("image/png", Json),
            ("text/*;q=0.3, application/json;q=0.2", EventStream),
            // a malformed weight drops its range
            ("text/event-stream;q=abc", Json),
            ("text/event-stream;q=2", Json),
            ("text/event-stream;q=0.5555", Json),
            ("text/event-stream;q=1.5", Json),
            ("text/event-stream;q=1.000", EventStream),
            ("text/event-stream;q=1.", EventStream),
            ("text/event-stream;q=0.", Json),
            (
                "application/x-ndjson;q=abc, text/event-stream;q=0.1",
                EventStream,
            ),
        ] {
            assert_eq!(with_accept(accept), want, "Accept: {accept}");
        }
    }
}
