"""Age groups: parse `lo-hi` labels (and an open top group `71+`), map ages to group indices."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ordinalage.errors import UsageError

DEFAULT_GROUPS = "0-10,11-20,21-30,31-40,41-50,51-60,61-70"


@dataclass(frozen=True)
class AgeGroup:
    label: str
    lo: int
    hi: float  # math.inf for an open top group

    def contains(self, age: float) -> bool:
        return self.lo <= age <= self.hi

    @property
    def midpoint(self) -> float:
        """A representative age: the middle of a closed group, lo + 5 for an open one."""
        return (self.lo + self.hi) / 2 if math.isfinite(self.hi) else self.lo + 5.0


@dataclass(frozen=True)
class AgeGroups:
    """An ordered, non-overlapping list of age groups."""

    groups: tuple[AgeGroup, ...]

    @classmethod
    def parse(cls, spec: str | Sequence[str] | None = None) -> AgeGroups:
        """Parse `"0-10,11-20,...,71+"` (or a list of labels). Errors name the bad label."""
        if spec is None:
            spec = DEFAULT_GROUPS
        labels = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else [str(s).strip() for s in spec]
        labels = [s for s in labels if s]
        if not labels:
            raise UsageError("age groups: the list is empty")
        groups: list[AgeGroup] = []
        for i, label in enumerate(labels):
            try:
                if label.endswith("+"):
                    if i != len(labels) - 1:
                        raise UsageError(f"age groups: open group {label!r} must be the last one")
                    lo, hi = int(label[:-1]), math.inf
                else:
                    lo_s, hi_s = label.split("-")
                    lo, hi = int(lo_s), int(hi_s)
            except (ValueError, TypeError) as exc:
                raise UsageError(f"age groups: bad label {label!r} (expected 'lo-hi' such as '21-30' or an open top group such as '71+')") from exc
            if lo < 0 or hi < lo:
                raise UsageError(f"age groups: bad label {label!r} (need 0 <= lo <= hi)")
            if groups and lo <= groups[-1].hi:
                raise UsageError(f"age groups: {label!r} overlaps or is not after {groups[-1].label!r}")
            groups.append(AgeGroup(label, lo, hi))
        return cls(tuple(groups))

    @property
    def labels(self) -> list[str]:
        return [g.label for g in self.groups]

    @property
    def spec(self) -> str:
        return ",".join(self.labels)

    def __len__(self) -> int:
        return len(self.groups)

    @property
    def min_age(self) -> int:
        return self.groups[0].lo

    @property
    def max_age(self) -> float:
        return self.groups[-1].hi

    def indices(self, ages: Sequence[float] | np.ndarray) -> np.ndarray:
        """Group index of each age, -1 where it lies in no group (a fractional age counts as its whole years)."""
        a = np.asarray(ages, dtype=float)
        out = np.full(a.shape, -1, dtype=np.int64)
        for i, g in enumerate(self.groups):
            upper = g.hi + 1 if math.isfinite(g.hi) else math.inf
            out[(a >= g.lo) & (a < upper)] = i
        return out

    def clip_indices(self, ages: Sequence[float] | np.ndarray) -> np.ndarray:
        """Group index of each age; ages outside every group go to the nearest group starting below them
        (the first group for ages below the range, the last for ages above it)."""
        a = np.asarray(ages, dtype=float)
        idx = self.indices(a)
        # outside every group: the last group starting at or below the age (the first group below all)
        lows = np.array([g.lo for g in self.groups], dtype=float)
        nearest = np.clip(np.searchsorted(lows, a, side="right") - 1, 0, len(self) - 1)
        return np.where(idx >= 0, idx, nearest)

    def midpoints(self) -> np.ndarray:
        return np.array([g.midpoint for g in self.groups], dtype=float)

