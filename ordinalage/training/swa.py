"""Stochastic weight averaging (Izmailov et al. 2018) with `torch.optim.swa_utils`.

From epoch `round(train.swa_start * train.epochs)` on (a budget run's planned epochs at that
time), `SWALR` takes over from the run's schedule: over one epoch it anneals every parameter
group's learning rate (cosine) to `train.swa_lr_scale` times the group's base rate and then
holds it there. After each of these epochs the weights join an equal-weight `AveragedModel`.
BatchNorm statistics are averaged with the weights (`use_buffers=True`), so the averaged model
can be validated after every epoch without an extra pass over the training set, and, as with
EMA, it is the model that is validated and kept as `best.pt`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.optim.swa_utils import SWALR, AveragedModel

from ordinalage.config import TrainConfig


class WeightAveraging:
    """The SWA state of one run: the averaged model and, once SWA has begun, its SWALR schedule."""

    def __init__(self, model: torch.nn.Module, train: TrainConfig) -> None:
        self.start, self.lr_scale = train.swa_start, train.swa_lr_scale
        self.model = AveragedModel(model, use_buffers=True)
        self.scheduler: SWALR | None = None

    @property
    def active(self) -> bool:
        """SWA has begun: SWALR steps the learning rate instead of the run's schedule."""
        return self.scheduler is not None

    @property
    def averaged(self) -> int:
        """How many epochs' weights are in the average."""
        return int(self.model.n_averaged)

    def first_epoch(self, epochs: int) -> int:
        """The 0-based epoch that SWA begins with, for a run of `epochs` (at least the second epoch)."""
        return max(1, min(epochs - 1, int(round(self.start * epochs))))

    def begin(self, optimizer: torch.optim.Optimizer, steps_per_epoch: int) -> None:
        """Hand the learning rate to SWALR: one epoch of cosine anneal to `swa_lr_scale` x base rate."""
        lrs = [float(group.get("initial_lr", group["lr"])) * self.lr_scale for group in optimizer.param_groups]
        self.scheduler = SWALR(optimizer, swa_lr=lrs, anneal_epochs=max(1, int(steps_per_epoch)),
                               anneal_strategy="cos")

    def step(self) -> None:
        """One optimiser step's learning-rate update (SWALR is stepped per step, not per epoch)."""
        assert self.scheduler is not None
        self.scheduler.step()

    def end_epoch(self, model: torch.nn.Module) -> None:
        """Add this epoch's weights (and BatchNorm statistics) to the average."""
        self.model.update_parameters(model)

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(),
                "scheduler": None if self.scheduler is None else self.scheduler.state_dict()}

    def load_state_dict(self, state: dict[str, Any], optimizer: torch.optim.Optimizer, steps_per_epoch: int) -> None:
        """Restore a saved state (a resumed run goes on inside or before its SWA epochs)."""
        self.model.load_state_dict(state["model"])
        if state.get("scheduler") is not None:
            self.begin(optimizer, steps_per_epoch)
            assert self.scheduler is not None
            self.scheduler.load_state_dict(state["scheduler"])
