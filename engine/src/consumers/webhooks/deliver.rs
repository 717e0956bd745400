//! One webhook's delivery task: follows the stream from the cursor, posts each event
//! (or, for index-only webhooks far behind, the latest event of each substream), and
//! retries a failed delivery with exponential backoff and jitter, honouring
//! `Retry-After`, until it succeeds, the webhook is deleted or the retry budget runs
//! out, which pauses the webhook with a log entry. A replay (`Deliverer::replay`) sends
//! stored events again the same way, without moving the cursor.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::watch;

use super::signing::Secret;
use super::{Progress, WebhookSettings};
use crate::Engine;
use crate::consumers::{Delivery, Follow, Start};
use crate::event::{NewEvent, StoredEvent};
use crate::metrics::Metrics;
use crate::order::Position;
use crate::path::StreamPath;
use crate::selector::Selector;
use crate::store::SharedEvent;
use crate::store::read::{Cursor, EventQuery, Scope};
use crate::store::webhook_writes::{WebhookRow, WebhookWrite};

/// How often a moving cursor is saved (and when the task stops or waits).
pub(super) const SAVE_EVERY: Duration = Duration::from_millis(250);

/// An index-only webhook given this many events at once is behind: each substream's
/// events are coalesced to its latest.
const COALESCE_AT: usize = 100;

/// Events read per page of a replay.
const REPLAY_PAGE: usize = 256;

/// The longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

pub(super) struct Deliverer {
    pub engine: Arc<Engine>,
    pub client: reqwest::Client,
    pub settings: WebhookSettings,
    pub metrics: Arc<Metrics>,
    pub progress: Arc<Mutex<Progress>>,
    pub stop: watch::Receiver<bool>,
    pub path: StreamPath,
    pub secret: Secret,
    pub url: reqwest::Url,
    pub row: WebhookRow,
    /// The lease the webhook runs under, where leases are kept.
    pub fence: Option<crate::store::cluster::Fence>,
}

enum Outcome {
    Delivered,
    Stopped,
    /// The retry budget ran out: why, after how many failed attempts.
    Exhausted(String, u32),
}

impl Deliverer {
    pub(super) async fn run(self) {
        let id = self.row.id.clone();
        let selector = match Selector::parse_query(&self.row.selector) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(webhook = %id, error = %e.message, "stored selector does not parse");
                return;
            }
        };
        let follow = Follow::Stream(self.path.clone());
        let start = Start::Position(self.row.cursor);
        let mut sub = match self
            .engine
            .follow(follow, selector, self.row.data, start)
            .await
        {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(webhook = %id, error = %e.message, "cannot follow the stream");
                self.set_error(e.message);
                return;
            }
        };
        let mut delivered = self.row.cursor;
        let mut saved = self.row.cursor;
        let mut last_save = Instant::now();
        loop {
            let unsaved = delivered != saved;
            let mut stop = self.stop.clone();
            let wait = async move {
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => {}
                    _ = tokio::time::sleep(SAVE_EVERY), if unsaved => {}
                }
            };
            let batch = match sub.next_delivery(wait).await {
                Ok(Delivery::Events(b)) => b,
                Ok(Delivery::Notice(n)) => n.events.iter().map(|l| l.event.clone()).collect(),
                Ok(Delivery::Spliced(path)) => {
                    // a delivery of its own type, then the new history from index 0
                    // as any other events (API §12)
                    let notice = splice_notice(&path, sub.floor());
                    let msg_id = format!("msg_{}_splice_{}", self.row.id, sub.floor());
                    match self.send(&notice, &msg_id).await {
                        Outcome::Delivered => continue,
                        Outcome::Stopped => {
                            self.save(delivered).await;
                            return;
                        }
                        Outcome::Exhausted(reason, failures) => {
                            self.pause(delivered, &notice, reason, failures).await;
                            return;
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(webhook = %id, error = %e.message, "webhook stopped reading its stream");
                    self.set_error(e.message);
                    break;
                }
            };
            if batch.is_empty() {
                if delivered != saved {
                    self.save(delivered).await;
                    saved = delivered;
                    last_save = Instant::now();
                }
                if *self.stop.borrow() {
                    return;
                }
                continue;
            }
            for e in coalesce(batch, self.row.data) {
                match self.deliver(&e).await {
                    Outcome::Delivered => {
                        delivered = e.position;
                        self.lock().cursor = delivered;
                        if last_save.elapsed() >= SAVE_EVERY {
                            self.save(delivered).await;
                            saved = delivered;
                            last_save = Instant::now();
                        }
                    }
                    Outcome::Stopped => {
                        self.save(delivered).await;
                        return;
                    }
                    Outcome::Exhausted(reason, failures) => {
                        self.pause(delivered, &e, reason, failures).await;
                        return;
                    }
                }
            }
        }
        self.save(delivered).await;
    }

    /// Delivers again the stored events of the webhook's stream that `selector` picks
    /// (the webhook's own, narrowed to the replayed indexes), in order, each with the
    /// message id of its first delivery; leaves the live cursor alone. Stops at the
    /// first event whose retry budget runs out, and says so in the log.
    pub(super) async fn replay(self, selector: Selector) {
        let scope = match self.engine.resolve(&self.path).await {
            Ok(Some(resolved)) => resolved.scope,
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e.message, "the replay cannot read its stream");
                return;
            }
        };
        // a substream with no events yet has nothing to replay
        let Some(scope) = scope else { return };
        let prefix = format!("{}/{}", self.path.account, self.path.stream);
        let mut cursor = match scope {
            Scope::Substream(_) => Cursor::Index(selector.from.unwrap_or_default()),
            Scope::Factory(_) => Cursor::After(Position::START),
        };
        let mut sent = 0u64;
        loop {
            let query = EventQuery {
                scope,
                prefix: &prefix,
                selector: &selector,
                cursor,
                limit: REPLAY_PAGE,
            };
            let page = match self.engine.read(&query).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(error = %e.message, "the replay cannot read its stream");
                    return;
                }
            };
            for e in &page.events {
                match self.deliver(&SharedEvent::new(e.clone())).await {
                    Outcome::Delivered => sent += 1,
                    Outcome::Stopped => return,
                    Outcome::Exhausted(reason, _) => {
                        tracing::warn!(%reason, sent, "the replay stopped");
                        return;
                    }
                }
            }
            match page.next_cursor(scope) {
                Some(next) if page.more => cursor = next,
                _ => break,
            }
        }
        tracing::info!(sent, "replay delivered");
    }

    /// Whether this node still holds the webhook's lease (always, without leases).
    fn holds_lease(&self) -> bool {
        match (&self.fence, &self.engine.cluster) {
            (Some(fence), Some(cluster)) => cluster.valid(fence),
            _ => true,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_error(&self, error: String) {
        self.lock().last_error = Some(error);
    }

    async fn save(&self, cursor: Position) {
        let write = WebhookWrite::Cursor {
            id: self.row.id.clone(),
            cursor,
            fence: self.fence.clone(),
        };
        if let Err(e) = self.engine.store.writer.webhook(write).await {
            tracing::warn!(webhook = %self.row.id, error = %e.message, "cannot save the webhook cursor");
        }
    }

    async fn pause(&self, cursor: Position, e: &StoredEvent, reason: String, failures: u32) {
        tracing::warn!(webhook = %self.row.id, %reason, "webhook paused");
        let entry = serde_json::json!({
            "webhook": self.row.id,
            "url": self.row.url,
            "stream": e.stream,
            "index": e.index,
            "message": format!("webhook {} paused: {reason}", self.row.id),
        });
        let log = NewEvent::log_entry("error", &entry);
        let write = WebhookWrite::Pause {
            id: self.row.id.clone(),
            cursor,
            reason,
            failures,
            log: Box::new((self.path.logs(), log)),
            fence: self.fence.clone(),
        };
        match self.engine.store.writer.webhook(write).await {
            Ok(true) => {
                self.metrics.webhooks_paused.inc();
            }
            Ok(false) => {}
            Err(e) => {
                tracing::error!(webhook = %self.row.id, error = %e.message, "cannot pause the webhook");
            }
        }
    }

    /// Delivers one event, retrying until it is accepted, the task is stopped or the
    /// retry budget runs out.
    async fn deliver(&self, e: &SharedEvent) -> Outcome {
        // stable across retries and restarts: the receiver deduplicates on it
        let msg_id = format!("msg_{}_{}", self.row.id, e.position);
        self.send(e, &msg_id).await
    }

    /// Delivers one event as message `msg_id` (see [`Deliverer::deliver`]).
    async fn send(&self, e: &SharedEvent, msg_id: &str) -> Outcome {
        let msg_id = msg_id.to_owned();
        let body = if self.row.data {
            e.envelope_json().clone()
        } else {
            e.reference_json().clone()
        };
        // one step more than the event, for an append that a delivery may make
        let hops = crate::dispatch::hops(e.origin.as_deref()).saturating_add(1);
        let mut failures: u32 = 0;
        let mut first_failure: Option<Instant> = None;
        loop {
            // another node delivers from the saved cursor on once the lease is gone
            if *self.stop.borrow() || !self.holds_lease() {
                return Outcome::Stopped;
            }
            self.metrics.webhook_attempts.inc();
            let mut stop = self.stop.clone();
            let (ok, error, retry_after) = tokio::select! {
                r = self.attempt(&msg_id, &body, hops) => r,
                _ = stop.wait_for(|s| *s) => return Outcome::Stopped,
            };
            if ok {
                let lag_ms = (now_ms() - e.timestamp).max(0);
                self.metrics
                    .webhook_lag_seconds
                    .observe(lag_ms as f64 / 1000.0);
                let mut p = self.lock();
                p.failures = 0;
                p.last_error = None;
                return Outcome::Delivered;
            }
            self.metrics.webhook_failures.inc();
            failures += 1;
            let since = *first_failure.get_or_insert_with(Instant::now);
            {
                let mut p = self.lock();
                p.failures = failures;
                p.last_error = Some(error.clone());
            }
            // the receiver's Retry-After wins over the backoff (within an hour)
            let delay = match retry_after {
                Some(d) => d.min(MAX_RETRY_AFTER),
                None => backoff(&self.settings, failures),
            };
            if since.elapsed() + delay > self.settings.retry_budget {
                return Outcome::Exhausted(
                    format!(
                        "{failures} attempts to deliver index {} of {} failed over {} s; the \
                         last: {error}",
                        e.index,
                        e.stream,
                        since.elapsed().as_secs()
                    ),
                    failures,
                );
            }
            tracing::debug!(webhook = %self.row.id, failures, ?delay, %error, "delivery failed; retrying");
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop.wait_for(|s| *s) => return Outcome::Stopped,
            }
        }
    }

    /// One POST: (accepted, what went wrong, the receiver's `Retry-After`).
    async fn attempt(
        &self,
        msg_id: &str,
        body: &Bytes,
        hops: u32,
    ) -> (bool, String, Option<Duration>) {
        let timestamp = now_ms() / 1000;
        let signature = self.secret.sign(msg_id, timestamp, body);
        let sent = self
            .client
            .post(self.url.clone())
            .header("content-type", "application/json")
            .header("webhook-id", msg_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .header(crate::dispatch::HOPS_HEADER, hops)
            .body(body.clone())
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => (true, String::new(), None),
            Ok(r) => {
                let retry_after = r
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| retry_after(v, SystemTime::now()));
                (
                    false,
                    format!("the receiver answered {}", r.status()),
                    retry_after,
                )
            }
            Err(e) => (false, describe(&e), None),
        }
    }
}

/// A `Retry-After` value as the delay from `now` (RFC 9110 §10.2.3): delay-seconds,
/// or an HTTP-date (a date already past is no delay). Anything else is ignored, and
/// the backoff applies.
fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// A reqwest error with its causes (the top level alone says little).
fn describe(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() {
        "no answer within the timeout".to_owned()
    } else {
        e.to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The delay before retry number `failures` (1-based): doubling from the initial delay
/// up to the maximum, times a random factor in [0.5, 1] so that receivers that come
/// back are not hit by every sender at once.
fn backoff(settings: &WebhookSettings, failures: u32) -> Duration {
    let exp = settings
        .retry_initial
        .saturating_mul(1u32 << failures.saturating_sub(1).min(30))
        .min(settings.retry_max);
    let random = (uuid::Uuid::new_v4().as_u128() & 0xffff) as f64 / 65_535.0;
    exp.mul_f64(0.5 + random / 2.0)
}

/// For index-only webhooks given many events at once, keeps the latest event of each
/// (sub)stream (API §5: index-only deliveries may be coalesced to the latest index).
fn coalesce(batch: Vec<Arc<SharedEvent>>, data: bool) -> Vec<Arc<SharedEvent>> {
    if data || batch.len() < COALESCE_AT {
        return batch;
    }
    let mut out: Vec<Arc<SharedEvent>> = Vec::new();
    for e in batch.into_iter().rev() {
        if !out.iter().any(|o| o.stream == e.stream) {
            out.push(e);
        }
    }
    out.reverse();
    out
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The `eddy.splice` delivery for a splice of `path` heard at `floor`: the new
/// history follows from index 0.
fn splice_notice(path: &crate::path::StreamPath, floor: Position) -> SharedEvent {
    let stream = path.to_string();
    let data = serde_json::json!({ "stream": stream }).to_string();
    SharedEvent::new(crate::event::StoredEvent {
        stream,
        index: crate::order::Index(0),
        id: crate::event::derived_id(0, &[b"splice", &floor.0.to_le_bytes()]),
        event_type: "eddy.splice".into(),
        timestamp: crate::store::writer::now_ms(),
        content_type: "application/json".into(),
        data: data.into(),
        metadata: None,
        origin: None,
        position: floor,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::order::Index;

    fn event(stream: &str, index: u64, position: i64) -> Arc<SharedEvent> {
        Arc::new(SharedEvent::new(StoredEvent {
            stream: stream.to_owned(),
            index: Index(index),
            id: uuid::Uuid::nil(),
            event_type: "t".to_owned(),
            timestamp: 0,
            content_type: "application/json".to_owned(),
            data: Bytes::new(),
            metadata: None,
            origin: None,
            position: Position(position),
        }))
    }

    #[test]
    fn backoff_doubles_within_jitter_and_caps() {
        let s = WebhookSettings {
            retry_initial: Duration::from_millis(1000),
            retry_max: Duration::from_millis(5000),
            ..WebhookSettings::default()
        };
        for (n, lo, hi) in [
            (1, 500, 1000),
            (2, 1000, 2000),
            (3, 2000, 4000),
            (9, 2500, 5000),
        ] {
            let d = backoff(&s, n).as_millis();
            assert!((lo..=hi).contains(&d), "retry {n}: {d} ms");
        }
    }

    #[test]
    fn retry_after_takes_seconds_and_http_dates() {
        let now = UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        assert_eq!(retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(retry_after(" 0 ", now), Some(Duration::ZERO));
        // 2015-10-21T07:28:00Z, four seconds after `now`, in the three forms
        for date in [
            "Wed, 21 Oct 2015 07:28:04 GMT",
            "Wednesday, 21-Oct-15 07:28:04 GMT",
            "Wed Oct 21 07:28:04 2015",
        ] {
            assert_eq!(
                retry_after(date, now),
                Some(Duration::from_secs(4)),
                "{date}"
            );
        }
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("soon", now), None);
        assert_eq!(retry_after("-5", now), None);
    }

    #[test]
    fn coalesces_only_long_index_only_batches() {
        let short: Vec<_> = (0..5).map(|i| event("a/s", i, i as i64)).collect();
        assert_eq!(coalesce(short.clone(), false).len(), 5);
        let long: Vec<_> = (0..200)
            .map(|i| {
                event(
                    if i % 2 == 0 { "a/f('x')" } else { "a/f('y')" },
                    i / 2,
                    i as i64,
                )
            })
            .collect();
        let kept = coalesce(long.clone(), false);
        let got: Vec<(&str, u64)> = kept
            .iter()
            .map(|e| (e.stream.as_str(), e.index.get()))
            .collect();
        assert_eq!(got, [("a/f('x')", 99), ("a/f('y')", 99)]);
        assert_eq!(coalesce(long, true).len(), 200);
    }
}
