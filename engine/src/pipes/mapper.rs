//! The thread that runs pipe functions. QuickJS values are not `Send`, so each pipe's
//! sandbox lives here and pipe tasks send it batches of events over a channel. A
//! sandbox is loaded on a pipe's first batch and again when its code changes.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc;

use eddy_runtime_js::{
    ConsoleLine, Dispatch, EventIn, JsError, Limits, MapCall, Prepared, Sandbox,
};
use tokio::sync::oneshot;

use crate::error::{EngineError, Result};
use crate::path::Args;
use crate::reducers::for_reducer;
use crate::store::SharedEvent;

/// What a pipe function made of one event: the JSON array of its outputs, or why it
/// failed.
pub(crate) type Mapped = std::result::Result<String, JsError>;

/// A batch's results, one per event, with what the calls dispatched and logged.
pub(crate) struct MapAnswer {
    pub mapped: Vec<Mapped>,
    pub dispatches: Vec<Dispatch>,
    pub console: Vec<ConsoleLine>,
}

enum Msg {
    Check(Prepared, oneshot::Sender<std::result::Result<(), JsError>>),
    Map {
        pipe_id: i64,
        code: Arc<Prepared>,
        events: Vec<Arc<SharedEvent>>,
        reply: oneshot::Sender<MapAnswer>,
    },
    Forget(i64),
    Stop,
}

/// The handle on the mapper thread.
pub(crate) struct Mappers {
    tx: mpsc::Sender<Msg>,
}

impl Mappers {
    pub(crate) fn start(limits: Limits) -> Result<Self> {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("eddy-pipes".into())
            .stack_size(eddy_runtime_js::JS_STACK_BYTES + 8 * 1024 * 1024)
            .spawn(move || serve(rx, limits))
            .map_err(|e| EngineError::internal(format!("cannot start the pipe thread: {e}")))?;
        Ok(Self { tx })
    }

    /// Loads code in a scratch sandbox to see that it evaluates to a function.
    pub(crate) async fn check(&self, code: Prepared) -> Result<std::result::Result<(), JsError>> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Msg::Check(code, tx)).map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())
    }

    /// Runs the pipe's function on each event.
    pub(crate) async fn map(
        &self,
        pipe_id: i64,
        code: Arc<Prepared>,
        events: Vec<Arc<SharedEvent>>,
    ) -> Result<MapAnswer> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::Map {
                pipe_id,
                code,
                events,
                reply,
            })
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())
    }

    /// Drops a deleted pipe's sandbox.
    pub(crate) fn forget(&self, pipe_id: i64) {
        let _ = self.tx.send(Msg::Forget(pipe_id));
    }

    pub(crate) fn stop(&self) {
        let _ = self.tx.send(Msg::Stop);
    }
}

fn stopped() -> EngineError {
    EngineError::new(
        crate::error::ErrorCode::Unavailable,
        "the pipe function thread has stopped",
    )
}

/// The args of an event's substream, from its stream name `acct/strm('a')`.
pub(crate) fn args_of(stream: &str) -> Option<Args> {
    let open = stream.find('(')?;
    let inner = stream.get(open + 1..stream.len().checked_sub(1)?)?;
    Args::parse(inner).ok()
}

fn serve(rx: mpsc::Receiver<Msg>, limits: Limits) {
    // pipe id -> (its sandbox, the code loaded in it)
    let mut sandboxes: HashMap<i64, (Sandbox, Arc<Prepared>)> = HashMap::new();
    while let Ok(msg) = rx.recv() {
        match msg {
            Msg::Check(code, reply) => {
                let result =
                    Sandbox::new(limits.clone()).and_then(|mut s| s.load(0, "check", &code));
                let _ = reply.send(result);
            }
            Msg::Map {
                pipe_id,
                code,
                events,
                reply,
            } => {
                let loaded = sandboxes
                    .get(&pipe_id)
                    .is_some_and(|(_, c)| Arc::ptr_eq(c, &code) || c.js == code.js);
                if !loaded {
                    sandboxes.remove(&pipe_id);
                    let fresh = Sandbox::new(limits.clone()).and_then(|mut s| {
                        s.set_role("pipe function");
                        s.load(0, "pipe", &code)?;
                        Ok(s)
                    });
                    match fresh {
                        Ok(s) => {
                            sandboxes.insert(pipe_id, (s, code.clone()));
                        }
                        Err(e) => {
                            let _ = reply.send(MapAnswer {
                                mapped: events.iter().map(|_| Err(e.clone())).collect(),
                                dispatches: Vec::new(),
                                console: Vec::new(),
                            });
                            continue;
                        }
                    }
                }
                let (sandbox, _) = sandboxes.get_mut(&pipe_id).expect("loaded above");
                let _ = reply.send(map_batch(sandbox, &events));
            }
            Msg::Forget(id) => {
                sandboxes.remove(&id);
            }
            Msg::Stop => return,
        }
    }
}

pub(crate) fn map_batch(sandbox: &mut Sandbox, events: &[Arc<SharedEvent>]) -> MapAnswer {
    let converted: Vec<_> = events
        .iter()
        .map(|e| for_reducer(&e.content_type, &e.data))
        .collect();
    let ids: Vec<String> = events.iter().map(|e| e.id.to_string()).collect();
    let args: Vec<Option<String>> = events
        .iter()
        .map(|e| args_of(&e.stream).map(|a| a.to_json().to_string()))
        .collect();
    let inputs: Vec<EventIn> = events
        .iter()
        .enumerate()
        .map(|(k, e)| EventIn {
            stream: &e.stream,
            index: e.index.sql(),
            id: &ids[k],
            event_type: &e.event_type,
            timestamp: e.timestamp,
            content_type: &e.content_type,
            data_json: &converted[k].0,
            encoding: converted[k].1,
            args_json: args[k].as_deref(),
        })
        .collect();
    let calls: Vec<MapCall> = inputs
        .iter()
        .enumerate()
        .map(|(k, event)| MapCall {
            slot: 0,
            // the position in the batch, so dispatches and console lines find their event
            sid: k as i64,
            index: event.index,
            event,
            // request() belongs to reducers: in pipe functions it is voided
            live: false,
        })
        .collect();
    let mapped = sandbox.map(&calls);
    MapAnswer {
        mapped,
        dispatches: sandbox.dispatches(),
        console: sandbox.console(),
    }
}
