#!/usr/bin/env python3
"""Estimates for docs/internals/scaling.md: group commit through one row lock.

A discrete-event simulation of eddy's multi-node write path on PostgreSQL (issue 29):
N nodes, each with one writer that commits in groups. Every group transaction takes
the row lock on the one `eddy_head` row, so groups from all nodes are served one at a
time, first come first served. A group's lock hold time is

    round trips under the lock x RTT + statements x exec + events x per-event cost + commit flush

and the commit flush (WAL fsync, plus the standby when replication is synchronous)
happens before PostgreSQL releases row locks. Requests (one event each) arrive as a
Poisson stream spread evenly over the nodes (open loop), or come from a fixed number of
connections that each send the next request after the answer (closed loop, as the
benchmark programs do); a writer takes everything queued on its node (at most 20 000
events) as soon as its previous group is answered.

K partitioned primaries are K independent copies of this model, each with a 1/K share
of the load (accounts spread evenly) and one writer per node.

Standard library only; deterministic (fixed seeds). Run: python3 docs/internals/scaling_model.py
The inputs, and which are measured on the 2-core VM and which are assumed, are
documented in scaling.md and in BASE below. These are estimates, not measurements.
"""

import heapq
import math
import random
from collections import deque

WARM = 1.0  # simulated seconds not counted
SPAN = 4.0  # simulated seconds counted
MAX_GROUP = 20_000  # events per group (architecture.md)

BASE = {
    # assumed: same-zone network between eddy nodes and the primary
    "rtt": 0.3e-3,
    # assumed from the design: after SELECT ... FOR UPDATE, the lookups of streams and
    # client ids, the UNNEST insert, the stream counters, head update + pg_notify, COMMIT
    "locked_round_trips": 5,
    # assumed: server execution of each of the group's 6 statements, rows aside
    "statements": 6,
    "stmt_exec": 20e-6,
    # derived from a measurement here: one writer on one backend stores 149 600-176 000
    # events/s in 4000-event groups (docs/benchmarks.md, UNNEST build), 5.7-6.7 us per
    # event, all of it counted as time under the lock
    "per_event": 6e-6,
    # measured here: idle 4 KiB fdatasync on this VM's disk, medians 197-273 us, p99
    # 0.44-2.0 ms (docs/benchmarks.md); PostgreSQL's WAL flush assumed to cost the same;
    # modelled as log-normal with this median and p99
    "flush_median": 0.25e-3,
    "flush_p99": 1.0e-3,
    # synchronous standby: adds one RTT to it and its own flush to every commit
    "sync_standby": False,
    # a design variant, not the current one: commit with synchronous_commit off, so the
    # lock is released before the flush, then wait for the WAL flush (one more round
    # trip) before answering or letting any node deliver the events
    "flush_outside_lock": False,
}


def poisson(rng, mean):
    if mean <= 0:
        return 0
    if mean < 30:
        limit, k, prod = math.exp(-mean), 0, rng.random()
        while prod > limit:
            k += 1
            prod *= rng.random()
        return k
    return max(0, int(round(rng.gauss(mean, math.sqrt(mean)))))


def simulate(nodes, load, p, seed, connections=0, think=0.0):
    """One primary, `nodes` writers. Open loop: `load` events/s offered in all, Poisson.
    Closed loop (`connections` > 0, spread evenly over the nodes): each connection sends
    its next single-event request `think` seconds after its answer, as bench_ingest's
    load generator does. Returns the counted events, groups, lock time and latencies."""
    rng = random.Random(seed)
    sigma = math.log(p["flush_p99"] / p["flush_median"]) / 2.3263
    mu_flush = math.log(p["flush_median"])

    def flush():
        f = math.exp(rng.gauss(mu_flush, sigma))
        if p["sync_standby"]:
            f += p["rtt"] + math.exp(rng.gauss(mu_flush, sigma))
        return f

    rtt = p["rtt"]
    fixed = p["locked_round_trips"] * rtt + p["statements"] * p["stmt_exec"]
    lam = load / nodes
    end = WARM + SPAN
    backlog = [deque() for _ in range(nodes)]  # pieces (first arrival, last, count)
    counted_to = [0.0] * nodes
    idle = [False] * nodes
    heap, seq = [], 0
    waiters, lock_busy = deque(), False
    events = groups = 0
    held = 0.0  # lock hold time of the groups counted
    samples = []  # (latency, weight)

    def push(t, kind, node, data=None):
        nonlocal seq
        seq += 1
        heapq.heappush(heap, (t, seq, kind, node, data))

    def grant(t, node, group):
        nonlocal lock_busy
        lock_busy = True
        hold = fixed + p["per_event"] * group[1]
        after = 0.0
        if p["flush_outside_lock"]:
            after = rtt + flush()
        else:
            hold += flush()
        push(t + hold, "release", node, group + (hold, after))

    for n in range(nodes):
        if connections:
            for _ in range(connections // nodes + (n < connections % nodes)):
                push(rng.random() * 1e-3, "request", n)
            idle[n] = True
        else:
            push(rng.random() * 1e-3, "ready", n)
    while heap:
        t, _, kind, n, data = heapq.heappop(heap)
        if t > end:
            break
        if kind == "request":  # closed loop: one connection's next request
            backlog[n].append((t, t, 1))
            if idle[n]:
                idle[n] = False
                push(t, "ready", n)
        elif kind == "ready":
            if not connections:
                k = poisson(rng, lam * (t - counted_to[n]))
                if k:
                    backlog[n].append((counted_to[n], t, k))
                counted_to[n] = t
                if not backlog[n]:  # idle: wait for the next request
                    t += rng.expovariate(lam)
                    counted_to[n] = t
                    backlog[n].append((t, t, 1))
            elif not backlog[n]:
                idle[n] = True
                continue
            pieces, size = [], 0
            while backlog[n] and size < MAX_GROUP:
                a, b, k = backlog[n].popleft()
                take = min(k, MAX_GROUP - size)
                if take < k:  # FIFO: the first `take` arrivals of the piece
                    split = a + (b - a) * take / k
                    backlog[n].appendleft((split, b, k - take))
                    b = split
                pieces.append((a, b, take))
                size += take
            # BEGIN and SELECT ... FOR UPDATE are sent together: half an RTT to arrive
            push(t + rtt / 2, "arrive", n, (pieces, size))
        elif kind == "arrive":
            if lock_busy:
                waiters.append((n, data))
            else:
                grant(t, n, data)
        else:  # release: the commit is durable, the answer reaches the node
            pieces, size, hold, after = data
            answered = t + after + rtt / 2
            if WARM <= answered <= end:
                events += size
                groups += 1
                held += hold
                for a, b, k in pieces:
                    m = min(k, 4)
                    for _ in range(m):
                        samples.append((answered - rng.uniform(a, b), k / m))
            if connections:
                for _ in range(size):
                    push(answered + think, "request", n)
            push(answered, "ready", n)
            lock_busy = False
            if waiters:
                grant(t, *waiters.popleft())
    return {"events": events, "groups": groups, "held": held, "samples": samples}


def percentile(samples, q):
    samples.sort()
    total = sum(w for _, w in samples)
    acc = 0.0
    for value, w in samples:
        acc += w
        if acc >= q * total:
            return value
    return samples[-1][0] if samples else float("nan")


def run(nodes, load, p, primaries=1, seed=1, connections=0, think=0.0):
    """`primaries` independent primaries, each with 1/primaries of the load."""
    events = groups = 0
    held, samples = 0.0, []
    for k in range(primaries):
        r = simulate(nodes, load / primaries, p, seed * 1000 + nodes * 10 + k,
                     connections, think)
        events += r["events"]
        groups += r["groups"]
        held += r["held"]
        samples += r["samples"]
    achieved = events / SPAN
    return {
        "achieved": achieved,
        "groups_s": groups / SPAN / primaries,
        "group": events / groups if groups else 0.0,
        # the part of the lock time spent on rows; the rest is round trips and flushes
        "rows": events * p["per_event"] / held if held else 0.0,
        # the queue grows without bound: answers fall behind the offered load
        "saturated": not connections and achieved < 0.97 * load,
        "p50": percentile(samples, 0.50) * 1e3,
        "p99": percentile(samples, 0.99) * 1e3,
    }


HEADER = ("| nodes | offered ev/s | achieved ev/s | groups/s per primary | events/group "
          "| rows' share of lock time | p50 ms | p99 ms |")
RULE = "| --- | --- | --- | --- | --- | --- | --- | --- |"


def num(x):
    return f"{x:,.0f}".replace(",", " ")


def row(label, load, r):
    sat = " (saturated)" if r["saturated"] else ""
    p50 = "grows" if r["saturated"] else format(r["p50"], ".1f")
    p99 = "grows" if r["saturated"] else format(r["p99"], ".1f")
    return (f"| {label} | {num(load)} | {num(r['achieved'])}{sat} | {num(r['groups_s'])} "
            f"| {num(r['group'])} | {r['rows']:.0%} | {p50} | {p99} |")


def main():
    print("Estimates from a model (not measurements); inputs in scaling.md.\n")
    print("A. One primary, base inputs (RTT 0.3 ms, 5 round trips under the lock, "
          "flush median 0.25 ms / p99 1 ms, 6 us per event)\n")
    print(HEADER)
    print(RULE)
    for nodes in (1, 2, 3, 6):
        for load in (10_000, 50_000, 100_000, 150_000, 180_000):
            print(row(nodes, load, run(nodes, load, BASE)))

    print("\nB. K partitioned primaries (separate PostgreSQL servers), base inputs, "
          "accounts spread evenly\n")
    print(HEADER.replace("| nodes |", "| K | nodes |"))
    print(RULE.replace("| --- |", "| --- | --- |", 1))
    for k, load in ((2, 300_000), (4, 300_000)):
        for nodes in (1, 2, 3, 6):
            print(row(f"{k} | {nodes}", load, run(nodes, load, BASE, primaries=k)))

    print("\nC. Sensitivity: 3 nodes, one input changed from base\n")
    print(HEADER.replace("| nodes |", "| case | nodes |"))
    print(RULE.replace("| --- |", "| --- | --- |", 1))
    cases = [
        ("base", 50_000, {}, 1),
        ("RTT 0.1 ms (loopback, this VM)", 50_000, {"rtt": 0.1e-3}, 1),
        ("RTT 1 ms (other zone)", 50_000, {"rtt": 1.0e-3}, 1),
        ("7 round trips (one substream per group)", 50_000, {"locked_round_trips": 7}, 1),
        ("25 round trips (10 substreams per group)", 50_000, {"locked_round_trips": 25}, 1),
        ("1 round trip under the lock", 50_000, {"locked_round_trips": 1}, 1),
        ("0 round trips (one server-side call)", 50_000, {"locked_round_trips": 0}, 1),
        ("0 round trips, flush outside the lock", 50_000,
         {"locked_round_trips": 0, "flush_outside_lock": True}, 1),
        ("flush median 1 ms, p99 4 ms", 50_000, {"flush_median": 1e-3, "flush_p99": 4e-3}, 1),
        ("synchronous standby, same zone", 50_000, {"sync_standby": True}, 1),
        ("Citus-like: 4 shards, RTT x2 via coordinator", 300_000, {"rtt": 0.6e-3}, 4),
    ]
    for name, load, change, k in cases:
        p = dict(BASE, **change)
        print(f"| {name} " + row(3, load, run(3, load, p, primaries=k)))

    print("\nD. Closed loop as in issue 29's benchmark: 64 connections spread over the "
          "nodes, loopback RTT 0.1 ms, 0.2 ms from an answer to the next request\n")
    print("| variant | nodes | achieved ev/s | x of 1 node | events/group | p50 ms | p99 ms |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    variants = [
        ("base (5 round trips under the lock)", {}),
        ("7 round trips (one substream per group)", {"locked_round_trips": 7}),
        ("0 round trips under the lock", {"locked_round_trips": 0}),
        ("0 round trips, flush outside the lock", {"locked_round_trips": 0,
                                                   "flush_outside_lock": True}),
    ]
    for name, change in variants:
        p = dict(BASE, rtt=0.1e-3, **change)
        one = None
        for nodes in (1, 2, 3):
            r = run(nodes, 0, p, connections=64, think=0.2e-3)
            one = one or r["achieved"]
            print(f"| {name} | {nodes} | {num(r['achieved'])} | {r['achieved'] / one:.2f} "
                  f"| {r['group']:.0f} | {r['p50']:.1f} | {r['p99']:.1f} |")


if __name__ == "__main__":
    main()
