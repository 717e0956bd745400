//! `dispatch(stream, {type, data})` (API §7): events that reducers and pipe functions
//! append to other streams of their account. A dispatched event gets an id derived
//! from who dispatched it, the source event and its number among that call's
//! dispatches, so a rebuild, a replay or a redeploy that dispatches it again finds it
//! already stored: each source event dispatches exactly once.

use eddy_runtime_js::Dispatch;

use crate::error::{EngineError, Result};
use crate::event::{NewEvent, StoredEvent, check_size, derived_id};
use crate::order::Index;
use crate::path::{self, AccountName, Resource, StreamPath};
use crate::store::pipe_writes::Routed;

/// How many pipes and dispatches may lie between an appended event and one made from
/// it. Loops of pipes are refused when they are made, but a reducer that dispatches
/// back into a stream piped to it, or reducers of several streams that dispatch to each
/// other, make loops only their code knows; past this many steps the chain stops, with
/// an error in the log of the reducer or pipe that would go on.
pub(crate) const MAX_HOPS: u32 = 10;

/// How many pipes and dispatches lie between a stored event, whose origin is `origin`,
/// and the appended event it comes from: 0 for an appended event (no origin), and 1 for
/// an origin without `hops`.
pub(crate) fn hops(origin: Option<&str>) -> u32 {
    #[derive(serde::Deserialize)]
    struct Origin {
        hops: Option<u32>,
    }
    origin.map_or(0, |o| {
        serde_json::from_str::<Origin>(o)
            .ok()
            .and_then(|o| o.hops)
            .unwrap_or(1)
    })
}

/// The header that carries, on what eddy sends out (webhook deliveries), the steps
/// from an appended event of what it sends plus one, and that an append takes them
/// from: a loop through a webhook aimed at eddy counts on as pipes and dispatches do.
pub const HOPS_HEADER: &str = "eddy-hops";

/// The origin of events appended by a request that came `hops` steps from an appended
/// event (header [`HOPS_HEADER`]): `{"hops": n}`, or none for 0; refused past
/// [`MAX_HOPS`].
pub fn appended_origin(hops: u32) -> Result<Option<String>> {
    if hops > MAX_HOPS {
        return Err(EngineError::invalid(format!(
            "header Eddy-Hops {hops}: the request came through {hops} pipes, dispatches and \
             webhooks from an appended event, more than a chain may take ({MAX_HOPS}): is a \
             webhook aimed back at eddy in a loop?"
        ))
        .with("header", "Eddy-Hops"));
    }
    Ok((hops > 0).then(|| serde_json::json!({ "hops": hops }).to_string()))
}

/// The origin recorded on an event made from `e` (see [`origin`]).
pub(crate) fn origin_of(e: &StoredEvent) -> Result<String> {
    origin(&e.stream, e.index, hops(e.origin.as_deref()))
}

/// `{"stream","index"}` of a source event `source_hops` steps from an appended one, as
/// recorded on the events made from it, with `"hops"` when that is more than one step;
/// refused past [`MAX_HOPS`].
pub(crate) fn origin(stream: &str, index: Index, source_hops: u32) -> Result<String> {
    let hops = source_hops.saturating_add(1);
    if hops > MAX_HOPS {
        return Err(EngineError::invalid(format!(
            "event {index} of {stream} came through {source_hops} pipes and dispatches from \
             an appended event, the most a chain may take ({MAX_HOPS}): nothing more is made \
             from it (is there a loop of pipes and dispatches?)"
        )));
    }
    let origin = if hops == 1 {
        serde_json::json!({ "stream": stream, "index": index })
    } else {
        serde_json::json!({ "stream": stream, "index": index, "hops": hops })
    };
    Ok(origin.to_string())
}

/// The event `d` asks for. `scope` names who dispatched (a reducer, a pipe), and
/// `source`/`index`/`timestamp` the event being folded or mapped, which came through
/// `hops` pipes and dispatches from an appended event. The target is a stream of
/// `account`: `orders`, `orders('x')` or `/acct/orders('x')` with the same account.
pub(crate) fn dispatched_event(
    account: &AccountName,
    scope: &str,
    (source, hops): (&str, u32),
    index: Index,
    timestamp: i64,
    d: &Dispatch,
) -> Result<Routed> {
    let stream = dispatch_target(account, d)?;
    // into the stream the code runs on (any substream of its factory) from an event
    // that was itself piped or dispatched: each such event would run the code again,
    // and with two dispatches a call the stream would double without end. From an
    // appended event it may (a summary event, a note to a sibling substream).
    let running_on = source.split('(').next().unwrap_or(source);
    if hops > 0 && format!("{}/{}", stream.account, stream.stream) == running_on {
        return Err(EngineError::invalid(format!(
            "dispatch({:?}) was refused: {running_on} is the stream this code runs on, and \
             the event at hand was itself piped or dispatched: a dispatch there from it \
             could run the code again without end",
            d.stream
        ))
        .with("field", "stream"));
    }
    crate::event::check_type(&d.event_type)?;
    check_size(d.data_json.len())?;
    Ok(Routed {
        explicit_args: stream.args.clone(),
        default_args: None,
        event: NewEvent {
            id: Some(derived_id(
                timestamp,
                &[
                    b"dispatch",
                    scope.as_bytes(),
                    source.as_bytes(),
                    &index.get().to_le_bytes(),
                    &d.n.to_le_bytes(),
                ],
            )),
            event_type: d.event_type.clone(),
            content_type: "application/json".into(),
            data: d.data_json.clone().into(),
            timestamp: None,
            metadata: None,
            origin: Some(origin(source, index, hops)?),
        },
        stream,
    })
}

/// The stream `d` names, refused unless it is a stream of `account` that code may
/// append to.
pub(crate) fn dispatch_target(account: &AccountName, d: &Dispatch) -> Result<StreamPath> {
    let refused = |why: String| {
        EngineError::invalid(format!("dispatch({:?}) was refused: {why}", d.stream))
            .with("field", "stream")
    };
    let text = if d.stream.starts_with('/') {
        d.stream.clone()
    } else {
        format!("/{account}/{}", d.stream)
    };
    let stream = match path::parse(&text) {
        Ok(Resource::Stream(p)) => p,
        Ok(_) => return Err(refused("it names no stream".into())),
        Err(e) => return Err(refused(e.to_string())),
    };
    if stream.account != *account {
        return Err(refused(format!(
            "code of account {account} may dispatch only to its own streams"
        )));
    }
    if stream.account.is_reserved() {
        return Err(refused("the account is reserved for the server".into()));
    }
    if stream.version().is_some() {
        return Err(refused(
            "it is a history a splice replaced, which is read-only".into(),
        ));
    }
    Ok(stream)
}
