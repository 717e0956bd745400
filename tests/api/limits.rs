//! Rate limits and blocklists (API §9): 429 with Retry-After then recovery, per
//! substream; NDJSON paced rather than refused; blocklisted Referers and factory args
//! refused with 403, nothing stored, and counted in /metrics.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::access::{account, secured, send};
use crate::common::{assert_error, spawn_server};

#[tokio::test]
async fn rate_limits_refuse_then_recover() {
    let s = spawn_server().await;
    let r = s
        .call(
            "PUT",
            "/acme/hits/settings",
            &[],
            json!({"factory": true, "rateLimit": {"perSecond": 2, "burst": 3}}),
        )
        .await;
    assert_eq!(r.status(), 200);
    // the burst used up in one request, so that no refill comes in between
    let r = s
        .client
        .post(s.url("/acme/hits('a')"))
        .header("content-type", "application/vnd.eddy.events+json")
        .body(
            json!([{"type": "h", "data": 1}, {"type": "h", "data": 2}, {"type": "h", "data": 3}])
                .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = s.post("/acme/hits('a')", "hit", json!(1)).await;
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "Retry-After: {retry}");
    let v = assert_error(r, 429, "rate limited").await;
    assert_eq!(v["rule"], "rateLimit");
    // each substream has its own allowance
    s.post_ok("/acme/hits('b')", "hit", json!(1)).await;
    // a batch larger than the burst can never pass
    let r = s
        .client
        .post(s.url("/acme/hits('c')"))
        .header("content-type", "application/vnd.eddy.events+json")
        .body(json!([{"type": "h", "data": 1}, {"type": "h", "data": 2}, {"type": "h", "data": 3}, {"type": "h", "data": 4}]).to_string())
        .send()
        .await
        .unwrap();
    assert!(
        r.headers().get("retry-after").is_none(),
        "it can never pass"
    );
    let v = assert_error(r, 413, "never pass").await;
    assert_eq!(
        (v["count"].clone(), v["burst"].clone()),
        (json!(4), json!(3))
    );
    assert_eq!(v["rule"], "rateLimit");
    // after Retry-After, appends pass again
    tokio::time::sleep(Duration::from_secs(retry)).await;
    s.post_ok("/acme/hits('a')", "hit", json!(1)).await;
    assert_eq!(
        s.get_json("/acme/hits('a')", 200)
            .await
            .as_array()
            .unwrap()
            .len(),
        4
    );
    assert_eq!(s.get_json("/acme/hits('c')", 200).await, json!([]));

    // NDJSON paces its lines to the limit instead of failing half-way
    let started = Instant::now();
    let lines: String = (0..6).map(|i| format!("{i}\n")).collect();
    let r = s
        .client
        .post(s.url("/acme/hits('d')?event-type=hit"))
        .header("content-type", "application/x-ndjson")
        .body(lines)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.json::<Value>().await.unwrap()["count"], 6);
    // 6 lines at 2/s with a burst of 3 (one taken by the request) take over a second
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );

    // removing the limit lifts it at once
    let r = s
        .call(
            "PATCH",
            "/acme/hits/settings",
            &[],
            json!({"rateLimit": null}),
        )
        .await;
    assert_eq!(r.json::<Value>().await.unwrap()["rateLimit"], Value::Null);
    for _ in 0..10 {
        s.post_ok("/acme/hits('a')", "hit", json!(1)).await;
    }
    let m = s.get("/metrics").await.text().await.unwrap();
    assert!(
        m.contains("eddy_refused_requests_total{rule=\"rateLimit\"} 2"),
        "{m}"
    );
}

/// Write access is decided first: a refused append takes nothing from the rate limit,
/// and its answer is the same for a stream that exists, whatever its settings, and
/// for one that does not.
#[tokio::test]
async fn refused_appends_take_nothing_from_the_limit_and_reveal_nothing() {
    let s = secured().await;
    let own = format!("Bearer {}", account(&s, "acme").await);
    let r = s
        .call(
            "PUT",
            "/acme/rl/settings",
            &[("authorization", own.as_str())],
            json!({"rateLimit": {"perSecond": 1, "burst": 2},
                   "blocklist": {"referers": ["https://spam.example/*"]}}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let batch = |path: &str, auth: Option<&str>| {
        let mut r = s
            .client
            .post(s.url(path))
            .header("content-type", "application/vnd.eddy.events+json")
            .body(json!([{"type": "t", "data": 1}]).to_string());
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        r.send()
    };
    let ndjson = |path: &str| {
        s.client
            .post(s.url(&format!("{path}?event-type=t")))
            .header("content-type", "application/x-ndjson")
            .body("1\n2\n")
            .send()
    };
    for path in ["/acme/rl", "/ghost/rl"] {
        for _ in 0..3 {
            let r = send(&s, "POST", path, None, Some(json!(1))).await;
            assert_error(r, 401, "credentials").await;
        }
        let r = s
            .client
            .post(s.url(path))
            .header("event-type", "t")
            .header("referer", "https://spam.example/x")
            .json(&json!(1))
            .send()
            .await
            .unwrap();
        assert_error(r, 401, "credentials").await;
        assert_error(batch(path, None).await.unwrap(), 401, "credentials").await;
        assert_error(ndjson(path).await.unwrap(), 401, "credentials").await;
    }
    // the owner still has the whole burst
    for _ in 0..2 {
        let r = send(&s, "POST", "/acme/rl", Some(&own), Some(json!(1))).await;
        assert_eq!(r.status(), 201, "{:?}", r.text().await);
    }
    let r = send(&s, "POST", "/acme/rl", Some(&own), Some(json!(1))).await;
    assert_error(r, 429, "rate limited").await;
    // with the limit used up, anonymous callers still get the 401 a missing stream
    // gives, never the 429 that would show the stream exists
    let r = send(&s, "POST", "/acme/rl", None, Some(json!(1))).await;
    assert_error(r, 401, "credentials").await;
    let r = batch("/acme/rl", None).await.unwrap();
    assert_error(r, 401, "credentials").await;
    // and the owner's blocklisted Referer is a 403 of the blocklist
    let r = s
        .client
        .post(s.url("/acme/rl"))
        .header("authorization", &own)
        .header("event-type", "t")
        .header("referer", "https://spam.example/x")
        .json(&json!(1))
        .send()
        .await
        .unwrap();
    let v = assert_error(r, 403, "blocked").await;
    assert_eq!(v["rule"], "blocklist.referers");
    let all = send(&s, "GET", "/acme/rl", Some(&own), None).await;
    assert_eq!(
        all.json::<Value>().await.unwrap().as_array().unwrap().len(),
        2
    );
}

#[tokio::test]
async fn blocklists_refuse_referers_and_args() {
    let s = spawn_server().await;
    let r = s
        .call(
            "PUT",
            "/acme/votes/settings",
            &[],
            json!({"factory": true, "blocklist": {
                "referers": ["https://spam.example/*", "*://*.bad.test/*"],
                "args": [["bot-*"], ["poll", 13]]}}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let post = |path: &str, referer: Option<&str>| {
        let mut r = s
            .client
            .post(s.url(path))
            .header("event-type", "vote")
            .header("content-type", "application/json")
            .body("1");
        if let Some(referer) = referer {
            r = r.header("referer", referer);
        }
        r.send()
    };
    let r = post("/acme/votes('ann')", Some("https://good.example/page"))
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    for (path, referer, rule) in [
        (
            "/acme/votes('ann')",
            Some("https://spam.example/x"),
            "blocklist.referers",
        ),
        (
            "/acme/votes('ann')",
            Some("http://www.bad.test/"),
            "blocklist.referers",
        ),
        // scheme and host are not case-sensitive
        (
            "/acme/votes('ann')",
            Some("HTTPS://SPAM.EXAMPLE/x"),
            "blocklist.referers",
        ),
        (
            "/acme/votes('ann')",
            Some("Http://WWW.Bad.Test/Page"),
            "blocklist.referers",
        ),
        ("/acme/votes('bot-9')", None, "blocklist.args"),
        ("/acme/votes('poll',13)", None, "blocklist.args"),
    ] {
        let r = post(path, referer).await.unwrap();
        let v = assert_error(r, 403, "blocked").await;
        assert_eq!(v["rule"], rule);
    }
    let r = post("/acme/votes('poll',14)", None).await.unwrap();
    assert_eq!(r.status(), 201);
    // nothing refused was stored
    let all = s.get_json("/acme/votes", 200).await;
    assert_eq!(all.as_array().unwrap().len(), 2, "{all}");
    assert_eq!(s.get_json("/acme/votes('bot-9')", 200).await, json!([]));
    let m = s.get("/metrics").await.text().await.unwrap();
    assert!(
        m.contains("eddy_refused_requests_total{rule=\"blocklist.referers\"} 4"),
        "{m}"
    );
    assert!(
        m.contains("eddy_refused_requests_total{rule=\"blocklist.args\"} 2"),
        "{m}"
    );
    // malformed blocklists are refused naming the field
    let r = s
        .call(
            "PATCH",
            "/acme/votes/settings",
            &[],
            json!({"blocklist": {"args": ["bot"]}}),
        )
        .await;
    let v = assert_error(r, 400, "argument list").await;
    assert_eq!(v["field"], "blocklist.args[0]");
}
