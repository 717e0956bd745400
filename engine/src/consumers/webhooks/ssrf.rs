//! The SSRF guard of webhooks: it keeps deliveries away from the server's own host and
//! network (loopback, private, link-local and other non-public addresses) unless the
//! server runs with `--allow-private-webhooks`.
//!
//! [`check_url`] vets a URL when a webhook is created: scheme, credentials, IP literals
//! and `localhost` names. [`GuardedResolver`] is the delivery client's DNS resolver and
//! drops forbidden addresses on every connection, so a name that later resolves to a
//! private address (DNS rebinding) is refused too. IP literals never reach a resolver,
//! which is why [`check_url`] checks them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::error::{EngineError, Result};

/// Whether deliveries must not go to `ip`: any address that is not public unicast.
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

/// Checks a webhook URL and parses it: `http` or `https`, a host, no user name or
/// password, and, unless `allow_private`, neither a non-public IP literal nor a
/// `localhost` name. Names are checked again at each connection by [`GuardedResolver`].
pub fn check_url(url: &str, allow_private: bool) -> Result<Url> {
    let parsed = Url::parse(url).map_err(|e| {
        EngineError::invalid(format!(
            "webhook url \"{url}\" is not a valid absolute URL ({e}); give one like \
             https://example.com/hooks/eddy"
        ))
    })?;
    if parsed.scheme() != "http" && parsed.scheme() != "https" {
        return Err(EngineError::invalid(format!(
            "webhook url \"{url}\" uses the scheme {}; only http and https are allowed",
            parsed.scheme()
        )));
    }
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
    let refuse = |what: String| {
        EngineError::invalid(format!(
            "webhook url \"{url}\" points at {what}; start the server with \
             --allow-private-webhooks to allow it"
        ))
    };
    let Some(host) = parsed.host_str() else {
        return Err(EngineError::invalid(format!(
            "webhook url \"{url}\" has no host"
        )));
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

/// The delivery client's DNS resolver: it resolves with the system resolver and,
/// unless `allow_private`, drops the addresses [`is_forbidden`] refuses, failing when
/// none is left. It runs on every new connection, which defeats DNS rebinding.
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver {
    /// Lets deliveries go to private, loopback and link-local addresses.
    pub allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|e| format!("webhook host {host} could not be resolved ({e})"))?
                .collect();
            let total = found.len();
            let kept: Vec<SocketAddr> = found
                .into_iter()
                .filter(|addr| allow_private || !is_forbidden(addr.ip()))
                .collect();
            if kept.is_empty() {
                let message = if total == 0 {
                    format!("webhook host {host} resolves to no address")
                } else {
                    format!(
                        "webhook host {host} resolves only to private, loopback, link-local \
                         or other non-public addresses; start the server with \
                         --allow-private-webhooks to allow them"
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

    fn refused(url: &str, allow_private: bool) -> String {
        let err = check_url(url, allow_private).unwrap_err();
        assert_eq!(err.code, crate::error::ErrorCode::Invalid);
        assert!(err.message.starts_with("webhook url "), "{}", err.message);
        err.message
    }

    #[test]
    fn check_url_schemes_and_shape() {
        assert_eq!(
            check_url("https://example.com/hook", false)
                .unwrap()
                .as_str(),
            "https://example.com/hook"
        );
        assert!(check_url("http://8.8.8.8:8080/x?y=1", false).is_ok());
        assert!(check_url("http://[2606:4700::1111]/", false).is_ok());
        assert!(refused("example.com/hook", false).contains("not a valid absolute URL"));
        assert!(refused("", false).contains("not a valid absolute URL"));
        assert!(refused("http://", false).contains("not a valid"));
        assert!(refused("ftp://example.com/", false).contains("scheme ftp"));
        assert!(refused("file:///etc/passwd", false).contains("scheme file"));
        let m = refused("https://user:hunter2@example.com/", false);
        assert!(m.contains("user name or password"), "{m}");
        assert!(!m.contains("hunter2") && !m.contains("user@"), "{m}");
        assert!(refused("https://user@example.com/", true).contains("user name"));
    }

    #[test]
    fn check_url_private_hosts() {
        let m = refused("http://127.0.0.1:9/", false);
        assert!(m.contains("\"http://127.0.0.1:9/\""), "{m}");
        assert!(m.contains("127.0.0.1, a loopback address"), "{m}");
        assert!(m.contains("--allow-private-webhooks"), "{m}");
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
                refused(url, false).contains("--allow-private-webhooks"),
                "{url}"
            );
            assert!(check_url(url, true).is_ok(), "{url}");
        }
        assert!(check_url("http://localhost.example.com/", false).is_ok());
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
