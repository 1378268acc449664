"""A bake-off's files: bakeoff.md (the tables and verdicts), cd_diagram.png, mae_by_group.png."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ordinalage.atomic import atomic_write_text
from ordinalage.evaluation.cd_diagram import plot_cd_diagram
from ordinalage.figures import new_figure


def fmt(value: Any, digits: int = 3) -> str:
    """Table text: '-' for None, floats rounded."""
    return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _pm(row: dict[str, Any], key: str, digits: int = 3) -> str:
    if row.get(key) is None:
        return "-"
    return f"{row[key]:.{digits}f} ± {row[f'{key}_std']:.{digits}f}"


def write_markdown(path: Path, result: dict[str, Any]) -> Path:
    """bakeoff.md: what ran, the per-method table, the paired differences, missing cells, per-group MAE."""
    spec = result["spec"]
    lines = ["# Bake-off", "",
             f"Command: `{result.get('command') or 'ordinalage bakeoff'}`", "",
             f"Datasets: {', '.join(spec['data'])}; seeds: {spec['seeds']}; folds: {spec['folds']}; "
             + (f"{spec['budget_min']:g} minutes per cell" if spec.get("budget_min") else f"{spec['epochs']} epochs per cell"),
             "", "## Test metrics per method (mean ± std over seeds and folds)", "",
             "| method | runs | MAE | accuracy | one-off | CA(5) | minutes |", "|---|---|---|---|---|---|---|"]
    for row in result["methods"]:
        lines.append(f"| {row['method']} | {row['n_cells']}/{row['n_expected']} | {_pm(row, 'mae')} | "
                     f"{_pm(row, 'accuracy')} | {_pm(row, 'one_off')} | {_pm(row, 'ca5')} | {_pm(row, 'minutes', 1)} |")
    lines += ["", "## Paired differences in test MAE (a - b, years; negative: a better)", "",
              "95% CI: percentile bootstrap over test images, each image's difference averaged over the seeds "
              "that tested it. p: Wilcoxon signed-rank test over the paired runs (3 runs cannot reach p < 0.25).",
              "", "| a | b | MAE a - b | 95% CI | p (Wilcoxon) | images | runs | verdict |",
              "|---|---|---|---|---|---|---|---|"]
    for p in result["pairs"]:
        ci = "-" if p.get("ci") is None else f"[{p['ci'][0]:+.3f}, {p['ci'][1]:+.3f}]"
        diff = "-" if p.get("mae_diff") is None else f"{p['mae_diff']:+.3f}"
        lines.append(f"| {p['a']} | {p['b']} | {diff} | {ci} | {fmt(p.get('p_wilcoxon'))} | "
                     f"{p.get('n_images', 0)} | {p.get('n_runs', 0)} | {p['verdict']} |")
    best = result.get("best")
    if best:
        lines += ["", f"Lowest mean test MAE: **{best}**. Against it:", ""]
        for p in result["pairs"]:
            if best in (p["a"], p["b"]):
                lines.append(f"- {p['verdict']}")
    fr = result.get("friedman")
    if fr:
        lines += ["", "## Across datasets", "",
                  f"Friedman chi² = {fr['statistic']:.3f}, p = {fr['p_value']:.4f} ({fr['k_methods']} methods, "
                  f"{fr['n_datasets']} datasets); Nemenyi critical difference {fr['cd']:.3f} ranks."]
    ranks = result.get("ranks")
    if ranks:
        lines += ["", "## Average ranks (cd_diagram.png)", "",
                  ", ".join(f"{m} {r:.2f}" for m, r in zip(ranks["methods"], ranks["average_ranks"], strict=True))
                  + f"; CD {ranks['cd']:.3f} over {ranks['n_blocks']} {ranks['blocks']}"
                  + (" (runs of one dataset are not independent data sets: read the diagram as a picture "
                     "of consistency, not as a test)" if ranks["blocks"] == "runs" else "") + "."]
    groups = result.get("mae_by_group") or []
    if groups and groups[0]["groups"]:
        labels = groups[0]["groups"]
        lines += ["", "## Test MAE per true age group (pooled over runs; mae_by_group.png)", "",
                  "| method | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
        for row in groups:
            lines.append(f"| {row['method']} | " + " | ".join(fmt(v, 2) for v in row["mae"]) + " |")
    lines += ["", "## Missing cells", ""]
    if result["missing"]:
        lines += ["These cells have no result and are left out of every mean and test above:", "",
                  "| cell | status | reason |", "|---|---|---|"]
        lines += [f"| {m['id']} | {m['status']} | {m.get('reason') or '-'} |" for m in result["missing"]]
    else:
        lines.append("None: every cell finished.")
    return atomic_write_text(path, "\n".join(lines) + "\n")


def plot_mae_by_group(path: Path, rows: Sequence[dict[str, Any]]) -> Path | None:
    """Grouped bars: MAE per true age group, one bar per method."""
    rows = [r for r in rows if r["mae"]]
    if not rows:
        return None
    labels = rows[0]["groups"]
    x = np.arange(len(labels))
    width = 0.8 / len(rows)
    fig = new_figure(max(6.0, 0.9 * len(labels) + 2.0), 4.2)
    ax = fig.add_subplot()
    for i, row in enumerate(rows):
        values = [np.nan if v is None else v for v in row["mae"]]
        ax.bar(x + (i - (len(rows) - 1) / 2) * width, values, width=width, label=row["method"])
    ax.set_xticks(x, labels=labels)
    ax.set_xlabel("true age group")
    ax.set_ylabel("test MAE (years)")
    ax.set_title("test MAE per age group (pooled over seeds and folds)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def plot_ranks(path: Path, ranks: dict[str, Any] | None) -> Path | None:
    if not ranks:
        return None
    title = (f"average ranks over {ranks['n_blocks']} {ranks['blocks']} (test MAE; Nemenyi CD)")
    return plot_cd_diagram(ranks["methods"], ranks["average_ranks"], ranks["cd"], path, title=title)
