//! Sandbox behaviour: folding, states, `current`, console, and each limit contained.

use std::time::{Duration, Instant};

use crate::{EventIn, Fold, JsErrorKind, Language, Limits, Sandbox, prepare};
use serde_json::{Value, json};

pub(crate) fn event(index: i64, data: &str) -> EventIn<'_> {
    EventIn {
        stream: "acme/clicks",
        index,
        id: "0190b6a6-0000-7000-8000-000000000000",
        event_type: "click",
        timestamp: 1_700_000_000_000 + index,
        content_type: "application/json",
        data_json: data,
        encoding: None,
        args_json: None,
    }
}

pub(crate) fn sandbox() -> Sandbox {
    Sandbox::new(Limits {
        memory_bytes: 32 * 1024 * 1024,
        event_time: Duration::from_millis(50),
        state_bytes: 100 * 1024,
    })
    .unwrap()
}

pub(crate) fn load(s: &mut Sandbox, slot: u32, name: &str, src: &str) {
    s.load(slot, name, &prepare(src, Language::JavaScript).unwrap())
        .unwrap();
}

/// One call of `event` per reducer of `slots`, in that order, on substream `sid`.
fn slots_fold<'e>(slots: &[u32], sid: i64, event: &'e EventIn<'e>) -> Vec<Fold<'e>> {
    slots
        .iter()
        .map(|&slot| Fold {
            slot,
            sid,
            index: event.index,
            event,
            halt_on_error: false,
            check_size: false,
            live: false,
        })
        .collect()
}

/// One call per event for reducer `slot` on substream `sid`, skipping on errors.
fn calls<'e>(slot: u32, sid: i64, events: &'e [EventIn<'e>], check_size: bool) -> Vec<Fold<'e>> {
    events
        .iter()
        .map(|e| Fold {
            slot,
            sid,
            index: e.index,
            event: e,
            halt_on_error: false,
            check_size,
            live: false,
        })
        .collect()
}

fn fold_all(
    s: &mut Sandbox,
    slot: u32,
    sid: i64,
    events: &[EventIn<'_>],
) -> Vec<(usize, crate::JsError)> {
    s.fold(&calls(slot, sid, events, false))
}

#[test]
fn folds_per_substream_and_reads_state_back() {
    let mut s = sandbox();
    load(
        &mut s,
        0,
        "pages",
        "export default (state = { total: 0, pages: {} }, event) => {\n  state.total++;\n  state.pages[event.data.url] = (state.pages[event.data.url] ?? 0) + 1;\n  return state;\n};",
    );
    let events = [
        event(0, r#"{"url":"/a"}"#),
        event(1, r#"{"url":"/b"}"#),
        event(2, r#"{"url":"/a"}"#),
    ];
    assert!(fold_all(&mut s, 0, 7, &events).is_empty());
    assert!(fold_all(&mut s, 0, 8, &events[..1]).is_empty());
    assert_eq!(
        s.state(0, 7).unwrap().unwrap(),
        r#"{"total":3,"pages":{"/a":2,"/b":1}}"#
    );
    assert_eq!(
        s.state(0, 8).unwrap().unwrap(),
        r#"{"total":1,"pages":{"/a":1}}"#
    );
    assert_eq!(s.state(0, 9).unwrap(), None);
    s.set_state(0, 9, Some(r#"{"total":5,"pages":{}}"#))
        .unwrap();
    assert!(fold_all(&mut s, 0, 9, &events[..1]).is_empty());
    assert_eq!(
        s.state(0, 9).unwrap().unwrap(),
        r#"{"total":6,"pages":{"/a":1}}"#
    );
    s.evict(0, 9);
    assert_eq!(s.state(0, 9).unwrap(), None);
}

#[test]
fn event_has_the_envelope_fields_and_index_argument() {
    let mut s = sandbox();
    load(
        &mut s,
        0,
        "seen",
        "(s, e, i) => [e.stream, e.index, e.type, e.timestamp, e.contentType, e.data, e.args, i]",
    );
    let mut e = event(4, "[1,2]");
    e.args_json = Some(r#"["a",1]"#);
    assert!(fold_all(&mut s, 0, 1, &[e]).is_empty());
    assert_eq!(
        s.state(0, 1).unwrap().unwrap(),
        r#"["acme/clicks",4,"click",1700000000004,"application/json",[1,2],["a",1],4]"#
    );
}

#[test]
fn current_shows_the_other_reducers_state_of_the_same_substream() {
    let mut s = sandbox();
    load(&mut s, 0, "total", "(n = 0, e) => n + 1");
    load(
        &mut s,
        1,
        "double",
        "(s, e, i, current) => current.total * 2",
    );
    let events = [event(0, "1"), event(1, "1")];
    for e in &events {
        let work = [
            Fold {
                slot: 0,
                sid: 3,
                index: e.index,
                event: e,
                halt_on_error: false,
                check_size: false,
                live: false,
            },
            Fold {
                slot: 1,
                sid: 3,
                index: e.index,
                event: e,
                halt_on_error: false,
                check_size: false,
                live: false,
            },
        ];
        assert!(s.fold(&work).is_empty());
    }
    assert_eq!(s.state(1, 3).unwrap().unwrap(), "4");
}

/// `current` is read-only, however deep: a reducer cannot change the state another
/// one folds on, and reads (spread, JSON, array methods) work as usual.
#[test]
fn current_cannot_change_another_reducers_state() {
    let mut s = sandbox();
    load(
        &mut s,
        0,
        "count",
        "(s = {n: 0, deep: {x: 0}, list: []}, e) => { s.n++; s.deep.x++; s.list.push(s.n); return s; }",
    );
    // frozen on the surface only, and an instance of a class of its own
    load(
        &mut s,
        2,
        "frozen",
        "class C { m() { return 1; } }\nexport default (s, e) => Object.freeze({list: [1], c: new C()});",
    );
    let attempts = [
        "current.count.n = 1e6",
        "current.count.deep.x = 1e6",
        "current.count.list.push(1e6)",
        "delete current.count.n",
        "Object.defineProperty(current.count, 'n', {value: 1e6})",
        "Object.getOwnPropertyDescriptor(current.count, 'deep').value.x = 1e6",
        "Object.setPrototypeOf(current.count, null)",
        "current.frozen.list.push(2)",
        "Object.getPrototypeOf(current.frozen.c).m = () => 2",
    ];
    let tries: Vec<String> = attempts
        .iter()
        .map(|a| format!("try {{ {a}; r.push('changed'); }} catch (_) {{ r.push('refused'); }}"))
        .collect();
    let code = format!(
        "(s, e, i, current) => {{ const r = []; {} \
         r.push(JSON.stringify({{...current.count}}), current.count.list.map((x) => x * 2).join(), \
           JSON.stringify(current.frozen), current.frozen.c.m()); \
         return r; }}",
        tries.join(" ")
    );
    load(&mut s, 1, "evil", &code);
    let events = [event(0, "1"), event(1, "1")];
    for e in &events {
        let work = slots_fold(&[0, 2, 1], 3, e);
        let failures = s.fold(&work);
        assert!(failures.is_empty(), "{failures:?}");
    }
    assert_eq!(
        s.state(0, 3).unwrap().unwrap(),
        r#"{"n":2,"deep":{"x":2},"list":[1,2]}"#
    );
    let seen: Vec<Value> = serde_json::from_str(&s.state(1, 3).unwrap().unwrap()).unwrap();
    assert_eq!(
        seen[..attempts.len()],
        vec![json!("refused"); attempts.len()][..]
    );
    assert_eq!(
        seen[attempts.len()..],
        [
            json!(r#"{"n":2,"deep":{"x":2},"list":[1,2]}"#),
            json!("2,4"),
            json!(r#"{"list":[1],"c":{}}"#),
            json!(1)
        ]
    );
    assert_eq!(s.state(2, 3).unwrap().unwrap(), r#"{"list":[1],"c":{}}"#);
}

#[test]
fn a_throw_is_reported_with_its_stack_and_the_next_event_folds() {
    let mut s = sandbox();
    load(
        &mut s,
        0,
        "picky",
        "(n = 0, e) => {\n  if (e.data.bad) throw new Error('bad event');\n  return n + 1;\n}",
    );
    let events = [event(0, "{}"), event(1, r#"{"bad":true}"#), event(2, "{}")];
    let failures = fold_all(&mut s, 0, 1, &events);
    assert_eq!(failures.len(), 1);
    let (at, error) = &failures[0];
    assert_eq!(*at, 1);
    assert_eq!(error.kind, JsErrorKind::Thrown);
    assert_eq!(error.message, "Error: bad event");
    // at the author's line 2 (a function expression is loaded without a line of its
    // own before it)
    let stack = error.stack.as_deref().unwrap_or("");
    assert!(
        stack.contains("picky") && stack.contains(":2:"),
        "{error:?}"
    );
    assert_eq!(s.state(0, 1).unwrap().unwrap(), "2");
}

#[test]
fn a_long_console_line_is_cut_between_characters() {
    let mut s = sandbox();
    // a line cut where a surrogate pair starts keeps whole characters
    load(
        &mut s,
        0,
        "emoji",
        "(n = 0, e) => { console.log('x'.repeat(4095) + '\u{1F600}'.repeat(10)); return 1; }",
    );
    assert!(fold_all(&mut s, 0, 1, &[event(0, "{}")]).is_empty());
    let line = s.console().remove(0);
    assert!(
        line.message.starts_with(&"x".repeat(4095)),
        "{}",
        line.message.len()
    );
    assert!(
        line.message.ends_with(" ... (20 more characters)"),
        "{}",
        &line.message[4090..]
    );
}

#[test]
fn a_huge_thrown_message_is_cut() {
    let mut s = sandbox();
    load(
        &mut s,
        0,
        "loud",
        "(n = 0, e) => { throw 'x'.repeat(1000000); }",
    );
    let failures = fold_all(&mut s, 0, 1, &[event(0, "{}")]);
    let message = &failures[0].1.message;
    assert_eq!(
        message.len(),
        4096 + " ... (995904 more characters)".len(),
        "{}",
        &message[4090..]
    );
    assert!(message.ends_with(" ... (995904 more characters)"));
}

#[test]
fn an_endless_loop_is_stopped_by_the_time_limit() {
    let mut s = sandbox();
    load(
        &mut s,
        0,
        "spin",
        "(n = 0, e) => { if (e.data.spin) while (true) {} return n + 1; }",
    );
    let started = Instant::now();
    let failures = fold_all(
        &mut s,
        0,
        1,
        &[event(0, "{}"), event(1, r#"{"spin":true}"#), event(2, "{}")],
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(failures.len(), 1);
    assert_eq!(
        failures[0].1.kind,
        JsErrorKind::TimeLimit,
        "{:?}",
        failures[0].1
    );
    assert_eq!(s.state(0, 1).unwrap().unwrap(), "2");
}

#[test]
fn a_memory_bomb_is_stopped_and_the_sandbox_goes_on() {
    let mut s = sandbox();
    load(
        &mut s,
        0,
        "bomb",
        "(n = 0, e) => { if (e.data.bomb) { const a = []; while (true) a.push(new Array(100000).fill(1)); } return n + 1; }",
    );
    let failures = fold_all(
        &mut s,
        0,
        1,
        &[event(0, "{}"), event(1, r#"{"bomb":true}"#), event(2, "{}")],
    );
    assert_eq!(failures.len(), 1);
    assert_eq!(
        failures[0].1.kind,
        JsErrorKind::MemoryLimit,
        "{:?}",
        failures[0].1
    );
    assert_eq!(s.state(0, 1).unwrap().unwrap(), "2");
}

/// Folds one event `{"k": kind}` a kind through reducer 0, for reducers that switch on
/// `e.data.k`; answers the failures.
fn fold_kinds(s: &mut Sandbox, kinds: &[&str]) -> Vec<(usize, crate::JsError)> {
    let data: Vec<String> = kinds.iter().map(|k| format!(r#"{{"k":"{k}"}}"#)).collect();
    let events: Vec<_> = data
        .iter()
        .enumerate()
        .map(|(i, d)| event(i as i64, d))
        .collect();
    fold_all(s, 0, 1, &events)
}

/// Memory runs out through many small allocations (QuickJS may then throw `null`,
/// having no room for an error) or one large one (an `InternalError`); a reducer that
/// throws `undefined` or an error saying "out of memory" itself is not out of memory,
/// and a thrown `null` is named as either.
#[test]
fn only_memory_exhaustion_is_called_a_memory_limit() {
    let mut s = sandbox();
    load(
        &mut s,
        0,
        "r",
        "(n = 0, e) => { switch (e.data.k) { \
           case 'small': { const a = []; while (true) a.push(new Array(1000).fill(a.length)); } \
           case 'large': { const a = new Array(1e9).fill(0); return a.length; } \
           case 'null': throw null; \
           case 'undefined': throw undefined; \
           case 'says': throw new Error('out of memory'); \
         } return n + 1; }",
    );
    let kinds = ["small", "large", "null", "undefined", "says"];
    let failures = fold_kinds(&mut s, &kinds);
    let got: Vec<(JsErrorKind, &str)> = failures
        .iter()
        .map(|(_, e)| (e.kind, e.message.as_str()))
        .collect();
    assert_eq!(got.len(), 5, "{failures:?}");
    // many small arrays: QuickJS may have no room left for its error
    assert!(
        got[0].0 == JsErrorKind::MemoryLimit || got[0].1.contains("threw null, or used more"),
        "{:?}",
        got[0]
    );
    assert_eq!(got[1].0, JsErrorKind::MemoryLimit, "{:?}", got[1]);
    assert_eq!(got[2].0, JsErrorKind::Thrown);
    assert!(
        got[2]
            .1
            .starts_with("the reducer threw null, or used more than the memory limit"),
        "{:?}",
        got[2]
    );
    assert_eq!(got[3], (JsErrorKind::Thrown, "undefined was thrown"));
    assert_eq!(got[4], (JsErrorKind::Thrown, "Error: out of memory"));
}

/// Code from strings and BigInt are withheld, each saying so; functions still are
/// functions.
#[test]
fn eval_function_constructors_and_bigint_are_withheld() {
    let mut s = sandbox();
    load(
        &mut s,
        0,
        "r",
        "(n = 0, e) => { switch (e.data.k) { \
           case 'eval': return eval('1'); \
           case 'Function': return Function('return 1')(); \
           case 'constructor': return (() => 1).constructor('return 1')(); \
           case 'generator': return (function* () {}).constructor('yield 1')().next().value; \
           case 'async': return (async () => 1).constructor('return 1'); \
           case 'BigInt': return String(BigInt(1)); \
           case 'typed': return new BigInt64Array(1).length; \
           case 'view': return new DataView(new ArrayBuffer(8)).getBigInt64(0); \
           case 'still': return [(() => 1) instanceof Function, typeof Function.prototype.call, \
             (function () {}).constructor === Function]; \
         } }",
    );
    let kinds = [
        "eval",
        "Function",
        "constructor",
        "generator",
        "async",
        "BigInt",
        "typed",
        "view",
        "still",
    ];
    let failures = fold_kinds(&mut s, &kinds);
    let failed: Vec<usize> = failures.iter().map(|(i, _)| *i).collect();
    assert_eq!(failed, (0..8).collect::<Vec<_>>(), "{failures:?}");
    for (i, e) in &failures[..5] {
        assert!(
            e.message.contains("is not available in reducers"),
            "{}: {e:?}",
            kinds[*i]
        );
    }
    assert_eq!(s.state(0, 1).unwrap().unwrap(), r#"[true,"function",true]"#);
}

/// `Error.prepareStackTrace` would be a hook over every error of the sandbox, whose
/// call sites hand out each frame's function: it is not there, and setting it does
/// nothing.
#[test]
fn no_reducer_can_hook_the_stacks_of_errors() {
    let mut s = sandbox();
    load(
        &mut s,
        0,
        "hook",
        "(n = 0, e) => { try { Error.prepareStackTrace = (err, sites) => sites.map((c) => String(c.getFunction())).join(); } catch (_) {} \
         try { Error.stackTraceLimit = 0; } catch (_) {} return typeof Error.prepareStackTrace; }",
    );
    load(
        &mut s,
        1,
        "victim",
        "(n = 0, e) => { throw new Error('mine'); }",
    );
    let events = [event(0, "{}")];
    let work = slots_fold(&[0, 1], 1, &events[0]);
    let failures = s.fold(&work);
    assert_eq!(s.state(0, 1).unwrap().unwrap(), r#""undefined""#);
    let (_, error) = &failures[0];
    let stack = error.stack.as_deref().unwrap_or("");
    assert!(stack.contains("victim"), "{error:?}");
}

#[test]
fn deep_recursion_is_an_error_not_a_crash() {
    let mut s = sandbox();
    load(
        &mut s,
        0,
        "deep",
        "(n = 0, e) => { const f = (x) => f(x + 1) + 1; return f(0); }",
    );
    let failures = fold_all(&mut s, 0, 1, &[event(0, "{}")]);
    assert_eq!(failures.len(), 1, "{failures:?}");
}

#[test]
fn console_lines_are_captured_in_order() {
    let mut s = sandbox();
    load(
        &mut s,
        0,
        "chatty",
        "(n = 0, e) => { console.log('seen', e.index, {a: 1}); console.error('oops'); return n + 1; }",
    );
    assert!(fold_all(&mut s, 0, 1, &[event(0, "{}")]).is_empty());
    let lines = s.console();
    assert_eq!(lines.len(), 2);
    assert_eq!(
        (lines[0].level.as_str(), lines[0].message.as_str()),
        ("log", r#"seen 0 {"a":1}"#)
    );
    assert_eq!(
        (lines[1].level.as_str(), lines[1].message.as_str()),
        ("error", "oops")
    );
    assert!(s.console().is_empty());
}

#[test]
fn console_output_is_bounded_per_event() {
    let mut s = sandbox();
    load(
        &mut s,
        0,
        "flood",
        "(n = 0, e) => { for (let i = 0; i < 20; i++) console.log('L'.repeat(1000000)); return n + 1; }",
    );
    let events = [event(0, "{}"), event(1, "{}")];
    assert!(fold_all(&mut s, 0, 1, &events).is_empty());
    let lines = s.console();
    // each event: lines cut at 4096 characters, until 16 384 are kept, then one warning
    let of = |i: i64| {
        lines
            .iter()
            .filter(|l| l.index == Some(i))
            .collect::<Vec<_>>()
    };
    for i in 0..2 {
        let kept = of(i);
        assert_eq!(
            kept.len(),
            5,
            "{:?}",
            kept.iter().map(|l| l.message.len()).collect::<Vec<_>>()
        );
        assert!(kept[0].message.ends_with(" ... (995904 more characters)"));
        assert!(kept[..4].iter().all(|l| l.message.len() < 4200));
        assert_eq!(kept[4].level, "warn");
        assert_eq!(
            kept[4].message,
            "16 more console lines were dropped: at most 16384 characters of console \
             output are kept per event (and 1000 lines per batch of events)"
        );
    }
    assert_eq!(s.state(0, 1).unwrap().unwrap(), "2");
}

#[test]
fn no_host_access_exists() {
    let mut s = sandbox();
    load(
        &mut s,
        0,
        "probe",
        "(s, e) => [typeof setTimeout, typeof fetch, typeof require, typeof process, typeof std, typeof os, typeof XMLHttpRequest]",
    );
    assert!(fold_all(&mut s, 0, 1, &[event(0, "{}")]).is_empty());
    assert_eq!(
        s.state(0, 1).unwrap().unwrap(),
        r#"["undefined","undefined","undefined","undefined","undefined","undefined","undefined"]"#
    );
}

#[test]
fn loading_refuses_what_is_not_a_function_and_top_level_loops() {
    let mut s = sandbox();
    let not_fn = prepare("export default 42;", Language::JavaScript).unwrap();
    let error = s.load(0, "x", &not_fn).unwrap_err();
    assert!(error.message.contains("not a function"), "{error}");
    let spin = prepare(
        "while (true) {}\nexport default (s) => s;",
        Language::JavaScript,
    )
    .unwrap();
    assert_eq!(
        s.load(0, "x", &spin).unwrap_err().kind,
        JsErrorKind::TimeLimit
    );
    let import = prepare(
        "import fs from 'fs';\nexport default (s) => s;",
        Language::JavaScript,
    )
    .unwrap();
    assert!(s.load(0, "x", &import).is_err());
}

#[test]
fn a_promise_result_is_an_error() {
    let mut s = sandbox();
    load(&mut s, 0, "later", "async (n = 0, e) => n + 1");
    let failures = fold_all(&mut s, 0, 1, &[event(0, "{}")]);
    assert!(
        failures[0].1.message.contains("synchronous"),
        "{failures:?}"
    );
}

#[test]
fn a_checked_fold_refuses_an_oversize_state_like_a_throw() {
    let mut s = Sandbox::new(Limits {
        state_bytes: 100,
        ..Limits::default()
    })
    .unwrap();
    load(
        &mut s,
        0,
        "grow",
        "(s = { n: 0 }, e) => ({ n: s.n + 1, pad: 'é'.repeat(e.data) })",
    );
    // 40 two-byte characters fit in 100 bytes, 60 do not (though 60 UTF-16 units would)
    let events = [event(0, "40"), event(1, "60"), event(2, "0")];
    let work = calls(0, 1, &events, true);
    let failures = s.fold(&work);
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].0, 1);
    assert!(
        failures[0]
            .1
            .message
            .starts_with("the state is 136 bytes of JSON, over the limit of 100"),
        "{}",
        failures[0].1.message
    );
    assert_eq!(failures[0].1.kind, JsErrorKind::StateLimit);
    // event 1 was skipped: event 2 folded onto the state after event 0
    assert_eq!(s.state(0, 1).unwrap().unwrap(), r#"{"n":2,"pad":""}"#);
}

#[test]
fn a_refused_dispatch_takes_the_call_back() {
    let mut s = sandbox();
    load(
        &mut s,
        0,
        "d",
        "(n = 0, e) => { dispatch('out', { type: 't', data: e.data }); return n + 1; }",
    );
    let events = [event(0, "1"), event(1, "2"), event(2, "3")];
    let work = calls(0, 1, &events, false);
    let failures = s.fold_checked(&work, &mut |ds| {
        if ds[0].data_json == "2" {
            Err("no twos".into())
        } else {
            Ok(())
        }
    });
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].0, 1);
    assert_eq!(failures[0].1.message, "no twos");
    assert_eq!(s.state(0, 1).unwrap().unwrap(), "2");
    let kept: Vec<String> = s.dispatches().into_iter().map(|d| d.data_json).collect();
    assert_eq!(kept, ["1", "3"]);
}

#[test]
fn fold_until_stops_between_events_once_the_time_is_up() {
    let mut s = sandbox();
    load(&mut s, 0, "a", "(n = 0, e) => n + 1");
    load(
        &mut s,
        1,
        "b",
        "(n = 0, e) => { const t = Date.now(); return n + 1; }",
    );
    let events: Vec<EventIn> = (0..5).map(|i| event(i, "{}")).collect();
    // two reducers per event: items of one event are never split
    let work: Vec<Fold> = events
        .iter()
        .flat_map(|e| slots_fold(&[0, 1], 1, e))
        .collect();
    let (done, failures) = s.fold_until(&work, &mut |_| Ok(()), Some(Instant::now()));
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(done, 2, "the first event, for both reducers");
    assert_eq!(s.state(0, 1).unwrap().as_deref(), Some("1"));
    assert_eq!(s.state(1, 1).unwrap().as_deref(), Some("1"));
    // the rest, with time to spare
    let later = Instant::now() + Duration::from_secs(60);
    let (done, _) = s.fold_until(&work[2..], &mut |_| Ok(()), Some(later));
    assert_eq!(done, 8);
    assert_eq!(s.state(0, 1).unwrap().as_deref(), Some("5"));
}

#[test]
fn a_lowered_memory_limit_says_it_is_the_shared_budget() {
    let mut s = sandbox();
    load(
        &mut s,
        0,
        "hog",
        "(n = 0, e) => { const a = []; for (let i = 0; i < 100000; i++) a.push([i]); return n + a.length; }",
    );
    s.set_memory_limit(2 * 1024 * 1024);
    let events = [event(0, "{}")];
    let failures = fold_all(&mut s, 0, 1, &events);
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].1.kind, JsErrorKind::MemoryLimit);
    assert!(
        failures[0].1.message.contains("server-wide limit"),
        "{}",
        failures[0].1.message
    );
}
