//! The browser checks: `examples/eventsource.html` opened in headless Chromium subscribes
//! with a real `EventSource` (cross-origin, from a file:// page) and, once it has seen
//! `n` events, POSTs what it saw to `<stream>-seen`, which the test reads back;
//! `examples/live-state.html` does the same with a reducer's live state.
//!
//! Chromium is `EDDY_CHROMIUM`, else `chromium`, `chromium-browser` or `google-chrome`
//! on PATH; without one the check is skipped (`.ci/run` installs Debian's `chromium`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::process::Command;

use crate::common::{TestServer, spawn_server};

/// Chromium, or `None` (the check is skipped, said on stderr) where none is installed;
/// with `EDDY_REQUIRE_BROWSER=1` (set by `.ci/run`) a missing one fails the test.
fn chromium() -> Option<PathBuf> {
    let found = find_chromium();
    if found.is_none() {
        assert!(
            std::env::var("EDDY_REQUIRE_BROWSER").as_deref() != Ok("1"),
            "EDDY_REQUIRE_BROWSER=1, yet no Chromium is installed"
        );
        // straight to stderr, past the test harness's capture, so it shows in CI logs
        let _ = writeln!(
            std::io::stderr(),
            "browser check SKIPPED: no Chromium installed (set EDDY_CHROMIUM, or put \
             chromium, chromium-browser or google-chrome on PATH)"
        );
    }
    found
}

fn find_chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("EDDY_CHROMIUM").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|p| p.is_file())
}

/// The last lines of Chromium's log, for failure messages (without the D-Bus noise of
/// a machine with no desktop session).
fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.contains("dbus")).collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Waits for the page's first report of `kind` in the stream `reports` (a long-poll)
/// and returns its JSON.
async fn report(
    s: &TestServer,
    reports: &str,
    kind: &str,
    browser: &mut tokio::process::Child,
    log: &Path,
    deadline: Instant,
) -> Value {
    loop {
        let seen = s
            .get_json(&format!("{reports}?type={kind}&wait=10000"), 200)
            .await;
        if let Some(first) = seen.as_array().and_then(|a| a.first()) {
            let text = first["data"].as_str().expect("text/plain data is a string");
            return serde_json::from_str::<Value>(text).expect("the report is JSON");
        }
        if let Some(status) = browser.try_wait().expect("chromium status") {
            panic!(
                "chromium exited ({status}) before the page reported {kind}; its log:\n{}",
                log_tail(log)
            );
        }
        assert!(
            Instant::now() < deadline,
            "no {kind} report from the page within 30 s; chromium's log:\n{}",
            log_tail(log)
        );
    }
}

#[tokio::test]
async fn eventsource_page_in_headless_chromium() {
    let Some(chromium) = chromium() else {
        return;
    };
    let page = std::fs::canonicalize(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/eventsource.html"
    ))
    .expect("examples/eventsource.html");

    let s = spawn_server().await;
    let posted: Vec<Value> = (0..4)
        .map(|i| json!({"x": i, "label": format!("click {i}")}))
        .collect();
    // two events before the page opens (it reads from=0), two after it is launched
    for d in &posted[..2] {
        s.post_ok("/acme/clicks", "click", d.clone()).await;
    }

    let url = format!(
        "file://{}?server={}&stream=/acme/clicks&n=4",
        page.display(),
        s.base
    );
    let (mut browser, profile) = launch(&chromium, &url);
    let log = profile.path().join("chromium.log");
    let started = Instant::now();

    // the page says when its EventSource is open: the last two events then come live
    let deadline = started + Duration::from_secs(30);
    let reports = "/acme/clicks-seen";
    report(&s, reports, "ready", &mut browser, &log, deadline).await;
    for d in &posted[2..] {
        s.post_ok("/acme/clicks", "click", d.clone()).await;
    }
    let summary = report(&s, reports, "seen", &mut browser, &log, deadline).await;
    println!(
        "browser check: the page in {} reported {:.1} s after launch",
        chromium.display(),
        started.elapsed().as_secs_f32()
    );

    assert_eq!(summary["ids"], json!([0, 1, 2, 3]), "{summary}");
    assert_eq!(summary["data"], Value::Array(posted), "{summary}");

    browser.kill().await.expect("kill chromium");
}

/// `examples/live-state.html` watches a reducer's state with a real `EventSource`: the
/// state as it is, then each new one, with the folded index as `id:`.
#[tokio::test]
async fn live_state_page_in_headless_chromium() {
    let Some(chromium) = chromium() else {
        return;
    };
    let page = std::fs::canonicalize(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/live-state.html"
    ))
    .expect("examples/live-state.html");
    let s = spawn_server().await;
    let r = crate::reducers::deploy(&s, "/acme/taps.count", "(n = 0, e) => n + 1").await;
    assert_eq!(r.status(), 201);
    s.post_ok("/acme/taps", "tap", json!({})).await;
    s.get_json("/acme/taps.count?min-index=0&wait=10000", 200)
        .await;
    let url = format!(
        "file://{}?server={}&state=/acme/taps.count&until=3",
        page.display(),
        s.base
    );
    let (mut browser, profile) = launch(&chromium, &url);
    let log = profile.path().join("chromium.log");
    let deadline = Instant::now() + Duration::from_secs(30);
    let reports = "/acme/taps-seen";
    report(&s, reports, "ready", &mut browser, &log, deadline).await;
    for _ in 0..2 {
        s.post_ok("/acme/taps", "tap", json!({})).await;
    }
    let seen = report(&s, reports, "seen", &mut browser, &log, deadline).await;
    // the state when the page opened, then newer ones only (two folds may come as one)
    let ids: Vec<i64> = seen["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_i64().unwrap())
        .collect();
    let states: Vec<i64> = seen["states"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(ids.first(), Some(&0), "{seen}");
    assert_eq!(ids.last(), Some(&2), "{seen}");
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{seen}");
    assert!(
        ids.iter().zip(&states).all(|(i, n)| *n == i + 1),
        "each state is the one at its id: {seen}"
    );
    browser.kill().await.expect("kill chromium");
}

/// Starts headless Chromium on `url` with a profile (and its log, `chromium.log`) in a
/// directory of its own, which the caller keeps while the browser runs.
fn launch(chromium: &Path, url: &str) -> (tokio::process::Child, tempfile::TempDir) {
    let profile = tempfile::tempdir().expect("profile dir");
    let log = profile.path().join("chromium.log");
    let browser = Command::new(chromium)
        .args([
            "--headless=new",
            "--no-sandbox", // as root in a container, the sandbox cannot start
            "--disable-gpu",
            "--disable-dev-shm-usage", // containers often have a tiny /dev/shm
            "--no-first-run",
            "--enable-logging=stderr",
        ])
        .arg(format!(
            "--user-data-dir={}",
            profile.path().join("profile").display()
        ))
        .arg(url)
        // crash reports and caches go under these, not the user's home
        .env("XDG_CONFIG_HOME", profile.path())
        .env("XDG_CACHE_HOME", profile.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", chromium.display()));
    (browser, profile)
}
