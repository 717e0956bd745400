//! Bounded connections over real TCP: slowloris heads and header floods are cut off,
//! idle connections past the limit make room for new ones, idle keep-alives close,
//! slow bodies are answered 408, while `/healthz` keeps answering.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{TestServer, spawn_server_with};

fn addr(s: &TestServer) -> String {
    s.base.trim_start_matches("http://").to_owned()
}

/// `/healthz` from a new connection answers 200 within `within`.
async fn healthz_answers(s: &TestServer, within: Duration) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let started = Instant::now();
    let r = tokio::time::timeout(within, client.get(s.url("/healthz")).send())
        .await
        .expect("/healthz answers in time")
        .expect("/healthz");
    assert_eq!(r.status(), 200);
    assert!(started.elapsed() < within);
}

/// Reads until the server closes the connection (EOF or reset) or `limit` passes;
/// answers what was read and whether it closed.
async fn read_until_closed(tcp: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Err(_) => return (got, false),
            Ok(Ok(0)) | Ok(Err(_)) => return (got, true),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_heads_are_cut_off_while_healthz_answers() {
    let s = spawn_server_with(|c| c.header_read_timeout_ms = 1_000).await;
    let started = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..50 {
        let a = addr(&s);
        clients.push(tokio::spawn(async move {
            let mut tcp = TcpStream::connect(&a).await.expect("connect");
            tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .await
                .expect("write");
            // one byte a second, until the server hangs up (at most 10 s)
            for _ in 0..10 {
                if tcp.write_all(b"a").await.is_err() {
                    return Instant::now();
                }
                let mut b = [0u8; 64];
                match tokio::time::timeout(Duration::from_secs(1), tcp.read(&mut b)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => return Instant::now(),
                    _ => {}
                }
            }
            panic!("a slowloris client was still connected after 10 s");
        }));
    }
    healthz_answers(&s, Duration::from_secs(5)).await;
    for c in clients {
        let closed = c.await.expect("client");
        let after = closed - started;
        // the header timeout (1 s) with room for a loaded machine; never the 10 s
        assert!(after < Duration::from_millis(6_000), "cut after {after:?}");
    }
    healthz_answers(&s, Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_floods_are_refused_at_the_header_limit() {
    let s = spawn_server_with(|c| c.max_header_bytes = 8192).await;
    let mut clients = Vec::new();
    for _ in 0..100 {
        let a = addr(&s);
        clients.push(tokio::spawn(async move {
            let mut tcp = TcpStream::connect(&a).await.expect("connect");
            let mut head = b"GET /healthz HTTP/1.1\r\nHost: x\r\n".to_vec();
            // 200 KB of headers that never end
            for i in 0..2_000 {
                head.extend_from_slice(format!("X-Pad-{i}: {}\r\n", "a".repeat(90)).as_bytes());
            }
            // the server may hang up before all of it is written
            let _ = tcp.write_all(&head).await;
            let (got, closed) = read_until_closed(&mut tcp, Duration::from_secs(5)).await;
            let text = String::from_utf8_lossy(&got).into_owned();
            assert!(
                closed,
                "the server kept a connection with 200 KB of unfinished headers open"
            );
            assert!(
                got.is_empty() || text.starts_with("HTTP/1.1 431"),
                "answer to a header flood: {text}"
            );
        }));
    }
    healthz_answers(&s, Duration::from_secs(5)).await;
    for c in clients {
        c.await.expect("client");
    }
    // a request whose headers fit is served as before
    let r = s
        .client
        .get(s.url("/healthz"))
        .header("X-Pad", "a".repeat(4000))
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_past_the_limit_make_room_for_new_ones() {
    let s = spawn_server_with(|c| {
        c.max_connections = 50;
        // only the limit closes them within this test
        c.header_read_timeout_ms = 60_000;
        c.idle_timeout_ms = 60_000;
    })
    .await;
    let mut idle = Vec::new();
    for _ in 0..200 {
        idle.push(TcpStream::connect(addr(&s)).await.expect("connect"));
    }
    healthz_answers(&s, Duration::from_secs(5)).await;
    let mut closed = 0;
    for tcp in &mut idle {
        if read_until_closed(tcp, Duration::from_millis(20)).await.1 {
            closed += 1;
        }
    }
    // 200 idle and one /healthz against a limit of 50: the oldest were closed
    assert!(
        closed >= 150,
        "only {closed} of 200 idle connections closed"
    );
    // the newest idle connection is still served
    let tcp = idle.last_mut().expect("one");
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let (got, _) = read_until_closed(tcp, Duration::from_secs(2)).await;
    assert!(
        String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_closes_after_the_idle_timeout_not_the_header_timeout() {
    let s = spawn_server_with(|c| {
        c.header_read_timeout_ms = 300;
        c.idle_timeout_ms = 1_500;
    })
    .await;
    let mut tcp = TcpStream::connect(addr(&s)).await.expect("connect");
    let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    tcp.write_all(request).await.expect("write");
    let mut buf = [0u8; 1024];
    let n = tcp.read(&mut buf).await.expect("read");
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    // idle past the header timeout, within the idle one: still served
    tokio::time::sleep(Duration::from_millis(700)).await;
    tcp.write_all(request).await.expect("write");
    let n = tcp.read(&mut buf).await.expect("read");
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "kept alive");
    let idle_from = Instant::now();
    let (_, closed) = read_until_closed(&mut tcp, Duration::from_secs(8)).await;
    assert!(closed, "idle keep-alive connection left open");
    // the idle timeout (1.5 s), not the header one (0.3 s), with room for a slow read
    let after = idle_from.elapsed();
    assert!(
        after >= Duration::from_millis(1_000) && after < Duration::from_millis(5_000),
        "closed after {after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_are_answered_408() {
    let s = spawn_server_with(|c| c.body_read_timeout_ms = 1_000).await;
    // a single event whose body trickles in
    let mut tcp = TcpStream::connect(addr(&s)).await.expect("connect");
    tcp.write_all(
        b"POST /acme/slow HTTP/1.1\r\nHost: x\r\nEvent-Type: t\r\n\
          Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"a\":",
    )
    .await
    .expect("write");
    let started = Instant::now();
    let (mut rd, mut wr) = tcp.into_split();
    let trickle = tokio::spawn(async move {
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if wr.write_all(b" ").await.is_err() {
                break;
            }
        }
    });
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while let Ok(Ok(n @ 1..)) =
        tokio::time::timeout(Duration::from_secs(4), rd.read(&mut buf)).await
    {
        got.extend_from_slice(&buf[..n]);
        if got.windows(4).any(|w| w == b"\r\n\r\n") && got.ends_with(b"}") {
            break;
        }
    }
    trickle.abort();
    let text = String::from_utf8_lossy(&got).into_owned();
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("application/json"), "{text}");
    assert!(text.contains("did not arrive within 1000 ms"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(8));
    // nothing was stored
    let r = s.get("/acme/slow").await;
    assert_eq!(r.status(), 404);

    // an NDJSON stream may take long in total, but not pause past the timeout
    let mut tcp = TcpStream::connect(addr(&s)).await.expect("connect");
    tcp.write_all(
        b"POST /acme/lines HTTP/1.1\r\nHost: x\r\nEvent-Type: t\r\n\
          Content-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n",
    )
    .await
    .expect("write");
    for i in 0..4 {
        let line = format!("{{\"i\":{i}}}\n");
        tcp.write_all(format!("{:x}\r\n{line}\r\n", line.len()).as_bytes())
            .await
            .expect("write");
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    // then silence
    let (got, _) = read_until_closed(&mut tcp, Duration::from_secs(4)).await;
    let text = String::from_utf8_lossy(&got).into_owned();
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("sent nothing for 1000 ms"), "{text}");
    assert!(text.contains("\"count\":4"), "{text}");
    let events = crate::common::read_all(&s.client, &s.url("/acme/lines")).await;
    assert_eq!(events.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_head_on_a_kept_alive_connection_is_cut_off_too() {
    let s = spawn_server_with(|c| {
        c.header_read_timeout_ms = 400;
        c.idle_timeout_ms = 10_000;
    })
    .await;
    let mut tcp = TcpStream::connect(addr(&s)).await.expect("connect");
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 1024];
    let n = tcp.read(&mut buf).await.expect("read");
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    // the next head trickles in: it has the header timeout, not the idle one
    let started = Instant::now();
    let (mut rd, mut wr) = tcp.into_split();
    let trickle = tokio::spawn(async move {
        for b in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaa" {
            if wr.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let r = tokio::time::timeout(Duration::from_secs(5), rd.read(&mut buf)).await;
    let after = started.elapsed();
    trickle.abort();
    assert!(matches!(r, Ok(Ok(0)) | Ok(Err(_))), "closed: {r:?}");
    // the header timeout (0.4 s), far from the idle one (10 s)
    assert!(after < Duration::from_millis(5_000), "cut after {after:?}");
}
