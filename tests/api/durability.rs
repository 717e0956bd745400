//! Durability with real processes: an acknowledged event survives `kill -9`, and a
//! SIGTERM finishes what was accepted before the process exits.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::common::{ChildServer, read_all};

/// Runs `writers` concurrent writers against `base` until they fail; returns each
/// acknowledged (stream, index, id).
fn start_writers(
    base: &str,
    writers: usize,
    acked: Arc<Mutex<Vec<(String, u64, String)>>>,
    count: Arc<AtomicUsize>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..writers)
        .map(|w| {
            let (base, acked, count) = (base.to_owned(), acked.clone(), count.clone());
            tokio::spawn(async move {
                let client = {
                    crate::common::tls_ready();
                    reqwest::Client::builder()
                }
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap();
                // half the writers share a plain stream, half write their own substream
                let stream = if w % 2 == 0 {
                    "/d/log".to_owned()
                } else {
                    format!("/d/f('w{w}')")
                };
                for i in 0.. {
                    let id = uuid::Uuid::new_v4().to_string();
                    let r = client
                        .post(format!("{base}{stream}"))
                        .header("Event-Type", "t")
                        .header("Event-Id", &id)
                        .json(&json!({"w": w, "i": i}))
                        .send()
                        .await;
                    let Ok(r) = r else { return };
                    if r.status() != 201 {
                        return;
                    }
                    let Ok(b) = r.json::<Value>().await else {
                        return;
                    };
                    acked
                        .lock()
                        .await
                        .push((stream.clone(), b["index"].as_u64().unwrap(), id));
                    count.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect()
}

/// Every acknowledged event is stored exactly once at its index, and every
/// (sub)stream's indexes are gapless from 0.
async fn assert_all_acknowledged_present(base: &str, acked: &[(String, u64, String)]) {
    let client = crate::common::client();
    let mut streams: Vec<&str> = acked.iter().map(|a| a.0.as_str()).collect();
    streams.sort_unstable();
    streams.dedup();
    for stream in streams {
        let events = read_all(&client, &format!("{base}{stream}")).await;
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e["index"], i as u64, "{stream}: gap or reorder at {i}");
        }
        let mut ids: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
        for (_, index, id) in acked.iter().filter(|a| a.0 == stream) {
            assert_eq!(
                events[*index as usize]["id"],
                id.as_str(),
                "{stream}: acknowledged event {index} lost"
            );
        }
        let n = ids.len();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), n, "{stream}: an event is stored twice");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let server = ChildServer::start(dir.path()).await;
    let acked = Arc::new(Mutex::new(Vec::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let writers = start_writers(&server.base, 8, acked.clone(), count.clone());
    while count.load(Ordering::SeqCst) < 400 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.signal("-KILL");
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().await.clone();
    assert!(acked.len() >= 400);
    let mut server = server;
    let _ = server.child.wait().await;
    let restarted = ChildServer::start(dir.path()).await;
    assert_all_acknowledged_present(&restarted.base, &acked).await;
    // and the log goes on from where it stopped
    let r = crate::common::client()
        .post(format!("{}/d/log", restarted.base))
        .header("Event-Type", "t")
        .json(&1)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_accepted_writes_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ChildServer::start(dir.path()).await;
    let acked = Arc::new(Mutex::new(Vec::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let writers = start_writers(&server.base, 8, acked.clone(), count.clone());
    while count.load(Ordering::SeqCst) < 200 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.signal("-TERM");
    let status = tokio::time::timeout(Duration::from_secs(20), server.child.wait())
        .await
        .expect("exits")
        .unwrap();
    assert!(status.success(), "eddy exited with {status}");
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().await.clone();
    let restarted = ChildServer::start(dir.path()).await;
    assert_all_acknowledged_present(&restarted.base, &acked).await;
}
