//! Tests of [`EventTypeDef::compile`]: what it refuses and how the refusal reads.

use serde_json::{Value, json};

use super::*;
use crate::ErrorCode;

/// The refusal of `doc`: its message, after checking it is a 400 about the schema.
fn refused(doc: Value) -> String {
    match EventTypeDef::compile(&doc) {
        Ok(_) => panic!("{doc} compiled"),
        Err(e) => {
            assert_eq!(e.code, ErrorCode::Invalid, "{e}");
            assert_eq!(e.details["field"], "schema", "{e}");
            e.message
        }
    }
}

fn compiles(doc: Value) -> EventTypeDef {
    EventTypeDef::compile(&doc).unwrap_or_else(|e| panic!("{doc} refused: {e}"))
}

#[test]
fn a_wrong_type_name_says_where_and_lists_the_types() {
    let doc = json!({"properties": {"age": {"type": "integer"}}});
    let e = EventTypeDef::compile(&doc).unwrap_err();
    assert_eq!(
        e.message,
        "schema is not valid JTD: \"properties/age/type\": \"integer\" is not a JTD type \
         (boolean, string, timestamp, float32, float64, int8, uint8, int16, uint16, int32, \
         uint32)"
    );
    assert_eq!(e.details["schemaPath"], "/properties/age/type");
}

#[test]
fn a_schema_must_be_an_object() {
    assert_eq!(
        refused(json!(5)),
        "schema is not valid JTD: at the root: a schema must be a JSON object, not 5"
    );
    assert_eq!(
        refused(json!({"elements": "string"})),
        "schema is not valid JTD: \"elements\": a schema must be a JSON object, not \"string\""
    );
}

#[test]
fn unknown_keywords_are_refused() {
    let m = refused(json!({"properties": {"a": {"type": "string", "format": "uri"}}}));
    assert!(
        m.starts_with("schema is not valid JTD: \"properties/a\": unknown keyword \"format\""),
        "{m}"
    );
    assert!(m.contains("custom data goes in \"metadata\""), "{m}");
}

#[test]
fn refs_must_name_a_definition() {
    assert_eq!(
        refused(json!({"ref": "nope"})),
        "schema is not valid JTD: \"ref\": ref \"nope\" names no definition (the schema has \
         no definitions)"
    );
    let m = refused(json!({
        "definitions": {"a": {}, "b": {"elements": {"ref": "c"}}},
        "ref": "a",
    }));
    assert_eq!(
        m,
        "schema is not valid JTD: \"definitions/b/elements/ref\": ref \"c\" names no \
         definition (the definitions are \"a\" or \"b\")"
    );
    let m = refused(json!({"properties": {"x": {"ref": "x"}}, "definitions": 3}));
    assert!(
        m.contains("\"definitions\": definitions must be an object"),
        "{m}"
    );
}

#[test]
fn forms_do_not_mix() {
    let m = refused(json!({"type": "string", "enum": ["a"]}));
    assert!(
        m.starts_with(
            "schema is not valid JTD: at the root: \"type\" and \"enum\" cannot be used together"
        ),
        "{m}"
    );
    let m = refused(json!({"additionalProperties": true}));
    assert!(
        m.contains("\"additionalProperties\" needs \"properties\" or"),
        "{m}"
    );
    let m = refused(json!({"discriminator": "kind"}));
    assert!(m.contains("\"discriminator\" needs \"mapping\""), "{m}");
    let m = refused(json!({"mapping": {}}));
    assert!(m.contains("\"mapping\" needs \"discriminator\""), "{m}");
}

#[test]
fn keyword_values_are_checked() {
    let cases = [
        (
            json!({"nullable": "yes"}),
            "\"nullable\": nullable must be true or false",
        ),
        (
            json!({"enum": []}),
            "\"enum\": enum must list at least one string",
        ),
        (
            json!({"enum": ["a", 1]}),
            "\"enum/1\": enum values must be strings, not 1",
        ),
        (
            json!({"enum": ["a", "b", "a"]}),
            "\"enum/2\": enum lists \"a\" twice",
        ),
        (
            json!({"metadata": []}),
            "\"metadata\": metadata must be an object",
        ),
        (
            json!({"properties": {"a": {}}, "optionalProperties": {"a": {}}}),
            "\"optionalProperties/a\": property \"a\" is in both properties and optionalProperties",
        ),
        (
            json!({"elements": {"definitions": {}}}),
            "\"elements/definitions\": definitions are allowed only at the root",
        ),
        (
            json!({"discriminator": "k", "mapping": {"a": {"type": "string"}}}),
            "\"mapping/a\": a mapping's schemas must be of the properties form",
        ),
        (
            json!({"discriminator": "k", "mapping": {"a": {"properties": {}, "nullable": true}}}),
            "\"mapping/a/nullable\": a mapping's schemas cannot be nullable",
        ),
        (
            json!({"discriminator": "k", "mapping": {"a": {"optionalProperties": {"k": {}}}}}),
            "\"mapping/a/optionalProperties/k\": the discriminator \"k\" cannot be a property",
        ),
    ];
    for (doc, expected) in cases {
        let m = refused(doc);
        assert!(m.contains(expected), "{m}\nshould contain\n{expected}");
    }
}

/// Every invalid schema of the JTD spec's test suite (json-typedef-spec's
/// `tests/invalid_schemas.json`, MIT, as the jtd crate ships it) is refused by eddy's
/// own check, not only by jtd's.
#[test]
fn the_spec_invalid_schemas_are_refused_by_the_check() {
    let cases: serde_json::Map<String, Value> =
        serde_json::from_str(include_str!("testdata/jtd_invalid_schemas.json")).unwrap();
    assert_eq!(cases.len(), 49);
    for (name, doc) in cases {
        let e = check::check(&doc).err();
        assert!(e.is_some(), "{name}: {doc} passed the check");
    }
}

#[test]
fn valid_schemas_compile() {
    compiles(json!({}));
    compiles(json!({"nullable": true}));
    compiles(json!({"metadata": {"description": "anything", "x": [1]}}));
    compiles(json!({
        "definitions": {"id": {"type": "string", "metadata": {"pattern": "^[a-z]+$"}}},
        "properties": {
            "id": {"ref": "id"},
            "tags": {"elements": {"type": "string", "metadata": {"pattern": "^#"}}},
            "counts": {"values": {"type": "uint32"}},
            "shape": {
                "discriminator": "kind",
                "mapping": {
                    "circle": {"properties": {"r": {"type": "float64"}}},
                    "label": {"optionalProperties": {
                        "text": {"type": "string", "metadata": {"pattern": "\\S"}}
                    }},
                },
            },
        },
        "optionalProperties": {"when": {"type": "timestamp", "nullable": true}},
        "additionalProperties": true,
    }));
}

#[test]
fn patterns_must_be_valid_regexes() {
    let m = refused(json!({"properties": {"url": {
        "type": "string", "metadata": {"pattern": "(https?"}
    }}}));
    assert_eq!(
        m,
        "schema is not valid: \"properties/url/metadata/pattern\": \"(https?\" is not a \
         valid regex: unclosed group"
    );
    let m = refused(json!({"definitions": {"d": {"values": {
        "type": "string", "metadata": {"pattern": "a{99999}{99999}"}
    }}}}));
    assert!(
        m.contains("\"definitions/d/values/metadata/pattern\""),
        "{m}"
    );
    assert!(m.contains("is not a valid regex"), "{m}");
}

#[test]
fn patterns_belong_to_strings_only() {
    let m = refused(json!({"type": "string", "metadata": {"pattern": 5}}));
    assert_eq!(
        m,
        "schema is not valid: \"metadata/pattern\": metadata.pattern must be a string (a \
         regex), not 5"
    );
    for doc in [
        json!({"elements": {"type": "int32", "metadata": {"pattern": "^1"}}}),
        json!({"elements": {"enum": ["a"], "metadata": {"pattern": "^a"}}}),
        json!({"elements": {"type": "timestamp", "metadata": {"pattern": "^2"}}}),
        json!({"elements": {"metadata": {"pattern": "^a"}}}),
    ] {
        let m = refused(doc);
        assert!(
            m.ends_with(
                "\"elements/metadata/pattern\": metadata.pattern applies only to a \
                         schema with \"type\": \"string\""
            ),
            "{m}"
        );
    }
    let m = refused(
        json!({"discriminator": "k", "mapping": {"a": {"properties": {
            "n": {"type": "uint8", "metadata": {"pattern": "x"}}
        }}}}),
    );
    assert!(
        m.contains("\"mapping/a/properties/n/metadata/pattern\""),
        "{m}"
    );
}

#[test]
fn pointers_in_messages_escape_slashes() {
    let m = refused(json!({"properties": {"a/b": {"type": "int"}}}));
    assert!(m.contains("\"properties/a~1b/type\""), "{m}");
}

#[test]
fn deep_nesting_is_refused() {
    let mut doc = json!({"type": "string"});
    for _ in 0..70 {
        doc = json!({"elements": doc});
    }
    let m = refused(doc);
    assert!(m.contains("schemas nest more than 64 deep"), "{m}");
}

#[test]
fn schema_returns_the_document_as_given() {
    let doc = json!({"properties": {"b": {}, "a": {}}, "metadata": {"x": 1}});
    let def = compiles(doc.clone());
    assert_eq!(def.schema(), &doc);
    let keys: Vec<&String> = def.schema()["properties"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(keys, ["b", "a"]);
}
