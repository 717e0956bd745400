//! Where webhook deliveries go: the URL check when a webhook is created and the
//! delivery client, both the outbound guard's ([`crate::outbound`]) with the webhooks'
//! own rules (no credentials in the URL) and user agent.
//!
//! Redirects are not followed, so a 3xx answer counts as a failed delivery.

use std::time::Duration;

use reqwest::Url;

use crate::error::{EngineError, Result};
use crate::outbound;

/// Builds the delivery client: each request may take `timeout` in all; see
/// [`outbound::client`].
pub fn client(timeout: Duration, allow_private: bool) -> Result<reqwest::Client> {
    outbound::client(
        timeout,
        allow_private,
        concat!("eddy-webhooks/", env!("CARGO_PKG_VERSION")),
    )
}

/// Checks a webhook URL and parses it: the outbound guard's [`outbound::check_url`],
/// and no user name or password (deliveries authenticate with their signature).
pub fn check_url(url: &str, allow_private: bool) -> Result<Url> {
    let parsed =
        outbound::check_url(url, allow_private, "webhook url").map_err(EngineError::invalid)?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        let mut shown = parsed.clone();
        // http(s) URLs always have a host, so clearing the credentials cannot fail
        let _ = shown.set_username("");
        let _ = shown.set_password(None);
        return Err(EngineError::invalid(format!(
            "webhook url \"{shown}\" (credentials hidden) contains a user name or password; \
             remove them and authenticate with the webhook signature instead"
        )));
    }
    Ok(parsed)
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

    #[test]
    fn webhook_urls_carry_no_credentials() {
        let refused = |url: &str, allow_private: bool| {
            let err = check_url(url, allow_private).unwrap_err();
            assert_eq!(err.code, crate::error::ErrorCode::Invalid);
            assert!(err.message.starts_with("webhook url "), "{}", err.message);
            err.message
        };
        let m = refused("https://user:hunter2@example.com/", false);
        assert!(m.contains("user name or password"), "{m}");
        assert!(!m.contains("hunter2") && !m.contains("user@"), "{m}");
        assert!(refused("https://user@example.com/", true).contains("user name"));
        assert!(refused("http://127.0.0.1:9/", false).contains("--allow-private-targets"));
        assert!(check_url("https://example.com/hook", false).is_ok());
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
