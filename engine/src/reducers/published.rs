//! What the reducer threads publish for readers: each reducer's progress and status,
//! and the states it changed since its last checkpoint. State and status reads are
//! answered from here and from the saved states (API §10: reads never wait for a busy
//! reducer thread); a thread publishes after each slice of folding once it has caught
//! up, every [`PUBLISH_BACKLOG`] while it works through a backlog, and before every
//! checkpoint, so a checkpointed state is always one that was published first.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::watch;

use super::ReducerStatus;

/// Longest a reducer that has caught up keeps a newer state unpublished.
pub(super) const PUBLISH_CAUGHT_UP: Duration = Duration::from_millis(5);
/// Longest a reducer working through a backlog keeps newer states unpublished.
pub(super) const PUBLISH_BACKLOG: Duration = Duration::from_millis(100);

/// A state as JSON (`None` while undefined), shared between the publisher, the
/// checkpoint that saves it and the readers.
pub(crate) type StateJson = Option<Arc<str>>;

/// States by substream id, each with the last index folded into it.
pub(crate) type States = HashMap<i64, (i64, StateJson)>;

/// One reducer version as last published.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub status: ReducerStatus,
    pub id: i64,
    pub factory: bool,
    /// States changed since the last checkpoint: (substream id, last index folded,
    /// state). Others are read from the saved states.
    pub states: States,
}

/// Where a state read finds the state it answers.
pub(crate) struct Found {
    pub reducer_id: i64,
    pub factory: bool,
    /// The global position the reducer has folded up to.
    pub position: i64,
    /// On a plain stream, the last index folded.
    pub after_idx: i64,
    /// The published state, when it is newer than the saved one.
    pub state: Option<(i64, StateJson)>,
}

/// Every loaded reducer's published progress, by stream id.
pub(crate) struct Published {
    streams: RwLock<HashMap<i64, Vec<Entry>>>,
    /// Bumped after every publish: state reads waiting for an index watch it.
    progress: watch::Sender<u64>,
}

impl Published {
    pub(crate) fn new() -> Self {
        Self {
            streams: RwLock::new(HashMap::new()),
            progress: watch::channel(0).0,
        }
    }

    pub(crate) fn watch(&self) -> watch::Receiver<u64> {
        self.progress.subscribe()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<i64, Vec<Entry>>> {
        self.streams.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<i64, Vec<Entry>>> {
        self.streams.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds (or replaces) a reducer version: at start, and as soon as a deploy is
    /// stored, before its thread has loaded it.
    pub(crate) fn insert(&self, stream_id: i64, entry: Entry) {
        let mut streams = self.write();
        let list = streams.entry(stream_id).or_default();
        list.retain(|e| e.id != entry.id);
        list.push(entry);
        drop(streams);
        self.bump();
    }

    /// Replaces every version published for a stream (what another node folds, as
    /// saved in the database).
    pub(crate) fn replace_stream(&self, stream_id: i64, entries: Vec<Entry>) {
        let mut streams = self.write();
        if entries.is_empty() {
            streams.remove(&stream_id);
        } else {
            streams.insert(stream_id, entries);
        }
        drop(streams);
        self.bump();
    }

    /// The (version id, position) of each version published for a stream, by id.
    pub(crate) fn positions(&self, stream_id: i64) -> Vec<(i64, i64)> {
        let mut out: Vec<(i64, i64)> = self
            .read()
            .get(&stream_id)
            .map(|list| list.iter().map(|e| (e.id, e.status.position)).collect())
            .unwrap_or_default();
        out.sort_unstable();
        out
    }

    /// The streams with published versions.
    pub(crate) fn stream_ids(&self) -> Vec<i64> {
        self.read().keys().copied().collect()
    }

    /// Removes reducer versions.
    pub(crate) fn remove(&self, stream_id: i64, ids: &[i64]) {
        let mut streams = self.write();
        if let Some(list) = streams.get_mut(&stream_id) {
            list.retain(|e| !ids.contains(&e.id));
            if list.is_empty() {
                streams.remove(&stream_id);
            }
        }
    }

    /// Updates a reducer version that is still published: its status, the states it
    /// changed (merged into those published), and with `saved` the states a
    /// checkpoint has just stored (dropped, as readers find them saved).
    pub(crate) fn update(
        &self,
        stream_id: i64,
        id: i64,
        status: ReducerStatus,
        changed: Vec<(i64, i64, StateJson)>,
        saved: bool,
    ) {
        let mut streams = self.write();
        let Some(entry) = streams
            .get_mut(&stream_id)
            .and_then(|l| l.iter_mut().find(|e| e.id == id))
        else {
            return;
        };
        entry.status = status;
        if saved {
            entry.states.clear();
        } else if !entry.status.building {
            for (sid, idx, json) in changed {
                entry.states.insert(sid, (idx, json));
            }
        }
    }

    /// Makes building version `new` the active one in place of `old`, with the states
    /// it changed since its last checkpoint: called before the checkpoint that
    /// promotes it in storage (which deletes `old`'s states) commits, so readers move
    /// from one complete version to the other. Answers `old`'s entry, to put back
    /// with [`Published::demote`] if that checkpoint fails.
    pub(crate) fn promote(
        &self,
        stream_id: i64,
        old: i64,
        new: i64,
        mut status: ReducerStatus,
        states: States,
    ) -> Option<Entry> {
        let mut streams = self.write();
        let list = streams.get_mut(&stream_id)?;
        let replaced = list
            .iter()
            .position(|e| e.id == old)
            .map(|i| list.remove(i));
        if let Some(entry) = list.iter_mut().find(|e| e.id == new) {
            status.building = false;
            entry.status = status;
            entry.states = states;
        }
        drop(streams);
        self.bump();
        replaced
    }

    /// Undoes [`Published::promote`].
    pub(crate) fn demote(&self, stream_id: i64, new: i64, old: Option<Entry>) {
        let mut streams = self.write();
        let list = streams.entry(stream_id).or_default();
        if let Some(entry) = list.iter_mut().find(|e| e.id == new) {
            entry.status.building = true;
            entry.states.clear();
        }
        if let Some(old) = old {
            list.push(old);
        }
    }

    /// Wakes the readers waiting for progress.
    pub(crate) fn bump(&self) {
        self.progress.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// The active version of reducer `name` of a stream, with the published state of
    /// substream `sid` when there is one.
    pub(crate) fn find(&self, stream_id: i64, name: &str, sid: Option<i64>) -> Option<Found> {
        let streams = self.read();
        let entry = streams
            .get(&stream_id)?
            .iter()
            .find(|e| e.status.name == name && !e.status.building)?;
        Some(Found {
            reducer_id: entry.id,
            factory: entry.factory,
            position: entry.status.position,
            after_idx: entry.status.index.unwrap_or(-1),
            state: sid.and_then(|sid| entry.states.get(&sid).cloned()),
        })
    }

    /// The published states of the active version of reducer `name` for `sids`.
    pub(crate) fn states(&self, stream_id: i64, name: &str, sids: &[i64]) -> Option<States> {
        let streams = self.read();
        let entry = streams
            .get(&stream_id)?
            .iter()
            .find(|e| e.status.name == name && !e.status.building)?;
        Some(
            sids.iter()
                .filter_map(|sid| Some((*sid, entry.states.get(sid)?.clone())))
                .collect(),
        )
    }

    /// Every published version of a stream's reducers, in deploy order.
    pub(crate) fn statuses(&self, stream_id: i64) -> Vec<ReducerStatus> {
        let streams = self.read();
        let mut list: Vec<(i64, ReducerStatus)> = streams
            .get(&stream_id)
            .map(|l| l.iter().map(|e| (e.id, e.status.clone())).collect())
            .unwrap_or_default();
        list.sort_by_key(|(id, _)| *id);
        list.into_iter().map(|(_, s)| s).collect()
    }
}
