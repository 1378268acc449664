"""The console that progress and tables go to: stderr, so stdout stays free for `--json`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console


def stderr_console() -> Console:
    """A console on stderr, so stdout stays free for `--json`."""
    return Console(stderr=True)


@contextmanager
def transient_progress(description: str, total: int, show: bool = True) -> Iterator[Callable[[int], None] | None]:
    """A progress bar on stderr that disappears when done; yields `advance(n)` (None when not shown)."""
    if not show:
        yield None
        return
    from rich.progress import Progress

    with Progress(console=stderr_console(), transient=True) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.update(task, advance=n)
