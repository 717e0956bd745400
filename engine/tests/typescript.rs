//! The TypeScript check: the module generated for a "kitchen sink" schema, which uses
//! every form of JTD (RFC 8927), compiles under `tsc --noEmit --strict` together with a
//! file that assigns correctly shaped values to its types, and in which wrong shapes
//! (marked `// @ts-expect-error`) are rejected.
//!
//! tsc is `EDDY_TSC`, else `.ci/node/node_modules/.bin/tsc` under the workspace root
//! (`.ci/run` installs it there), else `tsc` on PATH. Without one the check is skipped,
//! unless `EDDY_REQUIRE_TSC=1`, which `.ci/run` sets once tsc is available.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use eddy_engine::types::EventTypeDef;
use serde_json::{Value, json};

fn find_tsc() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("EDDY_TSC").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let local = workspace.join(".ci/node/node_modules/.bin/tsc");
    if local.is_file() {
        return Some(local);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("tsc"))
        .find(|p| p.is_file())
}

fn kitchen_sink() -> Value {
    json!({
        "metadata": {"description": "Every form of JTD in one schema."},
        "definitions": {
            "point": {"properties": {"x": {"type": "float64"}, "y": {"type": "float64"}}},
            "color": {"enum": ["red", "green", "blue"]},
            "shape": {
                "discriminator": "kind",
                "mapping": {
                    "circle": {"properties": {"center": {"ref": "point"}, "radius": {"type": "float32"}}},
                    "polygon": {
                        "properties": {"points": {"elements": {"ref": "point"}}},
                        "optionalProperties": {"fill": {"ref": "color", "nullable": true}},
                    },
                    "label": {"properties": {"text": {"type": "string"}}, "additionalProperties": true},
                },
            },
            "tree": {
                "properties": {"name": {"type": "string"}},
                "optionalProperties": {"children": {"elements": {"ref": "tree"}}},
            },
            "kitchen-sink": {"type": "string", "metadata": {"description": "Clashes with the root's name."}},
            "anything": {},
            "maybe-small": {"type": "int8", "nullable": true},
        },
        "properties": {
            "id": {"type": "string", "metadata": {"pattern": "^[a-z0-9-]+$"}},
            "at": {"type": "timestamp"},
            "ok": {"type": "boolean"},
            "i8": {"type": "int8"},
            "u8": {"type": "uint8"},
            "i16": {"type": "int16"},
            "u16": {"type": "uint16"},
            "i32": {"type": "int32"},
            "u32": {"type": "uint32"},
            "f32": {"type": "float32"},
            "f64": {"type": "float64"},
            "color": {"ref": "color"},
            "shapes": {"elements": {"ref": "shape"}},
            "scores": {"values": {"type": "float64"}},
            "tree": {"ref": "tree"},
            "nickname": {"type": "string", "nullable": true},
            "content-type": {"type": "string"},
            "2fa": {"type": "boolean"},
            "nested": {"properties": {
                "deep": {"values": {"elements": {"enum": ["x", "y"], "nullable": true}}},
            }},
            "open": {"properties": {}, "additionalProperties": true},
            "closed": {"properties": {}},
            "any": {},
            "alias": {"ref": "kitchen-sink"},
            "small": {"ref": "maybe-small"},
            "tagged": {
                "discriminator": "type",
                "mapping": {
                    "a": {"properties": {"n": {"type": "uint16"}}},
                    "b": {"optionalProperties": {"m": {"ref": "anything"}}},
                },
                "nullable": true,
            },
            "grid": {"elements": {"elements": {"ref": "color"}}},
        },
        "optionalProperties": {
            "note": {"type": "string"},
            "home": {"ref": "point", "nullable": true},
        },
        "additionalProperties": true,
    })
}

/// A value of the kitchen sink's type: valid JTD data and, as a literal, valid TypeScript.
fn sample() -> Value {
    json!({
        "id": "abc-1",
        "at": "2024-01-31T12:00:00Z",
        "ok": true,
        "i8": -128, "u8": 255, "i16": -3, "u16": 3, "i32": 7, "u32": 4294967295_u64,
        "f32": 1.5, "f64": -2.25,
        "color": "green",
        "shapes": [
            {"kind": "circle", "center": {"x": 0, "y": 1}, "radius": 2},
            {"kind": "polygon", "points": [{"x": 0, "y": 0}], "fill": null},
            {"kind": "polygon", "points": [], "fill": "blue"},
            {"kind": "label", "text": "hi", "font": "serif"},
        ],
        "scores": {"alice": 1, "bob": 2.5},
        "tree": {"name": "root", "children": [{"name": "leaf", "children": []}]},
        "nickname": null,
        "content-type": "text/plain",
        "2fa": false,
        "nested": {"deep": {"k": ["x", null, "y"]}},
        "open": {"anything": [1, "two"]},
        "closed": {},
        "any": {"whatever": [null]},
        "alias": "just a string",
        "small": null,
        "tagged": {"type": "b", "m": 3},
        "grid": [["red"], []],
        "home": {"x": 1, "y": 2},
        "unlisted": "allowed by additionalProperties",
    })
}

const USE_TS: &str = r#"import type {
  Anything, Color, KitchenSink, KitchenSinkDef, MaybeSmall, Point, Shape, Tree,
} from "./generated";

export const sample: KitchenSink = SAMPLE;

export const shapes: Shape[] = [
  { kind: "circle", center: { x: 1, y: 2 }, radius: 3 },
  { kind: "polygon", points: [] },
  { kind: "label", text: "t", extra: true },
];
export const tagged: KitchenSink["tagged"] = null;
export const anything: Anything = undefined;
export const alias: KitchenSinkDef = "s";
export const small: MaybeSmall = 5;
export const tree: Tree = { name: "a", children: [{ name: "b" }] };

// @ts-expect-error: "square" is not a kind of shape
export const badShape: Shape = { kind: "square", side: 1 };
// @ts-expect-error: a point needs y
export const badPoint: Point = { x: 1 };
// @ts-expect-error: purple is not a color
export const badColor: Color = "purple";
// @ts-expect-error: a tree's name is not nullable
export const badTree: Tree = { name: null };
// @ts-expect-error: "closed" has no properties
export const badClosed: KitchenSink["closed"] = { a: 1 };
"#;

#[test]
fn the_sample_is_valid_data() {
    let def = EventTypeDef::compile(&kitchen_sink()).expect("the kitchen sink compiles");
    assert_eq!(def.validate(&sample()), []);
    let mut bad = sample();
    bad["shapes"][0]["kind"] = json!("square");
    bad["closed"] = json!({"a": 1});
    bad["id"] = json!("Not An Id");
    let rules: Vec<String> = def.validate(&bad).into_iter().map(|v| v.rule).collect();
    assert_eq!(rules, ["additionalProperties", "mapping", "pattern"]);
}

#[test]
fn generated_typescript_compiles_with_tsc() {
    let Some(tsc) = find_tsc() else {
        if std::env::var("EDDY_REQUIRE_TSC").as_deref() == Ok("1") {
            panic!(
                "tsc not found but EDDY_REQUIRE_TSC=1: install it with `npm install --no-save \
                 --prefix .ci/node typescript@5` in the workspace root, or set EDDY_TSC"
            );
        }
        // straight to stderr, past the test harness's capture, so it shows in CI logs
        let _ = writeln!(
            std::io::stderr(),
            "TypeScript check skipped: tsc not found (set EDDY_TSC, put tsc on PATH, or run \
             `npm install --no-save --prefix .ci/node typescript@5` in the workspace root)"
        );
        return;
    };
    let def = EventTypeDef::compile(&kitchen_sink()).expect("the kitchen sink compiles");
    let generated = def.typescript("kitchen-sink");
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("generated.ts"), &generated).expect("write generated.ts");
    let sample = serde_json::to_string_pretty(&sample()).unwrap();
    let use_ts = USE_TS.replace("SAMPLE", &sample);
    std::fs::write(dir.path().join("use.ts"), &use_ts).expect("write use.ts");
    let out = Command::new(&tsc)
        .current_dir(dir.path())
        .args([
            "--noEmit", "--strict", "--pretty", "false", "--target", "es2020",
        ])
        .args(["generated.ts", "use.ts"])
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", tsc.display()));
    assert!(
        out.status.success(),
        "tsc failed ({}):\n{}{}\n--- generated.ts\n{generated}\n--- use.ts\n{use_ts}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
}
