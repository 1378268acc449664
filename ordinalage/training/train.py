"""`train(config)`: the one training entry of `ordinalage train` and `ordinalage.fit`. It trains
every fold of a protocol with several (`all_folds=True`: folds:K, loso, a source's own folds),
or one run folder: an ensemble of `train.members` models (`fit_ensemble`) or one model (`fit`),
whichever the config or the resumed folder asks for. The ensemble trainer calls `fit`, the fold
loop calls `train_run`, never the reverse; whoever asked for the run evaluates it (for folds,
through `evaluate_fold`, so that folds.json carries each fold's test metrics).

`resumable(folder)` says whether `ordinalage train --resume auto --out FOLDER` continues FOLDER
(it holds a last.pt, or is an ensemble's or a folds run's folder) or starts it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ordinalage.config import Config, replace
from ordinalage.runs.members import is_ensemble_run
from ordinalage.runs.rundir import RunDir
from ordinalage.training.ensemble import train_run
from ordinalage.training.folds import (
    EvaluateFn,
    base_dir,
    folds_to_run,
    is_folds_run,
    run_folds,
    saved_folds_config,
)


def train(config: Config | None, *, resume: str | Path | None = None, quiet: bool = False, all_folds: bool = False,
          evaluate_fold: EvaluateFn | None = None, **fit_kwargs: Any) -> Path:
    """Train (or resume) the run that `config` or `resume` describes and return its folder.

    With `all_folds`, a config whose protocol has several folds trains each into
    `<out>/fold-<i>` (`training.folds.run_folds`: finished folds are kept, a stopped one resumes),
    evaluates it with `evaluate_fold(run_dir) -> metrics` when given, writes `<out>/folds.json`
    (a row per fold, mean +- std) and returns `<out>`, the folds' base folder (`is_folds_run`).
    Resuming such a base folder does the same. Without `all_folds` the config trains its
    `data.fold` alone (what a bake-off cell asks for). `fit_kwargs` (`on_epoch`,
    `stop_after_epochs`) pass through to `fit` for every model."""
    folds_config = saved_folds_config(resume) if resume is not None else None
    if folds_config is not None:  # a folds run's folder: finished folds are kept, the stopped one resumes
        return _train_folds(folds_config, folds_to_run(folds_config) or 1, quiet, evaluate_fold, fit_kwargs)
    if all_folds and resume is None and config is not None:
        n_folds = folds_to_run(config)
        if n_folds is not None:  # folds:K, loso, or a source's own folds: every fold, then mean +- std
            return _train_folds(config, n_folds, quiet, evaluate_fold, fit_kwargs)
    return train_run(config, resume=resume, quiet=quiet, **fit_kwargs)


def _train_folds(config: Config, n_folds: int, quiet: bool, evaluate_fold: EvaluateFn | None,
                 fit_kwargs: dict[str, Any]) -> Path:
    """Every fold of `config`, one run folder each (`train_run`); returns the folds' base folder."""
    base = base_dir(config)
    config = replace(config, train=replace(config.train, out_dir=str(base)))  # a default base is named once

    def fit_fold(fold_config: Config) -> Path:
        return train_run(fold_config, quiet=quiet, **fit_kwargs)

    def resume_fold(run_dir: Path) -> Path:
        return train_run(None, resume=run_dir, quiet=quiet, **fit_kwargs)

    run_folds(config, fit_fold, evaluate_fn=evaluate_fold, n_folds=n_folds, quiet=quiet, resume_fn=resume_fold)
    return base


def resumable(folder: str | Path) -> bool:
    """True when `folder` holds a run to continue: a last.pt (a single run, also one a signal
    stopped mid-epoch), an ensemble's folder (its members resume or start), or a folds run's base
    folder; False for a missing or empty folder, or one whose run never reached its first checkpoint."""
    run = RunDir(folder)
    if not run.path.is_dir():
        return False
    return run.last_pt.is_file() or is_ensemble_run(run.path) or is_folds_run(run.path)


__all__ = ["resumable", "train"]
