"""The console that progress and tables go to: stderr, so stdout stays free for `--json`."""

from __future__ import annotations

from rich.console import Console


def stderr_console() -> Console:
    """A console on stderr, so stdout stays free for `--json`."""
    return Console(stderr=True)
