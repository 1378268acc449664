"""Optimisers, learning-rate schedules and monitored metrics: registries and builders.

The registries are the single list of valid names: config validation and the CLI's choices read them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from ordinalage.config import Config

#: monitored validation metric -> "min" or "max"
MONITORS = {"val_mae": "min", "val_loss": "min", "val_accuracy": "max", "val_one_off": "max"}


def _adamw(groups: list[dict[str, Any]], config: Config) -> torch.optim.Optimizer:
    return torch.optim.AdamW(groups, lr=config.train.lr, weight_decay=config.train.weight_decay)


def _sgd(groups: list[dict[str, Any]], config: Config) -> torch.optim.Optimizer:
    t = config.train
    return torch.optim.SGD(groups, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay, nesterov=True)


OPTIMIZERS: dict[str, Callable[[list[dict[str, Any]], Config], torch.optim.Optimizer]] = {"adamw": _adamw, "sgd": _sgd}


def _cosine(config: Config, steps_per_epoch: int) -> Callable[[int], float]:
    """Linear warm-up, then cosine to zero at the last step."""
    total = max(1, config.train.epochs * steps_per_epoch)
    warmup = int(round(config.train.warmup_epochs * steps_per_epoch))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def _step(config: Config, steps_per_epoch: int) -> Callable[[int], float]:
    """Multiply by train.gamma every train.step_size epochs."""
    t = config.train
    return lambda step: t.gamma ** ((step // max(1, steps_per_epoch)) // max(1, t.step_size))


def _constant(config: Config, steps_per_epoch: int) -> Callable[[int], float]:
    return lambda step: 1.0


SCHEDULERS: dict[str, Callable[[Config, int], Callable[[int], float]]] = {
    "cosine": _cosine, "step": _step, "none": _constant}


def build_optimizer(config: Config, model: torch.nn.Module) -> torch.optim.Optimizer:
    """The optimiser over the model's parameter groups (backbone/head, decayed/undecayed, and
    layer-wise learning-rate decay with `train.layer_decay`, through timm's helpers)."""
    from ordinalage.models.param_groups import param_groups

    return OPTIMIZERS[config.train.optimizer](param_groups(model, config), config)


def build_scheduler(config: Config, optimizer: torch.optim.Optimizer, steps_per_epoch: int
                    ) -> torch.optim.lr_scheduler.LRScheduler:
    """A per-step LambdaLR with the factor of `train.scheduler`."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, SCHEDULERS[config.train.scheduler](config, steps_per_epoch))
