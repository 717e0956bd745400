// The sandbox's driver, evaluated once per context before any reducer. It evaluates to a
// function that Rust calls with the native `hostRequest` function (so that function is
// never a global); the call defines `console`, `request` and `dispatch`, makes `Date`,
// `performance` and `Math.random` answer from the event being handled, freezes every
// built-in and global (so no reducer can change what another reducer or this driver
// sees), keeps every reducer and pipe function and the reducers' per-substream states
// in JavaScript (so states stay live between events and are serialized only when Rust
// asks), and answers an object of functions that Rust calls. Nothing here is reachable
// from reducer code except `console`, `request` and `dispatch`.
((hostRequest) => {
  const fns = [];
  const states = [];
  const reads = [];
  const slots = Object.create(null);
  const lines = [];
  const dispatched = [];
  // the call running now, so console lines and dispatches name their reducer, substream
  // and event; whether it runs live (not a replay), so `request` may reach the host;
  // where its dispatches start in `dispatched` (-1 between calls); how many it made
  let at = {};
  let live = false;
  let mark = -1;
  let made = 0;
  // console output of the call running now: characters kept, lines dropped
  let said = 0;
  let unsaid = 0;
  // the clock and the random seed of the call running now: the event's timestamp and
  // id, so that folding the same events again gives the same states (0 and "" while
  // code loads)
  let clock = 0;
  let seedId = "";
  let seeded = false;
  const begin = (slot, sid, index, isLive, event) => {
    at = { slot, sid, index };
    live = isLive === true;
    mark = dispatched.length;
    made = 0;
    said = 0;
    unsaid = 0;
    clock = typeof event.timestamp === "number" ? event.timestamp : 0;
    seedId = typeof event.id === "string" ? event.id : "";
    seeded = false;
  };
  const end = () => {
    if (unsaid > 0) {
      lines.push({
        level: "warn",
        message: `${unsaid} more console line${unsaid === 1 ? " was" : "s were"} dropped: ` +
          `at most ${CONSOLE_CHARS} characters of console output are kept per event ` +
          `(and 1000 lines per batch of events)`,
        ...at,
      });
    }
    said = 0;
    unsaid = 0;
    at = {};
    live = false;
    mark = -1;
    clock = 0;
    seedId = "";
    seeded = false;
  };
  // drops the dispatches of a call that failed
  const discard = () => {
    if (mark >= 0) dispatched.length = mark;
    end();
  };
  const show = (v) => {
    if (typeof v === "string") return v;
    try {
      const s = JSON.stringify(v);
      return s === undefined ? String(v) : s;
    } catch (_) {
      return String(v);
    }
  };
  // names a value in an error message
  const what = (v) => {
    if (v === null) return "null";
    if (v === undefined) return "undefined";
    if (Array.isArray(v)) return "an array";
    if (typeof v === "string") return `the string ${JSON.stringify(v.length > 40 ? v.slice(0, 40) + "..." : v)}`;
    if (typeof v === "number" || typeof v === "boolean") return `the ${typeof v} ${String(v)}`;
    return typeof v === "object" ? "an object" : `a ${typeof v}`;
  };
  const thenable = (v) => v !== null && typeof v === "object" && typeof v.then === "function";
  // one event's console output is kept up to CONSOLE_CHARS characters, a line up to
  // LINE_CHARS: a log entry per line, so that a reducer cannot turn a small event
  // into megabytes of log
  const CONSOLE_CHARS = 16384;
  const LINE_CHARS = 4096;
  const say = (level) => (...args) => {
    if (said >= CONSOLE_CHARS || lines.length >= 1000) {
      unsaid++;
      return;
    }
    let message = args.map(show).join(" ");
    if (message.length > LINE_CHARS) {
      // never half a surrogate pair, which is no UTF-8 (the line would be lost)
      const cut = (message.charCodeAt(LINE_CHARS - 1) & 0xfc00) === 0xd800 ? LINE_CHARS - 1 : LINE_CHARS;
      message = message.slice(0, cut) + ` ... (${message.length - cut} more characters)`;
    }
    said += message.length;
    lines.push({ level, message, ...at });
  };
  // Math.random: sfc32, seeded on first use in a call by cyrb128 of the event id
  let ra = 0, rb = 0, rc = 0, rd = 0;
  const imul = Math.imul;
  const seed = () => {
    let h1 = 1779033703, h2 = 3144134277, h3 = 1013904242, h4 = 2773480762;
    for (let i = 0; i < seedId.length; i++) {
      const k = seedId.charCodeAt(i);
      h1 = h2 ^ imul(h1 ^ k, 597399067);
      h2 = h3 ^ imul(h2 ^ k, 2869860233);
      h3 = h4 ^ imul(h3 ^ k, 951274213);
      h4 = h1 ^ imul(h4 ^ k, 2716044179);
    }
    h1 = imul(h3 ^ (h1 >>> 18), 597399067);
    h2 = imul(h4 ^ (h2 >>> 22), 2869860233);
    h3 = imul(h1 ^ (h3 >>> 17), 951274213);
    h4 = imul(h2 ^ (h4 >>> 19), 2716044179);
    ra = (h1 ^ h2 ^ h3 ^ h4) >>> 0;
    rb = (h2 ^ h1) >>> 0;
    rc = (h3 ^ h1) >>> 0;
    rd = (h4 ^ h1) >>> 0;
    seeded = true;
    for (let i = 0; i < 12; i++) next();
  };
  const next = () => {
    const t = (((ra + rb) | 0) + rd) | 0;
    rd = (rd + 1) | 0;
    ra = rb ^ (rb >>> 9);
    rb = (rc + (rc << 3)) | 0;
    rc = (rc << 21) | (rc >>> 11);
    rc = (rc + t) | 0;
    return (t >>> 0) / 4294967296;
  };
  Math.random = function random() {
    if (!seeded) seed();
    return next();
  };
  // Date: the event's timestamp stands for "now"; dates from arguments are unchanged
  const RealDate = Date;
  const EventDate = function Date(...args) {
    if (new.target === undefined) return new RealDate(clock).toString();
    return Reflect.construct(RealDate, args.length === 0 ? [clock] : args, new.target);
  };
  Object.defineProperty(EventDate, "length", { value: RealDate.length });
  EventDate.prototype = RealDate.prototype;
  Object.defineProperty(RealDate.prototype, "constructor", { value: EventDate });
  EventDate.now = function now() {
    return clock;
  };
  EventDate.parse = RealDate.parse;
  EventDate.UTC = RealDate.UTC;
  globalThis.Date = EventDate;
  // no clock that moves within a call: elapsed times are 0
  globalThis.performance = { now: () => 0, timeOrigin: 0 };
  globalThis.console = Object.freeze({
    log: say("log"),
    info: say("info"),
    debug: say("debug"),
    warn: say("warn"),
    error: say("error"),
  });
  const checkType = (type, label) => {
    if (typeof type !== "string") throw new TypeError(`${label} must be a string, not ${what(type)}`);
    if (type.length < 1 || type.length > 100) {
      throw new TypeError(`${label} must be 1 to 100 characters long, not ${type.length}`);
    }
  };
  globalThis.request = (url, init) => {
    if (typeof url !== "string") throw new TypeError(`request(url, init): url must be a string, not ${what(url)}`);
    if (!live) return { voided: true, ok: false, status: 0, headers: {}, body: "", json: () => null };
    if (init !== undefined && init !== null && typeof init !== "object") {
      throw new TypeError(`request(url, init): init must be an object, not ${what(init)}`);
    }
    const sent = Object.assign({}, init);
    sent.method = sent.method === undefined ? "GET" : String(sent.method);
    const headers = {};
    if (sent.headers !== undefined && sent.headers !== null) {
      if (typeof sent.headers !== "object") {
        throw new TypeError(`request(url, init): init.headers must be an object, not ${what(sent.headers)}`);
      }
      for (const [k, v] of Object.entries(sent.headers)) headers[k] = String(v);
    }
    if (sent.body !== undefined && typeof sent.body !== "string") {
      sent.body = JSON.stringify(sent.body);
      if (!Object.keys(headers).some((k) => k.toLowerCase() === "content-type")) {
        headers["content-type"] = "application/json";
      }
    }
    sent.headers = headers;
    const response = JSON.parse(hostRequest(url, JSON.stringify(sent)));
    response.json = function () {
      return JSON.parse(this.body);
    };
    return response;
  };
  globalThis.dispatch = (stream, event) => {
    const where = "dispatch(stream, event)";
    if (typeof stream !== "string" || stream.length === 0) {
      throw new TypeError(`${where}: stream must be a stream name such as "orders" or "orders('x')"`);
    }
    if (event === null || typeof event !== "object") {
      throw new TypeError(`${where}: event must be an object {type, data?}, not ${what(event)}`);
    }
    checkType(event.type, `${where}: event.type`);
    if (mark < 0) throw new TypeError(`${where}: events can only be dispatched while handling an event`);
    if (made >= 1000) throw new TypeError(`${where}: at most 1000 events may be dispatched for one event`);
    const data = JSON.stringify(event.data === undefined ? null : event.data);
    if (data === undefined) throw new TypeError(`${where}: event.data cannot be turned into JSON`);
    dispatched.push({ ...at, n: made, stream, type: event.type, data });
    made++;
  };
  // Assigning a name that an object inherits from a frozen prototype would fail (the
  // "override mistake"): for names code commonly sets on its own objects (`toString`,
  // `constructor`, an error's `name` and `message`, a key such as "valueOf" taken from
  // event data), the prototype gets an accessor whose setter defines an own property on
  // the object assigned to, and refuses only an assignment to the prototype itself.
  const overridable = (proto, names) => {
    for (const name of names) {
      const d = Object.getOwnPropertyDescriptor(proto, name);
      if (d === undefined || !("value" in d)) continue;
      const value = d.value;
      Object.defineProperty(proto, name, {
        get() {
          return value;
        },
        set(v) {
          if (this === proto) {
            throw new TypeError(`cannot assign to ${String(name)} of a built-in prototype: built-ins are frozen`);
          }
          if (this === null || (typeof this !== "object" && typeof this !== "function")) return;
          Object.defineProperty(this, name, { value: v, writable: true, enumerable: true, configurable: true });
        },
        enumerable: d.enumerable,
        configurable: false,
      });
    }
  };
  // No code from strings (`eval`, the constructors of functions) and no BigInt: a
  // BigInt operation of up to a million bits is one native call of seconds that the
  // time limit cannot stop, and code from strings would bring BigInt literals past the
  // check at deploy (`prepare.rs`). Each says so when called.
  const unavailable = (what, why) =>
    function () {
      throw new TypeError(`${what} is not available in reducers and pipe functions: ${why}`);
    };
  const withheld = () => {
    const fromStrings = "code is not made from strings here";
    globalThis.eval = unavailable("eval", fromStrings);
    const NoFunction = unavailable("Function", fromStrings);
    Object.defineProperty(NoFunction, "prototype", { value: Function.prototype });
    globalThis.Function = NoFunction;
    Object.defineProperty(Function.prototype, "constructor", { value: NoFunction });
    const kinds = [function* () {}, async function () {}, async function* () {}];
    for (const f of kinds) {
      const proto = Object.getPrototypeOf(f);
      const name = proto.constructor.name;
      Object.defineProperty(proto, "constructor", { value: unavailable(name, fromStrings) });
    }
    for (const name of ["BigInt", "BigInt64Array", "BigUint64Array"]) delete globalThis[name];
    // a setter freezing leaves working: a hook over every error's stack of the context,
    // whose call sites hand out the functions of each frame (this driver's among them)
    delete Error.prepareStackTrace;
    delete Error.stackTraceLimit;
    for (const name of ["getBigInt64", "getBigUint64", "setBigInt64", "setBigUint64"]) {
      delete DataView.prototype[name];
    }
  };
  // Freezes every object reachable from the global object and from intrinsics that no
  // global names (iterator and generator prototypes), and the global object itself.
  const harden = () => {
    withheld();
    const errors = [Error, EvalError, RangeError, ReferenceError, SyntaxError, TypeError, URIError];
    if (typeof AggregateError === "function") errors.push(AggregateError);
    for (const E of errors) overridable(E.prototype, ["constructor", "name", "message", "toString"]);
    overridable(Object.prototype, Reflect.ownKeys(Object.prototype));
    overridable(Function.prototype, ["constructor", "toString"]);
    overridable(Array.prototype, ["constructor", "toString"]);
    const roots = [
      globalThis,
      Object.getPrototypeOf(function* () {}),
      Object.getPrototypeOf(async function () {}),
      Object.getPrototypeOf(async function* () {}),
      Object.getPrototypeOf([][Symbol.iterator]()),
      Object.getPrototypeOf(new Map()[Symbol.iterator]()),
      Object.getPrototypeOf(new Set()[Symbol.iterator]()),
      Object.getPrototypeOf(""[Symbol.iterator]()),
      Object.getPrototypeOf(/a/[Symbol.matchAll]("")),
    ];
    const values = [][Symbol.iterator]();
    if (typeof values.map === "function") roots.push(Object.getPrototypeOf(values.map((x) => x)));
    if (typeof Iterator === "function" && typeof Iterator.from === "function") {
      roots.push(Object.getPrototypeOf(Iterator.from({ next: () => ({ done: true }) })));
    }
    const seen = new Set();
    while (roots.length > 0) {
      const o = roots.pop();
      if (o === null || (typeof o !== "object" && typeof o !== "function") || seen.has(o)) continue;
      seen.add(o);
      roots.push(Object.getPrototypeOf(o));
      const all = Object.getOwnPropertyDescriptors(o);
      for (const key of Reflect.ownKeys(all)) {
        const d = all[key];
        if (typeof d.value === "object" || typeof d.value === "function") roots.push(d.value);
        else if (d.get !== undefined || d.set !== undefined) roots.push(d.get, d.set);
      }
    }
    for (const o of seen) Object.freeze(o);
  };
  // one output of a pipe function, as {type?, data?, args?}
  const output = (o, where) => {
    const out = { type: o.type, data: o.data, args: o.args, timestamp: o.timestamp };
    if (out.type !== undefined) checkType(out.type, `${where}: type`);
    if (out.args !== undefined) {
      if (!Array.isArray(out.args)) throw new TypeError(`${where}: args must be an array, not ${what(out.args)}`);
      out.args.forEach((a, i) => {
        const ok = a === null || typeof a === "string" || typeof a === "boolean" || (typeof a === "number" && Number.isFinite(a));
        if (!ok) throw new TypeError(`${where}: args[${i}] must be a string, a finite number, a boolean or null, not ${what(a)}`);
      });
    }
    return out;
  };
  const outputs = (result) => {
    if (result === null || result === undefined) return [];
    if (thenable(result)) throw new TypeError("the pipe function returned a Promise: pipe functions must be synchronous");
    if (Array.isArray(result)) {
      if (result.length > 1000) {
        throw new TypeError(`the pipe function returned ${result.length} outputs: at most 1000 are allowed for one event`);
      }
      const out = [];
      result.forEach((o, i) => {
        if (o === null) return;
        if (typeof o !== "object" || Array.isArray(o) || thenable(o)) {
          const kind = thenable(o) ? "a Promise" : what(o);
          throw new TypeError(`the pipe function returned ${kind} at position ${i}: each element must be an object {type?, data?, args?} or null`);
        }
        out.push(output(o, `the pipe function's output at position ${i}`));
      });
      return out;
    }
    if (typeof result === "object") return [output(result, "the pipe function's output")];
    throw new TypeError(`the pipe function must return an object {type?, data?, args?}, an array of them, or null to drop the event, not ${what(result)}`);
  };
  // bytes of UTF-8 in `s` when they are over `limit`, else 0; counted from the
  // non-ASCII characters alone (a regex runs in C, a loop over a large state would
  // take longer than the time limit)
  const overBy = (s, limit) => {
    if (s.length * 3 <= limit) return 0;
    const wide = s.replace(/[\x00-\x7f]+/g, "");
    let n = s.length;
    for (let i = 0; i < wide.length; i++) {
      const c = wide.charCodeAt(i);
      if (c < 0x800) n += 1;
      else if (c >= 0xd800 && c < 0xdc00) {
        n += 2;
        i++;
      } else n += 2;
    }
    return n > limit ? n : 0;
  };
  // how to take back the last fold: the state it replaced and where its dispatches
  // start, so that Rust can refuse a call after it returned (an invalid dispatch);
  // kept in variables rather than an object, which would be one allocation per event
  let undoOwn = null, undoSid, undoHad, undoPrev, undoFrom;
  const none = Object.freeze({});
  // `current` shows the other reducers' live states read-only: a membrane, whose views
  // stand on empty shadows (so no proxy invariant ever forces a real object out, not
  // even from a frozen one), read through to the real object, hand out views of the
  // objects they reach (prototypes too) and refuse every change. Functions are handed
  // out as they are (built-ins are frozen; a state's own functions do not survive a
  // checkpoint, which saves JSON).
  const refuseChange = () => {
    throw new TypeError("current is read-only: a reducer cannot change another reducer's state");
  };
  const views = new WeakMap();
  const readOnly = (value) => {
    if (value === null || typeof value !== "object") return value;
    let view = views.get(value);
    if (view === undefined) {
      const shadow = Array.isArray(value) ? [] : {};
      view = new Proxy(shadow, membrane(value, shadow));
      views.set(value, view);
    }
    return view;
  };
  const membrane = (real, shadow) => ({
    get: (_, key) => readOnly(Reflect.get(real, key)),
    has: (_, key) => Reflect.has(real, key),
    ownKeys: () => Reflect.ownKeys(real),
    getOwnPropertyDescriptor(_, key) {
      const d = Reflect.getOwnPropertyDescriptor(real, key);
      if (d === undefined) return undefined;
      if ("value" in d) d.value = readOnly(d.value);
      // as the shadow has it where it has it (an array's length), else configurable
      const own = Reflect.getOwnPropertyDescriptor(shadow, key);
      d.configurable = own === undefined || own.configurable;
      if (own !== undefined && !own.configurable && "value" in d) d.writable = true;
      return d;
    },
    getPrototypeOf: () => readOnly(Reflect.getPrototypeOf(real)),
    set: refuseChange,
    defineProperty: refuseChange,
    deleteProperty: refuseChange,
    setPrototypeOf: refuseChange,
    preventExtensions: refuseChange,
  });
  harden();
  return {
    load(slot, name, fn, names) {
      end();
      if (typeof fn !== "function") {
        throw new TypeError("the reducer is not a function: export a function as default, or send one function expression");
      }
      fns[slot] = fn;
      states[slot] = new Map();
      reads[slot] = names;
      slots[name] = slot;
    },
    rename(slot, from, to) {
      if (slots[from] === slot) delete slots[from];
      slots[to] = slot;
    },
    unload(slot, name) {
      fns[slot] = undefined;
      states[slot] = undefined;
      reads[slot] = undefined;
      if (slots[name] === slot) delete slots[name];
    },
    fold(slot, sid, event, index, isLive, limit) {
      begin(slot, sid, index, isLive, event);
      undoOwn = null;
      try {
        const own = states[slot];
        const names = reads[slot];
        let current = none;
        if (names.length > 0) {
          current = {};
          for (const name of names) {
            const other = states[slots[name]];
            current[name] = other === undefined ? undefined : readOnly(other.get(sid));
          }
        }
        const had = own.has(sid);
        const prev = own.get(sid);
        // measuring: the state as it was, should the reducer change it in place and
        // make it too large (the event is then skipped, its change with it)
        const before = limit > 0 && had ? JSON.stringify(prev) : undefined;
        const next = fns[slot](prev, event, index, current);
        if (thenable(next)) {
          throw new TypeError("the reducer returned a Promise: reducers must be synchronous");
        }
        if (limit > 0 && next !== undefined) {
          const bytes = overBy(JSON.stringify(next) ?? "", limit);
          if (bytes > 0) {
            if (before !== undefined) own.set(sid, JSON.parse(before));
            // a plain object: the message alone, without the driver's stack
            throw { message: `the state is ${bytes} bytes of JSON, over the limit of ${limit} bytes` };
          }
        }
        undoOwn = own;
        undoSid = sid;
        undoHad = had;
        undoPrev = prev;
        undoFrom = mark;
        if (next === undefined) own.delete(sid);
        else own.set(sid, next);
      } catch (e) {
        discard();
        throw e;
      }
      const n = made;
      end();
      return n;
    },
    // the dispatches of the last fold, which made `n`
    recent(n) {
      return dispatched.slice(dispatched.length - n);
    },
    // takes the last fold back as if it had thrown: its state is the one it was given
    // (with whatever the reducer changed in it), its dispatches are dropped
    revert() {
      if (undoOwn === null) return;
      if (undoHad) undoOwn.set(undoSid, undoPrev);
      else undoOwn.delete(undoSid);
      dispatched.length = undoFrom;
      undoOwn = null;
    },
    map(slot, sid, event, index, isLive) {
      begin(slot, sid, index, isLive, event);
      let json;
      try {
        json = JSON.stringify(outputs(fns[slot](event)));
      } catch (e) {
        discard();
        throw e;
      }
      end();
      return json;
    },
    // as map, but fields that are the event's own (the same value or object) are left
    // out, so the embedder keeps the event's stored bytes for them (splices)
    mapKeeping(slot, sid, event, index, isLive) {
      begin(slot, sid, index, isLive, event);
      let json;
      try {
        const outs = outputs(fns[slot](event));
        outs.forEach((o, i) => {
          const ts = o.timestamp;
          if (ts !== undefined && !(typeof ts === "number" && Number.isSafeInteger(ts) && ts >= 0)) {
            throw new TypeError(`output ${i}: timestamp must be a whole number of milliseconds since 1970, not ${what(ts)}`);
          }
        });
        for (const o of outs) {
          if (o.type === event.type) o.type = undefined;
          if (o.data === event.data) o.data = undefined;
          if (o.timestamp === event.timestamp) o.timestamp = undefined;
        }
        json = JSON.stringify(outs);
      } catch (e) {
        discard();
        throw e;
      }
      end();
      return json;
    },
    discard,
    get(slot, sid) {
      const v = states[slot].get(sid);
      return v === undefined ? undefined : JSON.stringify(v);
    },
    has(slot, sid) {
      return states[slot].has(sid);
    },
    set(slot, sid, json) {
      if (json === undefined) states[slot].delete(sid);
      else states[slot].set(sid, JSON.parse(json));
    },
    evict(slot, sid) {
      states[slot].delete(sid);
    },
    console() {
      return lines.splice(0);
    },
    dispatches() {
      return dispatched.splice(0);
    },
  };
})
