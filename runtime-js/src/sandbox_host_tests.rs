//! Sandbox behaviour towards the outside: `dispatch()`, `request()` through a [`Host`],
//! and pipe mapping functions.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use crate::sandbox_tests::{event, load, sandbox};
use crate::{EventIn, Fold, Host, JsErrorKind, Limits, MapCall, Sandbox};

fn fold_live(s: &mut Sandbox, slot: u32, events: &[EventIn<'_>], live: bool) -> Vec<String> {
    let work: Vec<Fold> = events
        .iter()
        .map(|e| Fold {
            slot,
            sid: 1,
            index: e.index,
            event: e,
            halt_on_error: false,
            check_size: false,
            live,
        })
        .collect();
    s.fold(&work)
        .into_iter()
        .map(|(i, e)| format!("{i}: {}", e.message))
        .collect()
}

fn map_one(s: &mut Sandbox, slot: u32, e: &EventIn<'_>) -> Result<String, crate::JsError> {
    let call = MapCall {
        slot,
        sid: 2,
        index: e.index,
        event: e,
        live: false,
    };
    s.map(&[call]).pop().unwrap()
}

/// Answers `answer` and counts calls, keeping the last url and init.
struct TestHost {
    calls: Rc<Cell<u32>>,
    seen: Rc<RefCell<Vec<(String, String)>>>,
    answer: Result<String, String>,
    sleep: Duration,
}

impl Host for TestHost {
    fn request(&self, url: &str, init_json: &str) -> Result<String, String> {
        self.calls.set(self.calls.get() + 1);
        self.seen
            .borrow_mut()
            .push((url.to_owned(), init_json.to_owned()));
        std::thread::sleep(self.sleep);
        self.answer.clone()
    }
}

fn with_host(s: &mut Sandbox, answer: Result<&str, &str>, sleep: Duration) -> TestHost {
    let host = TestHost {
        calls: Rc::default(),
        seen: Rc::default(),
        answer: answer.map(str::to_owned).map_err(str::to_owned),
        sleep,
    };
    s.set_host(Box::new(TestHost {
        calls: host.calls.clone(),
        seen: host.seen.clone(),
        answer: host.answer.clone(),
        sleep,
    }));
    host
}

const RESPONSE: &str = r#"{"status":200,"ok":true,"headers":{"x":"1"},"body":"{\"n\":7}"}"#;

#[test]
fn dispatches_are_numbered_per_call_and_taken() {
    let mut s = sandbox();
    load(
        &mut s,
        0,
        "fan",
        "(n = 0, e) => { dispatch('orders', {type: 'seen', data: {i: e.index}}); dispatch(\"orders('x')\", {type: 'bare'}); return n + 1; }",
    );
    assert!(fold_live(&mut s, 0, &[event(3, "{}"), event(4, "{}")], false).is_empty());
    let taken = s.dispatches();
    let summary: Vec<_> = taken
        .iter()
        .map(|d| {
            (
                d.slot,
                d.sid,
                d.index,
                d.n,
                d.stream.as_str(),
                d.event_type.as_str(),
                d.data_json.as_str(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (0, 1, 3, 0, "orders", "seen", r#"{"i":3}"#),
            (0, 1, 3, 1, "orders('x')", "bare", "null"),
            (0, 1, 4, 0, "orders", "seen", r#"{"i":4}"#),
            (0, 1, 4, 1, "orders('x')", "bare", "null"),
        ]
    );
    assert!(s.dispatches().is_empty());
}

#[test]
fn a_failed_call_drops_its_dispatches() {
    let mut s = sandbox();
    load(
        &mut s,
        0,
        "flaky",
        "(n = 0, e) => { dispatch('out', {type: 't', data: e.index}); if (e.data.bad) throw new Error('no'); if (e.data.spin) while (true) {} return n + 1; }",
    );
    let events = [
        event(0, "{}"),
        event(1, r#"{"bad":true}"#),
        event(2, r#"{"spin":true}"#),
        event(3, "{}"),
    ];
    let failures = fold_live(&mut s, 0, &events, false);
    assert_eq!(failures.len(), 2, "{failures:?}");
    let indexes: Vec<i64> = s.dispatches().iter().map(|d| d.index).collect();
    assert_eq!(indexes, [0, 3]);
}

#[test]
fn dispatch_checks_its_arguments() {
    let mut s = sandbox();
    let cases = [
        ("dispatch('', {type: 'a'})", "stream must be a stream name"),
        ("dispatch(7, {type: 'a'})", "stream must be a stream name"),
        ("dispatch('o', null)", "event must be an object"),
        (
            "dispatch('o', {data: 1})",
            "event.type must be a string, not undefined",
        ),
        (
            "dispatch('o', {type: ''})",
            "event.type must be 1 to 100 characters",
        ),
        (
            "dispatch('o', {type: 'x'.repeat(101)})",
            "1 to 100 characters",
        ),
        (
            "for (let i = 0; i <= 1000; i++) dispatch('o', {type: 'a'})",
            "at most 1000",
        ),
    ];
    for (slot, (code, expected)) in cases.iter().enumerate() {
        let slot = slot as u32;
        load(&mut s, slot, "check", &format!("(s, e) => {{ {code}; }}"));
        let failures = fold_live(&mut s, slot, &[event(0, "{}")], false);
        assert_eq!(failures.len(), 1, "{code}");
        assert!(failures[0].contains("TypeError"), "{failures:?}");
        assert!(failures[0].contains(expected), "{failures:?}");
    }
    assert!(s.dispatches().is_empty());
}

#[test]
fn request_is_voided_outside_live_calls() {
    let mut s = sandbox();
    let host = with_host(&mut s, Ok(RESPONSE), Duration::ZERO);
    load(
        &mut s,
        0,
        "fetcher",
        "(s, e) => { const r = request('https://example.com/'); return [r.voided, r.ok, r.status, r.body]; }",
    );
    assert!(fold_live(&mut s, 0, &[event(0, "{}")], false).is_empty());
    assert_eq!(host.calls.get(), 0);
    assert_eq!(s.state(0, 1).unwrap().unwrap(), r#"[true,false,0,""]"#);
}

#[test]
fn a_live_request_answers_the_hosts_response() {
    let mut s = sandbox();
    let host = with_host(&mut s, Ok(RESPONSE), Duration::ZERO);
    load(
        &mut s,
        0,
        "fetcher",
        "(s, e) => { const r = request('https://example.com/', {method: 'POST', headers: {'X-N': 1}, body: {a: 1}}); return [r.status, r.ok, r.headers, r.json().n]; }",
    );
    assert!(fold_live(&mut s, 0, &[event(0, "{}")], true).is_empty());
    assert_eq!(host.calls.get(), 1);
    assert_eq!(s.state(0, 1).unwrap().unwrap(), r#"[200,true,{"x":"1"},7]"#);
    let (url, init) = host.seen.borrow()[0].clone();
    assert_eq!(url, "https://example.com/");
    let init: serde_json::Value = serde_json::from_str(&init).unwrap();
    assert_eq!(
        init,
        serde_json::json!({"method": "POST", "headers": {"X-N": "1", "content-type": "application/json"}, "body": "{\"a\":1}"})
    );
}

#[test]
fn a_host_error_can_be_caught() {
    let mut s = sandbox();
    with_host(&mut s, Err("connection refused"), Duration::ZERO);
    load(
        &mut s,
        0,
        "careful",
        "(s, e) => { try { request('https://example.com/'); return 'no'; } catch (err) { return [err instanceof Error, err.message]; } }",
    );
    assert!(fold_live(&mut s, 0, &[event(0, "{}")], true).is_empty());
    assert_eq!(
        s.state(0, 1).unwrap().unwrap(),
        r#"[true,"connection refused"]"#
    );
}

#[test]
fn waiting_on_the_host_does_not_count_toward_the_time_limit() {
    let mut s = Sandbox::new(Limits {
        event_time: Duration::from_millis(100),
        ..Limits::default()
    })
    .unwrap();
    let host = with_host(&mut s, Ok(RESPONSE), Duration::from_millis(300));
    load(
        &mut s,
        0,
        "slow",
        "(s, e) => { const r = request('https://example.com/'); let x = 0; for (let i = 0; i < 100000; i++) x += i; return r.status; }",
    );
    let failures = fold_live(&mut s, 0, &[event(0, "{}")], true);
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(host.calls.get(), 1);
    assert_eq!(s.state(0, 1).unwrap().unwrap(), "200");
}

#[test]
fn request_without_a_host_throws() {
    let mut s = sandbox();
    load(
        &mut s,
        0,
        "fetcher",
        "(s, e) => request('https://example.com/')",
    );
    let failures = fold_live(&mut s, 0, &[event(0, "{}")], true);
    assert_eq!(
        failures,
        ["0: Error: request() is not available in this sandbox"]
    );
    load(&mut s, 1, "bad", "(s, e) => request(42)");
    let failures = fold_live(&mut s, 1, &[event(0, "{}")], true);
    assert!(failures[0].contains("TypeError"), "{failures:?}");
}

#[test]
fn the_native_request_function_is_not_a_global() {
    let mut s = sandbox();
    load(
        &mut s,
        0,
        "probe",
        "(s, e) => Object.getOwnPropertyNames(globalThis).filter((k) => /host/i.test(k))",
    );
    assert!(fold_live(&mut s, 0, &[event(0, "{}")], false).is_empty());
    assert_eq!(s.state(0, 1).unwrap().unwrap(), "[]");
}

#[test]
fn map_results_are_normalised_to_arrays() {
    let mut s = sandbox();
    let cases = [
        ("(e) => null", "[]"),
        ("(e) => undefined", "[]"),
        (
            "(e) => ({type: 'b', data: e.data, extra: 1})",
            r#"[{"type":"b","data":{"a":1}}]"#,
        ),
        (
            "(e) => [null, {data: 2}, {args: ['x', 1, true, null]}]",
            r#"[{"data":2},{"args":["x",1,true,null]}]"#,
        ),
        ("(e) => ({})", "[{}]"),
    ];
    for (slot, (code, expected)) in cases.iter().enumerate() {
        load(&mut s, slot as u32, "pipe", code);
        let result = map_one(&mut s, slot as u32, &event(0, r#"{"a":1}"#));
        assert_eq!(result.as_deref(), Ok(*expected), "{code}");
    }
}

#[test]
fn bad_map_results_are_errors_naming_the_problem() {
    let mut s = sandbox();
    let cases = [
        (
            "(e) => 42",
            "must return an object {type?, data?, args?}, an array of them, or null to drop the event, not the number 42",
        ),
        ("(e) => 'x'", "not the string \"x\""),
        ("(e) => [{}, 3]", "the number 3 at position 1"),
        (
            "(e) => ({args: 'a'})",
            "args must be an array, not the string",
        ),
        ("(e) => ({args: [{}]})", "args[0] must be a string"),
        ("(e) => ({type: ''})", "type must be 1 to 100 characters"),
        (
            "(e) => ({type: 5})",
            "type must be a string, not the number 5",
        ),
        ("async (e) => ({})", "synchronous"),
    ];
    for (slot, (code, expected)) in cases.iter().enumerate() {
        load(&mut s, slot as u32, "pipe", code);
        let error = map_one(&mut s, slot as u32, &event(0, "{}")).unwrap_err();
        assert_eq!(error.kind, JsErrorKind::Thrown);
        assert!(error.message.starts_with("TypeError: "), "{error}");
        assert!(error.message.contains(expected), "{code}: {error}");
    }
}

#[test]
fn map_calls_dispatch_and_log_with_their_event() {
    let mut s = sandbox();
    load(
        &mut s,
        0,
        "pipe",
        "(e) => { console.log('mapping', e.index); dispatch('audit', {type: 'mapped'}); if (e.data.bad) throw new Error('bad'); return {data: 1}; }",
    );
    let (good, bad) = (event(5, "{}"), event(6, r#"{"bad":true}"#));
    let calls = [&good, &bad].map(|e| MapCall {
        slot: 0,
        sid: 9,
        index: e.index,
        event: e,
        live: false,
    });
    let results = s.map(&calls);
    assert_eq!(results[0].as_deref(), Ok(r#"[{"data":1}]"#));
    assert_eq!(results[1].as_ref().unwrap_err().message, "Error: bad");
    let dispatches = s.dispatches();
    assert_eq!(dispatches.len(), 1);
    assert_eq!(
        (
            dispatches[0].slot,
            dispatches[0].sid,
            dispatches[0].index,
            dispatches[0].n
        ),
        (0, 9, 5, 0)
    );
    let lines = s.console();
    assert_eq!(lines.len(), 2);
    assert_eq!((lines[0].sid, lines[0].index), (Some(9), Some(5)));
    assert_eq!((lines[1].sid, lines[1].index), (Some(9), Some(6)));
}
