"""The names of evaluation protocols (`data.protocol`) and their parsing: plain text, no data.

The splits themselves are made by `data/splits.py`; config checks a protocol's spelling here.
"""

from __future__ import annotations

from dataclasses import dataclass

from ordinalage.errors import UsageError

PROTOCOLS = ("random", "subject", "folds:K", "loso", "source")


@dataclass(frozen=True)
class Protocol:
    kind: str  # random | subject | folds | loso | source
    k: int = 0  # folds:K

    @property
    def fixed_folds(self) -> int | None:
        """The number of folds known without reading the data (None: one per subject or source fold)."""
        return {"random": 1, "subject": 1, "folds": self.k}.get(self.kind)


def parse_protocol(text: str) -> Protocol:
    """`random`, `subject`, `folds:K` (K >= 2), `loso` or `source`; errors name the config key."""
    kind, sep, arg = str(text).strip().partition(":")
    if kind == "folds" and sep:
        if arg.isdigit() and int(arg) >= 2:
            return Protocol("folds", int(arg))
        raise UsageError(f"config key 'data.protocol': {text!r} needs a whole number of folds >= 2, e.g. folds:5")
    if kind in ("random", "subject", "loso", "source") and not sep:
        return Protocol(kind)
    raise UsageError(f"config key 'data.protocol': {text!r} is not one of {', '.join(PROTOCOLS)}")
