"""The records waymark returns: frozen dataclasses, compared by value."""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from typing import Any, Optional, Tuple

__all__ = ["Entry", "Pulled", "Attempt", "TaskRecord", "TaskResume", "RunState"]


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
class Pulled:
    """An upstream value with its provenance, from ``RunContext.pull_all``."""

    task_id: str
    """The upstream task."""
    try_number: int
    """The attempt of it that wrote the value (its latest with the key)."""
    value: Any
    metadata: Any
    lsn: int
    ts_micros: int

    @property
    def time(self) -> _dt.datetime:
        """When it was written, as an aware UTC datetime."""
        return _time(self.ts_micros)


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

    ti: Any
    """The task's latest attempt (a ``TaskInstanceRef``)."""
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
