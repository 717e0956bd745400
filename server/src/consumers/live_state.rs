//! Live reducer state (API §14): `Accept: text/event-stream` on a reducer's state URL.
//!
//! On a plain stream or one substream, the first event is the state as it is, then one
//! follows each time the reducer has folded further: `id:` the last index folded,
//! `data:` the state's JSON. Folds that come faster than the client reads are
//! coalesced: it gets the latest state, never a stale one after a newer one. On a
//! factory's reducer URL, the events of the substreams that match the selector (`sub=`
//! and the rest) are followed, once folded, by each such substream's state (one per
//! substream for events that come together): `id:` the global position of its last
//! event (what `Last-Event-ID` resumes after), `data:` `{"stream", "index", "state"}`.

use std::time::{Duration, Instant};

use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use bytes::Bytes;
use eddy_engine::consumers::{Follow, Start, Subscription};
use eddy_engine::path::{ReducerName, Resource, StreamPath};
use eddy_engine::reducers::StateAnswer;
use eddy_engine::store::SharedEvent;

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::params::{self, Params};

/// How long the states of a factory's events wait, together, for their reducer to
/// fold them.
const FOLD_WAIT: Duration = Duration::from_secs(10);

pub async fn subscribe(
    state: AppState,
    path: StreamPath,
    name: ReducerName,
    uri: &Uri,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    let mut q = Params::parse(uri)?;
    // an index, or -1 (the id of the state before the first event)
    let last_id = match params::header(headers, &["last-event-id"])?.as_deref() {
        None | Some("") => None,
        Some(v) => Some(v.parse::<i64>().ok().filter(|i| *i >= -1).ok_or_else(|| {
            ApiError::invalid(format!(
                "header Last-Event-ID \"{v}\" is not a state id (the id: of a state this \
                 subscription sent)"
            ))
        })?),
    };
    let resolved = state.engine.resolve_existing(&path).await?;
    let heartbeat = Duration::from_millis(state.config.sse_heartbeat_ms.max(1));
    let feed = if resolved.info.factory && path.args.is_none() {
        let selector = q.selector()?;
        q.finish()?;
        // a reducer that does not exist is a 404 now, not an empty stream
        state.engine.reducer_states(&path, &name, 0, 1).await?;
        let start = match last_id {
            Some(p) if p >= 0 => Start::After(p as u64),
            _ => Start::Live,
        };
        let follow = Follow::Stream(path.clone());
        let sub = state.engine.follow(follow, selector, false, start).await?;
        Feed::Factory { sub: Box::new(sub) }
    } else {
        q.finish()?;
        let now = state
            .engine
            .reducer_state(&path, &name, None, Duration::ZERO)
            .await?;
        // an id past the stream's last event names a state of a history a splice
        // replaced (the client missed the notice): the state now is sent at once,
        // rather than after as many new events
        let last_id = match last_id {
            Some(id) if id > state.engine.last_index(&resolved).await? => None,
            other => other,
        };
        Feed::One {
            sent: last_id,
            version: None,
            now: Some(now),
        }
    };
    let live = Live {
        state: state.clone(),
        path,
        name,
        heartbeat,
        feed,
    };
    let chunks = futures::stream::unfold(live, |mut live| async move {
        let chunk = live.next().await?;
        Some((chunk, live))
    });
    Ok(super::sse::response(state.config.sse_retry_ms, chunks))
}

struct Live {
    state: AppState,
    path: StreamPath,
    name: ReducerName,
    heartbeat: Duration,
    feed: Feed,
}

enum Feed {
    /// One state: the index last sent, and the state read at the start.
    One {
        sent: Option<i64>,
        /// The version whose state was sent (none yet, or resumed by Last-Event-ID,
        /// which names an index only).
        version: Option<i64>,
        now: Option<StateAnswer>,
    },
    /// A factory's: the subscription to its events.
    Factory { sub: Box<Subscription> },
}

impl Live {
    /// The next frame (a state, or a heartbeat); `None` ends the response: the server
    /// shuts down, or the reducer or its stream is gone.
    async fn next(&mut self) -> Option<Bytes> {
        if self.state.is_shutting_down() {
            return None;
        }
        match &mut self.feed {
            Feed::One { sent, version, now } => {
                let answer = match now.take() {
                    Some(a) => a,
                    None => {
                        let state = self.state.clone();
                        let read = self.state.engine.reducer_state_after(
                            &self.path,
                            &self.name,
                            sent.unwrap_or(-2),
                            *version,
                            self.heartbeat,
                        );
                        tokio::select! {
                            a = read => match a {
                                Ok(a) => a,
                                Err(e) => {
                                    tracing::debug!(error = %e.message, "live state ended");
                                    return None;
                                }
                            },
                            _ = state.shutting_down() => return None,
                        }
                    }
                };
                // nothing newer than what was sent: no further fold, and the same
                // version (a redeploy's rebuild is sent once it takes over)
                let newer_version =
                    version.is_some() && answer.version.is_some() && *version != answer.version;
                // a client resuming with Last-Event-ID names an index, not a version: it
                // is taken to hold the state of the version answering now (so after a
                // redeploy it gets the rebuilt state with the next fold)
                if answer.version.is_some() {
                    *version = answer.version;
                }
                if sent.is_some_and(|s| s >= answer.index) && !newer_version {
                    return Some(Bytes::from_static(b": heartbeat\n\n"));
                }
                *sent = Some(answer.index);
                Some(frame(
                    answer.index,
                    answer.json.as_deref().unwrap_or("null"),
                ))
            }
            Feed::Factory { sub } => {
                let state = self.state.clone();
                let beat = Instant::now() + self.heartbeat;
                let stop = async move {
                    tokio::select! {
                        _ = tokio::time::sleep_until(beat.into()) => {}
                        _ = state.shutting_down() => {}
                    }
                };
                let events = match sub.next(stop).await {
                    Ok(events) => events,
                    Err(e) => {
                        tracing::warn!(error = %e.message, "live factory state ended");
                        return None;
                    }
                };
                if events.is_empty() {
                    return Some(Bytes::from_static(b": heartbeat\n\n"));
                }
                // each substream's last event of the delivery, in the order they came:
                // its state covers the ones before it
                let mut latest: Vec<&SharedEvent> = Vec::new();
                for e in &events {
                    latest.retain(|l| l.stream != e.stream);
                    latest.push(e);
                }
                // one wait for the whole delivery, so a stalled reducer costs one
                let deadline = Instant::now() + FOLD_WAIT;
                let mut out = Vec::new();
                for e in latest {
                    let Ok(Resource::Stream(substream)) =
                        eddy_engine::path::parse(&format!("/{}", e.stream))
                    else {
                        continue;
                    };
                    let left = deadline.saturating_duration_since(Instant::now());
                    let state = self.state.clone();
                    let read = self.state.engine.reducer_state(
                        &substream,
                        &self.name,
                        Some(e.index.get()),
                        left,
                    );
                    let answer = tokio::select! {
                        a = read => match a {
                            Ok(a) => a,
                            Err(err) => {
                                tracing::debug!(error = %err.message, "live factory state ended");
                                return None;
                            }
                        },
                        _ = state.shutting_down() => return None,
                    };
                    let json: serde_json::Value = answer
                        .json
                        .as_deref()
                        .and_then(|j| serde_json::from_str(j).ok())
                        .unwrap_or(serde_json::Value::Null);
                    let data = serde_json::json!({
                        "stream": e.stream,
                        "index": answer.index,
                        "state": json,
                    });
                    out.extend_from_slice(&frame(e.position.get(), &data.to_string()));
                }
                Some(Bytes::from(out))
            }
        }
    }
}

/// One SSE event: `id:` and the JSON as `data:` (JSON text holds no raw newline).
fn frame(id: i64, json: &str) -> Bytes {
    Bytes::from(format!("id: {id}\ndata: {json}\n\n"))
}
