"""The training loop over a built `TrainState`: `run_epochs` (train, validate, checkpoint, stop)
calls `run_epoch`, which calls `train_one_epoch` and `validate`.

Every epoch reseeds from (seed, epoch), so a resumed run ends with the same weights as an
uninterrupted one (exactly so on a CPU with `num_workers=0`). A preemption signal (noted by the
`fit` call's `PreemptionSignals`) ends the epoch after the step in progress: last.pt is written
with the position inside the epoch (the batches done, the epoch's running loss, the random
states) and `TrainingPreempted` is raised; a resumed run replays the loader to that position and
goes on mid-epoch. Ctrl-C raises `TrainingInterrupted`; a NaN or infinite loss `TrainingDiverged`.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import torch
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ordinalage.atomic import write_json
from ordinalage.console import stderr_console
from ordinalage.errors import UsageError
from ordinalage.runs.checkpoint import atomic_torch_save, restore_rng_state, rng_state
from ordinalage.runs.runtime import seed_everything
from ordinalage.training.distributed import all_reduce_sum, barrier, broadcast, gather_concat, sync_buffers
from ordinalage.training.mixup import mix_batch
from ordinalage.training.optim import MONITORS
from ordinalage.training.preemption import TrainingInterrupted, TrainingPreempted
from ordinalage.training.run_files import checkpoint
from ordinalage.training.soft_targets import distillation_loss
from ordinalage.training.steps import backward_and_step, batch_to

if TYPE_CHECKING:
    from ordinalage.training.state import TrainState

#: a batch of the training loader (None: every image of it was unreadable)
Batch = dict[str, torch.Tensor] | None
EpochCallback = Callable[[int, dict[str, Any]], None]
#: torch's warning when a schedule steps before its optimiser ever has (see `_step_schedule`)
SCHEDULE_BEFORE_OPTIMIZER = r"Detected call of `lr_scheduler\.step\(\)` before `optimizer\.step\(\)`"


class TrainingDiverged(UsageError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


# --------------------------------------------------------------------------------------------- epochs


def run_epochs(state: TrainState, on_epoch: EpochCallback | None = None, stop_after_epochs: int | None = None) -> bool:
    """Train until train.epochs (or early stop, or `stop_after_epochs`); True when stopped early.

    A budget run re-plans after every epoch, so `train.epochs` may move while this runs. A
    preemption signal stops it with `TrainingPreempted` after writing last.pt."""
    progress = None if state.quiet else Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[ips]:.0f} img/s"),
        TimeElapsedColumn(), TimeRemainingColumn(), console=stderr_console(), transient=True)
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
                    stderr_console().print(f"time budget: epoch {state.epoch} was cut short at its deadline; stopping")
                return True
            if t.early_stop_patience and state.bad_epochs >= t.early_stop_patience:
                if not state.quiet:
                    stderr_console().print(f"early stop: {t.monitor} did not improve for {state.bad_epochs} epochs")
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
    _start_epoch(state)
    position, state.resume_position = state.resume_position, None
    if position is not None and int(position["epoch"]) != epoch:
        position = None
    stats = train_one_epoch(state, _train_loader(state), progress, resume=position)
    sync_buffers(ctx, state.model)  # validate (and save) rank 0's BatchNorm statistics on every rank
    if state.swa is not None and state.swa.active:
        state.swa.end_epoch(state.model)
    averaged = _averaged_model(state)
    if averaged is not None:
        sync_buffers(ctx, averaged)
    val_started = time.perf_counter()
    assert state.val_loader is not None  # build_state sets it
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
        _save_epoch(state, row, val, improved, averaged)
    if not state.quiet:
        stderr_console().print(
            f"epoch {epoch + 1}/{t.epochs}  loss {stats['train_loss']:.4f}  val_loss {val['loss']:.4f}  "
            f"val MAE {val['mae']:.2f}  val acc {val['accuracy']:.3f}  {stats['images_per_s']:.0f} img/s  "
            f"{stats['seconds']:.1f}s" + ("  *" if improved else ""))
    return row


def _start_epoch(state: TrainState) -> None:
    """Reseed from (seed, epoch, rank), order the sampler, (un)freeze the backbone and begin SWA
    when this is its first epoch."""
    t, epoch = state.config.train, state.epoch
    seed_everything(t.seed * 100_003 + epoch + 7919 * state.ctx.rank)
    if state.train_sampler is not None:
        state.train_sampler.set_epoch(epoch)
    _reseed_loader(state.train_loader, t.seed * 100_003 + epoch + 7919 * state.ctx.rank)
    state.model.set_backbone_trainable(epoch >= t.freeze_epochs)
    swa = state.swa
    if swa is not None and not swa.active and epoch >= swa.first_epoch(t.epochs):
        swa.begin(state.optimizer, len(_train_loader(state)))
        if not state.quiet:
            stderr_console().print(f"SWA from epoch {epoch + 1}: learning rate to {t.swa_lr_scale:g} x base, "
                                   "weights averaged after every epoch")


def _save_epoch(state: TrainState, row: dict[str, Any], val: dict[str, Any], improved: bool,
                averaged: torch.nn.Module | None) -> None:
    """Rank 0 writes last.pt, best.pt and val_best.json when improved, the metrics row and the loggers."""
    ck = checkpoint(state)
    atomic_torch_save(ck, state.run.last_pt)
    if improved:  # best.pt: the validated weights (the averaged ones with EMA or once SWA has begun)
        atomic_torch_save({**ck, "model": averaged.state_dict()} if averaged is not None else ck, state.run.best_pt)
        write_json(state.run.val_best_json, {"epoch": row["epoch"], **val})
    state.run.append_metrics(row)
    for logger in state.loggers:
        logger.log_epoch(row["epoch"], row, confusion=val.get("confusion"), labels=state.groups.labels)


def _replan(state: TrainState, val_s: float) -> None:
    """A budget run's plan after the epoch just done (rank 0 plans, every rank follows): the run's
    `train.epochs`, its schedule's end and its deadline follow it; config.yaml is rewritten when
    the epochs change, so a resumed run reads the current plan."""
    from ordinalage.training import budget as budget_mod

    now = time.monotonic()
    cycle_s, state.cycle_start = now - state.cycle_start, now
    plan = state.budget
    if state.ctx.is_main and plan is not None and state.data is not None:
        t, data = state.config.train, state.data
        test_per_val = (len(data.test) / max(1, len(data.val)) * (2 if t.eval_tta else 1)) if t.eval_on_end else 0.0
        plan = budget_mod.replan(plan, epochs_done=state.epoch, steps=state.epoch_steps, train_s=state.epoch_train_s,
                                 other_s=max(0.0, cycle_s - state.epoch_train_s), val_s=val_s,
                                 elapsed_s=now - state.started, test_per_val=test_per_val)
    state.budget = plan = broadcast(state.ctx, plan)
    before = state.config.train.epochs
    if plan.epochs != before:
        if not state.quiet and abs(plan.epochs - before) >= max(2, 0.1 * before):  # the epoch lines show the rest
            stderr_console().print(f"time budget: {plan.epochs} epochs fit now, not {before} "
                                   f"({plan.step_s * 1000:.0f} ms/step over the last epochs)")
        state.config = dataclasses.replace(state.config, train=dataclasses.replace(state.config.train, epochs=plan.epochs))
        steps = len(_train_loader(state))
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
        atomic_torch_save(checkpoint(state, position), state.run.last_pt)
    barrier(state.ctx)
    raise TrainingPreempted(state.run_dir, state.epoch, int(position["batches"]) if position else 0, name)


# --------------------------------------------------------------------------------------------- one epoch


def train_one_epoch(state: TrainState, loader: Iterable[Batch], progress: Progress | None = None,
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
    batches: Iterator[Batch] = iter(loader) if not finished else iter(())
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
    if progress is not None and task is not None:
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


def _train_steps(state: TrainState, batches: Iterator[Batch], first: int, progress: Progress | None,
                 task: TaskID | None, start: float, stop_after_steps: int | None) -> tuple[float, int, int, bool]:
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
            stepped = backward_and_step(loss, state.model, opt, state.scaler, cfg.grad_clip)
            _step_schedule(state, stepped)
            if state.ema is not None:
                state.ema.update_parameters(state.model)
            state.step += 1
            n = x.shape[0]
            total_loss += loss.item() * n
            total_n += n
            if progress is not None and task is not None:
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


def _step_schedule(state: TrainState, optimizer_stepped: bool) -> None:
    """Advance the learning-rate schedule by one batch (SWALR's once SWA has begun).

    The schedule follows the batches, also one whose update the fp16 GradScaler skipped (an inf or
    NaN gradient, typically in the first steps while the scale calibrates): that batch changed no
    weight, and batch i keeps the schedule's rate for i, which the budget's re-plans
    (`retarget(state.step, ...)`), the step schedule's epoch boundaries and resumed runs rely on.
    When the skipped step is the schedule's first, torch warns "Detected call of
    `lr_scheduler.step()` before `optimizer.step()`" (it checks only the first step, for code that
    calls them in the wrong order): harmless here, so that warning is silenced, in that case only."""
    step = state.swa.step if state.swa is not None and state.swa.active else state.scheduler.step
    if optimizer_stepped:
        step()
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=SCHEDULE_BEFORE_OPTIMIZER, category=UserWarning)
        step()


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


# --------------------------------------------------------------------------------------------- validation


def validate(state: TrainState, loader: Iterable[Batch]) -> dict[str, Any]:
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


def _train_loader(state: TrainState) -> Any:
    """The run's training loader (`build_state` sets it)."""
    assert state.train_loader is not None
    return state.train_loader


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


__all__ = ["Batch", "EpochCallback", "TrainingDiverged", "run_epoch", "run_epochs", "train_one_epoch", "validate"]
