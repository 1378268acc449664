"""`train(config)`: one model (`fit`) or an ensemble of `train.members` models (`fit_ensemble`),
whichever the config or the resumed run folder asks for. The commands and the Python API call this;
the ensemble trainer calls `fit`, never the reverse; whoever asked for the run evaluates it.

`resumable(folder)` says whether `ordinalage train --resume auto --out FOLDER` continues FOLDER
(it holds a last.pt, or is an ensemble's or a folds run's folder) or starts it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ordinalage.config import Config
from ordinalage.errors import UsageError
from ordinalage.runs.members import is_ensemble_run
from ordinalage.runs.rundir import FOLDS_CONFIG, RunDir
from ordinalage.training.ensemble import fit_ensemble
from ordinalage.training.fit import fit


def train(config: Config | None, *, resume: str | Path | None = None, quiet: bool = False, **fit_kwargs: Any) -> Path:
    """Train (or resume) the run that `config` or `resume` describes and return its folder.

    `fit_kwargs` (`on_epoch`, `stop_after_epochs`) pass through to `fit` for every model."""
    if (resume is not None and is_ensemble_run(resume)) or (config is not None and config.train.members > 1):
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise UsageError("train.members > 1 (an ensemble) runs in one process; under torchrun train one model")
        return fit_ensemble(config, resume=resume, quiet=quiet, **fit_kwargs)
    return fit(config, resume=resume, quiet=quiet, **fit_kwargs)


def resumable(folder: str | Path) -> bool:
    """True when `folder` holds a run to continue: a last.pt (a single run, also one a signal
    stopped mid-epoch), an ensemble's folder (its members resume or start), or a folds run's base
    folder; False for a missing or empty folder, or one whose run never reached its first checkpoint."""
    run = RunDir(folder)
    if not run.path.is_dir():
        return False
    return run.last_pt.is_file() or is_ensemble_run(run.path) or (run.path / FOLDS_CONFIG).is_file()


__all__ = ["resumable", "train"]
