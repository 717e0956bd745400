//! Listings, settings, operations endpoints, not-yet-built resources, HTTP/2, CORS, and
//! concurrent appends sharing group commits.

use serde_json::{Value, json};

use crate::common::{assert_error, spawn_server};

#[tokio::test]
async fn account_and_substream_listings_page() {
    let s = spawn_server().await;
    for name in ["c", "a", "b"] {
        s.post_ok(&format!("/acct/{name}"), "t", json!(1)).await;
    }
    s.post_ok("/acct/a", "t", json!(2)).await;
    for arg in ["'x'", "'y'", "'z'"] {
        s.post_ok(&format!("/acct/f({arg})"), "t", json!(1)).await;
    }
    s.post_ok("/acct/f('y')", "t", json!(2)).await;
    s.post_ok("/other/zzz", "t", json!(1)).await;
    let all = s.get_json("/acct", 200).await;
    let names: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b", "c", "f"]);
    assert_eq!(all[0]["events"], 2);
    assert_eq!(all[3]["factory"], true);
    assert_eq!(all[3]["events"], 4);
    let r = s.get("/acct?limit=3").await;
    // the URL answers SSE too: caches keep the two apart
    let vary: Vec<&str> = r
        .headers()
        .get_all("vary")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert!(vary.iter().any(|v| v.contains("accept")), "{vary:?}");
    let link = r.headers()["link"].to_str().unwrap().to_owned();
    assert_eq!(
        r.json::<Value>().await.unwrap().as_array().unwrap().len(),
        3
    );
    let rest = s.get_json(&link[1..link.find('>').unwrap()], 200).await;
    assert_eq!(rest[0]["name"], "f");
    assert_eq!(s.get_json("/nobody", 200).await, json!([]));

    let subs = s.get_json("/acct/f/substreams", 200).await;
    assert_eq!(subs.as_array().unwrap().len(), 3);
    assert_eq!(
        subs[1],
        json!({"stream": "acct/f('y')", "args": "'y'", "events": 2, "lastIndex": 1, "lastTimestamp": subs[1]["lastTimestamp"]})
    );
    let r = s.get("/acct/f/substreams?limit=2").await;
    let link = r.headers()["link"].to_str().unwrap().to_owned();
    let rest = s.get_json(&link[1..link.find('>').unwrap()], 200).await;
    assert_eq!(rest[0]["stream"], "acct/f('z')");
    assert_error(s.get("/acct/a/substreams").await, 400, "not a factory").await;
    assert_error(s.get("/acct/nope/substreams").await, 404, "does not exist").await;
    assert_error(s.get("/acct?colour=1").await, 400, "colour").await;
}

#[tokio::test]
async fn settings_declare_factories_before_any_event() {
    let s = spawn_server().await;
    assert_error(s.get("/a/f/settings").await, 404, "does not exist").await;
    let r = s
        .call("PUT", "/a/f/settings", &[], json!({"factory": true}))
        .await;
    assert_eq!(r.status(), 200);
    let mut declared = r.json::<Value>().await.unwrap();
    // a factory gets a random HMAC secret (API §9), kept across later changes
    let secret = declared["hmacSecret"].take();
    assert_eq!(secret.as_str().map(str::len), Some(43), "{secret}");
    assert_eq!(
        declared,
        json!({"factory": true, "public": {"read": false, "write": false}, "rateLimit": null,
               "blocklist": {"referers": [], "args": []}, "accountSubstreams": "none",
               "hmacSecret": null, "requestHosts": [], "snapshotEvery": 5000})
    );
    assert_eq!(s.get_json("/a/f/settings", 200).await["hmacSecret"], secret);
    assert_error(s.post("/a/f", "t", json!(1)).await, 400, "factory").await;
    s.post_ok("/a/f('k')", "t", json!(1)).await;
    let r = s
        .call("PATCH", "/a/f/settings", &[], json!({"factory": false}))
        .await;
    assert_error(r, 409, "already has events").await;
    let r = s
        .call("PUT", "/a/f/settings", &[], json!({"factory": "yes"}))
        .await;
    assert_error(r, 400, "boolean").await;
    let r = s
        .call("PUT", "/a/f/settings", &[], json!({"colour": 1}))
        .await;
    assert_error(r, 400, "colour").await;
    let r = s
        .client
        .put(s.url("/a/f/settings"))
        .body("[1]")
        .send()
        .await
        .unwrap();
    assert_error(r, 400, "JSON object").await;
    let r = s.call("PUT", "/a/f('k')/settings", &[], json!({})).await;
    assert_error(r, 400, "substream").await;
    // an empty plain stream may still become a factory
    let r = s.call("PATCH", "/a/p/settings", &[], json!({})).await;
    let plain = r.json::<Value>().await.unwrap();
    assert_eq!(plain["factory"], false);
    assert!(
        plain.get("hmacSecret").is_none(),
        "a plain stream has no HMAC secret"
    );
    let r = s
        .call("PATCH", "/a/p/settings", &[], json!({"factory": true}))
        .await;
    assert_eq!(r.status(), 200);
    assert!(r.json::<Value>().await.unwrap()["hmacSecret"].is_string());
    s.post_ok("/a/p(1)", "t", json!(1)).await;
    assert_eq!(s.get_json("/a/f('k')/0", 200).await["data"], 1);
}

#[tokio::test]
async fn unbuilt_resources_answer_a_clear_json_error() {
    let s = spawn_server().await;
    s.post_ok("/a/s", "t", json!(1)).await;
    for (method, path, status, needle) in [
        ("GET", "/a/s.total", 404, "total"),
        ("POST", "/a/s/reducers", 405, "not allowed"),
        ("PUT", "/a/s:click", 400, "not valid JSON"),
        ("GET", "/a/s:click.ts", 404, "no event type"),
        ("POST", "/a/s/pipe/b/t", 405, "not allowed"),
        ("POST", "/a/s/logs", 405, "not allowed"),
        ("PUT", "/a/s/webhooks", 405, "not allowed"),
        ("GET", "/a/s/webhooks/x/resume", 405, "not allowed"),
        (
            "PUT",
            "/eddy/cron('*%20*%20*%20*%20*').r",
            400,
            "builtin stream",
        ),
        ("GET", "/eddy", 404, "builtin streams"),
        ("GET", "/a/s/unknown", 400, "unknown"),
        ("POST", "/api/accounts", 404, "admin token"),
        ("GET", "/api/other", 404, "admin token"),
        ("DELETE", "/api/accounts", 404, "admin token"),
        ("GET", "/api/accounts/acme", 404, "admin token"),
        ("POST", "/healthz", 405, "not allowed"),
        ("DELETE", "/metrics", 405, "not allowed"),
    ] {
        let r = s
            .client
            .request(method.parse().unwrap(), s.url(path))
            .send()
            .await
            .unwrap();
        assert_error(r, status, needle).await;
    }
}

#[tokio::test]
async fn healthz_metrics_and_http2() {
    let s = spawn_server().await;
    s.post_ok("/a/m", "t", json!(1)).await;
    assert_eq!(s.get_json("/healthz", 200).await["status"], "ok");
    let m = s.get("/metrics").await.text().await.unwrap();
    for name in [
        // the event and the account event announcing its stream (API §8)
        "eddy_events_appended_total 2",
        "eddy_append_seconds_bucket",
        "eddy_commit_group_events_bucket",
        "eddy_commit_group_requests_bucket",
        "eddy_commits_total",
        "eddy_flush_seconds_bucket",
    ] {
        assert!(m.contains(name), "metrics lack {name}:\n{m}");
    }
    crate::common::tls_ready();
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = h2
        .post(s.url("/a/m"))
        .header("Event-Type", "t")
        .json(&json!(2))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_commits_and_stay_gapless() {
    let s = spawn_server().await;
    let mut tasks = Vec::new();
    for w in 0..16 {
        let (client, url) = (s.client.clone(), s.url("/a/conc"));
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for i in 0..25 {
                let r = client
                    .post(&url)
                    .header("Event-Type", "t")
                    .json(&json!({"w": w, "i": i}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 201);
                got.push(r.json::<Value>().await.unwrap()["index"].as_u64().unwrap());
            }
            got
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_unstable();
    assert_eq!(all, (0..400).collect::<Vec<u64>>());
    let m = s.get("/metrics").await.text().await.unwrap();
    let commits: f64 = m
        .lines()
        .find(|l| l.starts_with("eddy_commits_total"))
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        commits < 400.0,
        "400 appends from 16 writers took {commits} commits: no grouping"
    );
}

#[tokio::test]
async fn state_survives_a_restart() {
    let mut s = spawn_server().await;
    s.post_ok("/a/r", "t", json!(0)).await;
    s.post_ok("/a/f('x')", "t", json!(0)).await;
    let r = s
        .call(
            "POST",
            "/a/r",
            &[("Event-Type", "t"), ("Event-Timestamp", "4102444800000")],
            json!(1),
        )
        .await;
    assert_eq!(r.status(), 201);
    s.restart().await;
    assert_eq!(s.post_ok("/a/r", "t", json!(2)).await["index"], 2);
    assert_eq!(s.post_ok("/a/f('x')", "t", json!(1)).await["index"], 1);
    let r = s
        .call(
            "POST",
            "/a/r",
            &[("Event-Type", "t"), ("Event-Timestamp", "1")],
            json!(1),
        )
        .await;
    assert_error(r, 409, "before the last timestamp").await;
    assert_error(s.post("/a/f", "t", json!(1)).await, 400, "factory").await;
    assert_eq!(s.get_json("/a/r", 200).await.as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn cors_for_browsers_and_only_allow_origin_for_other_clients() {
    let s = spawn_server().await;
    // curl or a backend: no Origin, so no CORS request; the response still allows any
    // origin, carries none of the browser-only headers, and says it varies by Origin
    // (a shared cache must not hand it to a browser)
    let plain = s
        .call("POST", "/acme/clicks", &[("Event-Type", "c")], json!(1))
        .await;
    assert_eq!(plain.status(), 201);
    assert_eq!(plain.headers()["access-control-allow-origin"], "*");
    assert!(
        plain
            .headers()
            .get("access-control-expose-headers")
            .is_none()
    );
    assert_eq!(plain.headers()["vary"], "origin");
    // a browser's cross-origin POST: the headers it may read are exposed
    let browser = s
        .call(
            "POST",
            "/acme/clicks",
            &[("Event-Type", "c"), ("Origin", "https://app.example")],
            json!(2),
        )
        .await;
    assert_eq!(browser.status(), 201);
    assert_eq!(browser.headers()["access-control-allow-origin"], "*");
    let exposed = browser.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap();
    for header in [
        "location",
        "reducer-index",
        "event-metadata",
        "event-origin",
        "x-stream-metadata",
    ] {
        assert!(exposed.split(',').any(|h| h.trim() == header), "{exposed}");
    }
    // its preflight is answered, mirroring the requested headers
    let preflight = s
        .client
        .request(reqwest::Method::OPTIONS, s.url("/acme/clicks"))
        .header("Origin", "https://app.example")
        .header("Access-Control-Request-Method", "POST")
        .header("Access-Control-Request-Headers", "authorization,event-type")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 200);
    assert_eq!(preflight.headers()["access-control-allow-origin"], "*");
    assert_eq!(
        preflight.headers()["access-control-allow-headers"],
        "authorization,event-type"
    );
    let methods = preflight.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap();
    assert!(
        methods.contains("POST") && methods.contains("DELETE"),
        "{methods}"
    );
    // a GET without Origin (an EventSource-like reader behind a proxy) is allowed too
    let read = s.get("/acme/clicks").await;
    assert_eq!(read.headers()["access-control-allow-origin"], "*");
    let events: Value = read.json().await.unwrap();
    assert_eq!(events.as_array().map(Vec::len), Some(2));
}
