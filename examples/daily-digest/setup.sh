#!/usr/bin/env bash
# Sets up the daily digest on a running eddy (see this directory's README.md):
#   1. deploys digest.js as the reducer acme/activity.digest
#   2. pipes the cron stream /eddy/cron('$CRON') into acme/activity
#
#   BASE  the server, default http://127.0.0.1:8080
#   CRON  the cron expression, default '0 0 * * *' (midnight UTC); 6 fields put the
#         seconds first, so CRON='*/10 * * * * *' closes a period every 10 s for a demo
#
# Running it again redeploys the reducer (its state is rebuilt from index 0; digests
# already sent are not sent again) and replaces the pipe's selector.
set -euo pipefail

BASE=${BASE:-http://127.0.0.1:8080}
CRON=${CRON:-0 0 * * *}
here=$(cd "$(dirname "$0")" && pwd)

# percent-encodes a cron expression for the URL path: spaces, and `/`, `?`, `#` which
# the expression may hold (`*/2`, `?`, `MON#1`) but a path may not carry as they are
urlencode() {
  local s=$1 out='' c i
  for ((i = 0; i < ${#s}; i++)); do
    c=${s:i:1}
    case $c in
      [A-Za-z0-9.~_*,-]) out+=$c ;;
      *) printf -v c '%%%02X' "'$c"; out+=$c ;;
    esac
  done
  printf '%s' "$out"
}

# -f: fail on an error status (after -S shows curl's message); -g: no [] {} globbing
curl_() { curl -sS -g --fail-with-body "$@"; echo; }

echo "== deploy the reducer acme/activity.digest"
curl_ -X PUT "$BASE/acme/activity.digest" \
  -H 'Content-Type: application/javascript' --data-binary "@$here/digest.js"

# a new pipe from a cron stream starts at the live end: only ticks from now on
echo "== pipe /eddy/cron('$CRON') into acme/activity"
curl_ -X PUT "$BASE/eddy/cron('$(urlencode "$CRON")')/pipe/acme/activity"

cat <<EOF
== done. Post events, then read the digests after the next tick ($CRON, UTC):
curl -X POST $BASE/acme/activity -H 'Event-Type: order' -H 'Content-Type: application/json' -d '{"amount": 12.5}'
curl $BASE/acme/activity.digest     # the current period so far
curl $BASE/acme/digests             # one digest event per tick
EOF
