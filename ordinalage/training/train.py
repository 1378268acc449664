"""`train(config)`: one model (`fit`) or an ensemble of `train.members` models (`fit_ensemble`),
whichever the config or the resumed run folder asks for. The commands and the Python API call this;
the ensemble trainer calls `fit`, never the reverse; whoever asked for the run evaluates it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ordinalage.config import Config
from ordinalage.errors import UsageError
from ordinalage.runs.members import is_ensemble_run
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


__all__ = ["train"]
