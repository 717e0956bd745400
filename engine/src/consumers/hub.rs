//! The live fan-out: one task takes each commit notice and hands it to the
//! subscribers it concerns, found by stream name or account, so a commit wakes only
//! its own subscribers however many others there are.
//!
//! Each subscriber has a small bounded queue. When a queue is full (or the hub itself
//! fell behind the commit announcements), the subscriber is marked lagged instead of
//! being sent more: it then catches up from storage, where every announced event
//! already is, and nothing is dropped silently. Memory stays bounded by queue length
//! times subscribers, and the notices themselves are shared (`Arc`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, broadcast, mpsc};
use tokio::time::{Duration, Instant};

use crate::metrics::Metrics;
use crate::store::Committed;

/// Notices a subscriber may have queued before it counts as lagging: under load an
/// SSE subscriber takes its queue every 20 ms, which this covers up to 12 800 commits
/// a second (group commits are fsync-bound at a few thousand). The notices are shared,
/// so a longer queue holds only pointers.
const QUEUE: usize = 256;

/// How long the fan-out holds a notice to merge the next ones into it, under load:
/// each notice handed to a subscriber costs ~2 µs of its task's time (its queue, the
/// checks of its selector, its share of the frames), which with 100 subscribers of a
/// stream committing 2 000 times a second is 0.4 of a core. Merged, the commits of
/// one window cost that once. The timer rounds up to the millisecond, so a notice
/// waits 2 to 3 ms.
const MERGE_WINDOW: Duration = Duration::from_millis(2);

/// Commits a second from which notices are merged, by default (`--fanout-merge-rate`):
/// above the 1 000 single-event commits a second at which SSE latency is measured,
/// which merging would lengthen by its window.
pub const DEFAULT_MERGE_RATE: u32 = 1_600;

/// The span over which the fan-out counts commits.
const RATE_SPAN: Duration = Duration::from_millis(25);

/// Commits in one [`RATE_SPAN`] from which notices are merged, for a rate in commits a
/// second; `None` (never) for 0.
pub(crate) fn merge_from(rate: u32) -> Option<usize> {
    let spans_per_second = (Duration::from_secs(1).as_millis() / RATE_SPAN.as_millis()) as u32;
    (rate > 0).then(|| rate.div_ceil(spans_per_second) as usize)
}

/// Commits counted in fixed spans: the current one and the last whole one.
#[derive(Default)]
struct Rate {
    since: Option<Instant>,
    current: usize,
    previous: usize,
}

impl Rate {
    fn saw(&mut self, now: Instant) {
        let elapsed = self.since.map(|t| now.saturating_duration_since(t));
        if elapsed.is_none_or(|e| e >= RATE_SPAN) {
            // the span before counts only if it ended just now
            self.previous = match elapsed {
                Some(e) if e < 2 * RATE_SPAN => self.current,
                _ => 0,
            };
            self.current = 0;
            self.since = Some(now);
        }
        self.current += 1;
    }

    /// Whether the last whole span had `from` commits or more.
    fn high(&self, from: Option<usize>) -> bool {
        from.is_some_and(|from| self.previous >= from)
    }
}

/// What a subscriber follows.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Interest {
    /// One stream (every substream of it, when it is a factory).
    Stream { account: String, stream: String },
    /// Every stream of an account.
    Account(String),
    /// Every stream of every account.
    All,
}

struct Slot {
    id: u64,
    tx: mpsc::Sender<Arc<Committed>>,
    signal: Arc<Signal>,
}

/// Tells a subscriber it missed notices.
#[derive(Default)]
pub(crate) struct Signal {
    lagged: AtomicBool,
    notify: Notify,
}

impl Signal {
    fn lag(&self) {
        self.lagged.store(true, Ordering::Release);
        self.notify.notify_one();
    }

    /// Whether notices were missed since the last call (and clears the mark).
    pub(crate) fn take_lagged(&self) -> bool {
        self.lagged.swap(false, Ordering::AcqRel)
    }

    pub(crate) async fn lagged(&self) {
        self.notify.notified().await;
    }
}

/// The subscribers by interest. A std Mutex: held only to look up or change the map,
/// never across an `.await`.
#[derive(Default)]
struct Registry {
    slots: HashMap<Interest, Vec<Slot>>,
    count: usize,
}

/// The fan-out hub; cheap to clone.
#[derive(Clone)]
pub struct Hub {
    registry: Arc<Mutex<Registry>>,
    next_id: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
}

/// A subscriber's end: its queue and lag signal. Dropping it unregisters.
pub(crate) struct Registration {
    hub: Hub,
    interest: Interest,
    id: u64,
    pub(crate) rx: mpsc::Receiver<Arc<Committed>>,
    pub(crate) signal: Arc<Signal>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut reg = self.hub.lock();
        if let Some(slots) = reg.slots.get_mut(&self.interest) {
            slots.retain(|s| s.id != self.id);
            if slots.is_empty() {
                reg.slots.remove(&self.interest);
            }
            reg.count -= 1;
            self.hub.metrics.subscribers.dec();
        }
    }
}

impl Hub {
    /// Starts the fan-out task on the commit announcements, merging them from
    /// `merge_rate` commits a second (0: never; see [`merge_from`]).
    pub(crate) fn start(
        commits: broadcast::Receiver<Arc<Committed>>,
        metrics: Arc<Metrics>,
        merge_rate: u32,
    ) -> Self {
        let hub = Hub {
            registry: Arc::default(),
            next_id: Arc::new(AtomicU64::new(1)),
            metrics,
        };
        tokio::spawn(hub.clone().run(commits, merge_from(merge_rate)));
        hub
    }

    /// The fan-out task: each notice to its subscribers, at once while commits are
    /// few, and merged with the next ones of the same streams for [`MERGE_WINDOW`]
    /// while they come at `from` a span or more.
    async fn run(self, mut commits: broadcast::Receiver<Arc<Committed>>, from: Option<usize>) {
        let mut parts: Vec<Arc<Committed>> = Vec::new();
        let mut rate = Rate::default();
        let mut deadline = Instant::now();
        loop {
            let next = if parts.is_empty() {
                commits.recv().await
            } else {
                match tokio::time::timeout_at(deadline, commits.recv()).await {
                    Ok(next) => next,
                    Err(_) => {
                        self.publish_parts(&mut parts);
                        continue;
                    }
                }
            };
            match next {
                // with nobody subscribed there is nothing to merge for (and nobody to
                // hand the notice to)
                Ok(_) if parts.is_empty() && self.subscribers() == 0 => {}
                Ok(notice) => {
                    let now = Instant::now();
                    rate.saw(now);
                    let fits = parts
                        .first()
                        .is_none_or(|first| notice.complete && first.paths == notice.paths);
                    if !fits {
                        self.publish_parts(&mut parts);
                    }
                    if !(rate.high(from) && notice.complete) {
                        self.publish_parts(&mut parts);
                        self.publish(&notice);
                        continue;
                    }
                    if parts.is_empty() {
                        deadline = now + MERGE_WINDOW;
                    }
                    parts.push(notice);
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    self.publish_parts(&mut parts);
                    tracing::warn!(
                        missed = n,
                        "the live fan-out fell behind; subscribers catch up from storage"
                    );
                    self.lag_all();
                }
                Err(broadcast::error::RecvError::Closed) => {
                    self.publish_parts(&mut parts);
                    return;
                }
            }
        }
    }

    /// Publishes the notices held for merging, as one, and clears them.
    fn publish_parts(&self, parts: &mut Vec<Arc<Committed>>) {
        match parts.len() {
            0 => {}
            1 => self.publish(&parts[0]),
            _ => {
                self.metrics.fanout_merged_notices.inc();
                self.publish(&Arc::new(Committed::merged(parts)));
            }
        }
        parts.clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        // a panic while holding the lock leaves the map consistent (no partial updates)
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a subscriber. Register before reading storage: every commit announced
    /// after this call reaches the queue (or marks it lagged).
    pub(crate) fn register(&self, interest: Interest) -> Registration {
        let (tx, rx) = mpsc::channel(QUEUE);
        let signal = Arc::new(Signal::default());
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut reg = self.lock();
        reg.slots.entry(interest.clone()).or_default().push(Slot {
            id,
            tx,
            signal: signal.clone(),
        });
        reg.count += 1;
        drop(reg);
        self.metrics.subscribers.inc();
        Registration {
            hub: self.clone(),
            interest,
            id,
            rx,
            signal,
        }
    }

    /// How many subscribers are registered.
    pub fn subscribers(&self) -> usize {
        self.lock().count
    }

    fn publish(&self, notice: &Arc<Committed>) {
        let reg = self.lock();
        if reg.count == 0 {
            return;
        }
        // the (few) distinct streams and accounts of the notice
        let mut interests: Vec<Interest> = Vec::with_capacity(notice.paths.len() * 2);
        for p in &notice.paths {
            let stream = Interest::Stream {
                account: p.account.as_str().to_owned(),
                stream: p.stream.as_str().to_owned(),
            };
            if !interests.contains(&stream) {
                interests.push(stream);
            }
            let account = Interest::Account(p.account.as_str().to_owned());
            if !interests.contains(&account) {
                interests.push(account);
            }
        }
        interests.push(Interest::All);
        for interest in &interests {
            for slot in reg.slots.get(interest).into_iter().flatten() {
                if let Err(mpsc::error::TrySendError::Full(_)) = slot.tx.try_send(notice.clone()) {
                    slot.signal.lag();
                }
            }
        }
    }

    fn lag_all(&self) {
        for slot in self.lock().slots.values().flatten() {
            slot.signal.lag();
        }
    }
}

#[cfg(test)]
#[path = "hub_tests.rs"]
mod tests;
