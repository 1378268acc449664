"""The one record type that every source reader yields."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Record:
    """One face image: absolute `path`, `age` in years, the source's own `split` (or None)."""

    path: str
    age: float
    split: str | None = None
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
