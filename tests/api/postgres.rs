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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reducer_deployed_while_the_connections_are_cut_loads_once_they_are_back() {
    let Some(cluster) = eddy_testpg::shared_cluster() else {
        return;
    };
    let url = cluster.fresh_database("load_after_loss").unwrap();
    let db = url.rsplit('/').next().unwrap().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let server = ChildServer::start_postgres(dir.path(), &url, &[]).await;
    let post = |n: u64| {
        let base = server.base.clone();
        async move {
            loop {
                let r = client()
                    .post(format!("{base}/acme/n"))
                    .header("Event-Type", "n")
                    .json(&json!({ "n": n }))
                    .send()
                    .await
                    .unwrap();
                match r.status().as_u16() {
                    201 => return,
                    503 => tokio::time::sleep(Duration::from_millis(20)).await,
                    other => panic!("an append answered {other}"),
                }
            }
        }
    };
    for n in 0..5 {
        post(n).await;
    }
    // a reducer thread's connection is cut before it loads what is deployed next
    assert!(cluster.kill_connections(&db).unwrap() > 0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = client()
            .put(format!("{}/acme/n.count", server.base))
            .header("Content-Type", "application/javascript")
            .body("(c = 0) => c + 1")
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            201 => break,
            503 => assert!(tokio::time::Instant::now() < deadline, "deploy refused"),
            other => panic!("the deploy answered {other}: {:?}", r.text().await),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    post(5).await;
    // the reducer loads on a later try, folds everything, and goes on folding
    let r = client()
        .get(format!(
            "{}/acme/n.count?min-index=5&wait=20000",
            server.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    assert_eq!(r.json::<Value>().await.unwrap(), json!(6));
}

/// A TCP relay to PostgreSQL at `target` on `port` (0: any), that can be cut: the
/// listener and every relayed connection end when the returned sender is dropped.
async fn relay(port: u16, target: String) -> (u16, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let (cut, mut cut_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let mut links = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                _ = &mut cut_rx => break,
                accepted = listener.accept() => {
                    let Ok((mut inbound, _)) = accepted else { break };
                    let target = target.clone();
                    links.spawn(async move {
                        if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                }
            }
        }
        // dropping the set aborts every relayed connection
        drop(links);
    });
    (port, cut)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_answers_503_while_the_node_cannot_reach_postgresql() {
    let Some(cluster) = eddy_testpg::shared_cluster() else {
        return;
    };
    let url = cluster.fresh_database("healthz_cut").unwrap();
    // postgres://user@127.0.0.1:PORT/db, reached through the relay
    let (head, db) = url.rsplit_once('/').unwrap();
    let target = head.rsplit_once('@').unwrap().1.to_owned();
    let (port, cut) = relay(0, target.clone()).await;
    let relayed = format!("{}@127.0.0.1:{port}/{db}", head.rsplit_once('@').unwrap().0);
    let dir = tempfile::tempdir().unwrap();
    let server = ChildServer::start_postgres(dir.path(), &relayed, &["--lease-ms", "1000"]).await;
    let health = || async {
        let r = client()
            .get(format!("{}/healthz", server.base))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json::<Value>().await.unwrap())
    };
    assert_eq!(health().await.0, 200);
    drop(cut);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let body = loop {
        let (status, body) = health().await;
        if status == 503 {
            break body;
        }
        assert_eq!(status, 200, "{body}");
        assert!(tokio::time::Instant::now() < deadline, "still healthy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(body["status"], "unavailable");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("has not written its heartbeat"),
        "{body}"
    );
    // back once the database is
    let (_, _cut) = relay(port, target).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while health().await.0 != 200 {
        assert!(tokio::time::Instant::now() < deadline, "not healthy again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
