"""A training run's state (`TrainState`) and its setup (`build_state`): data, model, loaders,
optimiser, scheduler, GradScaler, weight averaging, the time budget's plan and, when resuming,
what last.pt saved. `build_training` (what trains a model) is shared with the benchmarks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch

from ordinalage.config import Config
from ordinalage.console import stderr_console
from ordinalage.runs.checkpoint import resolve_input_spec
from ordinalage.runs.rundir import RunDir
from ordinalage.runs.runtime import Precision, resolve_precision, seed_everything, select_device
from ordinalage.training.distributed import DistContext, ShardSampler, barrier, broadcast, local_batch_size
from ordinalage.training.optim import build_optimizer, build_scheduler
from ordinalage.training.soft_targets import read_soft_targets, targets_for

if TYPE_CHECKING:
    from torch.optim.swa_utils import AveragedModel
    from torch.utils.data import DataLoader

    from ordinalage.data.prepare import PreparedData
    from ordinalage.groups import AgeGroups
    from ordinalage.models.input_spec import InputSpec
    from ordinalage.models.model import AgeModel
    from ordinalage.training.budget import BudgetPlan
    from ordinalage.training.loggers import EpochLogger
    from ordinalage.training.preemption import PreemptionSignals
    from ordinalage.training.swa import WeightAveraging

T = TypeVar("T")


@dataclass
class TrainState:
    """Everything that lives for the length of a run."""

    config: Config
    run_dir: Path
    device: torch.device
    precision: Precision
    model: AgeModel
    train_model: torch.nn.Module  # the model the loop calls (compiled and/or DDP-wrapped)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    input_spec: InputSpec
    groups: AgeGroups
    reference: dict[str, Any]
    ctx: DistContext = DistContext()
    epoch: int = 0  # next epoch to run
    step: int = 0
    best_value: float | None = None
    best_epoch: int = -1
    bad_epochs: int = 0
    data: PreparedData | None = None
    train_loader: DataLoader | None = None
    val_loader: DataLoader | None = None
    train_sampler: ShardSampler | None = None
    quiet: bool = True
    train_prior: np.ndarray | None = None  # the head's effective training label distribution
    loggers: list[EpochLogger] = field(default_factory=list)  # per-epoch loggers (TensorBoard)
    ema: AveragedModel | None = None  # the EMA of `model` when train.ema_decay > 0
    swa: WeightAveraging | None = None  # when train.swa_start > 0
    budget: BudgetPlan | None = None  # when train.time_budget_min is set
    deadline: float | None = None  # time.monotonic() after which training stops (the time budget)
    budget_stopped: bool = False  # the deadline cut an epoch short
    resumed: bool = False  # this process continued a run from its last.pt
    #: when the run started, as this process's time.monotonic(): a resumed run's start is moved back
    #: by the seconds its earlier processes spent (last.pt's `elapsed_s`)
    started: float = field(default_factory=time.monotonic)
    preempt: PreemptionSignals | None = None  # the fit call's signals (None: signals are not watched)
    resume_position: dict[str, Any] | None = None  # last.pt's position inside an unfinished epoch
    cycle_start: float = field(default_factory=time.monotonic)  # when the epoch being timed began (re-plans)
    epoch_train_s: float = 0.0  # seconds of training steps this process ran in the last epoch
    epoch_steps: int = 0  # and how many batches they were
    soft_targets: torch.Tensor | None = None  # (len(train), L) teacher distributions of a distilled student

    @property
    def run(self) -> RunDir:
        return RunDir(self.run_dir)


# --------------------------------------------------------------------------------------------- build_state


def build_state(config: Config, ctx: DistContext, device_name: str, *, run_dir: Path,
                ckpt: dict[str, Any] | None = None, quiet: bool = True, started: float | None = None) -> TrainState:
    """Data, model, loaders, optimiser, scheduler and (when resuming) the saved state of the run in
    `run_dir` (which exists: `fit` creates it).

    With `train.time_budget_min` (and no checkpoint), `train.epochs` becomes the number of epochs
    that fit in the budget counted from `started` (a `time.monotonic()` value; default: now); a
    checkpoint's `elapsed_s` moves `started` back by the seconds the run spent before it."""
    started = time.monotonic() if started is None else started
    if ckpt is not None and ckpt.get("elapsed_s") is not None:  # a resumed run keeps the minutes it has left
        started -= float(ckpt["elapsed_s"])
    from ordinalage.data.prepare import prepare_data

    device = select_device(device_name if ctx.enabled else config.train.device)
    seed_everything(config.train.seed)
    data = _rank0_first(ctx, lambda: prepare_data(config.data))
    model = _build_model(config, data, ckpt, quiet)
    spec = resolve_input_spec(config, model.backbone)
    sampler, train_loader, val_loader = _build_loaders(config, ctx, data, spec, quiet)
    plan = _saved_plan(ckpt)  # a resumed budget run keeps its plan (its epochs are in its config already)
    if config.train.time_budget_min and ckpt is None:  # fix the epochs before the schedule is built for them
        plan = _plan_budget(config, ctx, model, device, spec, train_loader, val_loader, started, data, quiet)
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=plan.epochs))
    train_model, optimizer, scheduler, scaler, precision = build_training(config, model, device, len(train_loader), ctx)
    state = TrainState(config=config, run_dir=run_dir, device=device, precision=precision, model=model,
                       train_model=train_model, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                       input_spec=spec, groups=data.groups, reference=_reference(data), ctx=ctx, data=data,
                       train_loader=train_loader, val_loader=val_loader, train_sampler=sampler, quiet=quiet,
                       train_prior=train_prior(config, model, data), budget=plan, started=started,
                       resumed=ckpt is not None)
    _add_deadline_and_averaging(state, ckpt)
    if ckpt is not None:
        _restore(state, ckpt)
    elif ctx.is_main:
        _write_first_files(state)
    if ctx.is_main:
        from ordinalage.training.loggers import build_loggers

        state.loggers = build_loggers(config.train.loggers, run_dir)
    if not quiet:
        _announce(state)
    return state


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


def train_prior(config: Config, model: AgeModel, data: PreparedData) -> np.ndarray | None:
    """The head's effective training distribution over its labels, as the loop saw it (after caps,
    sampling, the weighted sampler, class weights and label distributions); None for a head whose
    output is one age (its `output` trait "age", e.g. regression: prior correction does not apply)."""
    from ordinalage.posterior.prior import effective_train_prior

    if not model.head.traits().prior_correction:
        return None
    ages = np.array([r.age for r in data.train], dtype=float)
    sigma = float(getattr(model.head, "label_sigma", 0.0))  # the soft labels the head trains on (`soft_labels` heads)
    return effective_train_prior(model.head.labels_of(ages), model.head.num_classes, sample_weights=data.sampler_weights,
                                 class_weights=data.class_weights, group_idx=data.groups.clip_indices(ages),
                                 label_sigma=sigma)


# --------------------------------------------------------------------------------------------- the parts


def _rank0_first(ctx: DistContext, fn: Callable[[], T]) -> T:
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


def _build_model(config: Config, data: PreparedData, ckpt: dict[str, Any] | None, quiet: bool) -> AgeModel:
    """The model, with last.pt's weights when resuming, else those of `model.init` when set."""
    from ordinalage.models.model import build_model

    # class weights live in the head (a buffer saved with the model); the label prior sets its biases
    model = build_model(config.model, data.groups, class_weights=data.class_weights,
                        train_ages=np.array([r.age for r in data.train], dtype=float))
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
    elif config.model.init:  # fine-tune from a trained run: its backbone, and its head when it fits
        from ordinalage.runs.init import init_from

        message = init_from(model, config.model.init)
        if not quiet:
            stderr_console().print(message)
    return model


def _build_loaders(config: Config, ctx: DistContext, data: PreparedData, spec: InputSpec,
                   quiet: bool) -> tuple[ShardSampler, DataLoader, DataLoader]:
    """The training sampler and the training and validation loaders over the decoded-image cache."""
    from ordinalage.data.cache import prepare_cache
    from ordinalage.data.dataset import build_loader

    t = config.train
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
    return sampler, train_loader, val_loader


def _add_deadline_and_averaging(state: TrainState, ckpt: dict[str, Any] | None) -> None:
    """The budget's deadline, the EMA or SWA averages and a distilled student's teacher targets."""
    t, model = state.config.train, state.model
    # a run resumed from a checkpoint without `elapsed_s` (written before it was kept) has no deadline
    if state.budget is not None and (ckpt is None or ckpt.get("elapsed_s") is not None):
        from ordinalage.training import budget as budget_mod

        state.deadline = budget_mod.deadline(state.started, state.budget)
    if t.ema_decay > 0:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        # BatchNorm statistics are averaged with the weights (use_buffers), as swa_utils prescribes for EMA
        state.ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(t.ema_decay), use_buffers=True)
    if t.swa_start > 0:
        from ordinalage.training.swa import WeightAveraging

        state.swa = WeightAveraging(model, t)
    if t.distill_from:
        state.soft_targets = _soft_targets(state)


def _soft_targets(state: TrainState) -> torch.Tensor:
    """The teacher's targets of a distilled run (teacher_targets.npz in its folder), in training order."""
    data, path = _data(state), state.run.teacher_targets_npz
    return targets_for(data.train, read_soft_targets(path), held_out=[*data.val, *data.test],
                       num_classes=state.model.head.num_classes, where=str(path)).to(state.device)


def _saved_plan(ckpt: dict[str, Any] | None) -> BudgetPlan | None:
    """The budget plan kept in a checkpoint (None without one)."""
    if not ckpt or not ckpt.get("budget"):
        return None
    from ordinalage.training.budget import BudgetPlan

    known = {f.name for f in dataclasses.fields(BudgetPlan)}
    return BudgetPlan(**{k: v for k, v in ckpt["budget"].items() if k in known})


def _plan_budget(config: Config, ctx: DistContext, model: AgeModel, device: torch.device, spec: InputSpec,
                 train_loader: DataLoader, val_loader: DataLoader, started: float, data: PreparedData,
                 quiet: bool) -> BudgetPlan:
    """Rank 0 probes the step time and fixes the epochs for `train.time_budget_min`; every rank gets its plan."""
    from ordinalage.training.budget import plan_budget

    plan = None
    if ctx.is_main:
        plan = plan_budget(config, model, device, resolve_precision(config.train.precision, device), spec,
                           train_loader, val_loader, started=started, n_test=len(data.test), n_val=len(data.val))
        if not quiet:
            stderr_console().print(
                f"time budget {plan.minutes:g} min: {plan.epochs} epoch(s) of {plan.steps_per_epoch} steps "
                f"({plan.step_s * 1000:.0f} ms/step, validation {plan.val_s:.1f} s, test evaluation ~{plan.test_s:.1f} s, "
                f"setup {plan.setup_s:.1f} s)")
        if not plan.fits:
            stderr_console().print(f"[yellow]warning:[/] a time budget of {plan.minutes:g} min does not fit one "
                                   f"epoch after {plan.setup_s:.0f} s of setup; training one epoch, which will run over it")
    return broadcast(ctx, plan)


def _restore(state: TrainState, ckpt: dict[str, Any]) -> None:
    """Put last.pt's optimiser, schedule, scaler, averages and position back into `state`."""
    state.optimizer.load_state_dict(ckpt["optimizer"])
    state.scheduler.load_state_dict(ckpt["scheduler"])
    state.scaler.load_state_dict(ckpt["scaler"])
    if state.ema is not None and ckpt.get("ema") is not None:
        state.ema.load_state_dict(ckpt["ema"])
    if state.swa is not None and ckpt.get("swa") is not None:
        state.swa.load_state_dict(ckpt["swa"], state.optimizer, len(_loader(state)))
    state.epoch, state.step = int(ckpt["epoch"]), int(ckpt["step"])
    state.best_value, state.best_epoch = ckpt.get("best_value"), int(ckpt.get("best_epoch", -1))
    state.bad_epochs = int(ckpt.get("bad_epochs", 0))
    state.resume_position = ckpt.get("position")
    if state.ctx.is_main:
        state.run.truncate_metrics(state.epoch)
    if not state.quiet:
        inside = f", batch {int(state.resume_position['batches']) + 1}" if state.resume_position else ""
        stderr_console().print(f"resuming {state.run_dir} at epoch {state.epoch + 1}/{state.config.train.epochs}{inside}")


def _write_first_files(state: TrainState) -> None:
    """A new run's config.yaml, split.csv and train_prior.json (rank 0)."""
    config, data, run = state.config, _data(state), state.run
    run.write_config(config)
    run.write_split({"train": data.train, "val": data.val, "test": data.test}, data.groups)
    if state.train_prior is not None:
        from ordinalage.posterior.prior_files import write_prior

        write_prior(run.train_prior_json, state.train_prior, np.arange(state.model.head.num_classes),
                    {"what": "effective training prior over the head's labels", "target": config.model.target,
                     "labels": list(data.groups.labels) if config.model.target == "group" else "years"})


def _announce(state: TrainState) -> None:
    """One line: head, backbone, device, precision, split sizes, image size, processes and run folder;
    a second with the loader workers `data.num_workers: auto` resolved to."""
    config, data, ctx = state.config, _data(state), state.ctx
    stderr_console().print(
        f"[bold]{config.model.head}[/] head on [bold]{config.model.backbone}[/] | {state.device} "
        f"{state.precision.name} | train {len(data.train)} / val {len(data.val)} / test {len(data.test)} images "
        f"at {state.input_spec.size} px | " + (f"{ctx.world_size} processes | " if ctx.enabled else "")
        + f"run folder {state.run_dir}")
    if config.data.num_workers == "auto":  # what `auto` chose, once per run (the summary keeps it too)
        from ordinalage.data.loader_workers import describe_num_workers

        stderr_console().print(describe_num_workers(config.data.num_workers), highlight=False)


def _reference(data: PreparedData) -> dict[str, Any]:
    """Majority training group and median training age: the baseline kept in every run."""
    ages = np.array([r.age for r in data.train], dtype=float)
    idx = data.groups.indices(ages)
    counts = np.bincount(idx[idx >= 0], minlength=len(data.groups))
    majority = int(np.argmax(counts))
    return {"majority_group": majority, "majority_label": data.groups.labels[majority],
            "median_age": float(np.median(ages)), "train_counts": counts.tolist()}


def _data(state: TrainState) -> PreparedData:
    """The run's data (`build_state` always sets it; a hand-made state may lack it)."""
    if state.data is None:
        raise ValueError("this TrainState has no data (build it with build_state)")
    return state.data


def _loader(state: TrainState) -> DataLoader:
    """The run's training loader (`build_state` always sets it)."""
    if state.train_loader is None:
        raise ValueError("this TrainState has no training loader (build it with build_state)")
    return state.train_loader


__all__ = ["TrainState", "build_state", "build_training", "train_prior"]
