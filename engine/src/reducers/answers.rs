//! What the reducer worker answers about its reducers: a state with its
//! `Reducer-Index`, a factory's substream states, and the status of each reducer.

use std::sync::atomic::Ordering;

use rusqlite::{OptionalExtension, params};

use super::worker::{Group, Live, Worker};
use super::{ReducerStatus, StateAnswer, SubstreamState};
use crate::error::{EngineError, Result};

impl Worker {
    pub(super) fn find(&self, stream_id: i64, name: &str) -> Option<(&Group, &Live)> {
        let group = self.groups.get(&stream_id)?;
        let live = group
            .reducers
            .iter()
            .find(|r| r.row.name == name && !r.row.building)?;
        Some((group, live))
    }

    pub(super) fn state(
        &mut self,
        stream_id: i64,
        name: &str,
        sid: Option<i64>,
    ) -> Result<StateAnswer> {
        let (group, r) = self.find(stream_id, name).ok_or_else(|| missing(name))?;
        let (slot, reducer_id, position, after_idx) = (r.slot, r.row.id, r.position, r.after_idx);
        let factory = group.factory;
        let Some(sid) = sid.or(group.plain_sid).or_else(|| {
            self.conn
                .prepare_cached("SELECT id FROM substreams WHERE stream_id = ?1 AND args = ''")
                .ok()?
                .query_row(params![stream_id], |q| q.get(0))
                .ok()
        }) else {
            return Ok(StateAnswer {
                json: None,
                index: -1,
            });
        };
        let live = r.live.contains_key(&sid);
        let json = if live {
            let group = self.groups.get_mut(&stream_id).expect("found above");
            group
                .sandbox
                .state(slot, sid)
                .map_err(|e| EngineError::internal(e.message))?
        } else {
            self.conn
                .prepare_cached(
                    "SELECT state FROM reducer_states WHERE reducer_id = ?1 AND sid = ?2",
                )?
                .query_row(params![reducer_id, sid], |q| q.get::<_, Option<String>>(0))
                .optional()?
                .flatten()
        };
        let index = if factory {
            self.substream_index(sid, position)?
        } else {
            after_idx
        };
        Ok(StateAnswer { json, index })
    }

    /// The last index of substream `sid` at or before `position`. Cheap when the
    /// reducer has passed the substream's last event; otherwise it walks down from that
    /// event over the ones not yet folded.
    pub(super) fn substream_index(&self, sid: i64, position: i64) -> Result<i64> {
        let last: Option<(i64, i64)> = self
            .conn
            .prepare_cached("SELECT idx, pos FROM events WHERE sid = ?1 ORDER BY idx DESC LIMIT 1")?
            .query_row(params![sid], |q| Ok((q.get(0)?, q.get(1)?)))
            .optional()?;
        match last {
            None => Ok(-1),
            Some((idx, pos)) if pos <= position => Ok(idx),
            Some(_) => Ok(self
                .conn
                .prepare_cached(
                    "SELECT idx FROM events WHERE sid = ?1 AND pos <= ?2 ORDER BY idx DESC LIMIT 1",
                )?
                .query_row(params![sid, position], |q| q.get(0))
                .optional()?
                .unwrap_or(-1)),
        }
    }

    pub(super) fn states(
        &mut self,
        stream_id: i64,
        name: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<SubstreamState>> {
        let subs: Vec<(i64, String)> = self
            .conn
            .prepare_cached("SELECT id, args FROM substreams WHERE stream_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3")?
            .query_map(params![stream_id, after, limit as i64], |q| Ok((q.get(0)?, q.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let mut out = Vec::with_capacity(subs.len());
        for (sid, args) in subs {
            let answer = self.state(stream_id, name, Some(sid))?;
            out.push(SubstreamState {
                sid,
                args,
                index: answer.index,
                json: answer.json,
            });
        }
        Ok(out)
    }

    pub(super) fn status(&self, stream_id: i64) -> Vec<ReducerStatus> {
        let head = self.durable.load(Ordering::Acquire);
        let Some(group) = self.groups.get(&stream_id) else {
            return Vec::new();
        };
        let lag_of = |position: i64| -> i64 {
            let sql = if group.factory {
                "SELECT COUNT(*) FROM events WHERE factory_id = ?1 AND pos > ?2 AND pos <= ?3"
            } else {
                "SELECT COUNT(*) FROM events WHERE sid = (SELECT id FROM substreams WHERE stream_id = ?1 AND args = '') AND pos > ?2 AND pos <= ?3"
            };
            self.conn
                .prepare_cached(sql)
                .and_then(|mut s| s.query_row(params![stream_id, position, head], |q| q.get(0)))
                .unwrap_or(0)
        };
        group
            .reducers
            .iter()
            .map(|r| ReducerStatus {
                name: r.row.name.clone(),
                building: r.row.building,
                code_hash: r.row.code_hash.clone(),
                position: r.position,
                index: (!group.factory).then_some(r.after_idx),
                lag: lag_of(r.position),
                errors: r.row.errors + r.new_errors,
                halted: r.halted.clone(),
                selector: r.row.selector.clone(),
                halt_on_error: r.row.halt_on_error,
                live_states: r.live.len(),
            })
            .collect()
    }
}

fn missing(name: &str) -> EngineError {
    EngineError::not_found(format!("there is no reducer named {name} on this stream"))
}
