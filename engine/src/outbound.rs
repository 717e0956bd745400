//! The outbound guard: every connection eddy makes to an address a user gave (webhook
//! deliveries, reducers' `request()`) goes through it, so none reaches the server's own
//! host and network (loopback, private, link-local and other non-public addresses)
//! unless the server runs with `--allow-private-targets`.
//!
//! [`check_url`] vets a URL before anything is sent: scheme, host, IP literals and
//! `localhost` names. [`client`] builds the HTTP client: its [`GuardedResolver`] drops
//! forbidden addresses on every connection, so a name that later resolves to a private
//! address (DNS rebinding) is refused too, and it follows no redirects, so a receiver
//! cannot bounce a call to an address the guard refuses. IP literals never reach a
//! resolver, which is why [`check_url`] checks them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::error::{EngineError, Result};

/// The flag that lets outbound connections reach non-public addresses.
pub const ALLOW_FLAG: &str = "--allow-private-targets";
/// The longest an outbound call waits for its TCP and TLS connection.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an idle keep-alive connection stays in the pool.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Whether outbound calls must not go to `ip`: any address that is not public unicast.
pub fn is_forbidden(ip: IpAddr) -> bool {
    forbidden_kind(ip).is_some()
}

/// What kind of non-public address `ip` is, or `None` when it is public.
fn forbidden_kind(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    let kind = match (a, b, c) {
        (0, _, _) => "a this-network (0.0.0.0/8)",
        (127, _, _) => "a loopback",
        (10, _, _) | (192, 168, _) => "a private",
        (172, _, _) if b & 0xf0 == 16 => "a private",
        (100, _, _) if b & 0xc0 == 64 => "a shared (carrier-grade NAT)",
        (169, 254, _) => "a link-local",
        (192, 0, 0) => "an IETF special-purpose",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "a documentation",
        (192, 88, 99) => "a 6to4 relay",
        (198, 18..=19, _) => "a benchmarking",
        (224..=239, _, _) => "a multicast",
        (240..=255, _, _) => "a reserved or broadcast",
        _ => return None,
    };
    Some(kind)
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    // Addresses that carry an IPv4 address are judged by it: IPv4-mapped
    // (::ffff:0:0/96), NAT64 (64:ff9b::/96) and 6to4 (2002::/16).
    if let Some(v4) = ip.to_ipv4_mapped() {
        return forbidden_v4(v4);
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return forbidden_v4(embedded_v4(s[6], s[7]));
    }
    if s[0] == 0x2002 {
        return forbidden_v4(embedded_v4(s[1], s[2]));
    }
    let kind = match s[0] {
        _ if ip.is_unspecified() => "an unspecified",
        _ if ip.is_loopback() => "a loopback",
        0xfc00..=0xfdff => "a unique-local (private)",
        0xfe80..=0xfebf => "a link-local",
        0xff00..=0xffff => "a multicast",
        // Global unicast is 2000::/3; everything else (IPv4-compatible ::/96,
        // discard 100::/64, site-local fec0::/10, local NAT64 64:ff9b:1::/48...)
        // is not routable on the internet.
        0..=0x1fff | 0x4000..=0xffff => "a non-global",
        0x2001 if s[1] < 0x0200 => "an IETF special-purpose (or Teredo)",
        0x2001 if s[1] == 0x0db8 => "a documentation",
        0x3fff if s[1] < 0x1000 => "a documentation",
        _ => return None,
    };
    Some(kind)
}

fn embedded_v4(hi: u16, lo: u16) -> Ipv4Addr {
    Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo))
}

/// Checks a URL that eddy is asked to call and parses it: `http` or `https`, a host,
/// and, unless `allow_private`, neither a non-public IP literal nor a `localhost` name.
/// Names are checked again at each connection by [`GuardedResolver`]. Messages start
/// with `label` and the URL (`webhook url "..."`).
pub fn check_url(url: &str, allow_private: bool, label: &str) -> std::result::Result<Url, String> {
    let parsed = Url::parse(url).map_err(|e| {
        format!(
            "{label} \"{url}\" is not a valid absolute URL ({e}); give one like \
             https://example.com/path"
        )
    })?;
    if parsed.scheme() != "http" && parsed.scheme() != "https" {
        return Err(format!(
            "{label} \"{url}\" uses the scheme {}; only http and https are allowed",
            parsed.scheme()
        ));
    }
    let refuse = |what: String| {
        format!(
            "{label} \"{url}\" points at {what}; start the server with {ALLOW_FLAG} to allow it"
        )
    };
    let Some(host) = parsed.host_str() else {
        return Err(format!("{label} \"{url}\" has no host"));
    };
    if allow_private {
        return Ok(parsed);
    }
    // IPv6 literals come bracketed; the parser has already normalised IPv4 spellings
    // such as 0x7f.1 or 2130706433 to dotted decimal.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        if let Some(kind) = forbidden_kind(ip) {
            return Err(refuse(format!("{ip}, {kind} address")));
        }
    } else {
        let name = host.trim_end_matches('.').to_ascii_lowercase();
        if name == "localhost" || name.ends_with(".localhost") {
            return Err(refuse(format!("{host}, a loopback host name")));
        }
    }
    Ok(parsed)
}

/// Builds an outbound HTTP client: each call may take `timeout` in all (connecting at
/// most 5 s of it), redirects are returned rather than followed, proxies from the
/// environment are ignored, and, unless `allow_private`, host names resolving only to
/// non-public addresses are refused (see [`GuardedResolver`]).
///
/// It installs rustls's ring provider as the process default first when no provider
/// is installed, since reqwest is built without one of its own. Building loads the
/// system's CA roots: build a client once and share it.
pub fn client(timeout: Duration, allow_private: bool, user_agent: &str) -> Result<reqwest::Client> {
    // Err means a provider is already installed, which reqwest then uses: fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .tls_backend_rustls()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout.min(MAX_CONNECT_TIMEOUT))
        .dns_resolver(Arc::new(GuardedResolver { allow_private }))
        .user_agent(user_agent)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .no_proxy()
        .build()
        .map_err(|e| {
            tracing::error!(error = %e, "building an outbound HTTP client failed");
            EngineError::internal(format!("could not build an outbound HTTP client: {e}"))
        })
}

/// An error with its causes, `a: b: c`: reqwest's own message leaves out why a call
/// failed (the guard's refusal, a time-out).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let next = e.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = e.source();
    }
    text
}

/// The outbound clients' DNS resolver: it resolves with the system resolver and,
/// unless `allow_private`, drops the addresses [`is_forbidden`] refuses, failing when
/// none is left. It runs on every new connection, which defeats DNS rebinding.
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver {
    /// Lets calls go to private, loopback and link-local addresses.
    pub allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|e| format!("host {host} could not be resolved ({e})"))?
                .collect();
            let total = found.len();
            let kept: Vec<SocketAddr> = found
                .into_iter()
                .filter(|addr| allow_private || !is_forbidden(addr.ip()))
                .collect();
            if kept.is_empty() {
                let message = if total == 0 {
                    format!("host {host} resolves to no address")
                } else {
                    format!(
                        "host {host} resolves only to private, loopback, link-local or other \
                         non-public addresses; start the server with {ALLOW_FLAG} to allow them"
                    )
                };
                return Err(message.into());
            }
            let addrs: Addrs = Box::new(kept.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_addresses() {
        let forbidden = "0.0.0.0 0.1.2.3 127.0.0.1 127.255.255.254 10.0.0.1 172.16.0.1 \
             172.31.255.255 192.168.1.1 100.64.0.1 100.127.255.255 169.254.169.254 \
             192.0.0.8 192.0.2.1 198.18.0.1 198.19.255.255 198.51.100.7 203.0.113.9 \
             224.0.0.1 239.255.255.250 240.0.0.1 255.255.255.255 :: ::1 ::127.0.0.1 \
             ::8.8.8.8 ::ffff:127.0.0.1 ::ffff:10.1.2.3 ::ffff:169.254.169.254 \
             64:ff9b::127.0.0.1 64:ff9b::a9fe:a9fe 64:ff9b:1::1 2002:7f00:1:: \
             2002:c0a8:101::1 100::1 fc00::1 fd12:3456::1 fe80::1 febf::1 fec0::1 \
             ff02::1 2001::1 2001:db8::1 3fff::1 4000::1";
        for ip in forbidden.split_whitespace() {
            let parsed: IpAddr = ip.parse().unwrap();
            assert!(is_forbidden(parsed), "{ip} should be forbidden");
        }
    }

    #[test]
    fn allowed_addresses() {
        let allowed = "8.8.8.8 1.1.1.1 93.184.216.34 100.63.255.255 100.128.0.1 172.15.255.255 \
             172.32.0.1 169.253.0.1 192.0.3.1 192.169.0.1 198.17.255.255 198.20.0.1 \
             223.255.255.254 2606:4700::1111 2001:4860:4860::8888 2a00:1450:4001::1 \
             ::ffff:8.8.8.8 64:ff9b::808:808 2002:808:808::1 2001:200::1 3fff:1000::1";
        for ip in allowed.split_whitespace() {
            let parsed: IpAddr = ip.parse().unwrap();
            assert!(!is_forbidden(parsed), "{ip} should be allowed");
        }
    }

    fn check(url: &str, allow_private: bool) -> std::result::Result<Url, String> {
        check_url(url, allow_private, "target")
    }

    fn refused(url: &str, allow_private: bool) -> String {
        let err = check(url, allow_private).unwrap_err();
        assert!(err.starts_with("target "), "{err}");
        err
    }

    #[test]
    fn check_url_schemes_and_shape() {
        assert_eq!(
            check("https://example.com/hook", false).unwrap().as_str(),
            "https://example.com/hook"
        );
        assert!(check("http://8.8.8.8:8080/x?y=1", false).is_ok());
        assert!(check("http://[2606:4700::1111]/", false).is_ok());
        assert!(refused("example.com/hook", false).contains("not a valid absolute URL"));
        assert!(refused("", false).contains("not a valid absolute URL"));
        assert!(refused("http://", false).contains("not a valid"));
        assert!(refused("ftp://example.com/", false).contains("scheme ftp"));
        assert!(refused("file:///etc/passwd", false).contains("scheme file"));
    }

    #[test]
    fn check_url_private_hosts() {
        let m = refused("http://127.0.0.1:9/", false);
        assert!(m.contains("\"http://127.0.0.1:9/\""), "{m}");
        assert!(m.contains("127.0.0.1, a loopback address"), "{m}");
        assert!(m.contains("--allow-private-targets"), "{m}");
        for url in [
            "http://10.0.0.1/",
            "http://169.254.169.254/latest/meta-data/",
            "http://0x7f.1/",
            "http://2130706433/",
            "http://0/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[fe80::1]/",
            "http://localhost/",
            "http://LOCALHOST.:8080/",
            "https://api.localhost/",
        ] {
            assert!(
                refused(url, false).contains("--allow-private-targets"),
                "{url}"
            );
            assert!(check(url, true).is_ok(), "{url}");
        }
        assert!(check("http://localhost.example.com/", false).is_ok());
    }

    #[tokio::test]
    async fn resolver_refuses_localhost() {
        let guarded = GuardedResolver {
            allow_private: false,
        };
        let err = match guarded.resolve("localhost".parse().unwrap()).await {
            Ok(addrs) => panic!("resolved to {:?}", addrs.collect::<Vec<_>>()),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("resolves only to private"), "{err}");
    }

    #[tokio::test]
    async fn resolver_allows_localhost_when_asked() {
        let open = GuardedResolver {
            allow_private: true,
        };
        let addrs: Vec<SocketAddr> = open
            .resolve("localhost".parse().unwrap())
            .await
            .unwrap()
            .collect();
        assert!(!addrs.is_empty());
        assert!(addrs.iter().all(|a| a.ip().is_loopback()), "{addrs:?}");
    }
}
