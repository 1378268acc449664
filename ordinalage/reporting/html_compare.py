"""The HTML report's sections of several runs (the comparison table and paired differences) and of
a bake-off folder (methods, verdicts, ranks, MAE by age group, cells)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ordinalage.posterior.metrics import LOWER_IS_BETTER, SCALAR_METRICS
from ordinalage.reporting.cd_diagram import plot_cd_diagram
from ordinalage.reporting.figures import new_figure
from ordinalage.reporting.formatting import METRIC_TITLES, SHORT_TITLES, fmt, plus_minus
from ordinalage.reporting.formatting import interval as _interval_text
from ordinalage.reporting.html import (
    CELLS,
    COMPARE,
    MAE_BY_GROUP,
    METHODS,
    MISSING,
    OVERVIEW,
    PAIRED,
    RANKS,
    VERDICTS,
    drawn_uri,
    figure_uri,
    file_uri,
    image,
    kv,
    note,
    pre,
    read_json,
    section,
    table,
    text,
)
from ordinalage.reporting.plots import plot_compare
from ordinalage.reporting.verdict_text import HOW_TO_READ


def compare_sections(result: Mapping[str, Any], tied: Mapping[str, set[int]], pairs: Sequence[Mapping[str, Any]],
                     skipped: Sequence[str], info_columns: Sequence[str], decision_columns: Sequence[str]
                     ) -> list[dict[str, Any]]:
    """The sections of several runs: `compare_runs`'s `result` with the best row(s) of each column
    (`tied`), and the paired differences of the pairs that share their test images (`skipped`: why
    the others were left out)."""
    rows = result["runs"]
    metrics = [m for m in (*SCALAR_METRICS, *decision_columns) if any(r.get(m) is not None for r in rows)] or ["n"]
    body = []
    for i, r in enumerate(rows):
        cells: list[Any] = [r["run"], *(fmt(r.get(c)) for c in info_columns)]
        for m in metrics:
            cells.append({"text": fmt(r.get(m)), "best": i in tied.get(m, set())})
        body.append(cells)
    legend = ", ".join(f"{SHORT_TITLES[c]} = {METRIC_TITLES.get(c, c)}" for c in metrics if c in SHORT_TITLES)
    blocks: list[dict[str, Any] | None] = [
        text("Test metrics of each run (summary.json test, else eval-test/metrics.json); the best value of each "
             f"column is marked (lower is better for {', '.join(sorted(LOWER_IS_BETTER))} and the decision columns but "
             "coverage)."),
        table(["run", *info_columns, *(SHORT_TITLES.get(m, m) for m in metrics)], body, caption=legend)]
    missing = [r["run"] for r in rows if r.get("metrics_source") is None]
    if missing:
        blocks.append(note(f"No test metrics yet: {', '.join(missing)} (ordinalage evaluate RUN)."))
    blocks.append(image(drawn_uri(lambda p: plot_compare([r["run"] for r in rows], [r.get("mae") for r in rows],
                                                         [r.get("accuracy") for r in rows], p)) or "", "MAE and accuracy per run"))
    out = [section(COMPARE, *blocks)]
    pblocks: list[dict[str, Any] | None] = [text(f"Paired differences in test MAE on the same test images. {HOW_TO_READ}")]
    if pairs:
        pblocks.append(_verdict_table(pairs))
    if skipped:
        pblocks.append(note("Pairs skipped (they do not share their test images, or one has none):"))
        pblocks.append({"kind": "list", "items": skipped})
    out.append(section(PAIRED, *pblocks))
    return out


def _verdict_table(pairs: list[dict[str, Any]]) -> dict[str, Any]:
    """The pair fields in a few columns: difference, the three intervals, probabilities, Holm p, verdict."""
    return table(["a", "b", "MAE a - b", "interval", "images only", "runs only", "P(a lower / equiv. / b lower)",
                  "Holm p", "images", "runs", "verdict"],
                 [[p["a"], p["b"], f"{p['mae_diff']:+.3f}" if p.get("mae_diff") is not None else "-",
                   _interval_text(p.get("ci"), 3), _interval_text(p.get("ci_images"), 3), _interval_text(p.get("ci_runs"), 3),
                   "-" if p.get("p_a_lower") is None else
                   f"{p['p_a_lower']:.2f} / {p['p_equivalent']:.2f} / {p['p_b_lower']:.2f}",
                   fmt(p.get("p_holm")), p.get("n_images"), p.get("n_runs"),
                   p.get("verdict_text") or p.get("verdict")] for p in pairs])


def bakeoff_sections(folder: Path) -> tuple[str, list[dict[str, Any]]]:
    result = read_json(folder / "bakeoff.json")
    spec = result.get("spec") or {}
    out: list[dict[str, Any]] = []
    overview = [("folder", folder), ("datasets", ", ".join(spec.get("data") or []) or None), ("seeds", spec.get("seeds")),
                ("folds", spec.get("folds")), ("epochs per cell", spec.get("epochs")),
                ("budget per cell (min)", spec.get("budget_min")), ("lowest mean MAE", result.get("best")),
                ("written", result.get("written"))]
    out.append(section(OVERVIEW, kv([(k, v) for k, v in overview if v is not None]),
                       text("Command:") if result.get("command") else None,
                       pre(str(result["command"])) if result.get("command") else None))
    methods = result.get("methods") or []
    best = result.get("best")
    out.append(section(METHODS, text("Test metrics per method, mean ± std over seeds, folds and datasets."), table(
        ["method", "runs", "MAE", "accuracy", "one-off", "CA(5)", "minutes"],
        [[{"text": m["method"], "best": m["method"] == best}, f"{m.get('n_cells')}/{m.get('n_expected', '?')}",
          plus_minus(m.get("mae"), m.get("mae_std")), plus_minus(m.get("accuracy"), m.get("accuracy_std")),
          plus_minus(m.get("one_off"), m.get("one_off_std")), plus_minus(m.get("ca5"), m.get("ca5_std")),
          plus_minus(m.get("minutes"), m.get("minutes_std"), 2)] for m in methods])))
    pairs = result.get("pairs") or []
    mix = (result.get("age_mix") or {}).get("name", "test")
    vblocks: list[dict[str, Any] | None] = [text(
        f"Paired differences in test MAE (a - b, years) for the age mix '{mix}', rope ±{result.get('rope', 0.1):g} "
        f"years. {HOW_TO_READ}")]
    if result.get("group_disagreement"):
        vblocks.append(note("Verdicts differ between age groups: " + "; ".join(result["group_disagreement"]) + "."))
    if pairs:
        vblocks.append(_verdict_table(pairs))
    else:
        vblocks.append(note("No paired differences (fewer than two methods with finished cells)."))
    for g in result.get("pairs_by_group") or []:
        vblocks.append(text(f"Age group {g['group']} (its test images only; Holm within the group):"))
        vblocks.append(_verdict_table(g["pairs"]))
    fr = result.get("friedman")
    if fr:
        vblocks.append(kv([(f"Friedman {k}", fmt(v) if isinstance(v, float) else v) for k, v in fr.items()
                           if not isinstance(v, (list, dict))]))
    out.append(section(VERDICTS, *vblocks))
    ranks = result.get("ranks")
    rblocks: list[dict[str, Any] | None] = []
    if ranks and ranks.get("methods"):
        rblocks.append(text(", ".join(f"{m} {r:.2f}" for m, r in zip(ranks["methods"], ranks["average_ranks"], strict=False))
                            + f"; critical difference {fmt(ranks.get('cd'))} over {ranks.get('n_blocks')} "
                              f"{ranks.get('blocks')} (rank 1 = lowest MAE)."))
        uri = file_uri(folder / "cd_diagram.png") or drawn_uri(lambda p: plot_cd_diagram(
            ranks["methods"], ranks["average_ranks"], ranks["cd"], p,
            title=f"average ranks over {ranks.get('n_blocks')} {ranks.get('blocks')} (test MAE; Nemenyi CD)"))
        rblocks.append(image(uri or "", "critical-difference diagram"))
    else:
        rblocks.append(note("No ranks (fewer than two methods or blocks)."))
    out.append(section(RANKS, *rblocks))
    by_group = [r for r in result.get("mae_by_group") or [] if r.get("mae")]
    if by_group:
        labels = by_group[0].get("groups") or []
        gblocks: list[dict[str, Any] | None] = [table(["method", *labels], [[r["method"], *(fmt(v, 2) for v in r["mae"])]
                                                                            for r in by_group],
                                                      caption="test MAE per true age group, pooled over runs")]
        uri = file_uri(folder / "mae_by_group.png") or figure_uri(_mae_by_group_figure(by_group))
        gblocks.append(image(uri, "MAE per age group and method"))
        out.append(section(MAE_BY_GROUP, *gblocks))
    cells = result.get("cells") or []
    out.append(section(CELLS, table(
        ["cell", "method", "dataset", "fold", "seed", "status", "MAE", "accuracy", "minutes", "reason"],
        [[c.get("id"), c.get("method"), c.get("dataset"), c.get("fold"), c.get("seed"), c.get("status"),
          fmt((c.get("test") or {}).get("mae")), fmt((c.get("test") or {}).get("accuracy")), fmt(c.get("minutes"), 2),
          c.get("reason") or ""] for c in cells])))
    missing = result.get("missing") or []
    if missing:
        out.append(section(MISSING, note(f"{len(missing)} cell(s) without a finished result: they are not in the "
                                         "averages. Rerun the bake-off command to finish them."),
                           table(["cell", "method", "dataset", "fold", "seed", "status", "reason"],
                                 [[m.get("id"), m.get("method"), m.get("dataset"), m.get("fold"), m.get("seed"),
                                   m.get("status"), m.get("reason") or ""] for m in missing])))
    else:
        out.append(section(MISSING, text("None: every cell finished.")))
    return f"bake-off {folder.name}", out


def _mae_by_group_figure(rows: Sequence[Mapping[str, Any]]) -> Any:
    labels = rows[0].get("groups") or []
    x = np.arange(len(labels))
    width = 0.8 / len(rows)
    fig = new_figure(max(6.0, 0.9 * len(labels) + 2.0), 4.2)
    ax = fig.add_subplot()
    for i, row in enumerate(rows):
        ax.bar(x + (i - (len(rows) - 1) / 2) * width, [np.nan if v is None else v for v in row["mae"]], width=width,
               label=row["method"])
    ax.set_xticks(x, labels=labels)
    ax.set_xlabel("true age group")
    ax.set_ylabel("test MAE (years)")
    ax.set_title("test MAE per age group")
    ax.legend(fontsize=8)
    return fig
