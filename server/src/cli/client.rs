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

    /// The URL of `target`: a full `http(s)://` URL, or a path such as `/acme/orders`
    /// (`acme/orders` too) on the server.
    pub fn url(&self, target: &str) -> String {
        if target.starts_with("http://") || target.starts_with("https://") {
            return target.to_owned();
        }
        let base = self.server.trim_end_matches('/');
        match target.strip_prefix('/') {
            Some(path) => format!("{base}/{path}"),
            None => format!("{base}/{target}"),
        }
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
