"""The binding against Python's own sqlite3 on Marie's task_state table.

    python python/bench.py [--rounds N] [--span S] [--quick] [--json]

One interleaved run (waymark, sqlite3, then sqlite3, waymark, the order
reversed every other round; medians over rounds), on a fresh directory under the system's temporary directory:

- ``set/1``: durable set of a new key from 1 thread (sets/s);
- ``set/8``: the same from 8 threads, each its own task attempt (sqlite3:
  its own connection); thread 0 overwrites the keys set/1 wrote, in both
  systems alike;
- ``batch``: 1,000 sets in one durable commit (sets/s);
- ``get``: gets of existing keys from 1 thread (gets/s);
- ``get/overhead``: the mean time of a get on a held context in a tight
  loop, in-memory kernel, 100-byte bytes values over 100 tasks of 1,000
  keys: the set-up of the Rust bench ``kernel_get/held_context``, whose
  time subtracted from this one bounds the binding's own cost per call
  from above (the Rust call itself is slower inside Python's loop).

waymark runs with its default durability (``Sync``: acknowledged after the
group's fdatasync). sqlite3 runs in WAL mode with ``synchronous=FULL``, the
Marie table (primary key over tenant, DAG, run, task, try, key) and an
``INSERT ... ON CONFLICT DO UPDATE`` upsert of the value's JSON text.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import waymark

VALUE = {"text": "x" * 80, "n": 1}
THREADS = 8
BATCH = 1000

SCHEMA = """
CREATE TABLE IF NOT EXISTS task_state (
    tenant_id   TEXT NOT NULL,
    dag_name    TEXT NOT NULL,
    dag_id      TEXT NOT NULL,
    task_id     TEXT NOT NULL,
    try_number  INT  NOT NULL,
    key         TEXT NOT NULL,
    value_json  TEXT NOT NULL,
    metadata    TEXT,
    created_at  TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (tenant_id, dag_name, dag_id, task_id, try_number, key)
)
"""
UPSERT = """
INSERT INTO task_state (tenant_id, dag_name, dag_id, task_id, try_number, key, value_json, metadata)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (tenant_id, dag_name, dag_id, task_id, try_number, key)
DO UPDATE SET value_json = excluded.value_json, metadata = excluded.metadata
"""
SELECT = """
SELECT value_json FROM task_state
WHERE tenant_id = ? AND dag_name = ? AND dag_id = ? AND task_id = ? AND try_number = ? AND key = ?
"""


def timed_loop(span, op, threads=1):
    """Runs op(thread, i) on `threads` threads for `span` seconds; returns
    ops per second and every call's latency."""
    stop = threading.Event()
    counts = [0] * threads
    lat = [[] for _ in range(threads)]

    def run(t):
        i = 0
        while not stop.is_set():
            t0 = time.perf_counter()
            counts[t] += op(t, i)
            lat[t].append(time.perf_counter() - t0)
            i += 1

    workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    start = time.perf_counter()
    for w in workers:
        w.start()
    time.sleep(span)
    stop.set()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - start
    all_lat = sorted(x for per in lat for x in per)
    return sum(counts) / elapsed, all_lat


class Waymark:
    name = "waymark"

    def __init__(self, path):
        self.kernel = waymark.Kernel.open(path)
        run = waymark.RunRef("acme", "documents", "run1")
        self.ctxs = [self.kernel.context(run.task(f"task{t:03}")) for t in range(THREADS)]

    def set(self, t, i):
        self.ctxs[t].set(f"KEY_{i:08}", VALUE)
        return 1

    def batch(self, t, i):
        ctx = self.ctxs[t]
        b = ctx.batch()
        for k in range(BATCH):
            b.set(f"B{i:06}_{k:04}", VALUE)
        b.commit()
        return BATCH

    def get(self, t, i):
        got = self.ctxs[t].get(f"KEY_{i % 1000:08}")
        assert got is not None
        return 1

    def close(self):
        self.kernel.close()


class Sqlite:
    name = "sqlite3"

    def __init__(self, path):
        self.path = str(path / "state.db")
        conn = self.connect()
        conn.execute(SCHEMA)
        conn.commit()
        conn.close()
        self.conns = [self.connect() for _ in range(THREADS)]

    def connect(self):
        conn = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        return conn

    def row(self, t, key):
        return ("acme", "documents", "run1", f"task{t:03}", 1, key, json.dumps(VALUE), None)

    def set(self, t, i):
        self.conns[t].execute(UPSERT, self.row(t, f"KEY_{i:08}"))
        return 1

    def batch(self, t, i):
        conn = self.conns[t]
        conn.execute("BEGIN")
        conn.executemany(UPSERT, [self.row(t, f"B{i:06}_{k:04}") for k in range(BATCH)])
        conn.execute("COMMIT")
        return BATCH

    def get(self, t, i):
        row = (
            self.conns[t]
            .execute(SELECT, ("acme", "documents", "run1", f"task{t:03}", 1, f"KEY_{i % 1000:08}"))
            .fetchone()
        )
        assert row is not None and json.loads(row[0])
        return 1

    def close(self):
        for c in self.conns:
            c.close()


def fill(store):
    for i in range(1000):
        store.set(0, i)


def get_overhead(span):
    """The mean time of a get on a held context: kernel_get/held_context's
    set-up."""
    kernel = waymark.Kernel.in_memory()
    run = waymark.RunRef("acme", "doc", "run1")
    ctxs = [kernel.context(run.task(f"task{t:03}")) for t in range(100)]
    keys = [f"KEY_{k:06}" for k in range(1000)]
    value = b"v" * 100
    for ctx in ctxs:
        with ctx.batch() as b:
            for k in keys:
                b.set(k, value)
    import random

    rng = random.Random(7)
    picks = [(ctxs[rng.randrange(100)], keys[rng.randrange(1000)]) for _ in range(1 << 16)]
    # A tight loop, timed as a whole: the mean per call, with no clock read
    # per call to add to it.
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < span:
        for ctx, key in picks:
            ctx.get(key)
        calls += len(picks)
    elapsed = time.perf_counter() - start
    kernel.close()
    per_call = elapsed / calls
    return calls / elapsed, [per_call]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--span", type=float, default=1.0, help="seconds per timed loop")
    p.add_argument("--quick", action="store_true", help="2 rounds of 0.3 s")
    p.add_argument("--json", action="store_true", help="one JSON object per (workload, system)")
    args = p.parse_args()
    if args.quick:
        args.rounds, args.span = 2, 0.3
    results = {}
    base = Path(tempfile.mkdtemp(prefix="waymark-pybench"))
    systems = [Waymark, Sqlite]
    for r in range(args.rounds):
        order = systems if r % 2 == 0 else list(reversed(systems))
        for cls in order:
            d = base / f"{cls.name}-{r}"
            d.mkdir()
            store = cls(d / "state" if cls is Waymark else d)
            for workload, threads, op in [
                ("set/1", 1, store.set),
                ("set/8", THREADS, store.set),
                ("batch", 1, store.batch),
            ]:
                results.setdefault((workload, cls.name), []).append(timed_loop(args.span, op, threads))
            fill(store)
            results.setdefault(("get", cls.name), []).append(timed_loop(args.span, store.get))
            store.close()
        results.setdefault(("get/overhead", "waymark"), []).append(get_overhead(args.span))

    rows = []
    for (workload, system), runs in results.items():
        rate = statistics.median(r for r, _ in runs)
        p50 = statistics.median(lat[len(lat) // 2] for _, lat in runs) * 1e6
        p99 = statistics.median(lat[int(len(lat) * 0.99)] for _, lat in runs) * 1e6
        rows.append({"workload": workload, "system": system, "ops_per_sec": rate, "p50_us": p50, "p99_us": p99})
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return
    print(f"{'workload':<14}{'system':<10}{'ops/s':>12}{'p50 µs':>10}{'p99 µs':>10}")
    for row in rows:
        print(
            f"{row['workload']:<14}{row['system']:<10}{row['ops_per_sec']:>12,.0f}"
            f"{row['p50_us']:>10.1f}{row['p99_us']:>10.1f}"
        )
    by = {(r["workload"], r["system"]): r for r in rows}
    print("\nwaymark / sqlite3 (targets: set/1 >= 1.2x, set/8 >= 5x, batch >= 2x, get >= 2x)")
    for workload, target in [("set/1", 1.2), ("set/8", 5.0), ("batch", 2.0), ("get", 2.0)]:
        ratio = by[(workload, "waymark")]["ops_per_sec"] / by[(workload, "sqlite3")]["ops_per_sec"]
        print(f"  {workload:<8}{ratio:>6.2f}x  {'yes' if ratio >= target else 'MISSED'}")
    print(
        f"  get/overhead {by[('get/overhead', 'waymark')]['p50_us']:.2f} µs per call"
        " (minus kernel_get/held_context's time: an upper bound on the binding's own cost; target < 2 µs)"
    )
    print(f"\n{args.rounds} rounds of {args.span} s, medians; python {sys.version.split()[0]}; in {base}")


if __name__ == "__main__":
    main()
