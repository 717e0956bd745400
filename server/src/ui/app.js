// The eddy web console: one script, no build step, no dependencies. It speaks the
// HTTP contract (docs/reference/http.md) to the server that serves it. Everything a
// tenant wrote (event data, names, log lines) goes into text nodes only: the page
// never builds HTML from strings.
"use strict";

const KEY = "eddy.key";
const PAGE = 50;

// ---------- DOM ----------

/** Makes an element: h("a", {href: "#/"}, "text", child, ...). */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function show(...nodes) {
  const main = document.getElementById("main");
  main.replaceChildren(...nodes.flat().filter(Boolean));
}

function errorBox(e) {
  return h("div", { class: "error", role: "alert" }, e.message || String(e));
}

function when(ms) {
  if (ms === undefined || ms === null || ms < 0) return "";
  return new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

function pretty(v) {
  return JSON.stringify(v, null, 2);
}

function preview(v) {
  const s = typeof v === "string" ? v : JSON.stringify(v);
  return s === undefined ? "" : s.length > 200 ? s.slice(0, 200) + "…" : s;
}

// ---------- the server ----------

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error) || `the server answered ${status}`);
    this.status = status;
    this.body = body || {};
  }
}

const NAME = /^[A-Za-z0-9_-]{1,64}$/;

/** A stream path (`acme/orders('a b')`) or an account as a URL path: the names
 * checked, the args percent-encoded whole (a `/`, `?`, `#` or `..` in a string
 * argument stays inside it). Throws on anything that is not a stream path. */
function urlOf(path) {
  const p = splitPath(path);
  return "/" + p.acct + (p.stream === null ? "" : "/" + p.stream + (p.args === null ? "" : encodeURIComponent(p.args)));
}

function authHeaders(extra) {
  const headers = Object.assign({}, extra);
  const key = sessionStorage.getItem(KEY);
  if (key) headers["Authorization"] = "Bearer " + key;
  return headers;
}

/** Calls the server; answers {status, headers, body} or throws an ApiError. */
async function api(method, url, opts = {}) {
  const headers = authHeaders(opts.headers);
  let body = opts.body;
  if (body !== undefined && typeof body !== "string") {
    body = JSON.stringify(body);
    headers["Content-Type"] = headers["Content-Type"] || "application/json";
  }
  const r = await fetch(url, { method, headers, body, signal: opts.signal });
  const text = await r.text();
  let parsed = text;
  if ((r.headers.get("content-type") || "").includes("json")) {
    try { parsed = text ? JSON.parse(text) : null; } catch { parsed = text; }
  }
  if (!r.ok) {
    const err = new ApiError(r.status, typeof parsed === "object" ? parsed : { error: text });
    // a read that needs a key leads to the sign-in page; a change (a deploy, saved
    // settings) shows its error where it was made, so nothing typed is lost
    const read = method === "GET" || method === "HEAD";
    if (r.status === 401 && read && !opts.noLogin) {
      signInReason = "This server asks for a key.";
      location.hash = "#/login?next=" + encodeURIComponent(location.hash);
    }
    throw err;
  }
  return { status: r.status, headers: r.headers, body: parsed };
}

/** The rel="next" URL of a Link header. */
function nextLink(headers) {
  const link = headers.get("link") || "";
  const m = link.match(/<([^>]+)>\s*;\s*rel="?next"?/);
  return m ? m[1] : null;
}

/**
 * Follows a Server-Sent Events URL with fetch (so the key goes in a header, never in a
 * URL), calling onEvent({id, event, data}) for each event; reconnects with
 * Last-Event-ID after a drop. Stops when `signal` aborts.
 */
function follow(url, signal, onEvent, onState) {
  let last = null;
  (async () => {
    while (!signal.aborted) {
      try {
        const headers = authHeaders({ Accept: "text/event-stream" });
        if (last !== null) headers["Last-Event-ID"] = last;
        const r = await fetch(url, { headers, signal });
        if (!r.ok) {
          let msg = `the server answered ${r.status}`;
          try { msg = (await r.json()).error || msg; } catch { /* not JSON */ }
          onState(false, msg);
          // a refusal or a missing stream stays so; a limit or a failure may pass
          if (r.status < 500 && r.status !== 408 && r.status !== 429) return;
        } else {
          onState(true);
          const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
          let buf = "";
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            buf = (buf + value).replace(/\r\n/g, "\n");
            let cut;
            while ((cut = buf.indexOf("\n\n")) >= 0) {
              const block = buf.slice(0, cut);
              buf = buf.slice(cut + 2);
              const ev = { id: null, event: "message", data: [] };
              for (const line of block.split("\n")) {
                if (!line || line.startsWith(":")) continue;
                const i = line.indexOf(":");
                const field = i < 0 ? line : line.slice(0, i);
                const val = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
                if (field === "id") ev.id = val;
                else if (field === "event") ev.event = val;
                else if (field === "data") ev.data.push(val);
              }
              if (ev.id !== null && ev.id !== "-1") last = ev.id;
              if (ev.data.length) {
                let data = ev.data.join("\n");
                try { data = JSON.parse(data); } catch { /* text */ }
                onEvent({ id: ev.id, event: ev.event, data });
              }
            }
          }
          onState(false, "the connection closed; reconnecting");
        }
      } catch (e) {
        if (signal.aborted) return;
        onState(false, "the connection dropped; reconnecting");
      }
      await new Promise((res) => setTimeout(res, 1000));
    }
  })();
}

// ---------- routing ----------

let leaving = new AbortController();
/** Why the sign-in page was shown: set by the console, never read from the URL. */
let signInReason = null;

function parseHash() {
  const raw = location.hash.replace(/^#/, "") || "/";
  const q = raw.indexOf("?");
  const path = q < 0 ? raw : raw.slice(0, q);
  const params = new URLSearchParams(q < 0 ? "" : raw.slice(q + 1));
  const parts = path.split("/").filter((p) => p !== "").map(decodeURIComponent);
  return { parts, params };
}

function link(route, ...args) {
  return "#/" + [route, ...args.map((a) => encodeURIComponent(a))].join("/");
}

function crumbs(...items) {
  const nav = document.getElementById("crumbs");
  const out = [];
  items.filter(Boolean).forEach(([text, href], i) => {
    if (i) out.push(h("span", { class: "sep" }, "/"));
    out.push(href ? h("a", { href }, text) : h("span", {}, text));
  });
  nav.replaceChildren(...out);
}

function renderWho() {
  const who = document.getElementById("who");
  const key = sessionStorage.getItem(KEY);
  who.replaceChildren(
    key
      ? h("span", {}, "signed in with a key ",
          h("button", { id: "logout", onclick: () => { sessionStorage.removeItem(KEY); location.hash = "#/login"; } }, "Sign out"))
      : h("a", { href: "#/login", id: "login-link" }, "Sign in with a key"),
  );
}

async function route() {
  leaving.abort();
  leaving = new AbortController();
  const signal = leaving.signal;
  renderWho();
  const { parts, params } = parseHash();
  try {
    switch (parts[0]) {
      case undefined: return await accountsPage(signal);
      case "login": return loginPage(params);
      case "account": return await streamsPage(parts[1], params, signal);
      case "stream": return await streamPage(parts[1], params, signal);
      case "event": return await eventPage(parts[1], parts[2], signal);
      case "reducer": return await reducerPage(parts[1], parts[2], signal);
      case "new-reducer": return await reducerPage(parts[1], null, signal);
      default: show(errorBox(new Error(`the console has no page "${parts[0]}"`)));
    }
  } catch (e) {
    if (signal.aborted) return;
    show(errorBox(e));
  }
}

window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", route);

// ---------- sign in ----------

function loginPage(params) {
  crumbs(["sign in"]);
  const input = h("input", { type: "password", id: "key", class: "wide", autocomplete: "off",
    placeholder: "eddy_… (an account key) or the admin token" });
  const status = h("div", {});
  const form = h("form", { id: "login-form", onsubmit: async (ev) => {
    ev.preventDefault();
    const key = input.value.trim();
    if (!key) return;
    sessionStorage.setItem(KEY, key);
    try {
      await api("GET", "/api/accounts", { noLogin: true });
      location.hash = next.startsWith("#/") && !next.startsWith("#/login") ? next : "#/";
    } catch (e) {
      sessionStorage.removeItem(KEY);
      status.replaceChildren(errorBox(e));
    }
  } },
  h("div", { class: "bar" }, input, h("button", { class: "primary", type: "submit" }, "Sign in")));
  const why = signInReason;
  signInReason = null;
  const next = params.get("next") || "";
  show(
    h("h1", {}, "Sign in"),
    why ? h("div", { class: "notice" }, why) : null,
    h("p", { class: "muted" }, "The key is kept in this browser tab's session storage only, and is sent to this server alone, in the Authorization header."),
    form, status,
  );
  input.focus();
}

// ---------- accounts and streams ----------

async function accountsPage(signal) {
  crumbs(["accounts"]);
  const r = await api("GET", "/api/accounts", { signal });
  const accounts = r.body;
  if (accounts.length === 1 && sessionStorage.getItem(KEY)) {
    location.replace(link("account", accounts[0].name));
    return;
  }
  show(
    h("h1", {}, "Accounts"),
    accounts.length
      ? h("table", { id: "accounts" },
          h("tr", {}, h("th", {}, "account"), h("th", { class: "num" }, "streams"), h("th", { class: "num" }, "events")),
          accounts.map((a) => h("tr", {},
            h("td", {}, h("a", { href: link("account", a.name) }, a.name)),
            h("td", { class: "num" }, a.streams),
            h("td", { class: "num" }, a.events))))
      : h("p", { class: "muted" }, "No accounts yet. A POST of an event creates one on an open server: curl -d '{}' -H 'Event-Type: hello' localhost:8080/acme/first"),
  );
}

async function streamsPage(acct, params, signal) {
  crumbs(["accounts", "#/"], [acct]);
  const after = params.get("after") || "";
  const q = new URLSearchParams({ limit: PAGE });
  if (after) q.set("after", after);
  const r = await api("GET", `${urlOf(acct)}?${q}`, { signal });
  const next = nextLink(r.headers);
  const nextAfter = next ? new URL(next, location.href).searchParams.get("after") : null;
  show(
    h("h1", {}, acct),
    h("table", { id: "streams" },
      h("tr", {}, h("th", {}, "stream"), h("th", {}, "kind"), h("th", { class: "num" }, "events"), h("th", {}, "created")),
      r.body.map((s) => h("tr", {},
        h("td", {}, h("a", { href: link("stream", `${acct}/${s.name}`) }, s.name)),
        h("td", {}, s.factory ? "factory" : "stream"),
        h("td", { class: "num" }, s.events),
        h("td", {}, when(s.createdAt))))),
    r.body.length ? null : h("p", { class: "muted" }, "No streams yet."),
    h("div", { class: "bar" },
      after ? h("a", { href: link("account", acct) }, "« first") : null,
      nextAfter ? h("a", { href: link("account", acct) + "?after=" + encodeURIComponent(nextAfter), id: "next" }, "next »") : null),
  );
}

function splitPath(path) {
  const slash = path.indexOf("/");
  const acct = slash < 0 ? path : path.slice(0, slash);
  const rest = slash < 0 ? null : path.slice(slash + 1);
  const paren = rest === null ? -1 : rest.indexOf("(");
  const stream = rest === null ? null : paren < 0 ? rest : rest.slice(0, paren);
  const args = paren < 0 ? null : rest.slice(paren);
  if (!NAME.test(acct) || (stream !== null && !/^[A-Za-z0-9_-]{1,64}(@[0-9]+)?$/.test(stream)) ||
      (args !== null && !/^\(.*\)$/s.test(args))) {
    throw new Error(`"${path}" is not a stream: it is account/stream or account/stream(args)`);
  }
  return { acct, stream, args, base: `${acct}/${stream}` };
}

const TABS = ["events", "live", "substreams", "reducers", "logs", "pipes", "webhooks", "types", "settings"];

async function streamPage(path, params, signal) {
  const p = splitPath(path);
  const tab = params.get("tab") || "events";
  crumbs(["accounts", "#/"], [p.acct, link("account", p.acct)],
    [p.stream, link("stream", p.base)], p.args ? [p.args] : null);
  const factory = await isFactory(p.base, signal);
  const tabs = TABS.filter((t) => t !== "substreams" || (factory && !p.args));
  const body = h("section", { id: "tab-body" });
  show(
    h("h1", {}, path, factory && !p.args ? h("span", { class: "muted" }, " (factory)") : null),
    h("nav", { class: "tabs" }, tabs.map((t) =>
      h("a", { href: link("stream", path) + "?tab=" + t, class: t === tab ? "on" : "", id: "tab-" + t }, t))),
    body,
  );
  const put = (...nodes) => body.replaceChildren(...nodes.flat().filter(Boolean));
  const views = { events: eventsTab, live: liveTab, substreams: substreamsTab, reducers: reducersTab,
    logs: logsTab, pipes: pipesTab, webhooks: webhooksTab, types: typesTab, settings: settingsTab };
  const view = views[tab];
  if (!view) return put(errorBox(new Error(`no tab "${tab}"`)));
  try {
    await view(path, p, params, put, signal, factory);
  } catch (e) {
    if (!signal.aborted) put(errorBox(e));
  }
}

/** Whether a stream is a factory: only a factory lists substreams (a listing open
 * to whoever may read it, unlike the settings). */
async function isFactory(base, signal) {
  try {
    await api("GET", `${urlOf(base)}/substreams?limit=1`, { signal });
    return true;
  } catch (e) {
    if (signal.aborted || e.status === 401) throw e;
    return false;
  }
}

/** The number of events a (sub)stream read `url` (a URL without a query) has,
 * found by halving with one-event reads (`from=i&limit=1`), so a stream of millions
 * never loads whole. */
async function countEvents(url, signal) {
  const has = async (i) => {
    const r = await api("GET", `${url}?from=${i}&limit=1`, { signal, headers: { Accept: "application/json" } });
    return r.body.length > 0;
  };
  if (!(await has(0))) return 0;
  let lo = 0, hi = 1;
  while (await has(hi)) { lo = hi; hi *= 2; }
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    if (await has(mid)) lo = mid; else hi = mid;
  }
  return hi;
}

function eventRows(events, fallbackPath) {
  return events.map((e) => {
    const where = e.stream || fallbackPath;
    const href = link("event", where, e.index);
    return h("tr", { class: "click", onclick: () => { location.hash = href; } },
      h("td", { class: "num" }, h("a", { href }, e.index)),
      h("td", {}, e.stream && e.stream !== fallbackPath ? e.stream : ""),
      h("td", {}, e.type),
      h("td", {}, when(e.timestamp)),
      h("td", { class: "data" }, e.encoding === "base64" ? `(${e.contentType}, base64)` : preview(e.data)));
  });
}

function eventTable(events, path, id) {
  return h("table", { id },
    h("tr", {}, h("th", { class: "num" }, "index"), h("th", {}, "substream"), h("th", {}, "type"),
      h("th", {}, "timestamp"), h("th", {}, "data")),
    eventRows(events, path));
}

async function eventsTab(path, p, params, put, signal, factory) {
  const selector = params.get("sel") || "";
  const from = params.get("from");
  const after = params.get("after");
  const whole = factory && !p.args;
  const q = new URLSearchParams(selector);
  q.delete("token"); // credentials go in the header, never in a link
  q.set("limit", PAGE);
  if (from !== null && !whole) q.set("from", from);
  if (after !== null && whole) q.set("after", after);
  const r = await api("GET", `${urlOf(path)}?${q}`, { signal, headers: { Accept: "application/json" } });
  const next = nextLink(r.headers);
  const here = (extra) => {
    const s = new URLSearchParams({ tab: "events" });
    if (selector) s.set("sel", selector);
    for (const [k, v] of Object.entries(extra)) s.set(k, v);
    return link("stream", path) + "?" + s;
  };
  const selInput = h("input", { type: "text", id: "selector", class: "wide", value: selector,
    placeholder: "selector, e.g. type=click&since=2026-01-01" });
  const jump = h("input", { type: "text", id: "jump", size: 8, placeholder: "index" });
  const count = h("span", { class: "muted", id: "count" });
  const nav = h("div", { class: "bar" });
  if (next) {
    const u = new URL(next, location.href).searchParams;
    const nextArgs = whole ? { after: u.get("after") } : { from: u.get("from") };
    nav.append(h("a", { href: here(nextArgs), id: "next" }, "next »"));
  }
  if (from !== null || after !== null) nav.prepend(h("a", { href: here({}), id: "first" }, "« first"));
  if (!whole && !selector) {
    nav.append(h("button", { id: "last", onclick: async () => {
      const n = await countEvents(urlOf(path), signal);
      count.textContent = `${n} events`;
      location.hash = here({ from: Math.max(0, n - PAGE) });
    } }, "last page"));
  }
  put(
    h("form", { class: "bar", onsubmit: (ev) => {
      ev.preventDefault();
      const s = new URLSearchParams({ tab: "events" });
      if (selInput.value.trim()) s.set("sel", selInput.value.trim());
      if (jump.value.trim() && !whole) s.set("from", jump.value.trim());
      location.hash = link("stream", path) + "?" + s;
    } }, selInput, whole ? null : jump, h("button", { type: "submit" }, "Show"), count),
    r.body.length ? eventTable(r.body, path, "events") : h("p", { class: "muted", id: "no-events" }, "No events here."),
    nav,
  );
}

async function liveTab(path, p, params, put, signal) {
  const selector = params.get("sel") || "";
  const dot = h("span", { class: "live-dot" });
  const state = h("span", { class: "muted", id: "live-state" }, "connecting…");
  const rows = h("tbody", { id: "live-rows" });
  const table = h("table", { id: "live" },
    h("thead", {}, h("tr", {}, h("th", { class: "num" }, "index"), h("th", {}, "substream"), h("th", {}, "type"),
      h("th", {}, "timestamp"), h("th", {}, "data"))), rows);
  put(h("div", { class: "bar" }, dot, state, selector ? h("code", {}, selector) : null),
    h("p", { class: "muted" }, "New events appear at the top as they are appended."), table);
  const q = new URLSearchParams(selector);
  q.delete("token");
  q.set("data", "true");
  follow(`${urlOf(path)}?${q}`, signal, (ev) => {
    if (ev.event === "eddy.splice") {
      rows.prepend(h("tr", {}, h("td", { colspan: 5, class: "notice" }, "The stream's history was spliced: indexes start again at 0.")));
      return;
    }
    const e = ev.data;
    if (!e || typeof e !== "object") return;
    rows.prepend(...eventRows([e], path));
    while (rows.children.length > 200) rows.lastChild.remove();
  }, (on, why) => {
    dot.classList.toggle("on", on);
    state.textContent = on ? "live" : why;
  });
}

async function substreamsTab(path, p, params, put, signal) {
  const after = params.get("after");
  const q = new URLSearchParams({ limit: PAGE });
  if (after) q.set("after", after);
  const r = await api("GET", `${urlOf(path)}/substreams?${q}`, { signal });
  const next = nextLink(r.headers);
  const nextAfter = next ? new URL(next, location.href).searchParams.get("after") : null;
  put(
    h("table", { id: "substreams" },
      h("tr", {}, h("th", {}, "substream"), h("th", { class: "num" }, "events"), h("th", { class: "num" }, "last index"), h("th", {}, "last event")),
      r.body.map((s) => h("tr", {},
        h("td", {}, h("a", { href: link("stream", s.stream) }, s.args)),
        h("td", { class: "num" }, s.events), h("td", { class: "num" }, s.lastIndex), h("td", {}, when(s.lastTimestamp))))),
    nextAfter ? h("div", { class: "bar" }, h("a", { id: "next", href: link("stream", path) + "?" + new URLSearchParams({ tab: "substreams", after: nextAfter }) }, "next »")) : null,
  );
}

function statusCell(s) {
  return h("span", { class: "status-" + s }, s);
}

async function reducersTab(path, p, params, put, signal) {
  const r = await api("GET", `${urlOf(p.base)}/reducers`, { signal });
  put(
    h("div", { class: "bar" }, h("a", { href: link("new-reducer", p.base), id: "new-reducer" }, "+ deploy a reducer")),
    r.body.length
      ? h("table", { id: "reducers" },
          h("tr", {}, h("th", {}, "reducer"), h("th", {}, "status"), h("th", { class: "num" }, "index"),
            h("th", { class: "num" }, "lag"), h("th", { class: "num" }, "errors"), h("th", {}, "selector")),
          r.body.map((x) => h("tr", {},
            h("td", {}, h("a", { href: link("reducer", path, x.name) }, x.name)),
            h("td", {}, statusCell(x.status), x.halted ? h("div", { class: "muted" }, x.halted) : null),
            h("td", { class: "num" }, x.index ?? ""), h("td", { class: "num" }, x.lag),
            h("td", { class: "num" }, x.errors), h("td", {}, h("code", {}, x.selector || "")))))
      : h("p", { class: "muted" }, "No reducers on this stream yet."),
  );
}

function logTable(entries, id) {
  return h("table", { id },
    h("tr", {}, h("th", { class: "num" }, "index"), h("th", {}, "level"), h("th", {}, "time"), h("th", {}, "entry")),
    entries.map((e) => {
      const d = e.data && typeof e.data === "object" ? e.data : { message: e.data };
      return h("tr", {},
        h("td", { class: "num" }, e.index), h("td", { class: "status-" + (e.type === "error" ? "halted" : "running") }, e.type),
        h("td", {}, when(e.timestamp)),
        h("td", {}, h("div", {}, [d.reducer, d.index !== undefined ? `@${d.index}` : null].filter((x) => x !== undefined && x !== null).join(" "), " ", d.message ?? preview(d)),
          d.stack ? h("pre", {}, d.stack) : null));
    }));
}

async function logsTab(path, p, params, put, signal) {
  const logs = `${urlOf(p.base)}/logs`;
  // the newest page first, unless a page was asked for
  let from = Number(params.get("from"));
  if (!params.has("from") || !Number.isSafeInteger(from) || from < 0) {
    from = Math.max(0, (await countEvents(logs, signal)) - PAGE);
  }
  const r = await api("GET", `${logs}?${new URLSearchParams({ limit: PAGE, from })}`, { signal });
  const page = (f) => link("stream", path) + "?" + new URLSearchParams({ tab: "logs", from: Math.max(0, f) });
  const live = h("tbody", { id: "live-logs" });
  put(
    h("div", { class: "bar" },
      from > 0 ? h("a", { id: "older", href: page(from - PAGE) }, "« older") : null,
      nextLink(r.headers) ? h("a", { id: "next", href: page(from + PAGE) }, "newer »") : null),
    r.body.length ? logTable(r.body, "logs") : h("p", { class: "muted" }, "The log is empty."),
    h("h2", {}, "New entries"), h("table", {}, live),
  );
  follow(`${urlOf(p.base)}/logs?data=true`, signal, (ev) => {
    if (ev.data && typeof ev.data === "object") live.prepend(...logTable([ev.data], "").querySelectorAll("tr:not(:first-child)"));
  }, () => {});
}

async function pipesTab(path, p, params, put, signal) {
  const r = await api("GET", `${urlOf(path)}/pipes`, { signal });
  const out = h("div", {});
  const dest = h("input", { type: "text", id: "pipe-to", placeholder: "to: account/stream" });
  const sel = h("input", { type: "text", id: "pipe-selector", class: "wide", placeholder: "selector (optional), e.g. type=order" });
  const code = h("textarea", { id: "pipe-code", rows: 4, class: "mono full",
    placeholder: "optional: export default (event) => ({ type: event.type, data: event.data })  (empty: copy events unchanged)" });
  put(
    r.body.length
      ? h("table", { id: "pipes" },
          h("tr", {}, h("th", {}, "from"), h("th", {}, "to"), h("th", {}, "mode"), h("th", {}, "status"),
            h("th", { class: "num" }, "piped"), h("th", { class: "num" }, "errors"), h("th", {}, "selector"), h("th", {}, "")),
          r.body.map((x) => h("tr", {},
            h("td", {}, x.origin), h("td", {}, h("a", { href: link("stream", x.destination) }, x.destination)),
            h("td", {}, x.mode), h("td", {}, statusCell(x.status), x.lastError ? h("div", { class: "muted" }, x.lastError) : null),
            h("td", { class: "num" }, x.piped), h("td", { class: "num" }, x.errors),
            h("td", {}, h("code", {}, x.selector || "")),
            h("td", {}, h("button", { onclick: async (ev) => {
              const logs = await api("GET", `${urlOf(x.origin)}/logs/pipe${urlOf(x.destination)}?limit=${PAGE}`, { signal });
              ev.target.replaceWith(logs.body.length ? logTable(logs.body, "pipe-logs") : h("span", { class: "muted" }, "no log entries"));
            } }, "log"), " ", confirmButton("Delete", { class: "delete" }, async () => {
              try {
                await api("DELETE", `${urlOf(x.origin)}/pipe${urlOf(x.destination)}`);
                await pipesTab(path, p, params, put, signal);
              } catch (e) { out.replaceChildren(errorBox(e)); }
            })))))
      : h("p", { class: "muted" }, "No pipes from this stream."),
    h("h2", {}, "Add or replace a pipe"),
    h("form", { onsubmit: async (ev) => {
      ev.preventDefault();
      try {
        const target = urlOf(dest.value.trim());
        const body = code.value.trim();
        await api("PUT", `${urlOf(path)}/pipe${target}${sel.value.trim() ? "?" + new URLSearchParams(sel.value.trim()) : ""}`,
          body ? { body, headers: { "Content-Type": "application/javascript" } } : {});
        await pipesTab(path, p, params, put, signal);
      } catch (e) { out.replaceChildren(errorBox(e)); }
    } },
    h("div", { class: "bar" }, dest, sel, h("button", { type: "submit" }, "Save")), code),
    out,
  );
}

async function webhooksTab(path, p, params, put, signal) {
  const r = await api("GET", `${urlOf(path)}/webhooks`, { signal });
  const out = h("div", { id: "webhook-result" });
  const act = async (id, action) => {
    try {
      await api("POST", `${urlOf(path)}/webhooks/${encodeURIComponent(id)}/${action}`);
      await webhooksTab(path, p, params, put, signal);
    } catch (e) { out.replaceChildren(errorBox(e)); }
  };
  const replayForm = (id) => {
    const from = h("input", { type: "text", size: 6, placeholder: "from", class: "replay-from" });
    const to = h("input", { type: "text", size: 6, placeholder: "to" });
    return h("form", { class: "bar replay", onsubmit: async (ev) => {
      ev.preventDefault();
      try {
        const q = new URLSearchParams({ from: from.value.trim() });
        if (to.value.trim()) q.set("to", to.value.trim());
        await api("POST", `${urlOf(path)}/webhooks/${encodeURIComponent(id)}/replay?${q}`);
        out.replaceChildren(h("div", { class: "notice" }, `Replay of ${id} from index ${from.value.trim()} started.`));
      } catch (e) { out.replaceChildren(errorBox(e)); }
    } }, from, to, h("button", { type: "submit" }, "Replay"));
  };
  const url = h("input", { type: "url", id: "webhook-url", class: "wide", placeholder: "https://receiver.example/hook" });
  const sel = h("input", { type: "text", id: "webhook-selector", placeholder: "selector (optional)" });
  const data = h("input", { type: "checkbox", id: "webhook-data" });
  put(
    out,
    r.body.length
      ? h("table", { id: "webhooks" },
          h("tr", {}, h("th", {}, "id"), h("th", {}, "url"), h("th", {}, "status"), h("th", { class: "num" }, "failures"),
            h("th", {}, "last error"), h("th", {}, "")),
          r.body.map((w) => h("tr", { id: "webhook-" + w.id },
            h("td", { class: "mono" }, w.id), h("td", {}, w.url, w.selector ? h("div", {}, h("code", {}, w.selector)) : null),
            h("td", { class: "webhook-status" }, statusCell(w.status), w.pausedReason ? h("div", { class: "muted" }, w.pausedReason) : null),
            h("td", { class: "num" }, w.failures), h("td", {}, w.lastError || ""),
            h("td", {}, w.status === "paused"
              ? h("button", { class: "resume", onclick: () => act(w.id, "resume") }, "Resume")
              : h("button", { class: "pause", onclick: () => act(w.id, "pause") }, "Pause"),
              " ", replayForm(w.id),
              " ", confirmButton("Delete", { class: "delete" }, async () => {
                try {
                  await api("DELETE", `${urlOf(path)}/webhooks/${encodeURIComponent(w.id)}`);
                  await webhooksTab(path, p, params, put, signal);
                } catch (e) { out.replaceChildren(errorBox(e)); }
              })))))
      : h("p", { class: "muted" }, "No webhooks on this stream."),
    h("h2", {}, "Add a webhook"),
    h("form", { class: "bar", onsubmit: async (ev) => {
      ev.preventDefault();
      try {
        const body = { url: url.value.trim(), data: data.checked };
        if (sel.value.trim()) body.selector = sel.value.trim();
        const made = await api("POST", `${urlOf(path)}/webhooks`, { body });
        await webhooksTab(path, p, params, put, signal);
        document.getElementById("webhook-result").replaceChildren(h("div", { class: "secret" },
          `Webhook ${made.body.id} added. Its signing secret is shown this once: ${made.body.secret}`));
      } catch (e) { out.replaceChildren(errorBox(e)); }
    } }, url, sel, h("label", {}, data, " whole events"), h("button", { type: "submit" }, "Add")),
  );
}

async function typesTab(path, p, params, put, signal) {
  const r = await api("GET", `${urlOf(p.base)}/types`, { signal });
  const name = h("input", { type: "text", id: "type-name", placeholder: "event type" });
  const schema = h("textarea", { id: "type-schema", rows: 6, class: "mono full",
    placeholder: '{"properties": {"url": {"type": "string"}}}' });
  const out = h("div", {});
  put(
    r.body.length
      ? h("div", { class: "grid", id: "types" }, r.body.map((t) => h("div", {},
          h("h2", {}, t.name), h("div", { class: "muted" }, "JSON Type Definition"), h("pre", {}, pretty(t.schema)),
          h("div", { class: "muted" }, "TypeScript"), h("pre", { class: "ts" }, t.typescript))))
      : h("p", { class: "muted" }, "No event types: events of any shape are accepted."),
    h("h2", {}, "Define a type"),
    h("form", { onsubmit: async (ev) => {
      ev.preventDefault();
      try {
        await api("PUT", `${urlOf(p.base)}:${encodeURIComponent(name.value.trim())}`, { body: schema.value, headers: { "Content-Type": "application/json" } });
        await typesTab(path, p, params, put, signal);
      } catch (e) { out.replaceChildren(errorBox(e)); }
    } }, h("div", { class: "bar" }, name, h("button", { type: "submit" }, "Save")), schema),
    out,
  );
}

async function settingsTab(path, p, params, put, signal) {
  const r = await api("GET", `${urlOf(p.base)}/settings`, { signal });
  const doc = Object.assign({}, r.body);
  const hadSecret = "hmacSecret" in doc;
  delete doc.hmacSecret;
  const text = h("textarea", { id: "settings", rows: 18, class: "mono full" }, pretty(doc));
  const out = h("div", {});
  put(
    h("p", { class: "muted" }, "Saving sends the fields below as a PATCH: a field set to null returns to its default."),
    hadSecret ? h("p", { class: "muted" }, "The factory's HMAC secret is not shown here; read it with curl …/settings, or set \"hmacSecret\": null to rotate it.") : null,
    h("form", { onsubmit: async (ev) => {
      ev.preventDefault();
      try {
        const saved = await api("PATCH", `${urlOf(p.base)}/settings`, { body: text.value, headers: { "Content-Type": "application/json" } });
        delete saved.body.hmacSecret;
        text.value = pretty(saved.body);
        out.replaceChildren(h("div", { class: "notice", id: "settings-saved" }, "Saved."));
      } catch (e) { out.replaceChildren(errorBox(e)); }
    } }, text, h("div", { class: "bar" }, h("button", { class: "primary", type: "submit" }, "Save"))),
    out,
  );
}

// ---------- one event ----------

async function eventPage(path, index, signal) {
  const p = splitPath(path);
  crumbs(["accounts", "#/"], [p.acct, link("account", p.acct)], [p.stream, link("stream", p.base)],
    p.args ? [p.args, link("stream", path)] : null, [index]);
  const r = await api("GET", `${urlOf(path)}/${encodeURIComponent(index)}`, { signal });
  const raw = await fetch(`${urlOf(path)}/${encodeURIComponent(index)}?raw`, { headers: authHeaders(), signal });
  const rawHeaders = [];
  raw.headers.forEach((v, k) => { if (k === "content-type" || k.startsWith("event-")) rawHeaders.push([k, v]); });
  const rawType = raw.headers.get("content-type") || "";
  const textual = /json|text|xml|csv|form/.test(rawType);
  const rawBody = !raw.ok ? `(the raw form could not be read: the server answered ${raw.status})`
    : textual ? await raw.text() : `(${(await raw.arrayBuffer()).byteLength} bytes of ${rawType})`;
  const i = Number(index);
  show(
    h("h1", {}, `${path} / ${index}`),
    h("div", { class: "bar" },
      i > 0 ? h("a", { href: link("event", path, i - 1) }, "« previous") : null,
      h("a", { href: link("event", path, i + 1), id: "next-event" }, "next »")),
    h("div", { class: "grid" },
      h("div", {}, h("h2", {}, "Envelope"), h("pre", { id: "envelope" }, pretty(r.body))),
      h("div", {}, h("h2", {}, "Headers"),
        h("dl", { class: "kv", id: "raw-headers" }, rawHeaders.map(([k, v]) => [h("dt", {}, k), h("dd", { class: "mono" }, v)])),
        h("h2", {}, "Data as sent"), h("pre", { id: "raw" }, rawBody))),
  );
}

// ---------- reducers ----------

async function reducerPage(path, name, signal) {
  const p = splitPath(path);
  crumbs(["accounts", "#/"], [p.acct, link("account", p.acct)], [p.stream, link("stream", p.base)],
    p.args ? [p.args, link("stream", path)] : null, ["reducers", link("stream", path) + "?tab=reducers"], [name || "new"]);
  let source = "export default (state = { count: 0 }, event) => {\n  state.count++;\n  return state;\n};\n";
  let language = "javascript";
  if (name) {
    const r = await fetch(`${urlOf(p.base)}.${encodeURIComponent(name)}?source`, { headers: authHeaders(), signal });
    if (r.ok) {
      source = await r.text();
      if ((r.headers.get("content-type") || "").includes("typescript")) language = "typescript";
    } else if (r.status !== 404) {
      let msg = `the server answered ${r.status}`;
      try { msg = (await r.json()).error || msg; } catch { /* not JSON */ }
      throw new Error(msg);
    }
  }
  const nameInput = name ? null : h("input", { type: "text", id: "reducer-name", placeholder: "name, e.g. count" });
  const lang = h("select", { id: "language" },
    h("option", { value: "javascript" }, "JavaScript"), h("option", { value: "typescript" }, "TypeScript"));
  lang.value = language;
  const ed = editor(source);
  const result = h("div", { id: "deploy-result" });
  const status = h("div", { id: "reducer-status" });
  const stateView = h("pre", { id: "state" }, "…");
  const stateIndex = h("span", { class: "muted", id: "state-index" });
  const dot = h("span", { class: "live-dot" });
  const deploy = async () => {
    const n = name || nameInput.value.trim();
    if (!n) { result.replaceChildren(errorBox(new Error("the reducer needs a name"))); return; }
    ed.mark(null);
    try {
      const r = await api("PUT", `${urlOf(p.base)}.${encodeURIComponent(n)}`, {
        body: ed.value(), headers: { "Content-Type": lang.value === "typescript" ? "application/typescript" : "application/javascript" } });
      result.replaceChildren(h("div", { class: "notice", id: "deployed" },
        r.body.rebuilding ? "Deployed: the new code is folding the stream from index 0; the old state answers until it catches up." : "Deployed."));
      if (!name) location.hash = link("reducer", path, n);
    } catch (e) {
      const line = e.body && e.body.line;
      const where = line && !/\bline\b/.test(e.message) ? ` (line ${line}${e.body.column ? ", column " + e.body.column : ""})` : "";
      result.replaceChildren(h("div", { class: "error", id: "deploy-error", role: "alert" }, e.message + where));
      if (e.body && e.body.line) ed.mark(e.body.line, e.body.column);
    }
  };
  show(
    h("h1", {}, name ? `${path}.${name}` : `A new reducer on ${p.base}`),
    name ? h("div", { class: "grid" },
      h("div", {}, h("h2", {}, "State ", dot, " ", stateIndex), stateView),
      h("div", {}, h("h2", {}, "Status"), status)) : null,
    h("h2", {}, name ? "Code" : "Deploy"),
    h("div", { class: "bar" }, nameInput, lang, h("button", { class: "primary", id: "deploy", onclick: deploy }, "Deploy"),
      name ? confirmButton("Delete", { id: "delete-reducer" }, async () => {
        try {
          await api("DELETE", `${urlOf(p.base)}.${encodeURIComponent(name)}`);
          location.hash = link("stream", p.base) + "?tab=reducers";
        } catch (e) { result.replaceChildren(errorBox(e)); }
      }) : null),
    result,
    ed.el,
  );
  if (!name) return;
  const refresh = async () => {
    try {
      const r = await api("GET", `${urlOf(p.base)}/reducers`, { signal });
      const x = r.body.filter((y) => y.name === name);
      status.replaceChildren(x.length ? h("table", {},
        h("tr", {}, h("th", {}, "version"), h("th", {}, "status"), h("th", { class: "num" }, "index"),
          h("th", { class: "num" }, "lag"), h("th", { class: "num" }, "errors")),
        x.map((y) => h("tr", {}, h("td", { class: "mono" }, y.codeHash), h("td", {}, statusCell(y.status), y.halted ? h("div", {}, y.halted) : null),
          h("td", { class: "num" }, y.index ?? ""), h("td", { class: "num" }, y.lag), h("td", { class: "num" }, y.errors))))
        : h("p", { class: "muted" }, "Not deployed."),
        h("p", {}, h("a", { href: link("stream", path) + "?tab=logs" }, "logs »")));
    } catch (e) { if (!signal.aborted) status.replaceChildren(errorBox(e)); }
  };
  refresh();
  const timer = setInterval(refresh, 2000);
  signal.addEventListener("abort", () => clearInterval(timer));
  const url = `${urlOf(path)}.${encodeURIComponent(name)}`;
  if (!p.args && (await isFactory(p.base, signal))) {
    // a factory's reducer: the states of its substreams, the first page now, then
    // each one as it changes (the 200 most recently changed are kept on the page)
    const rows = h("tbody", {});
    const byStream = new Map();
    const put = (d) => {
      if (!d || typeof d !== "object" || typeof d.stream !== "string") return;
      const cells = [h("td", {}, h("a", { href: link("reducer", d.stream, name) }, d.stream)),
        h("td", { class: "num" }, d.index), h("td", { class: "data" }, preview(d.state))];
      let tr = byStream.get(d.stream);
      if (tr) { tr.replaceChildren(...cells); byStream.delete(d.stream); }
      else tr = h("tr", {}, cells);
      byStream.set(d.stream, tr);
      rows.prepend(tr);
      while (byStream.size > 200) {
        const [oldest, row] = byStream.entries().next().value;
        row.remove();
        byStream.delete(oldest);
      }
    };
    const first = await api("GET", `${url}?limit=${PAGE}`, { signal });
    first.body.slice().reverse().forEach(put);
    stateView.replaceWith(h("table", { id: "states" },
      h("thead", {}, h("tr", {}, h("th", {}, "substream"), h("th", { class: "num" }, "index"), h("th", {}, "state"))), rows));
    stateIndex.textContent = "by substream, the latest changed first";
    follow(url, signal, (ev) => put(ev.data), (on, why) => { dot.classList.toggle("on", on); if (!on) stateIndex.textContent = why || ""; });
    return;
  }
  follow(url, signal, (ev) => {
    stateView.textContent = pretty(ev.data);
    stateIndex.textContent = ev.id === "-1" ? "no events folded yet" : `at index ${ev.id}`;
  }, (on, why) => { dot.classList.toggle("on", on); if (!on) stateIndex.textContent = why || ""; });
}

/** A button that acts on its second click (the first asks to confirm). */
function confirmButton(label, attrs, action) {
  const b = h("button", attrs, label);
  let armed = false;
  b.addEventListener("click", async () => {
    if (!armed) { armed = true; b.textContent = `Really ${label.toLowerCase()}?`; return; }
    b.disabled = true;
    try { await action(); } finally { b.disabled = false; armed = false; b.textContent = label; }
  });
  return b;
}

/** A code editor: a textarea with line numbers; mark(line) highlights a line. */
function editor(text) {
  const gutter = h("div", { class: "gutter", "aria-hidden": "true" });
  const area = h("textarea", { id: "code", spellcheck: "false", autocapitalize: "off", wrap: "off" });
  area.value = text;
  let bad = null;
  const lines = () => {
    const n = area.value.split("\n").length;
    if (gutter.children.length !== n) {
      gutter.replaceChildren(...Array.from({ length: n }, (_, i) => h("div", { class: i + 1 === bad ? "bad" : "" }, i + 1)));
    }
    gutter.scrollTop = area.scrollTop;
  };
  area.addEventListener("input", () => {
    // an edit moves lines: the mark of the last error no longer points anywhere
    if (bad !== null) { bad = null; gutter.replaceChildren(); }
    lines();
  });
  area.addEventListener("scroll", () => { gutter.scrollTop = area.scrollTop; });
  area.addEventListener("keydown", (ev) => {
    if (ev.key === "Tab") {
      ev.preventDefault();
      area.setRangeText("  ", area.selectionStart, area.selectionEnd, "end");
      lines();
    }
  });
  const el = h("div", { class: "editor" }, gutter, area);
  lines();
  return {
    el,
    value: () => area.value,
    mark(line, column) {
      bad = line;
      gutter.replaceChildren();
      lines();
      if (!line) return;
      const all = area.value.split("\n");
      let start = 0;
      for (let i = 0; i < line - 1 && i < all.length; i++) start += all[i].length + 1;
      const text = all[line - 1] || "";
      const end = start + text.length;
      // the server counts columns in characters, the textarea in UTF-16 units
      const before = Array.from(text).slice(0, Math.max(0, (column || 1) - 1)).join("").length;
      area.focus();
      area.setSelectionRange(start + before, end);
      const lh = parseFloat(getComputedStyle(area).lineHeight) || 18;
      area.scrollTop = Math.max(0, (line - 3) * lh);
      gutter.scrollTop = area.scrollTop;
    },
  };
}
