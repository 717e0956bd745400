//! Query strings: decoding into pairs, encoding values, refusing unknown parameters.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::error::{EngineError, Result};

/// Decodes a query string into (key, value) pairs (`+` is a space, as in forms).
pub fn pairs(query: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for part in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        let key = decode(k).ok_or_else(|| {
            EngineError::invalid(format!(
                "query parameter name {k:?} is not valid UTF-8 once decoded"
            ))
        })?;
        let value = decode(v).ok_or_else(|| {
            EngineError::invalid(format!(
                "query parameter {key}={v:?} is not valid UTF-8 once decoded"
            ))
            .with("param", key.clone())
        })?;
        out.push((key, value));
    }
    Ok(out)
}

fn decode(s: &str) -> Option<String> {
    let s = s.replace('+', " ");
    percent_encoding::percent_decode_str(&s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .ok()
}

const VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'!')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b',')
    .remove(b':');

/// Percent-encodes a query value.
pub fn encode(value: &str) -> String {
    utf8_percent_encode(value, VALUE).to_string()
}

/// Fails with a 400 naming the first parameter not in `known`.
pub fn refuse_unknown(params: &[(String, String)], known: &[&str]) -> Result<()> {
    match params.first() {
        None => Ok(()),
        Some((k, _)) => Err(EngineError::invalid(format!(
            "unknown query parameter \"{k}\"; this endpoint takes: {}",
            known.join(", ")
        ))
        .with("parameter", k.as_str())),
    }
}

/// Parameters that may be repeated, each adding to the last (`type=a&type=b` is
/// `type=a,b`); any other given twice is refused rather than one silently winning.
const REPEATABLE: [&str; 2] = ["type", "sub"];

/// Fails with a 400 naming the first parameter given twice (other than `type` and
/// `sub`, which add up).
pub fn refuse_repeated(params: &[(String, String)]) -> Result<()> {
    for (i, (k, v)) in params.iter().enumerate() {
        if REPEATABLE.contains(&k.as_str()) {
            continue;
        }
        if let Some((_, first)) = params[..i].iter().find(|(k2, _)| k2 == k) {
            return Err(EngineError::invalid(format!(
                "query parameter \"{k}\" is given twice ({k}={first} and {k}={v}); give it once"
            ))
            .with("parameter", k.as_str()));
        }
    }
    Ok(())
}

/// Parses a count, index or position given in a query: a whole number from 0 to
/// `i64::MAX`, the range storage keeps (larger values would wrap in SQL), in plain
/// decimal digits (no sign, no spaces).
pub fn whole_number(value: &str) -> Option<u64> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse::<u64>().ok().filter(|n| *n <= i64::MAX as u64)
}
