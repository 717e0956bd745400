#!/usr/bin/env bash
# Counts the user-space instructions eddy spends per single-event POST, with callgrind.
#
# Throughput on these shared 2-core VMs moves by ±20% from run to run (even a
# one-threaded loop does), so a change of a few percent in the CPU a request costs
# cannot be seen in req/s. An instruction count can: it is the same for the same
# binary and load whatever else the machine is doing. It leaves out the kernel (TCP,
# fsync), which the benchmark programs measure.
#
# The server runs under valgrind --tool=callgrind; wrk POSTs the benchmark's ~200-byte
# click event on 8 connections for a warm-up, the counters are zeroed, then for
# SECONDS more; the count is divided by the events eddy appended meanwhile (from
# /metrics). Groups are small under valgrind (~4 events), so per-group costs weigh
# more than at full speed: compare builds with each other, not with the benchmarks.
#
# Usage: examples/instructions.sh [EDDY_BINARY] [SECONDS]
#   (default target/release/eddy, 15 s; installs valgrind and wrk with apt when missing)
# Prints one line: events, groups, instructions, instructions per event; the
# callgrind file stays in a temporary directory for callgrind_annotate.
set -euo pipefail

bin=${1:-target/release/eddy}
secs=${2:-15}
port=18099
for tool in valgrind wrk; do
    if ! command -v "$tool" >/dev/null; then
        apt-get -qq update >/dev/null && apt-get -qq install -y "$tool" >/dev/null
    fi
done
dir=$(mktemp -d)
cat >"$dir/post.lua" <<'EOF'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Event-Type"] = "click"
wrk.body = '{"url":"https://example.com/pages/0001","referrer":"https://search.example/?q=eddy","session":"s-00000001","ts":1700000000000,"ua":"Mozilla/5.0 (X11; Linux x86_64)","screen":{"w":1920,"h":1080}}'
EOF
valgrind --tool=callgrind --callgrind-out-file="$dir/callgrind.out" \
    "$bin" serve --listen "127.0.0.1:$port" --data "$dir/data" >"$dir/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    curl -fs -o /dev/null "http://127.0.0.1:$port/healthz" && break
    sleep 0.3
done
metric() {
    curl -fs "http://127.0.0.1:$port/metrics" | awk -v m="$1" '$1 == m { print $2 }'
}
wrk -t1 -c8 -d3s -s "$dir/post.lua" "http://127.0.0.1:$port/bench/clicks" >/dev/null
events=$(metric eddy_events_appended_total)
groups=$(metric eddy_commits_total)
callgrind_control -z "$server" >/dev/null 2>&1
wrk -t1 -c8 -d"${secs}s" -s "$dir/post.lua" "http://127.0.0.1:$port/bench/clicks" >/dev/null
callgrind_control -d "$server" >/dev/null 2>&1
events=$(($(metric eddy_events_appended_total) - events))
groups=$(($(metric eddy_commits_total) - groups))
kill -TERM "$server"
wait "$server" 2>/dev/null || true
trap - EXIT
total=$(callgrind_annotate "$dir/callgrind.out.1" 2>/dev/null |
    awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
echo "$(basename "$bin"): $events events in $groups groups, $total instructions," \
    "$((total / events)) per event (callgrind file: $dir/callgrind.out.1)"
