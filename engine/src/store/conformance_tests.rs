//! The storage boundary's conformance suite: every operation of `store` (the writes
//! through the writer, the reads, and what the reducer threads read) run against a
//! SQLite file and against a throwaway PostgreSQL database, with the same answers
//! expected of both. Each scenario is one function over an open [`Store`]; the
//! `on_both!` macro makes a test of it for each backend.

use std::sync::Arc;

use super::access_reads;
use super::access_writes::{AccessWrite, NewKey, TypeRow};
use super::fold_source::{BatchOf, FoldSource};
use super::pipe_reads;
use super::pipe_writes::{PipeBatch, PipeRow, PipeWrite, PipeWritten, Routed};
use super::read::{self, Cursor, EventQuery, Scope};
use super::reducer_reads;
use super::reducer_writes::{Checkpoint, ReducerRow, ReducerWrite, ReducerWritten};
use super::test_backends::{self, event, path};
use super::webhook_reads;
use super::webhook_writes::{WebhookRow, WebhookWrite};
use super::{AppendRequest, SettingsRequest, Store};
use crate::error::ErrorCode;
use crate::event::{ExpectedIndex, NewEvent};
use crate::order::{Index, Position};
use crate::selector::Selector;

async fn append(store: &Store, p: &str, events: Vec<NewEvent>) {
    store
        .writer
        .append(AppendRequest {
            metadata: None,
            stream: path(p),
            events,
            expected: ExpectedIndex::Any,
        })
        .await
        .unwrap();
}

/// The id of stream `account/name` and of its substream `args`.
async fn ids(store: &Store, account: &str, name: &str, args: &str) -> (i64, i64) {
    let (info, sid) = read::stream_and_substream(&store.reads, account, name, args)
        .await
        .unwrap()
        .expect("the stream");
    (info.id, sid.expect("the substream"))
}

macro_rules! on_both {
    ($scenario:ident) => {
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_sqlite() {
                let dir = tempfile::tempdir().unwrap();
                let store = super::Store::open(dir.path(), Default::default(), Default::default())
                    .await
                    .unwrap();
                super::$scenario(&store).await;
                store.shutdown().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_postgres() {
                let Some(url) =
                    super::test_backends::migrated_postgres(stringify!($scenario)).await
                else {
                    return;
                };
                let store =
                    super::Store::open_postgres(&url, Default::default(), Default::default())
                        .await
                        .unwrap();
                super::$scenario(&store).await;
                store.shutdown().await;
            }
        }
    };
}

/// Settings, appends and every read of streams and events.
async fn streams_and_events(store: &Store) {
    let mut fields = serde_json::Map::new();
    fields.insert("factory".into(), true.into());
    store
        .writer
        .settings(SettingsRequest {
            stream: path("acme/orders"),
            fields,
            replace: false,
        })
        .await
        .unwrap();
    append(
        store,
        "acme/orders('a')",
        vec![event("placed", b"1"), event("paid", b"2")],
    )
    .await;
    append(store, "acme/orders('b')", vec![event("placed", b"3")]).await;
    append(
        store,
        "acme/log",
        vec![event("x", b"10"), event("y", b"11"), event("x", b"12")],
    )
    .await;
    let durable = store.last_position();

    let orders = read::stream(&store.reads, "acme", "orders")
        .await
        .unwrap()
        .unwrap();
    assert!(orders.factory && orders.settings.factory);
    assert!(
        read::stream(&store.reads, "acme", "none")
            .await
            .unwrap()
            .is_none()
    );
    let (log_id, log_sid) = ids(store, "acme", "log", "").await;
    assert_eq!(
        read::substream_id(&store.reads, log_id, "").await.unwrap(),
        Some(log_sid)
    );

    // a (sub)stream's events through a selector, paged
    let only_x = Selector {
        types: vec!["x".into()],
        ..Selector::default()
    };
    let q = |selector, cursor, limit| EventQuery {
        scope: Scope::Substream(log_sid),
        prefix: "acme/log",
        selector,
        cursor,
        limit,
    };
    let page = read::events(
        &store.reads,
        &q(&only_x, Cursor::Index(Index(0)), 10),
        durable,
    )
    .await
    .unwrap();
    let idx: Vec<u64> = page.events.iter().map(|e| e.index.get()).collect();
    assert_eq!((idx, page.more), (vec![0, 2], false));
    assert_eq!(&page.events[1].data[..], b"12");
    let any = Selector::default();
    let first = read::events(&store.reads, &q(&any, Cursor::Index(Index(0)), 2), durable)
        .await
        .unwrap();
    assert!(first.more);
    let next = first.next_cursor(Scope::Substream(log_sid)).unwrap();
    let rest = read::events(&store.reads, &q(&any, next, 2), durable)
        .await
        .unwrap();
    assert_eq!(rest.events.len(), 1);
    assert_eq!(rest.events[0].index, 2);
    // nothing past the durable position is seen
    let early = read::events(
        &store.reads,
        &q(&any, Cursor::Index(Index(0)), 10),
        Position(durable.get() - 1),
    )
    .await
    .unwrap();
    assert_eq!(early.events.len(), 2);

    // a factory in global order, with substream names
    let factory = EventQuery {
        scope: Scope::Factory(orders.id),
        prefix: "acme/orders",
        selector: &any,
        cursor: Cursor::After(Position::START),
        limit: 10,
    };
    let all = read::events(&store.reads, &factory, durable).await.unwrap();
    let names: Vec<&str> = all.events.iter().map(|e| e.stream.as_str()).collect();
    assert_eq!(
        names,
        ["acme/orders('a')", "acme/orders('a')", "acme/orders('b')"]
    );

    // one event by path, with its stream
    let (info, sid, found) =
        read::event_by_path(&store.reads, ("acme", "log", ""), Index(1), durable)
            .await
            .unwrap()
            .unwrap();
    assert_eq!((info.id, sid), (log_id, Some(log_sid)));
    assert_eq!(found.unwrap().event_type, "y");
    let (_, _, missing) = read::event_by_path(&store.reads, ("acme", "log", ""), Index(9), durable)
        .await
        .unwrap()
        .unwrap();
    assert!(missing.is_none());

    // an account's events, listings and the last data of a substream
    let account = read::account_events(
        &store.reads,
        Some("acme"),
        &any,
        Position::START,
        100,
        durable,
    )
    .await
    .unwrap();
    assert_eq!(account.events.len(), 6);
    // every account's (the firehose's catch-up read): the same events, named alike,
    // among the builtin account's (the account events of the streams' creation)
    let all = read::account_events(&store.reads, None, &any, Position::START, 100, durable)
        .await
        .unwrap();
    let names = |p: &read::Page, prefix: &str| -> Vec<String> {
        p.events
            .iter()
            .filter(|e| e.stream.starts_with(prefix))
            .map(|e| e.stream.clone())
            .collect()
    };
    assert_eq!(names(&all, "acme/"), names(&account, ""));
    assert!(!names(&all, "eddy/events(acme)").is_empty());
    let streams = read::list_streams(&store.reads, "acme", "", 10)
        .await
        .unwrap();
    let listed: Vec<(&str, bool, i64)> = streams
        .iter()
        .map(|s| (s.name.as_str(), s.factory, s.events))
        .collect();
    assert_eq!(listed, [("log", false, 3), ("orders", true, 3)]);
    let subs = read::list_substreams(&store.reads, orders.id, 0, 10)
        .await
        .unwrap();
    let subs: Vec<(&str, i64, i64)> = subs
        .iter()
        .map(|s| (s.args.as_str(), s.events, s.last_index))
        .collect();
    assert_eq!(subs, [("'a'", 2, 1), ("'b'", 1, 0)]);
    let last = read::last_data(&store.reads, "acme", "orders", "'a'")
        .await
        .unwrap();
    assert_eq!(last.as_deref(), Some(&b"2"[..]));

    // a factory with events stays one
    let mut fields = serde_json::Map::new();
    fields.insert("factory".into(), false.into());
    let refused = store
        .writer
        .settings(SettingsRequest {
            stream: path("acme/orders"),
            fields,
            replace: false,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code, ErrorCode::Conflict);
}
on_both!(streams_and_events);

fn reducer_row(name: &str) -> Box<ReducerRow> {
    Box::new(ReducerRow {
        id: 0,
        stream_id: 0,
        factory: false,
        name: name.into(),
        building: false,
        source: "(s = 0, e) => s + 1".into(),
        content_type: "application/javascript".into(),
        code: "(s = 0, e) => s + 1".into(),
        module: false,
        reads: vec!["other".into()],
        selector: String::new(),
        halt_on_error: false,
        code_hash: "hash".into(),
        position: 0,
        errors: 0,
        halted: None,
        live_from: None,
    })
}

/// Reducer versions, checkpoints and deletion, with the reads of states and what the
/// reducer threads read.
async fn reducers(store: &Store) {
    append(store, "acme/log", vec![event("x", b"1"), event("y", b"2")]).await;
    let (stream_id, sid) = ids(store, "acme", "log", "").await;
    let written = store
        .writer
        .reducer(ReducerWrite::Deploy {
            stream: path("acme/log"),
            row: reducer_row("count"),
        })
        .await
        .unwrap();
    let ReducerWritten::Deployed(row, None) = written else {
        panic!("not deployed")
    };
    assert_eq!(row.stream_id, stream_id);
    let versions = reducer_reads::versions(&store.reads).await.unwrap();
    let names: Vec<(&str, &str, &str)> = versions
        .iter()
        .map(|(r, a, s)| (r.name.as_str(), a.as_str(), s.as_str()))
        .collect();
    assert_eq!(names, [("count", "acme", "log")]);
    assert_eq!(versions[0].0.reads, ["other"]);
    let code = reducer_reads::source(&store.reads, "acme", "log", "count")
        .await
        .unwrap();
    assert_eq!(code.unwrap().1, "application/javascript");
    let listed = reducer_reads::reads_of_stream(&store.reads, "acme", "log")
        .await
        .unwrap();
    assert_eq!(listed, [("count".to_owned(), "[\"other\"]".to_owned())]);

    // what a reducer thread reads
    let source = FoldSource::open(store).await.unwrap();
    let head = store.last_position().get();
    let checked = tokio::task::spawn_blocking(move || {
        let plain = source.plain_substream(stream_id).unwrap().unwrap();
        let rows = source
            .batch(
                BatchOf::Plain {
                    sid: plain,
                    after_idx: -1,
                },
                head,
                10,
            )
            .unwrap();
        let types: Vec<String> = rows.iter().map(|r| r.event_type.clone()).collect();
        assert_eq!(types, ["x", "y"]);
        assert_eq!(source.after_index(stream_id, rows[0].pos).unwrap(), 0);
        assert_eq!(source.after_index(stream_id, 0).unwrap(), -1);
        assert!(source.stream_settings(stream_id).unwrap().is_some());
        assert_eq!(source.saved_state(row.id, plain).unwrap(), None);
        (plain, rows[1].pos, row.id)
    })
    .await
    .unwrap();
    let (plain, last_pos, reducer_id) = checked;
    assert_eq!(plain, sid);

    // a checkpoint saves states and the position, with its logs, in one transaction
    let saved = store
        .writer
        .reducer(ReducerWrite::Checkpoint(Checkpoint {
            reducer_id,
            position: last_pos,
            new_errors: 1,
            halted: None,
            states: vec![(sid, 1, Some(Arc::from("2")))],
            snapshots: vec![(sid, 1, Some("2".into()))],
            logs: Some((path("acme/log").logs(), vec![event("log", b"{}")])),
            dispatches: Vec::new(),
            promote_over: None,
            fence: None,
        }))
        .await
        .unwrap();
    assert!(matches!(saved, ReducerWritten::Saved));
    // with a snapshot for time travel, found at and after its index only
    let source = FoldSource::open(store).await.unwrap();
    let snapshots = tokio::task::spawn_blocking(move || {
        (
            source.snapshot(reducer_id, sid, 0).unwrap(),
            source.snapshot(reducer_id, sid, 5).unwrap(),
        )
    })
    .await
    .unwrap();
    assert_eq!(snapshots, (None, Some((1, Some("2".to_owned())))));
    assert_eq!(
        reducer_reads::saved_state(&store.reads, reducer_id, sid)
            .await
            .unwrap(),
        Some((1, Some("2".to_owned())))
    );
    assert_eq!(
        reducer_reads::substream_index(&store.reads, sid, last_pos)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        reducer_reads::after_index(&store.reads, stream_id, last_pos)
            .await
            .unwrap(),
        1
    );
    let head = store.last_position();
    assert_eq!(
        reducer_reads::lag(&store.reads, stream_id, false, 0, head)
            .await
            .unwrap(),
        2
    );
    let versions = reducer_reads::versions(&store.reads).await.unwrap();
    assert_eq!(
        (versions[0].0.position, versions[0].0.errors),
        (last_pos, 1)
    );

    // deletion takes every version and state
    let deleted = store
        .writer
        .reducer(ReducerWrite::Delete {
            stream_id,
            name: "count".into(),
        })
        .await
        .unwrap();
    assert!(matches!(deleted, ReducerWritten::Deleted(ids) if ids == [reducer_id]));
    assert!(
        reducer_reads::versions(&store.reads)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        reducer_reads::saved_state(&store.reads, reducer_id, sid)
            .await
            .unwrap(),
        None
    );
}
on_both!(reducers);

/// A new copy pipe from `acme/log` to `acme/copy`.
fn copy_pipe() -> Box<PipeRow> {
    Box::new(PipeRow {
        id: 0,
        from: path("acme/log"),
        to: path("acme/copy"),
        selector: String::new(),
        source: String::new(),
        content_type: String::new(),
        code: String::new(),
        module: false,
        cursor: Position::START,
        piped: 0,
        errors: 0,
        created_at: 0,
    })
}

/// A batch of [`copy_pipe`] `pipe_id` up to `cursor`: one event into `acme/copy`.
fn copy_batch(pipe_id: i64, cursor: Position, fence: Option<super::cluster::Fence>) -> PipeBatch {
    PipeBatch {
        pipe_id,
        cursor,
        first_source: None,
        outs: vec![Routed {
            stream: path("acme/copy"),
            explicit_args: None,
            default_args: None,
            event: event("x", b"1"),
        }],
        logs: Vec::new(),
        log_stream: path("acme/log").logs(),
        errors: 0,
        fence,
    }
}

/// A pipe created, a batch with its cursor and output, and its deletion.
async fn pipes(store: &Store) {
    append(store, "acme/log", vec![event("x", b"1")]).await;
    let row = copy_pipe();
    let PipeWritten::Put(put, true) = store.writer.pipe(PipeWrite::Put(row)).await.unwrap() else {
        panic!("not created")
    };
    let cursor = store.last_position();
    let written = store
        .writer
        .pipe(PipeWrite::Batch(copy_batch(put.id, cursor, None)))
        .await
        .unwrap();
    assert!(matches!(
        written,
        PipeWritten::Batch {
            piped: 1,
            errors: 0
        }
    ));
    assert_eq!(
        pipe_reads::progress(&store.reads, put.id).await.unwrap(),
        (cursor, 1, 0)
    );
    let found = pipe_reads::between(&store.reads, &path("acme/log"), &path("acme/copy"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((found.id, found.cursor), (put.id, cursor));
    let source = FoldSource::open(store).await.unwrap();
    let stored = tokio::task::spawn_blocking(move || source.pipes().unwrap())
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].to, path("acme/copy"));
    let (_, copy_sid) = ids(store, "acme", "copy", "").await;
    assert!(copy_sid > 0);
    let deleted = store
        .writer
        .pipe(PipeWrite::Delete {
            from: path("acme/log"),
            to: path("acme/copy"),
        })
        .await
        .unwrap();
    assert!(matches!(deleted, PipeWritten::Deleted(id) if id == put.id));
    assert!(
        pipe_reads::between(&store.reads, &path("acme/log"), &path("acme/copy"))
            .await
            .unwrap()
            .is_none()
    );
}
on_both!(pipes);

/// A webhook's life: created, its cursor moved (never back), paused, resumed, deleted.
async fn webhooks(store: &Store) {
    append(store, "acme/log", vec![event("x", b"1")]).await;
    let row = WebhookRow {
        id: "wh_1".into(),
        account: "acme".into(),
        stream: "log".into(),
        args: String::new(),
        url: "http://example.com/hook".into(),
        selector: String::new(),
        data: true,
        secret: "secret".into(),
        cursor: Position::START,
        paused: None,
        failures: 0,
        created_at: 1,
    };
    assert!(
        store
            .writer
            .webhook(WebhookWrite::Create(Box::new(row)))
            .await
            .unwrap()
    );
    let cursor = |to| WebhookWrite::Cursor {
        id: "wh_1".into(),
        cursor: Position(to),
        fence: None,
    };
    store.writer.webhook(cursor(5)).await.unwrap();
    store.writer.webhook(cursor(3)).await.unwrap();
    let one = |s: &Store| {
        let reads = s.reads.clone();
        async move {
            webhook_reads::one(&reads, "wh_1", "acme", "log", "")
                .await
                .unwrap()
        }
    };
    let hook = one(store).await.unwrap();
    assert_eq!(
        (hook.cursor.get(), hook.data),
        (5, true),
        "the cursor never goes back"
    );
    store
        .writer
        .webhook(WebhookWrite::Pause {
            id: "wh_1".into(),
            cursor: Position(7),
            reason: "the receiver answered 500".into(),
            failures: 4,
            log: Box::new((path("acme/log").logs(), event("paused", b"{}"))),
            fence: None,
        })
        .await
        .unwrap();
    let paused = one(store).await.unwrap();
    assert_eq!(paused.paused.as_deref(), Some("the receiver answered 500"));
    assert_eq!((paused.cursor.get(), paused.failures), (7, 4));
    store
        .writer
        .webhook(WebhookWrite::Resume("wh_1".into()))
        .await
        .unwrap();
    let resumed = one(store).await.unwrap();
    assert_eq!((resumed.paused, resumed.failures), (None, 0));
    let listed = webhook_reads::of_stream(&store.reads, "acme", "log", "")
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(webhook_reads::all(&store.reads).await.unwrap().len(), 1);
    assert!(
        store
            .writer
            .webhook(WebhookWrite::Delete("wh_1".into()))
            .await
            .unwrap()
    );
    assert!(one(store).await.is_none());
    assert!(
        !store
            .writer
            .webhook(WebhookWrite::Delete("wh_1".into()))
            .await
            .unwrap(),
        "gone"
    );
}
on_both!(webhooks);

/// Accounts, keys and event types.
async fn access(store: &Store) {
    let key = |id: &str| NewKey {
        id: id.into(),
        hash: format!("{id:0>64}"),
    };
    let create = |name: &str| AccessWrite::CreateAccount {
        name: name.into(),
        key: key("k1"),
    };
    store.writer.access(create("acme")).await.unwrap();
    let again = store.writer.access(create("acme")).await.unwrap_err();
    assert_eq!(again.code, ErrorCode::Conflict);
    store
        .writer
        .access(AccessWrite::CreateKey {
            account: "acme".into(),
            key: key("k2"),
        })
        .await
        .unwrap();
    let deleted = |id: &str| AccessWrite::DeleteKey {
        account: "acme".into(),
        id: id.into(),
    };
    assert!(store.writer.access(deleted("k1")).await.unwrap());
    assert!(!store.writer.access(deleted("k1")).await.unwrap(), "gone");
    let (accounts, keys) = access_reads::accounts_and_keys(&store.reads).await.unwrap();
    assert_eq!(accounts, ["acme"]);
    let ids: Vec<&str> = keys.iter().map(|k| k.0.as_str()).collect();
    assert_eq!(ids, ["k2"]);

    let schema = r#"{"properties":{"n":{"type":"int32"}}}"#;
    store
        .writer
        .access(AccessWrite::PutType(Box::new(TypeRow {
            account: "acme".into(),
            stream: "log".into(),
            name: "x".into(),
            schema: schema.into(),
            imported: None,
        })))
        .await
        .unwrap();
    let types = access_reads::event_types(&store.reads, "acme", "log")
        .await
        .unwrap();
    assert_eq!(
        (types[0].name.as_str(), types[0].schema.as_str()),
        ("x", schema)
    );
    store
        .writer
        .access(AccessWrite::DeleteType {
            account: "acme".into(),
            stream: "log".into(),
            name: "x".into(),
        })
        .await
        .unwrap();
    assert!(
        access_reads::event_types(&store.reads, "acme", "log")
            .await
            .unwrap()
            .is_empty()
    );
}
on_both!(access);

/// A store (a node) on the PostgreSQL database at `url`.
async fn postgres_store(url: &str) -> Store {
    Store::open_postgres(url, Default::default(), Default::default())
        .await
        .unwrap()
}

/// Where leases are kept (PostgreSQL): a pipe batch fenced by a lease this node does
/// not hold, or holds under an older epoch, is refused with a conflict and writes
/// nothing; under the lease it holds it is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fenced_writes_need_the_lease_they_name() {
    use super::cluster::Fence;
    let Some(url) = test_backends::migrated_postgres("fenced_writes").await else {
        return;
    };
    let store = postgres_store(&url).await;
    let node = store.node().unwrap().to_owned();
    append(&store, "acme/log", vec![event("x", b"1")]).await;
    let row = copy_pipe();
    let PipeWritten::Put(put, true) = store.writer.pipe(PipeWrite::Put(row)).await.unwrap() else {
        panic!("not created")
    };
    let work = format!("pipe:{}", put.id);
    let batch = |epoch: i64| {
        let fence = Fence {
            work: work.clone(),
            epoch,
        };
        PipeWrite::Batch(copy_batch(put.id, store.last_position(), Some(fence)))
    };
    let set_lease = |holder: String, epoch: i64| {
        let (reads, work) = (store.reads.clone(), work.clone());
        async move {
            reads
                .execute(
                    "INSERT INTO eddy_leases (work, node, epoch, expires_at) \
                     VALUES ($1, $2, $3, clock_timestamp() + interval '1 minute') \
                     ON CONFLICT (work) DO UPDATE SET node = $2, epoch = $3, \
                     expires_at = EXCLUDED.expires_at",
                    super::query::args![work.as_str(), holder.as_str(), epoch],
                )
                .await
                .unwrap();
        }
    };
    let copied = || async {
        read::list_streams(&store.reads, "acme", "", 10)
            .await
            .unwrap()
    };
    // no lease at all, then another node's
    let Err(refused) = store.writer.pipe(batch(1)).await else {
        panic!("written without the lease")
    };
    assert_eq!(refused.code, ErrorCode::Conflict, "{}", refused.message);
    set_lease("node-elsewhere".into(), 1).await;
    let Err(refused) = store.writer.pipe(batch(1)).await else {
        panic!("written without the lease")
    };
    assert!(refused.message.contains("lease"), "{}", refused.message);
    assert!(
        !copied().await.iter().any(|s| s.name == "copy"),
        "a refused batch writes nothing"
    );
    // this node's lease under a newer epoch than the write names
    set_lease(node.clone(), 2).await;
    let Err(refused) = store.writer.pipe(batch(1)).await else {
        panic!("written without the lease")
    };
    assert_eq!(refused.code, ErrorCode::Conflict);
    // the lease it holds
    let written = store.writer.pipe(batch(2)).await.unwrap();
    assert!(matches!(written, PipeWritten::Batch { piped: 1, .. }));
    assert!(copied().await.iter().any(|s| s.name == "copy"));
    store.shutdown().await;
}

/// Two stores on one PostgreSQL database (two nodes): appends through both get
/// gapless positions and indexes, each store's readers see the other's events, and
/// a notice of the other's commit reaches its subscribers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_database_append_as_one() {
    let Some(url) = test_backends::migrated_postgres("two_stores").await else {
        return;
    };
    let (a, b) = (postgres_store(&url).await, postgres_store(&url).await);
    let mut heard = b.subscribe();
    for n in 0..10 {
        let store = if n % 2 == 0 { &a } else { &b };
        append(store, "acme/log", vec![event("x", b"1"), event("x", b"2")]).await;
    }
    for store in [&a, &b] {
        let page = read::events(
            &store.reads,
            &EventQuery {
                scope: Scope::Substream(ids(store, "acme", "log", "").await.1),
                prefix: "acme/log",
                selector: &Selector::default(),
                cursor: Cursor::Index(Index(0)),
                limit: 100,
            },
            Position(i64::MAX),
        )
        .await
        .unwrap();
        let indexes: Vec<u64> = page.events.iter().map(|e| e.index.get()).collect();
        let positions: Vec<i64> = page.events.iter().map(|e| e.position.get()).collect();
        assert_eq!(indexes, (0..20).collect::<Vec<_>>());
        // the first position went to the account event of the stream's creation
        assert_eq!(positions, (2..=21).collect::<Vec<_>>());
    }
    // b's subscribers hear of every commit in position order: b's own with their
    // events, a's with what they touched (no live subscriber asks for more)
    let mut last = 0;
    let mut foreign = 0;
    while last < 21 {
        let notice = tokio::time::timeout(std::time::Duration::from_secs(5), heard.recv())
            .await
            .expect("a notice within 5 s")
            .unwrap();
        assert!(notice.last_position.get() > last, "in order");
        let mut at = last;
        for live in &notice.events {
            assert_eq!(live.event.position, at + 1, "in order, none missed");
            at = live.event.position.get();
        }
        if notice.events.is_empty() {
            foreign += 1;
            assert!(!notice.complete, "{notice:?}");
            assert!(notice.paths.iter().any(|p| p.to_string() == "acme/log"));
        } else {
            assert_eq!(at, notice.last_position.get(), "{notice:?}");
        }
        last = notice.last_position.get();
    }
    // (a commit whose notification came late is read back, with its events)
    assert!(
        foreign > 0,
        "a's commits announced from their notifications"
    );
    a.shutdown().await;
    b.shutdown().await;
}
