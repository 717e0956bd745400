//! What the writer announces after each durable commit: the positions, the streams
//! touched and the events themselves, so live consumers (SSE subscribers, the reducer
//! worker's wake-ups) need not read back what was just written.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use crate::event::StoredEvent;
use crate::order::{Index, Position};
use crate::path::StreamPath;

/// The most data bytes one notice carries; the events past it go without their data,
/// and a consumer that needs it reads them from storage. The broadcast channel keeps
/// its last notices alive, so this bounds the memory it holds.
pub(crate) const LIVE_DATA_BUDGET: usize = 64 * 1024;

/// The most events one notice carries; a commit with more announces the first ones and
/// says it is incomplete, and consumers read the rest from storage. With the broadcast
/// channel's capacity, this bounds the memory notices hold.
pub(crate) const LIVE_EVENTS_MAX: usize = 256;

/// Announced after every commit that wrote events.
#[derive(Debug, Clone)]
pub struct Committed {
    /// The global position of the last event committed.
    pub last_position: Position,
    /// The ids of the streams that received events.
    pub streams: Vec<i64>,
    /// The events appended (reducer log entries among them), in position order: all
    /// of them, or the first [`LIVE_EVENTS_MAX`] when `complete` is false.
    pub events: Vec<LiveEvent>,
    pub complete: bool,
    /// Every (sub)stream that received events, once each.
    pub paths: Vec<Arc<StreamPath>>,
    /// The streams whose history a splice replaced in this commit (API §12): their
    /// subscribers start again from index 0.
    pub spliced: Vec<Arc<StreamPath>>,
    /// Consumers' renderings of the whole notice (see [`Committed::rendered`]).
    pub(crate) renders: [OnceLock<Bytes>; RENDER_KINDS],
    /// The ranges of the events' indexes and timestamps, and whether all carry their
    /// data: each subscriber asks whether it wants a notice whole, and the answer
    /// should not cost a pass over the events per subscriber.
    pub(crate) summary: Summary,
    /// How many commits the notice stands for: 1, or more once the live fan-out
    /// merged consecutive notices (see [`Committed::merged`]).
    pub(crate) commits: usize,
}

/// What [`Committed::summary`] holds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Summary {
    pub min_index: Index,
    pub max_index: Index,
    pub min_timestamp: i64,
    pub max_timestamp: i64,
    pub all_data: bool,
}

impl Summary {
    fn of(events: &[LiveEvent]) -> Self {
        let mut s = Summary {
            min_index: Index(u64::MAX),
            max_index: Index(0),
            min_timestamp: i64::MAX,
            max_timestamp: i64::MIN,
            all_data: true,
        };
        for l in events {
            s.min_index = s.min_index.min(l.event.index);
            s.max_index = s.max_index.max(l.event.index);
            s.min_timestamp = s.min_timestamp.min(l.event.timestamp);
            s.max_timestamp = s.max_timestamp.max(l.event.timestamp);
            s.all_data &= l.has_data;
        }
        s
    }
}

/// How many renderings of a notice [`Committed::rendered`] keeps.
pub const RENDER_KINDS: usize = 8;

impl Committed {
    pub(crate) fn new(
        last_position: Position,
        streams: Vec<i64>,
        events: Vec<LiveEvent>,
        complete: bool,
        paths: Vec<Arc<StreamPath>>,
    ) -> Self {
        Self {
            last_position,
            streams,
            summary: Summary::of(&events),
            events,
            complete,
            paths,
            spliced: Vec::new(),
            renders: Default::default(),
            commits: 1,
        }
    }

    /// One notice for consecutive complete notices of the same (sub)streams, in commit
    /// order, as if their events had been committed together: what the live fan-out
    /// hands its subscribers when commits come faster than they need one by one.
    pub(crate) fn merged(parts: &[Arc<Committed>]) -> Self {
        let mut streams: Vec<i64> = Vec::new();
        let mut events = Vec::with_capacity(parts.iter().map(|p| p.events.len()).sum());
        for p in parts {
            for s in &p.streams {
                if !streams.contains(s) {
                    streams.push(*s);
                }
            }
            events.extend(p.events.iter().cloned());
        }
        let last = parts.last().expect("merging at least one notice");
        let mut merged = Self::new(
            last.last_position,
            streams,
            events,
            parts.iter().all(|p| p.complete),
            last.paths.clone(),
        );
        merged.commits = parts.iter().map(|p| p.commits).sum();
        merged.spliced = parts.iter().flat_map(|p| p.spliced.clone()).collect();
        merged
    }

    /// The rendering `kind` (below [`RENDER_KINDS`]) of the whole notice, made by the
    /// first consumer that asks and shared by the rest: a hundred subscribers of a
    /// stream that all receive a notice in full need its bytes made once, not a
    /// hundred times. A consumer names by `kind` everything its rendering depends on
    /// besides the notice. Past the kinds there are, it renders without keeping.
    pub fn rendered(&self, kind: usize, render: impl FnOnce(&Committed) -> Bytes) -> Bytes {
        match self.renders.get(kind) {
            Some(slot) => slot.get_or_init(|| render(self)).clone(),
            None => render(self),
        }
    }
}

/// One committed event, as live consumers see it.
#[derive(Debug, Clone)]
pub struct LiveEvent {
    /// The event as a read would return it; `data` is empty when `has_data` is false.
    pub event: Arc<SharedEvent>,
    /// The (sub)stream it was appended to.
    pub path: Arc<StreamPath>,
    /// False when the data was left out to keep the notice within
    /// [`LIVE_DATA_BUDGET`].
    pub has_data: bool,
}

#[cfg(test)]
impl LiveEvent {
    /// An event of type `t` without data at `index` of `path`, at global `position`:
    /// what the fan-out's tests put in their notices.
    pub(crate) fn for_test(path: &Arc<StreamPath>, index: u64, position: i64) -> Self {
        Self {
            event: Arc::new(SharedEvent::new(StoredEvent {
                stream: path.to_string(),
                index: Index(index),
                id: uuid::Uuid::nil(),
                event_type: "t".to_owned(),
                timestamp: 0,
                content_type: "application/octet-stream".to_owned(),
                data: Bytes::new(),
                metadata: None,
                origin: None,
                position: Position(position),
            })),
            path: path.clone(),
            has_data: true,
        }
    }
}

/// An event handed to consumers, shared by all of them: its JSON forms are rendered
/// once, by the first consumer that needs each, not once per subscriber.
#[derive(Debug)]
pub struct SharedEvent {
    event: StoredEvent,
    reference: OnceLock<Bytes>,
    envelope: OnceLock<Bytes>,
}

impl SharedEvent {
    pub fn new(event: StoredEvent) -> Self {
        Self {
            event,
            reference: OnceLock::new(),
            envelope: OnceLock::new(),
        }
    }

    /// `{"stream","index","type"}` as JSON (API §5's default payload).
    pub fn reference_json(&self) -> &Bytes {
        self.reference
            .get_or_init(|| json_bytes(&self.event.reference()))
    }

    /// The envelope of API §3 as JSON.
    pub fn envelope_json(&self) -> &Bytes {
        self.envelope
            .get_or_init(|| json_bytes(&self.event.envelope()))
    }
}

impl std::ops::Deref for SharedEvent {
    type Target = StoredEvent;

    fn deref(&self) -> &StoredEvent {
        &self.event
    }
}

fn json_bytes(value: &impl serde::Serialize) -> Bytes {
    match serde_json::to_vec(value) {
        Ok(v) => Bytes::from(v),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode an event");
            Bytes::from_static(b"null")
        }
    }
}
