"""Training: `fit(config) -> run folder`, in two parts: `build_state` (data, model, optimiser,
scheduler, resume) and `run_epochs` (train, validate, checkpoint, stop), on one
`train_one_epoch` / `validate` pair. The run folder's files are written by `RunDir` alone.

`fit` trains and does not evaluate: callers (the CLI, the tuner, benchmarks) decide whether to run
`ordinalage.evaluation.evaluate.evaluate_run` on the test split afterwards.
`fit(None, resume=DIR)` continues a stopped run from `last.pt`: every epoch reseeds from
(seed, epoch), so a resumed run ends with the same weights as an uninterrupted one (exactly so on
a CPU with `num_workers=0`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
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
from ordinalage.training.optim import MONITORS, build_optimizer, build_scheduler
from ordinalage.training.steps import backward_and_step, batch_to

EpochCallback = Callable[[int, dict[str, Any]], None]
__all__ = ["MONITORS", "TrainState", "TrainingDiverged", "TrainingInterrupted", "build_optimizer",
           "backward_and_step", "build_scheduler", "build_state", "build_training", "fit", "run_epochs", "train_one_epoch", "validate"]


class TrainingDiverged(UsageError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training: `run_dir`'s last.pt holds `epochs_done` finished epochs."""

    def __init__(self, run_dir: Path, epochs_done: int) -> None:
        super().__init__(f"{run_dir}: interrupted; last.pt holds {epochs_done} finished epoch(s)")
        self.run_dir, self.epochs_done = run_dir, epochs_done


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
    budget: Any = None  # training.budget.BudgetPlan when train.time_budget_min is set
    deadline: float | None = None  # time.monotonic() after which training stops (the time budget)
    budget_stopped: bool = False  # the deadline cut an epoch short
    resumed: bool = False  # this process continued a run from its last.pt
    started: float = field(default_factory=time.monotonic)  # when the run (this process) started

    @property
    def run(self) -> RunDir:
        return RunDir(self.run_dir)


def _console() -> Console:
    return Console(stderr=True)


# --------------------------------------------------------------------------------------------- fit


def fit(config: Config | None, *, resume: str | Path | None = None, on_epoch: EpochCallback | None = None,
        quiet: bool = False, stop_after_epochs: int | None = None) -> Path:
    """Train a model and return its run folder.

    `on_epoch(epoch, row)` is called after each epoch with the metrics row (the tuner reports
    to Optuna there and may raise `optuna.TrialPruned`). `stop_after_epochs` ends the run early
    as if interrupted (for tests and for splitting work); `resume` continues it. With
    `train.members` N > 1 use `training.train.train` (an ensemble calls `fit` once per member).
    """
    if (resume is not None and is_ensemble_run(resume)) or (config is not None and config.train.members > 1):
        raise UsageError("fit trains one model; an ensemble (train.members > 1) is trained by "
                         "ordinalage.training.train.train, which calls fit for each member")
    started = time.monotonic()
    ckpt = None
    if resume is not None:  # every rank reads last.pt (the run folder must be on a shared file system)
        if not (Path(resume) / "last.pt").is_file():
            raise UsageError(f"{resume}: no last.pt in this folder to resume from")
        ckpt = load_checkpoint(Path(resume) / "last.pt")
        config = config_from_dict(ckpt["config"])
    if config is None:
        raise UsageError("fit: a config, or a run folder to resume, is needed")
    validate_config(config)
    ctx, device_name = init_distributed(config.train.device)
    try:
        state = build_state(config, ctx, device_name, ckpt=ckpt, run_dir=Path(resume) if resume else None,
                            quiet=quiet or not ctx.is_main, started=started)
        stopped_early = run_epochs(state, on_epoch=on_epoch, stop_after_epochs=stop_after_epochs)
        if ctx.is_main:
            state.run.write_summary(_summary(state, stopped_early))
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
    sigma = config.model.label_sigma if (config.model.head == "class" and config.model.target == "age") else 0.0
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
    scheduler = build_scheduler(config, optimizer, steps_per_epoch)
    scaler = torch.amp.GradScaler(device.type, enabled=precision.use_scaler)
    return train_model, optimizer, scheduler, scaler, precision


def build_state(config: Config, ctx: DistContext, device_name: str, *, ckpt: dict[str, Any] | None = None,
                run_dir: Path | None = None, quiet: bool = True, started: float | None = None) -> TrainState:
    """Data, model, loaders, optimiser, scheduler and (when resuming) the saved state of a run.

    With `train.time_budget_min` (and no checkpoint), `train.epochs` becomes the number of epochs
    that fit in the budget counted from `started` (a `time.monotonic()` value; default: now)."""
    started = time.monotonic() if started is None else started
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
    if plan is not None and ckpt is None:  # a resumed run has no deadline: its first start is not known here
        from ordinalage.training.budget import deadline

        state.deadline = deadline(started, plan)
    if t.ema_decay > 0:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        # BatchNorm statistics are averaged with the weights (use_buffers), as swa_utils prescribes for EMA
        state.ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(t.ema_decay), use_buffers=True)
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


def _saved_plan(ckpt: dict[str, Any] | None) -> Any:
    """The budget plan kept in a checkpoint (None without one)."""
    if not ckpt or not ckpt.get("budget"):
        return None
    from ordinalage.training.budget import BudgetPlan

    return BudgetPlan(**ckpt["budget"])


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
    state.epoch, state.step = int(ckpt["epoch"]), int(ckpt["step"])
    state.best_value, state.best_epoch = ckpt.get("best_value"), int(ckpt.get("best_epoch", -1))
    state.bad_epochs = int(ckpt.get("bad_epochs", 0))
    if state.ctx.is_main:
        state.run.truncate_metrics(state.epoch)
    if not state.quiet:
        _console().print(f"resuming {state.run_dir} at epoch {state.epoch + 1}/{state.config.train.epochs}")


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
    """Train until train.epochs (or early stop, or `stop_after_epochs`); True when stopped early."""
    t = state.config.train
    progress = None if state.quiet else Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[ips]:.0f} img/s"),
        TimeElapsedColumn(), TimeRemainingColumn(), console=_console(), transient=True)
    if progress is not None:
        progress.start()
    try:
        while state.epoch < t.epochs and (stop_after_epochs is None or state.epoch < stop_after_epochs):
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
    except KeyboardInterrupt:
        raise TrainingInterrupted(state.run_dir, state.epoch) from None
    finally:
        if progress is not None:
            progress.stop()
        for logger in state.loggers:
            logger.close()
    return False


def run_epoch(state: TrainState, progress: Progress | None = None) -> dict[str, Any]:
    """One epoch: reseed, train, validate, keep the best, write checkpoints and the metrics row."""
    t, ctx, epoch = state.config.train, state.ctx, state.epoch
    seed_everything(t.seed * 100_003 + epoch + 7919 * ctx.rank)
    state.train_sampler.set_epoch(epoch)
    _reseed_loader(state.train_loader, t.seed * 100_003 + epoch + 7919 * ctx.rank)
    state.model.set_backbone_trainable(epoch >= t.freeze_epochs)
    stats = train_one_epoch(state, state.train_loader, progress)
    sync_buffers(ctx, state.model)  # validate (and save) rank 0's BatchNorm statistics on every rank
    if state.ema is not None:
        sync_buffers(ctx, state.ema.module)
    val = validate(state, state.val_loader)
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
    if ctx.is_main:
        ck = _checkpoint(state)
        atomic_torch_save(ck, state.run.last_pt)
        if improved:  # best.pt: the validated weights (the EMA ones when train.ema_decay > 0)
            atomic_torch_save({**ck, "model": state.ema.module.state_dict()} if state.ema is not None else ck,
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


def _checkpoint(state: TrainState) -> dict[str, Any]:
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
        "budget": None if state.budget is None else state.budget.to_dict(),
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
            **({"budget": {**state.budget.to_dict(), "stopped_at_deadline": state.budget_stopped,
                           "resumed": state.resumed,
                           "seconds_before_test": round(time.monotonic() - state.started, 2)}}
               if state.budget is not None else {})}


# --------------------------------------------------------------------------------------------- loops


def train_one_epoch(state: TrainState, loader: Any, progress: Progress | None = None,
                    stop_after_steps: int | None = None) -> dict[str, float]:
    """One pass over the training loader; returns mean loss, seconds and images/s."""
    model, cfg = state.train_model, state.config.train
    model.train()
    start = time.perf_counter()
    task = progress.add_task(f"epoch {state.epoch + 1}/{cfg.epochs}", total=len(loader), loss=float("nan"), ips=0.0) if progress else None
    if state.ctx.enabled:
        from torch.distributed.algorithms.join import Join

        # ranks hold the same number of batches; Join covers a rank left with fewer by unreadable images
        with Join([getattr(model, "_orig_mod", model)]):  # the DDP module, also under torch.compile
            total_loss, total_n = _train_steps(state, loader, progress, task, start, stop_after_steps)
    else:
        total_loss, total_n = _train_steps(state, loader, progress, task, start, stop_after_steps)
    seconds = time.perf_counter() - start
    if progress is not None:
        progress.remove_task(task)
    total_loss, total_n = all_reduce_sum(state.ctx, total_loss, total_n)
    if total_n == 0:
        raise UsageError("no readable training image in this epoch (see the warnings above)")
    return {"train_loss": total_loss / total_n, "seconds": seconds, "images_per_s": total_n / seconds,
            "train_images": int(total_n)}


def _train_steps(state: TrainState, loader: Any, progress: Progress | None, task: Any, start: float,
                 stop_after_steps: int | None) -> tuple[float, int]:
    model, opt, cfg = state.train_model, state.optimizer, state.config.train
    total_loss, total_n = 0.0, 0
    for i, batch in enumerate(loader):
        if batch is None:
            continue
        x, age, group = batch_to(batch, state.device, state.input_spec, cfg.channels_last)
        with state.precision.autocast(state.device):
            logits = model(x)
        loss = state.model.head.loss(logits, age, group)
        if not torch.isfinite(loss):
            raise TrainingDiverged(
                f"loss is {loss.item()} at epoch {state.epoch + 1}, step {i + 1}; stopped. "
                f"The last good checkpoint is {state.run.last_pt} (try a lower train.lr)")
        backward_and_step(loss, state.model, opt, state.scaler, cfg.grad_clip)
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
        if stop_after_steps is not None and i + 1 >= stop_after_steps:
            break
        if state.deadline is not None and time.monotonic() >= state.deadline:
            state.budget_stopped = True  # the time budget: validate what there is and stop
            break
    return total_loss, total_n


def validate(state: TrainState, loader: Any) -> dict[str, Any]:
    """Loss and metrics over a whole loader (no augmentation), through the one inference path."""
    from ordinalage.inference.infer import infer
    from ordinalage.posterior.metrics import compute_metrics

    # with several processes, each rank runs the plain module on its shard: DDP's forward would
    # expect the same number of calls on every rank, and the shards may differ by one batch
    model = state.model if state.ctx.enabled else state.train_model
    if state.ema is not None:  # with weight averaging, the averaged weights are validated and kept as best
        model = state.ema.module
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
