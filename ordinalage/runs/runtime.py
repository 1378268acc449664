"""Device, precision and seeding decisions, made in one place."""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass

import numpy as np
import torch

from ordinalage.errors import UsageError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def select_device(name: str = "auto") -> torch.device:
    """`auto` picks CUDA when present, else CPU; an unavailable explicit device is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise UsageError(f"train.device: unknown device {name!r}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"train.device: {name!r} requested but CUDA is not available here")
    return dev


@dataclass(frozen=True)
class Precision:
    """Autocast dtype (None: fp32) and whether a GradScaler is needed (fp16 only)."""

    name: str
    dtype: torch.dtype | None
    use_scaler: bool

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.dtype)


def fp16_supported(device: torch.device) -> bool:
    """fp16 autocast with a GradScaler: always on CUDA; on a CPU where this torch has both CPU
    float16 autocast and `torch.amp.GradScaler("cpu")` (torch >= 2.3)."""
    if device.type == "cuda":
        return True
    available = getattr(torch.amp, "is_autocast_available", None)
    if device.type != "cpu" or available is None or not available("cpu"):
        return False
    try:
        torch.amp.GradScaler("cpu")
    except (RuntimeError, TypeError, ValueError):  # pragma: no cover - older torch
        return False
    return True


def resolve_precision(name: str, device: torch.device) -> Precision:
    """`auto`: bf16 autocast on CUDA (no scaler), fp32 on CPU. fp16 brings a GradScaler (on CUDA,
    and on a CPU where torch supports it: slower than fp32 there, but the same code path)."""
    if name == "auto":
        name = "bf16" if device.type == "cuda" else "fp32"
    if name == "fp32":
        return Precision("fp32", None, False)
    if name == "bf16":
        return Precision("bf16", torch.bfloat16, False)
    if name == "fp16":
        if not fp16_supported(device):
            raise UsageError(f"train.precision: fp16 with a GradScaler is not supported on {device.type} "
                             f"by torch {torch.__version__}; use bf16 or fp32")
        return Precision("fp16", torch.float16, True)
    raise UsageError(f"train.precision: unknown value {name!r} ({', '.join(PRECISIONS)})")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)

