//! The pool of reducer threads (API §10): each stream's reducers live on one thread
//! (its sandbox is a QuickJS runtime, which stays on the thread that made it), a new
//! stream goes to the thread with the fewest, commits wake only the threads whose
//! streams received events, and every thread shares the server-wide JavaScript memory
//! budget and the shutdown deadline.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use super::worker::Msg;
use crate::error::{EngineError, ErrorCode, Result};

/// Which thread runs each stream's reducers.
#[derive(Default)]
pub(crate) struct Placement {
    streams: RwLock<HashMap<i64, usize>>,
}

impl Placement {
    /// The thread of a stream, placing it on the least loaded of `threads` when new.
    pub(crate) fn place(&self, stream_id: i64, threads: usize) -> usize {
        if let Some(&t) = self.read().get(&stream_id) {
            return t;
        }
        let mut streams = self.streams.write().unwrap_or_else(|e| e.into_inner());
        if let Some(&t) = streams.get(&stream_id) {
            return t;
        }
        let mut load = vec![0usize; threads.max(1)];
        for &t in streams.values() {
            load[t] += 1;
        }
        let t = (0..load.len()).min_by_key(|&t| load[t]).unwrap_or(0);
        streams.insert(stream_id, t);
        t
    }

    pub(crate) fn get(&self, stream_id: i64) -> Option<usize> {
        self.read().get(&stream_id).copied()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<i64, usize>> {
        self.streams.read().unwrap_or_else(|e| e.into_inner())
    }
}

/// The JavaScript memory all reducer sandboxes share: each one's limit is its own
/// share of what the others leave, so the sum stays within the budget (up to what
/// the threads allocate between two measurements).
pub(crate) struct JsMemory {
    total: usize,
    used: Mutex<HashMap<i64, usize>>,
    /// The sum of `used`, for /metrics.
    gauge: prometheus_client::metrics::gauge::Gauge,
}

impl JsMemory {
    pub(crate) fn new(total: usize, gauge: prometheus_client::metrics::gauge::Gauge) -> Self {
        Self {
            total,
            used: Mutex::new(HashMap::new()),
            gauge,
        }
    }

    /// The most a stream's sandbox may hold now: its own limit, or what the other
    /// sandboxes leave of the total when that is less.
    pub(crate) fn allowance(&self, stream_id: i64, own_limit: usize) -> usize {
        let used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        let others: usize = used
            .iter()
            .filter(|(id, _)| **id != stream_id)
            .map(|(_, n)| *n)
            .sum();
        own_limit.min(self.total.saturating_sub(others))
    }

    pub(crate) fn record(&self, stream_id: i64, bytes: usize) {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        used.insert(stream_id, bytes);
        self.gauge.set(used.values().sum::<usize>() as i64);
    }

    pub(crate) fn forget(&self, stream_id: i64) {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        used.remove(&stream_id);
        self.gauge.set(used.values().sum::<usize>() as i64);
    }
}

/// When the threads stop folding: never, until shutdown sets a deadline. They stop
/// between two events once it has passed, save what they folded and exit.
pub(crate) struct StopAt {
    epoch: Instant,
    /// Nanoseconds since `epoch`; `u64::MAX` while no stop is due.
    at: AtomicU64,
}

impl StopAt {
    pub(crate) fn new() -> Self {
        Self {
            epoch: Instant::now(),
            at: AtomicU64::new(u64::MAX),
        }
    }

    /// Sets the deadline (an earlier one wins).
    pub(crate) fn set(&self, deadline: Instant) {
        let nanos = deadline.saturating_duration_since(self.epoch).as_nanos() as u64;
        self.at.fetch_min(nanos, Ordering::AcqRel);
    }

    pub(crate) fn deadline(&self) -> Option<Instant> {
        match self.at.load(Ordering::Acquire) {
            u64::MAX => None,
            n => Some(self.epoch + Duration::from_nanos(n)),
        }
    }

    pub(crate) fn reached(&self) -> bool {
        self.deadline().is_some_and(|d| Instant::now() >= d)
    }
}

/// One reducer thread: its channel and its handle.
pub(crate) struct Lane {
    pub(crate) tx: std::sync::mpsc::Sender<Msg>,
    pub(crate) thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Lane {
    pub(crate) fn send(&self, msg: Msg) -> Result<()> {
        self.tx.send(msg).map_err(|_| stopped())
    }
}

pub(crate) fn stopped() -> EngineError {
    EngineError::new(ErrorCode::Unavailable, "the reducer threads have stopped")
}

/// Forwards commits to the threads whose streams received events; while no reducer
/// is loaded, commits wake nobody (a thread wake-up per commit is a measurable share
/// of ingest).
pub(crate) fn route_commits(
    mut commits: tokio::sync::broadcast::Receiver<Arc<crate::store::Committed>>,
    placement: Arc<Placement>,
    lanes: Vec<std::sync::mpsc::Sender<Msg>>,
) {
    tokio::spawn(async move {
        let mut woken = vec![false; lanes.len()];
        loop {
            match commits.recv().await {
                Ok(commit) => {
                    if placement.is_empty() {
                        continue;
                    }
                    woken.iter_mut().for_each(|w| *w = false);
                    for &stream_id in &commit.streams {
                        if let Some(t) = placement.get(stream_id) {
                            woken[t] = true;
                        }
                    }
                    for (t, lane) in lanes.iter().enumerate() {
                        if woken[t] && lane.send(Msg::Wake).is_err() {
                            return;
                        }
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    // commits were missed: wake every thread to look
                    for lane in &lanes {
                        let _ = lane.send(Msg::Wake);
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
}
