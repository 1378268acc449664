"""What a training run's state writes to its folder: last.pt's and best.pt's content
(`checkpoint`) and summary.json's (`summary`); `RunDir` writes the files."""

from __future__ import annotations

import time
from typing import Any

from ordinalage.atomic import jsonable
from ordinalage.config import to_dict
from ordinalage.data.loader_workers import num_workers_record
from ordinalage.runs.checkpoint import FORMAT, VERSION, versions
from ordinalage.training.state import TrainState


def checkpoint(state: TrainState, position: dict[str, Any] | None = None) -> dict[str, Any]:
    """last.pt's content: weights, optimiser, schedule, scaler, averages, the epoch reached and, when
    a signal stopped an unfinished epoch, the `position` inside it."""
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


def summary(state: TrainState, stopped_early: bool) -> dict[str, Any]:
    """summary.json's content when training ends (the caller's evaluation adds `test` later)."""
    config, t, data = state.config, state.config.train, state.data
    assert data is not None  # build_state sets it
    return {"run_dir": str(state.run_dir), "head": config.model.head, "backbone": config.model.backbone,
            "target": config.model.target, "data": list(config.data.sources), "epochs_done": state.epoch,
            "epochs": t.epochs, "finished": state.epoch >= t.epochs or stopped_early, "stopped_early": stopped_early,
            "monitor": t.monitor, "best_epoch": state.best_epoch, "best_value": state.best_value,
            "reference": state.reference, "data_report": jsonable(data.report), "dropped": data.dropped,
            "n_test": len(data.test), "device": str(state.device), "precision": state.precision.name,
            "num_workers": num_workers_record(config.data.num_workers),  # as given, and what it resolved to
            **({"budget": _budget_summary(state)} if state.budget is not None else {}),
            **({"swa_epochs_averaged": state.swa.averaged} if state.swa is not None else {})}


def _budget_summary(state: TrainState) -> dict[str, Any]:
    """The plan and its re-plans, whether the deadline stopped the run, and `used`: the fraction of
    the budget spent when training ended (wall time from the run's start, over every process of a
    resumed run, to the end of training, over the budget)."""
    assert state.budget is not None
    seconds = time.monotonic() - state.started
    return {**state.budget.to_dict(), "stopped_at_deadline": state.budget_stopped, "resumed": state.resumed,
            "seconds_before_test": round(seconds, 2), "used": round(seconds / (state.budget.minutes * 60.0), 4)}


__all__ = ["checkpoint", "summary"]
