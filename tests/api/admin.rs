//! The admin API's edges (API §9): a wrong method is a 405 naming the methods the
//! endpoint takes, any other `/api` path is a JSON 404 (with or without an admin
//! token), and key creation refuses fields it does not know.

use serde_json::{Value, json};

use crate::access::{ADMIN, account, secured, send};
use crate::common::{assert_error, spawn_server};

#[tokio::test]
async fn wrong_methods_name_the_methods_really_allowed() {
    let s = secured().await;
    account(&s, "acme").await;
    let admin = format!("Bearer {ADMIN}");
    for (method, path, allow) in [
        ("DELETE", "/api/accounts", "GET, HEAD, POST"),
        ("PUT", "/api/accounts", "GET, HEAD, POST"),
        ("DELETE", "/api/accounts/acme/keys", "GET, HEAD, POST"),
        ("PUT", "/api/accounts/acme/keys", "GET, HEAD, POST"),
        ("GET", "/api/accounts/acme/keys/k1", "DELETE"),
        ("POST", "/healthz", "GET, HEAD"),
        ("POST", "/metrics", "GET, HEAD"),
    ] {
        let r = send(&s, method, path, Some(&admin), None).await;
        let header = r.headers()["allow"].to_str().unwrap().to_owned();
        assert_eq!(header, allow, "{method} {path}");
        let v = assert_error(r, 405, &format!("allowed: {allow}")).await;
        let msg = v["error"].as_str().unwrap();
        assert!(msg.contains(&format!("method {method}")), "{msg}");
        assert_eq!(v["allow"], allow);
    }
}

#[tokio::test]
async fn unknown_admin_paths_are_json_404s() {
    let s = secured().await;
    account(&s, "acme").await;
    let admin = format!("Bearer {ADMIN}");
    for (method, path) in [
        ("GET", "/api/accounts/acme"),
        ("DELETE", "/api/accounts/acme"),
        ("GET", "/api/accounts/acme/keys/k1/more"),
        ("GET", "/api/nothing"),
        ("GET", "/api"),
        ("GET", "/%61pi/accounts/acme"),
    ] {
        for auth in [Some(admin.as_str()), None] {
            let r = send(&s, method, path, auth, None).await;
            assert_error(r, 404, "no such admin endpoint").await;
        }
    }
}

#[tokio::test]
async fn an_open_server_has_no_admin_api_at_any_path_or_method() {
    let s = spawn_server().await;
    for (method, path) in [
        ("POST", "/api/accounts"),
        ("DELETE", "/api/accounts"),
        ("GET", "/api/accounts/acme"),
        ("DELETE", "/api/accounts/acme/keys"),
        ("GET", "/api/accounts/acme/keys"),
        ("GET", "/api/whatever/else"),
    ] {
        let r = send(&s, method, path, None, None).await;
        assert!(r.headers().get("allow").is_none(), "{method} {path}");
        assert_error(r, 404, "needs an admin token").await;
    }
}

#[tokio::test]
async fn key_creation_refuses_unknown_fields() {
    let s = secured().await;
    let own = format!("Bearer {}", account(&s, "acme").await);
    let post = |body: &'static str| {
        s.client
            .post(s.url("/api/accounts/acme/keys"))
            .header("authorization", &own)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let v = assert_error(post(r#"{"name": "ci"}"#).await.unwrap(), 400, "\"name\"").await;
    assert_eq!(v["field"], "name");
    assert_error(post("[1]").await.unwrap(), 400, "empty or {}").await;
    assert_error(post("{").await.unwrap(), 400, "empty or {}").await;
    for ok in ["", "{}", " {} "] {
        let r = post(ok).await.unwrap();
        assert_eq!(r.status(), 201, "body {ok:?}");
        let v: Value = r.json().await.unwrap();
        assert!(v["key"].as_str().unwrap().starts_with("eddy_"), "{v}");
    }
    // nothing was made by the refused ones: the first key and the three above
    let r = send(&s, "GET", "/api/accounts/acme/keys", Some(&own), None).await;
    assert_eq!(
        r.json::<Value>().await.unwrap().as_array().unwrap().len(),
        4
    );
}

#[tokio::test]
async fn the_account_listing_shows_each_caller_what_it_may_see() {
    // open: the accounts that have streams
    let s = spawn_server().await;
    assert_eq!(s.get_json("/api/accounts", 200).await, json!([]));
    s.post_ok("/zeta/a", "x", json!({})).await;
    s.post_ok("/acme/a", "x", json!({})).await;
    s.post_ok("/acme/b", "x", json!({})).await;
    assert_eq!(
        s.get_json("/api/accounts", 200).await,
        json!([
            {"name": "acme", "streams": 2, "events": 2},
            {"name": "zeta", "streams": 1, "events": 1}
        ])
    );
    assert_error(s.get("/api/accounts?all=1").await, 400, "all=1").await;

    // with access control: every account for the admin, its own for a key
    let s = secured().await;
    let acme = format!("Bearer {}", account(&s, "acme").await);
    account(&s, "bob").await;
    let admin = format!("Bearer {ADMIN}");
    let list = |auth: Option<String>| {
        let s = &s;
        async move { send(s, "GET", "/api/accounts", auth.as_deref(), None).await }
    };
    let all: Value = list(Some(admin)).await.json().await.unwrap();
    let nothing = |name: &str| json!({"name": name, "streams": 0, "events": 0});
    assert_eq!(all, json!([nothing("acme"), nothing("bob")]));
    let own: Value = list(Some(acme)).await.json().await.unwrap();
    assert_eq!(own, json!([nothing("acme")]));
    assert_error(list(None).await, 401, "admin token").await;
    assert_error(list(Some("Bearer eddy_x_wrong".into())).await, 403, "").await;
    let r = list(Some("Basic YTpi".into())).await;
    assert_eq!(r.status(), 401);
}
