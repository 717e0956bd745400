#!/usr/bin/env bash
# Access control with curl, against a server started with an admin token:
#   export EDDY_ADMIN_TOKEN=$(openssl rand -hex 32)
#   cargo run --release -- serve --data ./eddy-secure    # in one terminal
#   bash examples/walkthrough-access.sh                   # in another, same token
# EDDY_URL is the server (default http://127.0.0.1:8080); every run makes a new
# account (shop-<seconds>). Needs openssl for the HMAC token. Each step says what it
# does, shows the answer, and stops the script if the answer is not the one expected.
# tests/api/walkthrough.rs runs it against a fresh server.
set -euo pipefail
B=${EDDY_URL:-http://127.0.0.1:8080}
A=${EDDY_ACCOUNT:-shop-$(date +%s)}
: "${EDDY_ADMIN_TOKEN:?export the token the server was started with}"

step() { printf '\n== %s\n' "$*"; }
# call CURL-ARGS...: curl, failing on an error status; -g lets URLs hold [ ] as they are
call() { out=$(curl -sS -g --fail-with-body "$@") || { echo "$out"; exit 1; }; echo "$out"; }
# status CURL-ARGS...: curl, printing the answer and its status whatever it is
status() { out=$(curl -sS -g -w ' %{http_code}' "$@"); echo "$out"; }
expect() { [[ $out == *"$1"* ]] || { echo "expected $1" >&2; exit 1; }; }
field() { sed -n "s/.*\"$1\":\"\([^\"]*\)\".*/\1/p" <<<"$out"; }
J='Content-Type: application/json'

step "the admin token creates an account; its first key is shown once"
call -X POST "$B/api/accounts" -H "Authorization: Bearer $EDDY_ADMIN_TOKEN" \
  -d "{\"name\": \"$A\"}"
K="Authorization: Bearer $(field key)"

step "without credentials an append is 401; with the account's key it is 201"
status -X POST "$B/$A/orders('customer-42')?event-type=order" -H "$J" -d '{"total": 3}'
expect ' 401'
call -X POST "$B/$A/orders('customer-42')?event-type=order" -H "$K" -H "$J" -d '{"total": 3}'
expect '"index":0'

step "a second key, listed, then deleted; a deleted key is 403"
call -X POST "$B/api/accounts/$A/keys" -H "$K"
K2="Authorization: Bearer $(field key)"
id2=$(field id)
call "$B/api/accounts/$A/keys" -H "$K"
expect "$id2"
status -X DELETE "$B/api/accounts/$A/keys/$id2" -H "$K"
expect ' 204'
status "$B/$A/orders" -H "$K2"
expect ' 403'

step "a public stream: anyone may read it"
call -X POST "$B/$A/news?event-type=post" -H "$K" -H "$J" -d '{"title": "hello"}'
call -X PATCH "$B/$A/news/settings" -H "$K" -d '{"public": {"read": true}}'
call "$B/$A/news"
expect '"title": "hello"'

step "an HMAC token, signed with the factory's secret, opens one substream"
call "$B/$A/orders/settings" -H "$K"
secret=$(field hmacSecret)
T=$(printf '%s' "/$A/orders('customer-42')" |
  openssl dgst -sha256 -hmac "$secret" -binary | base64 | tr '+/' '-_' | tr -d '=\n')
call -X POST "$B/$A/orders('customer-42')?event-type=order" -H "Authorization: HMAC $T" \
  -H "$J" -d '{"total": 5}'
expect '"index":1'
call "$B/$A/orders('customer-42')?token=$T"
expect '"total": 5'
status "$B/$A/orders('customer-7')?token=$T"
expect ' 403'

step "a rate limit and a blocklist on a factory"
call -X PUT "$B/$A/votes/settings" -H "$K" -d '{"factory": true,
  "rateLimit": {"perSecond": 1, "burst": 2},
  "blocklist": {"referers": ["https://spam.example/*"], "args": [["bot-*"]]}}'
status -X POST "$B/$A/votes('bot-1')?event-type=vote" -H "$K" -d '{}'
expect ' 403'
status -X POST "$B/$A/votes('poll')?event-type=vote" -H "$K" \
  -H 'Referer: https://spam.example/page' -d '{}'
expect ' 403'
for i in 1 2; do
  call -X POST "$B/$A/votes('poll')?event-type=vote" -H "$K" -d '{}'
done
status -X POST "$B/$A/votes('poll')?event-type=vote" -H "$K" -d '{}'
expect ' 429'

step "done: everything above is in the account $A"
