//! What the client subcommands share: the server and credentials they speak to, and
//! the one sentence a failed answer is told in.

use anyhow::{Result, anyhow};
use reqwest::{Method, RequestBuilder, Response};

/// The server a subcommand speaks to.
#[derive(clap::Args, Clone)]
pub struct Server {
    /// The eddy server's URL.
    #[arg(long, env = "EDDY_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// An account's API key, or the admin token, sent as a bearer token.
    #[arg(long, env = "EDDY_KEY", hide_env_values = true)]
    pub key: Option<String>,
}

impl Server {
    /// The HTTP client, with TLS for https servers; no overall timeout (live
    /// requests last as long as they need), a connect timeout.
    pub fn client(&self) -> Result<reqwest::Client> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Ok(reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()?)
    }

    /// A request with the credentials.
    pub fn request(&self, client: &reqwest::Client, method: Method, url: &str) -> RequestBuilder {
        let r = client.request(method, url);
        match &self.key {
            Some(key) => r.bearer_auth(key),
            None => r,
        }
    }
}

/// Fails with the server's own message when `resp` is not a success.
pub async fn check(resp: Response) -> Result<Response> {
    if resp.status().is_success() {
        return Ok(resp);
    }
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    let message = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| {
            v["error"]
                .as_str()
                .or_else(|| v["message"].as_str())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| text.trim().to_owned());
    Err(anyhow!(
        "the server answered {}: {message}",
        status.as_u16()
    ))
}

/// One sentence for a failure to reach the server.
pub fn unreachable(server: &str, e: reqwest::Error) -> anyhow::Error {
    let mut cause: &dyn std::error::Error = &e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    anyhow!("cannot reach {server}: {cause}")
}

/// What a subcommand's argument names: an account, stream, reducer or pipe, on the
/// server of `--server` or of the full URL given.
pub struct Target {
    pub server: Server,
    pub resource: eddy_engine::path::Resource,
    /// The query string given with it (a selector), without the `?`.
    pub query: Option<String>,
}

impl Server {
    /// Parses `target`: a path (`/acme/orders`, `"/acme/carts('c 1')"`, encoded or
    /// not) or a full URL, whose own server then wins over `--server`.
    pub fn target(&self, target: &str) -> Result<Target> {
        let mut server = self.clone();
        let mut rest = target;
        for scheme in ["http://", "https://"] {
            if let Some(after) = target.strip_prefix(scheme) {
                let at = after.find('/').unwrap_or(after.len());
                server.server = format!("{scheme}{}", &after[..at]);
                rest = &after[at..];
            }
        }
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q.to_owned())),
            None => (rest, None),
        };
        let path = if path.starts_with('/') {
            path.to_owned()
        } else {
            format!("/{path}")
        };
        let resource = eddy_engine::path::parse(&path)
            .map_err(|e| anyhow!("{target} is not an eddy path: {e}"))?;
        Ok(Target {
            server,
            resource,
            query,
        })
    }
}

impl Target {
    /// The canonical URL of the target (its args escaped as the server writes them),
    /// with its query.
    pub fn url(&self) -> Result<String> {
        use eddy_engine::path::Resource;
        let path = match &self.resource {
            Resource::Account(a) => format!("/{a}"),
            Resource::Stream(p) => p.url(),
            Resource::Reducer(p, name) => format!("{}.{name}", p.url()),
            Resource::Pipe { from, to } => format!("{}/pipe{}", from.url(), to.url()),
            _ => return Err(anyhow!("it names no account, stream, reducer or pipe")),
        };
        let base = self.server.server.trim_end_matches('/');
        Ok(match &self.query {
            Some(q) => format!("{base}{path}?{q}"),
            None => format!("{base}{path}"),
        })
    }

    /// The stream it names (a plain stream, factory or substream), or an error naming
    /// what is wanted.
    pub fn stream(&self) -> Result<&eddy_engine::path::StreamPath> {
        match &self.resource {
            eddy_engine::path::Resource::Stream(p) => Ok(p),
            _ => Err(anyhow!(
                "it is not a stream (/acct/strm or /acct/strm('args'))"
            )),
        }
    }
}
