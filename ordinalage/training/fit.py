"""Training: `fit(config) -> run folder`, in two parts: `build_state` (data, model, optimiser,
scheduler, resume) and `run_epochs` (train, validate, checkpoint, stop), on one
`train_one_epoch` / `validate` pair. The run folder's files are written by `RunDir` alone.

`fit` trains and does not evaluate: callers (the CLI, the tuner, benchmarks) decide whether to run
`ordinalage.evaluation.evaluate.evaluate_run` on the test split afterwards.
`fit(None, resume=DIR)` continues a stopped run from `last.pt`: every epoch reseeds from
(seed, epoch), so a resumed run ends with the same weights as an uninterrupted one (exactly so on
a CPU with `num_workers=0`).

Preemption: for the length of `fit`, SIGTERM and SIGUSR1 (what a cluster scheduler sends before
it preempts a job or at its time limit) no longer end the process at once. The step in progress
finishes, last.pt is written with the position inside the epoch (the batches done, the epoch's
running loss, the random states), and `TrainingPreempted` is raised; `ordinalage train` exits with
status 75 (`PREEMPTED_EXIT`, EX_TEMPFAIL). `fit(None, resume=DIR)` then replays the loader to that
position (the same remaining batches with the same augmentation) and continues mid-epoch, ending
with the weights of an uninterrupted run. The handlers are installed only in the main thread and
the previous ones are put back when `fit` returns.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ordinalage.atomic import jsonable, write_json
from ordinalage.config import Config, config_from_dict, to_dict
from ordinalage.errors import UsageError
from ordinalage.runs.checkpoint import (
    FORMAT,
    VERSION,
    atomic_torch_save,
    load_checkpoint,
    resolve_input_spec,
    restore_rng_state,
    rng_state,
    versions,
)
from ordinalage.runs.members import is_ensemble_run
from ordinalage.runs.rundir import RunDir
from ordinalage.runs.runtime import Precision, resolve_precision, seed_everything, select_device
from ordinalage.training.choices import validate as validate_config
from ordinalage.training.distributed import (
    DistContext,
    ShardSampler,
    all_reduce_sum,
    barrier,
    broadcast,
    gather_concat,
    init_distributed,
    local_batch_size,
    shutdown,
    sync_buffers,
)
from ordinalage.training.mixup import mix_batch
from ordinalage.training.optim import MONITORS, build_optimizer, build_scheduler
from ordinalage.training.soft_targets import distillation_loss, read_soft_targets, targets_for
from ordinalage.training.steps import backward_and_step, batch_to

EpochCallback = Callable[[int, dict[str, Any]], None]
__all__ = ["MONITORS", "PREEMPTED_EXIT", "PREEMPT_SIGNALS", "TrainState", "TrainingDiverged", "TrainingInterrupted",
           "TrainingPreempted", "build_optimizer", "backward_and_step", "build_scheduler", "build_state", "build_training",
           "fit", "run_epochs", "train_one_epoch", "validate"]

#: the exit status of `ordinalage train` for a preempted run (EX_TEMPFAIL from sysexits.h: try again
#: later): a script or scheduler tells it from a crash (1), bad usage (2) and Ctrl-C (130)
PREEMPTED_EXIT = 75
#: the signals that preempt a run (a scheduler's warning before it kills the job)
PREEMPT_SIGNALS: tuple[signal.Signals, ...] = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGUSR1")
                                                    if hasattr(signal, name))


class TrainingDiverged(UsageError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training: `run_dir`'s last.pt holds `epochs_done` finished epochs."""

    def __init__(self, run_dir: Path, epochs_done: int) -> None:
        super().__init__(f"{run_dir}: interrupted; last.pt holds {epochs_done} finished epoch(s)")
        self.run_dir, self.epochs_done = run_dir, epochs_done

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.run_dir, self.epochs_done)


class TrainingPreempted(KeyboardInterrupt):
    """SIGTERM or SIGUSR1 during training: the step in progress finished, then `run_dir`'s last.pt
    was written with `epoch` finished epochs and `step` batches of the next one, and training
    stopped; `ordinalage train --resume run_dir` goes on from there (`PREEMPTED_EXIT` in the CLI).

    Like Ctrl-C's `TrainingInterrupted` it is a KeyboardInterrupt, not an Exception: a caller's
    `except Exception` (a bake-off cell, a tuning objective, a user's loop) does not swallow it, and
    Optuna records the trial it stops as failed instead of leaving it running. `where` names the
    ensemble member or fold it stopped in, `run_dir` is then the ensemble's or the folds' folder."""

    def __init__(self, run_dir: str | Path, epoch: int, step: int, signal_name: str = "SIGTERM",
                 where: str = "") -> None:
        self.run_dir, self.epoch, self.step = Path(run_dir), int(epoch), int(step)
        self.signal_name, self.where = signal_name, where
        inside = f" in {where}" if where else ""
        at = f"{self.step} batch(es) into epoch {self.epoch + 1}" if self.step else f"after epoch {self.epoch}"
        super().__init__(f"{self.run_dir}: stopped by {signal_name}{inside} {at}; last.pt holds that position")

    @property
    def epochs_done(self) -> int:
        return self.epoch

    def __reduce__(self) -> tuple[Any, ...]:  # pickled whole (a tuning worker process sends it to its parent)
        return type(self), (str(self.run_dir), self.epoch, self.step, self.signal_name, self.where)


class _PreemptionSignals:
    """While active (a `with` block in the main thread), SIGTERM and SIGUSR1 are only noted
    (`signal_name`); the training loop stops after the step in progress. The previous handlers
    come back on exit. In a forked DataLoader worker, which inherits the handler, a signal is
    ignored: the main process finishes its step and then stops its workers."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._pid = os.getpid()
        self._previous: dict[int, Any] = {}

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    def _note(self, signum: int, frame: Any) -> None:
        if os.getpid() == self._pid:
            self.signum = signum

    def __enter__(self) -> _PreemptionSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in PREEMPT_SIGNALS:
                try:
                    self._previous[sig] = signal.signal(sig, self._note)
                except (ValueError, OSError):  # pragma: no cover - a platform without it
                    pass
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()


@dataclass
class TrainState:
    """Everything that lives for the length of a run."""

    config: Config
    run_dir: Path
    device: torch.device
    precision: Precision
    model: torch.nn.Module
    train_model: torch.nn.Module  # the model the loop calls (compiled and/or DDP-wrapped)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    input_spec: Any
    groups: Any
    reference: dict[str, Any]
    ctx: DistContext = DistContext()
    epoch: int = 0  # next epoch to run
    step: int = 0
    best_value: float | None = None
    best_epoch: int = -1
    bad_epochs: int = 0
    data: Any = None  # PreparedData
    train_loader: Any = None
    val_loader: Any = None
    train_sampler: Any = None
    quiet: bool = True
    train_prior: np.ndarray | None = None  # the head's effective training label distribution
    loggers: list[Any] = field(default_factory=list)  # per-epoch loggers (TensorBoard)
    ema: Any = None  # torch.optim.swa_utils.AveragedModel of `model` when train.ema_decay > 0
    swa: Any = None  # training.swa.WeightAveraging when train.swa_start > 0
    budget: Any = None  # training.budget.BudgetPlan when train.time_budget_min is set
    deadline: float | None = None  # time.monotonic() after which training stops (the time budget)
    budget_stopped: bool = False  # the deadline cut an epoch short
    resumed: bool = False  # this process continued a run from its last.pt
    #: when the run started, as this process's time.monotonic(): a resumed run's start is moved back
    #: by the seconds its earlier processes spent (last.pt's `elapsed_s`)
    started: float = field(default_factory=time.monotonic)
    preempt: Any = None  # _PreemptionSignals of the fit call (None: signals are not watched)
    resume_position: dict[str, Any] | None = None  # last.pt's position inside an unfinished epoch
    cycle_start: float = field(default_factory=time.monotonic)  # when the epoch being timed began (re-plans)
    epoch_train_s: float = 0.0  # seconds of training steps this process ran in the last epoch
    epoch_steps: int = 0  # and how many batches they were
    soft_targets: torch.Tensor | None = None  # (len(train), L) teacher distributions of a distilled student

    @property
    def run(self) -> RunDir:
        return RunDir(self.run_dir)


def _console() -> Console:
    return Console(stderr=True)


# --------------------------------------------------------------------------------------------- fit


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
                _console().print(f"{resume}: this run finished training already")
            return run.path
        ckpt = load_checkpoint(run.last_pt)
        config = config_from_dict(ckpt["config"])
    if config is None:
        raise UsageError("fit: a config, or a run folder to resume, is needed")
    validate_config(config)
    with _PreemptionSignals() as signals:  # before the setup: a signal during it stops the run at its first step
        ctx, device_name = init_distributed(config.train.device)
        try:
            state = build_state(config, ctx, device_name, ckpt=ckpt, run_dir=Path(resume) if resume else None,
                                quiet=quiet or not ctx.is_main, started=started)
            state.preempt = signals
            stopped_early = run_epochs(state, on_epoch=on_epoch, stop_after_epochs=stop_after_epochs)
            if ctx.is_main:
                state.run.write_summary(_summary(state, stopped_early))
            barrier(ctx)  # no process leaves (and tears down its group) while another still communicates
            if signals.signum is not None:  # during the last validation: training is done, but stop now
                raise TrainingPreempted(state.run_dir, state.epoch, 0, signals.signal_name)
            return state.run_dir
        finally:
            shutdown(ctx)


# --------------------------------------------------------------------------------------------- setup


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


def _rank0_first(ctx: DistContext, fn: Callable[[], Any]) -> Any:
    """Run `fn` on rank 0 first (it fills the caches: synthetic set, hashes, decoded images), then
    on the other ranks, which read those caches quietly (rank 0 has printed the same report)."""
    if ctx.is_main:
        try:
            return fn()
        finally:  # on an error too, so the others go on and meet the same error instead of waiting
            barrier(ctx)
    barrier(ctx)
    with contextlib.redirect_stderr(io.StringIO()):
        return fn()


def train_prior(config: Config, model: Any, data: Any) -> np.ndarray | None:
    """The head's effective training distribution over its labels, as the loop saw it (after caps,
    sampling, the weighted sampler, class weights and label distributions); None for regression."""
    from ordinalage.posterior.prior import effective_train_prior

    if config.model.head == "regression":
        return None
    ages = np.array([r.age for r in data.train], dtype=float)
    sigma = float(getattr(model.head, "label_sigma", 0.0))  # the soft labels the head trains on (class, dldl_v2, sord)
    return effective_train_prior(model.head.labels_of(ages), model.head.num_classes, sample_weights=data.sampler_weights,
                                 class_weights=data.class_weights, group_idx=data.groups.clip_indices(ages),
                                 label_sigma=sigma)


def build_training(config: Config, model: torch.nn.Module, device: torch.device, steps_per_epoch: int,
                   ctx: DistContext | None = None) -> tuple[torch.nn.Module, torch.optim.Optimizer,
                                                               torch.optim.lr_scheduler.LRScheduler,
                                                               torch.amp.GradScaler, Precision]:
    """Move `model` to `device` and build what trains it: the called model (DDP and/or compiled),
    optimiser, per-step scheduler, GradScaler and precision. Used by `build_state` and benchmarks."""
    t, ctx = config.train, ctx or DistContext()
    precision = resolve_precision(t.precision, device)
    model.to(device)
    if t.channels_last:  # on the CPU too: 1.26x (scratch) and 1.10x (resnet18), benchmarks/cpu_speed.py
        model.to(memory_format=torch.channels_last)
    train_model: torch.nn.Module = model
    if ctx.enabled:
        from torch.nn.parallel import DistributedDataParallel

        # frozen backbone epochs leave its parameters without gradients: DDP must expect that
        train_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                              find_unused_parameters=t.freeze_epochs > 0)
    if t.compile:
        train_model = torch.compile(train_model)
    optimizer = build_optimizer(config, model)
    if t.time_budget_min and t.scheduler == "cosine":  # a budget run's epochs move: so does its schedule's end
        from ordinalage.training.budget import BudgetCosine

        scheduler: torch.optim.lr_scheduler.LRScheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, BudgetCosine.for_config(config, steps_per_epoch))
    else:
        scheduler = build_scheduler(config, optimizer, steps_per_epoch)
    scaler = torch.amp.GradScaler(device.type, enabled=precision.use_scaler)
    return train_model, optimizer, scheduler, scaler, precision


def build_state(config: Config, ctx: DistContext, device_name: str, *, ckpt: dict[str, Any] | None = None,
                run_dir: Path | None = None, quiet: bool = True, started: float | None = None) -> TrainState:
    """Data, model, loaders, optimiser, scheduler and (when resuming) the saved state of a run.

    With `train.time_budget_min` (and no checkpoint), `train.epochs` becomes the number of epochs
    that fit in the budget counted from `started` (a `time.monotonic()` value; default: now); a
    checkpoint's `elapsed_s` moves `started` back by the seconds the run spent before it."""
    started = time.monotonic() if started is None else started
    if ckpt is not None and ckpt.get("elapsed_s") is not None:  # a resumed run keeps the minutes it has left
        started -= float(ckpt["elapsed_s"])
    from ordinalage.data.dataset import build_loader
    from ordinalage.models.model import build_model

    if run_dir is None:
        config, run_dir = _create_run_dir(config, ctx)
    t = config.train
    device = select_device(device_name if ctx.enabled else t.device)
    seed_everything(t.seed)
    from ordinalage.data.prepare import prepare_data

    data = _rank0_first(ctx, lambda: prepare_data(config.data))
    # class weights live in the head (a buffer saved with the model); the label prior sets its biases
    model = build_model(config.model, data.groups, class_weights=data.class_weights,
                        train_ages=np.array([r.age for r in data.train], dtype=float))
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
    elif config.model.init:  # fine-tune from a trained run: its backbone, and its head when it fits
        from ordinalage.runs.init import init_from

        message = init_from(model, config.model.init)
        if not quiet:
            _console().print(message)
    spec = resolve_input_spec(config, model.backbone)
    from ordinalage.data.cache import prepare_cache

    cache = _rank0_first(ctx, lambda: prepare_cache(data.all, config.data, spec.size, progress=not quiet))
    batch = local_batch_size(t.batch_size, ctx)
    # One sampler for 1 or N processes: a seeded epoch order (or weighted draw) cut to whole global
    # batches (the sampler's drop_last), sharded by rank; so the loader itself drops nothing.
    sampler = ShardSampler(len(data.train), ctx, shuffle=True, seed=t.seed, weights=data.sampler_weights,
                           global_batch=t.batch_size)
    train_loader = build_loader(data.train, data.groups, config.data, spec.size, batch, train=True,
                                seed=t.seed + ctx.rank, sampler=sampler, drop_last=False, cache=cache)
    val_loader = build_loader(data.val, data.groups, config.data, spec.size, batch, train=False, seed=t.seed,
                              sampler=ShardSampler(len(data.val), ctx, shuffle=False), cache=cache)
    plan = _saved_plan(ckpt)  # a resumed budget run keeps its plan (its epochs are in its config already)
    if t.time_budget_min and ckpt is None:  # fix the epochs before the schedule is built for them
        plan = _plan_budget(config, ctx, model, device, spec, train_loader, val_loader, started, data, quiet)
        config = dataclasses.replace(config, train=dataclasses.replace(t, epochs=plan.epochs))
        t = config.train
    train_model, optimizer, scheduler, scaler, precision = build_training(config, model, device, len(train_loader), ctx)
    state = TrainState(config=config, run_dir=run_dir, device=device, precision=precision, model=model,
                       train_model=train_model, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                       input_spec=spec, groups=data.groups, reference=_reference(data), ctx=ctx, data=data,
                       train_loader=train_loader, val_loader=val_loader, train_sampler=sampler, quiet=quiet,
                       train_prior=train_prior(config, model, data), budget=plan, started=started,
                       resumed=ckpt is not None)
    # a run resumed from a checkpoint without `elapsed_s` (written before it was kept) has no deadline
    if plan is not None and (ckpt is None or ckpt.get("elapsed_s") is not None):
        from ordinalage.training import budget as budget_mod

        state.deadline = budget_mod.deadline(started, plan)
    if t.ema_decay > 0:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        # BatchNorm statistics are averaged with the weights (use_buffers), as swa_utils prescribes for EMA
        state.ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(t.ema_decay), use_buffers=True)
    if t.swa_start > 0:
        from ordinalage.training.swa import WeightAveraging

        state.swa = WeightAveraging(model, t)
    if t.distill_from:
        state.soft_targets = _soft_targets(state, data, model)
    if ckpt is not None:
        _restore(state, ckpt)
    elif ctx.is_main:
        state.run.write_config(config)
        state.run.write_split({"train": data.train, "val": data.val, "test": data.test}, data.groups)
        if state.train_prior is not None:
            from ordinalage.posterior.prior import write_prior

            write_prior(state.run.train_prior_json, state.train_prior, np.arange(model.head.num_classes),
                        {"what": "effective training prior over the head's labels", "target": config.model.target,
                         "labels": list(data.groups.labels) if config.model.target == "group" else "years"})
    if ctx.is_main:
        from ordinalage.training.loggers import build_loggers

        state.loggers = build_loggers(t.loggers, run_dir)
    if not quiet:
        _console().print(
            f"[bold]{config.model.head}[/] head on [bold]{config.model.backbone}[/] | {device} {precision.name} | "
            f"train {len(data.train)} / val {len(data.val)} / test {len(data.test)} images at {spec.size} px | "
            + (f"{ctx.world_size} processes | " if ctx.enabled else "") + f"run folder {run_dir}")
    return state


def _soft_targets(state: TrainState, data: Any, model: Any) -> torch.Tensor:
    """The teacher's targets of a distilled run (teacher_targets.npz in its folder), in training order."""
    path = state.run.teacher_targets_npz
    return targets_for(data.train, read_soft_targets(path), held_out=[*data.val, *data.test],
                       num_classes=model.head.num_classes, where=str(path)).to(state.device)


def _step_loss(state: TrainState, logits: torch.Tensor, age: torch.Tensor, group: torch.Tensor,
               batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The head's loss on the true ages or, for a distilled student, the loss on its teacher's
    distributions (mixed with the head's by `train.distill_alpha`)."""
    if state.soft_targets is None:
        return state.model.head.loss(logits, age, group)
    t = state.config.train
    soft = state.soft_targets[batch["index"].to(state.soft_targets.device)]
    loss = distillation_loss(logits, soft, t.distill_temperature)
    if t.distill_alpha > 0:
        loss = (1.0 - t.distill_alpha) * loss + t.distill_alpha * state.model.head.loss(logits, age, group)
    return loss


def _rows_of(age: torch.Tensor, group: torch.Tensor, batch: dict[str, Any],
             rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """The targets of batch rows `rows` (mixup's partners): ages, groups and, for a distilled
    student, the training indices its teacher's distributions are looked up by."""
    index = batch.get("index")
    picked = batch if index is None else {**batch, "index": index[rows.to(index.device)]}
    return age[rows], group[rows], picked


def _saved_plan(ckpt: dict[str, Any] | None) -> Any:
    """The budget plan kept in a checkpoint (None without one)."""
    if not ckpt or not ckpt.get("budget"):
        return None
    from ordinalage.training.budget import BudgetPlan

    known = {f.name for f in dataclasses.fields(BudgetPlan)}
    return BudgetPlan(**{k: v for k, v in ckpt["budget"].items() if k in known})


def _plan_budget(config: Config, ctx: DistContext, model: torch.nn.Module, device: torch.device, spec: Any,
                 train_loader: Any, val_loader: Any, started: float, data: Any, quiet: bool) -> Any:
    """Rank 0 probes the step time and fixes the epochs for `train.time_budget_min`; every rank gets its plan."""
    from ordinalage.training.budget import plan_budget

    plan = None
    if ctx.is_main:
        plan = plan_budget(config, model, device, resolve_precision(config.train.precision, device), spec,
                           train_loader, val_loader, started=started, n_test=len(data.test), n_val=len(data.val))
        if not quiet:
            _console().print(
                f"time budget {plan.minutes:g} min: {plan.epochs} epoch(s) of {plan.steps_per_epoch} steps "
                f"({plan.step_s * 1000:.0f} ms/step, validation {plan.val_s:.1f} s, test evaluation ~{plan.test_s:.1f} s, "
                f"setup {plan.setup_s:.1f} s)")
        if not plan.fits:
            _console().print(f"[yellow]warning:[/] a time budget of {plan.minutes:g} min does not fit one epoch "
                             f"after {plan.setup_s:.0f} s of setup; training one epoch, which will run over it")
    return broadcast(ctx, plan)


def _restore(state: TrainState, ckpt: dict[str, Any]) -> None:
    state.optimizer.load_state_dict(ckpt["optimizer"])
    state.scheduler.load_state_dict(ckpt["scheduler"])
    state.scaler.load_state_dict(ckpt["scaler"])
    if state.ema is not None and ckpt.get("ema") is not None:
        state.ema.load_state_dict(ckpt["ema"])
    if state.swa is not None and ckpt.get("swa") is not None:
        state.swa.load_state_dict(ckpt["swa"], state.optimizer, len(state.train_loader))
    state.epoch, state.step = int(ckpt["epoch"]), int(ckpt["step"])
    state.best_value, state.best_epoch = ckpt.get("best_value"), int(ckpt.get("best_epoch", -1))
    state.bad_epochs = int(ckpt.get("bad_epochs", 0))
    state.resume_position = ckpt.get("position")
    if state.ctx.is_main:
        state.run.truncate_metrics(state.epoch)
    if not state.quiet:
        inside = f", batch {int(state.resume_position['batches']) + 1}" if state.resume_position else ""
        _console().print(f"resuming {state.run_dir} at epoch {state.epoch + 1}/{state.config.train.epochs}{inside}")


def _reference(data: Any) -> dict[str, Any]:
    """Majority training group and median training age: the baseline kept in every run."""
    ages = np.array([r.age for r in data.train], dtype=float)
    idx = data.groups.indices(ages)
    counts = np.bincount(idx[idx >= 0], minlength=len(data.groups))
    majority = int(np.argmax(counts))
    return {"majority_group": majority, "majority_label": data.groups.labels[majority],
            "median_age": float(np.median(ages)), "train_counts": counts.tolist()}


# --------------------------------------------------------------------------------------------- epochs


def run_epochs(state: TrainState, on_epoch: EpochCallback | None = None, stop_after_epochs: int | None = None) -> bool:
    """Train until train.epochs (or early stop, or `stop_after_epochs`); True when stopped early.

    A budget run re-plans after every epoch, so `train.epochs` may move while this runs. A
    preemption signal stops it with `TrainingPreempted` after writing last.pt."""
    progress = None if state.quiet else Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[ips]:.0f} img/s"),
        TimeElapsedColumn(), TimeRemainingColumn(), console=_console(), transient=True)
    if progress is not None:
        progress.start()
    state.cycle_start = time.monotonic()
    try:
        while state.epoch < state.config.train.epochs and (stop_after_epochs is None or state.epoch < stop_after_epochs):
            t = state.config.train
            if _stop_flags(state, False)[0]:  # a signal during the setup or the last validation
                _stop_for_preemption(state, state.resume_position)
            row = run_epoch(state, progress)
            if on_epoch is not None:
                on_epoch(row["epoch"], row)
            if state.budget_stopped:
                if not state.quiet:
                    _console().print(f"time budget: epoch {state.epoch} was cut short at its deadline; stopping")
                return True
            if t.early_stop_patience and state.bad_epochs >= t.early_stop_patience:
                if not state.quiet:
                    _console().print(f"early stop: {t.monitor} did not improve for {state.bad_epochs} epochs")
                return True
    except TrainingPreempted:
        raise
    except KeyboardInterrupt:
        raise TrainingInterrupted(state.run_dir, state.epoch) from None
    finally:
        if progress is not None:
            progress.stop()
        for logger in state.loggers:
            logger.close()
    return False


def run_epoch(state: TrainState, progress: Progress | None = None) -> dict[str, Any]:
    """One epoch: reseed, train, validate, keep the best, re-plan a budget, write checkpoints and
    the metrics row. An epoch that a signal stopped (last.pt's position) goes on from there."""
    t, ctx, epoch = state.config.train, state.ctx, state.epoch
    seed_everything(t.seed * 100_003 + epoch + 7919 * ctx.rank)
    state.train_sampler.set_epoch(epoch)
    _reseed_loader(state.train_loader, t.seed * 100_003 + epoch + 7919 * ctx.rank)
    state.model.set_backbone_trainable(epoch >= t.freeze_epochs)
    position, state.resume_position = state.resume_position, None
    if position is not None and int(position["epoch"]) != epoch:
        position = None
    swa = state.swa
    if swa is not None and not swa.active and epoch >= swa.first_epoch(t.epochs):
        swa.begin(state.optimizer, len(state.train_loader))
        if not state.quiet:
            _console().print(f"SWA from epoch {epoch + 1}: learning rate to {t.swa_lr_scale:g} x base, "
                             "weights averaged after every epoch")
    stats = train_one_epoch(state, state.train_loader, progress, resume=position)
    sync_buffers(ctx, state.model)  # validate (and save) rank 0's BatchNorm statistics on every rank
    if swa is not None and swa.active:
        swa.end_epoch(state.model)
    averaged = _averaged_model(state)
    if averaged is not None:
        sync_buffers(ctx, averaged)
    val_started = time.perf_counter()
    val = validate(state, state.val_loader)
    val_s = time.perf_counter() - val_started
    row = {"epoch": epoch + 1, **stats, "val_loss": val["loss"], "val_mae": val["mae"],
           "val_accuracy": val["accuracy"], "val_one_off": val["one_off"], "lr": state.optimizer.param_groups[-1]["lr"]}
    state.epoch = epoch + 1
    value = row[t.monitor]
    improved = state.best_value is None or (value < state.best_value if MONITORS[t.monitor] == "min"
                                            else value > state.best_value)
    if improved:
        state.best_value, state.best_epoch, state.bad_epochs = float(value), epoch + 1, 0
    else:
        state.bad_epochs += 1
    if state.budget is not None:
        _replan(state, val_s)
    t = state.config.train
    if ctx.is_main:
        ck = _checkpoint(state)
        atomic_torch_save(ck, state.run.last_pt)
        if improved:  # best.pt: the validated weights (the averaged ones with EMA or once SWA has begun)
            atomic_torch_save({**ck, "model": averaged.state_dict()} if averaged is not None else ck,
                              state.run.best_pt)
            write_json(state.run.val_best_json, {"epoch": epoch + 1, **val})
        state.run.append_metrics(row)
        for logger in state.loggers:
            logger.log_epoch(epoch + 1, row, confusion=val.get("confusion"), labels=state.groups.labels)
    if not state.quiet:
        _console().print(f"epoch {epoch + 1}/{t.epochs}  loss {stats['train_loss']:.4f}  val_loss {val['loss']:.4f}  "
                         f"val MAE {val['mae']:.2f}  val acc {val['accuracy']:.3f}  {stats['images_per_s']:.0f} img/s  "
                         f"{stats['seconds']:.1f}s" + ("  *" if improved else ""))
    return row


def _replan(state: TrainState, val_s: float) -> None:
    """A budget run's plan after the epoch just done (rank 0 plans, every rank follows): the run's
    `train.epochs`, its schedule's end and its deadline follow it; config.yaml is rewritten when
    the epochs change, so a resumed run reads the current plan."""
    from ordinalage.training import budget as budget_mod

    now = time.monotonic()
    cycle_s, state.cycle_start = now - state.cycle_start, now
    plan = state.budget
    if state.ctx.is_main:
        t, data = state.config.train, state.data
        test_per_val = (len(data.test) / max(1, len(data.val)) * (2 if t.eval_tta else 1)) if t.eval_on_end else 0.0
        plan = budget_mod.replan(plan, epochs_done=state.epoch, steps=state.epoch_steps, train_s=state.epoch_train_s,
                                 other_s=max(0.0, cycle_s - state.epoch_train_s), val_s=val_s,
                                 elapsed_s=now - state.started, test_per_val=test_per_val)
    state.budget = plan = broadcast(state.ctx, plan)
    before = state.config.train.epochs
    if plan.epochs != before:
        if not state.quiet and abs(plan.epochs - before) >= max(2, 0.1 * before):  # the epoch lines show the rest
            _console().print(f"time budget: {plan.epochs} epochs fit now, not {before} "
                             f"({plan.step_s * 1000:.0f} ms/step over the last epochs)")
        state.config = dataclasses.replace(state.config, train=dataclasses.replace(state.config.train, epochs=plan.epochs))
        steps = len(state.train_loader)
        for fn in {id(f): f for f in getattr(state.scheduler, "lr_lambdas", [])}.values():
            if hasattr(fn, "retarget"):
                fn.retarget(state.step, plan.epochs * steps)
        if state.ctx.is_main:
            state.run.write_config(state.config)
    if state.deadline is not None:
        state.deadline = budget_mod.deadline(state.started, plan)


def _stop_flags(state: TrainState, deadline_hit: bool) -> tuple[bool, bool]:
    """(a preemption signal came, the deadline passed), agreed by every process (any one decides),
    so that all of them stop after the same step."""
    signalled = state.preempt is not None and state.preempt.signum is not None
    if state.ctx.enabled:
        a, b = all_reduce_sum(state.ctx, float(signalled), float(deadline_hit))
        return a > 0, b > 0
    return signalled, deadline_hit


def _stop_for_preemption(state: TrainState, position: dict[str, Any] | None) -> None:
    """Write last.pt (with `position`, the place inside an unfinished epoch) and raise TrainingPreempted."""
    name = state.preempt.signal_name if state.preempt is not None and state.preempt.signum is not None else "SIGTERM"
    if state.ctx.is_main:
        atomic_torch_save(_checkpoint(state, position), state.run.last_pt)
    barrier(state.ctx)
    raise TrainingPreempted(state.run_dir, state.epoch, int(position["batches"]) if position else 0, name)


def _checkpoint(state: TrainState, position: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "format": FORMAT, "version": VERSION,
        "model": state.model.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "scaler": state.scaler.state_dict(),
        "epoch": state.epoch, "step": state.step,
        "best_value": state.best_value, "best_epoch": state.best_epoch, "bad_epochs": state.bad_epochs,
        "config": to_dict(state.config),
        "groups": state.groups.labels,
        "reference": state.reference,
        "train_prior": None if state.train_prior is None else [float(v) for v in state.train_prior],
        "ema": None if state.ema is None else state.ema.state_dict(),  # raw weights in "model", averaged here
        "swa": None if state.swa is None else state.swa.state_dict(),  # the SWA average and its SWALR schedule
        "budget": None if state.budget is None else state.budget.to_dict(),
        # where a signal stopped an unfinished epoch: {epoch, batches, loss_sum, n, seconds, rng}
        "position": position,
        "elapsed_s": round(time.monotonic() - state.started, 3),  # seconds the run has spent (a budget goes on from it)
        "versions": versions(),
    }


def _summary(state: TrainState, stopped_early: bool) -> dict[str, Any]:
    config, t, data = state.config, state.config.train, state.data
    return {"run_dir": str(state.run_dir), "head": config.model.head, "backbone": config.model.backbone,
            "target": config.model.target, "data": list(config.data.sources), "epochs_done": state.epoch,
            "epochs": t.epochs, "finished": state.epoch >= t.epochs or stopped_early, "stopped_early": stopped_early,
            "monitor": t.monitor, "best_epoch": state.best_epoch, "best_value": state.best_value,
            "reference": state.reference, "data_report": jsonable(data.report), "dropped": data.dropped,
            "n_test": len(data.test), "device": str(state.device), "precision": state.precision.name,
            **({"budget": _budget_summary(state)} if state.budget is not None else {}),
            **({"swa_epochs_averaged": state.swa.averaged} if state.swa is not None else {})}


def _budget_summary(state: TrainState) -> dict[str, Any]:
    """The plan and its re-plans, whether the deadline stopped the run, and `used`: the fraction of
    the budget spent when training ended (wall time from the run's start, over every process of a
    resumed run, to the end of training, over the budget)."""
    seconds = time.monotonic() - state.started
    return {**state.budget.to_dict(), "stopped_at_deadline": state.budget_stopped, "resumed": state.resumed,
            "seconds_before_test": round(seconds, 2), "used": round(seconds / (state.budget.minutes * 60.0), 4)}


# --------------------------------------------------------------------------------------------- loops


def train_one_epoch(state: TrainState, loader: Any, progress: Progress | None = None,
                    stop_after_steps: int | None = None, resume: dict[str, Any] | None = None) -> dict[str, float]:
    """One pass over the training loader; returns mean loss, seconds and images/s.

    `resume` (last.pt's position) continues an epoch that a signal stopped: the loader is replayed
    to the batch it reached (the same batches, augmented by the same random streams, also with
    DataLoader workers), the random states are restored and the epoch's loss goes on from its sums.
    A preemption signal ends the epoch after the step in progress (`TrainingPreempted`)."""
    model, cfg, ctx = state.train_model, state.config.train, state.ctx
    model.train()
    skip = int(resume["batches"]) if resume else 0
    total = len(loader) if hasattr(loader, "__len__") else None
    finished = bool(skip) and total is not None and skip >= total  # stopped after the epoch's last step
    batches = iter(loader) if not finished else iter(())
    for _ in range(0 if finished else skip):  # the workers' and the transform's random streams advance as they did
        next(batches)
    if resume is not None and ctx.is_main and resume.get("rng") is not None:
        restore_rng_state(resume["rng"])  # rank 0's states (dropout, ...); the other ranks keep their epoch seeds
    start = time.perf_counter()
    task = progress.add_task(f"epoch {state.epoch + 1}/{cfg.epochs}", total=total, completed=skip, loss=float("nan"),
                             ips=0.0) if progress else None
    if finished:
        done = (0.0, 0, skip, False)
    elif ctx.enabled:
        from torch.distributed.algorithms.join import Join

        # ranks hold the same number of batches; Join covers a rank left with fewer by unreadable images
        with Join([getattr(model, "_orig_mod", model)]):  # the DDP module, also under torch.compile
            done = _train_steps(state, batches, skip, progress, task, start, stop_after_steps)
    else:
        done = _train_steps(state, batches, skip, progress, task, start, stop_after_steps)
    total_loss, total_n, consumed, preempted = done
    here = time.perf_counter() - start
    state.epoch_train_s, state.epoch_steps = here, consumed - skip
    if progress is not None:
        progress.remove_task(task)
    if resume is not None and ctx.is_main:  # the epoch's sums so far, over every rank, kept by rank 0
        total_loss, total_n = total_loss + float(resume["loss_sum"]), total_n + int(resume["n"])
    seconds = here + (float(resume["seconds"]) if resume else 0.0)
    total_loss, total_n = all_reduce_sum(ctx, total_loss, total_n)
    if preempted:
        _stop_for_preemption(state, {"epoch": state.epoch, "batches": consumed, "loss_sum": total_loss,
                                     "n": int(total_n), "seconds": seconds, "rng": rng_state() if ctx.is_main else None})
    if total_n == 0:
        raise UsageError("no readable training image in this epoch (see the warnings above)")
    return {"train_loss": total_loss / total_n, "seconds": seconds, "images_per_s": total_n / seconds,
            "train_images": int(total_n)}


def _train_steps(state: TrainState, batches: Any, first: int, progress: Progress | None, task: Any, start: float,
                 stop_after_steps: int | None) -> tuple[float, int, int, bool]:
    """Steps over `batches` (batch `first` of the epoch onwards): (loss sum, images, batches of the
    epoch consumed, whether a preemption signal stopped it)."""
    model, opt, cfg = state.train_model, state.optimizer, state.config.train
    total_loss, total_n, consumed = 0.0, 0, first
    for i, batch in enumerate(batches, start=first):
        consumed = i + 1
        if batch is not None:
            x, age, group = batch_to(batch, state.device, state.input_spec, cfg.channels_last)
            partner = None
            if cfg.mixup_alpha > 0:  # blended faces; the loss on own and partners' targets, weighted alike
                x, partner, lam = mix_batch(x, age, cfg.mixup_alpha, cfg.mixup_sigma)
                if cfg.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
            with state.precision.autocast(state.device):
                logits = model(x)
            loss = _step_loss(state, logits, age, group, batch)
            if partner is not None:
                loss = lam * loss + (1.0 - lam) * _step_loss(state, logits, *_rows_of(age, group, batch, partner))
            if not torch.isfinite(loss):
                raise TrainingDiverged(
                    f"loss is {loss.item()} at epoch {state.epoch + 1}, step {i + 1}; stopped. "
                    f"The last good checkpoint is {state.run.last_pt} (try a lower train.lr)")
            backward_and_step(loss, state.model, opt, state.scaler, cfg.grad_clip)
            if state.swa is not None and state.swa.active:
                state.swa.step()
            else:
                state.scheduler.step()
            if state.ema is not None:
                state.ema.update_parameters(state.model)
            state.step += 1
            n = x.shape[0]
            total_loss += loss.item() * n
            total_n += n
            if progress is not None:
                elapsed = time.perf_counter() - start
                progress.update(task, advance=1, loss=total_loss / total_n, ips=total_n / max(elapsed, 1e-9))
        if stop_after_steps is not None and consumed - first >= stop_after_steps:
            break
        preempted, late = _stop_flags(state, state.deadline is not None and time.monotonic() >= state.deadline)
        if preempted:
            return total_loss, total_n, consumed, True
        if late:
            state.budget_stopped = True  # the time budget: validate what there is and stop
            break
    return total_loss, total_n, consumed, False


def validate(state: TrainState, loader: Any) -> dict[str, Any]:
    """Loss and metrics over a whole loader (no augmentation), through the one inference path."""
    from ordinalage.inference.infer import infer
    from ordinalage.posterior.metrics import compute_metrics

    # with several processes, each rank runs the plain module on its shard: DDP's forward would
    # expect the same number of calls on every rank, and the shards may differ by one batch
    model = state.model if state.ctx.enabled else state.train_model
    averaged = _averaged_model(state)
    if averaged is not None:  # with weight averaging, the averaged weights are validated and kept as best
        model = averaged
    out = infer(model, loader, input_spec=state.input_spec, device=state.device, precision=state.precision,
                channels_last=state.config.train.channels_last,
                loss_fn=state.model.head.loss, decoder=state.model)
    # every rank validated its own shard: gather, so metrics cover the whole split exactly once
    g = gather_concat(state.ctx, {"age": out.batch.get("age"), "pred_age": out.age if len(out) else None,
                                  "group": out.batch.get("group"), "pred_group": out.group if len(out) else None,
                                  "rank": out.rank_proba})
    total_loss, total_n = all_reduce_sum(state.ctx, out.loss_sum, len(out))
    if total_n == 0:
        raise UsageError("no readable validation image (see the warnings above)")
    m = compute_metrics(g["age"], g["pred_age"], g["group"], g["pred_group"], n_groups=len(state.groups),
                        labels=state.groups.labels, rank_proba=g["rank"])
    m["loss"] = total_loss / total_n
    return m


def _averaged_model(state: TrainState) -> torch.nn.Module | None:
    """The averaged weights that are validated and saved as best.pt: EMA's, or SWA's once an epoch
    is in its average; None without weight averaging."""
    if state.ema is not None:
        return state.ema.module
    if state.swa is not None and state.swa.averaged > 0:
        return state.swa.model.module
    return None


def _reseed_loader(loader: Any, seed: int) -> None:
    """Make each epoch's worker seeds and main-process augmentation a function of (seed, epoch) alone
    (the epoch order itself comes from ShardSampler.set_epoch)."""
    gen = getattr(loader, "generator", None)
    if gen is not None:
        gen.manual_seed(seed)
    dataset = getattr(loader, "dataset", None)
    transform = getattr(dataset, "transform", None)
    if transform is not None and getattr(loader, "num_workers", 0) == 0:
        from ordinalage.data.augment import reseed_transform

        reseed_transform(transform, seed)
