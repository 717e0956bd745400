//! One QuickJS runtime and context holding reducers (and pipe mapping functions) and
//! the reducers' per-substream states. A sandbox lives on one thread (QuickJS values
//! are not `Send`): the engine creates it on a worker thread and feeds it through
//! channels.
//!
//! The context has no module loader, and its only host functions are `console`,
//! `dispatch` (buffered, taken with [`Sandbox::dispatches`]) and `request`, which
//! reaches the network only through the [`Host`] the embedder sets, and only during
//! live calls. Reducer code cannot reach files, timers or the process. Every call is
//! bounded: an interrupt handler stops code that runs past the per-event time limit,
//! `request()` waits at most what is left of that limit, and the runtime's memory limit
//! stops allocation bombs. Within a call, `Date` and `Math.random` answer from the
//! event (its timestamp and id), and every built-in is frozen before any code loads
//! (see `driver.js`).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rquickjs::context::EvalOptions;
use rquickjs::{Context, Ctx, Function, Module, Object, Persistent, Runtime, Value};

use crate::convert::{Keys, NULL_THROWN, OUT_OF_MEMORY, caught, internal};
use crate::host::{DISARMED, Dispatch, Host, SharedHost, dispatch_from, request_fn};
use crate::{JsError, JsErrorKind, Limits, Prepared, Shape};

const DRIVER: &str = include_str!("driver.js");
/// Stack QuickJS may use. The worker threads that host sandboxes get a larger native
/// stack than this (see the engine's reducer host).
pub const JS_STACK_BYTES: usize = 1024 * 1024;

/// One event as a reducer sees it: the envelope of API §3 with `data` already turned
/// into JSON text by the caller (parsed form, CSV rows, base64 for binary).
#[derive(Clone, Copy, Debug)]
pub struct EventIn<'a> {
    pub stream: &'a str,
    pub index: i64,
    pub id: &'a str,
    pub event_type: &'a str,
    pub timestamp: i64,
    pub content_type: &'a str,
    pub data_json: &'a str,
    /// `Some("base64")` for binary data.
    pub encoding: Option<&'a str>,
    /// The substream's args as a JSON array, on factories.
    pub args_json: Option<&'a str>,
}

/// One call: fold `event` into the state that reducer `slot` keeps for substream `sid`.
#[derive(Clone, Copy, Debug)]
pub struct Fold<'a> {
    pub slot: u32,
    pub sid: i64,
    pub index: i64,
    pub event: &'a EventIn<'a>,
    /// After this reducer's first failure in the batch, its later items are skipped
    /// (`on-error=halt`): nothing past the failed event is folded into its states.
    pub halt_on_error: bool,
    /// The event is new, not replayed: only then does `request()` reach the [`Host`].
    pub live: bool,
    /// Check the new state against [`Limits::state_bytes`] (serializing it): a state
    /// over the limit fails the call like a throw. Off on the fast path, where the
    /// embedder checks states when it saves them.
    pub check_size: bool,
}

/// One call of a pipe's mapping function on one event.
#[derive(Clone, Copy, Debug)]
pub struct MapCall<'a> {
    pub slot: u32,
    pub sid: i64,
    pub index: i64,
    pub event: &'a EventIn<'a>,
    /// The event is new, not replayed: only then does `request()` reach the [`Host`].
    pub live: bool,
}

/// A line a reducer wrote with `console.*`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsoleLine {
    pub level: String,
    pub message: String,
    /// The reducer, substream and event index of the call that wrote it (`None` for
    /// lines written while code was loading).
    pub slot: Option<u32>,
    pub sid: Option<i64>,
    pub index: Option<i64>,
}

/// A QuickJS runtime holding loaded functions, their states and buffered output.
pub struct Sandbox {
    // Field order matters: the context and persistent values drop before the runtime.
    driver: Persistent<Object<'static>>,
    context: Context,
    runtime: Runtime,
    /// What `request()` calls; shared with the native function the driver holds.
    host: SharedHost,
    /// Deadline of the running call in nanoseconds since `epoch`; `DISARMED` between
    /// calls. Read by the interrupt handler.
    deadline: Arc<AtomicU64>,
    /// Set by the interrupt handler when it stops a call, to tell a time-out from other
    /// errors.
    interrupted: Arc<AtomicBool>,
    /// Set by `request()` when the call's time limit ran out while it waited.
    overran: Rc<Cell<bool>>,
    epoch: Instant,
    limits: Limits,
    /// The memory limit in force: [`Limits::memory_bytes`], or less while the sandbox
    /// shares a budget with others.
    memory_limit: usize,
    /// What its functions are called in messages about limits: "reducer" unless
    /// [`Sandbox::set_role`] says otherwise.
    role: &'static str,
    loads: u64,
}

impl Sandbox {
    /// A sandbox with no functions loaded and no [`Host`].
    pub fn new(limits: Limits) -> Result<Self, JsError> {
        let runtime = Runtime::new().map_err(internal)?;
        runtime.set_memory_limit(limits.memory_bytes);
        runtime.set_max_stack_size(JS_STACK_BYTES);
        let deadline = Arc::new(AtomicU64::new(DISARMED));
        let interrupted = Arc::new(AtomicBool::new(false));
        let epoch = Instant::now();
        {
            let deadline = deadline.clone();
            let interrupted = interrupted.clone();
            runtime.set_interrupt_handler(Some(Box::new(move || {
                let limit = deadline.load(Ordering::Relaxed);
                if limit != DISARMED && epoch.elapsed().as_nanos() as u64 > limit {
                    interrupted.store(true, Ordering::Relaxed);
                    return true;
                }
                false
            })));
        }
        let context = Context::full(&runtime).map_err(internal)?;
        let host: SharedHost = Rc::new(RefCell::new(None));
        let overran = Rc::new(Cell::new(false));
        let driver = context.with(|ctx| {
            let make: Function = ctx.eval(DRIVER).map_err(|e| caught(&ctx, e))?;
            let request = request_fn(&ctx, host.clone(), deadline.clone(), epoch, overran.clone())
                .map_err(internal)?;
            let driver: Object = make.call((request,)).map_err(|e| caught(&ctx, e))?;
            Ok::<_, JsError>(Persistent::save(&ctx, driver))
        })?;
        Ok(Self {
            driver,
            context,
            runtime,
            host,
            deadline,
            interrupted,
            overran,
            epoch,
            memory_limit: limits.memory_bytes,
            limits,
            role: "reducer",
            loads: 0,
        })
    }

    /// Names what the sandbox runs ("reducer", "pipe function") in the messages of
    /// time-outs and memory exhaustion.
    pub fn set_role(&mut self, role: &'static str) {
        self.role = role;
    }

    /// Changes the memory the sandbox may hold (its share of a budget shared with
    /// other sandboxes); allocations past it fail as over the memory limit.
    pub fn set_memory_limit(&mut self, bytes: usize) {
        // 0 is no limit to QuickJS
        self.runtime.set_memory_limit(bytes.max(1));
        self.memory_limit = bytes;
    }

    /// The limits the sandbox was made with.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Lets `request()` in live calls reach `host` (replacing any earlier host).
    pub fn set_host(&mut self, host: Box<dyn Host>) {
        *self.host.borrow_mut() = Some(host);
    }

    /// Evaluates `code` and installs its function as reducer (or pipe mapping function)
    /// `slot` named `name`, with no states. `reads` are the names of reducers it sees
    /// through `current`.
    pub fn load(&mut self, slot: u32, name: &str, code: &Prepared) -> Result<(), JsError> {
        self.loads += 1;
        let module_name = format!("{name}.{}.js", self.loads);
        self.arm();
        let result = self.context.with(|ctx| {
            let function: Value = match code.shape {
                Shape::Expression => {
                    let mut options = EvalOptions::default();
                    options.filename = Some(module_name);
                    options.strict = false;
                    ctx.eval_with_options(code.js.as_str(), options)
                        .map_err(|e| caught(&ctx, e))?
                }
                Shape::Module => {
                    let declared = Module::declare(ctx.clone(), module_name, code.js.as_str())
                        .map_err(|e| caught(&ctx, e))?;
                    let (module, done) = declared.eval().map_err(|e| caught(&ctx, e))?;
                    done.finish::<()>().map_err(|e| caught(&ctx, e))?;
                    module.get("default").map_err(|e| caught(&ctx, e))?
                }
            };
            let reads: Vec<&str> = code.reads.iter().map(String::as_str).collect();
            self.call(&ctx, "load", (slot, name, function, reads))
        });
        self.disarm();
        self.classify(result)
    }

    /// Removes reducer `slot` and all its states.
    pub fn unload(&mut self, slot: u32, name: &str) {
        let _ = self
            .context
            .with(|ctx| self.call::<()>(&ctx, "unload", (slot, name)));
        self.runtime.run_gc();
    }

    /// Folds each item in order and answers the failures, by position in `work`. A
    /// failed call leaves the state as the reducer left it (a reducer that mutates its
    /// state before throwing keeps the mutation) and the next item runs normally,
    /// unless the failed item was marked `halt_on_error`: then the later items of its
    /// reducer are skipped. The events a failed call dispatched are dropped.
    pub fn fold(&mut self, work: &[Fold<'_>]) -> Vec<(usize, JsError)> {
        self.fold_checked(work, &mut |_| Ok(()))
    }

    /// [`Sandbox::fold`], with `check` called on the dispatches of every call that made
    /// some, right after it: a message from `check` fails the call as if it had thrown
    /// (its state stays the one it was given, its dispatches are dropped, and with
    /// `halt_on_error` its reducer's later items are skipped).
    pub fn fold_checked(
        &mut self,
        work: &[Fold<'_>],
        check: &mut dyn FnMut(&[Dispatch]) -> Result<(), String>,
    ) -> Vec<(usize, JsError)> {
        self.fold_until(work, check, None).1
    }

    /// [`Sandbox::fold_checked`] that stops early once `until` has passed, between two
    /// events (never between the items of one event, so every reducer has folded the
    /// same events): answers how many items it ran, and their failures. A busy reducer
    /// thus holds its thread for about one event's time past `until` at most.
    pub fn fold_until(
        &mut self,
        work: &[Fold<'_>],
        check: &mut dyn FnMut(&[Dispatch]) -> Result<(), String>,
        until: Option<Instant>,
    ) -> (usize, Vec<(usize, JsError)>) {
        let mut done = work.len();
        let mut failures = Vec::new();
        let mut any_failed = false;
        self.context.with(|ctx| {
            let keys = match Keys::new(&ctx) {
                Ok(keys) => keys,
                Err(e) => {
                    let error = caught(&ctx, e);
                    failures.extend((0..work.len()).map(|i| (i, error.clone())));
                    return;
                }
            };
            let fold: Function = match self.driver_fn(&ctx, "fold") {
                Ok(f) => f,
                Err(error) => {
                    failures.extend((0..work.len()).map(|i| (i, error.clone())));
                    return;
                }
            };
            let mut halted: Vec<u32> = Vec::new();
            let limit = self.limits.state_bytes as f64;
            for (i, item) in work.iter().enumerate() {
                if halted.contains(&item.slot) {
                    continue;
                }
                // one clock read per item, for the deadline and the stop alike
                let now = Instant::now();
                if let Some(until) = until
                    && i > 0
                    && !std::ptr::eq(item.event, work[i - 1].event)
                    && now >= until
                {
                    done = i;
                    break;
                }
                self.arm_at(now);
                let outcome = keys.event(&ctx, item.event).and_then(|event| {
                    let index = item.index as f64;
                    let limit = if item.check_size { limit } else { 0.0 };
                    fold.call::<_, f64>((
                        item.slot,
                        item.sid as f64,
                        event,
                        index,
                        item.live,
                        limit,
                    ))
                });
                let failure = match outcome {
                    Err(e) => {
                        let mut error = self.failed(&ctx, e);
                        // the driver's own refusal: a plain object, without a stack
                        if item.check_size
                            && error.kind == JsErrorKind::Thrown
                            && error.stack.is_none()
                            && error.message.starts_with("the state is ")
                        {
                            error.kind = JsErrorKind::StateLimit;
                        }
                        Some(error)
                    }
                    Ok(_) if self.overran.get() => {
                        let _ = self.call::<()>(&ctx, "revert", ());
                        Some(self.request_overran())
                    }
                    Ok(made) if made > 0.0 => self.refused(&ctx, made, check),
                    Ok(_) => None,
                };
                if let Some(error) = failure {
                    any_failed = true;
                    failures.push((i, error));
                    if item.halt_on_error {
                        halted.push(item.slot);
                    }
                }
            }
        });
        self.disarm();
        if any_failed {
            self.runtime.run_gc();
        }
        (done, failures)
    }

    /// Calls pipe mapping functions, one result per call in order: the outputs as a
    /// JSON array of `{type?, data?, args?}` (empty to drop the event), or why the call
    /// failed. The events a failed call dispatched are dropped.
    pub fn map(&mut self, calls: &[MapCall<'_>]) -> Vec<Result<String, JsError>> {
        self.map_with("map", calls)
    }

    /// [`Sandbox::map`], with the outputs' `type`, `data` and `timestamp` left out
    /// where they are the event's own (the same value, or the very object): the
    /// embedder keeps the event's stored bytes for them. A splice's map function that
    /// returns most events as they are thus costs no serialization of their data.
    pub fn map_keeping(&mut self, calls: &[MapCall<'_>]) -> Vec<Result<String, JsError>> {
        self.map_with("mapKeeping", calls)
    }

    fn map_with(&mut self, driver: &str, calls: &[MapCall<'_>]) -> Vec<Result<String, JsError>> {
        let mut results = Vec::with_capacity(calls.len());
        self.context.with(|ctx| {
            let setup = Keys::new(&ctx)
                .map_err(|e| caught(&ctx, e))
                .and_then(|keys| Ok((keys, self.driver_fn(&ctx, driver)?)));
            let (keys, map) = match setup {
                Ok(setup) => setup,
                Err(error) => {
                    results.extend(calls.iter().map(|_| Err(error.clone())));
                    return;
                }
            };
            for call in calls {
                self.arm();
                let outcome = keys.event(&ctx, call.event).and_then(|event| {
                    let index = call.index as f64;
                    map.call::<_, String>((call.slot, call.sid as f64, event, index, call.live))
                });
                results.push(match outcome {
                    Ok(_) if self.overran.get() => Err(self.request_overran()),
                    Ok(json) => Ok(json),
                    Err(e) => Err(self.failed(&ctx, e)),
                });
            }
        });
        self.disarm();
        if results.iter().any(Result::is_err) {
            self.runtime.run_gc();
        }
        results
    }

    /// The state reducer `slot` keeps for `sid` as JSON, or `None` while it is undefined.
    pub fn state(&mut self, slot: u32, sid: i64) -> Result<Option<String>, JsError> {
        self.arm();
        let result = self.context.with(|ctx| {
            let json: Option<String> = self.call(&ctx, "get", (slot, sid as f64))?;
            Ok(json)
        });
        self.disarm();
        self.classify(result)
    }

    /// Replaces the state of `sid` with `json` (`None`: undefined), as read back from a
    /// checkpoint.
    pub fn set_state(&mut self, slot: u32, sid: i64, json: Option<&str>) -> Result<(), JsError> {
        self.arm();
        let result = self
            .context
            .with(|ctx| self.call(&ctx, "set", (slot, sid as f64, json)));
        self.disarm();
        self.classify(result)
    }

    /// Makes reducer `slot`, loaded as `from`, visible to `current` as `to`.
    pub fn rename(&mut self, slot: u32, from: &str, to: &str) {
        let _ = self
            .context
            .with(|ctx| self.call::<()>(&ctx, "rename", (slot, from, to)));
    }

    /// Drops the live state of `sid` (it has been saved; it is read back when needed).
    pub fn evict(&mut self, slot: u32, sid: i64) {
        let _ = self
            .context
            .with(|ctx| self.call::<()>(&ctx, "evict", (slot, sid as f64)));
    }

    /// Takes the lines written with `console.*` since the last call.
    pub fn console(&mut self) -> Vec<ConsoleLine> {
        self.context
            .with(|ctx| {
                let lines: Vec<Object> = self.call(&ctx, "console", ())?;
                let field = |o: &Object, k: &str| o.get::<_, Option<f64>>(k).ok().flatten();
                Ok::<_, JsError>(
                    lines
                        .iter()
                        .map(|o| ConsoleLine {
                            level: o.get("level").unwrap_or_default(),
                            message: o.get("message").unwrap_or_default(),
                            slot: field(o, "slot").map(|s| s as u32),
                            sid: field(o, "sid").map(|s| s as i64),
                            index: field(o, "index").map(|i| i as i64),
                        })
                        .collect::<Vec<_>>(),
                )
            })
            .unwrap_or_default()
    }

    /// Takes the events dispatched by calls since the last call, in order.
    pub fn dispatches(&mut self) -> Vec<Dispatch> {
        self.context
            .with(|ctx| {
                let taken: Vec<Object> = self.call(&ctx, "dispatches", ())?;
                Ok::<_, JsError>(taken.iter().map(dispatch_from).collect::<Vec<_>>())
            })
            .unwrap_or_default()
    }

    /// Bytes the runtime has allocated.
    pub fn memory_used(&self) -> u64 {
        self.runtime.memory_usage().memory_used_size as u64
    }

    fn driver_fn<'js>(&self, ctx: &Ctx<'js>, name: &str) -> Result<Function<'js>, JsError> {
        let driver = self.driver.clone().restore(ctx).map_err(internal)?;
        driver.get(name).map_err(|e| caught(ctx, e))
    }

    fn call<'js, R: rquickjs::FromJs<'js>>(
        &self,
        ctx: &Ctx<'js>,
        name: &str,
        args: impl rquickjs::function::IntoArgs<'js>,
    ) -> Result<R, JsError> {
        self.driver_fn(ctx, name)?
            .call(args)
            .map_err(|e| caught(ctx, e))
    }

    /// Shows the `made` dispatches of the fold that just returned to `check`; when it
    /// refuses them, takes the fold back and answers why.
    fn refused<'js>(
        &self,
        ctx: &Ctx<'js>,
        made: f64,
        check: &mut dyn FnMut(&[Dispatch]) -> Result<(), String>,
    ) -> Option<JsError> {
        let recent: Vec<Object> = match self.call(ctx, "recent", (made,)) {
            Ok(r) => r,
            Err(e) => return Some(e),
        };
        let dispatches: Vec<Dispatch> = recent.iter().map(dispatch_from).collect();
        let message = check(&dispatches).err()?;
        let _ = self.call::<()>(ctx, "revert", ());
        Some(JsError {
            kind: JsErrorKind::Thrown,
            message,
            stack: None,
        })
    }

    /// Names the error of a failed fold or map call and drops what it dispatched (the
    /// driver does so itself unless the call was stopped before its `catch` could run).
    fn failed<'js>(&self, ctx: &Ctx<'js>, e: rquickjs::Error) -> JsError {
        let mut error = caught(ctx, e);
        self.reclassify(&mut error);
        self.arm();
        let _ = self.call::<()>(ctx, "discard", ());
        error
    }

    fn arm(&self) {
        self.arm_at(Instant::now());
    }

    fn arm_at(&self, now: Instant) {
        self.interrupted.store(false, Ordering::Relaxed);
        self.overran.set(false);
        let limit = now.saturating_duration_since(self.epoch) + self.limits.event_time;
        self.deadline
            .store(limit.as_nanos() as u64, Ordering::Relaxed);
    }

    fn disarm(&self) {
        self.deadline.store(DISARMED, Ordering::Relaxed);
    }

    fn classify<T>(&mut self, result: Result<T, JsError>) -> Result<T, JsError> {
        result.map_err(|mut error| {
            self.reclassify(&mut error);
            self.runtime.run_gc();
            error
        })
    }

    /// The time-out of a call whose `request()` waited until its time limit ran out
    /// (the code may have caught the error `request()` threw: the call fails anyway).
    fn request_overran(&self) -> JsError {
        self.overran.set(false);
        self.interrupted.store(false, Ordering::Relaxed);
        JsError {
            kind: JsErrorKind::TimeLimit,
            message: format!(
                "the {} waited in request() until the time limit of {} ms for one event ran \
                 out and was stopped",
                self.role,
                self.limits.event_time.as_millis()
            ),
            stack: None,
        }
    }

    /// Names time-outs and memory exhaustion, which QuickJS reports as plain errors.
    fn reclassify(&self, error: &mut JsError) {
        if self.overran.get() {
            self.interrupted.store(false, Ordering::Relaxed);
            *error = self.request_overran();
        } else if self.interrupted.swap(false, Ordering::Relaxed) {
            error.kind = JsErrorKind::TimeLimit;
            error.message = format!(
                "the {} ran longer than the time limit of {} ms for one event and was stopped",
                self.role,
                self.limits.event_time.as_millis()
            );
        } else if error.kind == JsErrorKind::Thrown && error.message == NULL_THROWN {
            // by then the frames that held the memory are gone: what was thrown is
            // all there is to go by
            error.message = format!(
                "the {} threw null, or used more than the memory limit of {} bytes (QuickJS \
                 throws null when no memory is left even for an error)",
                self.role,
                self.memory_limit.min(self.limits.memory_bytes)
            );
        } else if error.kind == JsErrorKind::Thrown && error.message == OUT_OF_MEMORY {
            error.kind = JsErrorKind::MemoryLimit;
            error.message = if self.memory_limit < self.limits.memory_bytes {
                format!(
                    "the {} used more than the {} bytes of JavaScript memory left for it by the \
                     server-wide limit and was stopped",
                    self.role, self.memory_limit
                )
            } else {
                format!(
                    "the {} used more than the memory limit of {} bytes and was stopped",
                    self.role, self.limits.memory_bytes
                )
            };
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 64 * 1024 * 1024,
            event_time: Duration::from_millis(100),
            state_bytes: 100 * 1024,
        }
    }
}
