"""What survives: closing and reopening, a second process, a real crash
(SIGKILL of a worker mid-run), corrupt bytes, and calls after close."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import waymark
from conftest import make_ti


def test_everything_holds_after_close_and_reopen(tmp_path):
    path = tmp_path / "state"
    with waymark.Kernel.open(path) as k:
        ctx = k.context(make_ti())
        ctx.set("LINES", ["a", "b"])
        ctx.push("TABLE", {"rows": 3}, metadata={"source": "ocr"})
        ctx.set_task_state("pages_done", 3)
        k.start(ctx.ti)
        k.succeed(ctx.ti, "ok")
    # The with-block closed it: the directory opens again at once in the
    # same process, even while `k` and `ctx` are still alive.
    with waymark.Kernel.open(path) as k2:
        again = k2.context(make_ti())
        assert again.get("LINES") == ["a", "b"]
        assert again.get_entry("TABLE").metadata == {"source": "ocr"}
        assert again.get_task_state("pages_done") == 3
        assert k2.task(make_ti()).latest.result == "ok"
    with pytest.raises(waymark.ClosedError):
        ctx.get("LINES")
    with pytest.raises(waymark.ClosedError):
        k.start(make_ti("other"))
    k.close()  # closing twice is closing once


def test_a_second_process_is_refused_the_directory(tmp_path):
    path = tmp_path / "state"
    with waymark.Kernel.open(path):
        code = f"import waymark; waymark.Kernel.open({str(path)!r})"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert out.returncode != 0
        assert "LockedError" in out.stderr and "locked by another process" in out.stderr
    with pytest.raises(waymark.LockedError, match="already open in this process"):
        with waymark.Kernel.open(path):
            waymark.Kernel.open(path)


WORKER = textwrap.dedent(
    """
    import json, sys, waymark
    kernel = waymark.Kernel.open(sys.argv[1])
    round_ = int(sys.argv[2])
    run = waymark.RunRef("acme", "documents", "run-1")
    tis = []
    for i in range(4):
        record = kernel.task(run.task(f"task-{i}"))
        ti = run.task(f"task-{i}", record.latest_try if record else 1)
        kernel.start(ti)
        tis.append(ti)
    n = 0
    while True:
        ti = tis[n % 4]
        ctx = kernel.context(ti)
        key = f"K{round_}-{n}"
        if n % 3 == 0:
            with ctx.batch() as b:
                b.set(key, {"n": n}).set_task_state(f"T{round_}-{n}", n)
        else:
            ctx.set(key, {"n": n})
        # Reported only once the write is acknowledged (durable).
        print(json.dumps([ti.task_id, ti.try_number, key, n]), flush=True)
        n += 1
    """
)


@pytest.mark.parametrize("rounds", [4])
def test_a_sigkilled_worker_loses_no_acknowledged_write(tmp_path, rounds):
    path = tmp_path / "state"
    run = waymark.RunRef("acme", "documents", "run-1")
    for round_ in range(rounds):
        proc = subprocess.Popen(
            [sys.executable, "-c", WORKER, str(path), str(round_)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        lines = []
        deadline = time.monotonic() + 30
        # Killed at a different point each round, in the middle of writing.
        while len(lines) < 20 + 37 * round_ and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        # What it printed before the kill, and whatever was still in the pipe.
        lines += proc.stdout.read().splitlines()
        acknowledged = [json.loads(line) for line in lines if line.strip()]
        assert len(acknowledged) >= 20, proc.stderr.read()
        with waymark.Kernel.open(path) as k:
            for task_id, try_number, key, n in acknowledged:
                ctx = k.context(run.task(task_id, try_number))
                assert ctx.get(key) == {"n": n}, (round_, key)
                if n % 3 == 0:
                    assert ctx.get_task_state(key.replace("K", "T", 1)) == n
            state = k.resume(run)
            # The worker died with its four tasks running: the resume after
            # the crash names them interrupted.
            assert sorted(t.ti.task_id for t in state.interrupted) == [f"task-{i}" for i in range(4)]
            assert all(t.ti.try_number == round_ + 1 for t in state.tasks)
            # The next round's worker runs the next attempts.
            for t in state.tasks:
                k.clear_for_task(t.ti)


FAILING_DISK = textwrap.dedent(
    """
    import errno, json, resource, signal, sys, waymark
    # Every write past the first byte of a file now fails with EFBIG, as a
    # failing disk would fail it: the log's next append cannot be written.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    kernel = waymark.Kernel.open(sys.argv[1])
    ti = waymark.TaskInstanceRef("acme", "documents", "run-42", "ocr", 1)
    ctx = kernel.context(ti)
    ctx.set("before", 1)
    seen = {}
    def attempt(name, call):
        try:
            call()
            seen[name] = "ok"
        except waymark.Error as e:
            seen[name] = [type(e).__name__, isinstance(e, OSError), e.errno, e.filename, str(e)]
    resource.setrlimit(resource.RLIMIT_FSIZE, (1, resource.RLIM_INFINITY))
    attempt("failed", lambda: ctx.set("failed", 2))
    # Fail-stop: nothing more is written, even once the disk would take it.
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
    attempt("after", lambda: ctx.set("after", 3))
    attempt("batch", lambda: ctx.batch().set("b", 4).commit())
    attempt("start", lambda: kernel.start(ti))
    seen["read"] = ctx.get("before")
    attempt("close", kernel.close)
    seen["EFBIG"] = errno.EFBIG
    print(json.dumps(seen))
    """
)


def test_a_failed_write_raises_then_refuses_every_later_write(tmp_path):
    """Fail-stop from Python: the write the disk refused raises a
    StorageError with the errno and file; every later write (and close)
    raises PoisonedError, reads still answer, and a reopen recovers what was
    acknowledged and nothing that was refused."""
    path = tmp_path / "state"
    out = subprocess.run(
        [sys.executable, "-c", FAILING_DISK, str(path)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    name, is_os_error, errno_, filename, message = seen["failed"]
    assert name == "StorageError" and is_os_error
    assert errno_ == seen["EFBIG"] and filename.endswith(".seg") and "log" in filename
    assert "File too large" in message
    for call in ["after", "batch", "start", "close"]:
        name, is_os_error, errno_, filename, message = seen[call]
        assert name == "PoisonedError" and is_os_error, seen[call]
        assert "poisoned" in message and errno_ == seen["EFBIG"] and filename.endswith(".seg")
    assert seen["read"] == 1
    with waymark.Kernel.open(path) as k:
        ctx = k.context(make_ti())
        assert ctx.get_all() == {"before": 1}
        assert k.task(make_ti()) is None  # the refused start is not there
        ctx.set("after_reopen", 5)
        assert ctx.get("after_reopen") == 5


def test_corrupt_bytes_raise_a_corruption_error_with_the_file_and_offset(tmp_path):
    path = tmp_path / "state"
    with waymark.Kernel.open(path) as k:
        ctx = k.context(make_ti())
        for n in range(50):
            ctx.set(f"K{n}", "v" * 100)
    segment = sorted((path / "log").glob("*.seg"))[0]
    data = bytearray(segment.read_bytes())
    data[2000] ^= 0xFF  # a frame in the middle, with valid frames after it
    segment.write_bytes(bytes(data))
    views = path / "views.redb"
    if views.exists():
        views.unlink()  # make the open replay the log from its start
    with pytest.raises(waymark.CorruptionError) as raised:
        waymark.Kernel.open(path)
    assert raised.value.path == str(segment)
    assert isinstance(raised.value.offset, int) and raised.value.offset <= 2000
    assert "corrupt log" in str(raised.value)


@pytest.mark.parametrize("durability", ["sync", "periodic", "none"])
def test_the_durability_modes_and_compression_keep_what_a_close_syncs(tmp_path, durability):
    doc = {"text": "lorem ipsum " * 500, "pages": list(range(100))}
    log_bytes = {}
    for compress in (False, True):
        path = tmp_path / f"state-{compress}"
        with waymark.Kernel.open(path, durability=durability, sync_interval=0.005, compress=compress) as k:
            k.context(make_ti()).set("DOC", doc)
            log_bytes[compress] = k.stats()["log_bytes"]
        with waymark.Kernel.open(path) as k:
            assert k.context(make_ti()).get("DOC") == doc
            [put] = [e for e in k.history_of_task(make_ti()) if e.kind == "put"]
            assert put.data["value"] == doc  # the history decompresses too
    assert log_bytes[True] * 4 < log_bytes[False], log_bytes


def test_bad_open_options_raise(tmp_path):
    with pytest.raises(waymark.InvalidArgumentError, match="unknown durability"):
        waymark.Kernel.open(tmp_path / "a", durability="eventually")
    with pytest.raises(waymark.InvalidArgumentError, match="sync_interval"):
        waymark.Kernel.open(tmp_path / "b", durability="periodic", sync_interval=0)


def test_a_close_racing_new_contexts_and_writes_releases_the_directory(tmp_path):
    path = tmp_path / "state"
    for round_ in range(5):
        kernel = waymark.Kernel.open(path)
        stop = threading.Event()
        unexpected = []

        def work(i):
            n = 0
            while not stop.is_set():
                try:
                    kernel.context(make_ti(f"t{i}-{n}")).set("K", n)
                    w = kernel.watch()
                    w.close()
                except waymark.ClosedError:
                    pass
                except Exception as e:  # noqa: BLE001 - collected for the main thread
                    unexpected.append(e)
                n += 1

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.02 + 0.01 * round_)
        kernel.close()
        # Reopened at once, while the threads still make contexts on the
        # closed kernel: nothing they made may hold the directory.
        again = waymark.Kernel.open(path)
        stop.set()
        for t in threads:
            t.join()
        assert unexpected == []
        again.close()
