//! What one request does inside the writer's open transaction: validation (expected
//! index, timestamps, idempotent ids, the stream's shape), creation of streams and
//! substreams on first use, the inserts, and settings changes. Nothing here commits;
//! `writer` owns the transaction and the group commit.

use std::collections::HashMap;
use std::sync::Arc;

use super::db::{Db, RowRef, vals};
use crate::json::JsonLimits;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::account_events::{Change, account_event, account_event_after};
use super::notice::{LIVE_DATA_BUDGET, LIVE_EVENTS_MAX, LiveEvent, SharedEvent};
use super::rules;
use super::writer::now_ms;
use crate::error::{EngineError, Result};
use crate::event::{ExpectedIndex, NewEvent, StoredEvent};
use crate::order::{Index, Position};
use crate::path::StreamPath;
use crate::settings::StreamSettings;

/// An append of one or more events to one (sub)stream, all or nothing.
#[derive(Debug)]
pub struct AppendRequest {
    pub stream: StreamPath,
    pub events: Vec<NewEvent>,
    pub expected: ExpectedIndex,
    /// The metadata of the stream, should this append create it (API §13); an
    /// existing stream keeps its own.
    pub metadata: Option<Map<String, Value>>,
}

/// What an append wrote (or, for a duplicate, what was already there).
#[derive(Debug, Clone)]
pub struct Appended {
    pub events: Vec<AppendedEvent>,
    /// Every event id was already in the (sub)stream: nothing was written.
    pub duplicate: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct AppendedEvent {
    pub index: Index,
    pub id: Uuid,
    pub timestamp: i64,
    pub position: Position,
}

/// A change of a stream's settings (creating the stream when missing).
#[derive(Debug)]
pub struct SettingsRequest {
    pub stream: StreamPath,
    /// The fields to set; with `replace`, fields not given return to their defaults.
    pub fields: Map<String, Value>,
    pub replace: bool,
}

#[derive(Debug, Clone)]
pub(super) struct StreamRow {
    pub(super) id: i64,
    pub(super) factory: bool,
    /// Shared: the row is cloned out of the cache on every append.
    pub(super) settings: Arc<StreamSettings>,
}

#[derive(Debug, Clone)]
pub(super) struct SubRow {
    pub(super) id: i64,
    /// The index the next event gets (= event count, indexes being gapless).
    pub(super) next_index: u64,
    pub(super) last_timestamp: i64,
}

pub(super) type StreamKey = (String, String);
/// The writer's caches and a group's staged rows, looked up on every append on the
/// single writer thread: hashed with foldhash (seeded randomly per process) rather
/// than SipHash, which cost ~150 instructions more per lookup of a stream's names.
pub(super) type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
pub(super) type SubKey = (i64, String);

/// What one group changed, applied to the caches only once the commit succeeds.
pub(super) struct Staged {
    pub(super) streams: FastMap<StreamKey, StreamRow>,
    pub(super) subs: FastMap<SubKey, SubRow>,
    pub(super) touched_streams: Vec<i64>,
    pub(super) events: u64,
    /// The appended events, announced once the group is durable.
    pub(super) live: Vec<LiveEvent>,
    /// The data bytes `live` carries (see [`LIVE_DATA_BUDGET`]).
    pub(super) live_bytes: usize,
    /// False once events were left out of `live` (see [`LIVE_EVENTS_MAX`]).
    pub(super) live_complete: bool,
    /// The (sub)streams appended to, each once.
    pub(super) live_paths: Vec<Arc<StreamPath>>,
    /// What other nodes must reload after the commit (`cluster::Change::Keys`).
    pub(super) changes: Vec<String>,
    /// The streams whose history a splice replaced (API §12).
    pub(super) spliced: Vec<Arc<StreamPath>>,
}

impl Default for Staged {
    fn default() -> Self {
        Self {
            streams: FastMap::default(),
            subs: FastMap::default(),
            touched_streams: Vec::new(),
            events: 0,
            live: Vec::new(),
            live_bytes: 0,
            live_complete: true,
            live_paths: Vec::new(),
            changes: Vec::new(),
            spliced: Vec::new(),
        }
    }
}

impl Staged {
    /// Notes that other nodes must reload `key` once this group commits.
    pub(super) fn changed(&mut self, key: impl Into<String>) {
        let key = key.into();
        if !self.changes.contains(&key) {
            self.changes.push(key);
        }
    }

    /// Adds an appended event to the group's commit notice, sharing the request's
    /// buffers (the data is not copied), within [`LIVE_EVENTS_MAX`] events and
    /// [`LIVE_DATA_BUDGET`] bytes of data.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn announce(
        &mut self,
        path: &Arc<StreamPath>,
        name: &str,
        e: NewEvent,
        index: Index,
        id: Uuid,
        timestamp: i64,
        position: Position,
    ) {
        if self.live.len() >= LIVE_EVENTS_MAX {
            self.live_complete = false;
            return;
        }
        let has_data = self.live_bytes + e.data.len() <= LIVE_DATA_BUDGET;
        if has_data {
            self.live_bytes += e.data.len();
        }
        self.live.push(LiveEvent {
            event: Arc::new(SharedEvent::new(StoredEvent {
                stream: name.to_owned(),
                index,
                id,
                event_type: e.event_type,
                timestamp,
                content_type: e.content_type,
                data: if has_data {
                    e.data
                } else {
                    bytes::Bytes::new()
                },
                metadata: e.metadata,
                origin: e.origin,
                position,
            })),
            path: path.clone(),
            has_data,
        });
    }
}

/// What every write of a group goes through: the write connection and what the
/// writer keeps of the database between groups. The writer owns it and lends it to
/// the domain writes (`append` and `settings` here; the `*_writes` modules), which
/// use only these primitives, so the writer's thread, group and commit stay its own.
pub(super) struct Ledger {
    pub(super) db: Db,
    /// Streams by (account, name): a cache of the `streams` table.
    pub(super) streams: FastMap<StreamKey, StreamRow>,
    /// Substreams by (stream id, canonical args): a cache of `substreams`.
    pub(super) subs: FastMap<SubKey, SubRow>,
    /// The position the next appended event takes.
    pub(super) next_pos: i64,
    pub(super) ids: super::event_ids::EventIds,
    /// The limits of the JSON data of piped and dispatched events, checked here as
    /// the one place every routed event passes.
    pub(super) json: JsonLimits,
    /// This node's id where other nodes share the database, which fences are
    /// checked against.
    pub(super) node: Option<String>,
}

impl Ledger {
    /// Where leases fence background work: checks, in the open transaction, that this
    /// node still holds the lease `fence` names, and keeps the lease row from being
    /// taken over until the transaction ends. Writes nothing.
    pub(super) fn check_fence(&self, fence: Option<&super::cluster::Fence>) -> Result<()> {
        let (Some(fence), Some(node)) = (fence, &self.node) else {
            return Ok(());
        };
        let held = self.db.row(
            "SELECT 1 FROM eddy_leases WHERE work = ?1 AND node = ?2 AND epoch = ?3 \
             AND expires_at > clock_timestamp() FOR SHARE",
            vals![fence.work.as_str(), node.as_str(), fence.epoch],
            |_| Ok(()),
        )?;
        match held {
            Some(_) => Ok(()),
            None => Err(super::cluster::lease_lost(fence)),
        }
    }

    pub(super) fn stream(&mut self, staged: &Staged, key: &StreamKey) -> Result<Option<StreamRow>> {
        if let Some(s) = staged.streams.get(key).or_else(|| self.streams.get(key)) {
            return Ok(Some(s.clone()));
        }
        let row = self.db.row(
            "SELECT id, factory, settings FROM streams WHERE account = ?1 AND name = ?2",
            vals![&key.0, &key.1],
            |r| Ok((r.int(0)?, r.flag(1)?, r.text(2)?)),
        )?;
        let Some((id, factory, settings)) = row else {
            return Ok(None);
        };
        let settings = StreamSettings::from_stored(&settings, factory);
        let row = StreamRow {
            id,
            factory,
            settings: Arc::new(settings),
        };
        self.streams.insert(key.clone(), row.clone());
        Ok(Some(row))
    }

    /// Creates stream `key`; `hops` is how many pipes and dispatches the event that
    /// creates it is from an appended one (0 for a request), recorded on its
    /// `stream-created` account event.
    pub(super) fn create_stream(
        &mut self,
        staged: &mut Staged,
        key: &StreamKey,
        settings: StreamSettings,
        hops: u32,
    ) -> Result<StreamRow> {
        let settings = settings.with_secret(None);
        let id = self.db.insert_id(
            "INSERT INTO streams (account, name, factory, settings, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
            vals![
                &key.0,
                &key.1,
                settings.factory,
                &settings.to_stored(),
                now_ms()
            ],
        )?;
        let row = StreamRow {
            id,
            factory: settings.factory,
            settings: Arc::new(settings),
        };
        staged.streams.insert(key.clone(), row.clone());
        account_event_after(
            self,
            staged,
            (&key.0, &key.1),
            Change::StreamCreated,
            serde_json::json!({ "factory": row.factory }),
            hops,
        )?;
        Ok(row)
    }

    pub(super) fn sub(&mut self, staged: &Staged, key: &SubKey) -> Result<Option<SubRow>> {
        if let Some(s) = staged.subs.get(key).or_else(|| self.subs.get(key)) {
            return Ok(Some(s.clone()));
        }
        let row = self.db.row(
            "SELECT id, event_count, last_timestamp FROM substreams \
             WHERE stream_id = ?1 AND args = ?2",
            vals![key.0, &key.1],
            |r| {
                Ok(SubRow {
                    id: r.int(0)?,
                    next_index: r.int(1)? as u64,
                    last_timestamp: r.int(2)?,
                })
            },
        )?;
        if let Some(row) = &row {
            self.subs.insert(key.clone(), row.clone());
        }
        Ok(row)
    }

    /// The event of substream `sid` whose id is `id`, if one is stored: a client's
    /// own id through the index of client ids, or an id the server generated through
    /// the position it encodes (see `event_ids`).
    fn stored_id(&mut self, sid: i64, id: Uuid) -> Result<Option<AppendedEvent>> {
        let found = |r: &RowRef<'_, '_>| {
            Ok(AppendedEvent {
                index: r.index(0)?,
                id,
                timestamp: r.int(1)?,
                position: r.position(2)?,
            })
        };
        let bytes = id.as_bytes().as_slice();
        let chosen = self.db.row(
            "SELECT idx, ts, pos FROM events WHERE sid = ?1 AND cid = ?2",
            vals![sid, bytes],
            found,
        )?;
        if chosen.is_some() {
            return Ok(chosen);
        }
        match self.ids.position(&id) {
            Some(pos) if pos < self.next_pos => self.db.row(
                "SELECT idx, ts, pos FROM events WHERE pos = ?1 AND sid = ?2 AND eid = ?3 \
                 AND cid IS NULL",
                vals![pos, sid, bytes],
                found,
            ),
            _ => Ok(None),
        }
    }

    pub(super) fn append(&mut self, req: AppendRequest, staged: &mut Staged) -> Result<Appended> {
        let path = &req.stream;
        // `strm@{n}`, a history a splice replaced, takes no events, whoever sends them
        if path.stream.as_str().contains('@') {
            return Err(EngineError::invalid(format!(
                "{path} is a history a splice replaced: it is read-only"
            )));
        }
        let skey = (
            path.account.as_str().to_owned(),
            path.stream.as_str().to_owned(),
        );
        let stream = self.stream(staged, &skey)?;
        if let Some(s) = &stream {
            rules::check_factory_shape(path, s.factory)?;
        }
        let args = path
            .args
            .as_ref()
            .map(|a| a.canonical())
            .unwrap_or_default();
        let sub = match &stream {
            Some(s) => self.sub(staged, &(s.id, args.clone()))?,
            None => None,
        };

        // Idempotency first: a retried request answers with what it wrote before.
        rules::distinct_ids(&req.events)?;
        let mut dups: Vec<Option<AppendedEvent>> = Vec::with_capacity(req.events.len());
        for e in &req.events {
            dups.push(match (e.id, &sub) {
                (Some(id), Some(s)) => self.stored_id(s.id, id)?,
                _ => None,
            });
        }
        if let Some(answer) = rules::duplicates(path, dups)? {
            return Ok(answer);
        }
        let next_index = sub.as_ref().map_or(0, |s| s.next_index);
        rules::check_expected(path, req.expected, next_index)?;
        let last_ts = sub.as_ref().map_or(0, |s| s.last_timestamp);
        let now = now_ms();
        let stamped = rules::timestamps(path, &req.events, last_ts, now)?;

        // Valid: create what is missing and write.
        let stream = match stream {
            Some(s) => s,
            None => self.create_stream(
                staged,
                &skey,
                StreamSettings {
                    factory: path.args.is_some(),
                    metadata: req.metadata.clone(),
                    ..StreamSettings::default()
                },
                (req.events.iter())
                    .map(|e| crate::dispatch::hops(e.origin.as_deref()))
                    .max()
                    .unwrap_or(0),
            )?,
        };
        let mut sub = match sub {
            Some(s) => s,
            None => {
                let id = self.db.insert_id(
                    "INSERT INTO substreams (stream_id, args, created_at) VALUES (?1, ?2, ?3)",
                    vals![stream.id, &args, now],
                )?;
                SubRow {
                    id,
                    next_index: 0,
                    last_timestamp: 0,
                }
            }
        };
        let AppendRequest {
            stream: path,
            events,
            ..
        } = req;
        let out = self.insert_events(staged, path, &stream, &mut sub, events, stamped, now)?;
        staged.subs.insert((stream.id, args), sub);
        Ok(Appended {
            events: out,
            duplicate: false,
        })
    }

    /// Writes `events`, stamped `stamped`, at the end of substream `sub` of `stream`
    /// and announces them: the insert of every append, with nothing checked.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn insert_events(
        &mut self,
        staged: &mut Staged,
        path: StreamPath,
        stream: &StreamRow,
        sub: &mut SubRow,
        events: Vec<NewEvent>,
        stamped: Vec<i64>,
        now: i64,
    ) -> Result<Vec<AppendedEvent>> {
        let mut out = Vec::with_capacity(events.len());
        let path = Arc::new(path);
        let name = path.to_string();
        if !staged.live_paths.iter().any(|p| **p == *path) {
            staged.live_paths.push(path.clone());
        }
        let Self {
            db, ids, next_pos, ..
        } = self;
        db.batch(
            "INSERT INTO events (pos, factory_id, sid, idx, eid, cid, type, ts, content_type, data, \
             metadata, origin) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            |insert| {
            for (e, ts) in events.into_iter().zip(stamped) {
                let pos = *next_pos;
                let id = e.id.unwrap_or_else(|| ids.generate(pos, now));
                insert.exec(vals![
                    pos,
                    stream.factory.then_some(stream.id),
                    sub.id,
                    sub.next_index as i64,
                    id.as_bytes().as_slice(),
                    e.id.as_ref().map(|c| c.as_bytes().as_slice()),
                    &e.event_type,
                    ts,
                    &e.content_type,
                    e.data.as_ref(),
                    &e.metadata,
                    &e.origin,
                ])?;
                out.push(AppendedEvent {
                    index: Index(sub.next_index),
                    id,
                    timestamp: ts,
                    position: Position(pos),
                });
                staged.announce(&path, &name, e, Index(sub.next_index), id, ts, Position(pos));
                *next_pos += 1;
                sub.next_index += 1;
                sub.last_timestamp = ts;
            }
            Ok(())
        })?;
        staged.events += out.len() as u64;
        if !staged.touched_streams.contains(&stream.id) {
            staged.touched_streams.push(stream.id);
        }
        Ok(out)
    }

    pub(super) fn settings(
        &mut self,
        req: SettingsRequest,
        staged: &mut Staged,
    ) -> Result<StreamSettings> {
        staged.changed("controls");
        let path = &req.stream;
        let skey = (
            path.account.as_str().to_owned(),
            path.stream.as_str().to_owned(),
        );
        let current = self.stream(staged, &skey)?;
        let base = match (&current, req.replace) {
            (Some(s), false) => (*s.settings).clone(),
            _ => StreamSettings::default(),
        };
        // a factory keeps its HMAC secret (tokens handed out stay valid) unless the
        // request sets one, or asks for a new one with null
        let rotate = req.fields.get("hmacSecret").is_some_and(Value::is_null);
        let previous_secret = current
            .as_ref()
            .filter(|_| !rotate)
            .and_then(|c| c.settings.hmac_secret.clone());
        let new = base
            .merged(req.fields)?
            .with_secret(previous_secret.as_deref());
        let changed = |w: &mut Self, staged: &mut Staged, new: &StreamSettings| {
            account_event(
                w,
                staged,
                &skey.0,
                &skey.1,
                Change::SettingsChanged,
                serde_json::json!({ "settings": new.without_secret() }),
            )
        };
        let Some(mut row) = current else {
            let new = (*self.create_stream(staged, &skey, new, 0)?.settings).clone();
            changed(self, staged, &new)?;
            return Ok(new);
        };
        if new.factory != row.factory {
            let has_events = self
                .db
                .row(
                    "SELECT 1 FROM substreams s JOIN events e ON e.sid = s.id \
                     WHERE s.stream_id = ?1 LIMIT 1",
                    vals![row.id],
                    |_| Ok(()),
                )?
                .is_some();
            if has_events {
                return Err(EngineError::conflict(format!(
                    "settings field \"factory\" cannot change to {} because {} already has events",
                    new.factory, path
                ))
                .with("field", "factory"));
            }
        }
        self.db.exec(
            "UPDATE streams SET factory = ?1, settings = ?2 WHERE id = ?3",
            vals![new.factory, &new.to_stored(), row.id],
        )?;
        row.factory = new.factory;
        row.settings = Arc::new(new.clone());
        staged.streams.insert(skey.clone(), row);
        changed(self, staged, &new)?;
        Ok(new)
    }
}
