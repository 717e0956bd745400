//! Tests of what [`EventTypeDef::validate`] adds to jtd: `metadata.pattern` wherever a
//! string schema applies, the ref depth limit, the cap on errors, values cut short, and
//! the 400 of [`violation_error`].

use serde_json::json;

use super::validate_tests::{check, def, one, violation};
use super::*;

fn links() -> EventTypeDef {
    def(json!({
        "definitions": {"url": {"type": "string", "metadata": {"pattern": "^https?://"}}},
        "properties": {
            "home": {"ref": "url"},
            "links": {"elements": {"type": "string", "metadata": {"pattern": "^https?://\\S+$"}}},
            "named": {"values": {"ref": "url", "nullable": true}},
        },
        "optionalProperties": {
            "mirror": {"type": "string", "nullable": true, "metadata": {"pattern": "^https://"}},
        },
    }))
}

#[test]
fn patterns_are_enforced_wherever_strings_are() {
    let d = links();
    let good = json!({"home": "http://a", "links": ["https://b"], "named": {"c": "https://c", "d": null}, "mirror": null});
    assert!(check(&d, good).is_empty());
    let found = check(
        &d,
        json!({
            "home": "ftp://a",
            "links": ["https://ok", "x y"],
            "named": {"c": "mailto:c"},
            "mirror": "http://m",
        }),
    );
    assert_eq!(
        found,
        [
            violation(
                "/home",
                "/definitions/url/metadata/pattern",
                "pattern",
                Some(json!("ftp://a")),
                "/home is \"ftp://a\", which does not match the pattern ^https?://",
            ),
            violation(
                "/links/1",
                "/properties/links/elements/metadata/pattern",
                "pattern",
                Some(json!("x y")),
                "/links/1 is \"x y\", which does not match the pattern ^https?://\\S+$",
            ),
            violation(
                "/named/c",
                "/definitions/url/metadata/pattern",
                "pattern",
                Some(json!("mailto:c")),
                "/named/c is \"mailto:c\", which does not match the pattern ^https?://",
            ),
            violation(
                "/mirror",
                "/optionalProperties/mirror/metadata/pattern",
                "pattern",
                Some(json!("http://m")),
                "/mirror is \"http://m\", which does not match the pattern ^https://",
            ),
        ]
    );
}

#[test]
fn patterns_leave_wrong_types_to_the_type_rule() {
    let d = links();
    let found = check(&d, json!({"home": 5, "links": [7], "named": {}}));
    let rules: Vec<&str> = found.iter().map(|v| v.rule.as_str()).collect();
    assert_eq!(rules, ["type", "type"]);
}

#[test]
fn patterns_apply_in_discriminator_variants() {
    let d = def(json!({
        "discriminator": "kind",
        "mapping": {"link": {"properties": {"href": {"type": "string", "metadata": {"pattern": "^/"}}}}},
    }));
    assert!(check(&d, json!({"kind": "link", "href": "/a"})).is_empty());
    let v = one(&d, json!({"kind": "link", "href": "a"}));
    assert_eq!(
        v.schema_path,
        "/mapping/link/properties/href/metadata/pattern"
    );
}

#[test]
fn a_ref_loop_is_one_violation_not_a_crash() {
    // (a loop of bare refs is refused at compile; a nullable one matches null alone)
    let d = def(json!({"definitions": {"loop": {"ref": "loop", "nullable": true}}, "ref": "loop"}));
    let v = one(&d, json!({"any": "thing"}));
    assert_eq!(v.rule, "ref");
    assert_eq!(v.instance_path, "");
    assert_eq!(v.schema_path, "/definitions/loop/ref");
    assert_eq!(
        v.message,
        "/ cannot be checked: the schema's refs nest more than 32 deep there"
    );
}

/// A schema whose root follows a chain of `n` refs to a string with a pattern.
fn chain(n: usize) -> EventTypeDef {
    let mut definitions = serde_json::Map::new();
    for i in 1..n {
        definitions.insert(format!("d{i}"), json!({"ref": format!("d{}", i + 1)}));
    }
    definitions.insert(
        format!("d{n}"),
        json!({"type": "string", "metadata": {"pattern": "^a"}}),
    );
    def(json!({"definitions": definitions, "ref": "d1"}))
}

#[test]
fn exactly_max_ref_depth_refs_are_followed() {
    let d = chain(MAX_REF_DEPTH);
    assert!(check(&d, json!("abc")).is_empty());
    assert_eq!(one(&d, json!("b")).rule, "pattern");
    assert_eq!(one(&d, json!(1)).rule, "type");
    let d = chain(MAX_REF_DEPTH + 1);
    let v = one(&d, json!("abc"));
    assert_eq!(v.rule, "ref");
    assert_eq!(v.schema_path, "/definitions/d32/ref");
}

#[test]
fn a_recursive_schema_stops_at_the_depth_where_the_data_goes() {
    let d = def(json!({
        "definitions": {"node": {
            "properties": {"name": {"type": "string", "metadata": {"pattern": "^n"}}},
            "optionalProperties": {"kids": {"elements": {"ref": "node"}}},
        }},
        "ref": "node",
    }));
    let mut tree = json!({"name": "nx"});
    for _ in 0..10 {
        tree = json!({"name": "n", "kids": [tree]});
    }
    assert!(check(&d, tree.clone()).is_empty());
    tree["kids"][0]["name"] = json!("bad");
    let v = one(&d, tree.clone());
    assert_eq!(v.instance_path, "/kids/0/name");
    assert_eq!(
        v.schema_path,
        "/definitions/node/properties/name/metadata/pattern"
    );
    for _ in 0..40 {
        tree = json!({"name": "n", "kids": [tree]});
    }
    assert_eq!(one(&d, tree).rule, "ref");
}

#[test]
fn errors_are_capped() {
    let d = def(json!({"elements": {"type": "string"}}));
    let found = check(&d, json!(vec![0; 100]));
    assert_eq!(found.len(), MAX_ERRORS);
    assert_eq!(found[19].instance_path, "/19");
    // type errors and pattern mismatches share the budget
    let d = def(json!({"properties": {
        "a": {"elements": {"type": "int8"}},
        "b": {"elements": {"type": "string", "metadata": {"pattern": "^x"}}},
    }}));
    let found = check(&d, json!({"a": vec!["s"; 15], "b": vec!["y"; 15]}));
    assert_eq!(found.len(), MAX_ERRORS);
    assert_eq!(found.iter().filter(|v| v.rule == "pattern").count(), 5);
}

#[test]
fn large_values_are_cut_or_left_out() {
    let d = def(json!({"properties": {"s": {"type": "int8"}, "o": {"type": "int8"}}}));
    let long = "x".repeat(1000);
    let found = check(&d, json!({"s": long, "o": {"k": "y".repeat(1000)}}));
    assert_eq!(found[0].value, None);
    assert_eq!(
        found[0].message,
        "/o is an object, but the schema requires an integer from -128 to 127 (int8)"
    );
    let cut = found[1].value.as_ref().and_then(Value::as_str).unwrap();
    assert_eq!(cut.chars().count(), 201);
    assert!(found[1].message.len() < 200, "{}", found[1].message);
}

#[test]
fn the_error_names_the_type_and_lists_the_violations() {
    let d = def(json!({"properties": {"url": {"type": "string"}, "n": {"type": "int8"}}}));
    let found = check(&d, json!({"n": "1", "x": 1}));
    assert_eq!(found.len(), 3);
    let e = violation_error("click", &found);
    assert_eq!(e.code, crate::ErrorCode::Invalid);
    assert_eq!(
        e.message,
        "event data does not match the schema of type \"click\": /n is \"1\", but the schema \
         requires an integer from -128 to 127 (int8) (and 2 more errors)"
    );
    assert_eq!(e.details["eventType"], "click");
    assert_eq!(
        e.details["errors"][1],
        json!({
            "instancePath": "",
            "schemaPath": "/properties/url",
            "rule": "required",
            "message": "/ is missing the required property \"url\"",
        })
    );
    let e = violation_error("click", &found[..1]);
    assert!(e.message.ends_with("(int8)"), "{}", e.message);
    let many = vec![found[0].clone(); MAX_ERRORS];
    let e = violation_error("click", &many);
    assert!(
        e.message
            .ends_with("(and more errors: the first 20 are listed)"),
        "{}",
        e.message
    );
}
