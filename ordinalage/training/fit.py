"""Training one model: `fit(config) -> run folder`, the run folder's creation, and the signal
handlers around it. The setup is `training.state.build_state`, the epochs `training.loop.run_epochs`;
the run folder's files are written by `RunDir` alone.

`fit` trains and does not evaluate: callers (the CLI, the tuner, benchmarks) decide whether to run
`ordinalage.evaluation.evaluate.evaluate_run` on the test split afterwards. `fit(None, resume=DIR)`
continues a stopped run from `last.pt`, mid-epoch when a preemption signal (SIGTERM, SIGUSR1:
`training.preemption`) stopped it; every epoch reseeds from (seed, epoch), so it ends with the
weights of an uninterrupted run (exactly so on a CPU with `num_workers=0`). The handlers are
installed only in the main thread and the previous ones are put back when `fit` returns.
Every fold of a protocol, or every member of an ensemble: `training.train.train`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ordinalage.config import Config, config_from_dict
from ordinalage.console import stderr_console
from ordinalage.errors import UsageError
from ordinalage.runs.checkpoint import load_checkpoint
from ordinalage.runs.members import is_ensemble_run
from ordinalage.runs.rundir import RunDir
from ordinalage.training.choices import validate as validate_config
from ordinalage.training.distributed import DistContext, barrier, broadcast, init_distributed, shutdown
from ordinalage.training.loop import EpochCallback, TrainingDiverged, run_epochs
from ordinalage.training.preemption import PreemptionSignals, TrainingPreempted
from ordinalage.training.run_files import summary
from ordinalage.training.state import build_state

# `fit` raises these; importable from here too, where its callers look for them (docs/distributed.md).
__all__ = ["TrainingDiverged", "TrainingPreempted", "fit"]


def fit(config: Config | None, *, resume: str | Path | None = None, on_epoch: EpochCallback | None = None,
        quiet: bool = False, stop_after_epochs: int | None = None, started: float | None = None) -> Path:
    """Train a model and return its run folder.

    `on_epoch(epoch, row)` is called after each epoch with the metrics row (the tuner reports
    to Optuna there and may raise `optuna.TrialPruned`). `stop_after_epochs` ends the run early
    as if interrupted (for tests and for splitting work); `resume` continues it, mid-epoch when a
    signal stopped it (`TrainingPreempted`); a run whose summary says it finished is returned as
    it is. With `train.members` N > 1 use `training.train.train` (an ensemble calls `fit` once per member).
    `started` (a `time.monotonic()` value, default now): where a time budget counts from, when the
    caller spent part of it before (e.g. `distill` running the teacher).
    """
    if (resume is not None and is_ensemble_run(resume)) or (config is not None and config.train.members > 1):
        raise UsageError("fit trains one model; an ensemble (train.members > 1) is trained by "
                         "ordinalage.training.train.train, which calls fit for each member")
    started = time.monotonic() if started is None else started
    ckpt = None
    if resume is not None:  # every rank reads last.pt (the run folder must be on a shared file system)
        run = RunDir(resume)
        if not run.last_pt.is_file():
            raise UsageError(f"{resume}: no last.pt in this folder to resume from")
        if run.read_summary(tolerant=True).get("finished"):  # e.g. stopped by a signal after its last epoch
            if not quiet:
                stderr_console().print(f"{resume}: this run finished training already")
            return run.path
        ckpt = load_checkpoint(run.last_pt)
        config = config_from_dict(ckpt["config"])
    if config is None:
        raise UsageError("fit: a config, or a run folder to resume, is needed")
    validate_config(config)
    with PreemptionSignals() as signals:  # before the setup: a signal during it stops the run at its first step
        ctx, device_name = init_distributed(config.train.device)
        try:
            if resume is None:
                config, run_dir = _create_run_dir(config, ctx)
            else:
                run_dir = Path(resume)
            state = build_state(config, ctx, device_name, run_dir=run_dir, ckpt=ckpt,
                                quiet=quiet or not ctx.is_main, started=started)
            state.preempt = signals
            stopped_early = run_epochs(state, on_epoch=on_epoch, stop_after_epochs=stop_after_epochs)
            if ctx.is_main:
                state.run.write_summary(summary(state, stopped_early))
            barrier(ctx)  # no process leaves (and tears down its group) while another still communicates
            if signals.signum is not None:  # during the last validation: training is done, but stop now
                raise TrainingPreempted(state.run_dir, state.epoch, 0, signals.signal_name)
            return state.run_dir
        finally:
            shutdown(ctx)


def _create_run_dir(config: Config, ctx: DistContext) -> tuple[Config, Path]:
    """Rank 0 names and creates the run folder; the other ranks learn it (or the same error)."""
    outcome: Any = None
    if ctx.is_main:
        try:
            config, run = RunDir.create(config)
            outcome = (config, run.path)
        except UsageError as exc:
            outcome = exc
    outcome = broadcast(ctx, outcome)
    if isinstance(outcome, UsageError):
        raise outcome
    return outcome
