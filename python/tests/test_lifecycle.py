"""The lifecycle of task attempts through Python: transitions, refusals,
retries, resume after a crash, pause, and racing threads."""

from __future__ import annotations

import threading

import pytest

import waymark
from conftest import make_ti


def test_an_attempt_goes_through_its_statuses(kernel):
    ti = make_ti()
    assert kernel.task(ti) is None
    kernel.schedule(ti)
    assert kernel.task(ti).status == "scheduled"
    kernel.start(ti)
    kernel.succeed(ti, {"pages": 3})
    record = kernel.task(ti)
    assert record.status == "succeeded" and record.latest_try == 1
    assert record.latest.result == {"pages": 3}
    assert record.attempts == (waymark.Attempt(1, "succeeded", result={"pages": 3}),)


def test_a_failure_keeps_its_message_and_kind(kernel):
    ti = make_ti()
    kernel.start(ti)
    kernel.fail(ti, "OCR engine timed out", "timeout")
    latest = kernel.task(ti).latest
    assert (latest.status, latest.error, latest.kind) == ("failed", "OCR engine timed out", "timeout")
    other = make_ti("other")
    kernel.start(other)
    kernel.fail(other, "boom")
    assert kernel.task(other).latest.kind == "error"


def test_invalid_transitions_raise_and_write_nothing(kernel):
    ti = make_ti()
    with pytest.raises(waymark.InvalidTransitionError, match="cannot go from no status to succeeded"):
        kernel.succeed(ti)
    kernel.start(ti)
    kernel.succeed(ti)
    before = kernel.stats()["batches"]
    for call in (kernel.start, kernel.cancel, lambda t: kernel.fail(t, "late")):
        with pytest.raises(waymark.InvalidTransitionError) as raised:
            call(ti)
        assert isinstance(raised.value, waymark.RefusedError)
        assert isinstance(raised.value, waymark.Error)
    assert kernel.stats()["batches"] == before


def test_a_retry_runs_as_the_next_attempt(kernel):
    ti = make_ti()
    kernel.start(ti)
    kernel.fail(ti, "transient", "io")
    nxt = kernel.clear_for_task(ti)
    kernel.start(nxt)
    kernel.succeed(nxt, "done")
    record = kernel.task(ti)
    assert [(a.try_number, a.status) for a in record.attempts] == [(1, "failed"), (2, "succeeded")]
    with pytest.raises(waymark.InvalidTransitionError):
        kernel.start(ti)


def test_resume_names_the_interrupted_tasks(kernel):
    run = waymark.RunRef("acme", "documents", "run-42")
    done, running, waiting, failed = (run.task(t) for t in ("done", "running", "waiting", "failed"))
    for t in (done, running, failed):
        kernel.start(t)
    kernel.succeed(done, 1)
    kernel.fail(failed, "x")
    kernel.schedule(waiting)
    state = kernel.resume(run)
    assert state.status in ("created", "running")
    assert [t.ti.task_id for t in state.interrupted] == ["running"]
    assert [t.ti.task_id for t in state.succeeded] == ["done"]
    assert sorted(t.ti.task_id for t in state.to_retry) == ["failed", "running"]
    assert [t.ti.task_id for t in state.scheduled] == ["waiting"]
    assert state.recorded is not None
    assert kernel.task(running).status == "interrupted"
    # A resume given any attempt of the run reads the same run; nothing is
    # running any more, so it records nothing.
    again = kernel.resume(done)
    assert again.interrupted == () and again.recorded is None
    with pytest.raises(waymark.NotFoundError):
        kernel.resume(waymark.RunRef("acme", "documents", "never"))


def test_a_paused_run_starts_no_task(kernel):
    run = waymark.RunRef("acme", "documents", "run-42")
    assert kernel.run_status(run) is None
    kernel.set_run_status(run, "running")
    kernel.schedule(run.task("a"))
    kernel.pause_run(run)
    assert kernel.run_status(run) == "paused"
    assert kernel.resume(run).is_paused
    with pytest.raises(waymark.InvalidTransitionError, match="paused"):
        kernel.start(run.task("a"))
    kernel.resume_run(run)
    kernel.start(run.task("a"))
    with pytest.raises(waymark.InvalidArgumentError, match="unknown run status"):
        kernel.set_run_status(run, "exploded")


def race(n, fn):
    """Runs fn(i) on n threads released together; returns the results and
    the exceptions."""
    barrier = threading.Barrier(n)
    results, errors = [None] * n, [None] * n

    def run(i):
        barrier.wait()
        try:
            results[i] = fn(i)
        except Exception as e:  # noqa: BLE001 - the race collects them
            errors[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors


def test_of_eight_threads_succeeding_one_attempt_exactly_one_wins(file_kernel):
    for r in range(10):
        ti = make_ti(f"task-{r}")
        file_kernel.start(ti)
        results, errors = race(8, lambda i: file_kernel.succeed(ti, {"winner": i}))
        winners = [i for i, e in enumerate(errors) if e is None]
        assert len(winners) == 1, errors
        assert all(isinstance(e, waymark.InvalidTransitionError) for e in errors if e is not None)
        assert file_kernel.task(ti).latest.result == {"winner": winners[0]}


def test_of_eight_threads_starting_one_attempt_exactly_one_wins(file_kernel):
    for r in range(10):
        ti = make_ti(f"task-{r}")
        file_kernel.schedule(ti)
        _, errors = race(8, lambda i: file_kernel.start(ti))
        assert sum(e is None for e in errors) == 1
        assert all(isinstance(e, waymark.InvalidTransitionError) for e in errors if e is not None)


def test_of_eight_threads_retrying_one_attempt_exactly_one_wins(file_kernel):
    ti = make_ti()
    file_kernel.start(ti)
    file_kernel.fail(ti, "x")
    results, errors = race(8, lambda i: file_kernel.clear_for_task(ti))
    nexts = [r for r in results if r is not None]
    assert len(nexts) == 1 and nexts[0].try_number == 2
    assert all(isinstance(e, waymark.RefusedError) for e in errors if e is not None)
    assert file_kernel.task(ti).latest_try == 2


def test_a_batch_writes_outputs_and_the_final_status_together(kernel):
    ti = make_ti()
    ctx = kernel.context(ti)
    ctx.batch().start().set("PROGRESS", 0).commit()
    assert kernel.task(ti).status == "running"
    with ctx.batch() as b:
        b.set("OUTPUT", [1, 2]).set_task_state("done_pages", 2).succeed({"pages": 2})
    assert kernel.task(ti).latest.result == {"pages": 2}
    assert ctx.get("OUTPUT") == [1, 2]
    # A batch whose status change is refused writes none of its state.
    with pytest.raises(waymark.InvalidTransitionError):
        ctx.batch().set("LATE", 1).fail("too late").commit()
    assert ctx.get("LATE") is None
    other = make_ti("other")
    kernel.start(other)
    kernel.context(other).batch().set("PARTIAL", 1).fail("boom", "io").commit()
    assert kernel.task(other).latest.kind == "io"
    cancelled = make_ti("cancelled")
    kernel.schedule(cancelled)
    kernel.context(cancelled).batch().cancel().commit()
    assert kernel.task(cancelled).status == "cancelled"
