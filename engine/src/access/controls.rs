//! Stream controls in memory: each stream's settings, rate limiter, blocklists and
//! event types, loaded on first use and dropped whenever the writer changes them, so
//! the checks every append makes cost a map lookup, not a query.
//!
//! A stream that does not exist yet is not kept (its defaults are answered from a
//! query each time), so a stream's first append, which creates it with its HMAC
//! secret, is never hidden behind a cached "missing". A load that raced with a change
//! is not kept either: every change bumps an epoch, and a load keeps its result only
//! if the epoch did not move while it read.

use std::borrow::Cow;
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use serde_json::Value;

use crate::error::{EngineError, ErrorCode, Result};
use crate::event::{DataKind, check_size};
use crate::json::JsonLimits;
use crate::path::{Arg, StreamPath};
use crate::selector::glob;
use crate::settings::{RateLimit, StreamSettings};
use crate::store::{Reads, access_reads, read};
use crate::types::EventTypeDef;

/// What one stream's appends are checked against.
pub struct StreamControls {
    /// The stream's settings; the defaults for a stream that does not exist yet.
    pub settings: StreamSettings,
    /// One limiter per stream, keyed by substream (canonical args; "" for a plain
    /// stream), so each substream has the stream's rate.
    limiter: Option<DefaultKeyedRateLimiter<String>>,
    /// The blocklist's Referer globs with scheme and host in lower case, as Referers
    /// are compared (see [`fold_scheme_host`]); in the order of the settings.
    referers: Vec<String>,
    types: HashMap<String, Arc<EventTypeDef>>,
    /// The limits JSON data is parsed within.
    json: JsonLimits,
}

/// A 429 from a rate limit, or a 403 from a blocklist; `rule` names which.
fn refusal(code: ErrorCode, rule: &str, message: String) -> EngineError {
    EngineError::new(code, message).with("rule", rule)
}

impl StreamControls {
    fn new(
        settings: StreamSettings,
        types: HashMap<String, Arc<EventTypeDef>>,
        json: JsonLimits,
        nodes: u32,
    ) -> Self {
        let limiter = settings
            .rate_limit
            .map(|r| DefaultKeyedRateLimiter::keyed(quota(r, nodes)));
        let referers = settings
            .blocklist
            .referers
            .iter()
            .map(|g| fold_scheme_host(g).into_owned())
            .collect();
        Self {
            settings,
            limiter,
            referers,
            types,
            json,
        }
    }

    /// Takes `n` appends from the (sub)stream's rate limit: 429 with `retryAfter`
    /// (whole seconds) when they are not available now, 413 when `n` is more than the
    /// burst (they never will be).
    pub fn check_rate(&self, path: &StreamPath, n: usize) -> Result<()> {
        let (Some(limiter), Some(rate)) = (&self.limiter, self.settings.rate_limit) else {
            return Ok(());
        };
        let key = args_key(path);
        let n =
            NonZeroU32::new(u32::try_from(n.max(1)).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN);
        match limiter.check_key_n(&key, n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                Err(refusal(
                    ErrorCode::TooManyRequests,
                    "rateLimit",
                    format!(
                        "/{path} is rate limited to {} appends per second (burst {}); retry in \
                         {} s",
                        rate.per_second,
                        rate.burst,
                        secs.max(1)
                    ),
                )
                .with("retryAfter", secs.max(1)))
            }
            // more than the burst can never pass: 413, and no Retry-After to wait for
            Err(_) => Err(refusal(
                ErrorCode::TooLarge,
                "rateLimit",
                format!(
                    "a batch of {n} events can never pass /{path}'s rate limit, whose burst is \
                     {} events: send batches of at most {} events",
                    rate.burst, rate.burst
                ),
            )
            .with("count", n.get())
            .with("burst", rate.burst)),
        }
    }

    /// Waits until one append of the (sub)stream's rate limit is available (NDJSON
    /// ingest paces itself rather than failing half-way).
    pub async fn until_ready(&self, path: &StreamPath) {
        if let Some(limiter) = &self.limiter {
            limiter.until_key_ready(&args_key(path)).await;
        }
    }

    /// Refuses (403) an append whose Referer or substream args are blocklisted. A
    /// Referer's scheme and host are compared without regard to case, its path with
    /// (see [`referer_matches`]).
    pub fn check_blocklist(&self, path: &StreamPath, referer: Option<&str>) -> Result<()> {
        let list = &self.settings.blocklist;
        let folded = referer
            .filter(|_| !self.referers.is_empty())
            .map(fold_scheme_host);
        if let Some(r) = referer
            && let Some(folded) = &folded
            && let Some(i) = self
                .referers
                .iter()
                .position(|g| referer_matches(g, folded))
        {
            let g = &list.referers[i];
            return Err(refusal(
                ErrorCode::Forbidden,
                "blocklist.referers",
                format!(
                    "appends from Referer {r} are blocked by /{}/{}'s blocklist ({g})",
                    path.account, path.stream
                ),
            ));
        }
        if let Some(args) = &path.args
            && let Some(b) = list.args.iter().find(|b| args_match(b, args.as_slice()))
        {
            return Err(refusal(
                ErrorCode::Forbidden,
                "blocklist.args",
                format!(
                    "substream /{path} is blocked by /{}/{}'s blocklist ({})",
                    path.account,
                    path.stream,
                    Value::Array(b.clone())
                ),
            ));
        }
        Ok(())
    }

    /// The schema of an event type, if the stream defines one.
    pub fn event_type(&self, name: &str) -> Option<&Arc<EventTypeDef>> {
        self.types.get(name)
    }

    /// The stream's event types, by name.
    pub fn event_types(&self) -> Vec<(&str, &Arc<EventTypeDef>)> {
        let mut types: Vec<_> = self.types.iter().map(|(k, v)| (k.as_str(), v)).collect();
        types.sort_unstable_by_key(|(k, _)| *k);
        types
    }

    pub fn has_types(&self) -> bool {
        !self.types.is_empty()
    }

    /// Checks one event's data: its size (413), its content (JSON parsed once within
    /// the JSON limits, UTF-8 text) and, when the stream defines its type, the type's
    /// schema, against the data as reducers see it (JSON as is, form bodies as an
    /// object of strings, CSV as rows, text as a string): 400 with `errors[]` and
    /// `rule: "type"` when it does not match.
    pub fn check(&self, event_type: &str, content_type: &str, data: &[u8]) -> Result<()> {
        check_size(data.len())?;
        let def = self.types.get(event_type);
        let essence = content_type.split(';').next().unwrap_or("").trim();
        let value = match DataKind::of(essence).unwrap_or(DataKind::Binary) {
            DataKind::Json => self.json.parse(data, content_type, def.is_some())?,
            DataKind::Text => {
                if let Err(e) = std::str::from_utf8(data) {
                    return Err(EngineError::invalid(format!(
                        "event data is not valid UTF-8 text (invalid byte at offset {}) but \
                         Content-Type is {content_type}",
                        e.valid_up_to()
                    )));
                }
                def.map(|_| crate::content::value(content_type, data))
            }
            DataKind::Binary => def.map(|_| crate::content::value(content_type, data)),
        };
        match (def, value) {
            (Some(def), Some(value)) => conforms(def, event_type, &value),
            _ => Ok(()),
        }
    }

    /// [`StreamControls::check`] under the name the reducer worker calls it by.
    pub fn validate(&self, event_type: &str, content_type: &str, data: &[u8]) -> Result<()> {
        self.check(event_type, content_type, data)
    }
}

/// The 400 for data that fails its type's schema.
fn conforms(def: &EventTypeDef, event_type: &str, value: &Value) -> Result<()> {
    let violations = def.validate(value);
    if violations.is_empty() {
        return Ok(());
    }
    Err(crate::types::violation_error(event_type, &violations).with("rule", "type"))
}

/// Whether a (folded) blocklist entry matches a (folded) Referer. An entry with a
/// scheme (`https://spam.example/*`) is a glob of the whole URL; one without
/// (`spam.example`, `*.spam.example`) is a glob of the Referer's host, without
/// userinfo or port, and `*.` also matches the domain itself.
fn referer_matches(entry: &str, referer: &str) -> bool {
    if entry.contains("://") {
        return glob(entry, referer);
    }
    let Some(host) = referer_host(referer) else {
        return false;
    };
    match entry.strip_prefix("*.") {
        Some(domain) if host == domain => true,
        _ => glob(entry, host),
    }
}

/// The host of a URL: after `://`, without userinfo, port or a final dot.
fn referer_host(url: &str) -> Option<&str> {
    let rest = &url[url.find("://")? + 3..];
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host_port.find(']') {
        Some(i) if host_port.starts_with('[') => &host_port[..=i],
        _ => host_port.split(':').next().unwrap_or(host_port),
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    (!host.is_empty()).then_some(host)
}

/// A URL (or a glob of one) with its scheme and host in lower case: both are
/// case-insensitive (RFC 3986 §3.1, §3.2.2), so `HTTPS://SPAM.EXAMPLE/x` is
/// `https://spam.example/x`. The host part runs from after `://` (or from the start
/// when there is none) to the first `/`, `?` or `#`; the rest keeps its case.
fn fold_scheme_host(url: &str) -> Cow<'_, str> {
    let start = url.find("://").map_or(0, |i| i + 3);
    let end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| start + i);
    if url[..end].bytes().any(|b| b.is_ascii_uppercase()) {
        let mut folded = url[..end].to_ascii_lowercase();
        folded.push_str(&url[end..]);
        Cow::Owned(folded)
    } else {
        Cow::Borrowed(url)
    }
}

/// The quota of one node's limiter, where `nodes` nodes share the service: each admits
/// its share of the sustained rate (rounded up), and the whole burst, so that a batch
/// any node admits alone is admitted in a cluster too (docs/guide/cluster.md states
/// the tolerance this gives).
fn quota(r: RateLimit, nodes: u32) -> Quota {
    let share = r.per_second.div_ceil(u64::from(nodes.max(1)));
    let per_second =
        NonZeroU32::new(share.clamp(1, u32::MAX as u64) as u32).unwrap_or(NonZeroU32::MIN);
    let burst =
        NonZeroU32::new(r.burst.clamp(1, u32::MAX as u64) as u32).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(per_second).allow_burst(burst)
}

fn args_key(path: &StreamPath) -> String {
    path.args
        .as_ref()
        .map(|a| a.canonical())
        .unwrap_or_default()
}

/// Whether a blocklisted argument list matches a substream's: same length, strings
/// as globs (also against bare account names), other values equal.
fn args_match(pattern: &[Value], args: &[Arg]) -> bool {
    pattern.len() == args.len()
        && pattern.iter().zip(args).all(|(p, a)| match (p, a) {
            (Value::String(p), Arg::Str(a)) => glob(p, a),
            (Value::String(p), Arg::Account(a)) => glob(p, a.as_str()),
            (Value::Number(p), Arg::Num(a)) => p.as_f64() == Some(*a),
            (Value::Bool(p), Arg::Bool(a)) => p == a,
            (Value::Null, Arg::Null) => true,
            _ => false,
        })
}

type StreamMap = HashMap<String, HashMap<String, Arc<StreamControls>>>;

/// Every loaded stream's controls.
pub struct Controls {
    reads: Reads,
    json: JsonLimits,
    /// A std lock: held for a lookup or an insert, never across an await.
    map: RwLock<StreamMap>,
    epoch: AtomicU64,
    /// The live nodes sharing the rate limits (1 on one server).
    nodes: std::sync::atomic::AtomicU32,
}

impl Controls {
    pub(crate) fn new(reads: Reads, json: JsonLimits) -> Self {
        Self {
            reads,
            json,
            map: RwLock::new(HashMap::new()),
            epoch: AtomicU64::new(0),
            nodes: std::sync::atomic::AtomicU32::new(1),
        }
    }

    /// The nesting limit of JSON data (`--json-max-depth`).
    pub(crate) fn json(&self) -> JsonLimits {
        self.json
    }

    /// The controls of `account/stream`.
    pub async fn get(&self, account: &str, stream: &str) -> Result<Arc<StreamControls>> {
        if let Ok(map) = self.map.read()
            && let Some(c) = map.get(account).and_then(|m| m.get(stream))
        {
            return Ok(c.clone());
        }
        let epoch = self.epoch.load(Ordering::Acquire);
        let info = read::stream(&self.reads, account, stream).await?;
        let mut types = HashMap::new();
        for row in access_reads::event_types(&self.reads, account, stream).await? {
            match serde_json::from_str::<Value>(&row.schema)
                .map_err(|e| EngineError::internal(e.to_string()))
                .and_then(|doc| EventTypeDef::compile(&doc))
            {
                Ok(def) => {
                    types.insert(row.name, Arc::new(def));
                }
                Err(e) => tracing::error!(
                    account, stream, event_type = %row.name, error = %e.message,
                    "a stored event type does not compile; it is not enforced"
                ),
            }
        }
        let exists = info.is_some();
        let settings = info.map(|i| i.settings).unwrap_or_default();
        let nodes = self.nodes.load(Ordering::Acquire);
        let controls = Arc::new(StreamControls::new(settings, types, self.json, nodes));
        if exists
            && let Ok(mut map) = self.map.write()
            && self.epoch.load(Ordering::Acquire) == epoch
        {
            map.entry(account.to_owned())
                .or_default()
                .insert(stream.to_owned(), controls.clone());
        }
        Ok(controls)
    }

    /// Forgets `account/stream`'s controls after a change (settings, types).
    pub(crate) fn invalidate(&self, account: &str, stream: &str) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        if let Ok(mut map) = self.map.write()
            && let Some(m) = map.get_mut(account)
        {
            m.remove(stream);
        }
    }

    /// Sets how many live nodes share the rate limits; the limiters start again with
    /// their new share when it changed.
    pub(crate) fn share_between(&self, nodes: usize) {
        let nodes = nodes.clamp(1, u32::MAX as usize) as u32;
        if self.nodes.swap(nodes, Ordering::AcqRel) != nodes {
            self.forget_all();
        }
    }

    /// Forgets every stream's controls (after another node changed some).
    pub(crate) fn forget_all(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        if let Ok(mut map) = self.map.write() {
            map.clear();
        }
    }

    /// Drops rate-limit state that has fully recovered (keyed stores never shrink by
    /// themselves); run periodically.
    pub fn sweep(&self) {
        let Ok(map) = self.map.read() else { return };
        for c in map.values().flat_map(|m| m.values()) {
            if let Some(l) = &c.limiter {
                l.retain_recent();
                l.shrink_to_fit();
            }
        }
    }
}

/// How often [`Controls::sweep`] runs.
pub const SWEEP_EVERY: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::{Resource, parse};
    use serde_json::json;

    fn stream(p: &str) -> StreamPath {
        match parse(p).unwrap() {
            Resource::Stream(s) => s,
            other => panic!("{other:?}"),
        }
    }

    fn controls(settings: Value) -> StreamControls {
        let Value::Object(m) = settings else { panic!() };
        let s = StreamSettings::default().merged(m).unwrap();
        StreamControls::new(s, HashMap::new(), JsonLimits::default(), 1)
    }

    #[test]
    fn each_node_takes_its_share_of_the_rate_and_the_whole_burst() {
        let limit = RateLimit {
            per_second: 30,
            burst: 7,
        };
        let alone = quota(limit, 1);
        assert_eq!(alone.burst_size().get(), 7);
        assert_eq!(alone.replenish_interval(), Duration::from_secs(1) / 30);
        let one_of_three = quota(limit, 3);
        assert_eq!(one_of_three.burst_size().get(), 7, "a batch one node takes");
        assert_eq!(
            one_of_three.replenish_interval(),
            Duration::from_millis(100)
        );
        // rounded up, never to nothing
        assert_eq!(
            quota(
                RateLimit {
                    per_second: 2,
                    burst: 1
                },
                3
            )
            .replenish_interval(),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn events_are_checked_for_size_content_and_limits() {
        use crate::event::MAX_EVENT_DATA;
        let c = controls(json!({}));
        let json = "application/json";
        c.check("t", json, b"{\"a\":1}").unwrap();
        let e = c.check("t", json, b"{\"a\":").unwrap_err();
        assert!(e.message.contains("not valid JSON"), "{}", e.message);
        // a string holding a byte that is not UTF-8 is not JSON
        let e = c.check("t", json, b"{\"a\":\"\xff\"}").unwrap_err();
        assert!(
            e.message.contains("invalid UTF-8 at byte offset 6"),
            "{}",
            e.message
        );
        let e = c.check("t", "text/plain", &[0xff, 0xfe]).unwrap_err();
        assert!(e.message.contains("not valid UTF-8 text"), "{}", e.message);
        let big = vec![b'a'; MAX_EVENT_DATA + 1];
        let e = c.check("t", "application/octet-stream", &big).unwrap_err();
        assert_eq!(e.code, ErrorCode::TooLarge);
        c.check("t", "text/plain", &big[..MAX_EVENT_DATA]).unwrap();
        let e = c.check("t", "application/ld+json", b"[1e400]").unwrap_err();
        assert!(e.message.contains("1e400 at /0"), "{}", e.message);
    }

    #[test]
    fn rate_limits_are_per_substream() {
        let c = controls(json!({"factory": true, "rateLimit": {"perSecond": 1, "burst": 2}}));
        let a = stream("/acme/s('a')");
        let b = stream("/acme/s('b')");
        c.check_rate(&a, 1).unwrap();
        c.check_rate(&a, 1).unwrap();
        let e = c.check_rate(&a, 1).unwrap_err();
        assert_eq!(e.code, ErrorCode::TooManyRequests);
        assert_eq!(e.details["retryAfter"], 1);
        c.check_rate(&b, 2).unwrap();
        let e = c.check_rate(&b, 3).unwrap_err();
        assert_eq!(e.code, ErrorCode::TooLarge);
        assert!(e.message.contains("never pass"), "{}", e.message);
        assert!(!e.details.contains_key("retryAfter"));
    }

    #[test]
    fn blocklists_match_referers_and_args() {
        let c = controls(json!({"factory": true, "blocklist": {
            "referers": ["https://spam.example/*"], "args": [["bot-*", 1], [null]]}}));
        let ok = stream("/acme/s('human',1)");
        c.check_blocklist(&ok, Some("https://good.example/"))
            .unwrap();
        let e = c
            .check_blocklist(&ok, Some("https://spam.example/page"))
            .unwrap_err();
        assert_eq!(e.details["rule"], "blocklist.referers");
        let e = c
            .check_blocklist(&stream("/acme/s('bot-7',1)"), None)
            .unwrap_err();
        assert_eq!(e.details["rule"], "blocklist.args");
        // scheme and host in any case; the path as written
        for r in ["HTTPS://SPAM.EXAMPLE/x", "https://Spam.Example/page?q"] {
            let e = c.check_blocklist(&ok, Some(r)).unwrap_err();
            assert_eq!(e.details["rule"], "blocklist.referers", "{r}");
        }
        let c2 = controls(json!({"blocklist": {"referers": ["HTTPS://Spam.example/Admin*"]}}));
        let plain = stream("/acme/s");
        assert!(
            c2.check_blocklist(&plain, Some("https://spam.EXAMPLE/Admin/1"))
                .is_err()
        );
        c2.check_blocklist(&plain, Some("https://spam.example/admin/1"))
            .unwrap();
        c.check_blocklist(&stream("/acme/s('bot-7',2)"), None)
            .unwrap();
        assert!(c.check_blocklist(&stream("/acme/s(null)"), None).is_err());
    }

    #[test]
    fn blocklist_entries_without_a_scheme_match_the_host() {
        let c = controls(json!({"blocklist": {
            "referers": ["*.Spam.example", "bad.example", "https://x.example/ads*"]}}));
        let s = stream("/acme/s");
        for r in [
            "https://spam.example/",
            "http://a.b.SPAM.example:8080/p",
            "https://user@bad.example/x",
            "https://bad.example./",
            "https://x.example/ads/1",
        ] {
            assert!(c.check_blocklist(&s, Some(r)).is_err(), "{r}");
        }
        for r in [
            "https://notspam.example/",
            "https://a.bad.example/",
            "https://good.example/bad.example",
            "https://good.example/?r=spam.example",
            "https://x.example/other",
            "bad.example",
        ] {
            c.check_blocklist(&s, Some(r)).unwrap();
        }
    }
}
