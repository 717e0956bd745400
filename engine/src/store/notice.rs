//! What the writer announces after each durable commit: the positions, the streams
//! touched and the events themselves, so live consumers (SSE subscribers, the reducer
//! worker's wake-ups) need not read back what was just written.

use std::sync::Arc;

use crate::event::StoredEvent;
use crate::path::StreamPath;

/// The most data bytes one notice carries; the events past it go without their data,
/// and a consumer that needs it reads them from storage. The broadcast channel keeps
/// its last notices alive, so this bounds the memory it holds.
pub(crate) const LIVE_DATA_BUDGET: usize = 64 * 1024;

/// Announced after every commit that wrote events.
#[derive(Debug, Clone)]
pub struct Committed {
    /// The global position of the last event committed.
    pub last_position: i64,
    /// The ids of the streams that received events.
    pub streams: Vec<i64>,
    /// The events appended (reducer log entries are not among them), in position order.
    pub events: Vec<LiveEvent>,
}

/// One committed event, as live consumers see it.
#[derive(Debug, Clone)]
pub struct LiveEvent {
    /// The event as a read would return it; `data` is empty when `has_data` is false.
    pub event: StoredEvent,
    /// The (sub)stream it was appended to.
    pub path: Arc<StreamPath>,
    /// False when the data was left out to keep the notice within
    /// [`LIVE_DATA_BUDGET`].
    pub has_data: bool,
}
