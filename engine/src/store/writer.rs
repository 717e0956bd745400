//! The single writer: one thread that owns the only write connection (rusqlite) and
//! commits in groups.
//!
//! Requests arrive on a channel. The writer applies everything queued to one
//! transaction, lending its [`Ledger`] (the connection and caches) to the request's
//! domain write: `apply` for appends and settings, the `*_writes` modules for the
//! rest. A request that fails validation is answered with its error and writes
//! nothing; the others are unaffected. The writer commits the group, flushes the WAL
//! and only then answers each request (`flush`). Requests that
//! arrive during a flush queue up and form the next group: one commit and one flush
//! per disk round trip, however many requests. A storage error rolls the whole open
//! group back and drops the writer's caches, which reload from the database.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::mpsc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use rusqlite::Connection;
use tokio::sync::{broadcast, oneshot};

use super::access_writes::AccessWrite;
use super::apply::{
    AppendRequest, Appended, FastMap, Ledger, SettingsRequest, Staged, SubKey, SubRow,
};
use super::db::{Db, vals};
use super::pipe_writes::{PipeWrite, PipeWritten};
use super::reducer_writes::{ReducerWrite, ReducerWritten};
use super::splice_writes::{SpliceWrite, SpliceWritten};
use super::webhook_writes::WebhookWrite;
use crate::error::{EngineError, ErrorCode, Result};
use crate::json::JsonLimits;
use crate::metrics::Metrics;
use crate::settings::StreamSettings;

/// Most events one group takes before it commits.
const GROUP_MAX_EVENTS: usize = 20_000;
/// Most data bytes one group takes before it commits.
const GROUP_MAX_BYTES: usize = 32 * 1024 * 1024;

pub use super::notice::Committed;

type Reply<T> = oneshot::Sender<Result<T>>;

pub(crate) enum Command {
    Append(AppendRequest, Reply<Appended>),
    Settings(SettingsRequest, Reply<StreamSettings>),
    Reducer(ReducerWrite, Reply<ReducerWritten>),
    Webhook(WebhookWrite, Reply<bool>),
    Pipe(PipeWrite, Reply<PipeWritten>),
    Access(AccessWrite, Reply<bool>),
    Splice(SpliceWrite, Reply<SpliceWritten>),
    /// Finishes everything queued before it, then stops the writer.
    Shutdown(oneshot::Sender<()>),
}

impl From<Command> for Pending {
    /// The answer slot of a request command (for failing it before it is applied).
    fn from(cmd: Command) -> Self {
        match cmd {
            Command::Append(_, tx) => Pending::Append(tx, Err(shutting_down())),
            Command::Settings(_, tx) => Pending::Settings(tx, Err(shutting_down())),
            Command::Reducer(_, tx) => Pending::Reducer(tx, Err(shutting_down())),
            Command::Webhook(_, tx) => Pending::Webhook(tx, Err(shutting_down())),
            Command::Pipe(_, tx) => Pending::Pipe(tx, Err(shutting_down())),
            Command::Access(_, tx) => Pending::Access(tx, Err(shutting_down())),
            Command::Splice(_, tx) => Pending::Splice(tx, Err(shutting_down())),
            Command::Shutdown(_) => {
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
        self.request(|tx| Command::Append(req, tx)).await
    }

    pub(crate) async fn settings(&self, req: SettingsRequest) -> Result<StreamSettings> {
        self.request(|tx| Command::Settings(req, tx)).await
    }

    pub(crate) async fn reducer(&self, write: ReducerWrite) -> Result<ReducerWritten> {
        self.request(|tx| Command::Reducer(write, tx)).await
    }

    /// Like [`WriterHandle::reducer`], for the reducer worker threads, which block.
    pub(crate) fn reducer_blocking(&self, write: ReducerWrite) -> Result<ReducerWritten> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Reducer(write, tx))?;
        rx.blocking_recv().map_err(|_| shutting_down())?
    }

    /// Applies a webhook write; `Ok(false)` when the webhook does not exist.
    pub(crate) async fn webhook(&self, write: WebhookWrite) -> Result<bool> {
        self.request(|tx| Command::Webhook(write, tx)).await
    }

    pub(crate) async fn pipe(&self, write: PipeWrite) -> Result<PipeWritten> {
        self.request(|tx| Command::Pipe(write, tx)).await
    }

    pub(crate) async fn splice(&self, write: SpliceWrite) -> Result<SpliceWritten> {
        self.request(|tx| Command::Splice(write, tx)).await
    }

    /// Applies an access write (accounts, keys, event types).
    pub(crate) async fn access(&self, write: AccessWrite) -> Result<bool> {
        self.request(|tx| Command::Access(write, tx)).await
    }

    /// Queues the command `make` builds around its answer slot and waits for the
    /// answer.
    async fn request<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.send(make(tx))?;
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
    // NORMAL: a commit writes the WAL without flushing it; the writer flushes it
    // (fdatasync) before any request of the group is answered, which gives FULL's
    // guarantee with one flush per group. See `flush`.
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
    json: JsonLimits,
) -> Result<(WriterHandle, std::thread::JoinHandle<()>)> {
    let conn = open_connection(file)?;
    let next_pos: i64 =
        conn.query_row("SELECT COALESCE(MAX(pos), 0) + 1 FROM events", [], |r| {
            r.get(0)
        })?;
    last_position.store(next_pos - 1, Ordering::Release);
    // make sure the WAL file exists before the flusher opens it
    conn.query_row("SELECT COUNT(*) FROM streams", [], |_| Ok(()))?;
    let failed = Arc::new(AtomicBool::new(false));
    let flusher = super::flush::Flusher::open(
        file,
        notices,
        last_position,
        failed.clone(),
        metrics.clone(),
    )?;
    start(
        Db::Sqlite(conn),
        next_pos,
        flusher,
        failed,
        mpsc::channel(),
        metrics,
        json,
    )
}

/// Starts the writer thread over a PostgreSQL database at `url` (migrated). COMMIT is
/// durable there (`synchronous_commit` on), so a group is answered once committed.
/// Other nodes' writers may share the database: each group locks its head row
/// (`Writer::lock_head`), and commits are announced through `sequencer`.
pub(crate) async fn spawn_postgres(
    url: &str,
    node: String,
    sequencer: tokio::sync::mpsc::UnboundedSender<super::cluster::Announce>,
    last_position: Arc<AtomicI64>,
    metrics: Arc<Metrics>,
    json: JsonLimits,
) -> Result<(WriterHandle, std::thread::JoinHandle<()>)> {
    // the connection lives on the writer's thread, with a runtime of its own
    let connect = url.to_owned();
    let db = tokio::task::spawn_blocking(move || -> Result<Db> {
        let db = Db::Postgres(Box::new(super::db::Pg::connect(&connect)?));
        db.set_session("SET synchronous_commit = on")?;
        // a writer stopped (a paused process, a cut network) while its group holds the
        // head row would hold every node's writes: PostgreSQL ends its session instead
        db.set_session("SET idle_in_transaction_session_timeout = '5s'")?;
        // the values written into the COMMIT's statements (see `commit_group`) are
        // quoted for this setting, the default, which a server may have changed
        db.set_session("SET standard_conforming_strings = on")?;
        Ok(db)
    })
    .await
    .map_err(|e| EngineError::internal(format!("cannot connect the writer: {e}")))??;
    // the first group reads the head again under its lock
    let next_pos = last_position.load(Ordering::Acquire) + 1;
    let failed = Arc::new(AtomicBool::new(false));
    let flusher =
        super::flush::Flusher::committed(sequencer, last_position, failed.clone(), metrics.clone());
    // the key of server-generated ids is read (or made) on the writer's thread, which
    // may block on the runtime
    let (ready_tx, ready_rx) = oneshot::channel();
    let (tx, rx) = mpsc::channel();
    let handle = WriterHandle {
        tx,
        failed: failed.clone(),
    };
    let thread = std::thread::Builder::new()
        .name("eddy-writer".into())
        .spawn(move || {
            let ids = match super::event_ids::EventIds::load(&db) {
                Ok(ids) => ids,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let _ = ready_tx.send(Ok(()));
            let mut writer = Writer::new(db, next_pos, ids, flusher, metrics, json);
            writer.ledger.node = Some(node);
            writer.head = Some(Head {
                commits: None,
                changes: None,
                contended: false,
                hot: Vec::new(),
            });
            writer.run(rx);
        })
        .map_err(|e| EngineError::internal(format!("cannot start the writer thread: {e}")))?;
    ready_rx
        .await
        .map_err(|_| EngineError::internal("the writer thread ended at start"))??;
    Ok((handle, thread))
}

/// Starts the writer thread over an open SQLite connection.
fn start(
    db: Db,
    next_pos: i64,
    flusher: super::flush::Flusher,
    failed: Arc<AtomicBool>,
    (tx, rx): (mpsc::Sender<Command>, mpsc::Receiver<Command>),
    metrics: Arc<Metrics>,
    json: JsonLimits,
) -> Result<(WriterHandle, std::thread::JoinHandle<()>)> {
    let ids = super::event_ids::EventIds::load(&db)?;
    let mut writer = Writer::new(db, next_pos, ids, flusher, metrics, json);
    let thread = std::thread::Builder::new()
        .name("eddy-writer".into())
        .spawn(move || writer.run(rx))
        .map_err(|e| EngineError::internal(format!("cannot start the writer thread: {e}")))?;
    Ok((WriterHandle { tx, failed }, thread))
}

/// A request's answer, held until its group is durable.
pub(crate) enum Pending {
    Append(Reply<Appended>, Result<Appended>),
    Settings(Reply<StreamSettings>, Result<StreamSettings>),
    Reducer(Reply<ReducerWritten>, Result<ReducerWritten>),
    Webhook(Reply<bool>, Result<bool>),
    Pipe(Reply<PipeWritten>, Result<PipeWritten>),
    Access(Reply<bool>, Result<bool>),
    Splice(Reply<SpliceWritten>, Result<SpliceWritten>),
}

impl Pending {
    /// Sends the answer, or `err` in its place.
    pub(crate) fn answer(self, err: Option<EngineError>) {
        match (self, err) {
            (Pending::Append(tx, r), None) => drop(tx.send(r)),
            (Pending::Settings(tx, r), None) => drop(tx.send(r)),
            (Pending::Reducer(tx, r), None) => drop(tx.send(r)),
            (Pending::Webhook(tx, r), None) => drop(tx.send(r)),
            (Pending::Pipe(tx, r), None) => drop(tx.send(r)),
            (Pending::Access(tx, r), None) => drop(tx.send(r)),
            (Pending::Splice(tx, r), None) => drop(tx.send(r)),
            (Pending::Append(tx, _), Some(e)) => drop(tx.send(Err(e))),
            (Pending::Settings(tx, _), Some(e)) => drop(tx.send(Err(e))),
            (Pending::Reducer(tx, _), Some(e)) => drop(tx.send(Err(e))),
            (Pending::Webhook(tx, _), Some(e)) => drop(tx.send(Err(e))),
            (Pending::Pipe(tx, _), Some(e)) => drop(tx.send(Err(e))),
            (Pending::Access(tx, _), Some(e)) => drop(tx.send(Err(e))),
            (Pending::Splice(tx, _), Some(e)) => drop(tx.send(Err(e))),
        }
    }
}

pub(super) struct Writer {
    /// The connection and caches the group's writes go through.
    ledger: Ledger,
    /// Makes each committed group durable, then answers it.
    flusher: super::flush::Flusher,
    metrics: Arc<Metrics>,
    /// Where other nodes write to the same database (PostgreSQL): what the writer
    /// knows of the shared head.
    head: Option<Head>,
}

/// What a writer that shares its database knows of the head row.
struct Head {
    /// The head's commit count after this writer's last commit; `None` when unknown.
    commits: Option<i64>,
    /// The head's change count as this writer last saw it; `None` when unknown.
    changes: Option<i64>,
    /// Whether another node had committed before this writer's last group.
    contended: bool,
    /// The substreams the last group appended to, when another node had committed
    /// before it: the next group reads their counters again as it locks the head
    /// (see [`Writer::lock_head`]).
    hot: Vec<(SubKey, i64)>,
}

/// Most substreams [`Head::hot`] holds.
const HOT_MAX: usize = 64;

impl Writer {
    fn new(
        db: Db,
        next_pos: i64,
        ids: super::event_ids::EventIds,
        flusher: super::flush::Flusher,
        metrics: Arc<Metrics>,
        json: JsonLimits,
    ) -> Self {
        Self {
            ledger: Ledger {
                db,
                streams: FastMap::default(),
                subs: FastMap::default(),
                next_pos,
                ids,
                json,
                node: None,
            },
            flusher,
            metrics,
            head: None,
        }
    }
}

pub(crate) fn now_ms() -> i64 {
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
    /// Applies everything queued into one transaction, commits it and flushes it,
    /// then answers it; requests that arrive meanwhile form the next group. An idle
    /// writer commits a lone request at once.
    fn run(&mut self, rx: mpsc::Receiver<Command>) {
        let mut stop: Option<oneshot::Sender<()>> = None;
        while stop.is_none() {
            let Ok(cmd) = rx.recv() else { break };
            let mut group: Option<OpenGroup> = None;
            let mut next = Some(cmd);
            while let Some(cmd) = next.take() {
                match cmd {
                    Command::Shutdown(done) => stop = Some(done),
                    cmd => self.apply(cmd, &mut group),
                }
                if stop.is_none() && !group.as_ref().is_some_and(OpenGroup::full) {
                    next = rx.try_recv().ok();
                }
            }
            if let Some(g) = group.take() {
                self.commit(g);
            }
        }
        if let Some(done) = stop {
            let _ = done.send(());
        }
        tracing::info!("writer stopped");
    }

    /// Applies one request in the open transaction (beginning one if needed). Its
    /// validation errors become its answer; a storage error rolls the whole group back.
    fn apply(&mut self, cmd: Command, group: &mut Option<OpenGroup>) {
        if group.is_none() {
            let begin = if self.ledger.db.is_postgres() {
                "BEGIN"
            } else {
                "BEGIN IMMEDIATE"
            };
            let begun = self.reconnect().and_then(|()| match self.head.is_some() {
                // one round trip: the head is locked as the transaction begins
                true => self.lock_head(),
                false => self.ledger.db.control(begin),
            });
            if let Err(e) = begun {
                tracing::error!(error = %e.message, "cannot begin a transaction");
                // a transaction begun before the failure ends here
                if self.ledger.db.is_postgres() {
                    let _ = self.ledger.db.control("ROLLBACK");
                    self.forget_head();
                }
                let answer = if e.code == ErrorCode::Unavailable {
                    e
                } else {
                    EngineError::internal("storage write failed")
                };
                Pending::from(cmd).answer(Some(answer));
                return;
            }
            *group = Some(OpenGroup {
                started: Instant::now(),
                first_pos: self.ledger.next_pos,
                staged: Staged::default(),
                pending: Vec::new(),
                bytes: 0,
            });
        }
        let Some(g) = group.as_mut() else { return };
        let changes = self.ledger.db.total_changes();
        let (storage_error, pending) = match cmd {
            Command::Append(req, tx) => {
                g.bytes += req.events.iter().map(|e| e.data.len()).sum::<usize>();
                let r = self.ledger.append(req, &mut g.staged);
                (self.doomed(&r, changes), Pending::Append(tx, r))
            }
            Command::Settings(req, tx) => {
                let r = self.ledger.settings(req, &mut g.staged);
                (self.doomed(&r, changes), Pending::Settings(tx, r))
            }
            Command::Reducer(write, tx) => {
                let r = super::reducer_writes::reducer(&mut self.ledger, write, &mut g.staged);
                (self.doomed(&r, changes), Pending::Reducer(tx, r))
            }
            Command::Webhook(write, tx) => {
                let r = super::webhook_writes::webhook(&mut self.ledger, write, &mut g.staged);
                (self.doomed(&r, changes), Pending::Webhook(tx, r))
            }
            Command::Pipe(write, tx) => {
                if let PipeWrite::Batch(b) = &write {
                    g.bytes += b.outs.iter().map(|o| o.event.data.len()).sum::<usize>();
                }
                let r = super::pipe_writes::pipe(&mut self.ledger, write, &mut g.staged);
                (self.doomed(&r, changes), Pending::Pipe(tx, r))
            }
            Command::Access(write, tx) => {
                let r = super::access_writes::access(&mut self.ledger, write, &mut g.staged);
                (self.doomed(&r, changes), Pending::Access(tx, r))
            }
            Command::Splice(write, tx) => {
                let r = super::splice_writes::splice(&mut self.ledger, write, &mut g.staged);
                (self.doomed(&r, changes), Pending::Splice(tx, r))
            }
            Command::Shutdown(_) => return,
        };
        g.pending.push(pending);
        if let Some(e) = storage_error
            && let Some(g) = group.take()
        {
            self.roll_back(g, &e);
        }
    }

    /// Where other nodes write too: begins the group's transaction and locks the head
    /// row for it, so that groups commit one at a time across nodes. When another node
    /// committed since this writer's last group, it drops the cached substreams but
    /// those of [`Head::hot`], whose counters it reads again in the same round trip,
    /// and the cached streams when a change committed. A failure here leaves the
    /// transaction to roll back.
    fn lock_head(&mut self) -> Result<()> {
        let Some(head) = &mut self.head else {
            return Ok(());
        };
        let known = (head.commits, head.changes);
        let hot = std::mem::take(&mut head.hot);
        // the counters of the substreams the last group appended to, read in the same
        // round trip after the lock (a statement of its own: it sees every commit
        // before the lock), for when another node committed since (which moves them);
        // only while each still belongs to its stream (a splice moves a stream's
        // substream to the replaced history, and its args never change)
        let mut sql =
            "BEGIN; SELECT last, commits, changes FROM event_positions FOR UPDATE".to_owned();
        if !hot.is_empty() {
            let pairs: Vec<String> = (hot.iter())
                .map(|((stream_id, _), id)| format!("({id}, {stream_id})"))
                .collect();
            sql.push_str(&format!(
                "; SELECT id, event_count, last_timestamp FROM substreams \
                 WHERE (id, stream_id) IN ({})",
                pairs.join(", ")
            ));
        }
        let rows = self
            .ledger
            .db
            .control_rows(&sql, |r| Ok((r.int(0)?, r.int(1)?, r.int(2)?)))?;
        let Some(&(last, commits, changes)) = rows.first() else {
            return Err(EngineError::internal("event_positions has no row"));
        };
        let moved = known.0 != Some(commits) || self.ledger.next_pos != last + 1;
        if moved {
            // another node committed (or a commit whose answer was lost landed): the
            // substreams' counts may have moved; streams change only with a change
            self.ledger.next_pos = last + 1;
            self.ledger.subs.clear();
            if known.1 != Some(changes) {
                self.ledger.streams.clear();
            }
            for &(id, count, last_timestamp) in &rows[1..] {
                if let Some((key, _)) = hot.iter().find(|(_, hot_id)| *hot_id == id) {
                    let sub = SubRow {
                        id,
                        next_index: count as u64,
                        last_timestamp,
                    };
                    self.ledger.subs.insert(key.clone(), sub);
                }
            }
        }
        if let Some(head) = &mut self.head {
            head.commits = Some(commits);
            head.changes = Some(changes);
            head.contended = moved;
        }
        Ok(())
    }

    /// Forgets what the writer knew of the shared head (after a rollback): the next
    /// group reloads it.
    fn forget_head(&mut self) {
        if let Some(head) = &mut self.head {
            head.commits = None;
            head.changes = None;
        }
    }

    /// Commits the open group, whose events begin at position `first`. Where other
    /// nodes write too, it first writes the touched substreams' counters, moves the
    /// head row to the group's last position and announces the commit (with what it
    /// touched, see [`super::cluster::Touched`]) and what other nodes must reload, in
    /// the same transaction, so that the notifications go out only if it commits: sent
    /// with the COMMIT, in one round trip under the lock (the statements take no
    /// parameters, so the values are written into them: numbers, node ids, change keys
    /// and JSON made by eddy, quoted all the same).
    fn commit_group(&mut self, first: i64, staged: &Staged) -> Result<()> {
        if self.head.is_none() {
            return self.ledger.db.control("COMMIT");
        }
        let last = self.ledger.next_pos - 1;
        let changed = i64::from(!staged.changes.is_empty());
        let quoted = |text: &str| format!("'{}'", text.replace('\'', "''"));
        // `<node> <last> <first> <touched>`, see `cluster::commit_heard`
        let touched = super::cluster::Touched::of(staged).payload();
        // `<node> <change count> <key>...`, the count added by the statement itself
        let sql = format!(
            "{substreams}UPDATE event_positions SET last = {last}, commits = commits + 1, \
             changes = changes + {changed} RETURNING commits, changes, \
             CASE WHEN {events} THEN pg_notify({commits_channel}, {node} || {commit}) END, \
             CASE WHEN {changed} > 0 THEN pg_notify({changes_channel}, \
             {node} || ' ' || CAST(changes AS TEXT) || {keys}) END; COMMIT",
            events = staged.events > 0,
            commits_channel = quoted(super::cluster::COMMITS),
            changes_channel = quoted(super::cluster::CHANGES),
            node = quoted(self.ledger.node.as_deref().unwrap_or_default()),
            commit = quoted(&format!(" {last} {first} {touched}")),
            substreams = substreams_update(staged),
            keys = quoted(&change_keys(&staged.changes)),
        );
        let (commits, changes) = self
            .ledger
            .db
            .control_rows(&sql, |r| Ok((r.int(0)?, r.int(1)?)))?
            .into_iter()
            .next()
            .ok_or_else(|| EngineError::internal("event_positions has no row"))?;
        if let Some(head) = &mut self.head {
            head.commits = Some(commits);
            head.changes = Some(changes);
        }
        Ok(())
    }

    /// Connects to the database again if the connection was lost, and then rereads
    /// the next position: a group whose COMMIT answer was lost may have landed.
    fn reconnect(&mut self) -> Result<()> {
        if !self.ledger.db.heal()? {
            return Ok(());
        }
        self.forget_head();
        let next = self
            .ledger
            .db
            .row(
                "SELECT COALESCE(MAX(pos), 0) + 1 FROM events",
                vals![],
                |r| r.int(0),
            )?
            .unwrap_or(1);
        if next > self.ledger.next_pos {
            tracing::warn!(
                events = next - self.ledger.next_pos,
                "a group whose commit was not confirmed had committed"
            );
            self.flusher.advance(next - 1);
        }
        self.ledger.next_pos = next;
        self.ledger.streams.clear();
        self.ledger.subs.clear();
        Ok(())
    }

    /// The error that dooms the open group after a request: a storage error, or a
    /// refusal that came after the request had written (the group rolls back rather
    /// than commit half a change).
    fn doomed<T>(&self, r: &Result<T>, changes_before: u64) -> Option<EngineError> {
        let refused = r.as_ref().err()?;
        if let Some(e) = storage_failure(r) {
            return Some(e);
        }
        if self.ledger.db.total_changes() == changes_before {
            return None;
        }
        tracing::error!(
            error = %refused.message,
            "a request was refused after it had written; its group rolls back"
        );
        Some(EngineError::internal(format!(
            "a request was refused after it had written: {}",
            refused.message
        )))
    }

    /// Commits the open group, flushes the WAL and answers the group.
    fn commit(&mut self, g: OpenGroup) {
        let committed = self
            .update_substreams(&g.staged)
            .and_then(|()| self.commit_group(g.first_pos, &g.staged));
        if let Err(e) = committed {
            self.roll_back(g, &e);
            return;
        }
        let OpenGroup {
            started,
            first_pos,
            staged,
            pending,
            ..
        } = g;
        if let Some(head) = self.head.as_mut().filter(|h| h.contended) {
            head.hot = (staged.subs.iter())
                .take(HOT_MAX)
                .map(|(key, sub)| (key.clone(), sub.id))
                .collect();
        }
        self.ledger.streams.extend(staged.streams);
        self.ledger.subs.extend(staged.subs);
        self.metrics.commits.inc();
        self.metrics.events_appended.inc_by(staged.events);
        self.metrics.group_events.observe(staged.events as f64);
        self.metrics.group_requests.observe(pending.len() as f64);
        let last_position = self.ledger.next_pos - 1;
        self.flusher.flush(super::flush::Settled {
            pending,
            notice: (staged.events > 0).then(|| {
                let mut notice = Committed::new(
                    crate::order::Position(last_position),
                    staged.touched_streams,
                    staged.live,
                    staged.live_complete,
                    staged.live_paths,
                );
                notice.spliced = staged.spliced;
                notice
            }),
            first_position: first_pos,
            last_position,
            started,
        });
    }

    /// Rolls the open group back after a storage error: every request in it fails,
    /// and the caches reload from the database.
    fn roll_back(&mut self, g: OpenGroup, cause: &EngineError) {
        tracing::error!(error = %cause.message, "group rolled back after a storage error");
        let _ = self.ledger.db.control("ROLLBACK");
        self.forget_head();
        self.ledger.next_pos = g.first_pos;
        self.ledger.streams.clear();
        self.ledger.subs.clear();
        let answer = if cause.code == ErrorCode::Unavailable {
            EngineError::new(
                ErrorCode::Unavailable,
                "the database connection was lost; the write was not confirmed, retry it \
                 (with the same Event-Id, a retry never appends twice)",
            )
        } else {
            EngineError::internal("the write could not be committed")
        };
        for p in g.pending {
            p.answer(Some(answer.clone()));
        }
    }

    /// Writes the touched substreams' counters, once per group (where other nodes
    /// write too, [`Writer::commit_group`] writes them with its COMMIT).
    fn update_substreams(&mut self, staged: &Staged) -> Result<()> {
        if self.head.is_some() {
            return Ok(());
        }
        self.ledger.db.batch(
            "UPDATE substreams SET event_count = ?1, last_index = ?2, last_timestamp = ?3 \
             WHERE id = ?4",
            |update| {
                for sub in staged.subs.values() {
                    update.exec(vals![
                        sub.next_index as i64,
                        sub.next_index as i64 - 1,
                        sub.last_timestamp,
                        sub.id
                    ])?;
                }
                Ok(())
            },
        )
    }
}

/// The statement that writes the touched substreams' counters, with its values
/// written in (all numbers), ending in `; `; empty when the group touched none.
fn substreams_update(staged: &Staged) -> String {
    if staged.subs.is_empty() {
        return String::new();
    }
    let rows: Vec<String> = (staged.subs.values())
        .map(|sub| {
            let count = sub.next_index as i64;
            format!(
                "({}, {count}, {}, {})",
                sub.id,
                count - 1,
                sub.last_timestamp
            )
        })
        .collect();
    format!(
        "UPDATE substreams AS s SET event_count = CAST(v.c AS BIGINT), \
         last_index = CAST(v.l AS BIGINT), last_timestamp = CAST(v.t AS BIGINT) \
         FROM (VALUES {}) AS v (id, c, l, t) WHERE s.id = v.id; ",
        rows.join(", ")
    )
}

/// The keys of a change notification (` key key...`), or ` *` (reload everything)
/// when they would not fit PostgreSQL's 8000-byte payload.
fn change_keys(changes: &[String]) -> String {
    let keys = format!(" {}", changes.join(" "));
    if keys.len() > 7_000 {
        " *".to_owned()
    } else {
        keys
    }
}

/// The storage error in a request's result, if any: it dooms the whole group, unlike
/// the request's own validation errors, which are only its answer.
fn storage_failure<T>(r: &Result<T>) -> Option<EngineError> {
    r.as_ref()
        .err()
        .filter(|e| matches!(e.code, ErrorCode::Internal | ErrorCode::Unavailable))
        .cloned()
}
