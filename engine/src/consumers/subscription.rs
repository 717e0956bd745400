//! A live subscription to a stream, a factory or a whole account: the events matching
//! a selector, from a starting point, then live, with no gap and no repeat.
//!
//! It registers with the hub first, then reads storage from its start up to the
//! durable position, then takes the hub's notices. Every event is delivered at most
//! once by keeping a *floor*: the global position up to which every event has been
//! delivered or passed over. A notice at or below the floor is skipped, and when the
//! subscriber lags (its queue overflowed, or a notice came without the data it needs)
//! it reads storage again from the floor. Commits are announced only once durable, and
//! reads stop at the durable position, so storage always holds what a notice announced.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::Engine;
use crate::consumers::hub::{Interest, Registration};
use crate::error::{EngineError, Result};
use crate::event::StoredEvent;
use crate::order::{Index, Position};
use crate::path::{AccountName, StreamPath};
use crate::selector::Selector;
use crate::store::read::{self, Cursor, EventQuery, Scope};
use crate::store::{Committed, LiveEvent, SharedEvent};

/// The span over which a subscription counts the events of the notices it takes
/// (see [`Subscription::busy`]).
const BUSY_SPAN: Duration = Duration::from_millis(25);

/// Events taken in one span (the current or the one before it) that make the load
/// sustained, each notice counting for at most [`NOTICE_EVENTS_COUNTED`]: a span lasts
/// 25 to 50 ms (it ends with the first notice after 25 ms), so 150 in one is 3 000 to
/// 6 000 events a second in commits of several events. Capping what one notice counts
/// keeps a stall at a low rate from looking like load: a slow fsync (tens of ms here)
/// lets a few dozen events pile up into one or two large notices, and a consumer that
/// then gathered for its window would add the whole window to those events' latency.
/// (At 1 000 events a second a span counts 25 to 50, and a stall adds at most a few
/// capped notices; docs/internals/decisions/0007-sse-gathering-and-fanout-merging.md.)
const BUSY_EVENTS: usize = 150;

/// The most events one commit counts for in a span (see [`BUSY_EVENTS`]).
const NOTICE_EVENTS_COUNTED: usize = 16;

/// Commits that such a span must also hold: gathering saves writes only when commits
/// come often, so a lone large batch (one commit) is written at once. A notice the
/// live fan-out merged counts for each commit in it.
const BUSY_NOTICES: usize = 8;

/// Events read from storage per catch-up step.
const CATCH_UP_PAGE: usize = 500;

/// What a subscription follows.
#[derive(Debug, Clone)]
pub enum Follow {
    /// A stream: a plain stream, a substream (args given) or every substream of a
    /// factory (no args).
    Stream(StreamPath),
    /// Every stream of the account.
    Account(AccountName),
    /// Every stream of every account: the firehose (`/eddy/spy`).
    All,
}

/// Where a subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// With the next event appended.
    Live,
    /// With the first stored event (the selector's `from` still applies).
    Beginning,
    /// After the event with this cursor (see [`Subscription::cursor`]): an index on a
    /// plain stream or substream, a global position on a factory or an account.
    After(u64),
    /// After this global position, whatever is followed (webhook cursors).
    Position(Position),
}

/// What one step of a subscription delivers (see [`Subscription::next_delivery`]).
pub enum Delivery {
    /// These events, in order; none only when the wait was stopped.
    Events(Vec<Arc<SharedEvent>>),
    /// Every event of this notice, in order.
    Notice(Arc<Committed>),
    /// A splice replaced the followed stream's history (API §12): the subscription
    /// goes on with the new history from index 0.
    Spliced(Arc<StreamPath>),
}

/// A subscription; dropping it unsubscribes.
pub struct Subscription {
    engine: Arc<Engine>,
    follow: Follow,
    selector: Selector,
    /// Whether the consumer wants the events' data (live notices may lack it).
    data: bool,
    reg: Registration,
    /// Every event at or below this global position was delivered or passed over.
    floor: Position,
    /// Reading storage (at the start, and after lagging) rather than notices.
    catching_up: bool,
    /// The scope of storage reads, once the stream exists.
    scope: Option<Scope>,
    /// The selector's `from` as asked: what a splice starts the subscription again
    /// from (a resumed subscription raises the selector's own).
    from: Option<Index>,
    /// The events and notices taken lately (see [`Subscription::busy`]).
    pace: Pace,
}

/// Events and notices counted in fixed spans: the current one and the one before it.
#[derive(Debug, Default)]
struct Pace {
    /// When the current span began; `None` before the first notice.
    since: Option<Instant>,
    current: Span,
    previous: Span,
}

#[derive(Debug, Default, Clone, Copy)]
struct Span {
    events: usize,
    /// Commits, not notices: a merged notice counts for each of its commits.
    notices: usize,
}

impl Span {
    fn busy(self) -> bool {
        self.events >= BUSY_EVENTS && self.notices >= BUSY_NOTICES
    }
}

impl Pace {
    /// Counts a notice of `events` events standing for `commits` commits.
    fn saw(&mut self, events: usize, commits: usize, now: Instant) {
        let elapsed = self.since.map(|t| now.saturating_duration_since(t));
        if elapsed.is_none_or(|e| e >= BUSY_SPAN) {
            // the span before counts only if it ended just now
            self.previous = match elapsed {
                Some(e) if e < 2 * BUSY_SPAN => self.current,
                _ => Span::default(),
            };
            self.current = Span::default();
            self.since = Some(now);
        }
        self.current.events += events.min(NOTICE_EVENTS_COUNTED * commits);
        self.current.notices += commits;
    }

    fn busy(&self) -> bool {
        self.current.busy() || self.previous.busy()
    }
}

impl Engine {
    /// Subscribes to `follow` from `start`. A stream that does not exist yet is waited
    /// for. Refuses a `sub` selector where there is no factory.
    pub async fn follow(
        self: &Arc<Self>,
        follow: Follow,
        selector: Selector,
        data: bool,
        start: Start,
    ) -> Result<Subscription> {
        let interest = match &follow {
            Follow::Stream(p) => Interest::Stream {
                account: p.account.as_str().to_owned(),
                stream: p.stream.as_str().to_owned(),
            },
            Follow::Account(a) => Interest::Account(a.as_str().to_owned()),
            Follow::All => Interest::All,
        };
        if !selector.subs.is_empty() {
            match &follow {
                Follow::Account(a) => {
                    return Err(EngineError::invalid(format!(
                        "selector sub= picks substreams of a factory; /{a} is an account"
                    )));
                }
                Follow::All => {
                    return Err(EngineError::invalid(
                        "selector sub= picks substreams of a factory; the firehose follows \
                         every stream",
                    ));
                }
                Follow::Stream(_) => {}
            }
        }
        // register first: whatever commits from now on reaches the queue
        let reg = self.hub.register(interest);
        let mut sub = Subscription {
            engine: self.clone(),
            follow,
            selector,
            data,
            reg,
            floor: Position::START,
            catching_up: true,
            scope: None,
            from: None,
            pace: Pace::default(),
        };
        sub.resolve().await?;
        sub.from = sub.selector.from;
        match start {
            Start::Live => {
                sub.floor = self.store.last_position();
                sub.catching_up = false;
            }
            Start::Beginning => {}
            // by index: a lasting condition, as later events have higher indexes anyway
            Start::After(i) if sub.by_index() => {
                let next = Index(i.saturating_add(1));
                sub.selector.from = Some(sub.selector.from.map_or(next, |f| f.max(next)));
            }
            Start::After(p) => sub.floor = Position(i64::try_from(p).unwrap_or(i64::MAX)),
            Start::Position(p) => sub.floor = p,
        }
        Ok(sub)
    }

    /// How many live subscriptions there are.
    pub fn subscribers(&self) -> usize {
        self.hub.subscribers()
    }
}

impl Subscription {
    /// Whether events are resumed by index (a plain stream or one substream) rather
    /// than by global position (a factory or an account).
    fn by_index(&self) -> bool {
        match &self.follow {
            Follow::Account(_) | Follow::All => false,
            Follow::Stream(p) => p.args.is_some() || !matches!(self.scope, Some(Scope::Factory(_))),
        }
    }

    /// An event's cursor, which [`Start::After`] resumes after: its index when the
    /// subscription follows one plain stream or substream, else its global position.
    pub fn cursor(&self, e: &StoredEvent) -> u64 {
        let by_index = match &self.follow {
            Follow::Account(_) | Follow::All => false,
            // a factory's events name their substream: `acct/strm('a')`
            Follow::Stream(p) => p.args.is_some() || !e.stream.ends_with(')'),
        };
        match by_index {
            true => e.index.get(),
            false => e.position.get().max(0) as u64,
        }
    }

    /// Finds the stream's storage scope, once it exists; checks the selector fits it.
    async fn resolve(&mut self) -> Result<()> {
        let Follow::Stream(path) = &self.follow else {
            return Ok(());
        };
        if self.scope.is_some() {
            return Ok(());
        }
        let Some(resolved) = self.engine.resolve(path).await? else {
            return Ok(());
        };
        let factory_read = resolved.info.factory && path.args.is_none();
        if !self.selector.subs.is_empty() && !factory_read {
            return Err(EngineError::invalid(format!(
                "selector sub= picks substreams of a factory, and {path} is not a factory URL"
            )));
        }
        self.scope = resolved.scope;
        Ok(())
    }

    /// Every event at or below this global position was delivered or passed over: once
    /// the events of the last [`Subscription::next`] are handled, a cursor to resume
    /// from with [`Start::Position`].
    pub fn floor(&self) -> Position {
        self.floor
    }

    /// Whether events are coming under sustained load, as of the last notice taken
    /// ([`BUSY_EVENTS`], counted with a cap per notice, in [`BUSY_NOTICES`] or more, in
    /// the current or the last [`BUSY_SPAN`]): a consumer may then trade a little
    /// latency for fewer, larger writes.
    pub fn busy(&self) -> bool {
        self.pace.busy()
    }

    /// The next events, in order; waits until there is at least one. Returns an empty
    /// batch only when `stop` resolves first.
    pub async fn next(
        &mut self,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<Vec<Arc<SharedEvent>>> {
        tokio::pin!(stop);
        loop {
            return Ok(match self.next_delivery(stop.as_mut()).await? {
                Delivery::Events(events) => events,
                Delivery::Notice(n) => n.events.iter().map(|l| l.event.clone()).collect(),
                // the new history's events follow as any others
                Delivery::Spliced(_) => continue,
            });
        }
    }

    /// As [`Subscription::next`], but a notice whose events are all for this
    /// subscription comes whole, for the consumer to render once for every subscriber
    /// of its kind ([`Committed::rendered`]) instead of taking its events one by one.
    pub async fn next_delivery(
        &mut self,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<Delivery> {
        tokio::pin!(stop);
        loop {
            if self.catching_up {
                let events = self.catch_up().await?;
                if !events.is_empty() {
                    return Ok(Delivery::Events(events));
                }
                continue;
            }
            if self.reg.signal.take_lagged() {
                while self.reg.rx.try_recv().is_ok() {}
                self.catching_up = true;
                // a splice among the notices missed shows as a new substream
                if let Some(path) = self.rescope().await? {
                    return Ok(Delivery::Spliced(path));
                }
                continue;
            }
            // one notice per check of the lag mark (see `hub`): a notice taken after
            // an unseen drop would move the floor past the dropped events
            let notice = tokio::select! {
                // queued notices first: a `stop` that is already over drains what waits
                biased;
                n = self.reg.rx.recv() => n,
                _ = self.reg.signal.lagged() => continue,
                _ = &mut stop => return Ok(Delivery::Events(Vec::new())),
            };
            let Some(notice) = notice else {
                return Ok(Delivery::Events(Vec::new()));
            };
            if let Some(path) = self.spliced(&notice) {
                // the new history is read from storage, from its first event (all of
                // it is past the floor, being appended after everything delivered)
                self.scope = None;
                self.selector.from = self.from;
                self.catching_up = true;
                return Ok(Delivery::Spliced(path));
            }
            if self.wants_all(&notice) {
                self.saw_notice(&notice);
                self.floor = self.floor.max(notice.last_position);
                return Ok(Delivery::Notice(notice));
            }
            let events = self.take(&notice);
            if !events.is_empty() {
                return Ok(Delivery::Events(events));
            }
        }
    }

    /// Looks the followed plain stream up again after missed notices: when its
    /// substream changed (a splice replaced its history), starts again from the new
    /// history's first event and answers the stream.
    async fn rescope(&mut self) -> Result<Option<Arc<StreamPath>>> {
        let Follow::Stream(path) = &self.follow else {
            return Ok(None);
        };
        if path.args.is_some() {
            return Ok(None);
        }
        let path = Arc::new(path.clone());
        let before = self.scope.take();
        self.resolve().await?;
        if before.is_some() && self.scope != before {
            self.selector.from = self.from;
            return Ok(Some(path));
        }
        Ok(None)
    }

    /// The followed plain stream, when `notice` says a splice replaced its history.
    fn spliced(&self, notice: &Committed) -> Option<Arc<StreamPath>> {
        let Follow::Stream(p) = &self.follow else {
            return None;
        };
        notice
            .spliced
            .iter()
            .find(|s| s.account == p.account && s.stream == p.stream && p.args.is_none())
            .cloned()
    }

    /// Counts a notice taken towards [`Subscription::busy`].
    fn saw_notice(&mut self, notice: &Committed) {
        self.saw_notice_at(notice, Instant::now());
    }

    fn saw_notice_at(&mut self, notice: &Committed, now: Instant) {
        self.pace.saw(notice.events.len(), notice.commits, now);
    }

    /// Whether every event of a complete notice is for this subscription, past its
    /// floor and with the data it needs: what [`Subscription::take`] would take whole.
    fn wants_all(&self, notice: &Committed) -> bool {
        let s = &notice.summary;
        notice.complete
            && notice
                .events
                .first()
                .is_some_and(|l| l.event.position > self.floor)
            && (s.all_data || !self.data)
            && notice.paths.iter().all(|p| self.place(p))
            && match self.selector.matches_all_within(
                (s.min_index, s.max_index),
                (s.min_timestamp, s.max_timestamp),
            ) {
                Some(all) => all,
                None => notice.events.iter().all(|l| {
                    self.selector
                        .matches(&l.event.event_type, l.event.index, l.event.timestamp)
                }),
            }
    }

    /// Which of the ways to name events' cursors this subscription uses (see
    /// [`Subscription::cursor`]): subscriptions of the same kind give a notice's events
    /// the same cursors. Below 3.
    pub fn cursor_kind(&self) -> usize {
        match &self.follow {
            // an account's events and the firehose's are named by position alike
            Follow::Account(_) | Follow::All => 0,
            Follow::Stream(p) if p.args.is_some() => 1,
            Follow::Stream(_) => 2,
        }
    }

    /// The matching events of a notice, moving the floor past it; on an event whose
    /// data is needed but missing, switches to reading storage instead.
    fn take(&mut self, notice: &Committed) -> Vec<Arc<SharedEvent>> {
        self.saw_notice(notice);
        let mut out = Vec::new();
        for live in &notice.events {
            if live.event.position <= self.floor || !self.matches(live) {
                continue;
            }
            if self.data && !live.has_data {
                // what was taken so far is delivered; storage supplies the rest
                self.catching_up = true;
                return out;
            }
            self.floor = live.event.position;
            out.push(live.event.clone());
        }
        if notice.complete {
            self.floor = self.floor.max(notice.last_position);
        } else {
            // the events left out of the notice follow those in it: storage has them
            self.catching_up = true;
        }
        out
    }

    fn matches(&self, live: &LiveEvent) -> bool {
        let e = &live.event;
        self.place(&live.path) && self.selector.matches(&e.event_type, e.index, e.timestamp)
    }

    /// Whether events of `path` are followed (their type, index and time aside).
    fn place(&self, path: &StreamPath) -> bool {
        match &self.follow {
            // an account's internal streams (reducer logs, `strm/logs`) are not its own
            Follow::Account(a) => path.account == *a && !path.stream.as_str().contains('/'),
            Follow::All => !path.stream.as_str().contains('/'),
            Follow::Stream(p) => {
                path.account == p.account
                    && path.stream == p.stream
                    && match &p.args {
                        Some(args) => path.args.as_ref() == Some(args),
                        None => {
                            self.selector.matches_args(path.args.as_ref())
                                || (self.selector.subs.is_empty() && path.args.is_none())
                        }
                    }
            }
        }
    }

    /// One page from storage after the floor (or from the start index); leaves
    /// catch-up mode once storage has nothing more up to the durable position.
    async fn catch_up(&mut self) -> Result<Vec<Arc<SharedEvent>>> {
        // the durable position before the read: everything at or below it is in storage
        let durable = self.engine.store.last_position();
        self.resolve().await?;
        let page = match &self.follow {
            Follow::Account(a) => {
                read::account_events(
                    &self.engine.store.reads,
                    Some(a.as_str()),
                    &self.selector,
                    self.floor,
                    CATCH_UP_PAGE,
                    durable,
                )
                .await?
            }
            Follow::All => {
                read::account_events(
                    &self.engine.store.reads,
                    None,
                    &self.selector,
                    self.floor,
                    CATCH_UP_PAGE,
                    durable,
                )
                .await?
            }
            Follow::Stream(path) => {
                let Some(scope) = self.scope else {
                    // the stream does not exist yet: its first events will come live
                    self.floor = self.floor.max(durable);
                    self.catching_up = false;
                    return Ok(Vec::new());
                };
                let cursor = Cursor::After(self.floor);
                let prefix = format!("{}/{}", path.account, path.stream);
                read::events(
                    &self.engine.store.reads,
                    &EventQuery {
                        scope,
                        prefix: &prefix,
                        selector: &self.selector,
                        cursor,
                        limit: CATCH_UP_PAGE,
                    },
                    durable,
                )
                .await?
            }
        };
        if let Some(last) = page.events.last() {
            self.floor = self.floor.max(last.position);
        }
        if !page.more {
            self.floor = self.floor.max(durable);
            self.catching_up = false;
        }
        Ok(page
            .events
            .into_iter()
            .map(|e| Arc::new(SharedEvent::new(e)))
            .collect())
    }
}

#[cfg(test)]
#[path = "subscription_tests.rs"]
mod tests;
