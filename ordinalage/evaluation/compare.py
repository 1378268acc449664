"""Compare runs: one table with a row per run, the best value of each metric marked."""

from __future__ import annotations

import glob
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from ordinalage.console import stderr_console
from ordinalage.errors import UsageError
from ordinalage.evaluation.predictions import read_test_errors
from ordinalage.posterior.metrics import LOWER_IS_BETTER, SCALAR_METRICS
from ordinalage.reporting.formatting import interval as interval_text
from ordinalage.reporting.formatting import p_value
from ordinalage.reporting.plots import plot_compare
from ordinalage.reporting.tables import compare_table, print_wide
from ordinalage.runs.rundir import RunDir, eval_dir, read_json_object

INFO_COLUMNS = ("head", "backbone", "target", "data", "epochs")
RANKED_METRICS = tuple(m for m in SCALAR_METRICS if m != "n")  # n is a count, not a score


#: decision columns (docs/evaluation.md, "Evaluation for decisions"): lower is better for all but coverage
DECISION_COLUMNS = ("coverage", "width", "false_accept", "false_reject", "gap")


def read_run(path: str | Path) -> dict[str, Any]:
    """One comparison row: run settings from config.yaml and its test metrics (None when not evaluated)."""
    run = Path(path)
    if not run.is_dir():
        raise UsageError(f"{run}: not a run folder (no such folder)")
    cfg_path = run / "config.yaml"
    if not cfg_path.is_file():
        raise UsageError(f"{run}: not a run folder (no config.yaml)")
    try:
        cfg = yaml.safe_load(cfg_path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise UsageError(f"{cfg_path}: not valid YAML ({exc})") from exc
    if not isinstance(cfg, dict):
        raise UsageError(f"{cfg_path}: expected a mapping")
    summary = RunDir(run).read_summary()  # a broken file is an error naming it
    metrics, source = RunDir(run).test_metrics(summary)
    model, data, train = cfg.get("model") or {}, cfg.get("data") or {}, cfg.get("train") or {}
    sources = data.get("sources")
    epochs = summary.get("epochs_done", summary.get("epochs", train.get("epochs")))
    row: dict[str, Any] = {
        "run": run.name,
        "path": str(run),
        "head": model.get("head"),
        "backbone": model.get("backbone"),
        "target": model.get("target"),
        "data": ",".join(sources) if isinstance(sources, list) else sources,
        "epochs": epochs if isinstance(epochs, int) else None,
        "metrics_source": source,
    }
    for m in SCALAR_METRICS:
        row[m] = (metrics or {}).get(m)
    from ordinalage.evaluation.decisions import headline

    row.update({k: v for k, v in headline(metrics or {}).items() if k in DECISION_COLUMNS or k == "gap_by"})
    row["per_source"] = (metrics or {}).get("per_source") or _latest_per_source(run)
    return row


def _latest_per_source(run: Path) -> list[dict[str, Any]] | None:
    """The newest `evaluate --per-source` rows among the run's eval folders (None when there are none)."""
    found = [p for p in run.glob("eval-*/metrics.json") if "per_source" in p.read_text(encoding="utf-8")]
    if not found:
        return None
    return read_json_object(max(found, key=lambda p: p.stat().st_mtime)).get("per_source")


def best_runs(rows: Sequence[dict[str, Any]]) -> tuple[dict[str, str], dict[str, set[int]]]:
    """Best run per metric (min for LOWER_IS_BETTER, max otherwise; first run on ties) and every tied row."""
    best: dict[str, str] = {}
    tied: dict[str, set[int]] = {}
    for m in (*RANKED_METRICS, *DECISION_COLUMNS):
        values = [(i, r[m]) for i, r in enumerate(rows) if isinstance(r.get(m), (int, float))]
        if not values:
            continue
        pick = min if (m in LOWER_IS_BETTER or m in DECISION_COLUMNS[1:]) else max
        top = pick(v for _, v in values)
        tied[m] = {i for i, v in values if v == top}
        best[m] = rows[min(tied[m])]["run"]
    return best, tied


def compare_runs(runs: Sequence[str], plot: str | None = None, show: bool = True) -> dict[str, Any]:
    """Table (stderr) of runs with the best value per metric marked; optional MAE/accuracy bar chart PNG.

    Returns {"runs": [row, ...], "best": {metric: run name}} (plus "plot" when written).
    """
    if not runs:
        raise UsageError("compare: give at least one run folder")
    rows = [read_run(r) for r in runs]
    names = [r["run"] for r in rows]
    if len(set(names)) < len(names):  # same folder name under different parents: use the paths
        for r in rows:
            r["run"] = r["path"]
    best, tied = best_runs(rows)
    result: dict[str, Any] = {"runs": rows, "best": best}
    if plot:
        result["plot"] = str(plot_compare([r["run"] for r in rows], [r["mae"] for r in rows],
                                          [r["accuracy"] for r in rows], plot))
    per_source = {r["run"]: r["per_source"] for r in rows if r.get("per_source")}
    if per_source:  # runs x datasets MAE matrix (evaluate --per-source), with a heat map beside the plot
        from ordinalage.evaluation.per_source import mae_matrix
        from ordinalage.reporting.plots import plot_mae_matrix

        names, datasets, matrix = mae_matrix(per_source)
        result["mae_matrix"] = {"runs": names, "datasets": datasets, "mae": matrix.tolist()}
        if plot:
            result["mae_matrix_plot"] = str(plot_mae_matrix(names, datasets, matrix,
                                                            Path(plot).with_name(Path(plot).stem + "_matrix.png")))
    if show:
        console = stderr_console()
        shown = [m for m in (*SCALAR_METRICS, *DECISION_COLUMNS) if any(r.get(m) is not None for r in rows)] or ["n"]
        print_wide(compare_table(rows, INFO_COLUMNS, shown, tied), console)
        missing = [r["run"] for r in rows if r["metrics_source"] is None]
        if missing:
            console.print(f"[yellow]no test metrics yet: {', '.join(missing)}[/yellow]")
        if plot:
            console.print(f"wrote {plot}")
    return result


# --------------------------------------------------------------------------------------------- paired


def test_predictions_csv(run: str | Path) -> Path:
    """The per-image predictions of a run's test evaluation (eval-test-tta/ when the run evaluates
    with TTA, else eval-test/); an error saying how to make it when there is none."""
    run = Path(run)
    cfg_path = run / "config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text(encoding="utf-8")) if cfg_path.is_file() else {}
    tta = bool(((cfg or {}).get("train") or {}).get("eval_tta"))
    for candidate in (eval_dir(run, "test", None, tta), eval_dir(run, "test", None, not tta)):
        if (candidate / "predictions.csv").is_file():
            return candidate / "predictions.csv"
    raise UsageError(f"{run}: no test predictions (eval-test/predictions.csv); evaluate it first: "
                     f"ordinalage evaluate {run}")


def expand_runs(pattern: str) -> list[Path]:
    """A run folder, or a glob pattern of run folders (quoted, so the shell leaves it), sorted."""
    if any(ch in pattern for ch in "*?["):
        found = sorted(Path(p) for p in glob.glob(pattern) if Path(p).is_dir())
        if not found:
            raise UsageError(f"{pattern}: no run folder matches")
        return found
    path = Path(pattern)
    if not path.is_dir():
        raise UsageError(f"{path}: not a run folder (no such folder)")
    return [path]


def _run_groups(run: Path):
    from ordinalage.groups import AgeGroups

    cfg = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8")) or {}
    return AgeGroups.parse((cfg.get("data") or {}).get("groups"))


def compare_paired(a: str, b: str, show: bool = True, n_resamples: int = 2000, rope: float = 0.1,
                   age_mix: str | None = None) -> dict[str, Any]:
    """The verdict on runs `a` against runs `b` (one run each, or two glob patterns of runs paired in
    sorted order, e.g. seeds or folds): the paired difference in test MAE on the same images, its
    interval over training and test-set noise (evaluation/verdicts.py), the image-only and run-only
    intervals, the ROPE probabilities and the verdict, for the stated age mix.

    Returns the bake-off's pair fields plus runs_a, runs_b and age_mix; runs paired one to one must
    have tested the same images (a UsageError says how they differ)."""
    from ordinalage.evaluation.pairing import check_mix, compare_all, parse_age_mix

    runs_a, runs_b = expand_runs(a), expand_runs(b)
    if len(runs_a) != len(runs_b):
        raise UsageError(f"paired comparison: {len(runs_a)} run(s) match {a} but {len(runs_b)} match {b}; "
                         "pair runs one to one (e.g. the same seeds)")
    errors_a = [read_test_errors(test_predictions_csv(r)) for r in runs_a]
    errors_b = [read_test_errors(test_predictions_csv(r)) for r in runs_b]
    name_a = runs_a[0].name if len(runs_a) == 1 else a
    name_b = runs_b[0].name if len(runs_b) == 1 else b
    test_sets: dict[tuple[str, ...], str] = {}
    blocks = [(test_sets.setdefault(ea.keys, f"test set {len(test_sets) + 1}"), ea, eb)
              for ea, eb in zip(errors_a, errors_b, strict=True)]
    groups = _run_groups(runs_a[0])
    mix, _ = check_mix(parse_age_mix(age_mix, groups), groups, errors_a)
    try:
        result = compare_all([name_a, name_b], {(name_a, name_b): blocks}, rope=rope, groups=groups,
                             shares=mix.shares, n_resamples=n_resamples)[0]
    except ValueError as exc:
        raise UsageError(f"paired comparison: the test images differ ({exc}); it needs runs "
                         "evaluated on the same images (same data, split_seed and protocol)") from None
    result["runs_a"] = [str(r) for r in runs_a]
    result["runs_b"] = [str(r) for r in runs_b]
    result["age_mix"] = mix.to_dict(groups)
    if show:
        stderr_console().print(f"{result['verdict_text']}\n  {result['n_images']} test images, {result['n_runs']} paired "
                               f"run(s), age mix {mix.name}; interval: {result['method']}; images only "
                               f"{interval_text(result['ci_images'], 3)}, runs only {interval_text(result['ci_runs'], 3)}; "
                               f"Holm p = {p_value(result['p_holm'])}", highlight=False)
    return result
