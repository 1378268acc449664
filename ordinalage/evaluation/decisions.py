"""Decision metrics for one evaluated split, as metrics.json-ready dicts (`reporting.tables` and
`reporting.plots` render them).

Keys (docs/evaluation.md ("Evaluation for decisions")): `interval` {alpha, level, method, n_cal, q, n, coverage, mean_width,
per_group}, `threshold` [rows of thresholds.THRESHOLD_KEYS], `breakdown` {by_age, <attr>..., gaps},
`calibration` {ece, ece_after, T, n_bins}. `headline` picks the few numbers `compare` shows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ordinalage.evaluation.breakdown import breakdown
from ordinalage.evaluation.thresholds import threshold_table
from ordinalage.groups import AgeGroups
from ordinalage.posterior.calibration import (
    N_BINS,
    apply_temperature,
    expected_calibration_error,
    fit_temperature,
    to_logproba,
)
from ordinalage.posterior.intervals import Calibration, interval_report, predict_interval


def interval_metrics(cal: Calibration, true_age: Any, groups: AgeGroups | str | None = None, pred_age: Any = None,
                     label_proba: Any = None, label_ages: Any = None) -> dict[str, Any]:
    """Intervals from a fitted calibration on the evaluated images, with coverage and width."""
    lo, hi = predict_interval(cal, pred_age=pred_age, label_proba=label_proba, label_ages=label_ages)
    rep = interval_report(lo, hi, true_age, groups)
    return {"alpha": cal.alpha, "level": cal.level, "method": cal.method, "n_cal": cal.n_cal, "q": cal.q, **rep}


def calibration_metrics(proba: Any, labels: Any, val_proba: Any = None, val_labels: Any = None,
                        n_bins: int = N_BINS) -> dict[str, Any]:
    """ECE of `proba` against `labels`; with validation probabilities also the temperature fitted on
    them (T) and the ECE after scaling (`ece_after`, `T` None without validation data)."""
    out: dict[str, Any] = {"ece": expected_calibration_error(proba, labels, n_bins), "ece_after": None, "T": None,
                           "n_bins": n_bins}
    if val_proba is not None and val_labels is not None:
        t = fit_temperature(to_logproba(val_proba), val_labels)
        out["T"] = t
        out["ece_after"] = expected_calibration_error(apply_temperature(to_logproba(proba), t), labels, n_bins)
    return out


def decision_metrics(true_age: Any, pred_age: Any, groups: AgeGroups | str | None = None, *,
                     group_proba: Any = None, true_group: Any = None, label_proba: Any = None,
                     label_ages: Any = None, calibration: Calibration | None = None,
                     thresholds: Sequence[int] = (), challenges: Sequence[int] = (),
                     attributes: Mapping[str, Sequence[Any]] | None = None, by: Sequence[str] = (),
                     val_group_proba: Any = None, val_true_group: Any = None, seed: int = 0,
                     min_n: int = 10, n_resamples: int = 2000) -> dict[str, Any]:
    """All decision metrics of one evaluated split, each key only when asked for: `interval` (with a
    calibration), `threshold` (with thresholds; challenges default to the thresholds), `breakdown`
    (always by age, plus the `by` attributes), `calibration` (with group_proba and true_group; the
    temperature is fitted when validation probabilities are given)."""
    out: dict[str, Any] = {}
    if calibration is not None:
        out["interval"] = interval_metrics(calibration, true_age, groups, pred_age, label_proba, label_ages)
    if thresholds:
        out["threshold"] = threshold_table(true_age, pred_age, list(thresholds), list(challenges or thresholds))
    out["breakdown"] = breakdown(true_age, pred_age, attributes, by, seed=seed, min_n=min_n, n_resamples=n_resamples)
    if group_proba is not None and true_group is not None:
        out["calibration"] = calibration_metrics(group_proba, true_group, val_group_proba, val_true_group)
    return out


def headline(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The numbers `compare` shows: interval coverage and width, the false-accept and false-reject
    rates of the first threshold row (first --threshold, first --challenge), the largest MAE gap
    over all attributes (and which attribute). Missing parts give None."""
    out: dict[str, Any] = {"coverage": None, "width": None, "false_accept": None, "false_reject": None,
                           "gap": None, "gap_by": None}
    iv = metrics.get("interval") or {}
    out["coverage"], out["width"] = iv.get("coverage"), iv.get("mean_width")
    rows = metrics.get("threshold") or []
    if rows:
        out["false_accept"], out["false_reject"] = rows[0]["false_accept"], rows[0]["false_reject"]
    gaps = (metrics.get("breakdown") or {}).get("gaps") or {}
    best = [(g["mae_gap"], name) for name, g in gaps.items() if g]
    if best:
        out["gap"], out["gap_by"] = max(best)
    return out
