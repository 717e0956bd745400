//! What sandboxed code may ask of the world outside: outbound HTTP through an
//! embedder-provided [`Host`] (`request()`), and events to append to other streams
//! (`dispatch()`), which the sandbox buffers for the embedder to take.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rquickjs::{Ctx, Exception, Function, Object};

/// Deadline value meaning no call is armed.
pub(crate) const DISARMED: u64 = u64::MAX;

/// What the embedder lets sandboxed code reach outside: outbound HTTP for `request()`.
pub trait Host {
    /// Makes the call. `init_json` is JSON of the init object (`{}` when absent), with
    /// `method`, `headers` (object of strings) and `body` (a string) as the driver
    /// normalised them. Answers JSON text of the response
    /// `{"status": n, "ok": bool, "headers": {..}, "body": "text"}`, or a message the
    /// call throws as an `Error`. The call must give up after `timeout`, what is left of
    /// the event's time limit: the sandbox fails the event once it has run out.
    fn request(&self, url: &str, init_json: &str, timeout: Duration) -> Result<String, String>;
}

/// The host of a sandbox, shared with the native function behind `request()`.
pub(crate) type SharedHost = Rc<RefCell<Option<Box<dyn Host>>>>;

/// An event that code asked to append to another stream with `dispatch()`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dispatch {
    /// The reducer or pipe function that dispatched it.
    pub slot: u32,
    /// The substream of the call that dispatched it.
    pub sid: i64,
    /// The index of the event being handled.
    pub index: i64,
    /// Numbers the dispatches of one call, from 0.
    pub n: u32,
    /// The target stream, as the code named it (`"orders"`, `"orders('x')"`).
    pub stream: String,
    pub event_type: String,
    /// The event's data as JSON (`null` when the code gave none).
    pub data_json: String,
}

/// The native side of `request()`: calls the host with what is left of the armed
/// call's time limit, so waiting on the network counts toward the per-event limit and
/// never holds the thread longer. When the limit runs out before or during the call,
/// it sets `overran`: the sandbox then fails the call as a time-out even if the code
/// caught the error thrown here.
pub(crate) fn request_fn<'js>(
    ctx: &Ctx<'js>,
    host: SharedHost,
    deadline: Arc<AtomicU64>,
    epoch: Instant,
    overran: Rc<Cell<bool>>,
) -> rquickjs::Result<Function<'js>> {
    Function::new(
        ctx.clone(),
        move |ctx: Ctx<'js>, url: String, init_json: String| -> rquickjs::Result<String> {
            let host = host.borrow();
            let Some(host) = host.as_ref() else {
                return Err(Exception::throw_message(
                    &ctx,
                    "request() is not available in this sandbox",
                ));
            };
            let limit = deadline.load(Ordering::Relaxed);
            let left = limit.saturating_sub(epoch.elapsed().as_nanos() as u64);
            if left == 0 {
                overran.set(true);
                return Err(Exception::throw_message(
                    &ctx,
                    &format!("request({url:?}) was not sent: the event's time limit has run out"),
                ));
            }
            let answer = host.request(&url, &init_json, Duration::from_nanos(left));
            if epoch.elapsed().as_nanos() as u64 >= limit {
                overran.set(true);
                return Err(Exception::throw_message(
                    &ctx,
                    &format!("request({url:?}) was stopped: the event's time limit ran out"),
                ));
            }
            answer.map_err(|message| Exception::throw_message(&ctx, &message))
        },
    )
}

/// Reads one buffered dispatch as the driver recorded it.
pub(crate) fn dispatch_from(o: &Object<'_>) -> Dispatch {
    let number = |k: &str| o.get::<_, Option<f64>>(k).ok().flatten().unwrap_or(0.0);
    Dispatch {
        slot: number("slot") as u32,
        sid: number("sid") as i64,
        index: number("index") as i64,
        n: number("n") as u32,
        stream: o.get("stream").unwrap_or_default(),
        event_type: o.get("type").unwrap_or_default(),
        data_json: o.get("data").unwrap_or_else(|_| "null".to_owned()),
    }
}
