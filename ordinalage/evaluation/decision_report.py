"""Decision metrics for one evaluated split: metrics.json-ready dicts and rich tables.

Keys (docs/evaluation.md ("Evaluation for decisions")): `interval` {alpha, level, method, n_cal, q, n, coverage, mean_width,
per_group}, `threshold` [rows of thresholds.THRESHOLD_KEYS], `breakdown` {by_age, <attr>..., gaps},
`calibration` {ece, ece_after, T, n_bins}. `headline` picks the few numbers `compare` shows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ordinalage.evaluation.breakdown import breakdown, plot_error_by_age
from ordinalage.evaluation.report import fmt, plot_reliability
from ordinalage.evaluation.thresholds import plot_threshold_curve, threshold_table
from ordinalage.groups import AgeGroups
from ordinalage.posterior.calibration import (
    N_BINS,
    apply_temperature,
    expected_calibration_error,
    fit_temperature,
    to_logproba,
)
from ordinalage.posterior.intervals import Calibration, interval_report, predict_interval

METHOD_TITLES = {"cdf": "predicted age distribution (CDF score)", "residual": "absolute residual"}


# ---------------------------------------------------------------------------------------------
# metrics.json dicts


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


def decision_plots(folder: str | Path, metrics: Mapping[str, Any], true_age: Any, pred_age: Any, *,
                   group_proba: Any = None, true_group: Any = None, thresholds: Sequence[int] = (),
                   challenges: Sequence[int] = (), prefix: str = "") -> list[Path]:
    """PNGs for `metrics` (from decision_metrics) in `folder`: error_by_age, threshold_<t> per
    threshold, reliability (after-scaling curve too when a temperature was fitted)."""
    folder = Path(folder)
    paths = [plot_error_by_age(folder / f"{prefix}error_by_age.png", metrics["breakdown"]["by_age"])]
    for t in thresholds:
        paths.append(plot_threshold_curve(folder / f"{prefix}threshold_{t}.png", true_age, pred_age, t,
                                          list(challenges or thresholds)))
    cal = metrics.get("calibration")
    if cal is not None and group_proba is not None and true_group is not None:
        after = None if cal.get("T") is None else apply_temperature(to_logproba(group_proba), cal["T"])
        paths.append(plot_reliability(folder / f"{prefix}reliability.png", group_proba, true_group, after))
    return paths


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


# ---------------------------------------------------------------------------------------------
# rich tables


def _ci(row: Mapping[str, Any], key: str) -> str:
    lo, hi = row.get(f"{key}_lo"), row.get(f"{key}_hi")
    text = fmt(row.get(key), 2)
    return text if lo is None or hi is None else f"{text} [{lo:.2f}, {hi:.2f}]"


def interval_table(d: Mapping[str, Any]) -> Table:
    """Coverage and mean width, overall and per true age group."""
    title = (f"{d['level']:.0%} age interval: {METHOD_TITLES.get(d['method'], d['method'])}, "
             f"calibrated on {d['n_cal']} validation images")
    table = Table(title=title, caption=f"target coverage >= {d['level']:.3f}")
    for name in ("group", "n", "coverage", "mean width (years)"):
        table.add_column(name, justify="left" if name == "group" else "right")
    for g in d.get("per_group", []):
        table.add_row(g["label"], fmt(g["n"]), fmt(g["coverage"]), fmt(g["mean_width"], 2))
    table.add_row("[bold]all[/bold]", fmt(d["n"]), f"[bold]{fmt(d['coverage'])}[/bold]",
                  f"[bold]{fmt(d['mean_width'], 2)}[/bold]")
    return table


def threshold_table_rich(rows: Sequence[Mapping[str, Any]]) -> Table:
    """One row per (threshold, challenge): counts and the two error rates."""
    table = Table(title="age threshold: accept when estimate >= challenge age",
                  caption="false accept: true < threshold but accepted; false reject: true >= threshold but rejected")
    for name in ("threshold", "challenge", "n under", "n over", "false accept", "false reject"):
        table.add_column(name, justify="right")
    for r in rows:
        table.add_row(str(r["threshold"]), str(r["challenge"]), str(r["n_under"]), str(r["n_over"]),
                      fmt(r["false_accept"]), fmt(r["false_reject"]))
    return table


def _error_table(title: str, first: str, rows: Sequence[Mapping[str, Any]], key: str, caption: str | None = None
                 ) -> Table:
    table = Table(title=title, caption=caption)
    for name in (first, "n", "signed error [95% CI]", "MAE [95% CI]"):
        table.add_column(name, justify="left" if name == first else "right")
    for r in rows:
        table.add_row(str(r[key]), fmt(r["n"]), _ci(r, "bias"), _ci(r, "mae"))
    return table


def breakdown_tables(d: Mapping[str, Any], max_age_rows: int = 25, min_n: int = 10) -> list[Table]:
    """By-age table (all years when few, else the `max_age_rows // 2` years with the highest MAE among
    those with >= min_n images), one table per attribute, and a gaps table."""
    tables = []
    ages = list(d.get("by_age", []))
    if len(ages) <= max_age_rows:
        tables.append(_error_table("error by true age (years)", "age", ages, "age"))
    else:
        k = max_age_rows // 2
        worst = sorted((r for r in ages if r["n"] >= min_n), key=lambda r: -r["mae"])[:k]
        tables.append(_error_table(f"error by true age: the {len(worst)} years with the highest MAE (n >= {min_n})",
                                   "age", sorted(worst, key=lambda r: r["age"]), "age",
                                   caption=f"{len(ages)} years in all: see metrics.json and the error-by-age PNG"))
    for name, rows in d.items():
        if name in ("by_age", "gaps"):
            continue
        tables.append(_error_table(f"error by {name}", name, rows, "value"))
    gaps = d.get("gaps") or {}
    if gaps:
        table = Table(title="largest gap between groups (highest minus lowest, 95% CI)")
        for name in ("attribute", "MAE gap", "between", "signed-error gap", "between"):
            table.add_column(name, justify="left" if name in ("attribute", "between") else "right")
        for name, g in gaps.items():
            if not g:
                table.add_row(name, "-", "fewer than two groups with enough images", "-", "")
                continue
            table.add_row(name, _ci(g, "mae_gap"), f"{g['mae_high']} vs {g['mae_low']}", _ci(g, "bias_gap"),
                          f"{g['bias_high']} vs {g['bias_low']}")
        tables.append(table)
    return tables


def calibration_table(d: Mapping[str, Any]) -> Table:
    """ECE before (and after temperature scaling)."""
    table = Table(title=f"age-group probability calibration (top-label ECE, {d.get('n_bins', N_BINS)} bins)")
    for name in ("", "ECE", "temperature"):
        table.add_column(name, justify="left" if not name else "right")
    table.add_row("model", fmt(d["ece"]), "1")
    if d.get("T") is not None:
        table.add_row("temperature-scaled (fitted on val)", fmt(d["ece_after"]), fmt(d["T"]))
    return table


def print_decisions(metrics: Mapping[str, Any], console: Console) -> None:
    """Print every decision table whose key is present in `metrics`."""
    if metrics.get("interval"):
        console.print(interval_table(metrics["interval"]))
    if metrics.get("threshold"):
        console.print(threshold_table_rich(metrics["threshold"]))
    if metrics.get("breakdown"):
        for table in breakdown_tables(metrics["breakdown"]):
            console.print(table)
    if metrics.get("calibration"):
        console.print(calibration_table(metrics["calibration"]))
