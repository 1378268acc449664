"""The two pieces of a training step that the training loop and the time budget's probe share:
a batch moved to the device, and the scaled backward + clipping + optimiser step."""

from __future__ import annotations

from typing import Any

import torch


def batch_to(batch: dict[str, torch.Tensor], device: torch.device, spec: Any, channels_last: bool) -> tuple:
    """A loader batch on `device`: normalised images (channels_last when asked), float ages, long groups."""
    images = batch["image"].to(device, non_blocking=True)
    x = spec.normalize(images)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    age = batch["age"].to(device, non_blocking=True).float()
    group = batch["group"].to(device, non_blocking=True).long()
    return x, age, group


def backward_and_step(loss: torch.Tensor, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                      scaler: torch.amp.GradScaler, grad_clip: float) -> bool:
    """One optimiser step from `loss`: scaled backward, gradient clipping (when > 0), step, scaler
    update. False when an enabled GradScaler skipped the optimiser's step (an inf or NaN gradient
    under fp16: no weight changed and the scale was lowered), else True."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if grad_clip > 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    scaler.step(optimizer)
    if not scaler.is_enabled():
        scaler.update()
        return True
    scale = scaler.get_scale()  # the scaler has synchronised for its inf check already
    scaler.update()
    return scaler.get_scale() >= scale  # update() lowers the scale exactly when step() was skipped
