"""A bake-off's files: bakeoff.md (the tables and verdicts), cd_diagram.png, mae_by_group.png."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ordinalage.atomic import atomic_write_text
from ordinalage.reporting.cd_diagram import plot_cd_diagram
from ordinalage.reporting.figures import new_figure
from ordinalage.reporting.formatting import fmt, interval, plus_minus
from ordinalage.reporting.verdict_text import HOW_TO_READ, named_verdict


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
        lines.append(f"| {row['method']} | {row['n_cells']}/{row['n_expected']} | {plus_minus(row.get('mae'), row.get('mae_std'))} | "
                     f"{plus_minus(row.get('accuracy'), row.get('accuracy_std'))} | {plus_minus(row.get('one_off'), row.get('one_off_std'))} | {plus_minus(row.get('ca5'), row.get('ca5_std'))} | {plus_minus(row.get('minutes'), row.get('minutes_std'), 1)} |")
    lines += verdict_section(result)
    best = result.get("best")
    if best:
        lines += ["", f"Lowest mean test MAE: **{best}**. Against it:", ""]
        for p in result["pairs"]:
            if best in (p["a"], p["b"]):
                lines.append(f"- {p['verdict_text']}")
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


def _probs(p: dict[str, Any]) -> str:
    if p.get("p_a_lower") is None:
        return "-"
    return f"{p['p_a_lower']:.2f} / {p['p_equivalent']:.2f} / {p['p_b_lower']:.2f}"


def _verdict_words(p: dict[str, Any]) -> str:
    if p.get("mae_diff") is None:  # nothing to compare: say why
        return str(p.get("verdict_text", "")).split(": ", 1)[-1]
    return named_verdict(p, emphasis="**")


def verdict_section(result: dict[str, Any]) -> list[str]:
    """The verdict tables of bakeoff.md: pooled for the stated age mix, then per age group."""
    mix = result.get("age_mix") or {"name": "test"}
    rope = result.get("rope")
    pairs = result.get("pairs") or []
    methods = sorted({p.get("ci_method") for p in pairs if p.get("ci_method")})
    compared = [p for p in pairs if p.get("p_value") is not None]
    mix_words = {"test": "the test set's own age mix", "uniform": "a uniform mix over the age groups"}.get(
        mix["name"], f"the age mix of {mix['name']}")
    lines = ["", f"## Verdicts for {mix_words} (rope ±{rope:g} years)", "", HOW_TO_READ, "",
             f"Interval: {', '.join(methods) or '-'}; probabilities: "
             f"{compared[0].get('probabilities', '-') if compared else '-'}; Holm over {len(compared)} pairs."]
    if mix.get("dropped_groups"):
        lines.append(f"Age groups left out of the mix (no test images in some test set): {', '.join(mix['dropped_groups'])}.")
    if result.get("group_disagreement"):
        lines += ["", "**Verdicts differ between age groups** (see the table per group): "
                  + "; ".join(result["group_disagreement"]) + "."]
    corrected = any(p.get("ci_corrected") for p in pairs)  # folds: the Nadeau-Bengio interval beside
    lines += ["", "| a | b | MAE a - b | interval | images only | runs only | "
              + ("Nadeau-Bengio | " if corrected else "") + "P(a lower / equivalent / b lower) | Holm p | runs | verdict |",
              "|---|---|---|---|---|---|" + ("---|" if corrected else "") + "---|---|---|---|"]
    for p in pairs:
        diff = "-" if p.get("mae_diff") is None else f"{p['mae_diff']:+.3f}"
        lines.append(f"| {p['a']} | {p['b']} | {diff} | {interval(p.get('ci'))} | {interval(p.get('ci_images'))} | "
                     f"{interval(p.get('ci_runs'))} | " + (f"{interval(p.get('ci_corrected'))} | " if corrected else "")
                     + f"{_probs(p)} | {fmt(p.get('p_holm'))} | {p.get('n_runs', 0)} | {_verdict_words(p)} |")
    if any(not p.get("training_noise", True) for p in pairs if p.get("mae_diff") is not None):
        lines += ["", "One run per method: seed noise was not measured, so a verdict holds for these test images "
                  "and these trained models only."]
    per_group = result.get("pairs_by_group") or []
    if per_group:
        lines += ["", "## Verdicts per true age group (Holm within each group)", "",
                  "| age group | a | b | MAE a - b | interval | images | verdict |", "|---|---|---|---|---|---|---|"]
        for g in per_group:
            for p in g["pairs"]:
                diff = "-" if p.get("mae_diff") is None else f"{p['mae_diff']:+.2f}"
                lines.append(f"| {g['group']} | {p['a']} | {p['b']} | {diff} | {interval(p.get('ci'))} | "
                             f"{p.get('n_images', 0)} | {_verdict_words(p)} |")
    return lines


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
