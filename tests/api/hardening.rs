//! Errors are JSON wherever eddy writes them (extractor rejections, every body over
//! its limit), and the small defects found by hostile testing: leading zeros in event
//! indexes, transfer codings, malformed Accept weights, host-only blocklist entries,
//! and `/metrics` in both exposition formats.

use std::collections::HashMap;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::access::{ADMIN, secured};
use crate::common::{assert_error, spawn_server};

#[tokio::test]
async fn extractor_rejections_and_admin_bodies_are_json() {
    let s = secured().await;
    let admin = format!("Bearer {ADMIN}");
    let r = s
        .client
        .get(s.url("/api/accounts/%ff/keys"))
        .header("authorization", &admin)
        .send()
        .await
        .unwrap();
    assert_error(r, 400, "percent-encoded UTF-8").await;
    let r = s
        .client
        .delete(s.url("/api/accounts/acme/keys/%fe%ff"))
        .header("authorization", &admin)
        .send()
        .await
        .unwrap();
    assert_error(r, 400, "not valid").await;
    // 3 MB to the admin API: the JSON 413 of every body
    let big = format!("{{\"name\": \"{}\"}}", "a".repeat(3 << 20));
    let r = s
        .client
        .post(s.url("/api/accounts"))
        .header("authorization", &admin)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    let v = assert_error(r, 413, "larger than 16384 bytes").await;
    assert_eq!(v["limit"], 16384);
    // the happy case still works
    let r = s
        .client
        .post(s.url("/api/accounts"))
        .header("authorization", &admin)
        .json(&json!({"name": "acme"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = s
        .client
        .post(s.url("/api/accounts/acme/keys"))
        .header("authorization", &admin)
        .body("x".repeat(20_000))
        .send()
        .await
        .unwrap();
    assert_error(r, 413, "the limit for an admin request").await;
}

#[tokio::test]
async fn every_body_over_its_limit_is_one_json_413() {
    let s = spawn_server().await;
    s.post_ok("/acme/s", "t", json!({"a": 1})).await;
    let big = |n: usize| format!("\"{}\"", "a".repeat(n));
    // (method, path, content type, body size, what the limit is for)
    let cases = [
        ("POST", "/acme/s", "application/json", 200_000, "an event"),
        (
            "PUT",
            "/acme/s/settings",
            "application/json",
            70_000,
            "settings",
        ),
        (
            "PATCH",
            "/acme/s/settings",
            "application/json",
            70_000,
            "settings",
        ),
        ("PUT", "/acme/s:t", "application/json", 70_000, "a schema"),
        (
            "PUT",
            "/acme/s.r",
            "application/javascript",
            1_100_000,
            "reducer code",
        ),
        (
            "POST",
            "/acme/s/webhooks",
            "application/json",
            20_000,
            "a webhook",
        ),
        (
            "PUT",
            "/acme/s/pipe/acme/t",
            "application/javascript",
            1_100_000,
            "pipe function",
        ),
    ];
    for (method, path, ct, size, what) in cases {
        let r = s
            .client
            .request(method.parse().unwrap(), s.url(path))
            .header("content-type", ct)
            .header("event-type", "t")
            .body(big(size))
            .send()
            .await
            .unwrap();
        let v = assert_error(r, 413, what).await;
        assert!(v["limit"].as_u64().is_some(), "{method} {path}: {v}");
    }
    // a batch past its limit, announced by Content-Length, is refused before reading
    let r = s
        .client
        .post(s.url("/acme/s"))
        .header("content-type", "application/vnd.eddy.events+json")
        .body(vec![b' '; 11 << 20])
        .send()
        .await
        .unwrap();
    assert_error(r, 413, "the limit for a batch").await;
    // nothing of it was stored
    let v = s.get_json("/acme/s", 200).await;
    assert_eq!(v.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn event_indexes_with_leading_zeros_are_refused() {
    let s = spawn_server().await;
    s.post_ok("/m/s", "t", json!({"n": 0})).await;
    s.post_ok("/m/s", "t", json!({"n": 1})).await;
    assert_eq!(s.get_json("/m/s/1", 200).await["data"]["n"], 1);
    for path in ["/m/s/01", "/m/s[01]", "/m/s/00"] {
        let r = s.get(path).await;
        assert_error(r, 400, "leading zero").await;
    }
}

/// Sends raw bytes and answers the server's whole answer (`Connection: close`).
async fn raw(s: &crate::common::TestServer, request: &[u8]) -> String {
    let mut tcp = TcpStream::connect(s.base.trim_start_matches("http://"))
        .await
        .unwrap();
    tcp.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ =
        tokio::time::timeout(std::time::Duration::from_secs(5), tcp.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn transfer_codings_other_than_chunked_are_refused() {
    let s = spawn_server().await;
    let body = "{\"a\":1}";
    let chunked = format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len());
    let request = |te: &str| {
        format!(
            "POST /acme/te HTTP/1.1\r\nHost: x\r\nEvent-Type: t\r\nConnection: close\r\n\
             Content-Type: application/json\r\nTransfer-Encoding: {te}\r\n\r\n{chunked}"
        )
    };
    for te in ["gzip, chunked", "deflate,chunked"] {
        let answer = raw(&s, request(te).as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 501"), "{te}: {answer}");
        assert!(answer.contains("application/json"), "{answer}");
        assert!(answer.contains("is not supported"), "{answer}");
    }
    assert_eq!(s.get("/acme/te").await.status(), 404, "nothing stored");
    // chunked alone is the body as sent
    let answer = raw(&s, request("chunked").as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    assert_eq!(s.get_json("/acme/te/0", 200).await["data"], json!({"a": 1}));
}

#[tokio::test]
async fn a_malformed_accept_weight_opens_no_stream() {
    let s = spawn_server().await;
    s.post_ok("/acme/s", "t", json!({"a": 1})).await;
    for accept in ["text/event-stream;q=abc", "text/event-stream;q=2"] {
        let r = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            s.client
                .get(s.url("/acme/s"))
                .header("accept", accept)
                .send(),
        )
        .await
        .expect("answered, not streamed")
        .unwrap();
        assert_eq!(r.status(), 200);
        let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(ct.starts_with("application/json"), "{accept}: {ct}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v.as_array().unwrap().len(), 1);
    }
    // a well-formed weight still opens one
    let r = s
        .client
        .get(s.url("/acme/s"))
        .header("accept", "text/event-stream;q=0.5")
        .send()
        .await
        .unwrap();
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
}

#[tokio::test]
async fn blocklist_entries_without_a_scheme_match_the_referer_host() {
    let s = spawn_server().await;
    let r = s
        .call(
            "PUT",
            "/acme/s/settings",
            &[],
            json!({"blocklist": {"referers": ["*.spam.example", "bad.example", "https://x.example/ads*"]}}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let post = |referer: &'static str| {
        s.client
            .post(s.url("/acme/s"))
            .header("event-type", "t")
            .header("referer", referer)
            .json(&json!({"a": 1}))
            .send()
    };
    for referer in [
        "https://spam.example/",
        "https://www.spam.example/page",
        "http://a.b.SPAM.example:8080/",
        "https://bad.example:8443/x",
        "https://x.example/ads/1",
    ] {
        let v = assert_error(post(referer).await.unwrap(), 403, "blocklist").await;
        assert_eq!(v["rule"], "blocklist.referers", "{referer}");
    }
    for referer in [
        "https://good.example/?from=bad.example",
        "https://notspam.example/",
        "https://www.bad.example/",
        "https://x.example/other",
    ] {
        assert_eq!(post(referer).await.unwrap().status(), 201, "{referer}");
    }
}

/// One exposition parsed: family name → (type, help), and the sample names.
struct Exposition {
    families: HashMap<String, (String, String)>,
    samples: Vec<String>,
    eof: bool,
}

fn parse_exposition(text: &str) -> Exposition {
    let mut e = Exposition {
        families: HashMap::new(),
        samples: Vec::new(),
        eof: false,
    };
    for line in text.lines() {
        assert!(!e.eof, "a line after # EOF: {line}");
        if line == "# EOF" {
            e.eof = true;
        } else if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            e.families.entry(name.into()).or_default().1 = help.into();
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').expect("TYPE name type");
            e.families.entry(name.into()).or_default().0 = ty.into();
        } else if line.starts_with("# UNIT ") {
        } else {
            assert!(!line.starts_with('#'), "unknown comment {line}");
            let name = line.split(['{', ' ']).next().unwrap();
            let value = line.rsplit(' ').next().unwrap();
            assert!(
                value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value),
                "{line}"
            );
            e.samples.push(name.into());
        }
    }
    e
}

/// The family a sample belongs to: its name, or without a type's suffix.
fn family_of<'a>(e: &'a Exposition, sample: &str) -> Option<(&'a str, &'a str)> {
    let mut names = vec![sample.to_owned()];
    for suffix in ["_total", "_bucket", "_sum", "_count", "_created", "_info"] {
        if let Some(base) = sample.strip_suffix(suffix) {
            names.push(base.to_owned());
        }
    }
    names.iter().find_map(|n| {
        e.families
            .get_key_value(n)
            .map(|(k, (t, _))| (k.as_str(), t.as_str()))
    })
}

#[tokio::test]
async fn metrics_answer_openmetrics_or_the_text_format_by_accept() {
    let s = spawn_server().await;
    s.post_ok("/acme/s", "t", json!({"a": 1})).await;
    let get = |accept: Option<&'static str>| {
        let mut r = s.client.get(s.url("/metrics"));
        if let Some(a) = accept {
            r = r.header("accept", a);
        }
        r.send()
    };
    // OpenMetrics: without Accept, and to scrapers preferring it
    for accept in [
        None,
        Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"),
    ] {
        let r = get(accept).await.unwrap();
        let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
        let e = parse_exposition(&r.text().await.unwrap());
        assert!(e.eof, "OpenMetrics ends with # EOF");
        for sample in &e.samples {
            let (family, ty) = family_of(&e, sample).expect("sample of a family");
            if ty == "counter" {
                assert_eq!(*sample, format!("{family}_total"));
            }
        }
        for (name, (ty, help)) in &e.families {
            assert!(!help.trim().is_empty(), "{name} has no HELP");
            assert!(!ty.is_empty(), "{name} has no TYPE");
        }
        assert_eq!(e.families["eddy_events_appended"].0, "counter");
    }
    // the text format 0.0.4: every sample's own family (counters under _total) has
    // HELP and one of the text format's types; no # EOF
    let r = get(Some("text/plain;version=0.0.4;q=0.9,*/*;q=0.1"))
        .await
        .unwrap();
    let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
    assert_eq!(ct, "text/plain; version=0.0.4; charset=utf-8");
    let text = r.text().await.unwrap();
    let e = parse_exposition(&text);
    assert!(!e.eof, "no # EOF in the text format");
    for (name, (ty, help)) in &e.families {
        assert!(!help.trim().is_empty(), "{name} has no HELP");
        assert!(
            ["counter", "gauge", "histogram", "summary", "untyped"].contains(&ty.as_str()),
            "{name} has type {ty}"
        );
        if ty == "counter" {
            assert!(name.ends_with("_total"), "counter {name}");
        }
    }
    for sample in &e.samples {
        let own = e.families.contains_key(sample)
            || matches!(family_of(&e, sample), Some((_, "histogram" | "summary")));
        assert!(
            own,
            "sample {sample} has no family of its own name in:\n{text}"
        );
    }
    assert!(text.contains("\neddy_events_appended_total "), "{text}");
    assert!(
        e.families["eddy_subscribers"].1.contains("webhook"),
        "eddy_subscribers says it counts webhooks"
    );
}
