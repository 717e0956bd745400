//! The differences between the state `eddy test` ends with and the one expected, one
//! line each, named by their path. (Written here rather than taken from a diff crate:
//! JSON values compare by path in a dozen lines, and a path names a difference better
//! than lines of text do.)

use serde_json::Value;

/// The differences between `expected` and `got`. On a factory both are listings
/// `[{"stream", "args", "index", "state"}]` (as `GET /acct/strm.name` answers) and
/// compare substream by substream, named by their args: `('c1').state.total`; an
/// expected entry without `stream` or `index` leaves that field unchecked.
pub(super) fn differences(expected: &Value, got: &Value, factory: bool) -> Vec<String> {
    let mut out = Vec::new();
    match (factory, by_args(expected), by_args(got)) {
        (true, Some(expected), Some(got)) => {
            for (args, e) in &expected {
                let Some((_, g)) = got.iter().find(|(a, _)| a == args) else {
                    out.push(format!(
                        "({args}): expected {}, missing",
                        e.get("state").unwrap_or(&Value::Null)
                    ));
                    continue;
                };
                for field in ["stream", "index"] {
                    if let Some(ev) = e.get(field) {
                        let gv = g.get(field).unwrap_or(&Value::Null);
                        diff(&format!("({args}).{field}"), ev, gv, &mut out);
                    }
                }
                let (ev, gv) = (
                    e.get("state").unwrap_or(&Value::Null),
                    g.get("state").unwrap_or(&Value::Null),
                );
                diff(&format!("({args}).state"), ev, gv, &mut out);
            }
            for (args, g) in &got {
                if !expected.iter().any(|(a, _)| a == args) {
                    out.push(format!(
                        "({args}): not expected, got {}",
                        g.get("state").unwrap_or(&Value::Null)
                    ));
                }
            }
        }
        _ => diff("state", expected, got, &mut out),
    }
    out
}

/// The entries of a factory listing by their canonical args, or `None` when `v` is
/// not one.
fn by_args(v: &Value) -> Option<Vec<(&str, &serde_json::Map<String, Value>)>> {
    v.as_array()?
        .iter()
        .map(|e| {
            let o = e.as_object()?;
            Some((o.get("args")?.as_str()?, o))
        })
        .collect()
}

fn diff(path: &str, expected: &Value, got: &Value, out: &mut Vec<String>) {
    match (expected, got) {
        (Value::Object(e), Value::Object(g)) => {
            for (k, ev) in e {
                match g.get(k) {
                    Some(gv) => diff(&format!("{path}.{k}"), ev, gv, out),
                    None => out.push(format!("{path}.{k}: expected {ev}, missing")),
                }
            }
            for (k, gv) in g {
                if !e.contains_key(k) {
                    out.push(format!("{path}.{k}: not expected, got {gv}"));
                }
            }
        }
        (Value::Array(e), Value::Array(g)) if e.len() == g.len() => {
            for (i, (ev, gv)) in e.iter().zip(g).enumerate() {
                diff(&format!("{path}[{i}]"), ev, gv, out);
            }
        }
        (e, g) if e != g => out.push(format!("{path}: expected {e}, got {g}")),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn differences_are_named_by_their_path() {
        let out = super::differences(
            &json!({"total": 3, "pages": {"/": 2, "/a": 1}, "list": [1, 2]}),
            &json!({"total": 4, "pages": {"/": 2, "/b": 1}, "list": [1, 3]}),
            false,
        );
        assert_eq!(
            out,
            [
                "state.total: expected 3, got 4",
                "state.pages./a: expected 1, missing",
                "state.pages./b: not expected, got 1",
                "state.list[1]: expected 2, got 3",
            ]
        );
    }

    #[test]
    fn a_factory_compares_substream_by_substream() {
        let got = json!([
            {"stream": "a/c('x')", "args": "'x'", "index": 1, "state": {"n": 2}},
            {"stream": "a/c('y')", "args": "'y'", "index": 0, "state": 1},
        ]);
        // in another order, without stream and index: the same
        let expected = json!([{"args": "'y'", "state": 1}, {"args": "'x'", "state": {"n": 2}}]);
        assert!(super::differences(&expected, &got, true).is_empty());
        let expected = json!([
            {"args": "'x'", "index": 2, "state": {"n": 3}},
            {"args": "'z'", "state": 0},
        ]);
        assert_eq!(
            super::differences(&expected, &got, true),
            [
                "('x').index: expected 2, got 1",
                "('x').state.n: expected 3, got 2",
                "('z'): expected 0, missing",
                "('y'): not expected, got 1",
            ]
        );
    }
}
