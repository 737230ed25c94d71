"""waymark: an embedded, event-sourced store for the state of workflow tasks.

A worker opens one :class:`Kernel` on a state directory and gives each task
attempt a :class:`RunContext` for a :class:`TaskInstanceRef`. Attempt state
(``set``/``get``) belongs to one try and is cleared before a retry; task
state (``set_task_state``) survives retries; upstream reads (``get(...,
from_task=)``, ``pull``, ``pull_all``) see the latest attempt of another task
of the same run that has the key. Every write is an event in the engine's
log, durable when the call returns under the default durability (``sync``).

Values are any JSON value (stored as compact UTF-8 JSON text, so the
``waymark`` command line shows them as written) or ``bytes`` (stored as a
zero byte followed by the bytes).
"""

from __future__ import annotations

from typing import Any

from . import errors
from ._types import (
    Attempt,
    CheckpointInfo,
    Entry,
    Lagged,
    LoggedEvent,
    Pulled,
    RunInfo,
    RunState,
    TaskRecord,
    TaskResume,
)
from ._waymark import (
    Batch,
    Kernel,
    RetryPolicy,
    RunContext,
    RunRef,
    TaskInstanceRef,
    Watch,
    __version__,
)
from .errors import (
    ClosedError,
    ConflictError,
    CorruptionError,
    DiskFullError,
    Error,
    HistoryRemovedError,
    InvalidArgumentError,
    InvalidTransitionError,
    LimitError,
    LockedError,
    NotFoundError,
    PoisonedError,
    RefusedError,
    StorageError,
)

__all__ = [
    "Attempt",
    "Batch",
    "CheckpointInfo",
    "ClosedError",
    "ConflictError",
    "CorruptionError",
    "DiskFullError",
    "Entry",
    "Error",
    "HistoryRemovedError",
    "InvalidArgumentError",
    "InvalidTransitionError",
    "Kernel",
    "Lagged",
    "LimitError",
    "LockedError",
    "LoggedEvent",
    "NotFoundError",
    "PoisonedError",
    "Pulled",
    "RefusedError",
    "RetryPolicy",
    "RunContext",
    "RunInfo",
    "RunRef",
    "RunState",
    "StorageError",
    "TaskInstanceRef",
    "TaskRecord",
    "TaskResume",
    "Watch",
    "create_backend",
    "create_backend_from_url",
    "errors",
    "__version__",
]


def create_backend_from_url(url: str) -> Kernel:
    """A kernel by URL: ``file:///path/to/dir`` or ``memory://`` (Marie's
    factory name)."""
    return Kernel.open_url(url)


def create_backend(kind: str, **options: Any) -> Kernel:
    """A kernel by kind (Marie's factory name): ``"memory"``, or ``"file"``
    with ``path=`` (and optionally ``worker_id=``)."""
    if kind == "memory":
        if options:
            raise InvalidArgumentError(
                f"the memory backend takes no options; got {sorted(options)}"
            )
        return Kernel.in_memory()
    if kind == "file":
        path = options.pop("path", None)
        if path is None:
            raise InvalidArgumentError('the file backend needs path="..."')
        worker_id = options.pop("worker_id", None)
        if options:
            raise InvalidArgumentError(f"unknown options for the file backend: {sorted(options)}")
        return Kernel.open(path, worker_id=worker_id)
    raise InvalidArgumentError(f'unknown backend {kind!r}: use "memory" or "file"')
