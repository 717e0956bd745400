//! Access control (API §9): a server with an admin token, accounts and keys made
//! through /api, and a table of endpoints × credentials asserting the exact status of
//! each; public flags, account substreams, HMAC tokens (also as ?token= for
//! EventSource), key deletion, keys stored hashed, and refusals counted in /metrics.

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use reqwest::Response;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::common::{TestServer, assert_error, spawn_server_with};

pub const ADMIN: &str = "admin-token-for-the-tests-0123456789";

pub async fn secured() -> TestServer {
    spawn_server_with(|c| c.admin_token = Some(ADMIN.into())).await
}

/// Sends a request with an optional `Authorization` value and a JSON body (none for
/// GET and DELETE).
pub async fn send(
    s: &TestServer,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: Option<Value>,
) -> Response {
    let mut r = s.client.request(method.parse().unwrap(), s.url(path));
    if let Some(a) = auth {
        r = r.header("authorization", a);
    }
    if let Some(b) = body {
        r = r.header("event-type", "order").json(&b);
    }
    r.send().await.unwrap()
}

/// Creates an account through the admin API; answers its key.
pub async fn account(s: &TestServer, name: &str) -> String {
    let r = send(
        s,
        "POST",
        "/api/accounts",
        Some(&format!("Bearer {ADMIN}")),
        Some(json!({"name": name})),
    )
    .await;
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["name"], name);
    v["key"].as_str().unwrap().to_owned()
}

/// The HMAC token of `path`, computed here as a client would: unpadded base64url of
/// HMAC-SHA256 keyed with the decoded secret.
pub(crate) fn hmac_token(secret: &str, path: &str) -> String {
    let key = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(secret)
        .unwrap();
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key).unwrap();
    mac.update(path.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

#[tokio::test]
async fn the_access_matrix() {
    let s = secured().await;
    let acme = account(&s, "acme").await;
    let bob = account(&s, "bob").await;
    let own = format!("Bearer {acme}");
    let put = |path: &'static str, body: Value| {
        let own = own.clone();
        let s = &s;
        async move {
            let r = s
                .client
                .put(s.url(path))
                .header("authorization", own)
                .header("content-type", "application/json")
                .body(if body.is_null() {
                    String::new()
                } else {
                    body.to_string()
                })
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "PUT {path}: {:?}", r.text().await);
        }
    };
    put("/acme/orders/settings", json!({"factory": true})).await;
    put(
        "/acme/orders:order",
        json!({"properties": {"n": {"type": "uint8"}}}),
    )
    .await;
    put("/acme/copy/settings", json!({"factory": true})).await;
    put("/acme/orders/pipe/acme/copy", json!(null)).await;
    let r = s
        .client
        .put(s.url("/acme/orders.count"))
        .header("authorization", &own)
        .header("content-type", "application/javascript")
        .body("export default (s = 0) => s + 1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = send(
        &s,
        "POST",
        "/acme/orders('c1')",
        Some(&own),
        Some(json!({"n": 1})),
    )
    .await;
    assert_eq!(r.status(), 201);
    let settings: Value = send(&s, "GET", "/acme/orders/settings", Some(&own), None)
        .await
        .json()
        .await
        .unwrap();
    let secret = settings["hmacSecret"].as_str().unwrap();
    let c1 = format!("HMAC {}", hmac_token(secret, "/acme/orders('c1')"));
    let c2 = format!("HMAC {}", hmac_token(secret, "/acme/orders('c2')"));
    let bob_auth = format!("Bearer {bob}");

    // endpoint, then the status for: no credentials, bob's key, acme's key, the HMAC
    // token of orders('c1'), the HMAC token of orders('c2')
    let order = Some(json!({"n": 2}));
    let rows: Vec<(&str, &str, Option<Value>, [u16; 5])> = vec![
        (
            "POST",
            "/acme/orders('c1')",
            order.clone(),
            [401, 403, 201, 201, 403],
        ),
        (
            "POST",
            "/acme/orders('c1'):order",
            order.clone(),
            [401, 403, 201, 201, 403],
        ),
        ("GET", "/acme/orders('c1')", None, [401, 403, 200, 200, 403]),
        (
            "GET",
            "/acme/orders('c1')/0",
            None,
            [401, 403, 200, 200, 403],
        ),
        (
            "GET",
            "/acme/orders('c1')[0]",
            None,
            [401, 403, 200, 200, 403],
        ),
        (
            "GET",
            "/acme/orders('c1').count",
            None,
            [401, 403, 200, 200, 403],
        ),
        ("GET", "/acme/orders", None, [401, 403, 200, 403, 403]),
        ("GET", "/acme/orders.count", None, [401, 403, 200, 403, 403]),
        (
            "GET",
            "/acme/orders/substreams",
            None,
            [401, 403, 200, 403, 403],
        ),
        (
            "GET",
            "/acme/orders/settings",
            None,
            [401, 403, 200, 403, 403],
        ),
        (
            "PATCH",
            "/acme/orders/settings",
            Some(json!({"factory": true})),
            [401, 403, 200, 403, 403],
        ),
        (
            "GET",
            "/acme/orders/reducers",
            None,
            [401, 403, 200, 403, 403],
        ),
        ("GET", "/acme/orders/logs", None, [401, 403, 200, 403, 403]),
        (
            "GET",
            "/acme/orders/webhooks",
            None,
            [401, 403, 200, 403, 403],
        ),
        ("GET", "/acme/orders:order", None, [401, 403, 200, 403, 403]),
        (
            "GET",
            "/acme/orders:order.ts",
            None,
            [401, 403, 200, 403, 403],
        ),
        (
            "PUT",
            "/acme/orders:order",
            Some(json!({"properties": {"n": {"type": "uint8"}}})),
            [401, 403, 200, 403, 403],
        ),
        (
            "GET",
            "/acme/orders/pipe/acme/copy",
            None,
            [401, 403, 200, 403, 403],
        ),
        (
            "PUT",
            "/acme/orders/pipe/acme/copy",
            Some(json!(null)),
            [401, 403, 200, 403, 403],
        ),
        (
            "GET",
            "/acme/orders/logs/pipe/acme/copy",
            None,
            [401, 403, 200, 403, 403],
        ),
        ("GET", "/acme", None, [401, 403, 200, 403, 403]),
        ("GET", "/eddy/events(acme)", None, [401, 403, 200, 403, 403]),
        (
            "GET",
            "/api/accounts/acme/keys",
            None,
            [401, 403, 200, 403, 403],
        ),
        // a stream that does not exist answers like one that does: nothing leaks
        ("GET", "/acme/nothing", None, [401, 403, 404, 403, 403]),
        ("GET", "/ghost/nothing", None, [401, 403, 403, 403, 403]),
    ];
    let who = [
        None,
        Some(bob_auth.as_str()),
        Some(own.as_str()),
        Some(c1.as_str()),
        Some(c2.as_str()),
    ];
    let names = ["none", "bob's key", "acme's key", "HMAC c1", "HMAC c2"];
    let mut failures = Vec::new();
    for (method, path, body, expected) in &rows {
        for (i, auth) in who.iter().enumerate() {
            let body = match (*method, body) {
                ("PUT", Some(Value::Null)) => None,
                (_, b) => b.clone(),
            };
            let r = send(&s, method, path, *auth, body).await;
            let got = r.status().as_u16();
            let text = r.text().await.unwrap();
            if got != expected[i] {
                failures.push(format!(
                    "{method} {path} with {}: {got} (expected {}): {text}",
                    names[i], expected[i]
                ));
            } else if got >= 400 {
                let v: Value = serde_json::from_str(&text).unwrap();
                assert!(v["error"].is_string(), "{text}");
                if got == 401 || got == 403 {
                    assert!(v["rule"].is_string(), "{method} {path}: no rule: {text}");
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // the admin may do anything in an existing account; a missing one is a 404 for it
    let admin = format!("Bearer {ADMIN}");
    let r = send(&s, "GET", "/acme/orders/settings", Some(&admin), None).await;
    assert_eq!(r.status(), 200);
    assert_error(
        send(&s, "GET", "/ghost/x", Some(&admin), None).await,
        404,
        "does not exist",
    )
    .await;
    // only the admin creates accounts
    let r = send(
        &s,
        "POST",
        "/api/accounts",
        Some(&own),
        Some(json!({"name": "eve"})),
    )
    .await;
    assert_error(r, 403, "admin token").await;
    let r = send(
        &s,
        "POST",
        "/api/accounts",
        None,
        Some(json!({"name": "eve"})),
    )
    .await;
    assert_error(r, 401, "admin token").await;
    let r = send(
        &s,
        "POST",
        "/api/accounts",
        Some(&admin),
        Some(json!({"name": "acme"})),
    )
    .await;
    assert_error(r, 409, "already exists").await;
    let r = send(
        &s,
        "POST",
        "/api/accounts",
        Some(&admin),
        Some(json!({"name": "a b"})),
    )
    .await;
    assert_error(r, 400, "name").await;
    for reserved in ["eddy", "EDDY", "Eddy", "Healthz"] {
        let r = send(
            &s,
            "POST",
            "/api/accounts",
            Some(&admin),
            Some(json!({ "name": reserved })),
        )
        .await;
        assert_error(r, 400, "reserved").await;
    }
    // an unknown key is refused even where no key is needed to read
    let r = send(&s, "GET", "/acme/orders", Some("Bearer eddy_nope"), None).await;
    assert_error(r, 403, "not valid").await;
    // so is a scheme eddy does not take: no usable credentials were given
    let r = send(&s, "GET", "/acme/orders", Some("Basic abc"), None).await;
    assert_eq!(r.status(), 401);
    assert_error(r, 401, "Basic").await;
}

#[tokio::test]
async fn unusable_authorization_schemes_are_401_with_a_challenge() {
    let s = secured().await;
    let acme = account(&s, "acme").await;
    let r = s
        .client
        .put(s.url("/acme/news/settings"))
        .header("authorization", format!("Bearer {acme}"))
        .json(&json!({"public": {"read": true, "write": true}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    for (auth, named) in [
        ("Basic Zm9vOmJhcg==", "\"Basic\""),
        ("Token abc", "\"Token\""),
        ("Bearer", "no credentials"),
    ] {
        // on a private stream, a missing one, a public one and the admin API alike
        for (method, path) in [
            ("GET", "/acme/orders"),
            ("GET", "/ghost/orders"),
            ("GET", "/acme/news"),
            ("POST", "/acme/news"),
            ("GET", "/api/accounts/acme/keys"),
        ] {
            let body = (method == "POST").then(|| json!({"n": 1}));
            let r = send(&s, method, path, Some(auth), body).await;
            let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
            assert!(
                challenge.contains("Bearer") && challenge.contains("HMAC"),
                "{method} {path} with {auth}: WWW-Authenticate: {challenge}"
            );
            let v = assert_error(r, 401, named).await;
            assert_eq!(v["rule"], "credentials", "{method} {path} with {auth}");
        }
    }
    let r = send(
        &s,
        "POST",
        "/api/accounts",
        Some("Basic Zm9vOmJhcg=="),
        Some(json!({"name": "x"})),
    )
    .await;
    assert_error(r, 401, "Basic").await;
    // nothing was appended to the public stream
    assert_eq!(s.get_json("/acme/news", 200).await, json!([]));
}

#[tokio::test]
async fn a_bad_query_token_is_called_an_unknown_key() {
    let s = secured().await;
    let acme = account(&s, "acme").await;
    let own = format!("Bearer {acme}");
    let r = send(&s, "POST", "/acme/plain", Some(&own), Some(json!({"n": 1}))).await;
    assert_eq!(r.status(), 201);
    let r = send(&s, "GET", "/acme/plain?token=bad", None, None).await;
    let v = assert_error(r, 403, "not a valid key").await;
    assert_eq!(v["rule"], "key");
    let msg = v["error"].as_str().unwrap();
    assert!(!msg.contains("grants one substream only"), "{msg}");
}

#[tokio::test]
async fn public_streams_and_account_substreams() {
    let s = secured().await;
    let acme = format!("Bearer {}", account(&s, "acme").await);
    let bob = format!("Bearer {}", account(&s, "bob").await);
    let patch = |path: &'static str, v: Value| {
        let acme = acme.clone();
        let s = &s;
        async move {
            let r = s
                .call("PUT", path, &[("authorization", acme.as_str())], v)
                .await;
            assert_eq!(r.status(), 200);
        }
    };
    patch("/acme/news/settings", json!({"public": {"read": true}})).await;
    patch("/acme/board/settings", json!({"public": {"write": true}})).await;
    patch(
        "/acme/inbox/settings",
        json!({"factory": true, "accountSubstreams": "readwrite"}),
    )
    .await;
    patch(
        "/acme/outbox/settings",
        json!({"factory": true, "accountSubstreams": "read"}),
    )
    .await;
    let post = |path, auth| send(&s, "POST", path, auth, Some(json!({"n": 1})));
    let get = |path, auth| send(&s, "GET", path, auth, None);
    assert_eq!(post("/acme/news", Some(&acme)).await.status(), 201);
    // public read, not write
    assert_eq!(get("/acme/news", None).await.status(), 200);
    assert_eq!(get("/acme/news/0", Some(&bob)).await.status(), 200);
    assert_eq!(post("/acme/news", None).await.status(), 401);
    assert_eq!(post("/acme/news", Some(&bob)).await.status(), 403);
    assert_eq!(get("/acme/news/settings", None).await.status(), 401);
    // public write, not read
    assert_eq!(post("/acme/board", None).await.status(), 201);
    assert_eq!(post("/acme/board", Some(&bob)).await.status(), 201);
    assert_eq!(get("/acme/board", None).await.status(), 401);
    assert_eq!(get("/acme/board", Some(&bob)).await.status(), 403);
    // bob's substreams of acme's inbox, and no one else's
    assert_eq!(post("/acme/inbox(bob)", Some(&bob)).await.status(), 201);
    assert_eq!(
        post("/acme/inbox(acme,bob)", Some(&bob)).await.status(),
        201
    );
    assert_eq!(get("/acme/inbox(bob)", Some(&bob)).await.status(), 200);
    assert_eq!(post("/acme/inbox(carol)", Some(&bob)).await.status(), 403);
    assert_eq!(post("/acme/inbox('bob')", Some(&bob)).await.status(), 403);
    assert_eq!(get("/acme/inbox", Some(&bob)).await.status(), 403);
    assert_eq!(post("/acme/inbox(bob)", None).await.status(), 401);
    // read only
    assert_eq!(post("/acme/outbox(bob)", Some(&acme)).await.status(), 201);
    assert_eq!(get("/acme/outbox(bob)", Some(&bob)).await.status(), 200);
    assert_eq!(post("/acme/outbox(bob)", Some(&bob)).await.status(), 403);
}

#[tokio::test]
async fn keys_are_shown_once_stored_hashed_and_deletable() {
    let s = secured().await;
    let first = account(&s, "acme").await;
    let own = format!("Bearer {first}");
    // an account's own key makes more keys
    let r = send(&s, "POST", "/api/accounts/acme/keys", Some(&own), None).await;
    assert_eq!(r.status(), 201);
    let second: Value = r.json().await.unwrap();
    let (id, key) = (
        second["id"].as_str().unwrap(),
        second["key"].as_str().unwrap(),
    );
    let ids = s_json(send(&s, "GET", "/api/accounts/acme/keys", Some(&own), None).await).await;
    assert_eq!(ids.as_array().unwrap().len(), 2);
    assert!(!ids.to_string().contains(key), "listing shows ids only");
    let with_second = format!("Bearer {key}");
    let r = send(
        &s,
        "POST",
        "/acme/s",
        Some(&with_second),
        Some(json!({"n": 1})),
    )
    .await;
    assert_eq!(r.status(), 201);
    let r = send(
        &s,
        "DELETE",
        &format!("/api/accounts/acme/keys/{id}"),
        Some(&own),
        None,
    )
    .await;
    assert_eq!(r.status(), 204);
    let r = send(
        &s,
        "POST",
        "/acme/s",
        Some(&with_second),
        Some(json!({"n": 1})),
    )
    .await;
    assert_error(r, 403, "not valid").await;
    let r = send(
        &s,
        "DELETE",
        &format!("/api/accounts/acme/keys/{id}"),
        Some(&own),
        None,
    )
    .await;
    assert_error(r, 404, "no key").await;
    // key events in the account's events
    let events = s_json(send(&s, "GET", "/eddy/events(acme)", Some(&own), None).await).await;
    let types: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(types[..3], ["key-created", "key-created", "stream-created"]);
    assert!(types.contains(&"key-deleted"), "{types:?}");
    // the database holds hashes, never a key
    let mut stored = Vec::new();
    for f in ["eddy.db", "eddy.db-wal"] {
        if let Ok(b) = std::fs::read(s.dir.path().join(f)) {
            stored.extend(b);
        }
    }
    if crate::common::on_postgres() {
        let keys = crate::common::query_text(
            s.dir.path(),
            "SELECT COALESCE(string_agg(id || account || hash, ','), '') FROM api_keys",
        )
        .await;
        assert!(!keys.is_empty(), "the keys are stored");
        stored.extend(keys.into_bytes());
    }
    for k in [first.as_str(), key] {
        // eddy_<id>_<secret>, whose base64url secret may hold `_` itself
        let secret = k.splitn(3, '_').nth(2).unwrap().as_bytes();
        assert!(
            !stored.windows(secret.len()).any(|w| w == secret),
            "a key is stored in clear"
        );
    }
    // keys survive a restart (their hashes are loaded)
    let mut s = s;
    s.restart().await;
    let r = send(&s, "GET", "/acme/s", Some(&own), None).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn event_source_credentials_ride_in_the_query() {
    let s = secured().await;
    let own = format!("Bearer {}", account(&s, "acme").await);
    let r = s
        .call(
            "PUT",
            "/acme/orders/settings",
            &[("authorization", own.as_str())],
            json!({"factory": true}),
        )
        .await;
    let secret = r.json::<Value>().await.unwrap()["hmacSecret"]
        .as_str()
        .unwrap()
        .to_owned();
    let token = hmac_token(&secret, "/acme/orders('c1')");
    let sse = |path: String| {
        s.client
            .get(s.url(&path))
            .header("accept", "text/event-stream")
            .send()
    };
    let r = sse(format!("/acme/orders('c1')?data=true&token={token}"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    drop(r);
    let r = sse(format!("/acme/orders('c2')?token={token}"))
        .await
        .unwrap();
    assert_error(r, 403, "HMAC").await;
    let r = sse("/acme/orders('c1')".into()).await.unwrap();
    assert_error(r, 401, "credentials").await;
    // a key works there too, and a form can post with ?token=
    let key = own.trim_start_matches("Bearer ");
    let r = sse(format!("/acme?token={key}")).await.unwrap();
    assert_eq!(r.status(), 200);
    drop(r);
    let r = s
        .client
        .post(s.url(&format!(
            "/acme/orders('c1')?event-type=signup&token={token}"
        )))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("email=a%40example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let m = s.get("/metrics").await.text().await.unwrap();
    assert!(
        m.contains("eddy_refused_requests_total{rule=\"credentials\"}"),
        "{m}"
    );
    assert!(
        m.contains("eddy_refused_requests_total{rule=\"hmac\"}"),
        "{m}"
    );
}

async fn s_json(r: Response) -> Value {
    let status = r.status();
    let text = r.text().await.unwrap();
    assert!(status.is_success(), "{status}: {text}");
    serde_json::from_str(&text).unwrap()
}

#[tokio::test]
async fn reducer_code_stays_the_owners_on_a_public_stream() {
    let s = secured().await;
    let acme = format!("Bearer {}", account(&s, "acme").await);
    let bob = format!("Bearer {}", account(&s, "bob").await);
    let r = s
        .call(
            "PUT",
            "/acme/news/settings",
            &[("authorization", acme.as_str())],
            json!({"public": {"read": true}}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let r = s
        .client
        .put(s.url("/acme/news.count"))
        .header("authorization", &acme)
        .header("content-type", "application/javascript")
        .body("(n = 0) => n + 1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // the state is public to read, the code is not
    assert_eq!(
        send(&s, "GET", "/acme/news.count", None, None)
            .await
            .status(),
        200
    );
    let r = send(&s, "GET", "/acme/news.count?source", None, None).await;
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    assert!(!r.text().await.unwrap().contains("n + 1"));
    let r = send(&s, "GET", "/acme/news.count?source", Some(&bob), None).await;
    assert_eq!(r.status(), 403);
    assert!(!r.text().await.unwrap().contains("n + 1"));
    let r = send(&s, "GET", "/acme/news.count?source", Some(&acme), None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "(n = 0) => n + 1");
    let admin = format!("Bearer {ADMIN}");
    let r = send(&s, "GET", "/acme/news.count?source", Some(&admin), None).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn the_consoles_endpoints_stay_the_owners_even_on_a_public_stream() {
    let s = secured().await;
    let acme = format!("Bearer {}", account(&s, "acme").await);
    let bob = format!("Bearer {}", account(&s, "bob").await);
    let as_acme = [("authorization", acme.as_str())];
    let r = s
        .call(
            "PUT",
            "/acme/news/settings",
            &as_acme,
            json!({"public": {"read": true, "write": true}}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let r = s
        .call(
            "POST",
            "/acme/news/webhooks",
            &as_acme,
            json!({"url": "https://receiver.example/hook"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let hook = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let status = format!("/acme/news/webhooks/{hook}");
    let pause = format!("{status}/pause");
    for (method, path) in [
        ("GET", "/acme/news/pipes"),
        ("GET", "/acme/news/types"),
        ("POST", pause.as_str()),
    ] {
        // another account's key, and no credentials: refused, nothing revealed
        let r = send(&s, method, path, Some(&bob), None).await;
        assert_error(r, 403, "").await;
        let r = send(&s, method, path, None, None).await;
        assert_error(r, 401, "").await;
        if method == "POST" {
            // the refused pauses paused nothing
            let r = send(&s, "GET", &status, Some(&acme), None).await;
            assert_ne!(s_json(r).await["status"], "paused");
        }
        let r = send(&s, method, path, Some(&acme), None).await;
        assert_eq!(r.status(), 200, "{method} {path}");
    }
    let r = send(&s, "GET", &status, Some(&acme), None).await;
    assert_eq!(s_json(r).await["pausedReason"], "paused by request");
    // the account listing tells bob his own account only
    let r = send(&s, "GET", "/api/accounts", Some(&bob), None).await;
    let own = s_json(r).await;
    assert_eq!(own.as_array().map(Vec::len), Some(1), "{own}");
    assert_eq!(own[0]["name"], "bob", "{own}");
    // the console's files are public (they hold no data), the data behind them is not
    assert_eq!(send(&s, "GET", "/ui", None, None).await.status(), 200);
    assert_eq!(
        send(&s, "GET", "/ui/app.js", None, None).await.status(),
        200
    );
}

/// bob's inbox events, read with bob's key, once there are `n` (20 s at most).
async fn inbox(s: &TestServer, bob: &str, n: usize) -> Vec<Value> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let r = s
            .client
            .get(s.url("/bob/inbox"))
            .header("authorization", bob)
            .header("accept", "application/x-ndjson")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let events: Vec<Value> = (r.text().await.unwrap().lines())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if events.len() >= n {
            return events;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {n} events in bob/inbox",
            events.len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipe_into_another_account_appends_only_while_it_may() {
    let s = secured().await;
    let acme = format!("Bearer {}", account(&s, "acme").await);
    let bob = format!("Bearer {}", account(&s, "bob").await);
    let settings = |body: Value| {
        let (s, bob) = (&s, bob.clone());
        async move {
            let r = s
                .client
                .patch(s.url("/bob/inbox/settings"))
                .header("authorization", bob)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "{:?}", r.text().await);
        }
    };
    // bob lets anyone append, at most 2 a second; acme pipes its stream there
    settings(json!({"public": {"write": true}, "rateLimit": {"perSecond": 2, "burst": 1}})).await;
    let r = send(&s, "PUT", "/acme/out/pipe/bob/inbox", Some(&acme), None).await;
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    // four events at once: paced by bob's limit, none lost
    let started = std::time::Instant::now();
    for n in 0..4 {
        let r = send(&s, "POST", "/acme/out", Some(&acme), Some(json!({"n": n}))).await;
        assert_eq!(r.status(), 201);
    }
    let got = inbox(&s, &bob, 4).await;
    let ns: Vec<&Value> = got.iter().map(|e| &e["data"]["n"]).collect();
    assert_eq!(ns, [0, 1, 2, 3]);
    // the first output comes after the first post, and the last three wait for a
    // token each, at 2 a second: 1.5 s, however fast or slow the posts were
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(1300),
        "four events within {:?}, past a limit of 2 a second after a burst of 1",
        started.elapsed()
    );

    // bob closes his stream: the pipe's next outputs are refused, and logged
    settings(json!({"public": {"write": false}})).await;
    let r = send(&s, "POST", "/acme/out", Some(&acme), Some(json!({"n": 4}))).await;
    assert_eq!(r.status(), 201);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let logged = loop {
        let r = send(
            &s,
            "GET",
            "/acme/out/logs/pipe/bob/inbox",
            Some(&acme),
            None,
        )
        .await;
        let logs = s_json(r).await;
        if let Some(entry) = logs.as_array().and_then(|l| l.first()) {
            break entry["data"]["message"].as_str().unwrap().to_owned();
        }
        assert!(std::time::Instant::now() < deadline, "no refusal logged");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(
        logged.contains("may no longer append to /bob/inbox"),
        "{logged}"
    );
    assert_eq!(inbox(&s, &bob, 4).await.len(), 4);
    // a splice of acme's stream neither adds to bob's stream nor recalls from it
    let r = s
        .client
        .post(s.url("/acme/out/splices"))
        .header("authorization", &acme)
        .header("content-type", "application/javascript")
        .body("(e) => ({data: {n: e.data.n, v: 2}})")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    let splice: Value = r.json().await.unwrap();
    assert_eq!(
        splice["preview"]["downstream"]["recalledCount"], 0,
        "{splice}"
    );
    assert_eq!(splice["preview"]["downstream"]["addedCount"], 0, "{splice}");
    let approve = format!(
        "/acme/out/splices/{}/approve",
        splice["id"].as_str().unwrap()
    );
    let r = send(&s, "POST", &approve, Some(&acme), None).await;
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let after = inbox(&s, &bob, 4).await;
    assert_eq!(after.len(), 4, "{after:?}");
    // and bob, who may not manage acme's stream, may remove the pipe into his
    let r = send(&s, "GET", "/acme/out/pipe/bob/inbox", Some(&bob), None).await;
    assert_eq!(r.status(), 403);
    let r = send(&s, "DELETE", "/acme/out/pipe/bob/inbox", Some(&bob), None).await;
    assert!(r.status().is_success(), "{:?}", r.text().await);
    let r = send(&s, "GET", "/acme/out/pipe/bob/inbox", Some(&acme), None).await;
    assert_eq!(r.status(), 404);
    // a third account may not
    let eve = format!("Bearer {}", account(&s, "eve").await);
    let r = send(&s, "PUT", "/acme/out/pipe/acme/copy", Some(&acme), None).await;
    assert_eq!(r.status(), 201);
    let r = send(&s, "DELETE", "/acme/out/pipe/acme/copy", Some(&eve), None).await;
    assert_eq!(r.status(), 403);

    // a pipe from an account's own events into its own stream is that account's
    let r = send(
        &s,
        "PUT",
        "/eddy/events(bob)/pipe/bob/audit",
        Some(&bob),
        None,
    )
    .await;
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    settings(json!({"metadata": {"note": "changed"}})).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let r = send(&s, "GET", "/bob/audit", Some(&bob), None).await;
        if r.status() == 200 && !s_json(r).await.as_array().unwrap().is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no account event piped"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn cron_streams_need_no_credentials_but_refuse_bad_ones() {
    let s = secured().await;
    let acme = format!("Bearer {}", account(&s, "acme").await);
    let cron = "/eddy/cron('*%20*%20*%20*%20*')";
    assert_eq!(send(&s, "GET", cron, None, None).await.status(), 200);
    assert_eq!(send(&s, "GET", cron, Some(&acme), None).await.status(), 200);
    let admin = format!("Bearer {ADMIN}");
    assert_eq!(
        send(&s, "GET", cron, Some(&admin), None).await.status(),
        200
    );
    // as on a public stream: a key that is no one's is 403, an unusable scheme 401
    let r = send(&s, "GET", cron, Some("Bearer eddy_x_wrong"), None).await;
    let body = assert_error(r, 403, "not valid").await;
    assert_eq!(body["rule"], "key");
    let r = send(&s, "GET", cron, Some("Basic YTpi"), None).await;
    let body = assert_error(r, 401, "Basic").await;
    assert_eq!(body["rule"], "credentials");
}

/// A pipe from a cron stream belongs to its destination's account: one who may only
/// append to a public stream can neither make one into it nor change, replay or remove
/// its owner's.
#[tokio::test]
async fn a_cron_pipe_into_a_public_stream_is_its_owners_alone() {
    let s = secured().await;
    let bob = format!("Bearer {}", account(&s, "bob").await);
    let carol = format!("Bearer {}", account(&s, "carol").await);
    let r = send(
        &s,
        "PATCH",
        "/bob/guestbook/settings",
        Some(&bob),
        Some(json!({"public": {"read": true, "write": true}})),
    )
    .await;
    assert!(r.status().is_success(), "{:?}", r.text().await);
    // anyone may append there
    let r = send(&s, "POST", "/bob/guestbook", None, Some(json!({"hi": 1}))).await;
    assert_eq!(r.status(), 201);
    let pipe = "/eddy/cron('0%200%201%201%20*')/pipe/bob/guestbook";
    let put = |path: String, who: Option<String>, code: &'static str| {
        let mut r = s
            .client
            .put(s.url(&path))
            .header("content-type", "application/javascript")
            .body(code);
        if let Some(a) = who {
            r = r.header("authorization", a);
        }
        async move { r.send().await.unwrap() }
    };
    for (who, want) in [(None, 401), (Some(carol.as_str()), 403)] {
        let r = put(
            pipe.into(),
            who.map(str::to_owned),
            "(e) => ({type: 'spam'})",
        )
        .await;
        assert_eq!(r.status(), want, "a cron pipe made by {who:?}");
    }
    let r = put(pipe.into(), Some(bob.clone()), "(e) => ({type: 'tick'})").await;
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    let replay = format!("{pipe}?replay-from=0");
    for (who, want) in [(None, 401), (Some(carol.as_str()), 403)] {
        for path in [pipe, replay.as_str()] {
            let r = put(path.into(), who.map(str::to_owned), "(e) => null").await;
            assert_eq!(r.status(), want, "PUT {path} by {who:?}");
        }
        for method in ["GET", "DELETE"] {
            let r = send(&s, method, pipe, who, None).await;
            assert_eq!(r.status(), want, "{method} by {who:?}");
        }
    }
    // bob's code is still there, and bob may change it
    let r = send(&s, "GET", pipe, Some(&bob), None).await;
    assert_eq!(r.status(), 200);
    let r = put(pipe.into(), Some(bob.clone()), "(e) => ({type: 'tock'})").await;
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
}

#[tokio::test]
async fn an_accounts_own_events_and_cron_streams_are_its_own() {
    let s = secured().await;
    let acme = format!("Bearer {}", account(&s, "acme").await);
    let bob = format!("Bearer {}", account(&s, "bob").await);
    // streams named like the builtin ones, in acme's account
    for path in ["/acme/events(bob)", "/acme/cron('*%20*%20*%20*%20*')"] {
        let r = send(&s, "POST", path, Some(&acme), Some(json!({"secret": 1}))).await;
        assert_eq!(r.status(), 201, "{path}: {:?}", r.text().await);
        assert_eq!(send(&s, "GET", path, Some(&acme), None).await.status(), 200);
        // neither the account named in the args nor anyone else reads them
        assert_eq!(send(&s, "GET", path, Some(&bob), None).await.status(), 403);
        assert_eq!(send(&s, "GET", path, None, None).await.status(), 401);
        let settings = path.split('(').next().unwrap().to_owned() + "/settings";
        let r = send(&s, "GET", &settings, Some(&bob), None).await;
        assert_eq!(r.status(), 403, "{settings}");
    }
    // nor pipes them out
    let r = send(
        &s,
        "PUT",
        "/acme/cron('*%20*%20*%20*%20*')/pipe/bob/copy",
        Some(&bob),
        None,
    )
    .await;
    assert_eq!(r.status(), 403);
}
