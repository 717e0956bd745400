//! The sandbox as a deterministic, shared place: `Date` and `Math.random` answer from
//! the event, and frozen built-ins keep one reducer from changing what another reducer
//! or the driver sees.

use crate::sandbox_tests::{load, sandbox};
use crate::{EventIn, Fold, Language, Sandbox, prepare};

fn event_with<'a>(index: i64, id: &'a str, timestamp: i64) -> EventIn<'a> {
    EventIn {
        stream: "acme/clicks",
        index,
        id,
        event_type: "click",
        timestamp,
        content_type: "application/json",
        data_json: "{}",
        encoding: None,
        args_json: None,
    }
}

/// Folds `events` into reducer `slot`, substream 1, and answers the failures' messages.
fn fold(s: &mut Sandbox, slot: u32, events: &[EventIn<'_>]) -> Vec<String> {
    let work: Vec<Fold> = events
        .iter()
        .map(|e| Fold {
            slot,
            sid: 1,
            index: e.index,
            event: e,
            halt_on_error: false,
            check_size: false,
            live: false,
        })
        .collect();
    s.fold(&work)
        .into_iter()
        .map(|(i, e)| format!("{i}: {}", e.message))
        .collect()
}

fn state(s: &mut Sandbox, slot: u32) -> serde_json::Value {
    serde_json::from_str(&s.state(slot, 1).unwrap().unwrap()).unwrap()
}

const ID_A: &str = "0190b6a6-0000-7000-8000-00000000000a";
const ID_B: &str = "0190b6a6-0000-7000-8000-00000000000b";
const CLOCK: &str = "(s, e) => ({ now: Date.now(), made: new Date().getTime(), \
    text: Date() === new Date(e.timestamp).toString(), given: new Date(86400000).getTime(), \
    year: new Date(2020, 0, 2).getFullYear(), isDate: new Date() instanceof Date, \
    sub: new (class D extends Date {})().getTime(), perf: performance.now(), \
    random: [Math.random(), Math.random(), Math.random()] })";

#[test]
fn date_and_random_answer_from_the_event() {
    let ts = 1_700_000_123_456;
    let run = |id: &str| {
        let mut s = sandbox();
        load(&mut s, 0, "clock", CLOCK);
        assert!(fold(&mut s, 0, &[event_with(0, id, ts)]).is_empty());
        state(&mut s, 0)
    };
    let first = run(ID_A);
    assert_eq!(first["now"], ts);
    assert_eq!(first["made"], ts);
    assert_eq!(first["text"], true);
    assert_eq!(first["given"], 86_400_000);
    assert_eq!(first["year"], 2020);
    assert_eq!(first["isDate"], true);
    assert_eq!(first["sub"], ts);
    assert_eq!(first["perf"], 0);
    let random: Vec<f64> = serde_json::from_value(first["random"].clone()).unwrap();
    assert!(random.iter().all(|r| (0.0..1.0).contains(r)), "{random:?}");
    assert!(
        random[0] != random[1] && random[1] != random[2],
        "{random:?}"
    );
    // a fresh sandbox folding the same event gets the same state; another id another one
    assert_eq!(run(ID_A), first);
    assert_ne!(run(ID_B)["random"], first["random"]);
}

#[test]
fn each_call_restarts_the_random_sequence_of_its_event() {
    let mut s = sandbox();
    load(&mut s, 0, "a", "(s = [], e) => [...s, Math.random()]");
    load(&mut s, 1, "b", "(s = [], e) => [...s, Math.random()]");
    let events = [event_with(0, ID_A, 1), event_with(1, ID_B, 2)];
    assert!(fold(&mut s, 0, &events).is_empty());
    assert!(fold(&mut s, 1, &[event_with(0, ID_A, 1)]).is_empty());
    assert!(fold(&mut s, 1, &[event_with(0, ID_A, 1)]).is_empty());
    let (a, b) = (state(&mut s, 0), state(&mut s, 1));
    assert_ne!(a[0], a[1]);
    assert_eq!(b[0], a[0]);
    assert_eq!(b[1], a[0]);
    // spread over [0, 1)
    load(
        &mut s,
        2,
        "spread",
        "(s, e) => { let sum = 0; for (let i = 0; i < 10000; i++) sum += Math.random(); return sum / 10000; }",
    );
    assert!(fold(&mut s, 2, &[event_with(0, ID_A, 1)]).is_empty());
    let mean = state(&mut s, 2).as_f64().unwrap();
    assert!((0.48..0.52).contains(&mean), "{mean}");
}

#[test]
fn outside_an_event_the_clock_is_zero() {
    let mut s = sandbox();
    let code = "const loaded = Date.now();\nexport default (s, e) => [loaded, Date.now()];";
    s.load(0, "m", &prepare(code, Language::JavaScript).unwrap())
        .unwrap();
    assert!(fold(&mut s, 0, &[event_with(0, ID_A, 5)]).is_empty());
    assert_eq!(state(&mut s, 0), serde_json::json!([0, 5]));
}

#[test]
fn built_ins_cannot_be_changed_for_a_sibling() {
    let mut s = sandbox();
    // sloppy code: the assignments are ignored
    load(
        &mut s,
        0,
        "vandal",
        "(s, e) => { JSON.stringify = () => '\"hacked\"'; JSON.parse = () => 1; \
         Object.prototype.polluted = 1; Array.prototype.push = null; Math.random = () => 0.5; \
         Date.now = () => 1; leaked = 1; globalThis.leaked2 = 2; return 'done'; }",
    );
    // strict code: each one throws
    for (slot, attack) in [
        "JSON.stringify = () => 'x'",
        "Object.prototype.polluted = 1",
        "Object.defineProperty(Object.prototype, 'polluted', { get() { return 1; } })",
        "Object.prototype.toString = () => 'x'",
        "Object.setPrototypeOf(Object.prototype, {})",
        "Array.prototype.map = null",
        "Object.getPrototypeOf([].values()).next = null",
        "Object.getPrototypeOf(function* () {}).prototype.next = null",
        "globalThis.leaked3 = 1",
        "delete globalThis.JSON",
        "Error.prototype.name = 'x'",
    ]
    .iter()
    .enumerate()
    {
        let slot = slot as u32 + 1;
        let code = format!("export default (s, e) => {{ {attack}; return 'changed'; }};");
        s.load(
            slot,
            "strict",
            &prepare(&code, Language::JavaScript).unwrap(),
        )
        .unwrap();
        let failures = fold(&mut s, slot, &[event_with(0, ID_A, 1)]);
        assert_eq!(failures.len(), 1, "{attack}: {failures:?}");
        assert!(failures[0].contains("TypeError"), "{attack}: {failures:?}");
    }
    load(
        &mut s,
        20,
        "sibling",
        "(s, e) => { const a = []; a.push(1); console.log({ x: 1 }); dispatch('out', { type: 't', data: { y: 2 } }); \
         return { json: JSON.stringify({ a }), parsed: JSON.parse('[1]'), polluted: ({}).polluted, \
         leaked: typeof leaked + typeof leaked2 + typeof leaked3, now: Date.now(), \
         tag: Object.prototype.toString.call([]) }; }",
    );
    let events = [event_with(0, ID_A, 7)];
    assert!(fold(&mut s, 0, &events).is_empty());
    assert!(fold(&mut s, 20, &events).is_empty());
    assert_eq!(state(&mut s, 0), "done");
    assert_eq!(
        state(&mut s, 20),
        serde_json::json!({"json": "{\"a\":[1]}", "parsed": [1], "leaked": "undefinedundefinedundefined", "now": 7, "tag": "[object Array]"})
    );
    let lines = s.console();
    assert_eq!(lines.last().unwrap().message, r#"{"x":1}"#);
    assert_eq!(s.dispatches()[0].data_json, r#"{"y":2}"#);
}

#[test]
fn own_properties_named_like_inherited_ones_can_be_set() {
    let code = "export default (s, e) => { \
        const o = {}; o.toString = () => 'mine'; o.constructor = 1; \
        const counts = {}; for (const w of ['valueOf', 'toString', 'hasOwnProperty', 'x']) counts[w] = 1; \
        const err = new Error('m'); err.name = 'Named'; err.message = 'changed'; \
        class Custom extends Error { constructor(m) { super(m); this.name = 'Custom'; } } \
        function F() {} F.prototype.toString = function () { return 'F'; }; \
        return [String(o), o.constructor, counts, String(err), String(new Custom('c')), String(new F()), \
          Object.keys(counts).length, ({}).hasOwnProperty.call(counts, 'x')]; };";
    let mut s = sandbox();
    s.load(0, "own", &prepare(code, Language::JavaScript).unwrap())
        .unwrap();
    let failures = fold(&mut s, 0, &[event_with(0, ID_A, 1)]);
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(
        state(&mut s, 0),
        serde_json::json!(["mine", 1, {"valueOf": 1, "toString": 1, "hasOwnProperty": 1, "x": 1}, "Named: changed", "Custom: c", "F", 4, true])
    );
}
