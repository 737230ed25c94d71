"""The records waymark returns: frozen dataclasses, compared by value."""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple

if TYPE_CHECKING:
    from ._waymark import RunRef, TaskInstanceRef

__all__ = [
    "Attempt",
    "CheckpointInfo",
    "Entry",
    "Lagged",
    "LoggedEvent",
    "Pulled",
    "RunInfo",
    "RunState",
    "TaskRecord",
    "TaskResume",
]


def _time(micros: int) -> _dt.datetime:
    return _dt.datetime.fromtimestamp(micros / 1_000_000, tz=_dt.timezone.utc)


@dataclass(frozen=True)
class Entry:
    """A value read back with where it came from."""

    value: Any
    """The value, as written."""
    metadata: Any
    """The metadata written with it by ``push`` (``None`` if none)."""
    lsn: int
    """The LSN of the batch that wrote it."""
    ts_micros: int
    """When it was written, microseconds since the Unix epoch."""

    @property
    def time(self) -> _dt.datetime:
        """When it was written, as an aware UTC datetime."""
        return _time(self.ts_micros)


@dataclass(frozen=True)
class Pulled(Entry):
    """An upstream value with its provenance, from ``RunContext.pull_all``:
    an ``Entry`` with the task and attempt that wrote it."""

    task_id: str = ""
    """The upstream task."""
    try_number: int = 0
    """The attempt of it that wrote the value (its latest with the key)."""


@dataclass(frozen=True)
class Attempt:
    """One attempt of a task and its status."""

    try_number: int
    status: str
    """``scheduled``, ``running``, ``succeeded``, ``failed``,
    ``interrupted`` or ``cancelled``."""
    result: Any = None
    """A succeeded attempt's result."""
    error: Optional[str] = None
    """A failed attempt's error message."""
    kind: Optional[str] = None
    """A failed attempt's kind of failure (what a retry policy decides on)."""


@dataclass(frozen=True)
class TaskRecord:
    """A task's lifecycle: its latest attempt's status and every attempt."""

    latest_try: int
    status: str
    attempts: Tuple[Attempt, ...]
    created_micros: int
    updated_micros: int
    lsn: int
    """The LSN of the last status change."""

    @property
    def latest(self) -> Attempt:
        """The latest attempt."""
        return next(a for a in self.attempts if a.try_number == self.latest_try)


@dataclass(frozen=True)
class TaskResume:
    """One task of a run after a crash, from ``Kernel.resume``."""

    ti: "TaskInstanceRef"
    """The task's latest attempt."""
    status: str
    interrupted: bool
    """Whether this resume found it running and recorded it interrupted."""
    result: Any = None
    error: Optional[str] = None
    kind: Optional[str] = None


@dataclass(frozen=True)
class RunState:
    """A run's tasks after a crash: what a scheduler needs to skip finished
    tasks, retry interrupted and failed ones and start scheduled ones."""

    status: str
    """The run's status: ``created``, ``running``, ``succeeded``,
    ``failed``, ``cancelled`` or ``paused``."""
    tasks: Tuple[TaskResume, ...] = field(default_factory=tuple)
    recorded: Optional[int] = None
    """The LSN of the batch that recorded the interruptions, if any."""

    @property
    def succeeded(self) -> Tuple[TaskResume, ...]:
        """The tasks whose latest attempt succeeded."""
        return tuple(t for t in self.tasks if t.status == "succeeded")

    @property
    def scheduled(self) -> Tuple[TaskResume, ...]:
        """The tasks scheduled and not started."""
        return tuple(t for t in self.tasks if t.status == "scheduled")

    @property
    def to_retry(self) -> Tuple[TaskResume, ...]:
        """The tasks to run again: interrupted or failed."""
        return tuple(t for t in self.tasks if t.status in ("interrupted", "failed"))

    @property
    def interrupted(self) -> Tuple[TaskResume, ...]:
        """The tasks this resume found running and recorded interrupted."""
        return tuple(t for t in self.tasks if t.interrupted)

    @property
    def is_paused(self) -> bool:
        """Whether the run is paused: its tasks do not start until resumed."""
        return self.status == "paused"


@dataclass(frozen=True)
class CheckpointInfo:
    """A checkpoint of a run, as ``Kernel.checkpoints`` lists it."""

    name: str
    lsn: int
    """The LSN of the checkpoint's event."""
    ts_micros: int
    size_bytes: int
    """The size of the captured state."""
    checksum: int
    """CRC32 of the captured state (a restore checks it)."""

    @property
    def time(self) -> _dt.datetime:
        """When it was taken, as an aware UTC datetime."""
        return _time(self.ts_micros)


@dataclass(frozen=True)
class RunInfo:
    """A run, as ``Kernel.runs`` and ``Kernel.children`` list it."""

    run: "RunRef"
    """The run."""
    status: str
    created_micros: int
    updated_micros: int
    task_counts: Dict[str, int]
    """Tasks by the status of their latest attempt."""
    parent: Optional["TaskInstanceRef"] = None
    """For a sub-workflow, the task (at try 1) of the run that started it."""


@dataclass(frozen=True)
class LoggedEvent:
    """One event of the log, as ``history_*``, ``events_between`` and
    ``watch`` give it: what changed, where, and when."""

    lsn: int
    """The LSN of the batch the event was in (events of one batch share it)."""
    kind: str
    """``put``, ``delete``, ``clear_task``, ``task_put``, ``task_delete``,
    ``task_status``, ``run_status``, ``checkpoint``,
    ``restore_checkpoint``, ``delete_checkpoint``, ``shared_put`` or
    ``purge_run``."""
    ts_micros: int
    tenant_id: str
    dag_name: str
    dag_id: str
    task_id: Optional[str]
    """The task, for events about one task."""
    try_number: Optional[int]
    """The attempt, for events about one attempt."""
    data: Dict[str, Any]
    """The kind's own fields: ``key``, ``value`` and ``metadata`` of a put,
    ``status`` (with ``result`` or ``error`` and ``kind``) and ``worker`` of
    a task status change, ``status`` and ``parent`` (if any) of a run
    status change, ``name`` of a checkpoint, ``immutable`` of a shared
    variable."""

    @property
    def time(self) -> _dt.datetime:
        """When the change was made, as an aware UTC datetime."""
        return _time(self.ts_micros)


@dataclass(frozen=True)
class Lagged:
    """What a watch yields when its reader fell behind and events were
    dropped: read ``Kernel.events_between`` or the history from
    ``from_lsn`` to catch up. The watch goes on after it."""

    from_lsn: int
