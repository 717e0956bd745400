//! Time travel (API §14): `?at=<index>` answers a reducer's state right after the
//! event at that index was folded, from the nearest snapshot, on plain streams and
//! substreams; an index not folded yet is waited for, one past the end is a 404.

use serde_json::{Value, json};

use crate::common::{TestServer, assert_error, query_text, run_sql, spawn_server};
use crate::reducers::deploy;

/// A small random generator (xorshift), seeded from the clock; the seed is printed
/// so that a failing run can be repeated.
struct Rng(u64);

impl Rng {
    fn new() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1;
        println!("seed {seed}");
        Self(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// A reducer whose state depends on every event and its order.
const FOLD: &str = "(s = {n: 0, sum: 0, h: 7}, e, i) => \
    ({n: s.n + 1, sum: s.sum + e.data.v, h: (s.h * 31 + e.data.v + i) % 1000003})";

/// The same fold in Rust: the state after events `0..=at` with values `vs`.
fn expected(vs: &[i64], at: usize) -> Value {
    let (mut n, mut sum, mut h) = (0i64, 0i64, 7i64);
    for (i, v) in vs.iter().enumerate().take(at + 1) {
        n += 1;
        sum += v;
        h = (h * 31 + v + i as i64) % 1_000_003;
    }
    json!({"n": n, "sum": sum, "h": h})
}

async fn append_values(s: &TestServer, path: &str, vs: &[i64]) {
    let batch: Vec<Value> = vs
        .iter()
        .map(|v| json!({"type": "v", "data": {"v": v}}))
        .collect();
    let r = s
        .client
        .post(s.url(path))
        .header("content-type", "application/vnd.eddy.events+json")
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
}

/// `GET {path}?at={at}`: the state and its `Reducer-Index`.
async fn at(s: &TestServer, path: &str, at: u64) -> (Value, i64) {
    let r = s.get(&format!("{path}?at={at}")).await;
    assert_eq!(r.status(), 200, "{path}?at={at}");
    let index = r.headers()["reducer-index"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    (r.json().await.unwrap(), index)
}

#[tokio::test]
async fn at_answers_the_state_of_a_fresh_fold_stopped_there_for_random_indexes() {
    let s = spawn_server().await;
    let r = s
        .call(
            "PUT",
            "/acme/m/settings",
            &[],
            json!({"snapshotEvery": 100}),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(deploy(&s, "/acme/m.fold", FOLD).await.status(), 201);
    let mut rng = Rng::new();
    let vs: Vec<i64> = (0..1500).map(|_| rng.below(1050) as i64 - 50).collect();
    for part in vs.chunks(500) {
        append_values(&s, "/acme/m", part).await;
    }
    let now = s
        .get_json("/acme/m.fold?min-index=1499&wait=20000", 200)
        .await;
    assert_eq!(now, expected(&vs, 1499));
    for _ in 0..100 {
        let i = rng.below(1500) as usize;
        let (state, index) = at(&s, "/acme/m.fold", i as u64).await;
        assert_eq!(state, expected(&vs, i), "at={i}");
        assert_eq!(index, i as i64);
    }
    // the ends: the first event, and a multiple of the snapshot interval
    assert_eq!(at(&s, "/acme/m.fold", 0).await.0, expected(&vs, 0));
    assert_eq!(at(&s, "/acme/m.fold", 1499).await.0, expected(&vs, 1499));
    // a fresh fold stopped at an index: a second reducer deployed with to=
    assert_eq!(deploy(&s, "/acme/m.probe?to=777", FOLD).await.status(), 201);
    let probe = s
        .get_json("/acme/m.probe?min-index=1499&wait=20000", 200)
        .await;
    assert_eq!(at(&s, "/acme/m.fold", 777).await.0, probe);
    // snapshots were saved as the reducer folded: one per 100 events at most (each
    // batch the reducer folds ends with at most one)
    let snapshots: String = query_text(
        s.dir.path(),
        "SELECT CAST(COUNT(*) AS TEXT) FROM reducer_snapshots",
    )
    .await;
    let snapshots: usize = snapshots.parse().unwrap();
    assert!((1..=15).contains(&snapshots), "{snapshots} snapshots");
    // and answers start from them: a snapshot changed behind eddy's back shows
    run_sql(
        s.dir.path(),
        r#"UPDATE reducer_snapshots SET state = '{"n":-100000,"sum":0,"h":0}'"#,
        r#"UPDATE reducer_snapshots SET state = '{"n":-100000,"sum":0,"h":0}'"#,
    )
    .await;
    let tampered = at(&s, "/acme/m.fold", 1499).await.0;
    assert!(tampered["n"].as_i64().unwrap() < 0, "{tampered}");
}

#[tokio::test]
async fn at_reads_substreams_and_reducers_that_read_others() {
    let s = spawn_server().await;
    let r = s
        .call(
            "PUT",
            "/shop/carts/settings",
            &[],
            json!({"factory": true, "snapshotEvery": 100}),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(deploy(&s, "/shop/carts.fold", FOLD).await.status(), 201);
    assert_eq!(
        deploy(
            &s,
            "/shop/carts.twice",
            "(s, e, i, current) => current.fold.sum * 2"
        )
        .await
        .status(),
        201
    );
    let a: Vec<i64> = (0..350).map(|i| i * 3 % 17).collect();
    let b: Vec<i64> = (0..280).map(|i| i * 5 % 23).collect();
    // interleaved, so global positions and substream indexes differ
    for (ca, cb) in a.chunks(50).zip(b.chunks(40)) {
        append_values(&s, "/shop/carts('a')", ca).await;
        append_values(&s, "/shop/carts('b')", cb).await;
    }
    s.get_json("/shop/carts('a').fold?min-index=349&wait=20000", 200)
        .await;
    s.get_json("/shop/carts('b').twice?min-index=279&wait=20000", 200)
        .await;
    for i in [0usize, 99, 100, 101, 250, 349] {
        assert_eq!(
            at(&s, "/shop/carts('a').fold", i as u64).await.0,
            expected(&a, i)
        );
    }
    for i in [0usize, 150, 279] {
        assert_eq!(
            at(&s, "/shop/carts('b').fold", i as u64).await.0,
            expected(&b, i)
        );
        let twice = at(&s, "/shop/carts('b').twice", i as u64).await.0;
        assert_eq!(twice, json!(expected(&b, i)["sum"].as_i64().unwrap() * 2));
    }
    // the factory URL names no one state
    assert_error(s.get("/shop/carts.fold?at=3").await, 400, "substream").await;
    // a reducer that reads another starts from the snapshots they have in common
    // (taken together, as they fold together): once both reducers' are saved (at
    // their next checkpoint), one changed behind eddy's back shows
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let count = query_text(
            s.dir.path(),
            "SELECT CAST(COUNT(*) AS TEXT) FROM reducer_snapshots",
        )
        .await;
        // two reducers, three snapshots of 'a' (350 events) and two of 'b' (280)
        if count == "10" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{count} snapshots");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    run_sql(
        s.dir.path(),
        r#"UPDATE reducer_snapshots SET state = '{"n":-100000,"sum":1000000,"h":0}' WHERE state LIKE '{%'"#,
        r#"UPDATE reducer_snapshots SET state = '{"n":-100000,"sum":1000000,"h":0}' WHERE state LIKE '{%'"#,
    )
    .await;
    let twice = at(&s, "/shop/carts('b').twice", 279).await.0;
    assert!(twice.as_i64().unwrap() > 2_000_000, "{twice}");
}

#[tokio::test]
async fn at_past_the_end_is_a_404_and_an_index_not_folded_yet_is_waited_for() {
    let s = spawn_server().await;
    assert_eq!(deploy(&s, "/acme/w.fold", FOLD).await.status(), 201);
    append_values(&s, "/acme/w", &[1, 2, 3]).await;
    let body = assert_error(s.get("/acme/w.fold?at=3").await, 404, "ends at index 2").await;
    assert_eq!(body["last"], 2);
    assert_error(s.get("/acme/w.fold?at=x").await, 400, "at").await;
    assert_error(
        s.get("/acme/w.fold?at=1&min-index=1").await,
        400,
        "cannot be combined",
    )
    .await;
    assert_error(s.get("/acme/w.nope?at=1").await, 404, "nope").await;
    // appended and asked for at once: the answer includes it
    append_values(&s, "/acme/w", &[10]).await;
    assert_eq!(
        at(&s, "/acme/w.fold", 3).await.0,
        expected(&[1, 2, 3, 10], 3)
    );
    assert_eq!(at(&s, "/acme/w.fold", 1).await.0, expected(&[1, 2], 1));
    // a bad setting is refused, naming it
    let r = s
        .call(
            "PATCH",
            "/acme/w/settings",
            &[],
            json!({"snapshotEvery": 5}),
        )
        .await;
    assert_error(r, 400, "snapshotEvery").await;
}

/// `?at=` an index the reducer has not folded yet waits for the reducer's own fold, as
/// `min-index` does: once it answers, the reducer's state is at that index too.
#[tokio::test]
async fn at_an_index_the_reducer_is_still_folding_waits_for_it() {
    let s = crate::common::spawn_server_with(|c| c.reducer_time_ms = 2000).await;
    // slow on purpose (about 10-40 ms per event): the reducer is behind when asked
    let slow = "(s = {n: 0, sum: 0, h: 7}, e, i) => { let x = 0; \
                for (let k = 0; k < 400000; k++) x += k; \
                return {n: s.n + 1, sum: s.sum + e.data.v, h: (s.h * 31 + e.data.v + i) % 1000003} }";
    assert_eq!(deploy(&s, "/acme/slow.fold", slow).await.status(), 201);
    let vs: Vec<i64> = (0..40).map(|v| v * 3 + 1).collect();
    append_values(&s, "/acme/slow", &vs).await;
    let r = s.get("/acme/slow.fold").await;
    let behind: i64 = r.headers()["reducer-index"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(behind < 39, "the reducer was not behind: {behind}");
    let (state, index) = at(&s, "/acme/slow.fold", 39).await;
    assert_eq!((state, index), (expected(&vs, 39), 39));
    let r = s.get("/acme/slow.fold").await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["reducer-index"],
        "39",
        "folded before the answer"
    );
    assert_eq!(r.json::<Value>().await.unwrap(), expected(&vs, 39));
}
