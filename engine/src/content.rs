//! Event data as JSON (API §7), as reducers, pipe functions and event types see it:
//! JSON as it is, form bodies as an object of strings, CSV as an array of rows (or of
//! records with `header=present`), other text as a string, and anything else as
//! base64 with `encoding: "base64"`.

use std::borrow::Cow;

use base64::Engine as _;
use serde_json::{Map, Value};

use crate::event::DataKind;

/// The media type of a content type, without its parameters.
fn essence(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or("").trim()
}

/// The data as JSON text for the sandbox, and its `encoding` when it is base64 (public
/// so that `eddy test` gives a reducer the data the server gives it).
pub fn for_reducer<'a>(content_type: &str, data: &'a [u8]) -> (Cow<'a, str>, Option<&'static str>) {
    match DataKind::of(essence(content_type)).unwrap_or(DataKind::Binary) {
        DataKind::Json => match std::str::from_utf8(data) {
            Ok(json) => (Cow::Borrowed(json), None),
            Err(_) => (Cow::Borrowed("null"), None),
        },
        kind => {
            let encoding = (kind == DataKind::Binary).then_some("base64");
            (Cow::Owned(value(content_type, data).to_string()), encoding)
        }
    }
}

/// The data of a content type other than JSON as the value reducers see (JSON data is
/// parsed by `json::JsonLimits::parse` instead).
pub(crate) fn value(content_type: &str, data: &[u8]) -> Value {
    let essence = essence(content_type);
    match DataKind::of(essence).unwrap_or(DataKind::Binary) {
        DataKind::Text if essence == "application/x-www-form-urlencoded" => Value::Object(
            form_urlencoded::parse(data)
                .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
                .collect(),
        ),
        DataKind::Text if essence == "text/csv" => {
            let header = content_type
                .split(';')
                .skip(1)
                .any(|p| p.trim().eq_ignore_ascii_case("header=present"));
            csv_rows(data, header)
        }
        DataKind::Text | DataKind::Json => {
            Value::String(String::from_utf8_lossy(data).into_owned())
        }
        DataKind::Binary => Value::String(base64::engine::general_purpose::STANDARD.encode(data)),
    }
}

fn csv_rows(data: &[u8], header: bool) -> Value {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(header)
        .flexible(true)
        .from_reader(data);
    let names: Vec<String> = if header {
        reader
            .headers()
            .map(|h| h.iter().map(str::to_owned).collect())
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let rows = reader.records().filter_map(|r| r.ok()).map(|record| {
        if header {
            let mut object = Map::new();
            for (i, field) in record.iter().enumerate() {
                let key = names.get(i).cloned().unwrap_or_else(|| i.to_string());
                object.insert(key, Value::String(field.to_owned()));
            }
            Value::Object(object)
        } else {
            Value::Array(record.iter().map(|f| Value::String(f.to_owned())).collect())
        }
    });
    Value::Array(rows.collect())
}

#[cfg(test)]
mod tests {
    use super::for_reducer;

    #[test]
    fn each_kind_becomes_json() {
        assert_eq!(
            for_reducer("application/json", br#"{"a":1}"#).0,
            r#"{"a":1}"#
        );
        assert_eq!(
            for_reducer("application/x-www-form-urlencoded", b"a=1&b=x+y").0,
            r#"{"a":"1","b":"x y"}"#
        );
        assert_eq!(
            for_reducer("text/csv", b"a,b\n1,2\n").0,
            r#"[["a","b"],["1","2"]]"#
        );
        assert_eq!(
            for_reducer("text/csv; header=present", b"a,b\n1,2\n").0,
            r#"[{"a":"1","b":"2"}]"#
        );
        assert_eq!(for_reducer("text/plain", b"hi \"x\"").0, r#""hi \"x\"""#);
        assert_eq!(
            for_reducer("application/octet-stream", &[0, 255]),
            (r#""AP8=""#.into(), Some("base64"))
        );
    }
}
