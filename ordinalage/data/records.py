"""The one record type that every source reader yields, and the count of files a reader skips."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Record:
    """One face image: absolute `path`, `age` in years, the source's own `split` (or None), the data
    spec it came from (`source`) and `meta` (`subject`: the person's id where the dataset has one,
    `fold`: the dataset's own fold, gender, ...)."""

    path: str
    age: float
    split: str | None = None
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass
class Skipped:
    """Files a reader leaves out, counted per reason, with the first few paths as examples."""

    source: str
    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, reason: str, where: str) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        shown = self.examples.setdefault(reason, [])
        if len(shown) < 3:
            shown.append(where)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def report(self, n_kept: int) -> None:
        """One stderr line per source with skips: how many, and why (most frequent reason first)."""
        if not self.total:
            return
        reasons = "; ".join(f"{n} {reason} (e.g. {self.examples[reason][0]})"
                            for reason, n in sorted(self.counts.items(), key=lambda kv: -kv[1]))
        print(f"ordinalage: {self.source}: kept {n_kept}, skipped {self.total}: {reasons}", file=sys.stderr)
