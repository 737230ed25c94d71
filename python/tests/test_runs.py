"""Runs through Python: checkpoints, shared variables, listings, history,
time travel, watching the log, and the retry policy."""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest

import waymark
from conftest import make_ti

RUN = waymark.RunRef("acme", "documents", "run-42")


def test_checkpoints_capture_and_restore_a_runs_state(kernel):
    ocr = kernel.context(RUN.task("ocr"))
    ocr.set("LINES", ["v1"])
    ocr.set_task_state("pages", 1)
    kernel.set_shared(RUN, "config", {"lang": "en"})
    kernel.checkpoint(RUN, "after-ocr")
    ocr.set("LINES", ["v2"])
    ocr.set("EXTRA", True)
    kernel.set_shared(RUN, "config", {"lang": "de"})
    [info] = kernel.checkpoints(RUN)
    assert info.name == "after-ocr" and info.size_bytes > 0
    assert abs(info.time - dt.datetime.now(dt.timezone.utc)) < dt.timedelta(minutes=5)
    kernel.restore(RUN, "after-ocr")
    assert ocr.get("LINES") == ["v1"] and ocr.get("EXTRA") is None
    assert ocr.get_task_state("pages") == 1
    assert kernel.get_shared(RUN, "config") == {"lang": "en"}
    with pytest.raises(waymark.NotFoundError):
        kernel.restore(RUN, "nope")
    kernel.checkpoint(RUN, "second")
    kernel.checkpoint(RUN, "third")
    assert kernel.prune_checkpoints(RUN, keep_last=1) == ["after-ocr", "second"]
    kernel.delete_checkpoint(RUN, "third")
    assert kernel.checkpoints(RUN) == []


def test_shared_variables_and_immutability(kernel):
    kernel.set_shared(RUN, "model", "v3", immutable=True)
    assert kernel.get_shared(make_ti(), "model") == "v3"
    with pytest.raises(waymark.ConflictError, match="immutable"):
        kernel.set_shared(RUN, "model", "v4")
    assert kernel.get_shared(RUN, "missing", default=0) == 0
    assert kernel.get_shared(waymark.RunRef("acme", "documents", "other"), "model") is None


def test_runs_children_and_purge(kernel):
    child = waymark.RunRef("acme", "documents", "run-42-sub")
    kernel.set_run_status(RUN, "running")
    kernel.start(RUN.task("split"))
    kernel.set_run_status(child, "running", parent=RUN.task("split"))
    kernel.set_run_status(waymark.RunRef("acme", "invoices", "run-1"), "running")
    listed = {r.run.dag_id: r for r in kernel.runs("acme", "documents")}
    assert set(listed) == {"run-42", "run-42-sub"}
    assert listed["run-42"].task_counts["running"] == 1
    assert len(kernel.runs("acme")) == 3 and kernel.runs("globex") == []
    [sub] = kernel.children(RUN)
    assert sub.run == child and sub.parent == RUN.task("split")
    kernel.context(child.task("t")).set("K", 1)
    kernel.purge_run(child)
    assert kernel.context(child.task("t")).get("K") is None


def test_history_of_a_task_a_key_and_a_run(kernel):
    ti = RUN.task("ocr")
    ctx = kernel.context(ti)
    kernel.start(ti)
    ctx.set("K", 1)
    ctx.push("K", 2, metadata={"m": 1})
    ctx.delete("K")
    kernel.succeed(ti, "ok")
    kernel.context(RUN.task("other")).set("K", "x")
    kinds = [e.kind for e in kernel.history_of_task(ti)]
    assert kinds == ["task_status", "put", "put", "delete", "task_status"]
    key = kernel.history_of_key(ti, "K")
    assert [(e.kind, e.data.get("value")) for e in key] == [("put", 1), ("put", 2), ("delete", None)]
    assert key[1].data["metadata"] == {"m": 1}
    assert key[0].task_id == "ocr" and key[0].try_number == 1 and key[0].dag_id == "run-42"
    done = kernel.history_of_task(ti)[-1]
    assert done.data["status"] == "succeeded" and done.data["result"] == "ok"
    assert done.data["worker"] == kernel.worker_id
    run = kernel.history_of_run(RUN)
    assert len(run) == 6 and [e.lsn for e in run] == sorted(e.lsn for e in run)


def test_events_between_and_run_as_of(kernel):
    ctx = kernel.context(RUN.task("ocr"))
    first = ctx.set("K", "old")
    # Apart by milliseconds, so that no two share the microsecond the
    # inclusive range ends at.
    time.sleep(0.005)
    t_mid = dt.datetime.now(dt.timezone.utc)
    time.sleep(0.005)
    ctx.set("K", "new")
    assert [e.lsn for e in kernel.events_between(0, t_mid)] == [first]
    later = kernel.events_between(t_mid, dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=1))
    assert [e.data["value"] for e in later] == ["new"]
    with kernel.run_as_of(RUN, lsn=first) as past:
        assert past.context(RUN.task("ocr")).get("K") == "old"
    with kernel.run_as_of(RUN, time=t_mid) as past:
        assert past.context(RUN.task("ocr")).get("K") == "old"
    with pytest.raises(waymark.InvalidArgumentError):
        kernel.run_as_of(RUN)


def test_watch_yields_new_durable_events_and_stops_on_close(file_kernel):
    ctx = file_kernel.context(RUN.task("ocr"))
    ctx.set("BEFORE", 0)
    watch = file_kernel.watch(dag_id="run-42", task_id="ocr")
    got = []

    def consume():
        for event in watch:
            got.append(event)

    t = threading.Thread(target=consume)
    t.start()
    ctx.set("A", 1)
    file_kernel.context(RUN.task("other")).set("IGNORED", 1)
    ctx.set("B", 2)
    deadline = dt.datetime.now() + dt.timedelta(seconds=10)
    while len(got) < 2 and dt.datetime.now() < deadline:
        threading.Event().wait(0.01)
    watch.close()
    t.join(timeout=10)
    assert not t.is_alive()
    assert [e.data["key"] for e in got] == ["A", "B"]
    assert watch.next(timeout=0.01) is None


def test_a_watch_from_an_lsn_replays_then_follows(kernel):
    ctx = kernel.context(RUN.task("ocr"))
    first = ctx.set("A", 1)
    with kernel.watch(from_lsn=first) as watch:
        assert watch.next(timeout=5).data["key"] == "A"
        ctx.set("B", 2)
        assert watch.next(timeout=5).data["key"] == "B"
        assert watch.next(timeout=0.05) is None


def test_closing_the_kernel_stops_its_watches(tmp_path):
    k = waymark.Kernel.open(tmp_path / "s")
    watch = k.watch()
    k.close()
    assert watch.next(timeout=1) is None
    with waymark.Kernel.open(tmp_path / "s"):
        pass


def test_retry_policy():
    policy = waymark.RetryPolicy(
        3, backoff="exponential", base=1.0, factor=2.0, max_delay=30.0, retry_only=["transient"]
    )
    assert policy.delay_without_jitter(1, "transient") == 1.0
    assert policy.delay_without_jitter(2, "transient") == 2.0
    assert policy.delay_without_jitter(3, "transient") is None
    assert not policy.should_retry(1, "bad-input")
    jittered = waymark.RetryPolicy(5, base=10.0, jitter=0.5)
    assert 5.0 <= jittered.delay(1) <= 15.0
    assert jittered.delay(1, unit=0.0) == 5.0
    assert waymark.RetryPolicy(4, backoff="linear", base=1.0, step=0.5).delay_without_jitter(3) == 2.0
    for bad in [dict(max_attempts=0), dict(jitter=2.0), dict(backoff="random"), dict(base=-1.0)]:
        args = {"max_attempts": 3, **bad}
        with pytest.raises(waymark.InvalidArgumentError):
            waymark.RetryPolicy(args.pop("max_attempts"), **args)
