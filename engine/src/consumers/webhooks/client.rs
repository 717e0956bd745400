//! The HTTP client of webhook deliveries: rustls over ring, no redirects, no proxy,
//! bounded timeouts, and the SSRF-guarded DNS resolver on every connection.
//!
//! Redirects are not followed because a receiver could otherwise bounce a delivery to
//! an address the guard refuses; a 3xx answer counts as a failed delivery. One client
//! is meant to be built at startup and shared: building loads the system's CA roots.

use std::sync::Arc;
use std::time::Duration;

use super::ssrf::GuardedResolver;
use crate::error::{EngineError, Result};

/// The longest a delivery waits for its TCP and TLS connection.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an idle keep-alive connection stays in the pool.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Builds the delivery client: each request may take `timeout` in all (connecting at
/// most 5 s of it), redirects are returned rather than followed, proxies from the
/// environment are ignored, and, unless `allow_private`, host names resolving only to
/// non-public addresses are refused (see [`GuardedResolver`]).
///
/// It installs rustls's ring provider as the process default first when no provider
/// is installed, since reqwest is built without one of its own.
pub fn client(timeout: Duration, allow_private: bool) -> Result<reqwest::Client> {
    // Err means a provider is already installed, which reqwest then uses: fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .tls_backend_rustls()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout.min(MAX_CONNECT_TIMEOUT))
        .dns_resolver(Arc::new(GuardedResolver { allow_private }))
        .user_agent(concat!("eddy-webhooks/", env!("CARGO_PKG_VERSION")))
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .no_proxy()
        .build()
        .map_err(|e| {
            tracing::error!(error = %e, "building the webhook HTTP client failed");
            EngineError::internal(format!("could not build the webhook HTTP client: {e}"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    const TIMEOUT: Duration = Duration::from_secs(10);

    /// Reads one request (head and `content-length` body) and answers a redirect.
    async fn answer_redirect(listener: TcpListener) -> String {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed mid-request");
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text[..end]
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().to_owned())
                    })
                    .map_or(0, |v| v.parse::<usize>().unwrap());
                if buf.len() >= end + 4 + length {
                    break;
                }
            }
        }
        stream
            .write_all(
                b"HTTP/1.1 302 Found\r\nLocation: http://example.com/\r\n\
                  content-length: 0\r\n\r\n",
            )
            .await
            .unwrap();
        stream.shutdown().await.unwrap();
        String::from_utf8_lossy(&buf).to_string()
    }

    #[tokio::test]
    async fn redirects_are_not_followed() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(answer_redirect(listener));

        let http = client(TIMEOUT, true).unwrap();
        let response = http
            .post(format!("http://127.0.0.1:{port}/hook"))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::FOUND);
        let request = server.await.unwrap();
        assert!(request.starts_with("POST /hook HTTP/1.1\r\n"), "{request}");
        let agent = format!("user-agent: eddy-webhooks/{}", env!("CARGO_PKG_VERSION"));
        assert!(request.to_ascii_lowercase().contains(&agent), "{request}");
        assert!(request.ends_with("\r\n\r\n{}"), "{request}");
    }

    #[tokio::test]
    async fn private_names_are_refused_before_connecting() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();

        let http = client(TIMEOUT, false).unwrap();
        let err = http
            .post(format!("http://localhost:{port}/"))
            .body("{}")
            .send()
            .await
            .unwrap_err();
        let mut chain = Vec::new();
        let mut source: Option<&dyn std::error::Error> = Some(&err);
        while let Some(e) = source {
            chain.push(e.to_string());
            source = e.source();
        }
        let chain = chain.join(": ");
        assert!(chain.contains("resolves only to private"), "{chain}");

        // no connection is waiting to be accepted
        let accepted = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
        assert!(accepted.is_err(), "the listener saw a connection");
    }

    #[tokio::test]
    async fn builds_for_https() {
        // twice: the second build finds the provider already installed
        for allow_private in [false, true] {
            let http = client(Duration::from_secs(30), allow_private).unwrap();
            let request = http
                .post("https://example.com/hook")
                .body("{}")
                .build()
                .unwrap();
            assert_eq!(request.url().scheme(), "https");
        }
        assert!(rustls::crypto::CryptoProvider::get_default().is_some());
    }
}
