"""`ordinalage bakeoff`: run a grid of methods x seeds x folds x datasets, then compare the methods
with paired statistics. Writes, in the output folder:

    DIR/<cell id>/          an ordinary run folder per cell (evaluate, predict, report work on it)
    DIR/<cell id>/cell.json the cell's outcome (done with test metrics and minutes, or failed with why)
    DIR/bakeoff.json        {spec, command, cells, methods, rope, age_mix, pairs, pairs_by_group,
                            group_disagreement, best, friedman, ranks, mae_by_group, missing}
    DIR/bakeoff.md          the same as tables, with a verdict in words per pair
    DIR/cd_diagram.png      average ranks and the Nemenyi critical difference
    DIR/mae_by_group.png    test MAE per true age group and method
    DIR/study.db | journal.log      the Optuna study that hands cells to workers (as `tune` keeps it)

Running the same command again skips finished cells, resumes interrupted ones and rewrites the
comparison.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from ordinalage.atomic import write_json
from ordinalage.comparison.analysis import (
    friedman,
    mae_by_group,
    method_summary,
    missing_cells,
    rank_blocks,
    verdicts,
)
from ordinalage.comparison.outputs import plot_mae_by_group, plot_ranks, write_markdown
from ordinalage.comparison.runner import read_cell, run_cells
from ordinalage.comparison.spec import BakeoffSpec, check_cells
from ordinalage.console import stderr_console
from ordinalage.data.loader_workers import job_share, usable_cores
from ordinalage.errors import UsageError
from ordinalage.groups import AgeGroups
from ordinalage.tuning.storage import mask, resolve_storage

RESULT_FILE = "bakeoff.json"
SPEC_FILE = "bakeoff_spec.json"


def run_bakeoff(spec: BakeoffSpec, out: str | Path, *, workers: int = 1, storage: str | None = None,
                show: bool = True, command: str | None = None, n_resamples: int = 2000,
                report_only: bool = False) -> dict[str, Any]:
    """Train every unfinished cell, then write and return the comparison (bakeoff.json's dict).
    With `report_only`, train nothing: recompute the comparison from the cells already finished."""
    out = Path(out)
    if report_only:
        if not (out / SPEC_FILE).is_file():
            raise UsageError(f"{out}: no bake-off here (no {SPEC_FILE}); run it first without `report_only`",
                             option="report_only")
        _check_same_spec(out, spec)
        return write_report(spec, out, command=command, n_resamples=n_resamples)
    if workers < 1:
        raise UsageError(f"workers {workers}: must be at least 1", option="workers")
    cells = check_cells(spec, out)  # every config valid before anything trains
    _check_age_mix(spec, out, cells[0])
    _check_same_spec(out, spec)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / SPEC_FILE, _merged_spec_dict(out, spec))
    url = resolve_storage(storage, out, workers)
    console = stderr_console()
    todo = [c for c in cells if (read_cell(out, c) or {}).get("status") not in ("done", "failed")]
    if show:
        console.print(f"bake-off: {len(spec.methods)} methods x {len(spec.datasets)} dataset(s) x {spec.folds} fold(s) "
                      f"x {spec.seeds} seed(s) = {len(cells)} cells, {len(cells) - len(todo)} done; "
                      f"{workers} worker(s), study in {mask(url)}{_share_note(workers)}", highlight=False)
    if todo:
        _run_with_progress(spec, out, url, workers, cells, show)
    return write_report(spec, out, command=command, n_resamples=n_resamples)


def _share_note(jobs: int) -> str:
    """What each of `jobs` parallel jobs gets (nothing to say for one: it keeps every core)."""
    if jobs <= 1:
        return ""
    share = job_share(jobs)
    return (f"; each job {share.threads} torch thread(s) of {usable_cores()} cores, "
            f"data.num_workers auto -> {share.loader_workers}")


def _run_with_progress(spec: BakeoffSpec, out: Path, url: str, workers: int, cells: list, show: bool) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    def finished() -> int:
        return sum((read_cell(out, c) or {}).get("status") in ("done", "failed") for c in cells)

    if not show:
        run_cells(spec, out, url, workers=workers, quiet=True)
        return
    with Progress(TextColumn("bake-off cells"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=stderr_console(), transient=False) as progress:
        task = progress.add_task("cells", total=len(cells), completed=finished())
        if workers == 1:
            run_cells(spec, out, url, workers=1, quiet=True,
                      on_cell=lambda _record: progress.update(task, completed=finished()))
        else:
            import threading

            done = threading.Event()

            def poll() -> None:
                while not done.wait(5.0):
                    progress.update(task, completed=finished())

            poller = threading.Thread(target=poll, daemon=True)
            poller.start()
            try:
                run_cells(spec, out, url, workers=workers, quiet=True)
            finally:
                done.set()
                poller.join()
        progress.update(task, completed=finished())


def _check_age_mix(spec: BakeoffSpec, out: Path, cell: Any) -> None:
    """A bad --age-mix file is an error before anything trains (its groups are the cells' groups)."""
    from ordinalage.evaluation.pairing import parse_age_mix

    parse_age_mix(spec.age_mix, AgeGroups.parse(spec.cell_config(cell, out).data.groups))


def _check_same_spec(out: Path, spec: BakeoffSpec) -> None:
    """A folder holds one bake-off. Methods may be added (or left out) on a rerun, and the finished
    cells of the others are reused; other data, seeds, budget or settings are an error, and so is a
    method whose settings changed under the same name."""
    path = out / SPEC_FILE
    if not path.is_file():
        return
    import json

    before = json.loads(path.read_text(encoding="utf-8"))
    now = json.loads(json.dumps(spec.to_dict()))
    changed = sorted(k for k in set(before) | set(now) if k != "methods" and before.get(k) != now.get(k))
    changed += sorted(f"method {name!r}" for name, params in now["methods"].items()
                      if name in before.get("methods", {}) and before["methods"][name] != params)
    if changed:
        raise UsageError(f"{out}: holds another bake-off (differs in {', '.join(changed)}); "
                         "choose another `out`, or rerun it with the same settings (adding methods is fine)", option="out")


def _merged_spec_dict(out: Path, spec: BakeoffSpec) -> dict[str, Any]:
    """bakeoff_spec.json after this run: every method ever run in the folder (so none is forgotten)."""
    import json

    now = spec.to_dict()
    path = out / SPEC_FILE
    if path.is_file():
        before = json.loads(path.read_text(encoding="utf-8"))
        now["methods"] = {**before.get("methods", {}), **now["methods"]}
    return now


def write_report(spec: BakeoffSpec, out: str | Path, *, command: str | None = None,
                 n_resamples: int = 2000) -> dict[str, Any]:
    """Read every cell's outcome and write bakeoff.json, bakeoff.md and the plots; return the dict."""
    out = Path(out)
    cells = spec.cells()
    by_id = {c.id: read_cell(out, c) for c in cells}
    records = [r for r in by_id.values() if r is not None]
    methods = method_summary(records, spec)
    scored = [m for m in methods if m["mae"] is not None]
    best = min(scored, key=lambda m: m["mae"])["method"] if scored else None
    groups = _groups(records)
    result: dict[str, Any] = {
        "spec": spec.to_dict(), "command": command,
        "cells": [_cell_row(r) for r in records],
        "methods": methods,
        "rope": spec.rope,
        **verdicts(records, spec, groups, rope=spec.rope, age_mix=spec.age_mix, n_resamples=n_resamples),
        "best": best,
        "friedman": friedman(records, spec),
        "ranks": rank_blocks(records, spec),
        "mae_by_group": mae_by_group(records, spec, groups) if groups is not None else [],
        "missing": missing_cells(by_id, cells),
        "written": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    write_json(out / RESULT_FILE, result)
    write_markdown(out / "bakeoff.md", result)
    plot_ranks(out / "cd_diagram.png", result["ranks"])
    plot_mae_by_group(out / "mae_by_group.png", result["mae_by_group"])
    return result


def _cell_row(r: dict[str, Any]) -> dict[str, Any]:
    """A cell in bakeoff.json: params, seed, fold, dataset, run, minutes, test, status, reason."""
    keys = ("id", "method", "params", "seed", "fold", "dataset", "run", "minutes", "train_minutes", "epochs",
            "budget_used", "test", "status", "reason")
    return {k: r.get(k) for k in keys}


def _groups(records: list[dict[str, Any]]) -> AgeGroups | None:
    """The age groups of the first finished cell's run (every cell shares them unless the grid varies them)."""
    import yaml

    for r in records:
        if r.get("status") == "done":
            cfg = yaml.safe_load((Path(r["run"]) / "config.yaml").read_text(encoding="utf-8")) or {}
            return AgeGroups.parse((cfg.get("data") or {}).get("groups"))
    return None


def command_line() -> str:
    """The command as typed (for the report's 'reproduce with' line)."""
    import shlex

    return "ordinalage " + " ".join(shlex.quote(a) for a in sys.argv[1:])
