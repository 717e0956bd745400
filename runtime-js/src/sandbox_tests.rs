//! Sandbox behaviour: folding, states, `current`, console, and each limit contained.

use std::time::{Duration, Instant};

use crate::{EventIn, Fold, JsErrorKind, Language, Limits, Sandbox, prepare};

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
    assert!(
        error.stack.as_deref().unwrap_or("").contains("picky"),
        "{error:?}"
    );
    assert_eq!(s.state(0, 1).unwrap().unwrap(), "2");
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
        .flat_map(|e| {
            [0u32, 1].map(|slot| Fold {
                slot,
                sid: 1,
                index: e.index,
                event: e,
                halt_on_error: false,
                check_size: false,
                live: false,
            })
        })
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
