"""Rendering shared by evaluate and compare: rich tables on stderr, matplotlib PNGs (Agg canvas)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from ordinalage.console import stderr_console  # noqa: F401 (re-exported for evaluation modules)
from ordinalage.figures import confusion_figure, new_figure
from ordinalage.posterior.calibration import N_BINS, expected_calibration_error, reliability_bins
from ordinalage.posterior.metrics import SCALAR_METRICS

METRIC_TITLES = {
    "n": "images",
    "accuracy": "accuracy (exact group)",
    "one_off": "one-off (1 exact, 0.5 adjacent)",
    "adjacent_accuracy": "adjacent accuracy (|group error| <= 1)",
    "mae": "MAE (years)",
    "rmse": "RMSE (years)",
    "ca3": "CA(3) (|age error| <= 3)",
    "ca5": "CA(5) (|age error| <= 5)",
    "mae_groups": "MAE (groups)",
    "macro_f1": "macro F1",
    "qwk": "quadratic weighted kappa",
    "rank_inconsistency": "rank inconsistency",
}


SHORT_TITLES = {
    "accuracy": "acc", "one_off": "1-off", "adjacent_accuracy": "adj", "mae": "MAE", "rmse": "RMSE",
    "ca3": "CA3", "ca5": "CA5", "mae_groups": "MAEg", "macro_f1": "mF1", "qwk": "QWK", "rank_inconsistency": "rinc",
}


def fmt(value: Any, digits: int = 3) -> str:
    """Table cell text: '-' for None, integers as is, floats rounded."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


# ---------------------------------------------------------------------------------------------
# rich tables


def metrics_table(result: Mapping[str, Any], title: str = "metrics") -> Table:
    """Every scalar metric beside the baseline (if any)."""
    baseline = result.get("baseline") or {}
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("model", justify="right")
    source = result.get("baseline_source")
    table.add_column(f"baseline ({source})" if source else "baseline", justify="right")
    for key in SCALAR_METRICS:
        table.add_row(METRIC_TITLES.get(key, key), fmt(result.get(key)), fmt(baseline.get(key)))
    return table


def groups_table(result: Mapping[str, Any]) -> Table:
    """One row per age group: true count, precision, recall, F1, MAE."""
    table = Table(title="per age group")
    for name, justify in [("group", "left"), ("n", "right"), ("precision", "right"), ("recall", "right"),
                          ("F1", "right"), ("MAE", "right")]:
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for g in result.get("groups", []):
        table.add_row(g["label"], fmt(g["n"]), fmt(g["precision"]), fmt(g["recall"]), fmt(g["f1"]), fmt(g["mae"]))
    return table


def confusion_table(confusion: Sequence[Sequence[int]], labels: Sequence[str]) -> Table:
    """Counts, rows = true group, columns = predicted group; the diagonal in bold."""
    table = Table(title="confusion (rows: true, columns: predicted)")
    table.add_column("true \\ pred")
    for label in labels:
        table.add_column(label, justify="right")
    for i, row in enumerate(confusion):
        cells = [f"[bold]{v}[/bold]" if i == j else str(v) for j, v in enumerate(row)]
        table.add_row(labels[i], *cells)
    return table


def print_evaluation(result: Mapping[str, Any], console: Console | None = None, title: str = "metrics") -> None:
    """Metrics beside baseline, per-group rows and the confusion matrix, on stderr."""
    console = console or stderr_console()
    console.print(metrics_table(result, title=title))
    console.print(groups_table(result))
    labels = [g["label"] for g in result.get("groups", [])]
    console.print(confusion_table(result.get("confusion", []), labels))
    skipped = result.get("skipped") or []
    if skipped:
        console.print(f"[yellow]{len(skipped)} unreadable image(s) skipped[/yellow]")


def compare_table(rows: Sequence[Mapping[str, Any]], info_columns: Sequence[str], metric_columns: Sequence[str],
                  best_rows: Mapping[str, set[int]]) -> Table:
    """One row per run; the best value of each metric column in bold green with a '*' (short
    metric headers, explained in the caption)."""
    legend = ", ".join(f"{SHORT_TITLES[c]}={c}" for c in metric_columns if c in SHORT_TITLES)
    table = Table(title="runs (best per column marked *)", caption=legend)
    table.add_column("run")
    for c in info_columns:
        table.add_column(c)
    for c in metric_columns:
        table.add_column(SHORT_TITLES.get(c, c), justify="right", no_wrap=True)
    for i, row in enumerate(rows):
        cells = [fmt(row.get(c)) for c in info_columns]
        for c in metric_columns:
            text = fmt(row.get(c))
            cells.append(f"[bold green]{text}*[/bold green]" if i in best_rows.get(c, set()) else text)
        table.add_row(str(row["run"]), *cells)
    return table


def print_wide(table: Table, console: Console | None = None) -> None:
    """Print `table` without squeezing numbers into '…': widen the console to the table if needed."""
    console = console or stderr_console()
    need = Measurement.get(console, console.options.update_width(10_000), table).maximum
    if need > console.width:
        console = Console(stderr=console.stderr, width=need)
    console.print(table)


# ---------------------------------------------------------------------------------------------
# matplotlib (Figure + Agg canvas: no pyplot, no global backend switch)


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
    fig = Figure(figsize=(8.0, 4.0), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
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
