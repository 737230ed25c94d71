"""Python threads on one kernel: every acknowledged write lands, readers
never see a partial batch, clears race writes cleanly, and threads group
their durable commits (the interpreter is released while a write waits
for its fsync)."""

from __future__ import annotations

import threading

import waymark
from conftest import make_ti
from test_lifecycle import race


def test_threads_writing_one_key_leave_one_of_their_values(file_kernel, ti):
    ctx = file_kernel.context(ti)
    results, errors = race(8, lambda i: [ctx.set("K", {"thread": i, "n": n}) for n in range(20)])
    assert errors == [None] * 8
    final = ctx.get_entry("K")
    # The value left is the one of the highest LSN acknowledged.
    last = max((lsn, i) for i, lsns in enumerate(results) for lsn in lsns)
    assert final.lsn == last[0] and final.value == {"thread": last[1], "n": 19}


def test_threads_writing_many_keys_lose_none(file_kernel, ti):
    ctx = file_kernel.context(ti)
    _, errors = race(8, lambda i: [ctx.set(f"K{i}-{n}", n) for n in range(25)])
    assert errors == [None] * 8
    assert ctx.get_all() == {f"K{i}-{n}": n for i in range(8) for n in range(25)}


def test_threads_group_their_durable_commits(file_kernel):
    contexts = [file_kernel.context(make_ti(f"t{i}")) for i in range(8)]
    before = file_kernel.stats()
    _, errors = race(8, lambda i: [contexts[i].set("K", n) for n in range(40)])
    assert errors == [None] * 8
    after = file_kernel.stats()
    batches = after["batches"] - before["batches"]
    groups = after["groups"] - before["groups"]
    assert batches == 320
    # With the interpreter held through each fsync no two writes could
    # share a group; released, eight writers share most of them.
    assert groups < batches * 0.8, (groups, batches)


def test_readers_never_see_part_of_a_batch(file_kernel, ti):
    writer = file_kernel.context(ti)
    stop = threading.Event()
    seen, torn = [], []

    def write():
        for n in range(200):
            with writer.batch() as b:
                b.set("A", n).set("B", n).set("C", n)
        stop.set()

    def read():
        reader = file_kernel.context(ti)
        while not stop.is_set():
            state = reader.get_all()
            seen.append(state)
            if len(set(state.values())) > 1 or len(state) not in (0, 3):
                torn.append(state)

    threads = [threading.Thread(target=write)] + [threading.Thread(target=read) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Checked here, not in the readers: an assertion in a thread would not
    # fail the test.
    assert torn == []
    assert len(seen) > 10 and writer.get_all() == {"A": 199, "B": 199, "C": 199}


def test_clears_racing_writes_leave_a_clean_next_attempt(file_kernel):
    for r in range(5):
        ti = make_ti(f"task-{r}")
        ctx = file_kernel.context(ti)
        file_kernel.start(ti)
        ctx.set("SEED", 0)
        file_kernel.fail(ti, "x")

        def work(i):
            if i == 0:
                return file_kernel.clear_for_task(ti)
            return [(f"LATE{i}-{n}", ctx.set(f"LATE{i}-{n}", n)) for n in range(10)]

        results, errors = race(4, work)
        assert errors == [None] * 4
        nxt = results[0]
        assert nxt.try_number == 2 and file_kernel.task(ti).latest_try == 2
        [clear] = [e.lsn for e in file_kernel.history_of_task(ti) if e.kind == "clear_task"]
        # The clear removed exactly the writes ordered before it; the late
        # writers' later ones stay in the old attempt, never in the next.
        left = ctx.get_all()
        for key, lsn in (w for ws in results[1:] for w in ws):
            assert (key in left) == (lsn > clear), (key, lsn, clear)
        assert "SEED" not in left
        assert file_kernel.context(nxt).get_all() == {}


def test_fan_in_of_concurrent_upstreams(file_kernel):
    tasks = [f"part-{i}" for i in range(8)]
    _, errors = race(8, lambda i: file_kernel.context(make_ti(tasks[i])).set("PART", i))
    assert errors == [None] * 8
    agg = file_kernel.context(make_ti("agg"))
    assert [p.value for p in agg.pull_all("PART", from_tasks=tasks)] == list(range(8))
    assert agg.pull("PART", from_tasks=list(reversed(tasks))) == 7
