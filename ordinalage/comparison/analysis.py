"""A bake-off's cells -> the comparison: per-method means over seeds and folds, paired differences
with confidence intervals and tests for every pair of methods, Friedman's test and the
critical-difference diagram across datasets, and the error per age group.

Paired statistics come from `evaluation/paired.py`: differences of absolute errors on the same test
images (the cells of two methods with the same dataset, fold and seed), a percentile bootstrap over
images for the 95% CI, the Wilcoxon signed-rank test over the paired runs.
"""

from __future__ import annotations

import csv
import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ordinalage.comparison.spec import BakeoffSpec, Cell
from ordinalage.errors import UsageError
from ordinalage.evaluation.compare import read_abs_errors
from ordinalage.evaluation.paired import average_ranks, friedman_test, mean_std, nemenyi_cd, paired_comparison
from ordinalage.groups import AgeGroups

SUMMARY_METRICS = ("mae", "accuracy", "one_off", "ca5")


def read_ages(predictions_csv: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(true ages, predicted ages) of a predictions.csv."""
    true, pred = [], []
    with Path(predictions_csv).open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            true.append(float(row["true_age"]))
            pred.append(float(row["pred_age"]))
    return np.asarray(true), np.asarray(pred)


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


def pairs(records: Sequence[dict[str, Any]], spec: BakeoffSpec, n_resamples: int = 2000) -> list[dict[str, Any]]:
    """Every pair of methods (a before b in the spec's order) on the runs both finished."""
    by_method: dict[str, dict[tuple, dict[str, Any]]] = {}
    for r in records:
        if r.get("status") == "done":
            by_method.setdefault(r["method"], {})[(r["dataset"], r["fold"], r["seed"])] = r
    out = []
    for a, b in itertools.combinations([m.name for m in spec.methods], 2):
        common = sorted(set(by_method.get(a, {})) & set(by_method.get(b, {})))
        if not common:
            out.append({"a": a, "b": b, "mae_diff": None, "ci": None, "p_wilcoxon": None, "n_images": 0,
                        "n_runs": 0, "verdict": f"{a} - {b}: no run finished by both"})
            continue
        blocks_a = [read_abs_errors(_predictions(by_method[a][k]), f"{k[0]}|") for k in common]
        blocks_b = [read_abs_errors(_predictions(by_method[b][k]), f"{k[0]}|") for k in common]
        try:
            row = paired_comparison(a, b, blocks_a, blocks_b, n_resamples=n_resamples)
        except ValueError as exc:
            raise UsageError(f"bake-off: {a} and {b} cannot be paired ({exc})") from None
        out.append(row)
    return out


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
                true, pred = read_ages(_predictions(r))
                errors.append(np.abs(pred - true))
                idx.append(groups.indices(true))
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
