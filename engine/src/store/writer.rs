//! The single writer: one thread that owns the only write connection (rusqlite) and
//! commits in groups.
//!
//! Requests arrive on a channel. The writer blocks for the first one, drains whatever
//! else is queued (up to a bound), applies them all in one transaction, commits once
//! (one fsync with `synchronous=FULL`), and only then answers each request and
//! announces the commit. A request that fails validation is answered with its error and
//! writes nothing; the others in the group are unaffected. A failed commit fails the
//! whole group and drops the writer's caches, which reload from the database.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Map, Value};
use tokio::sync::{broadcast, oneshot};
use uuid::Uuid;

use crate::error::{EngineError, Result};
use crate::event::{ExpectedIndex, NewEvent};
use crate::metrics::Metrics;
use crate::path::StreamPath;
use crate::settings::StreamSettings;

/// Most events one group takes before it commits.
const GROUP_MAX_EVENTS: usize = 20_000;
/// Most data bytes one group takes before it commits.
const GROUP_MAX_BYTES: usize = 32 * 1024 * 1024;

/// An append of one or more events to one (sub)stream, all or nothing.
#[derive(Debug)]
pub struct AppendRequest {
    pub stream: StreamPath,
    pub events: Vec<NewEvent>,
    pub expected: ExpectedIndex,
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
    pub index: u64,
    pub id: Uuid,
    pub timestamp: i64,
    pub position: i64,
}

/// A change of a stream's settings (creating the stream when missing).
#[derive(Debug)]
pub struct SettingsRequest {
    pub stream: StreamPath,
    /// The fields to set; with `replace`, fields not given return to their defaults.
    pub fields: Map<String, Value>,
    pub replace: bool,
}

/// Announced after every commit that wrote events.
#[derive(Debug, Clone)]
pub struct Committed {
    /// The global position of the last event committed.
    pub last_position: i64,
    /// The ids of the streams that received events.
    pub streams: Vec<i64>,
}

type Reply<T> = oneshot::Sender<Result<T>>;

pub(crate) enum Command {
    Append(AppendRequest, Reply<Appended>),
    Settings(SettingsRequest, Reply<StreamSettings>),
    /// Finishes everything queued before it, then stops the writer.
    Shutdown(oneshot::Sender<()>),
}

/// The sending side of the writer, cloned into the engine.
#[derive(Clone)]
pub(crate) struct WriterHandle {
    tx: mpsc::Sender<Command>,
}

impl WriterHandle {
    pub(crate) async fn append(&self, req: AppendRequest) -> Result<Appended> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Append(req, tx))?;
        rx.await.map_err(|_| shutting_down())?
    }

    pub(crate) async fn settings(&self, req: SettingsRequest) -> Result<StreamSettings> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Settings(req, tx))?;
        rx.await.map_err(|_| shutting_down())?
    }

    pub(crate) async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Command::Shutdown(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    fn send(&self, cmd: Command) -> Result<()> {
        self.tx.send(cmd).map_err(|_| shutting_down())
    }
}

fn shutting_down() -> EngineError {
    EngineError::new(
        crate::error::ErrorCode::Unavailable,
        "the server is shutting down; nothing was written",
    )
}

/// Opens the write connection with eddy's durability settings.
pub(crate) fn open_connection(file: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(file)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // FULL: the WAL is fsynced at every commit, so an acknowledged event survives
    // power loss, not only a process crash.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "busy_timeout", 5000)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Starts the writer thread.
pub(crate) fn spawn(
    file: &Path,
    notices: broadcast::Sender<Arc<Committed>>,
    last_position: Arc<AtomicI64>,
    metrics: Arc<Metrics>,
) -> Result<(WriterHandle, std::thread::JoinHandle<()>)> {
    let conn = open_connection(file)?;
    let next_pos: i64 =
        conn.query_row("SELECT COALESCE(MAX(pos), 0) + 1 FROM events", [], |r| {
            r.get(0)
        })?;
    last_position.store(next_pos - 1, Ordering::Release);
    let (tx, rx) = mpsc::channel();
    let mut writer = Writer {
        conn,
        streams: HashMap::new(),
        subs: HashMap::new(),
        next_pos,
        notices,
        last_position,
        metrics,
    };
    let thread = std::thread::Builder::new()
        .name("eddy-writer".into())
        .spawn(move || writer.run(rx))
        .map_err(|e| EngineError::internal(format!("cannot start the writer thread: {e}")))?;
    Ok((WriterHandle { tx }, thread))
}

#[derive(Debug, Clone)]
struct StreamRow {
    id: i64,
    factory: bool,
    settings: StreamSettings,
}

#[derive(Debug, Clone)]
struct SubRow {
    id: i64,
    /// The index the next event gets (= event count, indexes being gapless).
    next_index: u64,
    last_timestamp: i64,
}

type StreamKey = (String, String);
type SubKey = (i64, String);

/// What one group changed, applied to the caches only once the commit succeeds.
#[derive(Default)]
struct Staged {
    streams: HashMap<StreamKey, StreamRow>,
    subs: HashMap<SubKey, SubRow>,
    touched_streams: Vec<i64>,
    events: u64,
}

enum Pending {
    Append(Reply<Appended>, Result<Appended>),
    Settings(Reply<StreamSettings>, Result<StreamSettings>),
}

struct Writer {
    conn: Connection,
    /// Streams by (account, name): a cache of the `streams` table.
    streams: HashMap<StreamKey, StreamRow>,
    /// Substreams by (stream id, canonical args): a cache of `substreams`.
    subs: HashMap<SubKey, SubRow>,
    next_pos: i64,
    notices: broadcast::Sender<Arc<Committed>>,
    last_position: Arc<AtomicI64>,
    metrics: Arc<Metrics>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Writer {
    fn run(&mut self, rx: mpsc::Receiver<Command>) {
        let mut stop: Option<oneshot::Sender<()>> = None;
        while stop.is_none() {
            let Ok(first) = rx.recv() else { break };
            let mut group = Vec::new();
            let (mut events, mut bytes) = (0usize, 0usize);
            let mut next = Some(first);
            while let Some(cmd) = next.take() {
                match cmd {
                    Command::Shutdown(done) => {
                        stop = Some(done);
                        break;
                    }
                    Command::Append(ref req, _) => {
                        events += req.events.len();
                        bytes += req.events.iter().map(|e| e.data.len()).sum::<usize>();
                        group.push(cmd);
                    }
                    Command::Settings(..) => group.push(cmd),
                }
                if events < GROUP_MAX_EVENTS && bytes < GROUP_MAX_BYTES {
                    next = rx.try_recv().ok();
                }
            }
            if !group.is_empty() {
                self.commit_group(group);
            }
        }
        if let Some(done) = stop {
            let _ = done.send(());
        }
        tracing::info!("writer stopped");
    }

    fn commit_group(&mut self, group: Vec<Command>) {
        let started = Instant::now();
        let requests = group.len();
        let first_pos = self.next_pos;
        let mut staged = Staged::default();
        let mut pending = Vec::with_capacity(group.len());
        let outcome = self.apply_group(group, &mut staged, &mut pending);
        let outcome = outcome.and_then(|()| {
            self.conn.execute_batch("COMMIT")?;
            Ok(())
        });
        match outcome {
            Ok(()) => {
                self.streams.extend(staged.streams);
                self.subs.extend(staged.subs);
                let last = self.next_pos - 1;
                self.last_position.store(last, Ordering::Release);
                self.metrics.commits.inc();
                self.metrics.events_appended.inc_by(staged.events);
                self.metrics.group_events.observe(staged.events as f64);
                self.metrics.group_requests.observe(requests as f64);
                self.metrics
                    .commit_seconds
                    .observe(started.elapsed().as_secs_f64());
                if staged.events > 0 {
                    let _ = self.notices.send(Arc::new(Committed {
                        last_position: last,
                        streams: staged.touched_streams,
                    }));
                }
                for p in pending {
                    match p {
                        Pending::Append(tx, r) => drop(tx.send(r)),
                        Pending::Settings(tx, r) => drop(tx.send(r)),
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e.message, "group commit failed; the group is rolled back");
                let _ = self.conn.execute_batch("ROLLBACK");
                self.next_pos = first_pos;
                self.streams.clear();
                self.subs.clear();
                let err = || EngineError::internal("the write could not be committed");
                for p in pending {
                    match p {
                        Pending::Append(tx, _) => drop(tx.send(Err(err()))),
                        Pending::Settings(tx, _) => drop(tx.send(Err(err()))),
                    }
                }
            }
        }
    }

    /// Applies every command in one open transaction. An error here is a storage
    /// failure that dooms the whole group; a command's own validation errors are kept
    /// in `pending` as its answer.
    fn apply_group(
        &mut self,
        group: Vec<Command>,
        staged: &mut Staged,
        pending: &mut Vec<Pending>,
    ) -> Result<()> {
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        for cmd in group {
            match cmd {
                Command::Append(req, tx) => {
                    let r = self.append(req, staged);
                    let r = match r {
                        Err(e) if e.code == crate::error::ErrorCode::Internal => return Err(e),
                        r => r,
                    };
                    pending.push(Pending::Append(tx, r));
                }
                Command::Settings(req, tx) => {
                    let r = self.settings(req, staged);
                    let r = match r {
                        Err(e) if e.code == crate::error::ErrorCode::Internal => return Err(e),
                        r => r,
                    };
                    pending.push(Pending::Settings(tx, r));
                }
                Command::Shutdown(_) => unreachable!("shutdown is never grouped"),
            }
        }
        for sub in staged.subs.values() {
            self.conn
                .prepare_cached(
                    "UPDATE substreams SET event_count = ?1, last_index = ?2, last_timestamp = ?3 \
                     WHERE id = ?4",
                )?
                .execute(params![
                    sub.next_index as i64,
                    sub.next_index as i64 - 1,
                    sub.last_timestamp,
                    sub.id
                ])?;
        }
        Ok(())
    }

    fn stream(&mut self, staged: &Staged, key: &StreamKey) -> Result<Option<StreamRow>> {
        if let Some(s) = staged.streams.get(key).or_else(|| self.streams.get(key)) {
            return Ok(Some(s.clone()));
        }
        let row = self
            .conn
            .prepare_cached(
                "SELECT id, factory, settings FROM streams WHERE account = ?1 AND name = ?2",
            )?
            .query_row(params![key.0, key.1], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, bool>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .optional()?;
        let Some((id, factory, settings)) = row else {
            return Ok(None);
        };
        let settings = StreamSettings::from_stored(&settings, factory);
        let row = StreamRow {
            id,
            factory,
            settings,
        };
        self.streams.insert(key.clone(), row.clone());
        Ok(Some(row))
    }

    fn create_stream(
        &mut self,
        staged: &mut Staged,
        key: &StreamKey,
        settings: StreamSettings,
    ) -> Result<StreamRow> {
        self.conn
            .prepare_cached(
                "INSERT INTO streams (account, name, factory, settings, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                key.0,
                key.1,
                settings.factory,
                settings.to_stored(),
                now_ms()
            ])?;
        let row = StreamRow {
            id: self.conn.last_insert_rowid(),
            factory: settings.factory,
            settings,
        };
        staged.streams.insert(key.clone(), row.clone());
        Ok(row)
    }

    fn sub(&mut self, staged: &Staged, key: &SubKey) -> Result<Option<SubRow>> {
        if let Some(s) = staged.subs.get(key).or_else(|| self.subs.get(key)) {
            return Ok(Some(s.clone()));
        }
        let row = self
            .conn
            .prepare_cached(
                "SELECT id, event_count, last_timestamp FROM substreams \
                 WHERE stream_id = ?1 AND args = ?2",
            )?
            .query_row(params![key.0, key.1], |r| {
                Ok(SubRow {
                    id: r.get(0)?,
                    next_index: r.get::<_, i64>(1)? as u64,
                    last_timestamp: r.get(2)?,
                })
            })
            .optional()?;
        if let Some(row) = &row {
            self.subs.insert(key.clone(), row.clone());
        }
        Ok(row)
    }

    fn append(&mut self, req: AppendRequest, staged: &mut Staged) -> Result<Appended> {
        let path = &req.stream;
        let skey = (
            path.account.as_str().to_owned(),
            path.stream.as_str().to_owned(),
        );
        let stream = self.stream(staged, &skey)?;
        if let Some(s) = &stream {
            check_factory_shape(path, s.factory)?;
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
        let mut dups: Vec<Option<AppendedEvent>> = Vec::with_capacity(req.events.len());
        for (i, e) in req.events.iter().enumerate() {
            let Some(id) = e.id else {
                dups.push(None);
                continue;
            };
            if let Some(j) = req.events[..i].iter().position(|p| p.id == Some(id)) {
                return Err(EngineError::invalid(format!(
                    "events {j} and {i} of the batch have the same id {id}"
                ))
                .with("position", i));
            }
            let found = match &sub {
                Some(s) => self
                    .conn
                    .prepare_cached("SELECT idx, ts, pos FROM events WHERE sid = ?1 AND eid = ?2")?
                    .query_row(params![s.id, id.as_bytes().as_slice()], |r| {
                        Ok(AppendedEvent {
                            index: r.get::<_, i64>(0)? as u64,
                            id,
                            timestamp: r.get(1)?,
                            position: r.get(2)?,
                        })
                    })
                    .optional()?,
                None => None,
            };
            dups.push(found);
        }
        let n_dups = dups.iter().filter(|d| d.is_some()).count();
        if n_dups == req.events.len() && n_dups > 0 {
            return Ok(Appended {
                events: dups.into_iter().flatten().collect(),
                duplicate: true,
            });
        }
        if n_dups > 0 {
            let (i, d) = dups
                .iter()
                .enumerate()
                .find_map(|(i, d)| d.map(|d| (i, d)))
                .expect("n_dups > 0");
            return Err(EngineError::conflict(format!(
                "event {i} of the batch has id {} which is already stored at index {} of {path}, \
                 but other events of the batch are new; nothing was written",
                d.id, d.index
            ))
            .with("position", i)
            .with("index", d.index));
        }

        let next_index = sub.as_ref().map_or(0, |s| s.next_index);
        let last_index = next_index as i64 - 1;
        let ok = match req.expected {
            ExpectedIndex::Any => true,
            ExpectedIndex::NoEvents => next_index == 0,
            ExpectedIndex::Last(n) => next_index == n + 1,
        };
        if !ok {
            let wanted = match req.expected {
                ExpectedIndex::NoEvents => "no events".to_owned(),
                ExpectedIndex::Last(n) => format!("last index {n}"),
                ExpectedIndex::Any => unreachable!(),
            };
            return Err(EngineError::conflict(format!(
                "Expected-Index wanted {wanted} but the last index of {path} is {last_index}; \
                 nothing was written"
            ))
            .with("lastIndex", last_index));
        }

        let mut last_ts = sub.as_ref().map_or(0, |s| s.last_timestamp);
        let now = now_ms();
        let mut stamped = Vec::with_capacity(req.events.len());
        for (i, e) in req.events.iter().enumerate() {
            let ts = match e.timestamp {
                Some(t) if t < last_ts => {
                    let at = if req.events.len() > 1 {
                        format!("event {i} of the batch: ")
                    } else {
                        String::new()
                    };
                    return Err(EngineError::conflict(format!(
                        "{at}timestamp {t} is before the last timestamp {last_ts} of {path}; \
                         timestamps never decrease within a stream"
                    ))
                    .with("lastTimestamp", last_ts)
                    .with("position", i));
                }
                Some(t) => t,
                None => now.max(last_ts),
            };
            last_ts = ts;
            stamped.push(ts);
        }

        // Valid: create what is missing and write.
        let stream = match stream {
            Some(s) => s,
            None => self.create_stream(
                staged,
                &skey,
                StreamSettings {
                    factory: path.args.is_some(),
                },
            )?,
        };
        let mut sub = match sub {
            Some(s) => s,
            None => {
                self.conn
                    .prepare_cached(
                        "INSERT INTO substreams (stream_id, args, created_at) VALUES (?1, ?2, ?3)",
                    )?
                    .execute(params![stream.id, args, now])?;
                SubRow {
                    id: self.conn.last_insert_rowid(),
                    next_index: 0,
                    last_timestamp: 0,
                }
            }
        };
        let mut out = Vec::with_capacity(req.events.len());
        {
            let mut insert = self.conn.prepare_cached(
                "INSERT INTO events (pos, stream_id, sid, idx, eid, type, ts, content_type, data, metadata) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?;
            for (e, ts) in req.events.iter().zip(stamped) {
                let id = e.id.unwrap_or_else(Uuid::now_v7);
                let pos = self.next_pos;
                insert.execute(params![
                    pos,
                    stream.id,
                    sub.id,
                    sub.next_index as i64,
                    id.as_bytes().as_slice(),
                    e.event_type,
                    ts,
                    e.content_type,
                    e.data.as_ref(),
                    e.metadata,
                ])?;
                out.push(AppendedEvent {
                    index: sub.next_index,
                    id,
                    timestamp: ts,
                    position: pos,
                });
                self.next_pos += 1;
                sub.next_index += 1;
                sub.last_timestamp = ts;
            }
        }
        staged.events += out.len() as u64;
        if !staged.touched_streams.contains(&stream.id) {
            staged.touched_streams.push(stream.id);
        }
        staged.subs.insert((stream.id, args), sub);
        Ok(Appended {
            events: out,
            duplicate: false,
        })
    }

    fn settings(&mut self, req: SettingsRequest, staged: &mut Staged) -> Result<StreamSettings> {
        let path = &req.stream;
        let skey = (
            path.account.as_str().to_owned(),
            path.stream.as_str().to_owned(),
        );
        let current = self.stream(staged, &skey)?;
        let base = match (&current, req.replace) {
            (Some(s), false) => s.settings.clone(),
            _ => StreamSettings::default(),
        };
        let new = base.merged(req.fields)?;
        let Some(mut row) = current else {
            self.create_stream(staged, &skey, new.clone())?;
            return Ok(new);
        };
        if new.factory != row.factory {
            let has_events = self
                .conn
                .prepare_cached("SELECT 1 FROM events WHERE stream_id = ?1 LIMIT 1")?
                .query_row(params![row.id], |_| Ok(()))
                .optional()?
                .is_some();
            if has_events {
                return Err(EngineError::conflict(format!(
                    "settings field \"factory\" cannot change to {} because {} already has events",
                    new.factory, path
                ))
                .with("field", "factory"));
            }
        }
        self.conn
            .prepare_cached("UPDATE streams SET factory = ?1, settings = ?2 WHERE id = ?3")?
            .execute(params![new.factory, new.to_stored(), row.id])?;
        row.factory = new.factory;
        row.settings = new.clone();
        staged.streams.insert(skey, row);
        Ok(new)
    }
}

/// Refuses an append whose shape does not fit the stream: args on a plain stream, or
/// none on a factory.
pub(crate) fn check_factory_shape(path: &StreamPath, factory: bool) -> Result<()> {
    match (factory, path.args.is_some()) {
        (true, false) => Err(EngineError::invalid(format!(
            "{path} is a stream factory: append to one of its substreams, such as \
             /{path}('id')"
        ))),
        (false, true) => Err(EngineError::invalid(format!(
            "{}/{} is a plain stream, not a factory, so it takes no arguments ({path})",
            path.account, path.stream
        ))),
        _ => Ok(()),
    }
}
