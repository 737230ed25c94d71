"""The exceptions waymark raises.

Every error of the engine and the kernel is an instance of :class:`Error`,
with the engine's own message. The classes below sort them by what a caller
does about them; the ones a caller checks with a built-in class as well
(``ValueError``, ``LookupError``, ``OSError``) derive from it too.
"""

from __future__ import annotations

from typing import Optional

__all__ = [
    "Error",
    "InvalidArgumentError",
    "LimitError",
    "LockedError",
    "CorruptionError",
    "RefusedError",
    "InvalidTransitionError",
    "ConflictError",
    "NotFoundError",
    "HistoryRemovedError",
    "StorageError",
    "DiskFullError",
    "PoisonedError",
    "ClosedError",
]


class Error(Exception):
    """Every error waymark raises."""


class InvalidArgumentError(Error, ValueError):
    """A name, key, try number, option or URL is not valid. Nothing was
    written."""


class LimitError(InvalidArgumentError):
    """A key, value, event or batch is over the engine's limit. Nothing was
    written. (An over-long name is an ``InvalidArgumentError`` from the
    reference's own check.)"""


class LockedError(Error):
    """The state directory is open already: by another process (only one
    process may write a directory), or by another kernel of this process
    (share that one instead)."""


class CorruptionError(Error):
    """Bytes on disk fail their checks. ``path`` names the file and
    ``offset`` the byte where it is known (``None`` where not)."""

    path: Optional[str] = None
    offset: Optional[int] = None


class RefusedError(Error):
    """The kernel refused a decision on the state it found. Nothing was
    written."""


class InvalidTransitionError(RefusedError):
    """A task or run cannot go to the status asked from the one it has, or
    the attempt is not the latest, or the run is paused or over."""


class ConflictError(RefusedError):
    """A condition did not hold, or the state kept changing under every
    try, or an immutable shared variable is set already. Nothing was
    written; reading again and deciding again is safe."""


class NotFoundError(RefusedError, LookupError):
    """An unknown task, run or checkpoint: the kernel refused to act on
    it, and nothing was written."""


class HistoryRemovedError(Error):
    """The log no longer holds the LSN asked for (retention removed it)."""


class StorageError(Error, OSError):
    """The disk or the engine's threads failed under it: an I/O error, a
    failed snapshot, a condition that could not be read. When an I/O error
    of the operating system is behind it, ``errno`` and ``filename`` say
    which and on what file, as for ``open()`` (``errno.ENOSPC`` for a full
    disk); otherwise they are ``None``."""

    def __str__(self) -> str:
        # The engine's message, which names the file and the error already:
        # not OSError's "[Errno N] strerror: filename".
        return str(self.args[0]) if self.args else ""


class PoisonedError(StorageError):
    """A write or sync failed earlier, so the engine refuses every further
    write (fail-stop). Reopen the directory to recover what is durable."""


class DiskFullError(PoisonedError):
    """The disk is full; the engine refuses further writes until reopened
    with room."""


class ClosedError(Error):
    """The kernel is closed."""
