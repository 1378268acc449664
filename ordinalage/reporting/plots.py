"""Figures written as PNG files: confusion matrices, run comparisons, age mixes, reliability
diagrams, error by age, age-threshold curves, per-dataset MAE matrices (matplotlib Figures on Agg
canvases: no pyplot state, safe in threads and servers)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ordinalage.posterior.calibration import (
    N_BINS,
    apply_temperature,
    expected_calibration_error,
    reliability_bins,
    to_logproba,
)
from ordinalage.posterior.metrics import paired_ages, threshold_rates
from ordinalage.reporting.figures import confusion_figure, new_figure


def plot_confusion(confusion: Sequence[Sequence[int]], labels: Sequence[str], path: str | Path,
                   normalize: bool = False, title: str = "confusion matrix") -> Path:
    """Write `confusion_figure` as a PNG."""
    fig = confusion_figure(confusion, labels, normalize, title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def plot_compare(names: Sequence[str], mae: Sequence[float | None], accuracy: Sequence[float | None],
                 path: str | Path) -> Path:
    """Write a PNG with two bar charts: MAE (years) and accuracy per run ('n/a' where missing)."""
    n = len(names)
    fig = new_figure(max(6.0, 1.2 * n + 3.0), 4.5)
    for pos, (values, label, title) in enumerate([(mae, "MAE (years, lower is better)", "test MAE"),
                                                  (accuracy, "accuracy (higher is better)", "test accuracy")]):
        ax = fig.add_subplot(1, 2, pos + 1)
        heights = [0.0 if v is None else float(v) for v in values]
        bars = ax.bar(range(n), heights, color="tab:blue" if pos == 0 else "tab:orange")
        for bar, v in zip(bars, values, strict=True):
            ax.annotate("n/a" if v is None else f"{v:.3g}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=8)
        ax.set_xticks(range(n), labels=list(names), rotation=30, ha="right")
        ax.set_ylabel(label)
        ax.set_title(title)
        if pos == 1:
            ax.set_ylim(0, 1.05)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def plot_prior(path_png: str | Path, label_ages: np.ndarray | Sequence[float], estimated: np.ndarray,
               train: np.ndarray | None = None, true: np.ndarray | None = None,
               title: str = "age mix: estimated vs training") -> Path:
    """PNG of the estimated label mix (bars) against the training mix (and the true mix when known)."""

    ages = np.asarray(label_ages, dtype=np.float64)
    fig = new_figure(8.0, 4.0)
    ax = fig.add_subplot()
    width = float(np.min(np.diff(ages))) if len(ages) > 1 else 1.0
    ax.bar(ages, np.asarray(estimated, dtype=float), width=0.9 * width, color="tab:blue", alpha=0.6,
           label="estimated (EM)")
    if train is not None:
        ax.plot(ages, np.asarray(train, dtype=float), color="tab:orange", lw=2, label="training (as the model saw it)")
    if true is not None:
        ax.plot(ages, np.asarray(true, dtype=float), color="black", lw=1.5, ls="--", label="true")
    ax.set_xlabel("age (label)")
    ax.set_ylabel("share of images")
    ax.set_title(title)
    ax.legend()
    path = Path(path_png)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def plot_reliability(png: str | Path, proba: Any, labels: Any, proba_after: Any = None, n_bins: int = N_BINS,
                     title: str = "reliability (age-group probabilities)") -> Path:
    """Reliability diagram PNG: accuracy vs mean confidence per bin (before, and after temperature
    scaling when `proba_after` is given), the diagonal = perfect calibration, ECE in the legend."""
    fig = new_figure(5.5, 5.0)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="gray", linestyle=":", linewidth=1, label="perfect")
    series = [("before", proba, "tab:red")] + ([("after", proba_after, "tab:blue")] if proba_after is not None else [])
    for name, p, color in series:
        rows = [r for r in reliability_bins(p, labels, n_bins) if r["n"]]
        ece = expected_calibration_error(p, labels, n_bins)
        ax.plot([r["confidence"] for r in rows], [r["accuracy"] for r in rows], marker="o", color=color,
                label=f"{name} (ECE {ece:.3f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("mean confidence (largest probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    path = Path(png)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def plot_error_by_age(png: str | Path, rows: Sequence[Mapping[str, Any]], title: str = "error by true age") -> Path:
    """PNG from `by_age` rows: signed error and MAE vs true age with their 95% bands, and the image
    count per year below."""
    def col(key: str) -> np.ndarray:
        return np.array([np.nan if r[key] is None else r[key] for r in rows], dtype=float)

    age = col("age")
    fig = new_figure(8.0, 5.5)
    ax, axn = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    for key, color, label in (("bias", "tab:red", "signed error (estimate - truth)"), ("mae", "tab:blue", "MAE")):
        ax.plot(age, col(key), color=color, label=label, linewidth=1.2)
        ax.fill_between(age, col(f"{key}_lo"), col(f"{key}_hi"), color=color, alpha=0.2, linewidth=0)
    ax.axhline(0, color="gray", linewidth=0.8)
    ax.set_ylabel("years")
    ax.set_title(f"{title} (bands: bootstrap 95% CI)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    axn.bar(age, col("n"), width=1.0, color="gray")
    axn.set_ylabel("images")
    axn.set_xlabel("true age (years)")
    path = Path(png)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def plot_threshold_curve(png: str | Path, true_age: Any, pred_age: Any, threshold: int,
                         challenges: Sequence[int]) -> Path:
    """PNG: false-accept and false-reject rate vs challenge age (every whole age over the span of
    `challenges` and `threshold`, the requested challenge ages marked)."""
    t, p = paired_ages(true_age, pred_age, "thresholds")
    lo = min(int(threshold), *map(int, challenges)) - 3
    hi = max(int(threshold), *map(int, challenges)) + 5
    dense = np.arange(max(lo, 0), hi + 1)
    n_under, n_over, fa, fr = threshold_rates(t, p, threshold, dense)
    marks = np.asarray(challenges, dtype=float)
    _, _, fa_m, fr_m = threshold_rates(t, p, threshold, marks)
    fig = new_figure(6.5, 4.2)
    ax = fig.add_subplot()
    ax.plot(dense, fa, color="tab:red", label=f"false accept (true < {threshold}, n={n_under})")
    ax.plot(dense, fr, color="tab:blue", label=f"false reject (true >= {threshold}, n={n_over})")
    ax.scatter(marks, fa_m, color="tab:red", zorder=3)
    ax.scatter(marks, fr_m, color="tab:blue", zorder=3)
    ax.axvline(threshold, color="gray", linestyle=":", linewidth=1)
    ax.set_xlabel("challenge age (accept when estimate >= challenge)")
    ax.set_ylabel("rate")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"age threshold {threshold}")
    ax.legend(loc="center right", fontsize=8)
    ax.grid(alpha=0.3)
    path = Path(png)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def plot_mae_matrix(runs: Sequence[str], datasets: Sequence[str], values: np.ndarray, path: str | Path,
                    title: str = "test MAE (years) per run and dataset") -> Path:
    """A heat-map PNG of the matrix (lower is better: darker), each cell labelled, 'n/a' where missing."""
    values = np.asarray(values, dtype=float)
    fig = new_figure(max(5.0, 1.3 * len(datasets) + 3.0), max(3.0, 0.6 * len(runs) + 2.0))
    ax = fig.add_subplot()
    finite = values[np.isfinite(values)]
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    im = ax.imshow(np.ma.masked_invalid(values), cmap="viridis_r", vmin=vmin, vmax=max(vmax, vmin + 1e-9),
                   aspect="auto")
    fig.colorbar(im, ax=ax, label="MAE (years)")
    ax.set_xticks(range(len(datasets)), labels=[_short(d) for d in datasets], rotation=30, ha="right")
    ax.set_yticks(range(len(runs)), labels=[_short(r) for r in runs])
    ax.set_xlabel("dataset")
    ax.set_ylabel("run")
    ax.set_title(title)
    mid = (vmin + vmax) / 2
    for i in range(len(runs)):
        for j in range(len(datasets)):
            v = values[i, j]
            ax.text(j, i, "n/a" if not math.isfinite(v) else f"{v:.2f}", ha="center", va="center", fontsize=8,
                    color="white" if math.isfinite(v) and v > mid else "black")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def _short(name: str, width: int = 28) -> str:
    """A spec or run path shortened for an axis label: `kind:…/last/two`."""
    if len(name) <= width:
        return name
    kind, sep, rest = name.partition(":")
    tail = "/".join(Path(rest if sep else name).parts[-2:])
    return f"{kind}:…/{tail}" if sep else f"…/{tail}"


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
