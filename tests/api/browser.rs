//! The browser check: `examples/eventsource.html` opened in headless Chromium subscribes
//! with a real `EventSource` (cross-origin, from a file:// page) and, once it has seen
//! `n` events, POSTs what it saw to `<stream>-seen`, which the test reads back.
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

/// Waits for the page's first report of `kind` in `/acme/clicks-seen` (a long-poll)
/// and returns its JSON.
async fn report(
    s: &TestServer,
    kind: &str,
    browser: &mut tokio::process::Child,
    log: &Path,
    deadline: Instant,
) -> Value {
    loop {
        let seen = s
            .get_json(&format!("/acme/clicks-seen?type={kind}&wait=10000"), 200)
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
    let Some(chromium) = find_chromium() else {
        // straight to stderr, past the test harness's capture, so it shows in CI logs
        let _ = writeln!(
            std::io::stderr(),
            "browser check SKIPPED: no Chromium installed (set EDDY_CHROMIUM, or put \
             chromium, chromium-browser or google-chrome on PATH)"
        );
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

    let profile = tempfile::tempdir().expect("profile dir");
    let log = profile.path().join("chromium.log");
    let url = format!(
        "file://{}?server={}&stream=/acme/clicks&n=4",
        page.display(),
        s.base
    );
    let mut browser = Command::new(&chromium)
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
        .arg(&url)
        // crash reports and caches go under these, not the user's home
        .env("XDG_CONFIG_HOME", profile.path())
        .env("XDG_CACHE_HOME", profile.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", chromium.display()));
    let started = Instant::now();

    // the page says when its EventSource is open: the last two events then come live
    let deadline = started + Duration::from_secs(30);
    report(&s, "ready", &mut browser, &log, deadline).await;
    for d in &posted[2..] {
        s.post_ok("/acme/clicks", "click", d.clone()).await;
    }
    let summary = report(&s, "seen", &mut browser, &log, deadline).await;
    println!(
        "browser check: the page in {} reported {:.1} s after launch",
        chromium.display(),
        started.elapsed().as_secs_f32()
    );

    assert_eq!(summary["ids"], json!([0, 1, 2, 3]), "{summary}");
    assert_eq!(summary["data"], Value::Array(posted), "{summary}");

    browser.kill().await.expect("kill chromium");
}
