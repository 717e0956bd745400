//! Folds every reducer in `examples/reducers/` over its events and compares the state
//! with the expected one (the deno_core `.out` file habit), so the examples that
//! reducer authors copy keep working.

use std::path::Path;

use eddy_runtime_js::{EventIn, Fold, Language, Limits, Sandbox, prepare};
use serde_json::Value;

#[test]
fn every_example_reducer_ends_in_its_expected_state() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/reducers");
    let mut ran = 0;
    for entry in std::fs::read_dir(&dir).expect("examples/reducers") {
        let path = entry.unwrap().path();
        let language = match path.extension().and_then(|e| e.to_str()) {
            Some("js") => Language::JavaScript,
            Some("ts") => Language::TypeScript,
            _ => continue,
        };
        let stem = path.file_stem().unwrap().to_str().unwrap().to_owned();
        let read = |suffix: &str| -> Value {
            let file = dir.join(format!("{stem}.{suffix}.json"));
            serde_json::from_str(
                &std::fs::read_to_string(&file)
                    .unwrap_or_else(|e| panic!("{}: {e}", file.display())),
            )
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
        };
        let events = read("events");
        let expected = read("expected");
        let code = prepare(&std::fs::read_to_string(&path).unwrap(), language)
            .unwrap_or_else(|e| panic!("{stem}: {e}"));
        let mut sandbox = Sandbox::new(Limits::default()).unwrap();
        sandbox
            .load(0, &stem, &code)
            .unwrap_or_else(|e| panic!("{stem}: {e}"));
        let events = events.as_array().expect("an array of events");
        let data: Vec<String> = events.iter().map(|e| e["data"].to_string()).collect();
        let ids: Vec<String> = (0..events.len())
            .map(|i| format!("00000000-0000-7000-8000-{i:012}"))
            .collect();
        let stream = format!("examples/{stem}");
        let inputs: Vec<EventIn> = events
            .iter()
            .enumerate()
            .map(|(i, e)| EventIn {
                stream: &stream,
                index: i as i64,
                id: &ids[i],
                event_type: e["type"].as_str().unwrap_or("event"),
                timestamp: e["timestamp"].as_i64().unwrap_or(i as i64),
                content_type: "application/json",
                data_json: &data[i],
                encoding: None,
                args_json: None,
            })
            .collect();
        let work: Vec<Fold> = inputs
            .iter()
            .map(|e| Fold {
                slot: 0,
                sid: 0,
                index: e.index,
                event: e,
                halt_on_error: false,
                check_size: false,
                live: false,
            })
            .collect();
        let failures = sandbox.fold(&work);
        assert!(failures.is_empty(), "{stem}: {failures:?}");
        let state: Value =
            serde_json::from_str(&sandbox.state(0, 0).unwrap().expect("a state")).unwrap();
        assert_eq!(state, expected, "{stem}");
        ran += 1;
    }
    assert!(ran >= 3, "only {ran} example reducers found");
}
