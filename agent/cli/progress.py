"""Progress bars for long work, on stderr, only when a person is watching a terminal."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from agent.cli.common import err_console

Advance = Callable[[int], None]


def _ignore(n: int) -> None:
    pass


@contextmanager
def progress_bars() -> Iterator[Callable[[str, int], Advance]]:
    """`advance = start("embedding", total); advance(n)`: a bar per task with an img/s column.

    Without a terminal on stderr (pipes, systemd, CI) the bars are skipped, and rich with them.
    """
    if not sys.stderr.isatty():
        yield lambda description, total: _ignore
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
    )
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task) -> Text:
            speed = task.finished_speed or task.speed
            return Text(f"{speed:.1f} img/s" if speed else "", style="cyan")

    bars = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        console=err_console.get(),
        transient=False,
    )
    with bars:

        def start(description: str, total: int) -> Advance:
            task = bars.add_task(description, total=total)
            return lambda n: bars.advance(task, n)

        yield start
