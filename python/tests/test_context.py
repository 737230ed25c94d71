"""The Marie state behaviours through RunContext: defaults, overwrite,
metadata, all state of one attempt, upstream reads, fan-in order,
isolation, task state, batches, and clearing before a retry."""

from __future__ import annotations

import pytest

import waymark
from conftest import make_ti


def test_the_readme_quick_start_shape(kernel):
    ti = waymark.TaskInstanceRef(
        tenant_id="acme", dag_name="documents", dag_id="run-42", task_id="ocr", try_number=1
    )
    ctx = waymark.RunContext(ti, kernel)
    ctx.set("LINES", ["Invoice 17", "Total 42.00"])
    assert ctx.get("LINES") == ["Invoice 17", "Total 42.00"]
    assert ctx.get("MISSING") is None
    assert ctx.get("MISSING", default=[]) == []
    assert ctx.get("MISSING", []) == []
    assert ctx.ti == ti
    assert ctx.kernel is kernel


def test_a_set_overwrites_and_a_delete_removes(kernel, ti):
    ctx = kernel.context(ti)
    ctx.set("K", 1)
    ctx.set("K", {"v": 2})
    assert ctx.get("K") == {"v": 2}
    ctx.delete("K")
    assert ctx.get("K", default="gone") == "gone"


def test_writes_return_increasing_lsns(kernel, ti):
    ctx = kernel.context(ti)
    lsns = [ctx.set("K", i) for i in range(5)]
    assert lsns == sorted(lsns) and len(set(lsns)) == 5


def test_push_keeps_metadata_beside_the_value(kernel, ti):
    ctx = kernel.context(ti)
    lsn = ctx.push("TABLE", {"rows": 3}, metadata={"source": "ocr"})
    entry = ctx.get_entry("TABLE")
    assert entry.value == {"rows": 3}
    assert entry.metadata == {"source": "ocr"}
    assert entry.lsn == lsn
    assert entry.time.tzinfo is not None
    ctx.set("PLAIN", 1)
    assert ctx.get_entry("PLAIN").metadata is None
    assert ctx.get_entry("NOPE") is None


def test_get_all_is_the_state_of_one_attempt(kernel):
    ocr = kernel.context(make_ti("ocr"))
    other = kernel.context(make_ti("tables"))
    ocr.set("B", 2)
    ocr.set("A", 1)
    other.set("C", 3)
    ocr.set_task_state("PAGES", 7)
    assert ocr.get_all() == {"A": 1, "B": 2}
    assert list(ocr.get_all()) == ["A", "B"]
    assert ocr.get_all_task_state() == {"PAGES": 7}


def test_upstream_reads_see_the_latest_attempt_that_has_the_key(kernel):
    ocr1 = kernel.context(make_ti("ocr", 1))
    ocr1.set("LINES", ["v1"])
    ocr1.set("ONLY_IN_1", True)
    kernel.start(ocr1.ti)
    kernel.fail(ocr1.ti, "timeout", "transient")
    ocr2 = kernel.context(kernel.clear_for_task(ocr1.ti))
    assert ocr2.ti.try_number == 2
    ocr2.set("LINES", ["v2"])
    tables = kernel.context(make_ti("tables"))
    assert tables.get("LINES", from_task="ocr") == ["v2"]
    # The clear removed try 1's attempt state.
    assert tables.get("ONLY_IN_1", from_task="ocr") is None
    assert tables.get("MISSING", from_task="ocr", default=0) == 0


def test_fan_in_pull_takes_the_first_match_in_list_order(kernel):
    for task, value in [("b", "from b"), ("c", "from c")]:
        kernel.context(make_ti(task)).set("PART", value)
    agg = kernel.context(make_ti("agg"))
    assert agg.pull("PART", from_tasks=["a", "b", "c"]) == "from b"
    assert agg.pull("PART", from_tasks=["c", "b"]) == "from c"
    assert agg.pull("PART", from_task="c") == "from c"
    assert agg.pull("PART", from_tasks=["a", "x"], default="none") == "none"
    assert agg.pull("PART") is None
    agg.set("PART", "own")
    assert agg.pull("PART") == "own"


def test_pull_all_gives_every_match_with_its_provenance(kernel):
    a = kernel.context(make_ti("a"))
    c = kernel.context(make_ti("c", 3))
    la = a.push("PART", 1, metadata={"n": 1})
    lc = c.set("PART", 3)
    agg = kernel.context(make_ti("agg"))
    pulled = agg.pull_all("PART", from_tasks=["c", "b", "a"])
    assert [(p.task_id, p.try_number, p.value, p.lsn) for p in pulled] == [
        ("c", 3, 3, lc),
        ("a", 1, 1, la),
    ]
    assert pulled[1].metadata == {"n": 1} and pulled[0].metadata is None
    assert pulled[0].ts_micros >= pulled[1].ts_micros


@pytest.mark.parametrize(
    "other",
    [
        dict(task_id="other"),
        dict(dag_id="run-43"),
        dict(dag_name="invoices"),
        dict(tenant_id="globex"),
        dict(try_number=2),
    ],
    ids=lambda d: next(iter(d)),
)
def test_state_is_isolated_between_tasks_runs_dags_tenants_and_tries(kernel, other):
    mine = kernel.context(make_ti())
    fields = dict(task_id="ocr", try_number=1)
    fields.update(other)
    theirs = kernel.context(make_ti(**fields))
    mine.set("SECRET", "mine")
    assert theirs.get("SECRET") is None
    assert theirs.get_all() == {}
    theirs.set("SECRET", "theirs")
    assert mine.get("SECRET") == "mine"


def test_upstream_reads_do_not_cross_runs_or_tenants(kernel):
    kernel.context(make_ti("ocr", tenant_id="globex")).set("LINES", 1)
    kernel.context(make_ti("ocr", dag_id="run-43")).set("LINES", 2)
    tables = kernel.context(make_ti("tables"))
    assert tables.get("LINES", from_task="ocr") is None
    assert tables.pull_all("LINES", from_tasks=["ocr"]) == []


def test_task_state_survives_retries_and_attempt_state_does_not(kernel):
    ti = make_ti()
    ctx = kernel.context(ti)
    ctx.set("SCRATCH", "attempt 1")
    ctx.set_task_state("pages_done", 3)
    kernel.start(ti)
    kernel.fail(ti, "boom")
    nxt = kernel.context(kernel.clear_for_task(ti))
    assert nxt.get("SCRATCH") is None
    assert kernel.context(ti).get("SCRATCH") is None
    assert nxt.get_task_state("pages_done") == 3
    nxt.delete_task_state("pages_done")
    assert nxt.get_task_state("pages_done", default=0) == 0


def test_clear_for_task_works_from_every_try(kernel):
    ti = make_ti()
    kernel.context(ti).set("K", 1)
    for expected in range(2, 7):
        kernel.start(ti)
        kernel.fail(ti, "again")
        ti = kernel.clear_for_task(ti)
        assert ti.try_number == expected
        assert kernel.task(ti).status == "scheduled"
        ctx = kernel.context(ti)
        assert ctx.get("K") is None
        ctx.set("K", expected)
    record = kernel.task(ti)
    assert [a.try_number for a in record.attempts] == list(range(1, 7))


def test_clear_for_task_refuses_what_it_cannot_clear(kernel):
    with pytest.raises(waymark.NotFoundError):
        kernel.clear_for_task(make_ti("never-seen"))
    ti = make_ti()
    kernel.start(ti)
    with pytest.raises(waymark.InvalidTransitionError, match="running"):
        kernel.clear_for_task(ti)
    kernel.succeed(ti)
    nxt = kernel.clear_for_task(ti)
    with pytest.raises(waymark.InvalidTransitionError, match="not the latest"):
        kernel.clear_for_task(ti)
    assert nxt.try_number == 2


def test_a_batch_commits_all_its_writes_at_one_lsn(kernel, ti):
    ctx = kernel.context(ti)
    with ctx.batch() as b:
        b.set("A", 1).push("B", 2, metadata="m").set_task_state("T", 3)
        assert len(b) == 3
    assert ctx.get_all() == {"A": 1, "B": 2}
    assert ctx.get_entry("A").lsn == ctx.get_entry("B").lsn
    assert ctx.get_task_state("T") == 3
    b = ctx.batch().delete("A").delete_task_state("T")
    lsn = b.commit()
    assert lsn > ctx.get_entry("B").lsn
    assert ctx.get("A") is None and ctx.get_task_state("T") is None
    with pytest.raises(waymark.InvalidArgumentError, match="committed already"):
        b.commit()
    assert ctx.batch().commit() is None


def test_a_batch_whose_block_raises_writes_nothing(kernel, ti):
    ctx = kernel.context(ti)
    with pytest.raises(RuntimeError):
        with ctx.batch() as b:
            b.set("A", 1)
            raise RuntimeError("the task failed half-way")
    assert ctx.get_all() == {}


def test_task_instance_ref(kernel):
    ti = make_ti()
    assert ti.with_try_number(2).try_number == 2 and ti.try_number == 1
    assert ti.sibling("tables").task_id == "tables"
    assert waymark.TaskInstanceRef.from_dict(ti.to_dict()) == ti
    d = {"dag_name": "documents", "dag_id": "run-42", "task_id": "ocr"}
    assert waymark.TaskInstanceRef.from_dict(d, tenant_id="acme") == ti
    assert waymark.TaskInstanceRef.from_dict(d).tenant_id == "default"
    assert hash(ti) == hash(make_ti()) and len({ti, make_ti(), ti.with_try_number(2)}) == 2
    assert repr(ti) == (
        "TaskInstanceRef(tenant_id='acme', dag_name='documents', dag_id='run-42', "
        "task_id='ocr', try_number=1)"
    )
    assert str(ti) == "acme/documents/run-42/ocr#1"
    assert ti.run == waymark.RunRef("acme", "documents", "run-42")
    assert ti.run.task("ocr") == ti
    for bad in [dict(tenant_id=""), dict(task_id=""), dict(try_number=0), dict(try_number=-1)]:
        with pytest.raises(waymark.InvalidArgumentError):
            make_ti(**bad)
    with pytest.raises(waymark.InvalidArgumentError):
        ti.with_try_number(2**40)
    with pytest.raises(waymark.InvalidArgumentError, match="task_id"):
        waymark.TaskInstanceRef.from_dict({"dag_name": "d", "dag_id": "r"})


def test_backend_factories(tmp_path):
    with waymark.create_backend("memory") as k:
        k.context(make_ti()).set("K", 1)
    with waymark.create_backend_from_url("memory://") as k:
        assert k.context(make_ti()).get("K") is None
    with waymark.create_backend_from_url(f"file://{tmp_path}/s") as k:
        k.context(make_ti()).set("K", 1)
    with waymark.create_backend("file", path=tmp_path / "s") as k:
        assert k.context(make_ti()).get("K") == 1
    with pytest.raises(waymark.InvalidArgumentError, match="unsupported state URL"):
        waymark.create_backend_from_url("postgresql://localhost/marie")
    with pytest.raises(waymark.InvalidArgumentError):
        waymark.create_backend("s3")


def test_reprs(kernel, ti):
    ctx = kernel.context(ti)
    assert repr(kernel) == 'Kernel("memory://")'
    assert repr(ctx) == "RunContext(acme/documents/run-42/ocr#1)"
    b = ctx.batch().set("A", 1)
    assert repr(b) == "Batch(1 writes)"
    b.commit()
    assert repr(b) == "Batch(committed)"
    w = kernel.watch()
    assert repr(w) == "Watch(open)"
    w.close()
    assert repr(w) == "Watch(closed)"
    assert repr(waymark.RetryPolicy(3)) == "RetryPolicy(max_attempts=3)"


def test_refs_pickle_and_kernels_take_a_worker_id():
    import pickle

    ti = make_ti(try_number=3)
    assert pickle.loads(pickle.dumps(ti)) == ti
    assert pickle.loads(pickle.dumps(ti.run)) == ti.run
    with waymark.Kernel.in_memory(worker_id="w-7") as k:
        assert k.worker_id == "w-7"
        k.start(ti)
        [status] = k.history_of_task(ti)
        assert status.data["worker"] == "w-7"


def test_hostile_input_raises_exceptions_and_never_crashes(kernel, ti):
    ctx = kernel.context(ti)
    watch = kernel.watch()
    for call in [
        lambda: make_ti(try_number=2**70),
        lambda: make_ti(try_number="1"),
        lambda: make_ti(task_id="x" * 100_000),
        lambda: ti.with_try_number(-(2**80)),
        lambda: ctx.set("K\x00", 1),
        lambda: ctx.get(""),
        lambda: ctx.pull("K", from_tasks="abc"),
        lambda: ctx.pull_all("K", from_tasks=[""]),
        lambda: kernel.events_between("yesterday", 0),
        lambda: kernel.run_as_of(ti, lsn=-1),
        lambda: kernel.prune_checkpoints(ti, max_age=float("nan")),
        lambda: kernel.set_run_status(ti, ""),
        lambda: waymark.RetryPolicy(3, base=float("inf")),
        lambda: waymark.RetryPolicy(3, backoff="exponential", factor=float("nan")),
    ]:
        try:
            call()
        except Exception:  # noqa: BLE001 - any Exception; a PanicException is not one
            pass
    # Waits as long as they say: none of these may panic.
    assert watch.next(timeout=0.0) is None
    assert watch.next(timeout=-5) is None
    watch.close()
    assert watch.next(timeout=float("inf")) is None
    assert watch.next(timeout=1e300) is None
    assert watch.next(timeout=float("nan")) is None


def test_the_exception_classes_sort_errors_by_what_a_caller_does():
    e = waymark.errors
    assert issubclass(e.InvalidArgumentError, ValueError)
    assert issubclass(e.LimitError, e.InvalidArgumentError)
    assert issubclass(e.NotFoundError, e.RefusedError) and issubclass(e.NotFoundError, LookupError)
    assert issubclass(e.InvalidTransitionError, e.RefusedError)
    assert issubclass(e.ConflictError, e.RefusedError)
    assert issubclass(e.DiskFullError, e.PoisonedError)
    assert issubclass(e.PoisonedError, e.StorageError) and issubclass(e.StorageError, OSError)
    for name in e.__all__:
        assert issubclass(getattr(e, name), e.Error) and getattr(waymark, name) is getattr(e, name)
