// The sandbox's driver, evaluated once per context before any reducer. It keeps every
// reducer function and its per-substream states in JavaScript (so states stay live
// between events and are serialized only when Rust asks), defines `console`, and
// answers an object of functions that Rust calls. Nothing here is reachable from
// reducer code except `console`.
(() => {
  const fns = [];
  const states = [];
  const reads = [];
  const slots = Object.create(null);
  const lines = [];
  // the call running now, so console lines name their reducer, substream and event
  let at = {};
  const show = (v) => {
    if (typeof v === "string") return v;
    try {
      const s = JSON.stringify(v);
      return s === undefined ? String(v) : s;
    } catch (_) {
      return String(v);
    }
  };
  const say = (level) => (...args) => {
    if (lines.length < 1000) lines.push({ level, message: args.map(show).join(" "), ...at });
  };
  globalThis.console = Object.freeze({
    log: say("log"),
    info: say("info"),
    debug: say("debug"),
    warn: say("warn"),
    error: say("error"),
  });
  const none = Object.freeze({});
  return {
    load(slot, name, fn, names) {
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
    fold(slot, sid, event, index) {
      at = { slot, sid, index };
      const own = states[slot];
      const names = reads[slot];
      let current = none;
      if (names.length > 0) {
        current = {};
        for (const name of names) {
          const other = states[slots[name]];
          current[name] = other === undefined ? undefined : other.get(sid);
        }
      }
      const next = fns[slot](own.get(sid), event, index, current);
      if (next !== null && typeof next === "object" && typeof next.then === "function") {
        throw new TypeError("the reducer returned a Promise: reducers must be synchronous");
      }
      if (next === undefined) own.delete(sid);
      else own.set(sid, next);
    },
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
  };
})()
