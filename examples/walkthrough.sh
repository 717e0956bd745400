#!/usr/bin/env bash
# A walk through eddy with curl, against a running open server (no admin token):
#   cargo run --release -- serve          # in one terminal
#   bash examples/walkthrough.sh          # in another
# EDDY_URL is the server (default http://127.0.0.1:8080). Every run works in a new
# account (demo-<seconds>), so it can be run again on the same server. Each step says
# what it does, shows the answer, and stops the script if the answer is not the one
# expected. tests/api/walkthrough.rs runs it against a fresh server.
set -euo pipefail
B=${EDDY_URL:-http://127.0.0.1:8080}
A=${EDDY_ACCOUNT:-demo-$(date +%s)}

step() { printf '\n== %s\n' "$*"; }
# call CURL-ARGS...: curl, failing on an error status; -g lets URLs hold [ ] as they are
call() { out=$(curl -sS -g --fail-with-body "$@") || { echo "$out"; exit 1; }; echo "$out"; }
# expect TEXT: the last answer contains TEXT
expect() { [[ $out == *"$1"* ]] || { echo "expected $1" >&2; exit 1; }; }

step "append an event: the body is its data, the type comes from a header"
call -X POST "$B/$A/clicks" -H 'Event-Type: click' \
  -H 'Content-Type: application/json' -d '{"url": "/pricing", "button": "left"}'
expect '"index":0'

step "the type can also come from the path (or ?event-type=); any content type"
call -X POST "$B/$A/clicks:view" -H 'Content-Type: text/plain' -d 'hello'
expect '"index":1'

step "a retry with the same Event-Id is a duplicate; Expected-Index guards a race"
id=0b9e2a4c-6f7d-4f55-9b44-3c1d2e5f6a7b
call -X POST "$B/$A/clicks" -H 'Event-Type: click' -H 'Content-Type: application/json' \
  -H "Event-Id: $id" -H 'Expected-Index: 1' -d '{"url": "/docs"}'
expect '"index":2'
call -X POST "$B/$A/clicks" -H 'Event-Type: click' -H 'Content-Type: application/json' \
  -H "Event-Id: $id" -H 'Expected-Index: 1' -d '{"url": "/docs"}'
expect '"duplicate":true'
out=$(curl -sS -X POST "$B/$A/clicks" -H 'Event-Type: click' -H 'Expected-Index: 0' \
  -H 'Content-Type: application/json' -d '{"url": "/late"}' -w ' %{http_code}')
echo "$out"
expect '"lastIndex":2'
expect ' 409'

step "an atomic batch: all events are written or none"
call -X POST "$B/$A/clicks" -H 'Content-Type: application/vnd.eddy.events+json' -d '[
  {"type": "click", "data": {"url": "/a"}},
  {"type": "view", "data": "b", "contentType": "text/plain"}]'
expect '"first":3,"last":4,"count":2'

step "timestamps never go back in a stream: an older one is 409"
call -X POST "$B/$A/readings" -H 'Event-Type: reading' -H 'Content-Type: application/json' \
  -H 'Event-Timestamp: 2026-01-02T08:00:00Z' -d '{"celsius": 21.5}'
expect '"timestamp":1767340800000'
out=$(curl -sS -X POST "$B/$A/readings" -H 'Event-Type: reading' -w ' %{http_code}' \
  -H 'Event-Timestamp: 2026-01-01T08:00:00Z' -H 'Content-Type: application/json' -d '{}')
echo "$out"
expect ' 409'

step "NDJSON: each line is an event, durable and readable while the upload runs"
call -X POST "$B/$A/logs" -H 'Content-Type: application/x-ndjson' -H 'Event-Type: log' \
  -T - <<'NDJSON'
{"level": "info"}
{"level": "warn"}
NDJSON
expect '"count":2'

step "read: a JSON page (a Link header pages on), selected by type and index"
call -i "$B/$A/clicks?type=click,view&from=1&limit=2"
expect 'rel="next"'
expect '"index":2'

step "one event, by index (/clicks/0 or /clicks[0]), and its bytes as sent"
call "$B/$A/clicks[0]"
expect '"url": "/pricing"'
call -i "$B/$A/clicks/1?raw"
expect 'hello'

step "NDJSON, and a follow that ends at to=; wait= long-polls for what is not there yet"
call -H 'Accept: application/x-ndjson' "$B/$A/logs"
expect '"level": "warn"'
call -H 'Accept: application/x-ndjson' "$B/$A/clicks?follow=true&to=4&type=view"
expect '"index":4'
call "$B/$A/readings?since=2026-01-01T00:00:00Z&wait=1000"
expect '"celsius": 21.5'

step "Server-Sent Events: from=0 replays, then live (curl stops it after 2 s)"
out=$(curl -s -N --max-time 2 -H 'Accept: text/event-stream' "$B/$A/clicks?from=0" || true)
echo "$out"
expect 'event: view'

step "a stream factory: one substream per argument list, made by its first event"
call -X POST "$B/$A/orders('customer-42')" -H 'Event-Type: created' \
  -H 'Content-Type: application/json' -d '{"total": 12.5, "day": "mon"}'
call -X POST "$B/$A/orders('customer-7')" -H 'Event-Type: created' \
  -H 'Content-Type: application/json' -d '{"total": 30, "day": "tue"}'
call -X POST "$B/$A/orders('customer-42')" -H 'Event-Type: created' \
  -H 'Content-Type: application/json' -d '{"total": 7.5, "day": "tue"}'
expect '"index":1'
call "$B/$A/orders/substreams"
expect "customer-7"
call "$B/$A/orders?sub=('customer-4*')"
expect '"total": 7.5'

step "a JavaScript reducer folds the click events; min-index waits for index 4"
call -X PUT "$B/$A/clicks.pages?type=click" -H 'Content-Type: application/javascript' \
  --data-binary '
export default (state = { total: 0, pages: {} }, event) => {
  state.total++;
  state.pages[event.data.url] = (state.pages[event.data.url] ?? 0) + 1;
  return state;
};'
call -i "$B/$A/clicks.pages?min-index=4"
expect 'reducer-index: 4'
expect '"total":3'

step "a TypeScript reducer reading another reducer's state through current"
call -X PUT "$B/$A/clicks.tens" -H 'Content-Type: application/typescript' --data-binary \
  '(n: number = 0, e: unknown, i: number, current: any): number => current.pages.total * 10'
call "$B/$A/clicks.tens?min-index=4"
expect '30'
call "$B/$A/clicks/reducers"
expect '"pages"'

step "on a factory a reducer keeps one state per substream"
call -X PUT "$B/$A/orders.sum" --data-binary '(s = 0, e) => s + e.data.total'
call "$B/$A/orders('customer-42').sum?min-index=1"
expect '20'
call "$B/$A/orders.sum"
expect "customer-7"

step "a pipe maps each order into the factory by-day, one substream per day"
call -X PUT "$B/$A/orders/pipe/$A/by-day" -H 'Content-Type: application/javascript' \
  --data-binary '(e) => ({ type: "order", data: { total: e.data.total }, args: [e.data.day] })'
call "$B/$A/by-day('tue')?from=1&wait=5000"
expect '"origin":{"stream"'
call "$B/$A/orders/pipe/$A/by-day"
expect '"status":"running"'

step "an event type (JSON Type Definition): data that does not match is 400"
call -X PUT "$B/$A/signups:signup" -d '{
  "properties": {"email": {"type": "string", "metadata": {"pattern": "^[^@]+@[^@]+$"}},
                 "age": {"type": "uint8"}},
  "optionalProperties": {"plan": {"enum": ["free", "pro"]}}}'
out=$(curl -sS -X POST "$B/$A/signups:signup" -H 'Content-Type: application/json' \
  -d '{"email": "nobody", "age": "12"}' -w ' %{http_code}')
echo "$out"
expect '"instancePath":"/age"'
expect ' 400'
call -X POST "$B/$A/signups:signup" -H 'Content-Type: application/json' \
  -d '{"email": "ada@example.com", "age": 36, "plan": "pro"}'
expect '"index":0'
call "$B/$A/signups:signup.ts"
expect 'export interface Signup'

step "settings: a rate limit per substream, and the stream made public to read"
call -X PATCH "$B/$A/orders/settings" \
  -d '{"rateLimit": {"perSecond": 10, "burst": 20}, "public": {"read": true}}'
expect '"perSecond":10'

step "a webhook: signed POSTs of new events, in order, retried until a 2xx"
call -X POST "$B/$A/clicks/webhooks" \
  -d '{"url": "https://example.com/hook", "selector": "type=click"}'
expect '"secret":"whsec_'
hook=$(sed -n 's/.*"id":"\([^"]*\)".*/\1/p' <<<"$out")
call "$B/$A/clicks/webhooks"
call -X DELETE "$B/$A/clicks/webhooks/$hook"

step "the account: its streams, and every change made to it as events"
call "$B/$A"
expect '"by-day"'
call "$B/eddy/events($A)?type=reducer-deployed"
expect '"type":"reducer-deployed"'

step "the server: health and Prometheus metrics"
call "$B/healthz"
out=$(curl -sS "$B/metrics" | grep '^eddy_events_appended_total')
echo "$out"

step "done: everything above is in the account $A"
