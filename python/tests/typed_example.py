"""A worker written against the stubs: `mypy --strict` checks it in
test_stubs.py (it is never run)."""

from __future__ import annotations

from typing import List, Optional

import waymark


def ocr(kernel: waymark.Kernel, ti: waymark.TaskInstanceRef) -> int:
    ctx: waymark.RunContext = waymark.RunContext(ti, kernel)
    lsn: int = ctx.set("LINES", ["Invoice 17"])
    ctx.push("TABLE", {"rows": 3}, metadata={"source": "ocr"})
    lines = ctx.get("LINES", default=[])
    upstream = ctx.get("LINES", from_task="scan")
    parts: List[waymark.Pulled] = ctx.pull_all("PART", from_tasks=["a", "b"])
    first = ctx.pull("PART", from_tasks=["a", "b"], default=None)
    with ctx.batch() as b:
        b.set("A", 1).set_task_state("pages_done", 3)
    entry: Optional[waymark.Entry] = ctx.get_entry("TABLE")
    record: Optional[waymark.TaskRecord] = kernel.task(ti)
    state: waymark.RunState = kernel.resume(ti.run)
    nxt: waymark.TaskInstanceRef = kernel.clear_for_task(ti)
    with kernel.watch(dag_id=ti.dag_id) as watch:
        item = watch.next(timeout=0.1)
        if isinstance(item, waymark.LoggedEvent):
            print(item.kind, item.data, item.time.isoformat())
    policy = waymark.RetryPolicy(3, backoff="exponential", retry_only=["transient"])
    delay: Optional[float] = policy.delay(1, "transient")
    try:
        kernel.start(nxt)
    except waymark.InvalidTransitionError as e:
        print(e)
    print(lines, upstream, parts, first, entry, record, state.to_retry, delay)
    return lsn


def main() -> None:
    with waymark.Kernel.open("./state") as kernel:
        ocr(kernel, waymark.TaskInstanceRef("acme", "documents", "run-42", "ocr", 1))
    k2 = waymark.create_backend_from_url("memory://")
    k2.close()
