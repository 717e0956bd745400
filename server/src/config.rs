//! The server's configuration: one clap struct, every option also an `EDDY_*`
//! environment variable, defaults that work on a laptop.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Reads `--listen`: a socket address, or a host name and port resolved to its first
/// address.
fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    use std::net::ToSocketAddrs as _;
    match text.to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| format!("{text} resolves to no address")),
        Err(e) => Err(format!(
            "{text} is not an address to listen on (IP:port or host:port, e.g. \
             127.0.0.1:8080 or localhost:8080): {e}"
        )),
    }
}

/// Reads `--json-max-depth`: 1 to [`eddy_engine::json::MAX_MAX_DEPTH`].
fn parse_depth(text: &str) -> Result<usize, String> {
    let depth = text
        .parse::<usize>()
        .map_err(|e| format!("{text} is not a whole number: {e}"))?;
    eddy_engine::json::JsonLimits::new(depth).map_err(|e| e.message)?;
    Ok(depth)
}

/// The smallest header limit: hyper's smallest read buffer.
pub const MIN_HEADER_BYTES: usize = 8192;

/// The shortest admin token accepted.
pub const MIN_ADMIN_TOKEN: usize = 16;

#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Address to listen on (HTTP/1.1 and h2c): IP:port, or host:port such as
    /// localhost:8080 (its first address).
    #[arg(long, env = "EDDY_LISTEN", default_value = "127.0.0.1:8080", value_parser = parse_listen)]
    pub listen: SocketAddr,
    /// Directory of the embedded SQLite database.
    #[arg(long, env = "EDDY_DATA", default_value = "./eddy-data")]
    pub data: PathBuf,
    /// Keep everything in this PostgreSQL database instead of the embedded one, e.g.
    /// postgres://eddy@localhost/eddy (--data is then unused). The schema is created
    /// or migrated at start.
    #[arg(long, env = "EDDY_DATABASE_URL", value_parser = parse_database_url)]
    pub database: Option<String>,
    /// With --database, several servers on the same database form one service: each
    /// reducer stream, pipe and webhook runs on one of them under a lease renewed
    /// every third of this time (ms), and moves to another within it when its node
    /// stops.
    #[arg(long, env = "EDDY_LEASE_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(300..))]
    pub lease_ms: u64,
    /// This node's address as other nodes and GET /api/cluster show it (default: the
    /// address it listens on).
    #[arg(long, env = "EDDY_ADVERTISE")]
    pub advertise: Option<String>,
    /// The admin token: with one, every request needs credentials (API keys, HMAC
    /// tokens or public stream settings) and accounts exist once created under /api.
    /// Without one the server is open, on loopback only. It must be at least 16
    /// characters long; make one with `openssl rand -hex 32`.
    #[arg(long, env = "EDDY_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Allow an open server (no admin token) on a non-loopback address.
    #[arg(long, env = "EDDY_INSECURE_OPEN")]
    pub insecure_open: bool,
    /// How long a graceful shutdown waits for open requests, in milliseconds.
    #[arg(long, env = "EDDY_SHUTDOWN_GRACE_MS", default_value_t = 10_000)]
    pub shutdown_grace_ms: u64,
    /// Largest reducer state (JSON) for one (sub)stream, in KiB.
    #[arg(long, env = "EDDY_REDUCER_STATE_KB", default_value_t = 100)]
    pub reducer_state_kb: usize,
    /// Memory of the JavaScript sandbox of one stream's reducers, in MiB.
    #[arg(long, env = "EDDY_REDUCER_MEMORY_MB", default_value_t = 64)]
    pub reducer_memory_mb: usize,
    /// Longest a reducer may run for one event, in milliseconds (time its `request()`
    /// calls wait counts too).
    #[arg(long, env = "EDDY_REDUCER_TIME_MS", default_value_t = 100)]
    pub reducer_time_ms: u64,
    /// JavaScript memory of all streams' reducers together, in MiB: each stream's
    /// sandbox gets at most what the others leave.
    #[arg(long, env = "EDDY_REDUCER_MEMORY_TOTAL_MB", default_value_t = 512)]
    pub reducer_memory_total_mb: usize,
    /// Threads that run reducers (each stream's reducers on one of them); 0: one per
    /// core.
    #[arg(long, env = "EDDY_REDUCER_THREADS", default_value_t = 0)]
    pub reducer_threads: usize,
    /// Interval of the comments that keep Server-Sent Events connections alive, in ms.
    #[arg(long, env = "EDDY_SSE_HEARTBEAT_MS", default_value_t = 15_000)]
    pub sse_heartbeat_ms: u64,
    /// How long EventSource clients wait before reconnecting (the `retry:` field), in ms.
    #[arg(long, env = "EDDY_SSE_RETRY_MS", default_value_t = 2_000)]
    pub sse_retry_ms: u64,
    /// Group commits a second from which live subscribers get the commits of 2-3 ms
    /// at once, merged (less work per subscriber, up to 3 ms later); 0: never merge.
    #[arg(long, env = "EDDY_FANOUT_MERGE_RATE", default_value_t = eddy_engine::consumers::DEFAULT_MERGE_RATE)]
    pub fanout_merge_rate: u32,
    /// Events that one account's splice approvals and pipe replays may write in ten
    /// minutes on this node: each writes all it makes in one transaction, which every
    /// account's appends wait for; 0: no limit.
    #[arg(long, env = "EDDY_SPLICE_WRITE_BUDGET", default_value_t = 1_000_000)]
    pub splice_write_budget: u64,
    /// How long a client may take to send a request's line and headers, from the
    /// first byte (from the connection's start for its first request), in ms; 0: no
    /// limit. A client that is too slow is disconnected.
    #[arg(long, env = "EDDY_HEADER_READ_TIMEOUT_MS", default_value_t = 10_000)]
    pub header_read_timeout_ms: u64,
    /// How long a connection may stay open with no request in flight, in ms; 0: no
    /// limit.
    #[arg(long, env = "EDDY_IDLE_TIMEOUT_MS", default_value_t = 60_000)]
    pub idle_timeout_ms: u64,
    /// Largest request line and headers together, in bytes (at least 8192); larger
    /// ones are answered 431 (HTTP/2: the header list).
    #[arg(long, env = "EDDY_MAX_HEADER_BYTES", default_value_t = 32 * 1024)]
    pub max_header_bytes: usize,
    /// How long a client may take to send a whole request body, in ms (an NDJSON
    /// stream: the longest pause between two chunks); 0: no limit. Answered 408.
    #[arg(long, env = "EDDY_BODY_READ_TIMEOUT_MS", default_value_t = 30_000)]
    pub body_read_timeout_ms: u64,
    /// Most connections open at once. A new connection past it closes the connection
    /// idle the longest (or, when none is idle, busy the longest), so the server keeps
    /// answering new clients and health checks.
    #[arg(long, env = "EDDY_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,
    /// Let outbound calls (webhook deliveries, reducers' `request()`) reach private,
    /// loopback and link-local addresses too.
    #[arg(long, env = "EDDY_ALLOW_PRIVATE_TARGETS")]
    pub allow_private_targets: bool,
    /// The former name of --allow-private-targets, still accepted (flag and variable).
    #[arg(long, env = "EDDY_ALLOW_PRIVATE_WEBHOOKS", hide = true)]
    pub allow_private_webhooks: bool,
    /// Longest wait for a webhook receiver's answer, in milliseconds.
    #[arg(long, env = "EDDY_WEBHOOK_TIMEOUT_MS", default_value_t = 10_000)]
    pub webhook_timeout_ms: u64,
    /// Delay before the first retry of a failed delivery (then doubling, with jitter), ms.
    #[arg(long, env = "EDDY_WEBHOOK_RETRY_INITIAL_MS", default_value_t = 1_000)]
    pub webhook_retry_initial_ms: u64,
    /// Longest delay between two delivery attempts, in milliseconds.
    #[arg(long, env = "EDDY_WEBHOOK_RETRY_MAX_MS", default_value_t = 3_600_000)]
    pub webhook_retry_max_ms: u64,
    /// How long one delivery is retried before the webhook pauses, in milliseconds.
    #[arg(
        long,
        env = "EDDY_WEBHOOK_RETRY_BUDGET_MS",
        default_value_t = 86_400_000
    )]
    pub webhook_retry_budget_ms: u64,
    /// Deepest nesting of arrays and objects in JSON event data (1 to 127); deeper data
    /// is refused with 400 on every ingest path, piped and dispatched events included.
    #[arg(long, env = "EDDY_JSON_MAX_DEPTH", default_value_t = eddy_engine::json::DEFAULT_MAX_DEPTH, value_parser = parse_depth)]
    pub json_max_depth: usize,
}

impl Config {
    /// A configuration for tests and tools: the given data directory, loopback.
    pub fn for_data_dir(data: impl Into<PathBuf>) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data: data.into(),
            database: None,
            lease_ms: 10_000,
            advertise: None,
            admin_token: None,
            insecure_open: false,
            shutdown_grace_ms: 10_000,
            reducer_state_kb: 100,
            reducer_memory_mb: 64,
            reducer_time_ms: 100,
            reducer_memory_total_mb: 512,
            reducer_threads: 0,
            sse_heartbeat_ms: 15_000,
            sse_retry_ms: 2_000,
            fanout_merge_rate: eddy_engine::consumers::DEFAULT_MERGE_RATE,
            splice_write_budget: 1_000_000,
            allow_private_targets: false,
            header_read_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            max_header_bytes: 32 * 1024,
            body_read_timeout_ms: 30_000,
            max_connections: 1024,
            allow_private_webhooks: false,
            webhook_timeout_ms: 10_000,
            webhook_retry_initial_ms: 1_000,
            webhook_retry_max_ms: 3_600_000,
            webhook_retry_budget_ms: 86_400_000,
            json_max_depth: eddy_engine::json::DEFAULT_MAX_DEPTH,
        }
    }

    /// Where the server keeps everything: the PostgreSQL database when one is given,
    /// else the embedded one in the data directory.
    pub fn storage(&self) -> eddy_engine::store::Storage {
        match &self.database {
            Some(url) => eddy_engine::store::Storage::Postgres(url.clone()),
            None => eddy_engine::store::Storage::Embedded(self.data.clone()),
        }
    }

    /// How webhooks deliver and retry.
    /// How this node takes part when other nodes share its database.
    pub fn cluster_settings(&self) -> eddy_engine::cluster::ClusterSettings {
        eddy_engine::cluster::ClusterSettings {
            lease: std::time::Duration::from_millis(self.lease_ms),
            address: self
                .advertise
                .clone()
                .unwrap_or_else(|| self.listen.to_string()),
        }
    }

    pub fn webhook_settings(&self) -> eddy_engine::consumers::webhooks::WebhookSettings {
        use std::time::Duration;
        eddy_engine::consumers::webhooks::WebhookSettings {
            allow_private: self.allow_private_targets || self.allow_private_webhooks,
            timeout: Duration::from_millis(self.webhook_timeout_ms.max(1)),
            retry_initial: Duration::from_millis(self.webhook_retry_initial_ms.max(1)),
            retry_max: Duration::from_millis(self.webhook_retry_max_ms.max(1)),
            retry_budget: Duration::from_millis(self.webhook_retry_budget_ms),
        }
    }

    /// How long a whole body may take to arrive (between chunks, for NDJSON); `None`:
    /// no limit.
    pub fn body_read_timeout(&self) -> Option<std::time::Duration> {
        (self.body_read_timeout_ms > 0)
            .then(|| std::time::Duration::from_millis(self.body_read_timeout_ms))
    }

    /// The limits reducers run under.
    pub fn reducer_limits(&self) -> eddy_runtime_js::Limits {
        eddy_runtime_js::Limits {
            memory_bytes: self.reducer_memory_mb.saturating_mul(1024 * 1024),
            event_time: std::time::Duration::from_millis(self.reducer_time_ms),
            state_bytes: self.reducer_state_kb.saturating_mul(1024),
        }
    }

    /// How the reducer threads run.
    pub fn reducer_pool(&self) -> eddy_engine::reducers::PoolSettings {
        let threads = match self.reducer_threads {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        eddy_engine::reducers::PoolSettings {
            limits: self.reducer_limits(),
            threads,
            memory_total: self.reducer_memory_total_mb.saturating_mul(1024 * 1024),
        }
    }

    /// The limits JSON event data is parsed within.
    pub fn json_limits(&self) -> anyhow::Result<eddy_engine::json::JsonLimits> {
        eddy_engine::json::JsonLimits::new(self.json_max_depth)
            .map_err(|e| anyhow::anyhow!("--json-max-depth: {}", e.message))
    }

    /// Refuses configurations that would expose an open server.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.reducer_state_kb == 0
            || self.reducer_memory_mb < 4
            || self.reducer_memory_total_mb < 4
            || self.reducer_time_ms == 0
        {
            anyhow::bail!(
                "reducer limits too small: --reducer-state-kb and --reducer-time-ms must be at \
                 least 1, and --reducer-memory-mb and --reducer-memory-total-mb at least 4"
            );
        }
        if self.max_header_bytes < MIN_HEADER_BYTES || self.max_connections == 0 {
            anyhow::bail!(
                "connection limits too small: --max-header-bytes must be at least \
                 {MIN_HEADER_BYTES} and --max-connections at least 1"
            );
        }
        if let Some(t) = &self.admin_token
            && t.len() < MIN_ADMIN_TOKEN
        {
            anyhow::bail!(
                "the admin token is {} characters long; use at least {MIN_ADMIN_TOKEN} random \
                 characters (e.g. `openssl rand -hex 32`)",
                t.len()
            );
        }
        if self.admin_token.is_none() && !self.listen.ip().is_loopback() && !self.insecure_open {
            anyhow::bail!(
                "refusing to listen on {} without access control: an open eddy server accepts \
                 every request, so it listens on loopback only; pass --insecure-open to \
                 override",
                self.listen
            );
        }
        Ok(())
    }
}

/// A `--database` URL: PostgreSQL's, the only database eddy takes besides its
/// embedded one.
fn parse_database_url(url: &str) -> Result<String, String> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(url.to_owned())
    } else {
        Err(format!(
            "\"{url}\" is not a PostgreSQL URL; give postgres://user@host/database, or leave \
             --database out to use the embedded database in --data"
        ))
    }
}
