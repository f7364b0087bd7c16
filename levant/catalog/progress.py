"""Progress reporting for pulls: a small protocol, a silent default and a rich bar.

Fetchers and the store report bytes through :class:`Progress`; they never
print. The CLI passes :class:`RichProgress`; library callers get nothing.
"""

from __future__ import annotations

from types import TracebackType
from typing import Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.progress import Progress as _RichBar


class Progress(Protocol):
    def begin(self, description: str, total: int | None, completed: int = 0) -> None:
        """Start a new byte-counted step (a transfer, a hash); ``total`` None if unknown."""

    def advance(self, nbytes: int) -> None:
        """``nbytes`` more bytes of the current step are done."""

    def note(self, message: str) -> None:
        """A one-line remark (a source skipped, a resume)."""


class NullProgress:
    def begin(self, description: str, total: int | None, completed: int = 0) -> None:
        pass

    def advance(self, nbytes: int) -> None:
        pass

    def note(self, message: str) -> None:
        pass


class RichProgress:
    """A byte progress bar on ``console`` (stderr by default); use as a context manager."""

    def __init__(self, console: Console | None = None) -> None:
        self._bar = _RichBar(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console or Console(stderr=True),
            transient=False,
        )
        self._task: TaskID | None = None

    def __enter__(self) -> RichProgress:
        self._bar.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._bar.stop()

    def begin(self, description: str, total: int | None, completed: int = 0) -> None:
        self._finish_current()
        self._task = self._bar.add_task(description, total=total, completed=completed)

    def advance(self, nbytes: int) -> None:
        if self._task is not None:
            self._bar.advance(self._task, nbytes)

    def note(self, message: str) -> None:
        self._bar.console.print(message, markup=False, highlight=False)

    def _finish_current(self) -> None:
        if self._task is not None:
            self._bar.stop_task(self._task)
            self._task = None
