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
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::mpsc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Map, Value};
use tokio::sync::{broadcast, oneshot};
use uuid::Uuid;

use crate::error::{EngineError, ErrorCode, Result};
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
    /// The syncer finished a flush and is free for the next group.
    Flushed,
    /// Finishes everything queued before it, then stops the writer.
    Shutdown(oneshot::Sender<()>),
}

impl From<Command> for Pending {
    /// The answer slot of a request command (for failing it before it is applied).
    fn from(cmd: Command) -> Self {
        match cmd {
            Command::Append(_, tx) => Pending::Append(tx, Err(shutting_down())),
            Command::Settings(_, tx) => Pending::Settings(tx, Err(shutting_down())),
            Command::Flushed | Command::Shutdown(_) => {
                unreachable!("only request commands have answers")
            }
        }
    }
}

/// The sending side of the writer, cloned into the engine.
#[derive(Clone)]
pub(crate) struct WriterHandle {
    tx: mpsc::Sender<Command>,
    /// Set when the disk failed a flush: writes are refused until a restart.
    failed: Arc<AtomicBool>,
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

    /// Asks the writer to stop without waiting (for drops without a shutdown).
    pub(crate) fn stop_soon(&self) {
        let (tx, _) = oneshot::channel();
        let _ = self.tx.send(Command::Shutdown(tx));
    }

    fn send(&self, cmd: Command) -> Result<()> {
        if self.failed.load(Ordering::Acquire) {
            return Err(EngineError::new(
                crate::error::ErrorCode::Unavailable,
                "storage failed to flush to disk; writes are refused until the server restarts",
            ));
        }
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
    // NORMAL: a commit writes the WAL without flushing it; the syncer thread flushes
    // it (fdatasync) before any request of the group is answered, which gives FULL's
    // guarantee without holding the writer during the flush. See `syncer`.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
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
    // make sure the WAL file exists before the syncer opens it
    conn.query_row("SELECT COUNT(*) FROM streams", [], |_| Ok(()))?;
    let failed = Arc::new(AtomicBool::new(false));
    let (sync_tx, sync_rx) = mpsc::channel();
    let (tx, rx) = mpsc::channel();
    let syncer = super::syncer::spawn(
        file,
        sync_rx,
        tx.clone(),
        notices,
        last_position,
        failed.clone(),
        metrics.clone(),
    )?;
    let mut writer = Writer {
        conn,
        streams: HashMap::new(),
        subs: HashMap::new(),
        next_pos,
        ids: IdGenerator::new(),
        settled: Some(sync_tx),
        metrics,
    };
    let thread = std::thread::Builder::new()
        .name("eddy-writer".into())
        .spawn(move || writer.run(rx, syncer))
        .map_err(|e| EngineError::internal(format!("cannot start the writer thread: {e}")))?;
    Ok((WriterHandle { tx, failed }, thread))
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

/// A request's answer, held until its group is durable.
pub(crate) enum Pending {
    Append(Reply<Appended>, Result<Appended>),
    Settings(Reply<StreamSettings>, Result<StreamSettings>),
}

impl Pending {
    /// Sends the answer, or `err` in its place.
    pub(crate) fn answer(self, err: Option<EngineError>) {
        match (self, err) {
            (Pending::Append(tx, r), None) => drop(tx.send(r)),
            (Pending::Settings(tx, r), None) => drop(tx.send(r)),
            (Pending::Append(tx, _), Some(e)) => drop(tx.send(Err(e))),
            (Pending::Settings(tx, _), Some(e)) => drop(tx.send(Err(e))),
        }
    }
}

struct Writer {
    conn: Connection,
    /// Streams by (account, name): a cache of the `streams` table.
    streams: HashMap<StreamKey, StreamRow>,
    /// Substreams by (stream id, canonical args): a cache of `substreams`.
    subs: HashMap<SubKey, SubRow>,
    next_pos: i64,
    ids: IdGenerator,
    /// Committed groups go to the syncer, which answers them once durable.
    settled: Option<mpsc::Sender<super::syncer::Settled>>,
    metrics: Arc<Metrics>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The transaction being filled: the requests applied since the last commit.
struct OpenGroup {
    started: Instant,
    first_pos: i64,
    staged: Staged,
    pending: Vec<Pending>,
    bytes: usize,
}

impl OpenGroup {
    fn full(&self) -> bool {
        self.staged.events as usize >= GROUP_MAX_EVENTS || self.bytes >= GROUP_MAX_BYTES
    }
}

impl Writer {
    /// Applies each request as it arrives into the open transaction, and commits it
    /// whenever the syncer is free (or the group is full). Under load the syncer is
    /// busy flushing the previous group, so requests pile into the next one: one
    /// commit and one flush per disk round trip, however many requests. An idle writer
    /// commits a lone request at once.
    fn run(&mut self, rx: mpsc::Receiver<Command>, syncer: std::thread::JoinHandle<()>) {
        let mut stop: Option<oneshot::Sender<()>> = None;
        let mut syncer_idle = true;
        let mut group: Option<OpenGroup> = None;
        while stop.is_none() {
            let Ok(cmd) = rx.recv() else { break };
            let mut next = Some(cmd);
            while let Some(cmd) = next.take() {
                match cmd {
                    Command::Append(..) | Command::Settings(..) => self.apply(cmd, &mut group),
                    Command::Flushed => syncer_idle = true,
                    Command::Shutdown(done) => stop = Some(done),
                }
                if stop.is_none() && !group.as_ref().is_some_and(OpenGroup::full) {
                    next = rx.try_recv().ok();
                }
            }
            let ready =
                syncer_idle || stop.is_some() || group.as_ref().is_some_and(OpenGroup::full);
            if ready && let Some(g) = group.take() {
                self.commit(g);
                syncer_idle = false;
            }
        }
        if let Some(g) = group.take() {
            self.commit(g);
        }
        // the syncer flushes and answers what is left, then stops
        self.settled = None;
        let _ = syncer.join();
        if let Some(done) = stop {
            let _ = done.send(());
        }
        tracing::info!("writer stopped");
    }

    /// Applies one request in the open transaction (beginning one if needed). Its
    /// validation errors become its answer; a storage error rolls the whole group back.
    fn apply(&mut self, cmd: Command, group: &mut Option<OpenGroup>) {
        if group.is_none() {
            if let Err(e) = self.conn.execute_batch("BEGIN IMMEDIATE") {
                tracing::error!(error = %e, "cannot begin a transaction");
                Pending::from(cmd).answer(Some(EngineError::internal("storage write failed")));
                return;
            }
            *group = Some(OpenGroup {
                started: Instant::now(),
                first_pos: self.next_pos,
                staged: Staged::default(),
                pending: Vec::new(),
                bytes: 0,
            });
        }
        let Some(g) = group.as_mut() else { return };
        let (pending, storage_error) = match cmd {
            Command::Append(req, tx) => {
                g.bytes += req.events.iter().map(|e| e.data.len()).sum::<usize>();
                let r = self.append(req, &mut g.staged);
                let broken = r
                    .as_ref()
                    .err()
                    .filter(|e| e.code == ErrorCode::Internal)
                    .cloned();
                (Pending::Append(tx, r), broken)
            }
            Command::Settings(req, tx) => {
                let r = self.settings(req, &mut g.staged);
                let broken = r
                    .as_ref()
                    .err()
                    .filter(|e| e.code == ErrorCode::Internal)
                    .cloned();
                (Pending::Settings(tx, r), broken)
            }
            Command::Flushed | Command::Shutdown(_) => return,
        };
        g.pending.push(pending);
        if let Some(e) = storage_error
            && let Some(g) = group.take()
        {
            self.roll_back(g, &e);
        }
    }

    /// Commits the open group and hands it to the syncer, which answers it once the
    /// WAL is flushed.
    fn commit(&mut self, g: OpenGroup) {
        let committed = self.update_substreams(&g.staged).and_then(|()| {
            self.conn.execute_batch("COMMIT")?;
            Ok(())
        });
        if let Err(e) = committed {
            self.roll_back(g, &e);
            return;
        }
        let OpenGroup {
            started,
            staged,
            pending,
            ..
        } = g;
        self.streams.extend(staged.streams);
        self.subs.extend(staged.subs);
        self.metrics.commits.inc();
        self.metrics.events_appended.inc_by(staged.events);
        self.metrics.group_events.observe(staged.events as f64);
        self.metrics.group_requests.observe(pending.len() as f64);
        let last_position = self.next_pos - 1;
        let settled = super::syncer::Settled {
            pending,
            notice: (staged.events > 0).then_some(Committed {
                last_position,
                streams: staged.touched_streams,
            }),
            last_position,
            started,
        };
        if let Some(tx) = &self.settled
            && let Err(mpsc::SendError(s)) = tx.send(settled)
        {
            for p in s.pending {
                p.answer(Some(EngineError::internal("the syncer thread stopped")));
            }
        }
    }

    /// Rolls the open group back after a storage error: every request in it fails,
    /// and the caches reload from the database.
    fn roll_back(&mut self, g: OpenGroup, cause: &EngineError) {
        tracing::error!(error = %cause.message, "group rolled back after a storage error");
        let _ = self.conn.execute_batch("ROLLBACK");
        self.next_pos = g.first_pos;
        self.streams.clear();
        self.subs.clear();
        for p in g.pending {
            p.answer(Some(EngineError::internal(
                "the write could not be committed",
            )));
        }
    }

    /// Writes the touched substreams' counters, once per group.
    fn update_substreams(&mut self, staged: &Staged) -> Result<()> {
        let mut update = self.conn.prepare_cached(
            "UPDATE substreams SET event_count = ?1, last_index = ?2, last_timestamp = ?3 \
             WHERE id = ?4",
        )?;
        for sub in staged.subs.values() {
            update.execute(params![
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
                "INSERT INTO events (pos, factory_id, sid, idx, eid, type, ts, content_type, data, metadata) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?;
            for (e, ts) in req.events.iter().zip(stamped) {
                let id = e.id.unwrap_or_else(|| self.ids.next_v7());
                let pos = self.next_pos;
                insert.execute(params![
                    pos,
                    stream.factory.then_some(stream.id),
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
                .prepare_cached(
                    "SELECT 1 FROM substreams s JOIN events e ON e.sid = s.id \
                     WHERE s.stream_id = ?1 LIMIT 1",
                )?
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

/// Generates UUIDv7 event ids: the current unix milliseconds and 74 bits from a
/// SplitMix64 sequence seeded randomly per process. `Uuid::now_v7` would ask the kernel
/// for randomness on every id (a syscall per event on the writer thread); ids need to
/// be unique, not unpredictable. Written by hand: it is eight lines, where a crate
/// (`rand`) would be a heavier dependency than the code it saves.
struct IdGenerator {
    state: u64,
}

impl IdGenerator {
    fn new() -> Self {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(Uuid::new_v4().as_u128());
        Self { state: h.finish() }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn next_v7(&mut self) -> Uuid {
        let mut random = [0u8; 10];
        random[..8].copy_from_slice(&self.next_u64().to_le_bytes());
        random[8..].copy_from_slice(&self.next_u64().to_le_bytes()[..2]);
        uuid::Builder::from_unix_timestamp_millis(now_ms() as u64, &random).into_uuid()
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
