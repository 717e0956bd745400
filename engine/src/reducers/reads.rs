//! State and status reads (API §7, §10): answered from what the reducer threads
//! published and from the saved states, never by a reducer thread; `?min-index=`
//! waits for the threads' progress.

use std::time::{Duration, Instant};

use super::{ReducerStatus, StateAnswer, SubstreamState, missing_reducer};
use crate::Scope;
use crate::error::Result;
use crate::path::{ReducerName, StreamPath};
use crate::store::reducer_reads;

impl crate::Engine {
    /// The state of a reducer for a plain stream or one substream, as last published
    /// (never waiting for a busy reducer thread). With `min_index`, waits up to `wait`
    /// until that index is folded (read-your-writes).
    pub async fn reducer_state(
        &self,
        path: &StreamPath,
        name: &ReducerName,
        min_index: Option<u64>,
        wait: Duration,
    ) -> Result<StateAnswer> {
        self.reducer_state_when(path, name, wait, |a| {
            min_index.is_none_or(|min| a.index >= min as i64)
        })
        .await
    }

    /// The state once it is newer than the one a client has: folded past `index`, or
    /// answered by another version than `version` (a redeploy's rebuild taking over).
    /// Waits up to `wait`, then answers the state as it is.
    pub async fn reducer_state_after(
        &self,
        path: &StreamPath,
        name: &ReducerName,
        index: i64,
        version: Option<i64>,
        wait: Duration,
    ) -> Result<StateAnswer> {
        self.reducer_state_when(path, name, wait, |a| {
            a.index > index || (version.is_some() && a.version.is_some() && version != a.version)
        })
        .await
    }

    /// The state once `ready` says so, or as it is after `wait`.
    async fn reducer_state_when(
        &self,
        path: &StreamPath,
        name: &ReducerName,
        wait: Duration,
        ready: impl Fn(&StateAnswer) -> bool,
    ) -> Result<StateAnswer> {
        let mut resolved = self.resolve_existing(path).await?;
        let stream_id = resolved.info.id;
        let deadline = Instant::now() + wait;
        let mut progress = self.reducers.published.watch();
        loop {
            progress.borrow_and_update();
            let sid = match resolved.scope {
                Some(Scope::Substream(sid)) => Some(sid),
                _ => None,
            };
            let found = self
                .reducers
                .published
                .find(stream_id, name.as_str(), sid)
                .ok_or_else(|| missing_reducer(path, name))?;
            let answer = match sid {
                // no events yet (or a factory named without arguments)
                None => StateAnswer {
                    json: None,
                    index: -1,
                    version: Some(found.reducer_id),
                },
                Some(sid) => {
                    // the index first: a state read after it is as new or newer
                    let index = if found.factory {
                        reducer_reads::substream_index(&self.store.reads, sid, found.position)
                            .await?
                    } else {
                        found.after_idx
                    };
                    let json = match found.state {
                        Some((_, json)) => json.map(|j| j.to_string()),
                        None => {
                            let saved = reducer_reads::saved_state(
                                &self.store.reads,
                                found.reducer_id,
                                sid,
                            )
                            .await?;
                            if saved.is_some() {
                                saved.and_then(|(_, state)| state)
                            } else if self.replaced(stream_id, name, found.reducer_id) {
                                // a rebuilt version took over (and its checkpoint deleted
                                // this one's states) between the lookup and the read
                                continue;
                            } else {
                                self.stored_state_of_active(stream_id, name, found.reducer_id, sid)
                                    .await?
                            }
                        }
                    };
                    StateAnswer {
                        json,
                        index,
                        version: Some(found.reducer_id),
                    }
                }
            };
            if ready(&answer) {
                return Ok(answer);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero()
                || tokio::time::timeout(left, progress.changed())
                    .await
                    .is_err()
            {
                return Ok(answer);
            }
            if resolved.scope.is_none() {
                // the substream may have received its first event since
                resolved = self.resolve_existing(path).await?;
            }
        }
    }

    /// A factory reducer's states, one per substream, in substream creation order.
    pub async fn reducer_states(
        &self,
        path: &StreamPath,
        name: &ReducerName,
        after: i64,
        limit: usize,
    ) -> Result<Vec<SubstreamState>> {
        let resolved = self.resolve_existing(path).await?;
        let stream_id = resolved.info.id;
        let page = loop {
            let found = self
                .reducers
                .published
                .find(stream_id, name.as_str(), None)
                .ok_or_else(|| missing_reducer(path, name))?;
            let page = reducer_reads::saved_states_page(
                &self.store.reads,
                stream_id,
                found.reducer_id,
                found.position,
                after,
                limit,
            )
            .await?;
            // a rebuilt version may have taken over between the lookup and the read
            if !self.replaced(stream_id, name, found.reducer_id) {
                break page;
            }
        };
        let sids: Vec<i64> = page.iter().map(|p| p.0).collect();
        let newer = self
            .reducers
            .published
            .states(stream_id, name.as_str(), &sids)
            .unwrap_or_default();
        Ok(page
            .into_iter()
            .map(|(sid, args, index, saved)| SubstreamState {
                sid,
                args,
                index,
                json: match newer.get(&sid) {
                    Some((_, json)) => json.as_ref().map(|j| j.to_string()),
                    None => saved,
                },
            })
            .collect())
    }

    /// The state of substream `sid` that the stored active version of reducer `name`
    /// has, when that version is not `published` (on a node whose published map has
    /// not yet learnt of another node's promotion); `None` otherwise.
    async fn stored_state_of_active(
        &self,
        stream_id: i64,
        name: &ReducerName,
        published: i64,
        sid: i64,
    ) -> Result<Option<String>> {
        let active =
            reducer_reads::active_version(&self.store.reads, stream_id, name.as_str()).await?;
        Ok(match active {
            Some(v) if v != published => reducer_reads::saved_state(&self.store.reads, v, sid)
                .await?
                .and_then(|(_, state)| state),
            _ => None,
        })
    }

    /// Whether reducer `name` of a stream is no longer answered by version `id`.
    fn replaced(&self, stream_id: i64, name: &ReducerName, id: i64) -> bool {
        self.reducers
            .published
            .find(stream_id, name.as_str(), None)
            .is_none_or(|f| f.reducer_id != id)
    }

    /// Every reducer version of a stream with its progress, as last published.
    pub async fn reducer_status(&self, path: &StreamPath) -> Result<Vec<ReducerStatus>> {
        let resolved = self.resolve_existing(path).await?;
        let stream_id = resolved.info.id;
        let head = self.store.last_position();
        let mut list = self.reducers.published.statuses(stream_id);
        for status in &mut list {
            status.lag = reducer_reads::lag(
                &self.store.reads,
                stream_id,
                resolved.info.factory,
                status.position,
                head,
            )
            .await?;
        }
        Ok(list)
    }
}
