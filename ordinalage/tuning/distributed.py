"""Optuna trials that train with several processes: only rank 0 talks to the study's storage.

Under `torchrun`, every rank runs the same objective, but only rank 0 holds a study. Wrap the
trial in `DistributedTrial`: rank 0 asks the sampler and broadcasts each suggested value, so
every rank trains the same configuration; `report` and `set_user_attr` reach the storage from
rank 0 alone; `should_prune` is decided on rank 0 and broadcast, so all ranks stop a pruned
trial at the same epoch. An error raised on rank 0 while asking is raised on every rank.
`optimize_distributed` runs the trial loop: rank 0 calls `study.optimize`, the other ranks follow
trial by trial until rank 0 says it is done.

This is the same idea as optuna-integration's `TorchDistributedTrial`, kept to what ordinalage
uses (`suggest_float/int/categorical`, `report`, `should_prune`, `set_user_attr`, `number`,
`params`) and built on `ordinalage.training.distributed.broadcast` (gloo or NCCL). See docs/distributed.md.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ordinalage.training.distributed import DistContext, broadcast, context_from_group

_STOP = "__stop__"


class DistributedTrial:
    """One trial seen from every rank: `trial` is the Optuna trial on rank 0 and None elsewhere."""

    def __init__(self, trial: Any | None, ctx: DistContext | None = None, number: int | None = None) -> None:
        self.ctx = ctx if ctx is not None else context_from_group()
        if self.ctx.is_main and trial is None:
            raise ValueError("DistributedTrial: rank 0 needs the Optuna trial")
        self._trial = trial if self.ctx.is_main else None
        self.number = trial.number if self._trial is not None else number

    def _from_main(self, ask: Callable[[], Any]) -> Any:
        """`ask()` on rank 0, its value (or its exception) on every rank."""
        outcome: Any = None
        if self.ctx.is_main:
            try:
                outcome = ("ok", ask())
            except Exception as exc:  # noqa: BLE001 - re-raised on every rank below
                outcome = ("error", exc)
        kind, value = broadcast(self.ctx, outcome)
        if kind == "error":
            raise value
        return value

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None,
                      log: bool = False) -> float:
        return self._from_main(lambda: self._trial.suggest_float(name, low, high, step=step, log=log))

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        return self._from_main(lambda: self._trial.suggest_int(name, low, high, step=step, log=log))

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        return self._from_main(lambda: self._trial.suggest_categorical(name, choices))

    def report(self, value: float, step: int) -> None:
        if self._trial is not None:
            self._trial.report(value, step)

    def should_prune(self) -> bool:
        return bool(self._from_main(lambda: self._trial.should_prune()))

    def set_user_attr(self, key: str, value: Any) -> None:
        if self._trial is not None:
            self._trial.set_user_attr(key, value)

    @property
    def params(self) -> dict[str, Any]:
        return self._from_main(lambda: dict(self._trial.params))


def optimize_distributed(study: Any | None, objective: Callable[[DistributedTrial], float],
                         ctx: DistContext | None = None, n_trials: int | None = None,
                         timeout: float | None = None, catch: tuple[type[Exception], ...] = ()) -> None:
    """Run `objective(DistributedTrial)` for each trial on every rank; `study` is used on rank 0 only.

    Rank 0 calls `study.optimize(n_trials, timeout, catch)` and announces each trial's number
    before it starts; the other ranks (whose `study` may be None) run the objective for each
    announced trial and return when rank 0 announces the end. A pruned trial (`optuna.TrialPruned`,
    raised on every rank because the decision is broadcast) and the exceptions in `catch` end
    only that trial on the other ranks, as they do in `study.optimize` on rank 0.
    """
    import optuna

    ctx = ctx if ctx is not None else context_from_group()
    if ctx.is_main:
        if study is None:
            raise ValueError("optimize_distributed: rank 0 needs the study")

        def run(trial: Any) -> float:
            broadcast(ctx, trial.number)
            return objective(DistributedTrial(trial, ctx))

        try:
            study.optimize(run, n_trials=n_trials, timeout=timeout, catch=catch)
        finally:
            broadcast(ctx, _STOP)
        return
    while (number := broadcast(ctx, None)) != _STOP:
        try:
            objective(DistributedTrial(None, ctx, number=number))
        except (optuna.TrialPruned, *catch):
            pass
