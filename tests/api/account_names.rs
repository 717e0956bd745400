//! Account names are names a factory argument reads back as the account (API §1):
//! `123`, `1e5`, `null` are refused up front with a 400, so every account can name its
//! account substreams (`/eddy/events({acct})` among them), and a database that an
//! all-digit account once broke is repaired at start.

use serde_json::json;

use crate::access::{ADMIN, secured, send};
use crate::common::{assert_error, query_text, run_sql, spawn_server};
use crate::pipes::wait_for_events;

#[tokio::test]
async fn names_that_read_as_numbers_or_keywords_are_refused_and_break_nothing() {
    let s = spawn_server().await;
    let r = s.post("/123/s", "t", json!(1)).await;
    assert_error(
        r,
        400,
        "account name \"123\" reads as a number in factory arguments",
    )
    .await;
    for (path, needle) in [
        ("/1e5/s", "reads as a number"),
        ("/-7/s", "reads as a number"),
        ("/null/s", "is a keyword"),
    ] {
        assert_error(s.post(path, "t", json!(1)).await, 400, needle).await;
    }
    // nothing was half made: other accounts' streams and their account events work
    s.post_ok("/acme/s", "t", json!(1)).await;
    s.post_ok("/a123/s", "t", json!(1)).await;
    let events = wait_for_events(&s.base, "/eddy/events(acme)", 1).await;
    assert_eq!(events[0]["type"], "stream-created");
    assert_eq!(events[0]["data"]["stream"], "acme/s");
    wait_for_events(&s.base, "/eddy/events('a123')", 1).await;
    // reads name the rule too, and the quoted form of the builtin stream as well
    assert_error(s.get("/123/s").await, 400, "reads as a number").await;
    assert_error(s.get("/eddy/events('123')").await, 400, "reads as a number").await;

    // with access control, accounts cannot be created under such names either
    let s = secured().await;
    let admin = format!("Bearer {ADMIN}");
    for name in ["123", "true"] {
        let r = send(
            &s,
            "POST",
            "/api/accounts",
            Some(&admin),
            Some(json!({"name": name})),
        )
        .await;
        assert_error(r, 400, "factory arguments").await;
    }
    let r = send(
        &s,
        "POST",
        "/api/accounts",
        Some(&admin),
        Some(json!({"name": "acme"})),
    )
    .await;
    assert_eq!(r.status(), 201);
}

/// The rows an all-digit account left before names were checked: its stream, the
/// account event written to a *plain* stream `eddy/events`, and a stream of `acme`
/// written half (its account event was refused by that plain stream).
const BROKEN: &str = "
    INSERT INTO streams (id, account, name, factory, settings, created_at) VALUES
        (101, '123', 's', 0, '{}', 1), (102, 'eddy', 'events', 0, '{}', 1),
        (103, 'acme', 's', 0, '{}', 1);
    INSERT INTO substreams (id, stream_id, args, event_count, last_index, created_at) VALUES
        (201, 101, '', 1, 0, 1), (202, 102, '', 1, 0, 1);
    INSERT INTO events (pos, factory_id, sid, idx, eid, cid, type, ts, content_type, data)
    VALUES
        (1, NULL, 202, 0, randomblob(16), NULL, 'stream-created', 1, 'application/json',
         '{\"stream\":\"123/s\",\"factory\":false}'),
        (2, NULL, 201, 0, randomblob(16), NULL, 't', 1, 'application/json', '1');
";

/// [`BROKEN`] in PostgreSQL's types.
const BROKEN_POSTGRES: &str = "
    INSERT INTO streams (id, account, name, factory, settings, created_at) VALUES
        (101, '123', 's', FALSE, '{}', 1), (102, 'eddy', 'events', FALSE, '{}', 1),
        (103, 'acme', 's', FALSE, '{}', 1);
    INSERT INTO substreams (id, stream_id, args, event_count, last_index, created_at) VALUES
        (201, 101, '', 1, 0, 1), (202, 102, '', 1, 0, 1);
    INSERT INTO events (pos, factory_id, sid, idx, eid, cid, type, ts, content_type, data)
    VALUES
        (1, NULL, 202, 0, decode(md5(random()::text), 'hex'), NULL, 'stream-created', 1, 'application/json',
         '{\"stream\":\"123/s\",\"factory\":false}'),
        (2, NULL, 201, 0, decode(md5(random()::text), 'hex'), NULL, 't', 1, 'application/json', '1');
";

#[tokio::test]
async fn a_database_broken_by_an_all_digit_account_is_repaired_at_start() {
    let mut s = spawn_server().await;
    s.stop().await;
    run_sql(s.dir.path(), BROKEN, BROKEN_POSTGRES).await;
    s.restart().await;
    // the half-made stream and new ones are appended to, with their account events
    s.post_ok("/acme/s", "t", json!(1)).await;
    s.post_ok("/acme/t", "t", json!(1)).await;
    s.post_ok("/other/u", "t", json!(1)).await;
    let events = wait_for_events(&s.base, "/eddy/events(acme)", 1).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["data"]["stream"], "acme/t");
    wait_for_events(&s.base, "/eddy/events(other)", 1).await;
    assert_eq!(
        s.get_json("/acme/s", 200).await.as_array().unwrap().len(),
        1
    );
    // the plain stream was kept under an internal name, and stays repaired
    let kept = query_text(s.dir.path(), "SELECT name FROM streams WHERE id = 102").await;
    assert_eq!(kept, "events/unusable-102");
    s.restart().await;
    s.post_ok("/acme/v", "t", json!(1)).await;
    wait_for_events(&s.base, "/eddy/events(acme)", 2).await;
}
