//! The web console at `/ui`, driven in headless Chromium over WebDriver (chromedriver,
//! through fantoccini) against a real server: browsing, a live event, a reducer's
//! state changing live, a deploy with a syntax error shown at its line, a webhook
//! paused and resumed, a key sign-in on a server with access control, hostile event
//! data shown as text, and paging on a long stream.
//!
//! chromedriver is `EDDY_CHROMEDRIVER`, else `chromedriver` on PATH, and Chromium is
//! found as in `browser.rs`; without them the tests are skipped, unless
//! `EDDY_REQUIRE_BROWSER=1` (which `.ci/run` sets once it has installed them).

use std::io::Write;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use tokio::process::Command;

use crate::common::{TestServer, free_port, spawn_server, spawn_server_with};

const ADMIN: &str = "console-admin-token-0123456789";

fn find(var: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(var).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    names
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|p| p.is_file())
}

/// A headless browser under its WebDriver, both gone when dropped (the driver runs
/// in a process group of its own, which is killed whole, so a test that fails
/// before it closes its session leaves no browser behind).
struct Browser {
    client: Client,
    base: String,
    driver: tokio::process::Child,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(pid) = self.driver.id() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// The browsers the console is tested in.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    /// Debian's `chromium` under `chromedriver` (`chromium-driver`).
    Chromium,
    /// Firefox under `geckodriver` (which `.ci/run` builds with `cargo install`).
    Firefox,
}

impl Browser {
    /// Chromium for the console of `base`, or `None` (the test is skipped) when it or
    /// its driver is missing.
    async fn open(base: &str) -> Option<Browser> {
        Self::open_in(Kind::Chromium, base).await
    }

    async fn open_in(kind: Kind, base: &str) -> Option<Browser> {
        let (driver, browser, required, install) = match kind {
            Kind::Chromium => (
                find("EDDY_CHROMEDRIVER", &["chromedriver"]),
                find(
                    "EDDY_CHROMIUM",
                    &["chromium", "chromium-browser", "google-chrome"],
                ),
                "EDDY_REQUIRE_BROWSER",
                "apt-get install chromium chromium-driver",
            ),
            Kind::Firefox => (
                find("EDDY_GECKODRIVER", &["geckodriver"]),
                find("EDDY_FIREFOX", &["firefox-esr", "firefox"]),
                "EDDY_REQUIRE_FIREFOX",
                "apt-get install firefox-esr; cargo install geckodriver",
            ),
        };
        let (Some(driver), Some(browser)) = (driver, browser) else {
            assert!(
                std::env::var_os(required).is_none(),
                "{required} is set but the browser or its WebDriver is missing"
            );
            let _ = writeln!(
                std::io::stderr(),
                "console browser test SKIPPED: no browser and WebDriver ({install})"
            );
            return None;
        };
        let profile = tempfile::tempdir().expect("profile dir");
        let port = free_port();
        let mut child = Command::new(&driver)
            .arg(format!("--port={port}"))
            .process_group(0)
            .env("XDG_CONFIG_HOME", profile.path())
            .env("XDG_CACHE_HOME", profile.path())
            .env("TMPDIR", profile.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", driver.display()));
        let mut caps = serde_json::Map::new();
        match kind {
            Kind::Chromium => caps.insert(
                "goog:chromeOptions".into(),
                json!({
                    "binary": browser,
                    "args": [
                        "--headless=new",
                        "--no-sandbox",
                        "--disable-gpu",
                        "--disable-dev-shm-usage",
                        "--no-first-run",
                        "--window-size=1280,900",
                        format!("--user-data-dir={}", profile.path().join("p").display()),
                    ],
                }),
            ),
            Kind::Firefox => caps.insert(
                "moz:firefoxOptions".into(),
                json!({
                    "binary": browser,
                    "args": ["-headless", "-width", "1280", "-height", "900"],
                }),
            ),
        };
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(60);
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(c) => break c,
                Err(e) => {
                    if let Some(status) = child.try_wait().expect("driver status") {
                        panic!("{} exited ({status})", driver.display());
                    }
                    assert!(Instant::now() < deadline, "no WebDriver session: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        Some(Browser {
            client,
            base: base.to_owned(),
            driver: child,
            _profile: profile,
        })
    }

    async fn goto(&self, hash: &str) {
        self.client
            .goto(&format!("{}/ui{hash}", self.base))
            .await
            .expect("goto");
    }

    /// Waits until the element `css` exists and its text satisfies `ok`, and
    /// answers that text.
    async fn text_where(&self, css: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut last = String::new();
        loop {
            if let Ok(el) = self.client.find(Locator::Css(css)).await
                && let Ok(t) = el.text().await
            {
                if ok(&t) {
                    return t;
                }
                last = t;
            }
            assert!(
                Instant::now() < deadline,
                "{css} never showed what was expected; its text was {last:?}; the page: {}",
                self.page_text().await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn text_has(&self, css: &str, needle: &str) -> String {
        self.text_where(css, |t| t.contains(needle)).await
    }

    async fn click(&self, css: &str) {
        self.text_where(css, |_| true).await;
        self.client
            .find(Locator::Css(css))
            .await
            .expect(css)
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    async fn type_into(&self, css: &str, text: &str) {
        self.text_where(css, |_| true).await;
        let el = self.client.find(Locator::Css(css)).await.expect(css);
        el.clear().await.expect("clear");
        el.send_keys(text).await.expect("send keys");
    }

    /// Sets a textarea's value at once (typing code key by key is slow and
    /// auto-indents nothing here, but a value is what a paste gives).
    async fn set_value(&self, css: &str, value: &str) {
        self.text_where(css, |_| true).await;
        self.client
            .execute(
                "const el = document.querySelector(arguments[0]); el.value = arguments[1]; \
                 el.dispatchEvent(new Event('input'));",
                vec![json!(css), json!(value)],
            )
            .await
            .expect("set value");
    }

    /// Runs `script` (with `return`) in the page and answers its value.
    async fn js(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("{script}: {e}"))
    }

    async fn page_text(&self) -> String {
        match self.client.find(Locator::Css("body")).await {
            Ok(b) => b.text().await.unwrap_or_default(),
            Err(e) => format!("(no body: {e})"),
        }
    }

    async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

/// A webhook receiver that answers 204 and counts deliveries.
async fn receiver() -> (String, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let seen = seen.clone();
            async move {
                seen.fetch_add(1, Ordering::SeqCst);
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    (url, count)
}

async fn put_code(s: &TestServer, path: &str, code: &str) {
    let r = crate::reducers::deploy(s, path, code).await;
    assert!(r.status().is_success(), "{path}: {}", r.status());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_browses_tails_deploys_and_pauses_on_an_open_server() {
    walk_through(Kind::Chromium).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_walk_through_in_firefox() {
    walk_through(Kind::Firefox).await;
}

/// Browses, tails, watches a reducer, deploys (with a syntax error first), adds a
/// TypeScript reducer, pauses and resumes a webhook, adds and deletes a pipe.
async fn walk_through(kind: Kind) {
    let s = spawn_server_with(|c| c.allow_private_webhooks = true).await;
    s.post_ok("/acme/clicks", "click", json!({"url": "/home"}))
        .await;
    s.post_ok("/acme/clicks", "click", json!({"url": "/about"}))
        .await;
    put_code(&s, "/acme/clicks.count", "(n = 0, e) => n + 1").await;
    let Some(b) = Browser::open_in(kind, &s.base).await else {
        return;
    };

    // accounts with their counts → streams with theirs → the stream's events
    b.goto("#/").await;
    b.text_has("#accounts", "acme").await;
    let cells = b
        .js("return [...document.querySelectorAll('#accounts td')].map(t => t.textContent)")
        .await;
    assert_eq!(cells, json!(["acme", "1", "2"]));
    b.click("#accounts a").await;
    let streams = b.text_has("#streams", "clicks").await;
    assert!(streams.contains("2"), "{streams}");
    b.click("#streams a").await;
    let events = b.text_has("#events", "/about").await;
    assert!(events.contains("click"), "{events}");

    // one event in full: the envelope, the headers and the data as sent
    b.click("#events tr.click a").await;
    b.text_has("#envelope", "\"index\": 0").await;
    b.text_has("#raw-headers", "event-type").await;
    b.text_has("#raw", "/home").await;

    // the live tail sees an event appended after it opened
    b.goto("#/stream/acme%2Fclicks?tab=live").await;
    b.text_has("#live-state", "live").await;
    s.post_ok("/acme/clicks", "click", json!({"url": "/live-one"}))
        .await;
    b.text_has("#live-rows", "/live-one").await;

    // the reducer's state changes live, without a reload
    b.goto("#/reducer/acme%2Fclicks/count").await;
    b.text_where("#state", |t| t.trim() == "3").await;
    s.post_ok("/acme/clicks", "click", json!({"url": "/four"}))
        .await;
    b.text_where("#state", |t| t.trim() == "4").await;
    b.text_has("#reducer-status", "running").await;

    // a deploy with a syntax error shows it at its line, and stores nothing
    b.set_value(
        "#code",
        "export default (state = 0, event) => {\n  const x = ;\n  return state + 1;\n};\n",
    )
    .await;
    b.click("#deploy").await;
    let error = b.text_has("#deploy-error", "syntax error").await;
    assert!(error.contains("line 2"), "{error}");
    b.text_where(".gutter .bad", |t| t == "2").await;
    assert_eq!(
        s.get("/acme/clicks.count?source")
            .await
            .text()
            .await
            .unwrap(),
        "(n = 0, e) => n + 1"
    );
    // the fixed code deploys, and the state follows the new code
    b.set_value("#code", "(n = 0, e) => n + 10").await;
    b.click("#deploy").await;
    b.text_has("#deployed", "Deployed").await;
    b.text_where("#state", |t| t.trim() == "40").await;

    // a new reducer, in TypeScript
    b.goto("#/new-reducer/acme%2Fclicks").await;
    b.type_into("#reducer-name", "urls").await;
    b.client
        .find(Locator::Css("#language"))
        .await
        .unwrap()
        .select_by_value("typescript")
        .await
        .unwrap();
    b.set_value(
        "#code",
        "export default (s: string[] = [], e: { data: { url: string } }): string[] => [...s, e.data.url];",
    )
    .await;
    b.click("#deploy").await;
    b.text_has("#state", "/live-one").await;

    // a webhook paused from the console gets nothing until it is resumed
    let (hook_url, delivered) = receiver().await;
    let made = s
        .call(
            "POST",
            "/acme/clicks/webhooks",
            &[],
            json!({ "url": hook_url }),
        )
        .await;
    assert_eq!(made.status(), 201);
    let id = made.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    b.goto("#/stream/acme%2Fclicks?tab=webhooks").await;
    b.text_has(&format!("#webhook-{id} .webhook-status"), "active")
        .await;
    b.click(&format!("#webhook-{id} button.pause")).await;
    b.text_has(&format!("#webhook-{id} .webhook-status"), "paused")
        .await;
    let hook = s
        .get_json(&format!("/acme/clicks/webhooks/{id}"), 200)
        .await;
    assert_eq!(hook["status"], "paused", "{hook}");
    let before = delivered.load(Ordering::SeqCst);
    s.post_ok("/acme/clicks", "click", json!({"url": "/while-paused"}))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        delivered.load(Ordering::SeqCst),
        before,
        "paused, yet delivered"
    );
    b.click(&format!("#webhook-{id} button.resume")).await;
    b.text_has(&format!("#webhook-{id} .webhook-status"), "active")
        .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while delivered.load(Ordering::SeqCst) == before {
        assert!(
            Instant::now() < deadline,
            "nothing delivered after the resume"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // a pipe added from the console, and deleted (a second click confirms)
    b.goto("#/stream/acme%2Fclicks?tab=pipes").await;
    b.type_into("#pipe-to", "acme/copies").await;
    b.click("form button[type=submit]").await;
    b.text_has("#pipes", "acme/copies").await;
    let pipes = s.get_json("/acme/clicks/pipes", 200).await;
    assert_eq!(pipes[0]["destination"], "acme/copies", "{pipes}");
    b.click("#pipes button.delete").await;
    b.click("#pipes button.delete").await;
    b.text_has("#tab-body", "No pipes from this stream").await;
    assert_eq!(s.get_json("/acme/clicks/pipes", 200).await, json!([]));

    // the other tabs answer
    b.goto("#/stream/acme%2Fclicks?tab=reducers").await;
    b.text_has("#reducers", "urls").await;
    b.goto("#/stream/acme%2Fclicks?tab=settings").await;
    b.text_has("#tab-body", "Save").await;
    b.goto("#/stream/acme%2Fclicks?tab=logs").await;
    b.text_has("#tab-body", "New entries").await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_data_from_a_tenant_is_shown_as_text_never_run() {
    hostile_data(Kind::Chromium).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_data_from_a_tenant_is_shown_as_text_in_firefox() {
    hostile_data(Kind::Firefox).await;
}

/// Markup and scripts in event data and types, a `text/html` raw event opened in the
/// console's origin, and substream args that would escape their path.
async fn hostile_data(kind: Kind) {
    let s = spawn_server().await;
    let hostile =
        "<img src=x onerror=\"document.title='owned'\"><script>document.title='owned'</script>";
    s.post_ok("/acme/evil", "x", json!({ "html": hostile }))
        .await;
    s.post_ok("/acme/evil", "<b>type</b>", json!(hostile)).await;
    let Some(b) = Browser::open_in(kind, &s.base).await else {
        return;
    };
    b.goto("#/stream/acme%2Fevil").await;
    b.text_has("#events", "<img src=x").await;
    b.text_has("#events", "<b>type</b>").await;
    b.goto("#/event/acme%2Fevil/0").await;
    b.text_has("#raw", "<script>").await;
    let injected = b
        .js("return document.querySelectorAll('main img, main script, main b').length")
        .await;
    assert_eq!(injected, json!(0));
    let title = b.client.title().await.unwrap();
    assert_eq!(title, "eddy console");

    // the raw form of an HTML event, opened in the console's origin, runs nothing
    let r = s
        .client
        .post(s.url("/acme/evil"))
        .header("Content-Type", "text/html")
        .header("Event-Type", "page")
        .body("<script>sessionStorage.setItem('stolen', 'yes')</script><p id=p>hi</p>")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = s.get("/acme/evil/2?raw").await;
    let csp = r.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("sandbox"), "{csp}");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    b.client.goto(&s.url("/acme/evil/2?raw")).await.unwrap();
    b.text_has("#p", "hi").await;
    b.goto("#/").await;
    let stolen = b.js("return sessionStorage.getItem('stolen')").await;
    assert_eq!(stolen, Value::Null);

    // substream args with /, ?, # and .. stay inside the args: the console reads
    // the substream it shows, not another path
    let args = "('../../other/x?limit=1#y')";
    let encoded: String =
        percent_encoding::utf8_percent_encode(args, percent_encoding::NON_ALPHANUMERIC).collect();
    s.post_ok(&format!("/acme/f{encoded}"), "x", json!({"here": true}))
        .await;
    s.post_ok("/other/x", "x", json!({"elsewhere": true})).await;
    let hash: String = percent_encoding::utf8_percent_encode(
        &format!("acme/f{args}"),
        percent_encoding::NON_ALPHANUMERIC,
    )
    .collect();
    b.goto(&format!("#/stream/{hash}")).await;
    b.text_has("#events", "\"here\":true").await;
    assert!(!b.page_text().await.contains("elsewhere"));
    // a path that is no stream is refused before any request
    b.goto("#/stream/%2Fevil.example%2Fx").await;
    b.text_has(".error", "is not a stream").await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_factory_reducer_page_shows_its_substreams_states_live() {
    let s = spawn_server().await;
    s.post_ok("/acme/carts('a')", "add", json!({})).await;
    s.post_ok("/acme/carts('b')", "add", json!({})).await;
    put_code(&s, "/acme/carts.items", "(n = 0, e) => n + 1").await;
    let r = s.get("/acme/carts('b').items?min-index=0&wait=10000").await;
    assert_eq!(r.headers()["reducer-index"], "0");
    let Some(b) = Browser::open(&s.base).await else {
        return;
    };
    b.goto("#/reducer/acme%2Fcarts/items").await;
    b.text_has("#states", "acme/carts('a')").await;
    b.text_has("#states", "acme/carts('b')").await;
    s.post_ok("/acme/carts('c')", "add", json!({})).await;
    s.post_ok("/acme/carts('c')", "add", json!({})).await;
    let states = b.text_has("#states", "acme/carts('c')").await;
    b.text_where("#states tbody tr:first-child", |t| {
        t.contains("carts('c')") && t.ends_with('2')
    })
    .await;
    assert!(states.contains("carts('a')"), "{states}");
    // the substreams tab lists them, each a link to its own page
    b.goto("#/stream/acme%2Fcarts?tab=substreams").await;
    b.text_has("#substreams", "'c' 2 1").await;
    b.close().await;
}

/// The tabs the walk-through only opens: an event selector, a type defined with its
/// TypeScript shown, settings saved, and a webhook added (its secret shown once, never
/// again), then replayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_filters_defines_types_saves_settings_and_replays_a_webhook() {
    let s = spawn_server_with(|c| c.allow_private_webhooks = true).await;
    s.post_ok("/acme/clicks", "click", json!({"url": "/home"}))
        .await;
    s.post_ok("/acme/clicks", "view", json!({"url": "/seen"}))
        .await;
    let Some(b) = Browser::open(&s.base).await else {
        return;
    };

    // a selector picks the events shown
    b.goto("#/stream/acme%2Fclicks?sel=type%3Dview").await;
    let shown = b.text_has("#events", "/seen").await;
    assert!(!shown.contains("/home"), "{shown}");

    // a type defined here checks later events, and its TypeScript is shown
    b.goto("#/stream/acme%2Fclicks?tab=types").await;
    b.type_into("#type-name", "click").await;
    b.set_value(
        "#type-schema",
        r#"{"properties": {"url": {"type": "string"}}}"#,
    )
    .await;
    b.click("#tab-body form button[type=submit]").await;
    b.text_has("#types", "click").await;
    b.text_has("#types pre.ts", "url: string").await;
    assert_eq!(
        s.post("/acme/clicks", "click", json!({"url": 5}))
            .await
            .status(),
        400
    );

    // settings saved with a PATCH
    b.goto("#/stream/acme%2Fclicks?tab=settings").await;
    b.set_value("#settings", r#"{"metadata": {"owner": "ops"}}"#)
        .await;
    b.click("#tab-body button.primary").await;
    b.text_has("#settings-saved", "Saved").await;
    let settings = s.get_json("/acme/clicks/settings", 200).await;
    assert_eq!(settings["metadata"], json!({"owner": "ops"}), "{settings}");

    // a webhook added here: its secret once, then never again
    let (hook_url, delivered) = receiver().await;
    b.goto("#/stream/acme%2Fclicks?tab=webhooks").await;
    b.type_into("#webhook-url", &hook_url).await;
    b.click("#tab-body form button[type=submit]").await;
    let secret = b.text_has("#webhook-result .secret", "whsec_").await;
    assert!(secret.contains("shown this once"), "{secret}");
    let hooks = s.get_json("/acme/clicks/webhooks", 200).await;
    let id = hooks[0]["id"].as_str().unwrap().to_owned();
    // it follows from here on
    s.post_ok("/acme/clicks", "click", json!({"url": "/after"}))
        .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while delivered.load(Ordering::SeqCst) < 1 {
        assert!(Instant::now() < deadline, "the webhook got nothing");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    b.goto("#/stream/acme%2Fclicks?tab=settings").await;
    b.text_has("#tab-body", "Save").await;
    b.goto("#/stream/acme%2Fclicks?tab=webhooks").await;
    b.text_has(&format!("#webhook-{id} .webhook-status"), "active")
        .await;
    let page = b.page_text().await;
    assert!(
        !page.contains("whsec_"),
        "the secret was shown again: {page}"
    );

    // a replay from index 0 sends the three events, the two from before it too
    let before = delivered.load(Ordering::SeqCst);
    b.type_into(&format!("#webhook-{id} .replay-from"), "0")
        .await;
    b.click(&format!("#webhook-{id} form.replay button")).await;
    b.text_has("#webhook-result", "Replay of").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while delivered.load(Ordering::SeqCst) < before + 3 {
        assert!(Instant::now() < deadline, "the replay delivered nothing");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_in_with_a_key_keeps_it_for_the_session_only() {
    sign_in(Kind::Chromium).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_in_in_firefox() {
    sign_in(Kind::Firefox).await;
}

/// A wrong key refused and not kept, an account's key opening its account, kept in
/// session storage only, and forgotten on sign-out.
async fn sign_in(kind: Kind) {
    let s = spawn_server_with(|c| c.admin_token = Some(ADMIN.into())).await;
    let admin = format!("Bearer {ADMIN}");
    let made = s
        .call(
            "POST",
            "/api/accounts",
            &[("Authorization", &admin)],
            json!({"name": "acme"}),
        )
        .await;
    assert_eq!(made.status(), 201);
    let key = made.json::<Value>().await.unwrap()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = s
        .client
        .post(s.url("/acme/orders"))
        .header("Authorization", format!("Bearer {key}"))
        .header("Event-Type", "order")
        .json(&json!({"total": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let Some(b) = Browser::open_in(kind, &s.base).await else {
        return;
    };

    // without a key the console asks for one
    b.goto("#/").await;
    b.text_has("main", "Sign in").await;
    // a wrong key is refused, and not kept
    b.type_into("#key", "eddy_nope_wrong").await;
    b.click("#login-form button").await;
    b.text_has(".error", "credentials").await;
    let kept = b.js("return sessionStorage.getItem('eddy.key')").await;
    assert_eq!(kept, Value::Null);
    // the account's key opens its account
    b.type_into("#key", &key).await;
    b.click("#login-form button").await;
    b.text_has("#streams", "orders").await;
    b.click("#streams a").await;
    b.text_has("#events", "\"total\":5").await;
    // kept in session storage only, never in local storage or a cookie
    let stored = b
        .js("return [sessionStorage.getItem('eddy.key'), localStorage.length, document.cookie]")
        .await;
    assert_eq!(stored, json!([key, 0, ""]));
    // signing out forgets it
    b.click("#logout").await;
    b.text_has("main", "Sign in").await;
    let kept = b.js("return sessionStorage.getItem('eddy.key')").await;
    assert_eq!(kept, Value::Null);
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_stream_is_paged_and_its_last_page_found_without_reading_it_all() {
    let s = spawn_server().await;
    let n = 20_000;
    let mut body = String::new();
    for i in 0..n {
        body.push_str(&format!("{{\"i\":{i}}}\n"));
    }
    let r = s
        .client
        .post(s.url("/acme/long"))
        .header("Content-Type", "application/x-ndjson")
        .header("Event-Type", "n")
        .body(body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let Some(b) = Browser::open(&s.base).await else {
        return;
    };
    b.goto("#/stream/acme%2Flong").await;
    b.text_has("#events", "{\"i\":49}").await;
    let rows = b
        .js("return document.querySelectorAll('#events tr.click').length")
        .await;
    assert_eq!(rows, json!(50));
    b.click("#next").await;
    b.text_has("#events", "{\"i\":99}").await;
    let started = Instant::now();
    b.click("#last").await;
    b.text_has("#events", &format!("{{\"i\":{}}}", n - 1)).await;
    println!(
        "console: last page of {n} events in {:?}",
        started.elapsed()
    );
    // a jump by index
    b.type_into("#jump", "12345").await;
    b.click("form.bar button").await;
    b.text_has("#events", "{\"i\":12345}").await;
    b.close().await;
}
