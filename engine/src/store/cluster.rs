//! What several nodes on one PostgreSQL database share (API §11), on the storage side:
//! the node and lease rows (`eddy_nodes`, `eddy_leases`), the listener that learns of
//! other nodes' commits and changes (`LISTEN`, with a poll of `event_positions` for
//! when a notification is lost), and the sequencer that announces every node's
//! commits to this node's live consumers in position order.
//!
//! The writer takes the row lock of `event_positions` for each group (see
//! `writer::Writer::lock_head`), so every position below a group's first was committed
//! before the group began: the sequencer can always read the gap from the database.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Notify, broadcast, mpsc};

use super::notice::{Committed, LIVE_DATA_BUDGET, LIVE_EVENTS_MAX, LiveEvent, SharedEvent};
use super::query::args;
use super::{Reads, read};
use crate::error::{EngineError, Result};
use crate::order::Position;
use crate::path::StreamPath;

/// The channel a commit is announced on: `<node> <last> <first> <touched>` (see
/// [`Touched::payload`] and [`commit_heard`]).
pub(crate) const COMMITS: &str = "eddy_commits";
/// The channel a change is announced on: `<node> <changes> <key>...`.
pub(crate) const CHANGES: &str = "eddy_changes";
/// The channel a node wakes the others on when it let leases go.
pub(crate) const LEASES: &str = "eddy_leases";

/// How often a node reads the head row, for commits and changes whose notification
/// it did not get.
const POLL: Duration = Duration::from_millis(250);

/// Proof that this node holds the lease on a piece of work: every write the work
/// makes carries it, and the writer checks it in the same transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fence {
    /// `reducers:<stream id>`, `pipe:<id>` or `webhook:<id>`.
    pub work: String,
    pub epoch: i64,
}

/// What reaches the sequencer.
pub(crate) enum Announce {
    /// This node's writer committed positions `first..=notice.last_position`.
    Local { first: i64, notice: Box<Committed> },
    /// Another node committed, as its notification said.
    Foreign(Box<Foreign>),
    /// Some node committed up to this position (what it touched unknown).
    Head(i64),
}

/// A change another node made (or one missed), for the engine to apply.
#[derive(Debug, Clone)]
pub enum Change {
    /// The keys of what changed: `access`, `controls`, or a piece of work.
    Keys(Vec<String>),
    /// The change counter moved without a notification: reload everything.
    Unknown,
}

/// Another node's commit of positions `first..=last`, from its notification.
pub(crate) struct Foreign {
    pub first: i64,
    pub last: i64,
    pub touched: Touched,
}

/// What one commit touched: its notification carries this to the other nodes, so
/// that they can tell their consumers which streams moved without reading the
/// events back (they read them only for live subscribers of their own).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct Touched {
    /// The ids of the streams that received events.
    #[serde(rename = "s")]
    streams: Vec<i64>,
    /// The (sub)streams that received events: account, stream and canonical args
    /// (empty for a plain stream).
    #[serde(rename = "p")]
    paths: Vec<(String, String, String)>,
    /// The streams whose history a splice replaced: account and stream.
    #[serde(rename = "x", default, skip_serializing_if = "Vec::is_empty")]
    spliced: Vec<(String, String)>,
}

/// The longest [`Touched`] a notification carries: PostgreSQL's payloads stop below
/// 8000 bytes, and the node id and positions go in front.
const TOUCHED_MAX: usize = 7_000;

impl Touched {
    pub(super) fn of(staged: &super::apply::Staged) -> Self {
        let path = |p: &StreamPath| {
            (
                p.account.as_str().to_owned(),
                p.stream.as_str().to_owned(),
                p.args.as_ref().map(|a| a.canonical()).unwrap_or_default(),
            )
        };
        Self {
            streams: staged.touched_streams.clone(),
            paths: staged.live_paths.iter().map(|p| path(p)).collect(),
            spliced: staged
                .spliced
                .iter()
                .map(|p| (p.account.as_str().to_owned(), p.stream.as_str().to_owned()))
                .collect(),
        }
    }

    /// As a notification carries it: JSON, or `-` when that would not fit (the
    /// other nodes then read the commit's events to learn what it touched).
    pub(super) fn payload(&self) -> String {
        match serde_json::to_string(self) {
            Ok(json) if json.len() <= TOUCHED_MAX => json,
            _ => "-".to_owned(),
        }
    }

    /// The notice of a commit that touched this, for consumers that read what they
    /// need: no events, hence incomplete.
    fn notice(self, last: i64) -> Committed {
        let mut paths: Vec<Arc<StreamPath>> = Vec::with_capacity(self.paths.len());
        for (account, stream, args) in &self.paths {
            if let Some(p) = StreamPath::stored(account, stream, args) {
                paths.push(Arc::new(p));
            }
        }
        let mut spliced = Vec::new();
        for (account, stream) in &self.spliced {
            if let Some(p) = StreamPath::stored(account, stream, "") {
                let p = Arc::new(p);
                if !paths.contains(&p) {
                    paths.push(p.clone());
                }
                spliced.push(p);
            }
        }
        let mut notice = Committed::new(Position(last), self.streams, Vec::new(), false, paths);
        notice.spliced = spliced;
        notice
    }
}

/// How long a commit that follows a gap waits for the notifications of the commits
/// in the gap before the sequencer reads those from the database: a notification
/// is most often a little behind, and only lost when the listener reconnects.
const GAP_WAIT: Duration = Duration::from_millis(100);

/// A commit the sequencer holds until those before it are announced.
enum Held {
    Local(Box<Committed>),
    Foreign(Box<Foreign>),
}

impl Held {
    fn last(&self) -> i64 {
        match self {
            Held::Local(n) => n.last_position.get(),
            Held::Foreign(f) => f.last,
        }
    }
}

/// Starts the sequencer: announces this node's commits and, in position order
/// between them, every other node's; moves `durable` along. Other nodes' commits
/// are announced from their notifications, with their events read back only while
/// this node has live subscribers (the fan-out's count in `metrics`), and read
/// from the database where a notification is missing or said too little. Answers
/// its queue and the position it has announced up to: `durable` can run ahead of
/// that, since a group without events that began after other nodes' commits moves
/// it without an announcement, so the listener compares the head with this one.
pub(crate) fn start_sequencer(
    reads: Reads,
    notices: broadcast::Sender<Arc<Committed>>,
    durable: Arc<AtomicI64>,
    metrics: Arc<crate::metrics::Metrics>,
) -> (mpsc::UnboundedSender<Announce>, Arc<AtomicI64>) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let shown = Arc::new(AtomicI64::new(durable.load(Ordering::Acquire)));
    let mut seq = Sequencer {
        reads,
        notices,
        announced: durable.load(Ordering::Acquire),
        durable,
        published: shown.clone(),
        metrics,
        held: std::collections::BTreeMap::new(),
        gap: None,
    };
    tokio::spawn(async move {
        loop {
            let msg = match seq.gap {
                None => rx.recv().await,
                Some((_, since)) => {
                    match tokio::time::timeout_at(since + GAP_WAIT, rx.recv()).await {
                        Ok(msg) => msg,
                        Err(_) => {
                            // the notifications of the gap did not come: read it
                            if let Some(first) = seq.held.keys().next().copied() {
                                seq.read_up_to(first - 1).await;
                            }
                            seq.release().await;
                            continue;
                        }
                    }
                }
            };
            match msg {
                None => return,
                Some(Announce::Local { first, notice }) => seq.hold(first, Held::Local(notice)),
                Some(Announce::Foreign(f)) => seq.hold(f.first, Held::Foreign(f)),
                Some(Announce::Head(head)) => seq.read_up_to(head).await,
            }
            seq.release().await;
        }
    });
    (tx, shown)
}

/// The sequencer's state (see [`start_sequencer`]).
struct Sequencer {
    reads: Reads,
    notices: broadcast::Sender<Arc<Committed>>,
    /// The last position announced.
    announced: i64,
    durable: Arc<AtomicI64>,
    published: Arc<AtomicI64>,
    /// The fan-out's count of live subscribers, and the counts of other nodes'
    /// commits announced from their notifications and read back.
    metrics: Arc<crate::metrics::Metrics>,
    /// Commits past a gap, by first position.
    held: std::collections::BTreeMap<i64, Held>,
    /// The position announced when the current gap was found, and when.
    gap: Option<(i64, tokio::time::Instant)>,
}

impl Sequencer {
    fn hold(&mut self, first: i64, commit: Held) {
        if commit.last() > self.announced {
            self.held.insert(first, commit);
        }
    }

    /// Announces the held commits that follow on from what was announced, and notes
    /// the gap before the rest.
    async fn release(&mut self) {
        while let Some(entry) = self.held.first_entry() {
            let first = *entry.key();
            if entry.get().last() <= self.announced {
                entry.remove();
                continue;
            }
            if first > self.announced + 1 {
                break;
            }
            match entry.remove() {
                // a read of the gap took part of it
                held if first <= self.announced => self.read_up_to(held.last()).await,
                Held::Local(notice) => {
                    let last = notice.last_position.get();
                    self.announce(Some(Arc::from(notice)), last);
                }
                Held::Foreign(f) if self.metrics.subscribers.get() > 0 => {
                    self.read_up_to(f.last).await
                }
                Held::Foreign(f) => {
                    let last = f.last;
                    self.metrics.foreign_commits_notified.inc();
                    self.announce(Some(Arc::new(f.touched.notice(last))), last);
                }
            }
        }
        self.gap = match (self.held.is_empty(), self.gap) {
            (true, _) => None,
            (false, Some(gap)) if gap.0 == self.announced => Some(gap),
            (false, _) => Some((self.announced, tokio::time::Instant::now())),
        };
    }

    fn announce(&mut self, notice: Option<Arc<Committed>>, last: i64) {
        self.announced = last;
        self.durable.fetch_max(last, Ordering::AcqRel);
        self.published.store(last, Ordering::Release);
        if let Some(n) = notice {
            let _ = self.notices.send(n);
        }
    }

    /// Reads other nodes' events up to `upto` and announces them, in pages of one
    /// notice each; retries until the database answers.
    async fn read_up_to(&mut self, upto: i64) {
        while self.announced < upto {
            match foreign(&self.reads, self.announced, upto).await {
                Ok((notice, last)) => {
                    self.metrics.foreign_reads.inc();
                    self.announce(notice.map(Arc::new), last)
                }
                Err(e) => {
                    tracing::warn!(error = %e.message, "cannot read other nodes' events; retrying");
                    tokio::time::sleep(POLL).await;
                }
            }
        }
    }
}

/// The events after `after` up to `upto` (at most one notice's worth) as a notice,
/// and the position it covers up to.
async fn foreign(reads: &Reads, after: i64, upto: i64) -> Result<(Option<Committed>, i64)> {
    let rows = reads
        .all(
            "SELECT e.pos, e.idx, e.eid, e.type, e.ts, e.content_type, e.data, e.metadata, \
             s.args, e.sid, e.origin, t.account, t.name, t.id FROM events e \
             JOIN substreams s ON s.id = e.sid JOIN streams t ON t.id = s.stream_id \
             WHERE e.pos > $1 AND e.pos <= $2 ORDER BY e.pos LIMIT $3",
            args![after, upto, LIVE_EVENTS_MAX as i64],
        )
        .await?;
    let complete = rows.len() < LIVE_EVENTS_MAX;
    let last = if complete {
        upto
    } else {
        rows.last().map_or(upto, |r| r.int(0).unwrap_or(upto))
    };
    let mut events = Vec::with_capacity(rows.len());
    let mut streams: Vec<i64> = Vec::new();
    let mut paths: Vec<Arc<StreamPath>> = Vec::new();
    let mut budget = LIVE_DATA_BUDGET;
    let mut spliced: Vec<Arc<StreamPath>> = Vec::new();
    for r in &rows {
        let (account, name, args) = (r.text(11)?, r.text(12)?, r.text(8)?);
        if let Some(p) = spliced_stream(&account, &name, &r.text(3)?, &r.blob(6)?) {
            // another node's splice (API §12): its account event comes before the
            // new history, so this notice tells subscribers before they read it
            let p = Arc::new(p);
            if !paths.contains(&p) {
                paths.push(p.clone());
            }
            spliced.push(p);
        }
        let Some(path) = StreamPath::stored(&account, &name, &args) else {
            continue;
        };
        let path = match paths.iter().find(|p| ***p == path) {
            Some(p) => p.clone(),
            None => {
                let p = Arc::new(path);
                paths.push(p.clone());
                p
            }
        };
        let stream_id = r.int(13)?;
        if !streams.contains(&stream_id) {
            streams.push(stream_id);
        }
        let mut event = read::stored_event(&format!("{account}/{name}"), r)?;
        let has_data = event.data.len() <= budget;
        if has_data {
            budget -= event.data.len();
        } else {
            event.data = Bytes::new();
        }
        events.push(LiveEvent {
            event: Arc::new(SharedEvent::new(event)),
            path,
            has_data,
        });
    }
    if events.is_empty() {
        return Ok((None, last));
    }
    let mut notice = Committed::new(Position(last), streams, events, complete, paths);
    notice.spliced = spliced;
    Ok((Some(notice), last))
}

/// The stream a `stream-spliced` account event (account `eddy`, stream `events`) is
/// about.
fn spliced_stream(account: &str, name: &str, event_type: &str, data: &[u8]) -> Option<StreamPath> {
    if account != crate::builtins::ACCOUNT || name != "events" || event_type != "stream-spliced" {
        return None;
    }
    let data: serde_json::Value = serde_json::from_slice(data).ok()?;
    let (account, stream) = data["stream"].as_str()?.split_once('/')?;
    StreamPath::stored(account, stream, "")
}

/// What the listener hands on.
pub(crate) struct Heard {
    /// Changes other nodes made.
    pub changes: mpsc::UnboundedReceiver<Change>,
    /// Woken when a node let leases go.
    pub leases: Arc<Notify>,
}

/// Starts the listener of node `node` on the database at `url`: other nodes' commits
/// go to the sequencer, their changes and lease releases to what it returns.
pub(crate) fn listen(
    url: String,
    reads: Reads,
    node: String,
    sequencer: mpsc::UnboundedSender<Announce>,
    announced: Arc<AtomicI64>,
) -> Heard {
    let (changes_tx, changes) = mpsc::unbounded_channel();
    let leases = Arc::new(Notify::new());
    let wake = leases.clone();
    tokio::spawn(async move {
        let mut listener: Option<sqlx::postgres::PgListener> = None;
        let mut seen_changes: Option<i64> = None;
        // the change count the last poll found ahead of the notifications
        let mut ahead: Option<i64> = None;
        // the head the last poll found ahead of what was announced
        let mut head_ahead: Option<i64> = None;
        let mut poll = tokio::time::interval(POLL);
        loop {
            if listener.is_none() {
                listener = connect_listener(&url).await;
            }
            let heard = match listener.as_mut() {
                Some(l) => tokio::select! {
                    n = l.try_recv() => Some(n),
                    _ = poll.tick() => None,
                },
                None => {
                    poll.tick().await;
                    None
                }
            };
            match heard {
                Some(Ok(Some(n))) => {
                    let payload = n.payload();
                    match n.channel() {
                        COMMITS => {
                            // this node's own commits reach the sequencer from its
                            // writer, with their events: reading them back is waste
                            if let Some(commit) = commit_heard(payload, &node) {
                                let _ = sequencer.send(commit);
                            }
                        }
                        CHANGES => {
                            let mut parts = payload.split(' ');
                            let from = parts.next().unwrap_or_default();
                            let count = parts.next().and_then(|c| c.parse::<i64>().ok());
                            if let Some(c) = count {
                                seen_changes = Some(seen_changes.map_or(c, |s| s.max(c)));
                            }
                            if from != node {
                                let keys: Vec<String> = parts.map(str::to_owned).collect();
                                // `*`: too many keys for one notification
                                let change = match keys.iter().any(|k| k == "*") {
                                    true => Change::Unknown,
                                    false => Change::Keys(keys),
                                };
                                let _ = changes_tx.send(change);
                            }
                        }
                        LEASES => wake.notify_one(),
                        _ => {}
                    }
                }
                // the connection was lost: notifications may have been missed, which
                // the next poll finds
                Some(Ok(None)) | Some(Err(_)) => {
                    listener = None;
                }
                None => match head(&reads).await {
                    Ok((last, count)) => {
                        // with notifications on, a head ahead of the announcements is
                        // most often a commit whose announcement is on its way (this
                        // node's own, above all): only one two polls find is read
                        let done = announced.load(Ordering::Acquire);
                        if listener.is_none() {
                            let _ = sequencer.send(Announce::Head(last));
                        } else if let Some(a) = head_ahead.filter(|a| *a > done) {
                            let _ = sequencer.send(Announce::Head(a));
                        }
                        head_ahead = (last > done).then_some(last);
                        match seen_changes {
                            None => seen_changes = Some(count),
                            Some(seen) if count > seen => {
                                // a notification may still be on its way: only a count
                                // two polls have found ahead was missed
                                if ahead.is_some_and(|a| a > seen) {
                                    seen_changes = Some(count);
                                    ahead = None;
                                    let _ = changes_tx.send(Change::Unknown);
                                } else {
                                    ahead = Some(count);
                                }
                            }
                            Some(_) => ahead = None,
                        }
                    }
                    Err(e) => tracing::debug!(error = %e.message, "cannot poll the head"),
                },
            }
        }
    });
    Heard { changes, leases }
}

/// What a commit notification of another node announces: `<node> <last> <first>
/// <touched>` (see `writer::Writer::commit_group`); `None` for this node's own.
fn commit_heard(payload: &str, node: &str) -> Option<Announce> {
    let mut parts = payload.splitn(4, ' ');
    if parts.next()? == node {
        return None;
    }
    let last = parts.next()?.parse::<i64>().ok()?;
    let first = parts.next().and_then(|f| f.parse::<i64>().ok());
    let touched = parts.next().and_then(|t| serde_json::from_str(t).ok());
    Some(match (first, touched) {
        (Some(first), Some(touched)) => Announce::Foreign(Box::new(Foreign {
            first,
            last,
            touched,
        })),
        _ => Announce::Head(last),
    })
}

async fn connect_listener(url: &str) -> Option<sqlx::postgres::PgListener> {
    let connected = async {
        let mut l = sqlx::postgres::PgListener::connect(url).await?;
        l.listen_all([COMMITS, CHANGES, LEASES]).await?;
        Ok::<_, sqlx::Error>(l)
    };
    match connected.await {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for other nodes' commits; polling");
            None
        }
    }
}

/// The last position committed and the change count.
async fn head(reads: &Reads) -> Result<(i64, i64)> {
    let row = reads
        .one("SELECT last, changes FROM event_positions", args![])
        .await?;
    Ok((row.int(0)?, row.int(1)?))
}

/// A node as `GET /api/cluster` lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeRow {
    pub id: String,
    pub address: String,
    #[serde(rename = "startedAt")]
    pub started_at: i64,
    #[serde(rename = "heartbeatAt")]
    pub heartbeat_at: i64,
    pub takeovers: i64,
}

/// A lease as `GET /api/cluster` lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LeaseRow {
    pub work: String,
    pub node: String,
    pub epoch: i64,
    /// Milliseconds until it expires (negative: expired).
    #[serde(rename = "expiresInMs")]
    pub expires_in_ms: i64,
    /// Whether another node may take it: expired, let go, or its node is gone.
    pub free: bool,
}

/// Writes this node's row, or its heartbeat.
pub(crate) async fn heartbeat(reads: &Reads, node: &str, address: &str) -> Result<()> {
    reads
        .execute(
            "INSERT INTO eddy_nodes (id, address) VALUES ($1, $2) \
             ON CONFLICT (id) DO UPDATE SET heartbeat_at = clock_timestamp()",
            args![node, address],
        )
        .await?;
    Ok(())
}

/// The live nodes, oldest first: those not [`gone`]; and forgets those whose heartbeat
/// stopped ten lease times ago.
pub(crate) async fn nodes(reads: &Reads, lease: Duration) -> Result<Vec<NodeRow>> {
    let ms = lease.as_millis() as i64;
    reads
        .execute(
            "DELETE FROM eddy_nodes WHERE heartbeat_at < clock_timestamp() - $1 * interval '10 milliseconds'",
            args![ms],
        )
        .await?;
    reads
        .execute(
            "DELETE FROM eddy_uploads u WHERE NOT EXISTS \
             (SELECT 1 FROM eddy_nodes n WHERE n.id = u.node)",
            args![],
        )
        .await?;
    let sql = format!(
        "SELECT id, address, CAST(extract(epoch FROM started_at) * 1000 AS BIGINT), \
         CAST(extract(epoch FROM heartbeat_at) * 1000 AS BIGINT), takeovers FROM eddy_nodes \
         WHERE NOT {} ORDER BY started_at, id",
        gone("eddy_nodes.id", "$1")
    );
    let rows = reads.all(&sql, args![ms]).await?;
    rows.iter()
        .map(|r| {
            Ok(NodeRow {
                id: r.text(0)?,
                address: r.text(1)?,
                started_at: r.int(2)?,
                heartbeat_at: r.int(3)?,
                takeovers: r.int(4)?,
            })
        })
        .collect()
}

/// Records an upload open on `node` on the (sub)stream at URL path `stream`.
pub(crate) async fn upload_opened(reads: &Reads, id: &str, node: &str, stream: &str) -> Result<()> {
    reads
        .execute(
            "INSERT INTO eddy_uploads (id, node, stream) VALUES ($1, $2, $3)",
            args![id, node, stream],
        )
        .await?;
    Ok(())
}

/// Removes the record of an upload.
pub(crate) async fn upload_closed(reads: &Reads, id: &str) -> Result<()> {
    reads
        .execute("DELETE FROM eddy_uploads WHERE id = $1", args![id])
        .await?;
    Ok(())
}

/// Whether a live node has an upload open on the (sub)stream at URL path `stream`,
/// or, with `substreams`, on any substream of the factory there.
pub(crate) async fn upload_open(
    reads: &Reads,
    stream: &str,
    substreams: bool,
    lease: Duration,
) -> Result<bool> {
    let sql = format!(
        "SELECT 1 FROM eddy_uploads u \
         WHERE (u.stream = $1 OR ($2 = 1 AND left(u.stream, length($3)) = $3)) \
         AND NOT {} LIMIT 1",
        gone("u.node", "$4")
    );
    // a substream's URL path is the factory's followed by its args in `(...)`
    let prefix = format!("{stream}(");
    let row = reads
        .optional(
            &sql,
            args![
                stream,
                i64::from(substreams),
                prefix,
                lease.as_millis() as i64
            ],
        )
        .await?;
    Ok(row.is_some())
}

/// Removes this node's row (a graceful shutdown).
pub(crate) async fn forget(reads: &Reads, node: &str) -> Result<()> {
    reads
        .execute("DELETE FROM eddy_nodes WHERE id = $1", args![node])
        .await?;
    Ok(())
}

/// Renews the unexpired leases among `works` that this node holds, in one statement;
/// answers those renewed. An expired lease is not renewed even if nobody took it (its
/// work may have stopped here). A lease row a group is holding for a fence check at
/// that moment (`Ledger::check_fence`) is skipped, not waited for: a renewal that
/// waited while holding other lease rows could deadlock with a group holding two.
/// The caller tells a skipped lease from a lost one with [`held_by`].
pub(crate) async fn renew(
    reads: &Reads,
    node: &str,
    works: &[String],
    lease: Duration,
) -> Result<Vec<Fence>> {
    // work keys hold no commas: `reducers:<id>`, `pipe:<id>`, `webhook:<id>`
    let list = works.join(",");
    let rows = reads
        .all(
            "WITH mine AS (SELECT work FROM eddy_leases WHERE node = $1 \
             AND expires_at > clock_timestamp() AND work = ANY(string_to_array($2, ',')) \
             FOR UPDATE SKIP LOCKED) \
             UPDATE eddy_leases l SET expires_at = clock_timestamp() + $3 * interval '1 millisecond' \
             FROM mine WHERE l.work = mine.work RETURNING l.work, l.epoch",
            args![node, list.as_str(), lease.as_millis() as i64],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(Fence {
                work: r.text(0)?,
                epoch: r.int(1)?,
            })
        })
        .collect()
}

/// The leases the database says this node holds, unexpired.
pub(crate) async fn held_by(reads: &Reads, node: &str) -> Result<Vec<Fence>> {
    let rows = reads
        .all(
            "SELECT work, epoch FROM eddy_leases WHERE node = $1 \
             AND expires_at > clock_timestamp()",
            args![node],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(Fence {
                work: r.text(0)?,
                epoch: r.int(1)?,
            })
        })
        .collect()
}

/// The SQL condition under which node `$n` (a column or parameter) counts as gone: its
/// heartbeat is older than the lease time, or it is overdue (older than a third of the
/// lease time and a second, `$lease` in ms) and no session on the database carries its
/// id (a process that died: PostgreSQL ends its sessions at once). The heartbeat rule
/// keeps a node that is alive behind a connection pooler, or after a failover, whose
/// sessions are not visible, from being taken for dead.
fn gone(node: &str, lease: &str) -> String {
    format!(
        "(NOT EXISTS (SELECT 1 FROM eddy_nodes n WHERE n.id = {node} \
         AND n.heartbeat_at > clock_timestamp() - {lease} * interval '1 millisecond') \
         OR (NOT EXISTS (SELECT 1 FROM eddy_nodes n WHERE n.id = {node} \
         AND n.heartbeat_at > clock_timestamp() - ({lease} / 3 + 1000) * interval '1 millisecond') \
         AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.application_name = {node})))"
    )
}

/// Takes the lease on `work` if nobody holds it, its holder let it expire, or its
/// holder is gone (see [`gone`]: a node's sessions carry its id as their
/// `application_name`, so a killed node's work moves within about a third of the lease
/// time rather than after all of it; a node that is only cut off keeps its sessions
/// until they time out, and its leases until they expire). The epoch only ever grows,
/// so a write fenced by an older holding is refused whoever holds the lease now.
/// Answers the fence, and whether it was taken from another node.
pub(crate) async fn claim(
    reads: &Reads,
    work: &str,
    node: &str,
    lease: Duration,
) -> Result<Option<(Fence, bool)>> {
    let sql = format!(
        "WITH old AS (SELECT node FROM eddy_leases WHERE work = $1) \
         INSERT INTO eddy_leases (work, node, epoch, expires_at) \
         VALUES ($1, $2, 1, clock_timestamp() + $3 * interval '1 millisecond') \
         ON CONFLICT (work) DO UPDATE SET node = EXCLUDED.node, \
         epoch = eddy_leases.epoch + 1, expires_at = EXCLUDED.expires_at \
         WHERE eddy_leases.expires_at < clock_timestamp() \
         OR (eddy_leases.node <> $2 AND {}) \
         RETURNING epoch, COALESCE((SELECT node FROM old), '')",
        gone("eddy_leases.node", "$3")
    );
    let row = reads
        .optional(&sql, args![work, node, lease.as_millis() as i64])
        .await?;
    let Some(row) = row else { return Ok(None) };
    // from a node that did not let it go (a let-go lease has no node)
    let before = row.text(1)?;
    let took_over = !before.is_empty() && before != node;
    if took_over {
        reads
            .execute(
                "UPDATE eddy_nodes SET takeovers = takeovers + 1 WHERE id = $1",
                args![node],
            )
            .await?;
    }
    Ok(Some((
        Fence {
            work: work.to_owned(),
            epoch: row.int(0)?,
        },
        took_over,
    )))
}

/// Lets a lease go (after its work stopped here): it stays, with no node and expired,
/// so that its epoch goes on growing.
pub(crate) async fn release(reads: &Reads, node: &str, fence: &Fence) -> Result<()> {
    reads
        .execute(
            "UPDATE eddy_leases SET node = '', expires_at = '-infinity' \
             WHERE work = $1 AND node = $2 AND epoch = $3",
            args![fence.work.as_str(), node, fence.epoch],
        )
        .await?;
    Ok(())
}

/// Tells the other nodes that leases were let go, so they take them at once.
pub(crate) async fn released(reads: &Reads, node: &str) -> Result<()> {
    reads
        .execute("SELECT pg_notify($1, $2)", args![LEASES, node])
        .await?;
    Ok(())
}

/// Every lease, for listings, with whether another node may take it (see [`claim`]).
pub(crate) async fn leases(reads: &Reads, lease: Duration) -> Result<Vec<LeaseRow>> {
    let sql = format!(
        "SELECT work, node, epoch, CASE WHEN expires_at < clock_timestamp() THEN -1 ELSE \
         CAST(extract(epoch FROM expires_at - clock_timestamp()) * 1000 AS BIGINT) END, \
         expires_at < clock_timestamp() OR {} FROM eddy_leases l ORDER BY work",
        gone("l.node", "$1")
    );
    let rows = reads.all(&sql, args![lease.as_millis() as i64]).await?;
    rows.iter()
        .map(|r| {
            Ok(LeaseRow {
                work: r.text(0)?,
                node: r.text(1)?,
                epoch: r.int(2)?,
                expires_in_ms: r.int(3)?,
                free: r.flag(4)?,
            })
        })
        .collect()
}

/// Every piece of background work there is: each stream with reducers, each pipe and
/// each webhook.
pub(crate) async fn all_work(reads: &Reads) -> Result<Vec<String>> {
    let rows = reads
        .all(
            "SELECT 'reducers:' || CAST(stream_id AS TEXT) FROM reducers GROUP BY stream_id \
             UNION ALL SELECT 'pipe:' || CAST(id AS TEXT) FROM pipes \
             UNION ALL SELECT 'webhook:' || id FROM webhooks",
            args![],
        )
        .await?;
    rows.iter().map(|r| r.text(0)).collect()
}

/// The refusal of a write whose lease this node no longer holds.
pub(crate) fn lease_lost(fence: &Fence) -> EngineError {
    EngineError::new(
        crate::error::ErrorCode::Conflict,
        format!(
            "this node no longer holds the lease on {} (epoch {}); another node runs it",
            fence.work, fence.epoch
        ),
    )
}

#[cfg(test)]
#[path = "cluster_tests.rs"]
mod tests;
