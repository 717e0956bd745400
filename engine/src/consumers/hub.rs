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

use crate::metrics::Metrics;
use crate::store::Committed;

/// Notices a subscriber may have queued before it counts as lagging: under load an
/// SSE subscriber takes its queue every 20 ms, which this covers up to 12 800 commits
/// a second (group commits are fsync-bound at a few thousand). The notices are shared,
/// so a longer queue holds only pointers.
const QUEUE: usize = 256;

/// What a subscriber follows.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Interest {
    /// One stream (every substream of it, when it is a factory).
    Stream { account: String, stream: String },
    /// Every stream of an account.
    Account(String),
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
    /// Starts the fan-out task on the commit announcements.
    pub(crate) fn start(
        mut commits: broadcast::Receiver<Arc<Committed>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let hub = Hub {
            registry: Arc::default(),
            next_id: Arc::new(AtomicU64::new(1)),
            metrics,
        };
        let task = hub.clone();
        tokio::spawn(async move {
            loop {
                match commits.recv().await {
                    Ok(notice) => task.publish(&notice),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(
                            missed = n,
                            "the live fan-out fell behind; subscribers catch up from storage"
                        );
                        task.lag_all();
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        hub
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
        let reg = self.lock();
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
