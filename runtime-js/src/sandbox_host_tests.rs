//! Sandbox behaviour towards the outside: `dispatch()`, `request()` through a [`Host`],
//! and pipe mapping functions.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

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

/// Answers `answer` after `sleep` (or gives up at the timeout it is given, as a real
/// host does), and counts calls, keeping each url, init and timeout.
struct TestHost {
    calls: Rc<Cell<u32>>,
    seen: Rc<RefCell<Vec<(String, String)>>>,
    timeouts: Rc<RefCell<Vec<Duration>>>,
    answer: Result<String, String>,
    sleep: Duration,
}

impl Host for TestHost {
    fn request(&self, url: &str, init_json: &str, timeout: Duration) -> Result<String, String> {
        self.calls.set(self.calls.get() + 1);
        self.seen
            .borrow_mut()
            .push((url.to_owned(), init_json.to_owned()));
        self.timeouts.borrow_mut().push(timeout);
        if self.sleep > timeout {
            std::thread::sleep(timeout);
            return Err("timed out".to_owned());
        }
        std::thread::sleep(self.sleep);
        self.answer.clone()
    }
}

fn with_host(s: &mut Sandbox, answer: Result<&str, &str>, sleep: Duration) -> TestHost {
    let host = TestHost {
        calls: Rc::default(),
        seen: Rc::default(),
        timeouts: Rc::default(),
        answer: answer.map(str::to_owned).map_err(str::to_owned),
        sleep,
    };
    s.set_host(Box::new(TestHost {
        calls: host.calls.clone(),
        seen: host.seen.clone(),
        timeouts: host.timeouts.clone(),
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
fn waiting_on_the_host_counts_toward_the_time_limit() {
    let mut s = Sandbox::new(Limits {
        event_time: Duration::from_millis(100),
        ..Limits::default()
    })
    .unwrap();
    let host = with_host(&mut s, Ok(RESPONSE), Duration::from_millis(30));
    load(
        &mut s,
        0,
        "quick",
        "(s, e) => request('https://example.com/').status",
    );
    assert!(fold_live(&mut s, 0, &[event(0, "{}")], true).is_empty());
    assert_eq!(s.state(0, 1).unwrap().unwrap(), "200");
    let given = host.timeouts.borrow()[0];
    assert!(
        given <= Duration::from_millis(100) && given > Duration::from_millis(50),
        "the host was given {given:?}, not what was left of 100 ms"
    );
}

#[test]
fn a_request_that_outlasts_the_time_limit_fails_its_event_only() {
    let mut s = Sandbox::new(Limits {
        event_time: Duration::from_millis(100),
        ..Limits::default()
    })
    .unwrap();
    let host = with_host(&mut s, Ok(RESPONSE), Duration::from_secs(5));
    // the code catches the host's error: the event fails all the same
    load(
        &mut s,
        0,
        "patient",
        "(n = 0, e) => { if (e.data.call) { try { request('https://example.com/'); } catch (_) {} dispatch('out', {type: 'x'}); } return n + 1; }",
    );
    let started = Instant::now();
    let events = [
        event(0, r#"{"call":true}"#),
        event(1, "{}"),
        event(2, r#"{"call":true}"#),
    ];
    let work: Vec<Fold> = events
        .iter()
        .map(|e| Fold {
            slot: 0,
            sid: 1,
            index: e.index,
            event: e,
            halt_on_error: false,
            check_size: false,
            live: true,
        })
        .collect();
    let failures = s.fold(&work);
    let took = started.elapsed();
    assert!(took < Duration::from_millis(600), "took {took:?}");
    assert_eq!(host.calls.get(), 2);
    assert_eq!(failures.len(), 2, "{failures:?}");
    for ((i, error), expected) in failures.iter().zip([0, 2]) {
        assert_eq!(*i, expected);
        assert_eq!(error.kind, JsErrorKind::TimeLimit, "{error}");
        assert_eq!(
            error.message,
            "the reducer waited in request() until the time limit of 100 ms for one event ran \
             out and was stopped"
        );
    }
    // only the event without a request was folded, and the failed calls dispatched nothing
    assert_eq!(s.state(0, 1).unwrap().unwrap(), "1");
    assert!(s.dispatches().is_empty());
}

#[test]
fn a_request_after_the_time_limit_is_not_sent() {
    let mut s = Sandbox::new(Limits {
        event_time: Duration::from_millis(50),
        ..Limits::default()
    })
    .unwrap();
    let host = with_host(&mut s, Ok(RESPONSE), Duration::ZERO);
    load(
        &mut s,
        0,
        "late",
        "(s, e) => { let x = 0; try { while (true) { x++; if (x % 1000 === 0) request('https://example.com/'); } } catch (_) {} return x; }",
    );
    let failures = fold_live(&mut s, 0, &[event(0, "{}")], true);
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(failures[0].contains("time limit of 50 ms"), "{failures:?}");
    assert!(host.timeouts.borrow().iter().all(|t| !t.is_zero()));
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
        ("(e) => Array.from({length: 1000}, () => null)", "[]"),
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
        (
            "(e) => Array.from({length: 1001}, () => ({}))",
            "returned 1001 outputs: at most 1000 are allowed for one event",
        ),
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

#[test]
fn map_keeping_leaves_out_what_is_the_events_own() {
    let mut s = sandbox();
    load(
        &mut s,
        0,
        "splice",
        "(e) => e.index === 0 ? e : e.index === 1 ? {...e, type: 'renamed'} \
         : e.index === 2 ? {data: {t: 1}, timestamp: e.timestamp} : [e, {type: 'extra'}]",
    );
    let events: Vec<EventIn> = (0..4).map(|i| event(i, r#"{"t":5}"#)).collect();
    let calls: Vec<MapCall> = events
        .iter()
        .map(|e| MapCall {
            slot: 0,
            sid: 1,
            index: e.index,
            event: e,
            live: false,
        })
        .collect();
    let out: Vec<String> = s
        .map_keeping(&calls)
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(
        out,
        [
            "[{}]",
            r#"[{"type":"renamed"}]"#,
            r#"[{"data":{"t":1}}]"#,
            r#"[{},{"type":"extra"}]"#,
        ]
    );
    // the plain map keeps what the function returned
    let plain = s.map(&calls[..1]).pop().unwrap().unwrap();
    assert!(plain.contains(r#""data":{"t":5}"#), "{plain}");
}
