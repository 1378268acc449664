"""Ensemble runs: `train.members: N` trains N models one after the other into one run folder and
is judged, like any run, by whoever asked for it (`evaluation.evaluate.evaluate_after_training`).

    <run>/config.yaml       the ensemble's config (train.members = N)
    <run>/member-<i>/       an ordinary run folder per member: seed `seed * N + i`, and, with
                            train.time_budget_min, an equal share (budget / N) of the minutes
    <run>/val_best.json     the ensemble's validation metrics (written by evaluate_after_training)
    <run>/summary.json      `members`, the per-member epochs and seconds, and `test` once evaluated

Equal shares keep the members alike. Each member's budget plan reserves time for one test
evaluation that a member does not run: the N reserves pay for the ensemble's evaluation, which
runs every member once. `evaluate`, `predict`, `live`, `serve` and the Python API take the
ensemble's folder and average its members (`member_dirs`); `export` writes them as one graph.
`train_run(config)` trains one run folder, whichever of the two the config asks for.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any

from ordinalage.config import Config, load_config
from ordinalage.errors import UsageError
from ordinalage.runs.members import MEMBER_PREFIX, is_ensemble_run
from ordinalage.runs.rundir import RunDir, RunExists
from ordinalage.training.fit import fit
from ordinalage.training.preemption import TrainingInterrupted, TrainingPreempted


def member_config(config: Config, index: int, run_dir: Path) -> Config:
    """Member `index`'s config: one model, its own seed and folder, an equal share of the budget."""
    t, n = config.train, config.train.members
    budget = None if t.time_budget_min is None else t.time_budget_min / n
    return dataclasses.replace(config, train=dataclasses.replace(
        t, members=1, seed=t.seed * n + index, out_dir=str(run_dir / f"{MEMBER_PREFIX}{index}"),
        time_budget_min=budget))


def train_run(config: Config | None, *, resume: str | Path | None = None, quiet: bool = False,
              **fit_kwargs: Any) -> Path:
    """One run folder: the members of an ensemble (`train.members` > 1, or a resumed ensemble's
    folder) with `fit_ensemble`, else one model with `fit`; `fit_kwargs` (on_epoch,
    stop_after_epochs) go to every `fit`. The data is `data.fold`'s split: every fold is
    `training.train.train`'s."""
    if (resume is not None and is_ensemble_run(resume)) or (config is not None and config.train.members > 1):
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise UsageError("train.members > 1 (an ensemble) runs in one process; under torchrun train one model")
        return fit_ensemble(config, resume=resume, quiet=quiet, **fit_kwargs)
    return fit(config, resume=resume, quiet=quiet, **fit_kwargs)


def fit_ensemble(config: Config | None, *, resume: str | Path | None = None, quiet: bool = False,
                 **fit_kwargs: Any) -> Path:
    """Train (or, with `resume`, finish) every member of an ensemble run and return its folder.

    A member that has finished is kept, one with a last.pt is resumed (mid-epoch after a
    preemption signal), the others start. When a member stops unfinished (`stop_after_epochs`),
    the ensemble stops there too; `resume` goes on. Ctrl-C and preemption (`TrainingPreempted`)
    are raised again naming the ensemble's folder, which is the one to resume.
    `fit_kwargs` (on_epoch, stop_after_epochs) go to every member's `fit`.
    """
    started = time.monotonic()
    if resume is not None:
        run = RunDir(resume)
        if not run.config_yaml.is_file():
            raise UsageError(f"{resume}: no config.yaml in this folder (is it an ensemble run?)")
        config = load_config(run.config_yaml)
    else:
        if config is None:
            raise UsageError("fit: a config, or a run folder to resume, is needed")
        config, run = _create(config)
    n = config.train.members
    members = [run.path / f"{MEMBER_PREFIX}{i}" for i in range(n)]
    before = run.read_summary(tolerant=True)  # on resume: the seconds spent so far
    spent = float(before.get("wall_seconds") or before.get("wall_seconds_before_resume") or 0.0)
    run.write_summary({"members": [m.name for m in members], "finished": False,
                       "wall_seconds_before_resume": spent})
    rows = []
    for i, folder in enumerate(members):
        member = RunDir(folder)
        done = member.read_summary(tolerant=True)
        if not quiet:
            state = "done" if done.get("finished") else "resuming" if member.last_pt.is_file() else "training"
            print(f"ensemble {run.path}: member {i + 1}/{n} ({folder.name}, seed {config.train.seed * n + i}): {state}",
                  file=sys.stderr)
        try:
            if not done.get("finished"):
                if member.last_pt.is_file():
                    fit(None, resume=folder, quiet=quiet, **fit_kwargs)
                else:
                    fit(member_config(config, i, run.path), quiet=quiet, **fit_kwargs)
        except TrainingPreempted as exc:
            run.update_summary(wall_seconds_before_resume=round(spent + time.monotonic() - started, 2))
            raise TrainingPreempted(run.path, exc.epoch, exc.step, exc.signal_name, where=folder.name) from None
        except TrainingInterrupted as exc:
            run.update_summary(wall_seconds_before_resume=round(spent + time.monotonic() - started, 2))
            raise TrainingInterrupted(run.path, exc.epochs_done) from None
        done = member.read_summary(tolerant=True)
        rows.append({"member": folder.name, "seed": config.train.seed * n + i,
                     "epochs_done": done.get("epochs_done"), "best_value": done.get("best_value"),
                     "finished": bool(done.get("finished")), "budget": done.get("budget")})
        if not done.get("finished"):
            break
    finished = len(rows) == n and all(r["finished"] for r in rows)
    summary = {"run_dir": str(run.path), "members": [m.name for m in members], "member_runs": rows,
               "head": config.model.head, "backbone": config.model.backbone, "target": config.model.target,
               "data": list(config.data.sources), "finished": finished,
               "epochs_done": [r["epochs_done"] for r in rows],
               "n_test": RunDir(members[0]).read_summary(tolerant=True).get("n_test", 0),
               "time_budget_min": config.train.time_budget_min,
               "wall_seconds": round(spent + time.monotonic() - started, 2)}
    run.write_summary(summary)
    return run.path


def _create(config: Config) -> tuple[Config, RunDir]:
    """The ensemble's own folder (RunDir.create names it), refusing one that holds a run already."""
    if config.train.members < 2:
        raise UsageError(f"config key 'train.members': an ensemble needs at least 2, got {config.train.members}")
    config, run = RunDir.create(config)
    if run.summary_json.exists() or any(run.path.glob(f"{MEMBER_PREFIX}*")):
        raise RunExists(run.path)
    run.write_config(config)
    return config, run


__all__ = ["fit_ensemble", "member_config", "train_run"]
