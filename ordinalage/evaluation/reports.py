"""`ordinalage report`: one self-contained HTML page of a run, several runs, or a bake-off, with
what it shows measured here and drawn by `ordinalage.reporting`.

- a run folder (or an ensemble run folder): overview, test metrics beside the baseline (95%
  bootstrap CIs from predictions.csv), per-group rows, confusion matrices, error by age, reliability,
  and, where the evaluation's metrics.json has them, prior correction, intervals, thresholds and the
  breakdown by attribute; then the data (counts per group and split, the training age mix), the
  training curves (and the time budget), and the resolved config. A run with no evaluated test split
  says so and names the command that makes one.
- several run folders: the `compare_runs` table and the paired differences in test MAE
  (`compare_paired`) of every pair evaluated on the same test images (the others are listed as skipped).
- a bake-off folder (bakeoff.json, read as plain JSON): per-method table, paired differences and
  verdicts, ranks, MAE per age group, cells and missing cells, the CD diagram and MAE-by-group plots.

`write_report(targets, out, card=False)` is the entry point; `evaluate --report` calls it with the
evaluation folder it just wrote.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ordinalage.atomic import atomic_write_text
from ordinalage.console import stderr_console
from ordinalage.errors import UsageError
from ordinalage.evaluation.model_card import card_facts, group_rows, metric_intervals, write_model_card
from ordinalage.evaluation.predictions import read_predictions
from ordinalage.reporting.card import CARD_NAME, read_config, unevaluated_card
from ordinalage.reporting.html import find_eval_dir, render, target_kind
from ordinalage.reporting.html_compare import bakeoff_sections, compare_sections
from ordinalage.reporting.html_run import Measured, run_sections
from ordinalage.reporting.model_card import CardFacts
from ordinalage.runs.rundir import member_dirs


def measure(eval_dir: Path | None) -> Measured:
    """What the report shows of an evaluation folder beyond metrics.json: its predictions, the 95%
    bootstrap intervals of the metrics and the rows per age group (empty without predictions.csv)."""
    if eval_dir is None:
        return Measured()
    try:
        pred = read_predictions(eval_dir / "predictions.csv")
    except UsageError:
        return Measured()
    return Measured(pred=pred, cis=metric_intervals(pred), group_rows=group_rows(pred))


def measured_from(facts: CardFacts) -> Measured:
    """The same, from the facts a model card of that evaluation was written from (measured once)."""
    return Measured(pred=facts.pred, cis=facts.cis, group_rows=facts.by_group)


def _compare(runs: Sequence[Path]) -> list[dict[str, Any]]:
    """The sections of several runs: their table and every pair's paired difference."""
    from ordinalage.evaluation.compare import (
        DECISION_COLUMNS,
        INFO_COLUMNS,
        best_runs,
        compare_paired,
        compare_runs,
    )

    result = compare_runs([str(r) for r in runs], show=False)
    rows = result["runs"]
    _, tied = best_runs(rows)
    pairs, skipped = [], []
    for i in range(len(runs)):
        for j in range(i + 1, len(runs)):
            try:
                pairs.append(compare_paired(str(runs[i]), str(runs[j]), show=False))
            except UsageError as exc:
                skipped.append(f"{rows[i]['run']} vs {rows[j]['run']}: {exc}")
    return compare_sections(result, tied, pairs, skipped, INFO_COLUMNS, DECISION_COLUMNS)


def _traits(run: Path | None) -> tuple[Any, Any]:
    """(head traits, backbone traits) of a run folder's model (None each when unknown): what the card and
    the page say the head and backbone are (`models.model.model_traits`; imports torch)."""
    if run is None:
        return None, None
    from ordinalage.models.model import model_traits

    return model_traits(read_config(run).get("model"))


def write_report(targets: Sequence[str | Path], out: str | Path, card: bool = False,
                 eval_dir: str | Path | None = None, show: bool = True, facts: CardFacts | None = None
                 ) -> dict[str, Any]:
    """Write the HTML report of `targets` (one run or ensemble folder, one bake-off folder, or several
    run folders) to `out`; with `card`, MODEL_CARD.md beside it (one run only). `eval_dir`: the
    evaluation folder to show for a single run (default: its eval-test folder); with no run folder
    (`targets` empty) the page shows that evaluation alone. `facts`: that evaluation's `card_facts`
    when the caller measured them already (evaluate does), so they are not measured twice.
    Returns {out, kind, card?}."""
    paths = [Path(t) for t in targets]
    out = Path(out)
    if not paths and eval_dir is None:
        raise UsageError("report: give a run folder, several run folders, or a bake-off folder")
    kinds = [target_kind(p) for p in paths]
    if len(paths) > 1 and "bakeoff" in kinds:
        bad = [str(p) for p, k in zip(paths, kinds, strict=True) if k == "bakeoff"]
        raise UsageError(f"report: a bake-off folder ({', '.join(bad)}) is reported alone; compare run folders together")
    if card and (len(paths) > 1 or kinds == ["bakeoff"]):
        raise UsageError("card: give one run folder (a model card describes one model)", option="card")
    if kinds == ["bakeoff"]:
        kind = "bakeoff"
        title, sections = bakeoff_sections(paths[0])
        subtitle = f"bake-off folder {paths[0]}"
    elif len(paths) > 1:
        kind = "compare"
        title = f"{len(paths)} runs compared"
        sections = _compare(paths)
        subtitle = ", ".join(str(p) for p in paths)
    else:
        kind = "run"
        run = paths[0] if paths else None
        folder = Path(eval_dir) if eval_dir is not None else (find_eval_dir(run) if run is not None else None)
        if facts is None and card and run is not None and folder is not None \
                and (folder / "predictions.csv").is_file():
            facts = card_facts(folder, run)  # the page and the card show the same measurements
        measured = measured_from(facts) if facts is not None else measure(folder)
        measured.head = _traits(run)[0]
        title, sections = run_sections(run, folder, measured)
        subtitle = f"run folder {run}" if run is not None else f"evaluation {eval_dir}"
        if run is not None and member_dirs(run):
            subtitle = f"ensemble run folder {run}"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, render(title, subtitle, sections))
    result: dict[str, Any] = {"out": str(out), "kind": kind, "sections": [s["title"] for s in sections]}
    if card:
        run = paths[0]
        card_path = out.parent / CARD_NAME
        folder = Path(eval_dir) if eval_dir is not None else find_eval_dir(run)
        if folder is not None and (folder / "predictions.csv").is_file():
            write_model_card(folder, run, out=card_path, facts=facts)
        else:
            head, backbone = _traits(run)
            atomic_write_text(card_path, unevaluated_card(run, head=head, backbone=backbone))
        result["card"] = str(card_path)
    if show:
        stderr_console().print(f"wrote {out}" + (f" and {result['card']}" if card else ""), highlight=False)
    return result
