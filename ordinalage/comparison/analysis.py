"""A bake-off's cells -> the comparison: per-method means over seeds and folds, paired differences
with confidence intervals and tests for every pair of methods, Friedman's test and the
critical-difference diagram across datasets, and the error per age group.

Verdicts come from `evaluation/verdicts.py` through `evaluation/pairing.py`: differences of absolute
errors on the same test images (the cells of two methods with the same dataset, fold and seed), an
interval that covers training and test-set noise, a region of practical equivalence, Holm over the
pairs; for the stated age mix and per age group.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ordinalage.comparison.spec import BakeoffSpec, Cell
from ordinalage.errors import UsageError
from ordinalage.evaluation.paired import average_ranks, friedman_test, mean_std, nemenyi_cd
from ordinalage.evaluation.pairing import (
    AgeMix,
    Block,
    by_group,
    check_mix,
    compare_all,
    group_disagreement,
    parse_age_mix,
)
from ordinalage.evaluation.predictions import TestErrors, read_test_errors
from ordinalage.groups import AgeGroups

SUMMARY_METRICS = ("mae", "accuracy", "one_off", "ca5")


def _predictions(record: dict[str, Any]) -> Path:
    return Path(record["run"]) / record.get("predictions", "eval-test/predictions.csv")


def method_summary(records: Sequence[dict[str, Any]], spec: BakeoffSpec) -> list[dict[str, Any]]:
    """One row per method: mean +- std over its finished cells of each test metric and of the minutes."""
    rows = []
    n_expected = len(spec.datasets) * spec.folds * spec.seeds
    for method in spec.methods:
        done = [r for r in records if r["method"] == method.name and r.get("status") == "done"]
        row: dict[str, Any] = {"method": method.name, "params": method.params, "n_cells": len(done),
                               "n_expected": n_expected}
        for m in SUMMARY_METRICS:
            values = [float(r["test"][m]) for r in done if r.get("test", {}).get(m) is not None]
            row[m], row[f"{m}_std"] = mean_std(values) if values else (None, None)
        minutes = [float(r["minutes"]) for r in done if r.get("minutes") is not None]
        row["minutes"], row["minutes_std"] = mean_std(minutes) if minutes else (None, None)
        rows.append(row)
    return rows


def pair_blocks(records: Sequence[dict[str, Any]], spec: BakeoffSpec) -> dict[tuple[str, str], list[Block]]:
    """For every pair of methods (a before b in the spec's order), the paired runs both finished:
    (test set, a's errors, b's errors) per (dataset, fold, seed). Each predictions.csv is read once."""
    done: dict[str, dict[tuple, dict[str, Any]]] = {}
    for r in records:
        if r.get("status") == "done":
            done.setdefault(r["method"], {})[(r["dataset"], r["fold"], r["seed"])] = r
    cache: dict[str, TestErrors] = {}

    def errors(record: dict[str, Any], dataset: str) -> TestErrors:
        path = str(_predictions(record))
        if path not in cache:
            cache[path] = read_test_errors(path, f"{dataset}|")
        return cache[path]

    out: dict[tuple[str, str], list[Block]] = {}
    for a, b in itertools.combinations([m.name for m in spec.methods], 2):
        common = sorted(set(done.get(a, {})) & set(done.get(b, {})))
        out[(a, b)] = [(f"{k[0]}|fold {k[1]}", errors(done[a][k], k[0]), errors(done[b][k], k[0])) for k in common]
    return out


def verdicts(records: Sequence[dict[str, Any]], spec: BakeoffSpec, groups: AgeGroups | None, *, rope: float = 0.1,
             age_mix: str | None = None, n_resamples: int = 2000) -> dict[str, Any]:
    """Every pair's verdict for the stated age mix, and per age group: the `pairs`, `pairs_by_group`,
    `age_mix` and `group_disagreement` entries of bakeoff.json."""
    names = [m.name for m in spec.methods]
    blocks = pair_blocks(records, spec)
    folds = spec.folds if spec.folds >= 2 else 0
    mix, dropped = AgeMix("test"), []
    if groups is not None:
        mix = parse_age_mix(age_mix, groups)
        test_sets = [blk[1] for pair in blocks.values() for blk in pair]
        mix, dropped = check_mix(mix, groups, test_sets) if test_sets else (mix, [])
    elif age_mix not in (None, "test"):
        raise UsageError(f"age_mix {age_mix}: the bake-off has no finished run to read its age groups from",
                         option="age_mix")
    try:
        pooled = compare_all(names, blocks, rope=rope, folds=folds, groups=groups, shares=mix.shares,
                             n_resamples=n_resamples)
        per_group = by_group(names, blocks, groups, rope=rope, folds=folds, n_resamples=n_resamples) if groups else []
    except ValueError as exc:
        raise UsageError(f"bake-off: runs cannot be paired ({exc})") from None
    return {"pairs": pooled, "pairs_by_group": per_group,
            "age_mix": {**(mix.to_dict(groups) if groups else {"name": "test", "shares": None}),
                        "dropped_groups": dropped},
            "group_disagreement": group_disagreement(pooled, per_group)}


def friedman(records: Sequence[dict[str, Any]], spec: BakeoffSpec) -> dict[str, Any] | None:
    """Friedman's test over datasets (mean test MAE per dataset and method), when there are at least
    two datasets and three methods that finished on all of them; None otherwise."""
    if len(spec.datasets) < 2 or len(spec.methods) < 3:
        return None
    scores = _score_matrix(records, spec, by="dataset")
    if scores is None:
        return None
    result = friedman_test(scores)
    result["cd"] = nemenyi_cd(len(spec.methods), len(spec.datasets))
    result["methods"] = [m.name for m in spec.methods]
    result["datasets"] = list(spec.datasets)
    return result


def rank_blocks(records: Sequence[dict[str, Any]], spec: BakeoffSpec) -> dict[str, Any] | None:
    """Average ranks and the Nemenyi critical difference for the CD diagram: over datasets when there
    are several, else over the paired runs (seed x fold) of the one dataset, which are not
    independent data sets, so the diagram is then a picture of consistency, not a test."""
    by = "dataset" if len(spec.datasets) >= 2 else "run"
    scores = _score_matrix(records, spec, by=by)
    if scores is None or scores.shape[0] < 2:
        return None
    return {"blocks": "datasets" if by == "dataset" else "runs", "n_blocks": int(scores.shape[0]),
            "methods": [m.name for m in spec.methods], "average_ranks": average_ranks(scores).tolist(),
            "cd": nemenyi_cd(len(spec.methods), int(scores.shape[0]))}


def _score_matrix(records: Sequence[dict[str, Any]], spec: BakeoffSpec, by: str) -> np.ndarray | None:
    """Blocks x methods test MAE (mean over seeds and folds for `by='dataset'`); None when a method
    misses a block."""
    table: dict[Any, dict[str, list[float]]] = {}
    for r in records:
        if r.get("status") != "done" or r.get("test", {}).get("mae") is None:
            continue
        key = r["dataset"] if by == "dataset" else (r["dataset"], r["fold"], r["seed"])
        table.setdefault(key, {}).setdefault(r["method"], []).append(float(r["test"]["mae"]))
    names = [m.name for m in spec.methods]
    rows = [[float(np.mean(v[n])) for n in names] for v in table.values() if all(n in v for n in names)]
    return np.asarray(rows) if rows else None


def mae_by_group(records: Sequence[dict[str, Any]], spec: BakeoffSpec, groups: AgeGroups
                 ) -> list[dict[str, Any]]:
    """Per method, the MAE within each true age group, pooled over its finished cells."""
    out = []
    for method in spec.methods:
        errors: list[np.ndarray] = []
        idx: list[np.ndarray] = []
        for r in records:
            if r["method"] == method.name and r.get("status") == "done":
                test = read_test_errors(_predictions(r))
                errors.append(test.abs_err)
                idx.append(groups.indices(test.true_age))
        row: dict[str, Any] = {"method": method.name, "groups": list(groups.labels), "mae": [], "n": []}
        if errors:
            err, gi = np.concatenate(errors), np.concatenate(idx)
            for g in range(len(groups)):
                sel = gi == g
                row["mae"].append(float(err[sel].mean()) if sel.any() else None)
                row["n"].append(int(sel.sum()))
        out.append(row)
    return out


def missing_cells(records_by_id: dict[str, dict[str, Any] | None], cells: Sequence[Cell]) -> list[dict[str, Any]]:
    """Cells without a finished result: failed (with their reason) or not run yet."""
    out = []
    for cell in cells:
        r = records_by_id.get(cell.id)
        if r is None:
            out.append({"id": cell.id, "method": cell.method.name, "seed": cell.seed, "fold": cell.fold,
                        "dataset": cell.dataset, "status": "not run", "reason": None})
        elif r.get("status") != "done":
            out.append({"id": cell.id, "method": cell.method.name, "seed": cell.seed, "fold": cell.fold,
                        "dataset": cell.dataset, "status": r.get("status"), "reason": r.get("reason")})
    return out
