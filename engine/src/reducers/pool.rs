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
/// share of what the others leave, so the sum stays within the budget (up to what a
/// sandbox allocates between two measurements of it).
///
/// A sandbox folding a slice holds its whole allowance (a reservation) until the
/// slice ends, so that two threads folding at once cannot each be given what the
/// other is about to take.
pub(crate) struct JsMemory {
    total: usize,
    ledger: Mutex<Ledger>,
    /// The sum of the measured sizes, for /metrics.
    gauge: prometheus_client::metrics::gauge::Gauge,
}

#[derive(Default)]
struct Ledger {
    /// Each sandbox's size when last measured.
    used: HashMap<i64, usize>,
    /// The allowances of sandboxes folding now.
    reserved: HashMap<i64, usize>,
}

impl JsMemory {
    pub(crate) fn new(total: usize, gauge: prometheus_client::metrics::gauge::Gauge) -> Self {
        Self {
            total,
            ledger: Mutex::new(Ledger::default()),
            gauge,
        }
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The most a stream's sandbox may hold while it folds a slice: its own limit, or
    /// what the other sandboxes leave of the total when that is less. Held for the
    /// stream until [`JsMemory::release`]. `None` (nothing held) while sandboxes
    /// folding now hold so much that less than [`HEADROOM`] would be left above this
    /// one's size, where their sizes alone would leave more: the caller waits for them,
    /// and once it has waited long enough (`waited`) takes what their sizes leave.
    /// Never 0, which QuickJS takes for no limit.
    pub(crate) fn reserve(
        &self,
        stream_id: i64,
        own_limit: usize,
        in_use: usize,
        waited: bool,
    ) -> Option<usize> {
        let mut ledger = self.ledger();
        // each other sandbox counts with its size, or its reservation when larger
        let (mut measured, mut held) = (0usize, 0usize);
        for (id, &used) in &ledger.used {
            if *id != stream_id {
                measured += used;
                held += used.max(ledger.reserved.get(id).copied().unwrap_or(0));
            }
        }
        for (id, &reserved) in &ledger.reserved {
            if *id != stream_id && !ledger.used.contains_key(id) {
                held += reserved;
            }
        }
        let alone = own_limit.min(self.total.saturating_sub(measured));
        let mut allowed = own_limit.min(self.total.saturating_sub(held));
        if allowed < alone && allowed < in_use.saturating_add(HEADROOM) {
            if !waited {
                return None;
            }
            allowed = alone;
        }
        let allowed = allowed.max(1);
        ledger.reserved.insert(stream_id, allowed);
        Some(allowed)
    }

    /// Whether the sandboxes, each grown to `own_limit`, could together pass the
    /// total: then the shared budget is in play and every sandbox is measured after
    /// every slice, so that growth not measured yet is never handed out again.
    pub(crate) fn in_play(&self, stream_id: i64, own_limit: usize) -> bool {
        let ledger = self.ledger();
        let others = ledger.used.keys().filter(|id| **id != stream_id).count();
        (others + 1).saturating_mul(own_limit) > self.total
    }

    /// Ends the stream's reservation: from here on it counts as measured.
    pub(crate) fn release(&self, stream_id: i64) {
        self.ledger().reserved.remove(&stream_id);
    }

    pub(crate) fn record(&self, stream_id: i64, bytes: usize) {
        let mut ledger = self.ledger();
        ledger.used.insert(stream_id, bytes);
        self.gauge.set(ledger.used.values().sum::<usize>() as i64);
    }

    pub(crate) fn forget(&self, stream_id: i64) {
        let mut ledger = self.ledger();
        ledger.used.remove(&stream_id);
        ledger.reserved.remove(&stream_id);
        self.gauge.set(ledger.used.values().sum::<usize>() as i64);
    }
}

/// A reservation of [`JsMemory`], released when dropped (also when a slice fails).
pub(crate) struct Reservation<'a> {
    memory: &'a JsMemory,
    stream_id: i64,
    pub(crate) allowed: usize,
}

/// Room a sandbox gets above its size before it waits for other threads' slices.
const HEADROOM: usize = 4 * 1024 * 1024;
/// The longest a thread waits for others' reservations before it folds with what
/// their sizes alone leave (as when threads did not reserve), so none waits for good.
const WAIT_AT_MOST: Duration = Duration::from_millis(100);

impl<'a> Reservation<'a> {
    /// Reserves for a slice, waiting up to [`WAIT_AT_MOST`] for the slices of other
    /// threads to end when theirs leave too little.
    pub(crate) fn new(
        memory: &'a JsMemory,
        stream_id: i64,
        own_limit: usize,
        in_use: usize,
    ) -> Self {
        let until = Instant::now() + WAIT_AT_MOST;
        let allowed = loop {
            let waited = Instant::now() >= until;
            if let Some(allowed) = memory.reserve(stream_id, own_limit, in_use, waited) {
                break allowed;
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        Self {
            memory,
            stream_id,
            allowed,
        }
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.memory.release(self.stream_id);
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

#[cfg(test)]
mod memory_tests {
    use super::JsMemory;

    const MIB: usize = 1024 * 1024;

    #[test]
    fn reservations_share_out_the_total_once_and_never_give_no_limit() {
        let memory = JsMemory::new(100 * MIB, Default::default());
        // one thread folds with its whole limit held
        assert_eq!(memory.reserve(1, 64 * MIB, 0, false), Some(64 * MIB));
        // another, beside it, gets what that leaves when there is room above its size
        assert_eq!(memory.reserve(2, 64 * MIB, MIB, false), Some(36 * MIB));
        memory.release(2);
        // with no room left it waits, then folds with what the sizes alone leave
        memory.record(3, 34 * MIB);
        assert_eq!(memory.reserve(2, 64 * MIB, MIB, false), None);
        assert_eq!(memory.reserve(2, 64 * MIB, MIB, true), Some(64 * MIB));
        memory.release(2);
        memory.release(1);
        // a budget used up by sizes alone is what it is: at least one byte, never 0
        memory.record(1, 70 * MIB);
        assert_eq!(memory.reserve(2, 64 * MIB, 0, false), Some(1));
    }
}
