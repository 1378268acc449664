"""Ensemble members: an ensemble run folder's member runs, loaded and checked to be averageable.

    <run>/member-<i>/       an ordinary run folder per member (see training/ensemble.py for training)

`evaluate`, `predict`, `live`, `serve`, `export` and the Python API read members through here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ordinalage.errors import UsageError
from ordinalage.runs.checkpoint import LoadedModel, load_model
from ordinalage.runs.rundir import MEMBER_PREFIX, member_dirs


def expand_members(checkpoint: str | Path, extra: Sequence[str | Path] = ()) -> list[Path]:
    """The models of a CHECKPOINT and `--ensemble` list, in order: an ensemble run folder stands for its members."""
    return [m for path in (checkpoint, *extra) for m in (member_dirs(path) or [Path(path)])]


def load_members(checkpoint: str | Path, extra: Sequence[str | Path] = (), device: Any = "cpu") -> list[Any]:
    """Load every model of `expand_members` (LoadedModel each) and check that they can be averaged:
    the same labels (`check_compatible`) and the same input size and face crop."""
    loaded = [load_model(m, device) for m in expand_members(checkpoint, extra)]
    first = loaded[0]
    for other in loaded[1:]:
        check_compatible(first, other)
        if (other.input_spec.size, other.config.data.geometry) != (first.input_spec.size, first.config.data.geometry):
            raise UsageError(f"{checkpoint}: members see faces at other sizes or crops ({other.checkpoint_path}: "
                             f"{other.input_spec.size} px, {other.config.data.geometry}; {first.checkpoint_path}: "
                             f"{first.input_spec.size} px, {first.config.data.geometry})")
    return loaded


def is_ensemble_run(path: str | Path) -> bool:
    return bool(member_dirs(path))


def check_compatible(first: LoadedModel, other: LoadedModel) -> None:
    """Ensemble members must predict the same labels: same target, groups and label range."""
    a, b = first.config.model, other.config.model
    if (a.target, a.max_age, list(first.groups.labels)) != (b.target, b.max_age, list(other.groups.labels)):
        raise UsageError(f"ensemble: {other.checkpoint_path} predicts other labels than {first.checkpoint_path} "
                         f"(target {b.target} vs {a.target}, max_age {b.max_age} vs {a.max_age}, "
                         f"groups {other.groups.spec} vs {first.groups.spec})")


__all__ = ["MEMBER_PREFIX", "check_compatible", "expand_members", "is_ensemble_run", "load_members", "member_dirs"]
