//! What only the PostgreSQL backend meets: its connection lost under load. (Every
//! other test of this suite runs on PostgreSQL too, with `EDDY_TEST_BACKEND=postgres`.)

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{ChildServer, client, read_all};

const WRITERS: usize = 8;
const EACH: usize = 60;

/// Appends `EACH` events with ids of their own, retrying a 503 with the same id until
/// it is acknowledged; answers the ids with the index each was acknowledged at.
async fn writer(base: String, w: usize, acked: Arc<Mutex<HashMap<String, u64>>>) -> usize {
    let c = client();
    let mut unavailable = 0;
    for n in 0..EACH {
        let id = uuid::Uuid::new_v4().to_string();
        loop {
            let r = c
                .post(format!("{base}/acme/orders?event-type=placed"))
                .header("Event-Id", &id)
                .json(&json!({"w": w, "n": n}))
                .send()
                .await;
            let Ok(r) = r else { continue };
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            match status {
                200 | 201 => {
                    let index = body["index"].as_u64().expect("an index");
                    acked.lock().unwrap().insert(id.clone(), index);
                    break;
                }
                503 => {
                    assert!(body["error"].is_string(), "a JSON error: {body}");
                    unavailable += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                other => panic!("{other}: {body}"),
            }
        }
    }
    unavailable
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_connection_is_a_503_and_nothing_acknowledged_is_lost() {
    let Some(cluster) = eddy_testpg::shared_cluster() else {
        return;
    };
    let url = cluster.fresh_database("connection_loss").unwrap();
    let db = url.rsplit('/').next().unwrap().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let server = ChildServer::start_postgres(dir.path(), &url, &[]).await;
    // a reducer whose checkpoints (with what it dispatched) fail with the connection
    let r = client()
        .put(format!("{}/acme/orders.seen", server.base))
        .header("Content-Type", "application/javascript")
        .body("(n = 0, e) => { dispatch('audit', { type: 'seen', data: e.data }); return n + 1; }")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    let acked = Arc::new(Mutex::new(HashMap::new()));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| tokio::spawn(writer(server.base.clone(), w, acked.clone())))
        .collect();
    // cut every connection of the server twice while the writers run
    let mut cut = 0;
    for at in [WRITERS * EACH / 4, WRITERS * EACH / 2] {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while acked.lock().unwrap().len() < at {
            assert!(tokio::time::Instant::now() < deadline, "appends stalled");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        cut += cluster.kill_connections(&db).unwrap();
    }
    assert!(cut > 0, "connections were cut");
    let mut unavailable = 0;
    for w in writers {
        unavailable += w.await.unwrap();
    }
    assert!(unavailable > 0, "a cut connection answers 503");
    // every acknowledged event is stored once, at the index it was acknowledged at,
    // and the indexes have no gaps
    let acked = acked.lock().unwrap().clone();
    assert_eq!(acked.len(), WRITERS * EACH);
    let events = loop {
        let r = client()
            .get(format!("{}/acme/orders?limit=10000", server.base))
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            break read_all(&client(), &format!("{}/acme/orders", server.base)).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(events.len(), WRITERS * EACH, "each event once");
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["index"], i as u64, "gapless");
        let id = e["id"].as_str().unwrap();
        assert_eq!(
            acked.get(id),
            Some(&(i as u64)),
            "acknowledged at its index"
        );
    }
    // folded and dispatched exactly once across the failed checkpoints
    let r = client()
        .get(format!(
            "{}/acme/orders.seen?min-index={}&wait=30000",
            server.base,
            WRITERS * EACH - 1
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap(), json!(WRITERS * EACH));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let audit = loop {
        let audit = read_all(&client(), &format!("{}/acme/audit", server.base)).await;
        if audit.len() >= WRITERS * EACH || tokio::time::Instant::now() > deadline {
            break audit;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let origins: std::collections::HashSet<String> =
        audit.iter().map(|e| e["origin"].to_string()).collect();
    assert_eq!(audit.len(), WRITERS * EACH, "each dispatched once");
    assert_eq!(origins.len(), WRITERS * EACH, "one per source event");
}
