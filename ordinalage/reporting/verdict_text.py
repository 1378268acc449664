"""The words of a bake-off's verdicts: how to read a pair's row, and a verdict with the methods' names."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

HOW_TO_READ = ("How to read: a - b below 0 means a has the lower MAE. The interval (95%) covers training noise "
               "(seeds, folds) and test-set noise; 'images only' holds the trained models fixed and 'runs only' "
               "is a t interval over the per-run differences, so the wider of the two shows which noise "
               "dominates. Verdict: 'equivalent' when the whole interval lies inside ±rope; 'a lower' / 'b lower' "
               "when the Holm-adjusted p over the pairs is below 0.05; otherwise 'undecided'. P: the "
               "probabilities that a is lower by more than the rope, that the two are within it, that b is lower.")


def named_verdict(row: Mapping[str, Any], emphasis: str = "") -> str:
    """The verdict with the methods' names for a and b (``corn lower on these test images``); a
    "lower" verdict's name part wrapped in ``emphasis`` (e.g. ``**`` for markdown)."""
    state = row["verdict"]
    for side, name in (("a lower", row["a"]), ("b lower", row["b"])):
        if state.startswith(side):
            return f"{emphasis}{name} lower{emphasis}" + state.removeprefix(side)
    return state
