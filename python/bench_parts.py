"""The parts of bench.py's workloads, timed apart (BENCHMARKS.md, "After
the batch buffers and gathering"):

    python python/bench_parts.py [--span S]

- ``build``: 1,000 ``Batch.set`` calls with prepared keys (no commit), on
  an in-memory kernel: the binding's cost of building a batch.
- ``batch``: 1,000-set batches on a fresh durable store for ``3 * span``
  seconds: the sustained rate, the build's and the commit's p50, the
  commit's mean and worst (the snapshotter's stalls).
- ``set``: durable and non-durable sets from 1 and 8 threads, with the
  sets per group commit from ``Kernel.stats()``.

Build the module ``--release`` first, as for bench.py.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import waymark
from bench import BATCH, THREADS, VALUE, timed_loop

RUN = waymark.RunRef("acme", "documents", "run1")


def build(rounds: int = 2000) -> None:
    kernel = waymark.Kernel.in_memory()
    ctx = kernel.context(RUN.task("task000"))
    keys = [f"B{0:06}_{k:04}" for k in range(BATCH)]
    start = time.perf_counter()
    for _ in range(rounds):
        b = ctx.batch()
        for key in keys:
            b.set(key, VALUE)
    per = (time.perf_counter() - start) / rounds
    kernel.close()
    print(f"build   {per * 1e3:.3f} ms a batch of {BATCH} sets (prepared keys, no commit)")


def batch(span: float) -> None:
    with tempfile.TemporaryDirectory() as d:
        kernel = waymark.Kernel.open(os.path.join(d, "state"))
        ctx = kernel.context(RUN.task("task000"))
        built, committed, total = [], [], 0.0
        end = time.perf_counter() + 3 * span
        i = 0
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            b = ctx.batch()
            for k in range(BATCH):
                b.set(f"B{i:06}_{k:04}", VALUE)
            t1 = time.perf_counter()
            b.commit()
            t2 = time.perf_counter()
            built.append(t1 - t0)
            committed.append(t2 - t1)
            total += t2 - t0
            i += 1
        kernel.close()
    print(
        f"batch   {i * BATCH / total:,.0f} sets/s; build p50 {statistics.median(built) * 1e3:.2f} ms; "
        f"commit p50 {statistics.median(committed) * 1e3:.2f} ms, mean "
        f"{statistics.mean(committed) * 1e3:.2f}, worst {max(committed) * 1e3:.1f}"
    )


def sets(span: float) -> None:
    for durability in ["sync", "none"]:
        for threads in [1, THREADS]:
            with tempfile.TemporaryDirectory() as d:
                kernel = waymark.Kernel.open(os.path.join(d, "state"), durability=durability)
                ctxs = [kernel.context(RUN.task(f"task{t:03}")) for t in range(THREADS)]

                def op(t: int, i: int) -> int:
                    ctxs[t].set(f"KEY_{i:08}", VALUE)
                    return 1

                rate, lat = timed_loop(span, op, threads=threads)
                st = kernel.stats()
                kernel.close()
            per_group = st["batches"] / max(1, st["groups"])
            print(
                f"set     durability={durability} threads={threads}: {rate:,.0f} sets/s, "
                f"p50 {lat[len(lat) // 2] * 1e6:.1f} µs, {per_group:.2f} sets a group"
            )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--span", type=float, default=1.0, help="seconds per timed loop")
    args = p.parse_args()
    build()
    batch(args.span)
    sets(args.span)


if __name__ == "__main__":
    main()
