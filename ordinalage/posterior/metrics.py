"""Age-estimation metrics: pure numpy (and scikit-learn), no torch, no I/O.

Every function returns plain Python values (float, int, None, lists) so the result is
JSON-serialisable as is. Definitions and edge cases are documented in docs/evaluation.md.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (
    cohen_kappa_score,
    confusion_matrix,
    f1_score,
    mean_absolute_error,
    mean_squared_error,
    precision_recall_fscore_support,
)

from ordinalage.errors import UsageError
from ordinalage.groups import AgeGroups

METRIC_NAMES = ("n", "accuracy", "one_off", "adjacent_accuracy", "mae", "rmse", "ca3", "ca5", "mae_groups",
                "macro_f1", "qwk", "rank_inconsistency", "groups", "confusion")
SCALAR_METRICS = METRIC_NAMES[:12]
LOWER_IS_BETTER = frozenset({"mae", "rmse", "mae_groups", "rank_inconsistency"})
RANK_TOLERANCE = 1e-6  # rank probabilities may rise by this much (float rounding) and still count as monotone


def _opt_float(x: float | np.floating | None) -> float | None:
    """float(x), or None for None / NaN."""
    if x is None:
        return None
    x = float(x)
    return None if np.isnan(x) else x


def _as_1d(values: Any, name: str, dtype: type) -> np.ndarray:
    a = np.asarray(values, dtype=dtype)
    if a.ndim != 1:
        raise UsageError(f"metrics: {name} must be one value per image (got shape {a.shape})")
    return a


def paired_ages(true_age: Any, pred_age: Any, who: str) -> tuple[np.ndarray, np.ndarray]:
    """True and predicted ages as float arrays, one finite value per image each; errors name `who`."""
    t = np.asarray(true_age, dtype=float)
    p = np.asarray(pred_age, dtype=float)
    if t.ndim != 1 or p.shape != t.shape:
        raise UsageError(f"{who}: true_age {t.shape} and pred_age {p.shape} must be one value per image")
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(p))):
        raise UsageError(f"{who}: ages must be finite numbers")
    return t, p


def _check_groups(g: np.ndarray, n_groups: int, name: str) -> None:
    bad = np.flatnonzero((g < 0) | (g >= n_groups))
    if bad.size:
        raise UsageError(f"metrics: {name}[{bad[0]}] = {g[bad[0]]} is outside the group range 0..{n_groups - 1}")


def one_off_score(true_group: np.ndarray, pred_group: np.ndarray) -> float:
    """Capstone "one-off": 1 for the exact group, 0.5 for an adjacent group, 0 otherwise; averaged."""
    d = np.abs(np.asarray(true_group) - np.asarray(pred_group))
    return float(np.mean(np.where(d == 0, 1.0, np.where(d == 1, 0.5, 0.0))))


def rank_inconsistency(rank_proba: np.ndarray, tol: float = RANK_TOLERANCE) -> float:
    """Share of rows whose ordinal probabilities P(y > k) are not monotone non-increasing in k.

    A rise of at most `tol` between neighbours is float rounding, not an inconsistency.
    """
    p = np.asarray(rank_proba, dtype=float)
    if p.ndim != 2:
        raise UsageError(f"metrics: rank_proba must be (images, ranks), got shape {p.shape}")
    if p.shape[1] < 2:
        return 0.0
    return float(np.mean(np.any(np.diff(p, axis=1) > tol, axis=1)))


def quadratic_kappa(true_group: np.ndarray, pred_group: np.ndarray, n_groups: int) -> float | None:
    """Quadratic-weighted Cohen's kappa; None when undefined (no expected disagreement, e.g. one group only)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        k = cohen_kappa_score(true_group, pred_group, labels=list(range(n_groups)), weights="quadratic")
    return _opt_float(k)


def per_group(true_group: np.ndarray, pred_group: np.ndarray, n_groups: int, labels: Sequence[str],
              abs_age_error: np.ndarray | None) -> list[dict[str, Any]]:
    """One dict per group: label, n (true count), precision, recall, f1, mae (years, over its true images).

    precision is None for a group never predicted, recall and mae for a group with no true images,
    f1 for a group neither true nor predicted (it is 0.0 when only one of the two is undefined).
    """
    g = list(range(n_groups))
    prec, rec, f1, support = precision_recall_fscore_support(true_group, pred_group, labels=g, zero_division=0)
    predicted = np.bincount(pred_group, minlength=n_groups)
    rows = []
    for i in g:
        has_true, has_pred = support[i] > 0, predicted[i] > 0
        mae = None
        if abs_age_error is not None and has_true:
            mae = float(np.mean(abs_age_error[true_group == i]))
        rows.append({
            "label": str(labels[i]),
            "n": int(support[i]),
            "precision": float(prec[i]) if has_pred else None,
            "recall": float(rec[i]) if has_true else None,
            "f1": float(f1[i]) if (has_true or has_pred) else None,
            "mae": mae,
        })
    return rows


def compute_metrics(
    true_age: Sequence[float] | np.ndarray | None,
    pred_age: Sequence[float] | np.ndarray | None,
    true_group: Sequence[int] | np.ndarray,
    pred_group: Sequence[int] | np.ndarray,
    n_groups: int,
    labels: Sequence[str] | None = None,
    rank_proba: np.ndarray | None = None,
) -> dict[str, Any]:
    """All evaluation metrics for one set of predictions (keys: METRIC_NAMES).

    Group indices must lie in 0..n_groups-1 (bin ages with `AgeGroups.clip_indices` first, so an
    age prediction outside the range lands in the first/last group); anything else is a UsageError.
    Age metrics (mae, rmse, ca3, ca5, per-group mae) are None when either age array is None;
    rank_inconsistency is None when `rank_proba` is None; qwk is None when undefined.
    n = 0 is a UsageError.
    """
    if n_groups < 1:
        raise UsageError("metrics: need at least one age group")
    tg = _as_1d(true_group, "true_group", np.int64)
    pg = _as_1d(pred_group, "pred_group", np.int64)
    n = tg.size
    if n == 0:
        raise UsageError("metrics: no images to evaluate (n = 0)")
    if pg.size != n:
        raise UsageError(f"metrics: {n} true groups but {pg.size} predicted groups")
    _check_groups(tg, n_groups, "true_group")
    _check_groups(pg, n_groups, "pred_group")
    labels = [str(i) for i in range(n_groups)] if labels is None else [str(s) for s in labels]
    if len(labels) != n_groups:
        raise UsageError(f"metrics: {len(labels)} labels for {n_groups} groups")

    abs_err = None
    age: dict[str, float | None] = {"mae": None, "rmse": None, "ca3": None, "ca5": None}
    if true_age is not None and pred_age is not None:
        ta = _as_1d(true_age, "true_age", float)
        pa = _as_1d(pred_age, "pred_age", float)
        if ta.size != n or pa.size != n:
            raise UsageError(f"metrics: {n} images but {ta.size} true ages and {pa.size} predicted ages")
        if not (np.all(np.isfinite(ta)) and np.all(np.isfinite(pa))):
            raise UsageError("metrics: ages must be finite numbers")
        abs_err = np.abs(pa - ta)
        age = {
            "mae": float(mean_absolute_error(ta, pa)),
            "rmse": float(np.sqrt(mean_squared_error(ta, pa))),
            "ca3": float(np.mean(abs_err <= 3)),
            "ca5": float(np.mean(abs_err <= 5)),
        }

    gdiff = np.abs(tg - pg)
    ri = None
    if rank_proba is not None:
        rp = np.asarray(rank_proba)
        if rp.ndim != 2 or rp.shape[0] != n:
            raise UsageError(f"metrics: rank_proba must have shape ({n}, ranks), got {rp.shape}")
        ri = rank_inconsistency(rp)
    all_groups = list(range(n_groups))
    return {
        "n": int(n),
        "accuracy": float(np.mean(gdiff == 0)),
        "one_off": one_off_score(tg, pg),
        "adjacent_accuracy": float(np.mean(gdiff <= 1)),
        "mae": age["mae"],
        "rmse": age["rmse"],
        "ca3": age["ca3"],
        "ca5": age["ca5"],
        "mae_groups": float(np.mean(gdiff)),
        "macro_f1": float(f1_score(tg, pg, labels=all_groups, average="macro", zero_division=0)),
        "qwk": quadratic_kappa(tg, pg, n_groups),
        "rank_inconsistency": ri,
        "groups": per_group(tg, pg, n_groups, labels, abs_err),
        "confusion": confusion_matrix(tg, pg, labels=all_groups).astype(int).tolist(),
    }


def baseline_metrics(
    true_age: Sequence[float] | np.ndarray | None,
    true_group: Sequence[int] | np.ndarray,
    majority_group: int,
    median_age: float | None,
    groups: AgeGroups,
) -> dict[str, Any]:
    """The same metrics for a constant predictor: always `majority_group` and `median_age`.

    Age metrics are None when `true_age` or `median_age` is None.
    """
    n = len(true_group)
    pred_group = np.full(n, int(majority_group), dtype=np.int64)
    pred_age = None if (true_age is None or median_age is None) else np.full(n, float(median_age))
    return compute_metrics(true_age, pred_age, true_group, pred_group, len(groups), labels=groups.labels)


def reference_from_truth(true_age: np.ndarray | None, true_group: np.ndarray, n_groups: int) -> dict[str, Any]:
    """{"majority_group", "median_age"} of a set of truths (ties: the lowest group index)."""
    counts = np.bincount(np.asarray(true_group, dtype=np.int64), minlength=n_groups)
    median = None if true_age is None or len(true_age) == 0 else float(np.median(true_age))
    return {"majority_group": int(np.argmax(counts)), "median_age": median}


def threshold_rates(true_age: np.ndarray, pred_age: np.ndarray, threshold: float,
                    challenges: Sequence[float] | np.ndarray) -> tuple[int, int, np.ndarray, np.ndarray]:
    """(n_under, n_over, false-accept rates, false-reject rates) for each challenge age (NaN when
    the denominator is 0); vectorised over challenges."""
    t, p = paired_ages(true_age, pred_age, "thresholds")
    c = np.asarray(challenges, dtype=float)
    under = t < threshold
    n_under, n_over = int(under.sum()), int((~under).sum())
    accepted = p[:, None] >= c[None, :]  # (N, C)
    fa = accepted[under].sum(axis=0) / n_under if n_under else np.full(c.size, np.nan)
    fr = (~accepted[~under]).sum(axis=0) / n_over if n_over else np.full(c.size, np.nan)
    return n_under, n_over, np.asarray(fa, dtype=float), np.asarray(fr, dtype=float)
