//! The test harness: servers in process and as child processes, and HTTP helpers.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use eddy_server::{AppState, Config};
use reqwest::{Client, Response};
use serde_json::Value;
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

/// reqwest is built with rustls but no default crypto provider (the server installs
/// ring for its webhook client); a client built before that would panic.
pub fn tls_ready() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A plain HTTP client.
pub fn client() -> Client {
    tls_ready();
    Client::new()
}

/// Whether the suite runs on PostgreSQL (`EDDY_TEST_BACKEND=postgres`) rather than on
/// the embedded database.
pub fn on_postgres() -> bool {
    std::env::var("EDDY_TEST_BACKEND").is_ok_and(|b| b == "postgres")
}

/// On PostgreSQL, the database standing for data directory `data`: made fresh (in the
/// test program's throwaway cluster) the first time, the same one after a restart.
pub fn postgres_for(data: &Path) -> Option<String> {
    if !on_postgres() {
        return None;
    }
    let Some(cluster) = eddy_testpg::shared_cluster() else {
        panic!("EDDY_TEST_BACKEND=postgres, but no PostgreSQL server binaries were found");
    };
    let file = data.join("postgres-url");
    if let Ok(url) = std::fs::read_to_string(&file) {
        return Some(url);
    }
    std::fs::create_dir_all(data).expect("data dir");
    reap_databases(cluster);
    let url = cluster.fresh_database("api").expect("database");
    std::fs::write(&file, &url).expect("remember the database");
    let name = url.rsplit('/').next().expect("database name").to_owned();
    DATABASES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((file, name));
    Some(url)
}

/// The databases [`postgres_for`] made, by the file in the data directory that names
/// each.
static DATABASES: std::sync::Mutex<Vec<(std::path::PathBuf, String)>> =
    std::sync::Mutex::new(Vec::new());

/// Drops the databases whose data directories are gone (their tests are over), so that
/// a whole run's databases never fill the disk at once.
fn reap_databases(cluster: &eddy_testpg::PgCluster) {
    let gone: Vec<String> = {
        let mut made = DATABASES.lock().unwrap_or_else(|e| e.into_inner());
        let (gone, kept) = std::mem::take(&mut *made)
            .into_iter()
            .partition(|(file, _)| !file.exists());
        *made = kept;
        gone.into_iter().map(|(_, name)| name).collect()
    };
    for name in gone {
        if let Err(e) = cluster.drop_database(&name) {
            eprintln!("could not drop test database {name}: {e}");
        }
    }
}

/// The `serve` arguments that put a server's storage where the suite keeps it: the
/// data directory `data`, and on PostgreSQL its database.
pub fn storage_args(data: &Path) -> Vec<std::ffi::OsString> {
    let mut args = vec!["--data".into(), data.as_os_str().to_owned()];
    if let Some(url) = postgres_for(data) {
        args.extend(["--database".into(), url.into()]);
    }
    args
}

/// Runs statements on the storage of data directory `data` while its server is
/// stopped: `sqlite` on the embedded file, or `postgres` on its PostgreSQL database.
pub async fn run_sql(data: &Path, sqlite: &str, postgres: &str) {
    match postgres_for(data) {
        Some(url) => {
            use sqlx::Connection as _;
            let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
            sqlx::raw_sql(sqlx::AssertSqlSafe(postgres.to_owned()))
                .execute(&mut conn)
                .await
                .expect("statements");
        }
        None => {
            let db = rusqlite::Connection::open(data.join("eddy.db")).expect("open");
            db.execute_batch(sqlite).expect("statements");
        }
    }
}

/// The text `sql` answers (one row, one column) on the storage of `data`.
pub async fn query_text(data: &Path, sql: &str) -> String {
    match postgres_for(data) {
        Some(url) => {
            use sqlx::Connection as _;
            let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
            sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
                .fetch_one(&mut conn)
                .await
                .expect("query")
        }
        None => rusqlite::Connection::open(data.join("eddy.db"))
            .expect("open")
            .query_row(sql, [], |r| r.get(0))
            .expect("query"),
    }
}

/// A server running inside the test process.
pub struct TestServer {
    pub base: String,
    pub client: Client,
    pub dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    configure: fn(&mut Config),
}

pub async fn spawn_server() -> TestServer {
    spawn_server_with(|_| {}).await
}

/// A server whose configuration `configure` adjusts (kept across restarts).
pub async fn spawn_server_with(configure: fn(&mut Config)) -> TestServer {
    let dir = tempfile::tempdir().expect("temp dir");
    let (base, stop, task) = start_in_process(dir.path(), configure).await;
    TestServer {
        base,
        client: client(),
        dir,
        stop: Some(stop),
        task: Some(task),
        configure,
    }
}

async fn start_in_process(
    data: &Path,
    configure: fn(&mut Config),
) -> (
    String,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let mut config = Config::for_data_dir(data);
    config.database = postgres_for(data);
    configure(&mut config);
    let state = AppState::open(config).await.expect("open state");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(eddy_server::serve(listener, state, async move {
        let _ = stopped.await;
    }));
    (base, stop, task)
}

impl TestServer {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Shuts the server down gracefully and waits until it has stopped.
    pub async fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.expect("server task").expect("serve");
        }
    }

    /// Stops and starts again on the same data directory.
    pub async fn restart(&mut self) {
        self.stop().await;
        let (base, stop, task) = start_in_process(self.dir.path(), self.configure).await;
        self.base = base;
        self.stop = Some(stop);
        self.task = Some(task);
    }

    /// Sends `method path` with these headers and a JSON body.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Value,
    ) -> Response {
        let mut r = self
            .client
            .request(method.parse().expect("method"), self.url(path))
            .json(&body);
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        r.send().await.expect("request")
    }

    /// Sends `method path` with no body and no headers.
    pub async fn send(&self, method: &str, path: &str) -> Response {
        self.client
            .request(method.parse().expect("method"), self.url(path))
            .send()
            .await
            .expect("request")
    }

    /// POSTs a JSON event of `ty`.
    pub async fn post(&self, path: &str, ty: &str, data: Value) -> Response {
        self.client
            .post(self.url(path))
            .header("Event-Type", ty)
            .json(&data)
            .send()
            .await
            .expect("POST")
    }

    /// POSTs and expects 201, returning the body.
    pub async fn post_ok(&self, path: &str, ty: &str, data: Value) -> Value {
        let r = self.post(path, ty, data).await;
        assert_eq!(r.status(), 201, "POST {path}: {:?}", r.text().await);
        r.json().await.expect("json")
    }

    pub async fn get(&self, path: &str) -> Response {
        self.client.get(self.url(path)).send().await.expect("GET")
    }

    /// GETs and expects `status`, returning the JSON body.
    pub async fn get_json(&self, path: &str, status: u16) -> Value {
        let r = self.get(path).await;
        let got = r.status().as_u16();
        let text = r.text().await.expect("body");
        assert_eq!(got, status, "GET {path}: {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {text}"))
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Asserts a JSON error response: the status, and that the message names `needle`.
pub async fn assert_error(r: Response, status: u16, needle: &str) -> Value {
    let got = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let text = r.text().await.expect("body");
    assert_eq!(got, status, "{text}");
    assert!(
        ct.starts_with("application/json"),
        "content type {ct}: {text}"
    );
    let v: Value = serde_json::from_str(&text).expect("error body is JSON");
    let msg = v["error"].as_str().expect("error field");
    assert!(
        msg.to_lowercase().contains(&needle.to_lowercase()),
        "error {msg:?} does not mention {needle:?}"
    );
    v
}

/// The `eddy` binary run as a child process.
pub struct ChildServer {
    pub base: String,
    pub child: Child,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

impl ChildServer {
    pub async fn start(data: &Path) -> Self {
        Self::start_with(data, &[]).await
    }

    /// A server started with `args` after the listen address and data directory.
    pub async fn start_with(data: &Path, args: &[&str]) -> Self {
        Self::start_on(storage_args(data), args).await
    }

    /// A server on the embedded database in `data`, whichever backend the suite runs
    /// on (for what only an embedded database has, such as `eddy migrate`'s source).
    pub async fn start_embedded(data: &Path, args: &[&str]) -> Self {
        let embedded = vec!["--data".into(), data.as_os_str().to_owned()];
        Self::start_on(embedded, args).await
    }

    /// A server on the PostgreSQL database at `url`, whichever backend the suite runs on.
    pub async fn start_postgres(data: &Path, url: &str, args: &[&str]) -> Self {
        let storage = vec![
            "--data".into(),
            data.as_os_str().to_owned(),
            "--database".into(),
            url.into(),
        ];
        Self::start_on(storage, args).await
    }

    async fn start_on(storage: Vec<std::ffi::OsString>, args: &[&str]) -> Self {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_eddy"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(storage)
            .args(args)
            .env("EDDY_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn eddy");
        let base = format!("http://127.0.0.1:{port}");
        let client = client();
        let mut child = child;
        // a debug build migrating a large database on a busy machine takes a while
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if let Ok(r) = client.get(format!("{base}/healthz")).send().await
                && r.status() == 200
            {
                return Self { base, child };
            }
            if let Ok(Some(exit)) = child.try_wait() {
                panic!("eddy exited at start on port {port}: {exit}");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("eddy did not start on port {port} in 30 s");
    }

    pub fn signal(&self, sig: &str) {
        let pid = self.child.id().expect("pid").to_string();
        let ok = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill {sig} {pid}");
    }
}

/// Reads every event of a (sub)stream as NDJSON.
pub async fn read_all(client: &Client, url: &str) -> Vec<Value> {
    let text = client
        .get(url)
        .header("Accept", "application/x-ndjson")
        .send()
        .await
        .expect("GET")
        .text()
        .await
        .expect("body");
    text.lines()
        .map(|l| serde_json::from_str(l).expect("NDJSON line"))
        .collect()
}

/// A loopback listener that accepts connections and never answers: its port, and the
/// task holding the connections (abort it to close them).
pub async fn silent_listener() -> (u16, tokio::task::JoinHandle<()>) {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((conn, _)) = silent.accept().await {
            open.push(conn);
        }
    });
    (port, held)
}

/// The value of the metric `name` (without labels) in `base`'s `/metrics`.
pub async fn metric(base: &str, name: &str) -> u64 {
    let text = client()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} in /metrics"))
}
