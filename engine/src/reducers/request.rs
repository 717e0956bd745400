//! `request(url, init)` for reducers (API §7): an outbound HTTP call, allowed only to
//! the hosts in the stream's `requestHosts` setting and through the outbound guard
//! ([`crate::outbound`]: no private targets unless the server allows them, no
//! redirects), made from the reducer thread while the reducer waits for the answer, at
//! most what is left of the event's time limit.
//!
//! The sandbox voids the call (answers `{voided: true}` without sending anything)
//! unless the event arrived while the reducer was live: events folded from history
//! (a first deploy, a rebuild after a redeploy, the events re-folded after a restart)
//! never send requests. Requests are therefore at most once per event.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use eddy_runtime_js::Host;
use serde::Deserialize;

use crate::outbound;

/// Most bytes of a response body handed to the reducer.
const MAX_BODY: usize = 1024 * 1024;

/// The client behind `request()`, shared by every stream's host.
#[derive(Clone)]
pub(crate) struct RequestClient {
    /// Built by [`outbound::client`] with the same `allow_private`.
    pub http: reqwest::Client,
    /// Lets calls reach private, loopback and link-local targets.
    pub allow_private: bool,
}

/// The `request()` host of one stream's sandbox.
pub(super) struct HttpHost {
    pub client: RequestClient,
    pub runtime: tokio::runtime::Handle,
    /// The stream's `requestHosts`, refreshed by the worker before each batch.
    pub hosts: Rc<RefCell<Vec<String>>>,
    pub stream: String,
}

#[derive(Deserialize, Default)]
struct Init {
    method: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    body: Option<String>,
}

impl Host for HttpHost {
    fn request(&self, url: &str, init_json: &str, timeout: Duration) -> Result<String, String> {
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| format!("request({url:?}): the URL is not valid: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(format!(
                "request({url:?}): only http and https URLs can be requested"
            ));
        }
        let host = parsed.host_str().unwrap_or_default().to_ascii_lowercase();
        let with_port = format!("{host}:{}", parsed.port_or_known_default().unwrap_or(0));
        let hosts = self.hosts.borrow();
        if !hosts
            .iter()
            .any(|h| h.eq_ignore_ascii_case(&host) || h.eq_ignore_ascii_case(&with_port))
        {
            return Err(format!(
                "request({url:?}) was refused: host {host} is not in the requestHosts setting \
                 of {} ({})",
                self.stream,
                if hosts.is_empty() {
                    "it lists no hosts".to_owned()
                } else {
                    hosts.join(", ")
                }
            ));
        }
        drop(hosts);
        let parsed = outbound::check_url(url, self.client.allow_private, "request() url")
            .map_err(|e| format!("request({url:?}) was refused: {e}"))?;
        let init: Init = serde_json::from_str(init_json)
            .map_err(|e| format!("request({url:?}): init is not valid: {e}"))?;
        let method = init.method.as_deref().unwrap_or("GET").to_ascii_uppercase();
        let method = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|_| format!("request({url:?}): method {method} is not valid"))?;
        let mut req = self.client.http.request(method, parsed).timeout(timeout);
        for (k, v) in &init.headers {
            req = req.header(k, v);
        }
        if let Some(body) = init.body {
            req = req.body(body);
        }
        let call = async move {
            let mut res = req
                .send()
                .await
                .map_err(|e| format!("request({url:?}) failed: {}", outbound::error_chain(&e)))?;
            let status = res.status();
            let headers: BTreeMap<String, String> = res
                .headers()
                .iter()
                .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
                .collect();
            let mut body = Vec::new();
            while let Some(chunk) = res.chunk().await.map_err(|e| {
                format!(
                    "request({url:?}) failed reading the body: {}",
                    outbound::error_chain(&e)
                )
            })? {
                body.extend_from_slice(&chunk);
                if body.len() > MAX_BODY {
                    return Err(format!(
                        "request({url:?}): the response body is over {MAX_BODY} bytes"
                    ));
                }
            }
            Ok(serde_json::json!({
                "status": status.as_u16(),
                "ok": status.is_success(),
                "headers": headers,
                "body": String::from_utf8_lossy(&body),
            })
            .to_string())
        };
        self.runtime
            .block_on(async move { tokio::time::timeout(timeout, call).await })
            .unwrap_or_else(|_| Err(format!("request({url:?}) timed out after {timeout:?}")))
    }
}
