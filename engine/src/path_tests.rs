use super::*;

fn ok(path: &str) -> Resource {
    match parse(path) {
        Ok(r) => r,
        Err(e) => panic!("{path:?} failed: {e}"),
    }
}

fn err(path: &str) -> String {
    match parse(path) {
        Ok(r) => panic!("{path:?} parsed as {r:?}"),
        Err(e) => e.message,
    }
}

fn sp(path: &str) -> StreamPath {
    match ok(path) {
        Resource::Stream(s) => s,
        other => panic!("{path:?} is not a stream: {other:?}"),
    }
}

fn acct(name: &str) -> AccountName {
    AccountName::new(name).unwrap()
}

fn stream(a: &str, s: &str) -> StreamPath {
    StreamPath {
        account: acct(a),
        stream: StreamName::new(s).unwrap(),
        args: None,
    }
}

fn args(text: &str) -> Vec<Arg> {
    Args::parse(text)
        .unwrap_or_else(|e| panic!("{text:?}: {e}"))
        .as_slice()
        .to_vec()
}

fn canon(text: &str) -> String {
    Args::parse(text)
        .unwrap_or_else(|e| panic!("{text:?}: {e}"))
        .canonical()
}

fn arg_err(text: &str) -> String {
    Args::parse(text).unwrap_err().message
}

fn s(v: &str) -> Arg {
    Arg::Str(v.into())
}

#[test]
fn account() {
    assert_eq!(ok("/acme"), Resource::Account(acct("acme")));
    assert_eq!(ok("/acme/"), Resource::Account(acct("acme")));
    assert_eq!(ok("/A-z_09"), Resource::Account(acct("A-z_09")));
    assert!(!acct("acme").is_reserved());
    for lookalike in ["EDDY", "Eddy", "API", "Healthz"] {
        assert!(acct(lookalike).is_reserved(), "{lookalike}");
    }
    for name in ["eddy", "api", "ui", "ws", "auth", "healthz", "metrics"] {
        let Resource::Account(a) = ok(&format!("/{name}")) else {
            panic!()
        };
        assert!(a.is_reserved(), "{name}");
        assert_eq!(a.as_str(), name);
        assert_eq!(a.to_string(), name);
    }
}

#[test]
fn stream_and_trailing_slash() {
    assert_eq!(
        ok("/acme/orders"),
        Resource::Stream(stream("acme", "orders"))
    );
    assert_eq!(ok("/acme/orders/"), ok("/acme/orders"));
    assert_eq!(ok("/acme/orders('x')/"), ok("/acme/orders('x')"));
    assert_eq!(sp("/acme/orders").to_string(), "acme/orders");
    assert_eq!(sp("/acme/orders").url(), "/acme/orders");
    assert_eq!(
        err("/acme/orders//"),
        "unknown path segment \"\" after stream \"acme/orders\""
    );
}

#[test]
fn substream() {
    let p = sp("/acme/events('a',1,bob)");
    assert_eq!(p.stream.as_str(), "events");
    assert_eq!(
        p.args.as_ref().unwrap().as_slice(),
        &[s("a"), Arg::Num(1.0), Arg::Account(acct("bob"))]
    );
    assert_eq!(p.to_string(), "acme/events('a',1,bob)");
    assert_eq!(p.args.unwrap().to_string(), "'a',1,bob");
    assert_eq!(
        sp("/acme/events( \"a\" , 1.0,\tbob )").to_string(),
        "acme/events('a',1,bob)"
    );
}

#[test]
fn events() {
    let base = stream("a", "s");
    assert_eq!(ok("/a/s/42"), Resource::Event(base.clone(), 42));
    assert_eq!(ok("/a/s[42]"), Resource::Event(base.clone(), 42));
    assert_eq!(ok("/a/s[0]/"), Resource::Event(base.clone(), 0));
    assert_eq!(
        err("/a/s/007"),
        "event index \"007\" has a leading zero; write it as 7"
    );
    assert_eq!(
        err("/a/s[00]"),
        "event index \"00\" has a leading zero; write it as 0"
    );
    assert_eq!(
        ok("/a/s/18446744073709551615"),
        Resource::Event(base, u64::MAX)
    );
    let sub = sp("/a/s('x')");
    assert_eq!(ok("/a/s('x')/7"), Resource::Event(sub.clone(), 7));
    assert_eq!(ok("/a/s('x')[7]"), Resource::Event(sub, 7));
    assert_eq!(
        err("/a/s[x3]"),
        "event index \"x3\" is not a non-negative integer"
    );
    assert_eq!(
        err("/a/s/3x"),
        "event index \"3x\" is not a non-negative integer"
    );
    assert_eq!(
        err("/a/s[-1]"),
        "event index \"-1\" is not a non-negative integer"
    );
    assert_eq!(
        err("/a/s[]"),
        "event index \"\" is not a non-negative integer"
    );
    assert_eq!(
        err("/a/s[1]]"),
        "event index \"1]\" is not a non-negative integer"
    );
    assert_eq!(
        err("/a/s/18446744073709551616"),
        "event index \"18446744073709551616\" is larger than 18446744073709551615"
    );
    assert_eq!(
        err("/a/s[3"),
        "event index \"[3\" after stream \"a/s\" has no closing \"]\""
    );
    assert_eq!(
        err("/a/s/3/x"),
        "unknown path segment \"x\" after \"a/s/3\""
    );
}

#[test]
fn reducers() {
    let r = |n: &str| ReducerName::new(n).unwrap();
    assert_eq!(
        ok("/a/s.total"),
        Resource::Reducer(stream("a", "s"), r("total"))
    );
    assert_eq!(
        ok("/a/s(1).total"),
        Resource::Reducer(sp("/a/s(1)"), r("total"))
    );
    assert_eq!(
        ok("/a/s.this"),
        Resource::Reducer(stream("a", "s"), r("this"))
    );
    assert_eq!(r("by-day_2").as_str(), "by-day_2");
    assert_eq!(r("x").to_string(), "x");
    assert_eq!(
        err("/a/s.to$al"),
        format!("reducer name \"to$al\" {NAME_RULE}")
    );
    assert_eq!(err("/a/s."), format!("reducer name \"\" {NAME_RULE}"));
    assert_eq!(err("/a/s.r/x"), format!("reducer name \"r/x\" {NAME_RULE}"));
}

#[test]
fn event_types() {
    let et = |t: &str, f| Resource::EventType {
        stream: stream("a", "s"),
        event_type: t.into(),
        format: f,
    };
    assert_eq!(
        ok("/a/s:order.created.json"),
        et("order.created", Some(TypeFormat::Json))
    );
    assert_eq!(
        ok("/a/s:order.created.ts"),
        et("order.created", Some(TypeFormat::Ts))
    );
    assert_eq!(ok("/a/s:a.b"), et("a.b", None));
    assert_eq!(ok("/a/s:x"), et("x", None));
    assert_eq!(ok("/a/s:x/"), et("x", None));
    assert_eq!(ok("/a/s:it's%20(ok)"), et("it's (ok)", None));
    assert_eq!(ok("/a/s:caf%C3%A9"), et("café", None));
    assert_eq!(ok("/a/s:json"), et("json", None));
    let sub = ok("/a/s('x'):t.json");
    assert_eq!(
        sub,
        Resource::EventType {
            stream: sp("/a/s('x')"),
            event_type: "t".into(),
            format: Some(TypeFormat::Json)
        }
    );
    let hundred = "é".repeat(100);
    assert_eq!(ok(&format!("/a/s:{hundred}")), et(&hundred, None));
    assert!(err(&format!("/a/s:{hundred}x")).ends_with("is longer than 100 characters"));
    assert_eq!(
        ok(&format!("/a/s:{hundred}.json")),
        et(&hundred, Some(TypeFormat::Json))
    );
    assert_eq!(err("/a/s:"), "event type after stream \"a/s\" is empty");
    assert_eq!(
        err("/a/s:.json"),
        "event type after stream \"a/s\" is empty"
    );
    assert_eq!(
        err("/a/s:a%01b"),
        "event type \"a\\u{1}b\" contains a control character or \"/\""
    );
    assert_eq!(
        err("/a/s:a/b"),
        "event type \"a/b\" contains a control character or \"/\""
    );
}

#[test]
fn pipes_and_logs() {
    let (from, to) = (stream("a", "s"), stream("b", "t"));
    assert_eq!(
        ok("/a/s/pipe/b/t"),
        Resource::Pipe {
            from: from.clone(),
            to: to.clone()
        }
    );
    assert_eq!(
        ok("/a/s/pipe/b/t/"),
        Resource::Pipe {
            from: from.clone(),
            to: to.clone()
        }
    );
    assert_eq!(ok("/a/s/logs"), Resource::Logs(from.clone()));
    assert_eq!(
        ok("/a/s/logs/pipe/b/t"),
        Resource::PipeLogs {
            from: from.clone(),
            to: to.clone()
        }
    );
    let to_sub = sp("/b/t('x/y',2)");
    assert_eq!(
        ok("/a/s/pipe/b/t('x/y',2)"),
        Resource::Pipe {
            from: from.clone(),
            to: to_sub.clone()
        }
    );
    assert_eq!(
        ok("/a/s/logs/pipe/b/t('x/y',2)"),
        Resource::PipeLogs { from, to: to_sub }
    );
    assert_eq!(
        ok("/a/s(1)/pipe/b/t"),
        Resource::Pipe {
            from: sp("/a/s(1)"),
            to
        }
    );
    assert_eq!(
        err("/a/s/pipe"),
        "pipe from stream \"a/s\" has no target /account/stream"
    );
    assert_eq!(
        err("/a/s/logs/pipe"),
        "pipe logs of stream \"a/s\" have no target /account/stream"
    );
    assert_eq!(
        err("/a/s/pipe/b"),
        "pipe target \"b\" is not of the form account/stream"
    );
    assert_eq!(
        err("/a/s/pipe/b/t/x"),
        "unexpected text \"/x\" after pipe target \"b/t\""
    );
    assert_eq!(
        err("/a/s/pipe/b/t.r"),
        "unexpected text \".r\" after pipe target \"b/t\""
    );
    assert_eq!(err("/a/s/pipe/b/this"), "stream name \"this\" is reserved");
    assert_eq!(
        err("/a/s/pipe/b c/t"),
        format!("account name \"b c\" {NAME_RULE}")
    );
    assert_eq!(
        err("/a/s/logs/x"),
        "unknown path segment \"x\" after \"a/s/logs\""
    );
}

#[test]
fn stream_subresources() {
    let base = stream("a", "s");
    assert_eq!(ok("/a/s/settings"), Resource::Settings(base.clone()));
    assert_eq!(ok("/a/s/substreams"), Resource::Substreams(base.clone()));
    assert_eq!(ok("/a/s/reducers"), Resource::Reducers(base.clone()));
    assert_eq!(ok("/a/s/webhooks"), Resource::Webhooks(base.clone()));
    assert_eq!(
        ok("/a/s/webhooks/hook_1-A"),
        Resource::Webhook(base.clone(), "hook_1-A".into())
    );
    assert_eq!(
        ok("/a/s/webhooks/h1/resume"),
        Resource::WebhookResume(base.clone(), "h1".into())
    );
    assert_eq!(
        ok("/a/s/webhooks/h1/resume/"),
        Resource::WebhookResume(base.clone(), "h1".into())
    );
    assert_eq!(
        ok("/a/s/webhooks/h1/pause"),
        Resource::WebhookPause(base.clone(), "h1".into())
    );
    assert_eq!(ok("/a/s/pipes"), Resource::Pipes(base.clone()));
    assert_eq!(ok("/a/s/types"), Resource::Types(base.clone()));
    assert!(parse("/a/s/types/x").is_err());
    assert_eq!(
        ok("/a/s/webhooks/h1/replay"),
        Resource::WebhookReplay(base, "h1".into())
    );
    assert_eq!(ok("/a/s(1)/settings"), Resource::Settings(sp("/a/s(1)")));
    assert_eq!(ok("/a/s(1)/webhooks"), Resource::Webhooks(sp("/a/s(1)")));
    assert_eq!(
        err("/a/s/webhooks/h.1"),
        format!("webhook id \"h.1\" {NAME_RULE}")
    );
    assert_eq!(
        err(&format!("/a/s/webhooks/{}", "h".repeat(65))),
        format!("webhook id \"{}…\" {NAME_RULE}", "h".repeat(64))
    );
    assert_eq!(
        err("/a/s/webhooks/h1/stop"),
        "unknown path segment \"stop\" after \"a/s/webhooks/h1\""
    );
    assert_eq!(
        err("/a/s/settings/x/y"),
        "unknown path segment \"x\" after \"a/s/settings\""
    );
    assert_eq!(
        err("/acme/orders/foo"),
        "unknown path segment \"foo\" after stream \"acme/orders\""
    );
    assert_eq!(
        err("/acme/orders/foo/bar"),
        "unknown path segment \"foo\" after stream \"acme/orders\""
    );
    assert_eq!(
        err("/acme/orders('x')/foo"),
        "unknown path segment \"foo\" after stream \"acme/orders('x')\""
    );
    assert_eq!(
        err("/a/s//x"),
        "unknown path segment \"\" after stream \"a/s\""
    );
}

#[test]
fn names() {
    assert_eq!(err("/a%20b"), format!("account name \"a b\" {NAME_RULE}"));
    assert_eq!(
        err("/a%20b"),
        "account name \"a b\" may only contain A-Z a-z 0-9 _ - (1 to 64 characters)"
    );
    assert_eq!(err("/é/s"), format!("account name \"é\" {NAME_RULE}"));
    assert_eq!(
        err("/a/or$ders"),
        format!("stream name \"or$ders\" {NAME_RULE}")
    );
    assert_eq!(err("/a/(1)"), format!("stream name \"\" {NAME_RULE}"));
    let long = "x".repeat(64);
    assert_eq!(
        ok(&format!("/{long}/{long}")),
        Resource::Stream(stream(&long, &long))
    );
    assert!(err(&format!("/{long}x")).starts_with("account name"));
    assert!(err(&format!("/a/{long}x")).starts_with("stream name"));
    for name in ["this", "dispatch", "request"] {
        assert_eq!(
            err(&format!("/a/{name}")),
            format!("stream name \"{name}\" is reserved")
        );
        assert!(StreamName::new(name).is_err());
    }
    assert_eq!(StreamName::new("This").unwrap().as_str(), "This");
    assert_eq!(StreamName::new("s").unwrap().to_string(), "s");
    assert!(AccountName::new("").is_err());
    assert!(ReducerName::new("a b").is_err());
}

#[test]
fn path_shape_errors() {
    assert_eq!(err(""), "path \"\" does not start with \"/\"");
    assert_eq!(err("acme"), "path \"acme\" does not start with \"/\"");
    assert_eq!(err("/"), "path is empty; expected /{account}");
    assert_eq!(err("//"), "path is empty; expected /{account}");
    assert_eq!(
        err("/%FF"),
        "path \"/%FF\" is not valid UTF-8 after percent-decoding"
    );
    assert_eq!(
        err("/a/s(1)x"),
        "unexpected text \"x\" after stream \"a/s(1)\""
    );
    assert_eq!(
        err("/a/s(1)(2)"),
        "unexpected text \"(2)\" after stream \"a/s(1)\""
    );
    let (a, st) = ("a".repeat(64), "s".repeat(64));
    let fits = format!("/{a}/{st}('{}')", "x".repeat(MAX_ARGS_LEN - 2));
    assert_eq!(fits.len(), MAX_PATH_LEN);
    assert_eq!(sp(&fits).url(), fits);
    let too_long = format!("/{a}/{st}('{}')", "x".repeat(MAX_ARGS_LEN - 1));
    assert_eq!(
        err(&too_long),
        "path is longer than 2048 bytes after percent-decoding"
    );
    // The limit counts decoded bytes.
    let encoded = format!("/{a}/{st}('{}')", "%41".repeat(MAX_ARGS_LEN - 2));
    assert!(parse(&encoded).is_ok());
}

#[test]
fn arg_kinds() {
    assert_eq!(args("'a'"), [s("a")]);
    assert_eq!(args("\"a\""), [s("a")]);
    assert_eq!(args("''"), [s("")]);
    assert_eq!(args("\"it's\""), [s("it's")]);
    assert_eq!(args("'say \"hi\"'"), [s("say \"hi\"")]);
    assert_eq!(
        args("true,false,null"),
        [Arg::Bool(true), Arg::Bool(false), Arg::Null]
    );
    assert_eq!(args("bob"), [Arg::Account(acct("bob"))]);
    assert_eq!(args("eddy"), [Arg::Account(acct("eddy"))]);
    assert!(
        Args::parse("Infinity").is_err(),
        "a JavaScript number, not an account"
    );
    assert_eq!(args("0x"), [Arg::Account(acct("0x"))]);
    assert_eq!(args("0b102"), [Arg::Account(acct("0b102"))]);
    assert_eq!(args("1e"), [Arg::Account(acct("1e"))]);
    assert_eq!(args("123abc"), [Arg::Account(acct("123abc"))]);
    assert_eq!(args("123"), [Arg::Num(123.0)]);
    assert_eq!(args(" 'a' ,\t2 "), [s("a"), Arg::Num(2.0)]);
    assert_eq!(args("'a','b'"), [s("a"), s("b")]);
}

#[test]
fn numbers() {
    let num = |t: &str| match args(t).as_slice() {
        [Arg::Num(n)] => *n,
        other => panic!("{t}: {other:?}"),
    };
    assert_eq!(num("1"), 1.0);
    assert_eq!(num("-2.5"), -2.5);
    assert_eq!(num("+3"), 3.0);
    assert_eq!(num(".5"), 0.5);
    assert_eq!(num("5."), 5.0);
    assert_eq!(num("5.e1"), 50.0);
    assert_eq!(num("1E3"), 1000.0);
    assert_eq!(num("1e-7"), 1e-7);
    for zero in ["010", "-010", "00", "01.5", "+09"] {
        assert!(arg_err(zero).contains("has a leading zero"), "{zero}");
    }
    assert_eq!(num("0"), 0.0);
    assert_eq!(num("0.5"), 0.5);
    assert_eq!(num("-0.5e1"), -5.0);
    for js_value in ["NaN", "Infinity", "-Infinity", "undefined"] {
        assert!(
            arg_err(js_value).contains("quote it for a string"),
            "{js_value}"
        );
    }
    assert_eq!(args("'NaN'"), [s("NaN")]);
    assert_eq!(num("0x10"), 16.0);
    assert_eq!(num("0XfF"), 255.0);
    assert_eq!(num("-0x10"), -16.0);
    assert_eq!(num("0o17"), 15.0);
    assert_eq!(num("0b101"), 5.0);
    assert_eq!(num("0xffffffffffffffffffffffffffffffffff"), 2f64.powi(136));
    assert!(num("-0").is_sign_negative());
    assert_eq!(
        arg_err("1e400"),
        "factory argument 1 (\"1e400\") is not a finite number"
    );
    assert_eq!(
        arg_err("1,-1e999"),
        "factory argument 2 (\"-1e999\") is not a finite number"
    );
    let not = "is not a string, number, true, false, null or account name";
    for bad in [
        "1.5x", ".", "-.", "1e+", "1.e", "0x1.5", "+-1", "+.", "1..2", "1.2.3", ".e1", "1e+-1",
        "1e5.0", "a b", "a'b", "NaN!",
    ] {
        assert_eq!(
            arg_err(bad),
            format!("factory argument 1 ({bad:?}) {not}"),
            "{bad}"
        );
    }
}

#[test]
fn canonical_forms() {
    assert_eq!(canon("1.0"), "1");
    assert_eq!(canon("1e21"), "1e+21");
    assert_eq!(canon("1e20"), "100000000000000000000");
    assert_eq!(canon("0.1"), "0.1");
    assert_eq!(canon("1e-7"), "1e-7");
    assert_eq!(canon("-2.5"), "-2.5");
    assert_eq!(canon("-0"), "0");
    assert_eq!(canon("0x10"), "16");
    assert_eq!(canon("\"a\""), "'a'");
    assert_eq!(canon("\"it's\""), "'it\\'s'");
    assert_eq!(canon("'a\\\\b'"), "'a\\\\b'");
    assert_eq!(canon("'\\n\\r\\t'"), "'\\n\\r\\t'");
    assert_eq!(canon("'\\b\\f\\v\\0\\x7f'"), "'\\x08\\x0c\\x0b\\x00\\x7f'");
    assert_eq!(canon("'\\u00e9\\u{1F600}'"), "'é😀'");
    assert_eq!(
        canon(" \"a\" , 1.0, bob, true ,null"),
        "'a',1,bob,true,null"
    );
    for text in ["'\\x01\\'\\\\'", "'é\u{2028}\u{85}'", "1e+21", "'a',1,bob"] {
        let once = canon(text);
        assert_eq!(canon(&once), once);
    }
}

#[test]
fn escapes() {
    assert_eq!(
        args("'\\n\\t\\r\\b\\f\\v\\0'"),
        [s("\n\t\r\u{8}\u{c}\u{b}\0")]
    );
    assert_eq!(args("'\\\\\\'\\\"'"), [s("\\'\"")]);
    assert_eq!(args("'\\x41\\xe9'"), [s("Aé")]);
    assert_eq!(args("'\\u0041\\u00E9'"), [s("Aé")]);
    assert_eq!(args("'\\u{41}\\u{1F600}\\u{000041}'"), [s("A😀A")]);
    assert_eq!(args("'\\uD83D\\uDE00'"), [s("😀")]);
    assert_eq!(args("'\\u{D83D}\\u{DE00}'"), [s("😀")]);
    assert_eq!(args("'\\q\\8\\9\\é'"), [s("q89é")]);
    assert_eq!(args("'a\\\nb\\\r\nc'"), [s("abc")]);
    assert_eq!(args("'a)b,c'"), [s("a)b,c")]);
    let lone = "has a lone surrogate \\u escape";
    assert_eq!(
        arg_err("'\\uD83D'"),
        format!("factory argument 1 (\"'\\\\uD83D'\") {lone}")
    );
    assert!(arg_err("'\\uDE00'").ends_with(lone));
    assert!(arg_err("'\\uD83Dx'").ends_with(lone));
    assert!(arg_err("'\\uD83D\\u0041'").ends_with(lone));
    assert!(arg_err("'\\u{D83D}'").ends_with(lone));
    assert!(arg_err("'\\u12'").contains("invalid \\u escape"));
    assert!(arg_err("'\\u{}'").contains("invalid \\u escape"));
    assert!(arg_err("'\\u{110000}'").contains("invalid \\u escape"));
    assert!(arg_err("'\\u{12'").contains("invalid \\u escape"));
    assert!(arg_err("'\\x4'").contains("invalid \\x escape"));
    assert!(arg_err("'\\xg1'").contains("invalid \\x escape"));
    assert!(arg_err("'\\01'").contains("legacy octal"));
    assert!(arg_err("'\\7'").contains("legacy octal"));
}

#[test]
fn arg_errors() {
    assert_eq!(
        err("/a/s()"),
        "factory arguments \"()\" are empty; at least one is required"
    );
    assert_eq!(
        err("/a/s( \t)"),
        "factory arguments \"()\" are empty; at least one is required"
    );
    assert_eq!(err("/a/s(1,)"), "factory argument 2 is empty");
    assert_eq!(err("/a/s(,1)"), "factory argument 1 is empty");
    assert_eq!(err("/a/s(1,,2)"), "factory argument 2 is empty");
    assert_eq!(
        err("/a/s(1,'abc)"),
        "factory argument 2 (\"'abc)\") is an unterminated string"
    );
    assert_eq!(
        arg_err("1,'abc"),
        "factory argument 2 (\"'abc\") is an unterminated string"
    );
    assert_eq!(
        err("/a/s('abc"),
        "factory argument 1 (\"'abc\") is an unterminated string"
    );
    assert_eq!(
        err("/a/s('a\\')"),
        "factory argument 1 (\"'a\\\\')\") is an unterminated string"
    );
    assert_eq!(
        err("/a/s('x'"),
        "factory arguments of stream \"s\" have no closing \")\""
    );
    assert_eq!(
        err("/a/s('a'b)"),
        "factory argument 1 is followed by unexpected text \"b\""
    );
    assert_eq!(
        err("/a/s('a' 'b')"),
        "factory argument 1 is followed by unexpected text \"'b'\""
    );
    assert_eq!(
        err("/a/s(a b)"),
        "factory argument 1 (\"a b\") is not a string, number, true, false, null or account name"
    );
    let sixteen = vec!["1"; 16].join(",");
    assert_eq!(args(&sixteen).len(), 16);
    assert_eq!(
        arg_err(&format!("{sixteen},1")),
        "factory has more than 16 arguments"
    );
    let big = format!("'{}'", "x".repeat(MAX_ARGS_LEN - 1));
    assert!(Args::parse(&big).is_err_and(|e| e.message.contains("over 1916")));
    assert!(Args::parse(&format!("'{}'", "x".repeat(MAX_ARGS_LEN - 2))).is_ok());
    // Raw control characters grow fourfold in canonical form and must still fit.
    let controls = format!("/a/s('{}')", "%01".repeat(600));
    assert!(err(&controls).contains("canonical form"));
}

#[test]
fn args_new() {
    assert!(Args::new(vec![]).is_err());
    assert!(Args::new(vec![Arg::Null; 17]).is_err());
    assert!(Args::new(vec![Arg::Num(f64::NAN)]).is_err());
    assert!(Args::new(vec![Arg::Num(f64::INFINITY)]).is_err());
    // names that an argument would not read back as the account are no account names
    for name in ["123", "-5", "1e5", "0x1F", "010", "Infinity", "NaN"] {
        let e = AccountName::new(name).unwrap_err().message;
        assert!(e.contains("reads as a number"), "{name}: {e}");
    }
    for name in ["true", "false", "null", "undefined"] {
        let e = AccountName::new(name).unwrap_err().message;
        assert!(e.contains("is a keyword"), "{name}: {e}");
    }
    assert_eq!(
        err("/123/s"),
        "account name \"123\" reads as a number in factory arguments (strm(123) is not the \
         account), so it could not name its account substreams; give the name a letter or \
         underscore that keeps it from reading as a number (e.g. \"a123\")"
    );
    for fine in ["a123", "123a", "_1", "1-2", "nulls", "e5"] {
        let a = acct(fine);
        assert_eq!(
            Args::new(vec![Arg::Account(a.clone())])
                .unwrap()
                .canonical(),
            fine
        );
    }
    let a = Args::new(vec![
        s("0 9 * * 1"),
        Arg::Num(-0.0),
        Arg::Account(acct("bob")),
    ])
    .unwrap();
    assert_eq!(a.canonical(), "'0 9 * * 1',0,bob");
    assert_eq!(Args::parse(&a.canonical()).unwrap(), a);
}

#[test]
fn percent_encoding() {
    let cron = sp("/eddy/cron('0%209%20*%20*%201')");
    assert!(cron.account.is_reserved());
    assert_eq!(cron.args.as_ref().unwrap().as_slice(), [s("0 9 * * 1")]);
    assert_eq!(cron.to_string(), "eddy/cron('0 9 * * 1')");
    assert_eq!(cron.url(), "/eddy/cron('0%209%20*%20*%201')");
    assert_eq!(sp("/a/s(%27x%27)"), sp("/a/s('x')"));
    assert_eq!(sp("/a/s(%22x%22)"), sp("/a/s('x')"));
    assert_eq!(sp("/a/s('%C3%A9')").args.unwrap().as_slice(), [s("é")]);
    assert_eq!(sp("/a/s('%2527')").args.unwrap().as_slice(), [s("%27")]);
    assert_eq!(sp("/a/s('%zz')").args.unwrap().as_slice(), [s("%zz")]);
    assert_eq!(
        ok("/%61cme/%6Frders"),
        Resource::Stream(stream("acme", "orders"))
    );
    assert_eq!(ok("/a/s%2Fsettings"), Resource::Settings(stream("a", "s")));
}

#[test]
fn quoted_delimiters() {
    let r = ok("/a/s('x/y').r");
    assert_eq!(
        r,
        Resource::Reducer(sp("/a/s('x/y')"), ReducerName::new("r").unwrap())
    );
    assert_eq!(sp("/a/s('x/y')").args.unwrap().as_slice(), [s("x/y")]);
    assert_eq!(
        sp("/a/s('(.):[],\"')").args.unwrap().as_slice(),
        [s("(.):[],\"")]
    );
    assert_eq!(sp("/a/s(\"')/\")").args.unwrap().as_slice(), [s("')/")]);
    assert_eq!(sp("/a/s('a\\')')").args.unwrap().as_slice(), [s("a')")]);
    assert_eq!(ok("/a/s('x/')/3"), Resource::Event(sp("/a/s('x/')"), 3));
    assert_eq!(
        ok("/a/s('/'):t.ts"),
        Resource::EventType {
            stream: sp("/a/s('/')"),
            event_type: "t".into(),
            format: Some(TypeFormat::Ts),
        }
    );
}

#[test]
fn urls_round_trip() {
    let p = sp("/a/s('sp ace/%\"#?<>`{}|\\\\^[]é😀\\x01',-1.5,1e21,bob,null,true)");
    let url = p.url();
    assert_eq!(
        url,
        "/a/s('sp%20ace%2F%25%22%23%3F%3C%3E%60%7B%7D%7C%5C%5C%5E%5B%5D%C3%A9%F0%9F%98%80%5Cx01',-1.5,1e+21,bob,null,true)"
    );
    assert!(url.bytes().all(|b| b.is_ascii_graphic()));
    assert_eq!(parse(&url), Ok(Resource::Stream(p.clone())));
    assert_eq!(
        p.to_string(),
        "a/s('sp ace/%\"#?<>`{}|\\\\^[]é😀\\x01',-1.5,1e+21,bob,null,true)"
    );
    let kept = sp("/a/s('*-_.~!$&+;=:@(),')");
    assert_eq!(kept.url(), "/a/s('*-_.~!$&+;=:@(),')");
    assert_eq!(parse(&kept.url()), Ok(Resource::Stream(kept)));
}

#[test]
fn resource_stream_paths() {
    assert!(ok("/a").stream_paths().is_empty());
    assert_eq!(
        ok("/a/s/pipe/b/t").stream_paths(),
        [&stream("a", "s"), &stream("b", "t")]
    );
    assert_eq!(ok("/a/s:t").stream_paths(), [&stream("a", "s")]);
}

#[test]
fn error_messages_are_bounded_and_never_panic() {
    let long = "é".repeat(500);
    let message = err(&format!("/{long}"));
    assert!(message.chars().count() < 150, "{message}");
    for path in [
        "/a/s('é",
        "/a/s(é)",
        "/a/s[é",
        "/a/s/é",
        "/a/s.é",
        "/a/s(1)é",
        "/a/s('\\",
        "/a/s('\\u{",
        "/a/s(\"\\uD800\\",
    ] {
        let _ = parse(path);
    }
}

/// A xorshift64* generator, enough to drive the randomized test without dependencies.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const PIECES: &[&str] = &[
    "/",
    "/",
    "(",
    ")",
    "'",
    "'",
    "\"",
    ",",
    ",",
    ".",
    ":",
    "[",
    "]",
    "\\",
    "%",
    "%2",
    "%27",
    "%2F",
    "%20",
    "%22",
    "%ZZ",
    "%C3%A9",
    "%FF",
    "%01",
    "a",
    "b",
    "z",
    "acme",
    "0",
    "1",
    "9",
    "42",
    "x",
    "u",
    "e",
    "-",
    "_",
    " ",
    "\t",
    "\\u",
    "\\x4",
    "\\u{1F600}",
    "\\uD83D",
    "\\uDE00",
    "é",
    "日",
    "😀",
    "\u{2028}",
    "pipe",
    "logs",
    "webhooks",
    "resume",
    "settings",
    "reducers",
    "substreams",
    "this",
    "true",
    "null",
    "0x1F",
    "1e21",
    ".5",
    "-0",
    "json",
    "ts",
];

const VALUES: &[&str] = &[
    "1",
    "-2.5",
    "+3",
    ".5",
    "5.",
    "1e21",
    "1e-7",
    "-0",
    "0x1F",
    "0o7",
    "0b11",
    "1e400",
    "123456789012345678901",
    "true",
    "false",
    "null",
    "bob",
    "eddy",
    "Infinity",
    "0x",
    "a-b_c",
];

const SUFFIXES: &[&str] = &[
    "",
    "/",
    "/3",
    "[7]",
    ".r",
    ":t.json",
    ":a.b",
    ":x.ts",
    "/pipe/b/t",
    "/logs",
    "/logs/pipe/b/t",
    "/settings",
    "/substreams",
    "/reducers",
    "/webhooks",
    "/webhooks/h",
    "/webhooks/h/resume",
    "/pipe/b/t(",
    "/foo",
];

/// Builds a path from random grammar pieces with no structure at all.
fn chaos(rng: &mut Rng) -> String {
    let mut path =
        String::from(rng.pick(&["", "/", "/acme/", "/acme/orders(", "/a/s('", "/a/s(1,"]));
    for _ in 0..rng.below(16) {
        path.push_str(rng.pick(PIECES));
    }
    path
}

/// Builds a mostly well-formed argument list: strings of random pieces, numbers,
/// keywords and account names, with random blanks.
fn arg_list(rng: &mut Rng) -> String {
    let mut out = String::new();
    for i in 0..=rng.below(4) {
        if i > 0 {
            out.push(',');
        }
        out.push_str(rng.pick(&["", "", " ", "%20", "\t"]));
        if rng.below(2) == 0 {
            let quote = rng.pick(&["'", "\"", "%27"]);
            out.push_str(quote);
            for _ in 0..rng.below(6) {
                out.push_str(rng.pick(PIECES));
            }
            out.push_str(quote);
        } else {
            out.push_str(rng.pick(VALUES));
        }
        out.push_str(rng.pick(&["", "", " "]));
    }
    out
}

/// Builds `/acct/strm[(args)]{suffix}`, then sometimes splices in a random piece.
fn structured(rng: &mut Rng) -> String {
    let mut path = format!(
        "/{}/{}",
        rng.pick(&["acme", "eddy", "a"]),
        rng.pick(&["orders", "cron", "s"])
    );
    if rng.below(4) != 0 {
        path = format!("{path}({})", arg_list(rng));
    }
    let suffix = rng.pick(SUFFIXES);
    path.push_str(suffix);
    if suffix.ends_with('(') {
        path = format!("{path}{})", arg_list(rng));
    }
    if rng.below(4) == 0 {
        let mut at = rng.below(path.len() + 1);
        while !path.is_char_boundary(at) {
            at -= 1;
        }
        path.insert_str(at, rng.pick(PIECES));
    }
    path
}

fn check_round_trip(path: &str, resource: &Resource) {
    for p in resource.stream_paths() {
        let url = p.url();
        assert_eq!(
            parse(&url),
            Ok(Resource::Stream(p.clone())),
            "{path:?} -> {url:?}"
        );
        if let Some(args) = &p.args {
            let canonical = args.canonical();
            let again =
                Args::parse(&canonical).unwrap_or_else(|e| panic!("{path:?}: {canonical:?}: {e}"));
            assert_eq!(again.canonical(), canonical, "{path:?}");
            assert_eq!(&again, args, "{path:?}");
        }
    }
}

#[test]
fn randomized_paths_never_panic_and_round_trip() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let (mut parsed, mut with_args) = (0, 0);
    for _ in 0..20_000 {
        let path = if rng.below(3) == 0 {
            chaos(&mut rng)
        } else {
            structured(&mut rng)
        };
        if let Ok(resource) = parse(&path) {
            parsed += 1;
            with_args += usize::from(resource.stream_paths().iter().any(|p| p.args.is_some()));
            check_round_trip(&path, &resource);
        }
    }
    assert!(parsed > 3_000, "only {parsed} of 20000 random paths parsed");
    assert!(
        with_args > 1_500,
        "only {with_args} random paths had factory arguments"
    );
}

#[test]
fn splices_and_replaced_histories() {
    let base = sp("/a/s");
    assert_eq!(ok("/a/s/splices"), Resource::Splices(base.clone()));
    assert_eq!(
        ok("/a/s/splices/spl_1"),
        Resource::Splice(base.clone(), "spl_1".into())
    );
    assert_eq!(
        ok("/a/s/splices/spl_1/approve"),
        Resource::SpliceApprove(base, "spl_1".into())
    );
    assert_eq!(
        err("/a/s/splices/spl_1/merge"),
        "unknown path segment \"merge\" after \"a/s/splices/spl_1\""
    );
    // a replaced history: its own stream name, which no client can give
    let Resource::Stream(v) = ok("/a/s@2") else {
        panic!("not a stream")
    };
    assert_eq!(v.stream.as_str(), "s@2");
    assert_eq!(v.version(), Some(2));
    assert_eq!(sp("/a/s").version(), None);
    assert!(matches!(ok("/a/s@2/7"), Resource::Event(_, 7)));
    assert!(matches!(ok("/a/s@12.count"), Resource::Reducer(..)));
    for bad in ["/a/s@0", "/a/s@", "/a/s@x", "/a/s@01"] {
        assert!(
            err(bad).contains("is not a whole number from 1"),
            "{bad}: {}",
            err(bad)
        );
    }
    assert!(err("/a/s@1('x')").contains("a factory is not spliced"));
}
