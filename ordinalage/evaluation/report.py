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

from ordinalage.evaluation.metrics import SCALAR_METRICS

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


def stderr_console() -> Console:
    """A console on stderr, so stdout stays free for `--json`."""
    return Console(stderr=True)


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


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def confusion_figure(confusion: Sequence[Sequence[int]], labels: Sequence[str], normalize: bool = False,
                     title: str = "confusion matrix") -> Figure:
    """A confusion-matrix figure (Agg canvas): counts, or shares of each true group (rows sum to 1;
    '-' in a row whose group has no true image)."""
    cm = np.asarray(confusion, dtype=float)
    totals = cm.sum(axis=1, keepdims=True)
    values = np.divide(cm, totals, out=np.zeros_like(cm), where=totals > 0) if normalize else cm
    k = len(labels)
    side = max(4.0, 0.7 * k + 2.0)
    fig = _new_figure(side + 1.0, side)
    ax = fig.add_subplot()
    vmax = 1.0 if normalize else max(float(values.max()), 1.0)
    im = ax.imshow(values, cmap="Blues", vmin=0.0, vmax=vmax)
    fig.colorbar(im, ax=ax, label="share of true group" if normalize else "images")
    ax.set_xticks(range(k), labels=list(labels), rotation=45, ha="right")
    ax.set_yticks(range(k), labels=list(labels))
    ax.set_xlabel("predicted age group")
    ax.set_ylabel("true age group")
    ax.set_title(title)
    for i in range(k):
        for j in range(k):
            v = values[i, j]
            text = str(int(v)) if not normalize else f"{v:.2f}" if totals[i, 0] > 0 else "-"
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    color="white" if v > 0.6 * vmax else "black")
    return fig


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
    fig = _new_figure(max(6.0, 1.2 * n + 3.0), 4.5)
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
