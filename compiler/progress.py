"""Progress on stderr for long work (import, passes, tuning, code generation); silent when disabled."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator


class Progress:
    """A single rich progress line that callers move through named stages and counted steps."""

    def __init__(self, bar: "object | None"):
        self._bar = bar
        self._task = bar.add_task("", total=None) if bar else None

    def stage(self, description: str, done: int = 0, total: int | None = None) -> None:
        if self._bar is not None:
            self._bar.update(self._task, description=description, completed=done, total=total)


@contextmanager
def progress(enabled: bool) -> Iterator[Progress]:
    if not enabled:
        yield Progress(None)
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, SpinnerColumn, TextColumn, TimeElapsedColumn
    from rich.progress import Progress as RichProgress

    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with RichProgress(*columns, console=Console(file=sys.stderr), transient=True) as bar:
        yield Progress(bar)
