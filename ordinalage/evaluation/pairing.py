"""Paired runs of two methods from their predictions.csv files, the age mix a verdict is for, and the
verdicts of every pair (pooled, and per true age group).

A pooled MAE answers "which method for this test set's age mix". ``--age-mix`` states the mix:
``test`` (as sampled), ``uniform`` (every age group weighs the same) or a file of shares (a prior.json
as ``ordinalage prior estimate`` writes it, or a CSV ``age,weight``; ages are summed into the groups).
Each test image then weighs ``share(group) / images of that group in its test set``, so a test
set's weighted mean is the mix-weighted average of its per-group MAEs.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ordinalage.errors import UsageError
from ordinalage.evaluation.predictions import TestErrors
from ordinalage.evaluation.verdicts import PairedRun, compare_pair, finish_pairs
from ordinalage.groups import AgeGroups


@dataclass(frozen=True)
class AgeMix:
    """The age mix verdicts are for: ``test`` (as sampled), ``uniform``, or shares read from a file."""

    name: str
    shares: np.ndarray | None = None  # one per group (None: as sampled; uniform: filled per test sets)

    def to_dict(self, groups: AgeGroups) -> dict[str, Any]:
        shares = None if self.shares is None else dict(zip(groups.labels, map(float, self.shares), strict=True))
        return {"name": self.name, "shares": shares}


def parse_age_mix(text: str | None, groups: AgeGroups) -> AgeMix:
    """``test`` (default), ``uniform``, or a prior.json / CSV ``age,weight`` file summed into ``groups``."""
    if text in (None, "", "test"):
        return AgeMix("test")
    if text == "uniform":
        return AgeMix("uniform", np.full(len(groups), 1.0 / len(groups)))
    path = Path(text)
    if not path.is_file():
        raise UsageError(f"age_mix {text}: not test, uniform or a file (no such file)", option="age_mix")
    from ordinalage.posterior.prior_files import read_age_weights

    shares = np.zeros(len(groups))
    for where, age, weight in read_age_weights(path):
        g = int(groups.indices([age])[0])
        if g < 0 and weight > 0:
            raise UsageError(f"age_mix {path}, {where}: age {age:g} lies in none of the age groups ({groups.spec})",
                             option="age_mix")
        if g >= 0:
            shares[g] += weight
    if shares.sum() <= 0:
        raise UsageError(f"age_mix {path}: all weights are 0", option="age_mix")
    return AgeMix(path.name, shares / shares.sum())


def mix_weights(true_age: np.ndarray, groups: AgeGroups, shares: np.ndarray | None) -> np.ndarray | None:
    """Per image ``share(group) / count(group)``; None for the test set's own mix."""
    if shares is None:
        return None
    index = groups.indices(true_age)
    counts = np.bincount(index[index >= 0], minlength=len(groups)).astype(float)
    per_group = np.divide(shares, counts, out=np.zeros(len(groups)), where=counts > 0)
    return np.where(index >= 0, per_group[np.clip(index, 0, None)], 0.0)


def check_mix(mix: AgeMix, groups: AgeGroups, test_sets: Sequence[TestErrors]) -> tuple[AgeMix, list[str]]:
    """The mix restricted to groups that every test set holds. A uniform mix drops the others (their
    labels are returned, to be reported); a file that gives weight to one of them is an error."""
    if mix.shares is None:
        return mix, []
    present = np.ones(len(groups), dtype=bool)
    for t in test_sets:
        index = groups.indices(t.true_age)
        present &= np.bincount(index[index >= 0], minlength=len(groups)) > 0
    missing = [groups.labels[g] for g in range(len(groups)) if not present[g] and mix.shares[g] > 0]
    if missing and mix.name != "uniform":
        raise UsageError(f"age_mix {mix.name}: gives weight to age group(s) {', '.join(missing)}, which some test "
                         "set holds no images of; give those groups weight 0 or use `age_mix` uniform",
                         option="age_mix")
    shares = np.where(present, mix.shares, 0.0)
    if shares.sum() <= 0:
        raise UsageError(f"age_mix {mix.name}: no age group with weight has test images", option="age_mix")
    return AgeMix(mix.name, shares / shares.sum()), missing


Block = tuple[str, TestErrors, TestErrors]  # (test set, method a's errors, method b's errors) of one paired run


def paired_runs(blocks: Sequence[Block], groups: AgeGroups | None = None, shares: np.ndarray | None = None,
                only_group: int | None = None) -> list[PairedRun]:
    """PairedRun per block, weighted to ``shares`` (over ``groups``), or restricted to one group's images."""
    runs = []
    for i, (test_set, a, b) in enumerate(blocks):
        if a.keys != b.keys:
            only_a, only_b = sorted(set(a.keys) - set(b.keys)), sorted(set(b.keys) - set(a.keys))
            raise ValueError(f"paired runs {i} ({test_set}) did not test the same images: {len(only_a)} only in a "
                             f"({', '.join(only_a[:3])}), {len(only_b)} only in b ({', '.join(only_b[:3])})")
        diffs, keys, weights = a.abs_err - b.abs_err, a.keys, None
        if only_group is not None and groups is not None:
            keep = groups.indices(a.true_age) == only_group
            diffs, keys = diffs[keep], tuple(k for k, s in zip(a.keys, keep, strict=True) if s)
        elif shares is not None and groups is not None:
            weights = mix_weights(a.true_age, groups, shares)
        runs.append(PairedRun(test_set, keys, diffs, weights))
    return runs


def compare_all(names: Sequence[str], blocks: Mapping[tuple[str, str], Sequence[Block]], *, rope: float,
                folds: int = 0, groups: AgeGroups | None = None, shares: np.ndarray | None = None,
                only_group: int | None = None, n_resamples: int = 2000) -> list[dict[str, Any]]:
    """Every pair of ``names`` (a before b) that has paired runs; Holm over the pairs compared."""
    rows = []
    for a, b in itertools.combinations(names, 2):
        pair_blocks = blocks.get((a, b)) or []
        if not pair_blocks:
            rows.append(_empty(a, b, rope, "no run finished by both"))
            continue
        runs = [r for r in paired_runs(pair_blocks, groups, shares, only_group) if len(r.keys) >= 2]
        if not runs:  # a group's images: runs that tested fewer than 2 of them tell nothing
            rows.append(_empty(a, b, rope, "fewer than 2 test images in this group"))
            continue
        rows.append(compare_pair(a, b, runs, rope=rope, folds=folds, n_resamples=n_resamples))
    finish_pairs([r for r in rows if r.get("p_value") is not None])
    return rows


def _empty(a: str, b: str, rope: float, why: str) -> dict[str, Any]:
    return {"a": a, "b": b, "mae_diff": None, "ci": None, "ci_images": None, "ci_runs": None, "rope": rope,
            "p_a_lower": None, "p_equivalent": None, "p_b_lower": None, "p_value": None, "p_holm": None,
            "n_images": 0, "n_runs": 0, "verdict": "undecided", "verdict_text": f"{a} - {b}: {why}"}


def by_group(names: Sequence[str], blocks: Mapping[tuple[str, str], Sequence[Block]], groups: AgeGroups, *,
             rope: float, folds: int = 0, n_resamples: int = 2000) -> list[dict[str, Any]]:
    """Per true age group, the pairs on that group's test images (Holm within each group)."""
    return [{"group": label, "pairs": compare_all(names, blocks, rope=rope, folds=folds, groups=groups, only_group=g,
                                                  n_resamples=n_resamples)}
            for g, label in enumerate(groups.labels)]


def group_disagreement(pooled: Sequence[dict[str, Any]], per_group: Sequence[dict[str, Any]]) -> list[str]:
    """One line per pair whose decided verdicts differ between age groups (a lower in one, b lower in another)."""
    lines = []
    for i, pair in enumerate(pooled):
        lower = {}
        for g in per_group:
            state = g["pairs"][i]["verdict"].removesuffix(" on these test images")
            if state in ("a lower", "b lower"):
                lower.setdefault(state, []).append(g["group"])
        if len(lower) == 2:
            lines.append(f"{pair['a']} vs {pair['b']}: {pair['a']} lower in {', '.join(lower['a lower'])}; "
                         f"{pair['b']} lower in {', '.join(lower['b lower'])}")
    return lines
