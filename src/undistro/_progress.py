"""Progress bars in the terminal, for long transfers and builds.

Library code (the source cache, the builder; image builds later) takes a
``bars`` argument and reports to it; it never decides whether to draw. The
default, :data:`QUIET`, draws nothing and imports nothing. Only a command
run by a person asks :func:`for_terminal`, which gives bars drawn by
``rich`` when stdout is a terminal, and :data:`QUIET` otherwise (a pipe, a
file, CI, ``TERM=dumb``, ``UNDISTRO_PROGRESS=0``). So the agent, whose
stdout may well be a terminal, never draws and never imports rich (+7 MB,
~50-70 ms: docs/benchmarks.md, "Content: fleet page").

Example::

    bars = for_terminal()
    with bars.transfer("zlib-1.3.tar.gz", total=1_200_000) as advance:
        for chunk in chunks:
            advance(len(chunk))
    with bars.steps("building", total=3) as step:
        for name in ("zlib", "lua", "hello"):
            step(name)
            build(name)
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from typing import IO, Any, Protocol


class Bars(Protocol):
    """Where long work reports its progress."""

    def transfer(
        self, label: str, total: int | None
    ) -> contextlib.AbstractContextManager[Callable[[int], None]]:
        """Bytes moving: yields ``advance(nbytes)``; ``total`` None if unknown."""
        ...

    def steps(
        self, label: str, total: int
    ) -> contextlib.AbstractContextManager[Callable[[str], None]]:
        """A sequence of long steps: yields ``step(what)``, called as each begins."""
        ...


class Quiet:
    """Draws nothing: the default everywhere but a person's terminal."""

    @contextlib.contextmanager
    def transfer(self, label: str, total: int | None) -> Iterator[Callable[[int], None]]:
        yield _ignore

    @contextlib.contextmanager
    def steps(self, label: str, total: int) -> Iterator[Callable[[str], None]]:
        yield _ignore


QUIET: Bars = Quiet()


def _ignore(_value: Any) -> None:
    pass


def for_terminal(stream: IO[str] | None = None) -> Bars:
    """Bars on ``stream`` (stdout) if it is a terminal, else :data:`QUIET`."""
    out = stream if stream is not None else sys.stdout
    if os.environ.get("UNDISTRO_PROGRESS", "1") == "0" or os.environ.get("TERM") == "dumb":
        return QUIET
    try:
        if not out.isatty():
            return QUIET
    except (AttributeError, ValueError):  # no isatty, or closed
        return QUIET
    return Terminal(out)


class Terminal:
    """Bars drawn by rich on a terminal; they vanish when the work is done
    (``transient``), leaving the command's own lines."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    @contextlib.contextmanager
    def transfer(self, label: str, total: int | None) -> Iterator[Callable[[int], None]]:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        columns = (
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
        )
        with self._progress(*columns) as progress:
            task = progress.add_task(label, total=total)
            yield lambda n: progress.advance(task, n)

    @contextlib.contextmanager
    def steps(self, label: str, total: int) -> Iterator[Callable[[str], None]]:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        columns = (
            SpinnerColumn(),
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        with self._progress(*columns) as progress:
            task = progress.add_task(label, total=total)
            begun = [0]

            def step(what: str) -> None:
                if begun[0]:
                    progress.advance(task)
                begun[0] += 1
                progress.update(task, description=f"{label} {what}")

            yield step

    def _progress(self, *columns: Any) -> Any:
        from rich.console import Console
        from rich.progress import Progress

        return Progress(*columns, console=Console(file=self.stream), transient=True)
