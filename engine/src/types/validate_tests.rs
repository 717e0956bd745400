//! Tests of [`EventTypeDef::validate`] for every form of RFC 8927; `pattern_tests` has
//! what eddy adds to jtd.

use serde_json::{Value, json};

use super::*;

pub(super) fn def(doc: Value) -> EventTypeDef {
    EventTypeDef::compile(&doc).unwrap_or_else(|e| panic!("{doc} refused: {e}"))
}

/// The violations of `data`, checking each is well formed.
pub(super) fn check(def: &EventTypeDef, data: Value) -> Vec<Violation> {
    let found = def.validate(&data);
    assert!(found.len() <= MAX_ERRORS);
    for v in &found {
        assert!(
            v.schema_path.is_empty() || v.schema_path.starts_with('/'),
            "{v:?}"
        );
        assert!(
            v.instance_path.is_empty() || v.instance_path.starts_with('/'),
            "{v:?}"
        );
        assert_ne!(v.rule, "schema", "a rule that could not be read: {v:?}");
    }
    found
}

/// The one violation of `data`.
pub(super) fn one(def: &EventTypeDef, data: Value) -> Violation {
    let mut found = check(def, data);
    assert_eq!(found.len(), 1, "{found:#?}");
    found.remove(0)
}

pub(super) fn violation(
    instance: &str,
    schema: &str,
    rule: &str,
    value: Option<Value>,
    message: &str,
) -> Violation {
    Violation {
        instance_path: instance.into(),
        schema_path: schema.into(),
        rule: rule.into(),
        value,
        message: message.into(),
    }
}

#[test]
fn wrong_types_name_field_value_and_type() {
    let d = def(json!({"properties": {
        "age": {"type": "int32"},
        "ok": {"type": "boolean"},
        "at": {"type": "timestamp"},
        "score": {"type": "float64", "nullable": true},
    }}));
    assert!(
        check(
            &d,
            json!({"age": 3, "ok": true, "at": "2024-01-31T12:00:00Z", "score": null})
        )
        .is_empty()
    );
    let found = check(
        &d,
        json!({"age": "ten", "ok": 1, "at": "yesterday", "score": "high"}),
    );
    assert_eq!(
        found,
        [
            violation(
                "/age",
                "/properties/age/type",
                "type",
                Some(json!("ten")),
                "/age is \"ten\", but the schema requires an integer from -2147483648 to 2147483647 (int32)",
            ),
            violation(
                "/at",
                "/properties/at/type",
                "type",
                Some(json!("yesterday")),
                "/at is \"yesterday\", but the schema requires an RFC 3339 timestamp (a string like \"2024-01-31T12:00:00Z\")",
            ),
            violation(
                "/ok",
                "/properties/ok/type",
                "type",
                Some(json!(1)),
                "/ok is 1, but the schema requires a boolean (true or false)",
            ),
            violation(
                "/score",
                "/properties/score/type",
                "type",
                Some(json!("high")),
                "/score is \"high\", but the schema requires a number (float64) or null",
            ),
        ]
    );
    let v = one(
        &d,
        json!({"age": 2147483648_u64, "ok": true, "at": "2024-01-31T12:00:00Z", "score": 1}),
    );
    assert_eq!(v.value, Some(json!(2147483648_u64)));
    let v = one(&def(json!({"type": "uint8"})), json!(1.5));
    assert_eq!(
        v.message,
        "/ is 1.5, but the schema requires an integer from 0 to 255 (uint8)"
    );
}

#[test]
fn missing_and_extra_properties() {
    let d = def(json!({
        "properties": {"url": {"type": "string"}},
        "optionalProperties": {"ref": {"type": "string"}},
    }));
    assert!(check(&d, json!({"url": "x"})).is_empty());
    assert!(check(&d, json!({"url": "x", "ref": "y"})).is_empty());
    assert_eq!(
        one(&d, json!({"ref": "y"})),
        violation(
            "",
            "/properties/url",
            "required",
            None,
            "/ is missing the required property \"url\""
        )
    );
    assert_eq!(
        one(&d, json!({"url": "x", "extra": [1]})),
        violation(
            "/extra",
            "",
            "additionalProperties",
            Some(json!([1])),
            "/extra is not allowed: the schema lists no property \"extra\"",
        )
    );
    let v = one(&d, json!({"url": "x", "ref": 5}));
    assert_eq!(
        (v.instance_path.as_str(), v.schema_path.as_str()),
        ("/ref", "/optionalProperties/ref/type")
    );
    let v = one(&d, json!(["url"]));
    assert_eq!(v.rule, "properties");
    assert_eq!(
        v.message,
        "/ is an array, but the schema requires an object"
    );
    let open =
        def(json!({"properties": {"url": {"type": "string"}}, "additionalProperties": true}));
    assert!(check(&open, json!({"url": "x", "extra": 1})).is_empty());
}

#[test]
fn extra_properties_of_nested_objects_are_not_missing_ones() {
    let inner = json!({"properties": {"address": {"properties": {"street": {"type": "string"}}}}});
    let direct = def(inner.clone());
    let through_ref = def(json!({"definitions": {"user": inner}, "elements": {"ref": "user"}}));
    for (d, data, at, schema_path) in [
        (
            &direct,
            json!({"address": {"street": "s", "zip": {}}}),
            "/address/zip",
            "/properties/address",
        ),
        (
            &direct,
            json!({"address": {}}),
            "/address",
            "/properties/address/properties/street",
        ),
        (
            &through_ref,
            json!([{"address": {"street": "s", "zip": {}}}]),
            "/0/address/zip",
            "/definitions/user/properties/address",
        ),
        (
            &through_ref,
            json!([{"address": {"street": "s", "address": {}}}]),
            "/0/address/address",
            "/definitions/user/properties/address",
        ),
        (
            &through_ref,
            json!([{}]),
            "/0",
            "/definitions/user/properties/address",
        ),
    ] {
        let v = one(d, data);
        assert_eq!(
            (v.instance_path.as_str(), v.schema_path.as_str()),
            (at, schema_path)
        );
        let expected = if at.ends_with("zip") || at.ends_with("address/address") {
            "additionalProperties"
        } else {
            "required"
        };
        assert_eq!(v.rule, expected, "{v:?}");
    }
}

#[test]
fn a_property_named_like_a_keyword_is_still_read_right() {
    let d =
        def(json!({"properties": {"properties": {"properties": {"type": {"type": "string"}}}}}));
    let v = one(&d, json!({"properties": {}}));
    assert_eq!(v.rule, "required");
    assert_eq!(v.instance_path, "/properties");
    assert_eq!(v.schema_path, "/properties/properties/properties/type");
    assert_eq!(
        v.message,
        "/properties is missing the required property \"type\""
    );
    let v = one(&d, json!({"properties": {"type": 1}}));
    assert_eq!(v.rule, "type");
    assert_eq!(v.schema_path, "/properties/properties/properties/type/type");
}

#[test]
fn enums_list_what_they_allow() {
    let d = def(json!({"properties": {"color": {"enum": ["red", "green", "blue"]}}}));
    assert!(check(&d, json!({"color": "red"})).is_empty());
    assert_eq!(
        one(&d, json!({"color": "purple"})),
        violation(
            "/color",
            "/properties/color/enum",
            "enum",
            Some(json!("purple")),
            "/color is \"purple\", but the schema allows only \"red\", \"green\" or \"blue\"",
        )
    );
    let v = one(&def(json!({"enum": ["a"], "nullable": true})), json!(1));
    assert_eq!(
        v.message,
        "/ is 1, but the schema allows only \"a\" or null"
    );
}

#[test]
fn elements_and_values_report_each_item() {
    let d = def(json!({"properties": {
        "tags": {"elements": {"type": "string"}},
        "counts": {"values": {"type": "uint32"}},
    }}));
    assert!(check(&d, json!({"tags": [], "counts": {}})).is_empty());
    let found = check(
        &d,
        json!({"tags": ["a", 1, "b", null], "counts": {"x": 1, "y/z": -1}}),
    );
    let paths: Vec<(&str, &str)> = found
        .iter()
        .map(|v| (v.instance_path.as_str(), v.schema_path.as_str()))
        .collect();
    assert_eq!(
        paths,
        [
            ("/counts/y~1z", "/properties/counts/values/type"),
            ("/tags/1", "/properties/tags/elements/type"),
            ("/tags/3", "/properties/tags/elements/type"),
        ]
    );
    let found = check(&d, json!({"tags": "a", "counts": [1]}));
    assert_eq!(found[0].rule, "values");
    assert_eq!(
        found[0].message,
        "/counts is an array, but the schema requires an object"
    );
    assert_eq!(found[1].rule, "elements");
    assert_eq!(
        found[1].message,
        "/tags is \"a\", but the schema requires an array"
    );
}

#[test]
fn nullable_accepts_null_only_where_declared() {
    let d = def(json!({"properties": {
        "a": {"type": "string", "nullable": true},
        "b": {"elements": {"type": "string"}, "nullable": true},
        "c": {"type": "string"},
    }}));
    assert!(check(&d, json!({"a": null, "b": null, "c": "x"})).is_empty());
    let v = one(&d, json!({"a": null, "b": null, "c": null}));
    assert_eq!(v.message, "/c is null, but the schema requires a string");
    assert_eq!(v.value, Some(Value::Null));
}

fn shapes() -> EventTypeDef {
    def(json!({
        "discriminator": "kind",
        "mapping": {
            "circle": {"properties": {"r": {"type": "float64"}}},
            "square": {"properties": {"side": {"type": "float64"}}},
        },
    }))
}

#[test]
fn discriminators_check_the_tag_then_the_variant() {
    let d = shapes();
    assert!(check(&d, json!({"kind": "circle", "r": 1})).is_empty());
    assert_eq!(
        one(&d, json!({"r": 1})),
        violation(
            "",
            "/discriminator",
            "discriminator",
            None,
            "/ is missing the tag property \"kind\", which must be one of \"circle\" or \"square\"",
        )
    );
    assert_eq!(
        one(&d, json!({"kind": "hexagon"})),
        violation(
            "/kind",
            "/mapping",
            "mapping",
            Some(json!("hexagon")),
            "/kind is \"hexagon\", but the tag must be one of \"circle\" or \"square\"",
        )
    );
    let v = one(&d, json!({"kind": 3}));
    assert_eq!(
        (v.instance_path.as_str(), v.rule.as_str()),
        ("/kind", "discriminator")
    );
    assert_eq!(
        v.message,
        "/kind is 3, but the tag must be a string: one of \"circle\" or \"square\""
    );
    let v = one(&d, json!("circle"));
    assert_eq!(v.instance_path, "");
    assert_eq!(
        v.message,
        "/ is \"circle\", but the schema requires an object with a \"kind\" tag"
    );
    let v = one(&d, json!({"kind": "square", "side": "2"}));
    assert_eq!(v.schema_path, "/mapping/square/properties/side/type");
    let v = one(&d, json!({"kind": "square", "side": 2, "r": 1}));
    assert_eq!(
        (v.instance_path.as_str(), v.schema_path.as_str()),
        ("/r", "/mapping/square")
    );
    assert_eq!(v.rule, "additionalProperties");
}

#[test]
fn discriminator_failures_inside_a_ref_are_told_apart() {
    let d = def(json!({
        "definitions": {"shape": {
            "discriminator": "kind",
            "mapping": {"dot": {"properties": {}}},
        }},
        "properties": {"shapes": {"elements": {"ref": "shape"}}},
    }));
    let found = check(&d, json!({"shapes": [{"kind": 1}, {}, 7, {"kind": "dot"}]}));
    let seen: Vec<(&str, &str)> = found
        .iter()
        .map(|v| (v.instance_path.as_str(), v.message.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            (
                "/shapes/0/kind",
                "/shapes/0/kind is 1, but the tag must be a string: one of \"dot\""
            ),
            (
                "/shapes/1",
                "/shapes/1 is missing the tag property \"kind\", which must be one of \"dot\""
            ),
            (
                "/shapes/2",
                "/shapes/2 is 7, but the schema requires an object with a \"kind\" tag"
            ),
        ]
    );
    assert!(
        found
            .iter()
            .all(|v| v.schema_path == "/definitions/shape/discriminator")
    );
}

#[test]
fn refs_report_paths_in_the_definition() {
    let d = def(json!({
        "definitions": {"point": {"properties": {"x": {"type": "int16"}}}},
        "properties": {"at": {"ref": "point", "nullable": true}},
    }));
    assert!(check(&d, json!({"at": null})).is_empty());
    let v = one(&d, json!({"at": {"x": "1"}}));
    assert_eq!(
        (v.instance_path.as_str(), v.schema_path.as_str()),
        ("/at/x", "/definitions/point/properties/x/type")
    );
    let v = one(&d, json!({"at": {}}));
    assert_eq!(v.message, "/at is missing the required property \"x\"");
}
