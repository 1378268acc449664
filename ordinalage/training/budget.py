"""Time-budgeted training: turn `train.time_budget_min` into epochs, and keep them fitting.

A budgeted run measures, before its first epoch, how long one training step and one validation
pass take on this machine (a short probe on a throwaway copy of the model, through the run's own
loaders) and sets `train.epochs` to what fits in the budget. That first plan is only a start: a
probe of a few seconds is at the mercy of whatever else the machine does then (a probe that met
another process's burst of work once measured 263 ms/step for a run that then trained at 78, and
planned 12 epochs where 45 fitted). So at the end of every epoch the run plans again (`replan`)
from what it measured: the median seconds per step and per epoch's validation and bookkeeping
over its last `REPLAN_WINDOW` epochs, and the time left. `train.epochs` follows the plan, and the
cosine schedule with it (`BudgetCosine`: its end moves to the new last step, the learning rate
goes on from where it is, without a jump). summary.json keeps every plan (`budget.replans`) and
the fraction of the budget used (`budget.used`).

The budget covers the whole run: setup (data, cache), the probe, training, validation and the
evaluation of the test split at the end, estimated from the validation pass. If the machine
slows down after the last re-plan, a deadline ends the current epoch's training early (the run
then validates once and stops), so a run never goes past its budget by more than one validation
and the test evaluation's estimate. A resumed run keeps the minutes it had left: last.pt holds
the seconds spent so far (`elapsed_s`).

The price is reproducibility: a budget run's epochs depend on the machine's speed while it ran.
Its config.yaml and summary.json say which epochs it got; `--epochs N` (no budget) reruns it exactly.
"""

from __future__ import annotations

import copy
import io
import math
import re
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from ordinalage.config import Config
from ordinalage.errors import UsageError
from ordinalage.runs.runtime import Precision

#: seconds kept aside for checkpoints, the summary and the test evaluation's plots and reports
RESERVE_S = 15.0
#: each epoch's estimate is stretched by this much, so that a little noise does not hit the deadline
MARGIN = 1.05
#: seconds per epoch for the metrics row, reseeding and the console line
EPOCH_BOOKKEEPING_S = 0.02
#: each re-plan takes the median of the last this-many epochs' measured times
REPLAN_WINDOW = 3
_UNITS = {"s": 1 / 60, "m": 1.0, "min": 1.0, "h": 60.0}


def parse_budget(text: str | float | int) -> float:
    """Minutes from '30m', '90s', '1.5h', '45min' or a bare number of minutes."""
    if isinstance(text, (int, float)):
        minutes = float(text)
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(s|m|min|h)?\s*", str(text))
        if match is None:
            raise UsageError(f"budget {text!r}: expected minutes, or a number with s, m or h (e.g. 30m, 90s, 1.5h)")
        minutes = float(match.group(1)) * _UNITS[match.group(2) or "m"]
    if not minutes > 0:
        raise UsageError(f"budget {text!r}: must be more than zero")
    return minutes


@dataclass
class BudgetPlan:
    """What a time budget became: the epochs that fit and the measurements they came from."""

    minutes: float
    epochs: int  # the current plan: the run's train.epochs (the first plan's figure is `first_epochs`)
    steps_per_epoch: int
    step_s: float  # seconds per training step, data loading included (the probe's, then the re-plans')
    val_s: float  # seconds per validation pass
    epoch_overhead_s: float  # seconds per epoch besides the steps and validation (loader start, checkpoints)
    test_s: float  # estimated seconds of the test evaluation at the end
    setup_s: float  # seconds from the start of the run to the end of the probe
    probe_steps: int
    fits: bool = True  # False when not even one epoch fits (the run still trains one)
    first_epochs: int | None = None  # what the probe planned
    probe_step_s: float | None = None  # what the probe measured
    #: one entry per finished epoch: {epoch, step_s (the median the plan used), epochs (the new plan),
    #: epoch_step_s, other_s, val_s (this epoch's own measurements)}
    replans: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def reserve_for(budget_s: float) -> float:
    """Seconds kept aside at the end of a budget of `budget_s` seconds: `RESERVE_S`, but never more
    than 5% of a short budget (a 2-minute run would otherwise leave an eighth of it unused)."""
    return min(RESERVE_S, 0.05 * budget_s)


def epochs_that_fit(budget_s: float, elapsed_s: float, steps_per_epoch: int, step_s: float, val_s: float,
                    test_s: float, reserve_s: float = RESERVE_S) -> int:
    """Whole epochs (train + validation) that fit in what is left of `budget_s`, with a margin of
    `MARGIN` for a machine that slows down; 0 when none does."""
    left = budget_s - elapsed_s - test_s - reserve_s
    per_epoch = (steps_per_epoch * step_s + val_s) * MARGIN
    if per_epoch <= 0:
        raise ValueError("an epoch must take some time")
    return max(0, math.floor(left / per_epoch))


def _timed_steps(step: Any, loader: Any, steps: int, warmup: int = 2, chunks: int = 4) -> tuple[float, float, int]:
    """(seconds per call of `step(batch)`, seconds until the loader's first batch, steps timed).

    After `warmup` untimed calls, up to `steps` calls are timed in `chunks` runs of equal length;
    the per-call time is the median chunk's, so that a burst of load from another process during
    one chunk does not set the plan of the whole run (measured on a shared 2-core machine: a
    one-off burst during a single-window probe planned 6 epochs where 10 fitted)."""
    per_chunk = max(1, steps // max(1, chunks))
    done, first, times, start = 0, None, [], None
    opened = time.perf_counter()
    for batch in loader:
        if first is None:
            first = time.perf_counter() - opened
        if batch is None:
            continue
        if done == warmup:
            start = time.perf_counter()
        step(batch)
        done += 1
        if done > warmup and (done - warmup) % per_chunk == 0:
            now = time.perf_counter()
            times.append((now - start) / per_chunk)
            start = now
        if done >= warmup + steps:
            break
    if not times:
        raise UsageError("the time budget's probe found no readable batch to time")
    return statistics.median(times), first or 0.0, len(times) * per_chunk


def _release_workers(loader: Any) -> None:
    """Shut down a loader's persistent workers, so the run's first epoch starts them afresh, seeded
    as they would have been without the probe (DataLoader keeps them in its private `_iterator`)."""
    iterator = getattr(loader, "_iterator", None)
    if iterator is not None and hasattr(iterator, "_shutdown_workers"):
        iterator._shutdown_workers()
        loader._iterator = None


def probe_seconds(config: Config, model: torch.nn.Module, device: torch.device, precision: Precision, spec: Any,
                  train_loader: Any, val_loader: Any, train_steps: int = 24, val_batches: int = 8
                  ) -> tuple[float, float, float, int]:
    """(seconds per training step, seconds per validation pass, seconds of fixed cost per epoch, steps
    timed) for this model, its loaders, precision and optimiser, measured on a copy of `model` so the
    run itself is untouched. The fixed cost is the loaders' start and two checkpoint writes."""
    from ordinalage.training.optim import build_optimizer
    from ordinalage.training.steps import backward_and_step, batch_to

    channels_last = config.train.channels_last
    model = copy.deepcopy(model).to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    called = torch.compile(model) if config.train.compile else model
    optimizer = build_optimizer(config, model)
    scaler = torch.amp.GradScaler(device.type, enabled=precision.use_scaler)

    def train_step(batch: dict[str, torch.Tensor]) -> None:
        x, age, group = batch_to(batch, device, spec, channels_last)
        with precision.autocast(device):
            loss = model.head.loss(called(x), age, group)
        backward_and_step(loss, model, optimizer, scaler, config.train.grad_clip)
        float(loss.detach())  # wait for the device

    @torch.no_grad()
    def val_step(batch: dict[str, torch.Tensor]) -> None:
        x, age, group = batch_to(batch, device, spec, channels_last)
        with precision.autocast(device):
            float(model.head.loss(called(x), age, group))

    model.train()
    steps = max(1, min(train_steps, len(train_loader) - 2))
    # untimed: two steps, plus the batches the loader's workers have queued ahead (those came free)
    # (the DataLoader's num_workers: data.num_workers already resolved by build_loader, `auto` included)
    queued = train_loader.num_workers * (train_loader.prefetch_factor or 0) if train_loader.num_workers else 0
    warmup = max(0, min(2 + queued, len(train_loader) - steps))
    step_s, train_start_s, timed = _timed_steps(train_step, train_loader, steps, warmup=warmup)
    model.eval()
    n_val = len(val_loader)
    batch_s, val_start_s, _ = _timed_steps(val_step, val_loader, max(1, min(val_batches, n_val - 1)),
                                           warmup=min(1, n_val - 1))
    for loader in (train_loader, val_loader):
        _release_workers(loader)
    start = time.perf_counter()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, io.BytesIO())
    save_s = time.perf_counter() - start
    return step_s, batch_s * n_val, train_start_s + val_start_s + 2 * save_s + EPOCH_BOOKKEEPING_S, timed


def plan_budget(config: Config, model: torch.nn.Module, device: torch.device, precision: Precision, spec: Any,
                train_loader: Any, val_loader: Any, *, started: float, n_test: int, n_val: int) -> BudgetPlan:
    """Probe the run and return the epochs that fit in `train.time_budget_min` counted from `started`
    (a `time.monotonic()` value); the test evaluation is estimated from the validation pass."""
    minutes = float(config.train.time_budget_min or 0)
    step_s, val_s, epoch_s, timed = probe_seconds(config, model, device, precision, spec, train_loader, val_loader)
    test_s = val_s * n_test / max(1, n_val) * (2 if config.train.eval_tta else 1) if config.train.eval_on_end else 0.0
    elapsed = time.monotonic() - started
    steps = len(train_loader)
    epochs = epochs_that_fit(minutes * 60.0, elapsed, steps, step_s, val_s + epoch_s, test_s,
                             reserve_s=reserve_for(minutes * 60.0))
    return BudgetPlan(minutes=minutes, epochs=max(1, epochs), steps_per_epoch=steps, step_s=step_s, val_s=val_s,
                      epoch_overhead_s=epoch_s, test_s=test_s, setup_s=elapsed, probe_steps=timed, fits=epochs >= 1,
                      first_epochs=max(1, epochs), probe_step_s=step_s)


def deadline(started: float, plan: BudgetPlan) -> float:
    """The `time.monotonic()` after which training stops (leaving room for the test evaluation)."""
    return started + plan.minutes * 60.0 - plan.test_s - reserve_for(plan.minutes * 60.0)


def replan(plan: BudgetPlan, *, epochs_done: int, steps: int, train_s: float, other_s: float, val_s: float,
           elapsed_s: float, test_per_val: float) -> BudgetPlan:
    """Plan again at the end of epoch `epochs_done` from what the run measured, and return `plan`
    with its `epochs` (the run's new total), `step_s`, `val_s` and `test_s` updated and the re-plan
    appended to `plan.replans`.

    `steps` training steps took `train_s` seconds in this epoch (a resumed epoch: the steps this
    process ran), `other_s` the rest of the epoch (validation, checkpoints, loader start, logging),
    `val_s` of it the validation; `elapsed_s` have gone since the run started (resumed runs count
    their earlier processes); the test evaluation takes `test_per_val` validations. Each figure is
    the median over the last `REPLAN_WINDOW` epochs, so one slow or fast epoch (another process's
    burst, a cold start) moves the plan by at most one epoch's worth."""
    own_step_s = train_s / max(1, steps)
    recent = [*plan.replans, {"epoch_step_s": own_step_s, "other_s": other_s, "val_s": val_s}][-REPLAN_WINDOW:]
    step_s = statistics.median(r["epoch_step_s"] for r in recent)
    other = statistics.median(r["other_s"] for r in recent)
    plan.val_s = statistics.median(r["val_s"] for r in recent)
    plan.test_s = plan.val_s * test_per_val
    plan.step_s = step_s
    budget_s = plan.minutes * 60.0
    more = epochs_that_fit(budget_s, elapsed_s, plan.steps_per_epoch, step_s, other, plan.test_s,
                           reserve_s=reserve_for(budget_s))
    plan.epochs = max(1, epochs_done + more)
    plan.replans.append({"epoch": epochs_done, "step_s": round(step_s, 5), "epochs": plan.epochs,
                         "epoch_step_s": round(own_step_s, 5), "other_s": round(other_s, 4),
                         "val_s": round(val_s, 4)})
    return plan


class BudgetCosine:
    """The cosine schedule of a budget run: linear warm-up, then cosine to zero at the last step,
    where the last step can move (`retarget`) when a re-plan changes the run's epochs.

    The schedule is a function of the progress through the planned steps. Without a re-plan it is
    exactly `training.optim`'s cosine for `train.epochs`. A re-plan at step s to a new total T keeps
    the factor at s and spreads the rest of the progress evenly over the steps left: the learning
    rate never jumps, and it still reaches zero at the run's last step, however often the plan moves.
    The alternative, a cosine over the fraction of the budget's time spent, would make the learning
    rate of each step depend on the clock, and so change between a run and its resumed copy.

    A callable object rather than a function, so `LambdaLR.state_dict` saves its state (the anchor
    and the total) in last.pt and a resumed run goes on with the same schedule."""

    def __init__(self, total: int, warmup: int) -> None:
        self.total, self.warmup = max(1, int(total)), int(warmup)
        self.anchor_step, self.anchor_progress = self.warmup, 0.0

    @classmethod
    def for_config(cls, config: Config, steps_per_epoch: int) -> BudgetCosine:
        return cls(config.train.epochs * steps_per_epoch, int(round(config.train.warmup_epochs * steps_per_epoch)))

    def progress(self, step: int) -> float:
        span = max(1, self.total - self.anchor_step)
        return min(1.0, self.anchor_progress + (step - self.anchor_step) * (1.0 - self.anchor_progress) / span)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / (self.warmup + 1)
        return 0.5 * (1.0 + math.cos(math.pi * self.progress(step)))

    def retarget(self, step: int, total: int) -> None:
        """From `step` on, anneal to zero at `total` steps (at least one step after `step`)."""
        if step > self.warmup:
            self.anchor_step, self.anchor_progress = int(step), self.progress(step)
        self.total = max(int(total), int(step) + 1)
