//! Appending single events (API §2): content types, limits, timestamps, idempotent
//! ids, expected index, implicit creation, names.

use serde_json::{Value, json};

use crate::common::{TestServer, assert_error, spawn_server};

#[tokio::test]
async fn single_event_is_created_with_location_and_gapless_indexes() {
    let s = spawn_server().await;
    for i in 0..3u64 {
        let r = s.post("/acme/clicks", "click", json!({"n": i})).await;
        assert_eq!(r.status(), 201);
        assert_eq!(
            r.headers()["location"],
            format!("/acme/clicks/{i}").as_str()
        );
        let b: Value = r.json().await.unwrap();
        assert_eq!(b["index"], i);
        assert!(b["timestamp"].as_i64().unwrap() > 1_600_000_000_000);
        assert_eq!(b["id"].as_str().unwrap().len(), 36);
        assert!(b.get("duplicate").is_none());
    }
    let events = s.get_json("/acme/clicks", 200).await;
    assert_eq!(events.as_array().unwrap().len(), 3);
    assert_eq!(events[2]["data"], json!({"n": 2}));
    assert_eq!(events[2]["stream"], "acme/clicks");
    assert_eq!(events[2]["type"], "click");
    assert_eq!(events[2]["contentType"], "application/json");
}

#[tokio::test]
async fn every_content_type_is_stored_and_shown() {
    let s = spawn_server().await;
    let cases: [(&str, &[u8], Value); 6] = [
        (
            "application/json; charset=utf-8",
            b"{\"a\": [1, 2]}",
            json!({"a": [1, 2]}),
        ),
        (
            "application/x-www-form-urlencoded",
            b"name=bob&age=3",
            json!("name=bob&age=3"),
        ),
        (
            "text/csv;header=present",
            b"a,b\n1,2\n",
            json!("a,b\n1,2\n"),
        ),
        ("text/plain", "héllo".as_bytes(), json!("héllo")),
        (
            "application/octet-stream",
            &[0, 159, 146, 150],
            json!("AJ+Slg=="),
        ),
        ("text/html", b"<p>hi</p>", json!("<p>hi</p>")),
    ];
    for (i, (ct, body, shown)) in cases.iter().enumerate() {
        let r = s
            .client
            .post(s.url("/acme/mixed"))
            .header("Event-Type", "t")
            .header("Content-Type", *ct)
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{ct}");
        let e = s.get_json(&format!("/acme/mixed/{i}"), 200).await;
        assert_eq!(&e["data"], shown, "{ct}");
        assert_eq!(e["encoding"] == "base64", *ct == "application/octet-stream");
        // ?raw gives the original bytes and content type back
        let raw = s.get(&format!("/acme/mixed[{i}]?raw")).await;
        assert_eq!(raw.status(), 200);
        assert_eq!(
            raw.headers()["content-type"],
            ct.replace("; ", ";").as_str()
        );
        assert_eq!(raw.headers()["event-type"], "t");
        assert_eq!(raw.headers()["event-index"], i.to_string().as_str());
        assert_eq!(raw.bytes().await.unwrap().as_ref(), *body);
    }
}

#[tokio::test]
async fn bad_bodies_and_headers_are_refused_and_write_nothing() {
    let s = spawn_server().await;
    let post = |ct: &'static str, ty: Option<&'static str>, body: Vec<u8>| {
        let mut r = s
            .client
            .post(s.url("/acme/bad"))
            .header("Content-Type", ct)
            .body(body);
        if let Some(t) = ty {
            r = r.header("Event-Type", t);
        }
        r.send()
    };
    assert_error(
        post("application/json", Some("t"), b"{\"a\":".to_vec())
            .await
            .unwrap(),
        400,
        "not valid JSON",
    )
    .await;
    assert_error(
        post("application/json", None, b"{}".to_vec())
            .await
            .unwrap(),
        400,
        "event type",
    )
    .await;
    assert_error(
        post("application/json", Some(""), b"{}".to_vec())
            .await
            .unwrap(),
        400,
        "event type",
    )
    .await;
    let long: &'static str = Box::leak("x".repeat(101).into_boxed_str());
    assert_error(
        post("application/json", Some(long), b"{}".to_vec())
            .await
            .unwrap(),
        400,
        "101 characters",
    )
    .await;
    assert_error(
        post("image/png", Some("t"), b"x".to_vec()).await.unwrap(),
        415,
        "image/png",
    )
    .await;
    assert_error(
        post("text/plain", Some("t"), vec![0xff, 0xfe])
            .await
            .unwrap(),
        400,
        "UTF-8",
    )
    .await;
    let e = assert_error(
        post("text/plain", Some("t"), vec![b'a'; 102_401])
            .await
            .unwrap(),
        413,
        "102400",
    )
    .await;
    assert_eq!(e["limit"], 102_400);
    // exactly at the limit is fine
    assert_eq!(
        post("text/plain", Some("t"), vec![b'a'; 102_400])
            .await
            .unwrap()
            .status(),
        201
    );
    // the error names the header the client sent, alias or not
    for header in ["Event-Id", "ES-EventId"] {
        let r = s
            .call(
                "POST",
                "/acme/bad",
                &[("Event-Type", "t"), (header, "nope")],
                json!(1),
            )
            .await;
        assert_error(r, 400, &format!("{header} \"nope\"")).await;
    }
    let r = s
        .call(
            "POST",
            "/acme/bad?colour=red",
            &[("Event-Type", "t")],
            json!(1),
        )
        .await;
    assert_error(r, 400, "colour").await;
    // header values that are not visible ASCII text are named in the error
    let latin1 = || reqwest::header::HeaderValue::from_bytes(b"caf\xe9").unwrap();
    for (bad, other, ok) in [
        ("Content-Type", "Event-Type", "t"),
        ("ES-EventType", "Content-Type", "text/plain"),
    ] {
        let r = s
            .client
            .post(s.url("/acme/bad"))
            .header(bad, latin1())
            .header(other, ok)
            .body("x")
            .send()
            .await
            .unwrap();
        let expected = if bad == "Content-Type" {
            "header content-type is not valid visible ASCII text".to_owned()
        } else {
            format!("header {bad} is not valid UTF-8 text")
        };
        assert_error(r, 400, &expected).await;
    }
    // an event type in UTF-8 is taken from the header, and sent back the same way
    let r = s
        .client
        .post(s.url("/acme/types"))
        .header(
            "Event-Type",
            reqwest::header::HeaderValue::from_bytes("café ✓".as_bytes()).unwrap(),
        )
        .json(&json!(1))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    let r = s.get("/acme/types/0?raw").await;
    assert_eq!(r.headers()["event-type"].as_bytes(), "café ✓".as_bytes());
    // white space at either end would not survive a header: refused
    let r = s.get("/acme/types").await;
    assert_eq!(r.status(), 200);
    let r = s
        .client
        .post(s.url("/acme/types?event-type=%20t"))
        .json(&json!(1))
        .send()
        .await
        .unwrap();
    assert_error(r, 400, "begins or ends with white space").await;
    let events = s.get_json("/acme/bad", 200).await;
    assert_eq!(
        events.as_array().unwrap().len(),
        1,
        "only the valid event is stored"
    );
}

#[tokio::test]
async fn codings_charsets_bad_utf8_and_out_of_range_values_are_refused() {
    let s = spawn_server().await;
    let post = |query: &'static str,
                headers: &'static [(&'static str, &'static str)],
                body: &'static [u8]| {
        let mut r = s.client.post(s.url(&format!("/acme/strict{query}")));
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        r.body(body).send()
    };
    let json: &[(&str, &str)] = &[("Content-Type", "application/json"), ("Event-Type", "t")];
    type Headers<'a> = &'a [(&'a str, &'a str)];
    let refused: [(Headers, &[u8], u16, &str); 4] = [
        // JSON text is UTF-8: a string holding another byte is not JSON, in a POST or a line
        (
            json,
            b"{\"a\":\"\xff\"}",
            400,
            "not valid JSON (invalid UTF-8 at byte offset 6)",
        ),
        (
            &[
                ("Content-Type", "application/x-ndjson"),
                ("Event-Type", "t"),
            ],
            b"{\"a\":\"\xff\"}\n",
            400,
            "invalid UTF-8",
        ),
        // compressed bodies and other charsets would be stored as the wrong data
        (
            &[
                ("Content-Type", "application/octet-stream"),
                ("Content-Encoding", "gzip"),
                ("Event-Type", "t"),
            ],
            b"\x1f\x8b",
            415,
            "Content-Encoding \"gzip\" is not supported",
        ),
        (
            &[
                ("Content-Type", "text/plain; charset=ISO-8859-1"),
                ("Event-Type", "t"),
            ],
            b"caf\xe9",
            415,
            "charset \"ISO-8859-1\"",
        ),
    ];
    for (headers, body, status, needle) in refused {
        assert_error(post("", headers, body).await.unwrap(), status, needle).await;
    }
    // timestamps stay between the epoch and the end of year 9999
    for ts in [
        "9223372036854775807",
        "253402300800000",
        "1969-07-20T20:17:40Z",
    ] {
        let r = s
            .call(
                "POST",
                "/acme/strict",
                &[("Event-Type", "t"), ("Event-Timestamp", ts)],
                json!({}),
            )
            .await;
        assert_error(r, 400, "is out of range").await;
    }
    // a parameter given twice is not silently resolved
    let r = post("?event-type=a&event-type=b", json, b"{}")
        .await
        .unwrap();
    assert_error(r, 400, "\"event-type\" is given twice").await;
    // a batch item that is no object says so, without internal type names
    let batch: &[(&str, &str)] = &[("Content-Type", "application/vnd.eddy.events+json")];
    let r = post("", batch, b"[1]").await.unwrap();
    let e = assert_error(r, 400, "event 0 of the batch: is 1, not an event object").await;
    assert!(!e["error"].as_str().unwrap().contains("struct"), "{e}");
    // nothing above was stored, so the stream never came into being
    assert_eq!(s.get("/acme/strict").await.status(), 404);
}

#[tokio::test]
async fn event_type_comes_from_header_alias_query_or_path() {
    let s = spawn_server().await;
    s.call("POST", "/a/s", &[("ES-EventType", "es")], json!(1))
        .await
        .error_for_status()
        .unwrap();
    s.call("POST", "/a/s?event-type=q", &[], json!(2))
        .await
        .error_for_status()
        .unwrap();
    s.call("POST", "/a/s:path.type", &[], json!(3))
        .await
        .error_for_status()
        .unwrap();
    let r = s
        .call("POST", "/a/s:one", &[("Event-Type", "two")], json!(4))
        .await;
    assert_error(r, 400, "given twice").await;
    let r = s
        .call(
            "POST",
            "/a/s",
            &[("Event-Type", "one"), ("ES-EventType", "two")],
            json!(5),
        )
        .await;
    assert_error(r, 400, "given twice").await;
    let types: Vec<Value> = s
        .get_json("/a/s", 200)
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].clone())
        .collect();
    assert_eq!(types, [json!("es"), json!("q"), json!("path.type")]);
}

#[tokio::test]
async fn timestamps_never_decrease() {
    let s = spawn_server().await;
    let post_at = |ts: Option<&str>| {
        let mut r = s
            .client
            .post(s.url("/a/t"))
            .header("Event-Type", "t")
            .json(&json!({}));
        if let Some(ts) = ts {
            r = r.header("Event-Timestamp", ts);
        }
        r.send()
    };
    let r: Value = post_at(Some("1700000000000"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["timestamp"], 1_700_000_000_000i64);
    let r: Value = post_at(Some("2023-11-14T22:13:21Z"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["timestamp"], 1_700_000_001_000i64);
    let e = assert_error(
        post_at(Some("1700000000500")).await.unwrap(),
        409,
        "before the last timestamp",
    )
    .await;
    assert_eq!(e["lastTimestamp"], 1_700_000_001_000i64);
    // a future timestamp holds until the clock catches up
    let future = 4_102_444_800_000i64; // 2100-01-01
    let r: Value = post_at(Some(&future.to_string()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["timestamp"], future);
    let r: Value = post_at(None).await.unwrap().json().await.unwrap();
    assert_eq!(r["timestamp"], future);
    assert_error(
        post_at(Some("tomorrow")).await.unwrap(),
        400,
        "Event-Timestamp",
    )
    .await;
    let r = s
        .call("POST", "/a/t?timestamp=1", &[("Event-Type", "t")], json!(1))
        .await;
    assert_error(r, 409, "before the last timestamp").await;
    assert_eq!(s.get_json("/a/t", 200).await.as_array().unwrap().len(), 4);
}

#[tokio::test]
async fn event_ids_make_appends_idempotent() {
    let s = spawn_server().await;
    let id = "0b9e2a4c-6f7d-4f55-9b44-3c1d2e5f6a7b";
    let post = |hdr: &'static str| {
        s.client
            .post(s.url("/a/idem"))
            .header("Event-Type", "t")
            .header(hdr, id)
            .json(&json!({"x": 1}))
            .send()
    };
    s.post_ok("/a/idem", "t", json!(0)).await;
    let first: Value = post("Event-Id").await.unwrap().json().await.unwrap();
    assert_eq!(first["index"], 1);
    assert_eq!(first["id"], id);
    for hdr in ["Event-Id", "ES-EventId"] {
        let r = post(hdr).await.unwrap();
        assert_eq!(r.status(), 201);
        let again: Value = r.json().await.unwrap();
        assert_eq!(again["index"], 1);
        assert_eq!(again["duplicate"], true);
        assert_eq!(again["timestamp"], first["timestamp"]);
    }
    let r = s
        .call(
            "POST",
            &format!("/a/idem?event-id={id}"),
            &[("Event-Type", "t")],
            json!(1),
        )
        .await;
    assert_eq!(r.json::<Value>().await.unwrap()["duplicate"], true);
    // the same id in another stream is a different event
    let r = s
        .call(
            "POST",
            "/a/other",
            &[("Event-Type", "t"), ("Event-Id", id)],
            json!(1),
        )
        .await;
    assert!(r.json::<Value>().await.unwrap().get("duplicate").is_none());
    assert_eq!(
        s.get_json("/a/idem", 200).await.as_array().unwrap().len(),
        2
    );
}

/// A retry that sends back the id the server gave the first attempt is a duplicate,
/// also after a restart (server ids are recognised by the position they encode, not
/// through the index of client ids), and only in the (sub)stream that holds it.
#[tokio::test]
async fn ids_the_server_generated_make_retries_idempotent() {
    let mut s = spawn_server().await;
    let mut ids = Vec::new();
    for path in ["/a/gen", "/a/gen", "/a/f('x')", "/a/f('y')"] {
        ids.push((path, s.post_ok(path, "t", json!(ids.len())).await));
    }
    let retry = async |s: &TestServer, path: &str, id: &Value| {
        s.call(
            "POST",
            path,
            &[("Event-Type", "t"), ("Event-Id", id.as_str().unwrap())],
            json!("again"),
        )
        .await
        .json::<Value>()
        .await
        .unwrap()
    };
    for round in 0..2 {
        for (path, first) in &ids {
            let again = retry(&s, path, &first["id"]).await;
            assert_eq!(again["duplicate"], true, "round {round}: {path} {first}");
            assert_eq!(again["index"], first["index"], "{path}");
            assert_eq!(again["timestamp"], first["timestamp"], "{path}");
        }
        s.restart().await;
    }
    // the id of an event of another (sub)stream, or of none, is new here
    let other = retry(&s, "/a/f('x')", &ids[3].1["id"]).await;
    assert!(other.get("duplicate").is_none(), "{other}");
    assert_eq!(other["index"], 1);
    let mut unknown = ids[0].1["id"].as_str().unwrap().to_owned();
    let last = if unknown.ends_with('0') { "1" } else { "0" };
    unknown.replace_range(unknown.len() - 1.., last);
    let unknown = json!(unknown);
    let r = retry(&s, "/a/gen", &unknown).await;
    assert!(r.get("duplicate").is_none(), "{r}");
    // a batch that resends a server-generated id is a duplicate as a whole
    let batch = json!([{"type": "t", "id": ids[1].1["id"], "data": 1}]);
    let r: Value = crate::batch::post_batch(&s, "/a/gen", crate::batch::EDDY, batch)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(r["duplicate"], true, "{r}");
    assert_eq!(s.get_json("/a/gen", 200).await.as_array().unwrap().len(), 3);
    assert_eq!(
        s.get_json("/a/f('x')", 200).await.as_array().unwrap().len(),
        2
    );
}

#[tokio::test]
async fn expected_index_guards_concurrent_writers() {
    let s = spawn_server().await;
    let post = |hdr: &'static str, v: &'static str| {
        s.client
            .post(s.url("/a/ex"))
            .header("Event-Type", "t")
            .header(hdr, v)
            .json(&1)
            .send()
    };
    assert_eq!(post("Expected-Index", "-1").await.unwrap().status(), 201);
    let e = assert_error(
        post("Expected-Index", "-1").await.unwrap(),
        409,
        "last index",
    )
    .await;
    assert_eq!(e["lastIndex"], 0);
    assert_eq!(post("Expected-Index", "0").await.unwrap().status(), 201);
    let e = assert_error(
        post("ES-ExpectedVersion", "0").await.unwrap(),
        409,
        "last index of a/ex is 1",
    )
    .await;
    assert_eq!(e["lastIndex"], 1);
    assert_eq!(post("ES-ExpectedVersion", "1").await.unwrap().status(), 201);
    assert_eq!(post("Expected-Index", "-2").await.unwrap().status(), 201);
    assert_error(
        post("Expected-Index", "-3").await.unwrap(),
        400,
        "Expected-Index",
    )
    .await;
    let r = s
        .call(
            "POST",
            "/a/ex?expected-index=0",
            &[("Event-Type", "t")],
            json!(1),
        )
        .await;
    assert_error(r, 409, "last index").await;
    // -1 on a stream that does not exist yet
    let r = s
        .call(
            "POST",
            "/a/fresh",
            &[("Event-Type", "t"), ("Expected-Index", "-1")],
            json!(1),
        )
        .await;
    assert_eq!(r.status(), 201);
    // a failed expectation creates nothing
    let r = s
        .call(
            "POST",
            "/a/never",
            &[("Event-Type", "t"), ("Expected-Index", "4")],
            json!(1),
        )
        .await;
    assert_error(r, 409, "last index of a/never is -1").await;
    assert_error(s.get("/a/never").await, 404, "does not exist").await;
    assert_eq!(s.get_json("/a/ex", 200).await.as_array().unwrap().len(), 4);
}

#[tokio::test]
async fn streams_and_factories_come_into_being_on_first_post() {
    let s = spawn_server().await;
    let r = s
        .post(
            "/acme/orders('customer-42')",
            "created",
            json!({"total": 5}),
        )
        .await;
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["location"], "/acme/orders('customer-42')/0");
    s.post_ok("/acme/orders(\"customer-42\")", "paid", json!({}))
        .await;
    let b = s
        .post_ok("/acme/orders('customer-7')", "created", json!({}))
        .await;
    assert_eq!(b["index"], 0, "every substream counts from 0");
    s.post_ok("/acme/orders(1,true,null,bob,-2.5)", "odd", json!({}))
        .await;
    assert_error(
        s.post("/acme/orders", "created", json!({})).await,
        400,
        "factory",
    )
    .await;
    s.post_ok("/acme/plain", "t", json!({})).await;
    assert_error(
        s.post("/acme/plain('x')", "t", json!({})).await,
        400,
        "not a factory",
    )
    .await;
    let e = s.get_json("/acme/orders(%22customer-42%22)/1", 200).await;
    assert_eq!(e["stream"], "acme/orders('customer-42')");
    assert_eq!(e["type"], "paid");
    let e = s
        .get_json("/acme/orders(1,true,null,bob,-2.5)[0]", 200)
        .await;
    assert_eq!(e["stream"], "acme/orders(1,true,null,bob,-2.5)");
}

#[tokio::test]
async fn forbidden_reserved_and_malformed_names_are_refused() {
    let s = spawn_server().await;
    for (path, needle) in [
        ("/acme/this", "reserved"),
        ("/acme/dispatch", "reserved"),
        ("/acme/request", "reserved"),
        ("/ui/x/settings", "reserved"),
        ("/auth/x", "reserved"),
        ("/EDDY/events", "reserved"),
        ("/Ui/x", "reserved"),
        ("/acme/a%20b", "a b"),
        (&format!("/acme/{}", "s".repeat(65)), "64"),
        ("/acme/orders()", "argument"),
        ("/acme/orders('open", "unterminated"),
        ("/acme/s/x/y", "x"),
    ] {
        let r = s.post(path, "t", json!({})).await;
        assert_error(r, 400, needle).await;
    }
    assert_error(
        s.post("/eddy/cron('* * * * *')", "t", json!({})).await,
        405,
        "builtin",
    )
    .await;
    // the console's files are read-only
    assert_error(s.post("/ui/x", "t", json!({})).await, 405, "GET, HEAD").await;
    assert_error(
        s.post("/acme/s.total", "t", json!({})).await,
        405,
        "GET, PUT, DELETE",
    )
    .await;
    assert_error(
        s.client.delete(s.url("/acme/s")).send().await.unwrap(),
        405,
        "not allowed",
    )
    .await;
}
