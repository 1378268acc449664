"""The one inference path: uint8 image batches -> the model's decoded outputs as numpy arrays.

Training's validation, `evaluate`, `predict`, `live`, the Python API and `serve` all call `infer`,
so every caller normalises, goes channels_last, autocasts, mirrors for TTA and decodes the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ordinalage.models.model import predict_logits

if TYPE_CHECKING:
    from ordinalage.runs.runtime import Precision

#: Batch keys copied through to `Inferred.batch` (true labels and the record index, when present).
CARRIED = ("index", "age", "group")


@dataclass
class Inferred:
    """Per-image outputs in batch order: age (N,), group (N,), group_proba (N, G), rank_proba
    (N, K-1) or None, label_proba (N, L) or None, the carried batch keys, and the summed loss."""

    age: np.ndarray
    group: np.ndarray
    group_proba: np.ndarray
    rank_proba: np.ndarray | None = None
    label_proba: np.ndarray | None = None
    batch: dict[str, np.ndarray] = field(default_factory=dict)
    loss_sum: float = 0.0

    def __len__(self) -> int:
        return len(self.age)


def infer(
    model: torch.nn.Module,
    batches: Iterable[Mapping[str, torch.Tensor] | None],
    *,
    input_spec: Any,
    device: torch.device,
    precision: Precision,
    tta: bool = False,
    channels_last: bool = False,
    loss_fn: Callable[..., torch.Tensor] | None = None,
    decoder: torch.nn.Module | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> Inferred:
    """Run `model` over `batches` (dicts with a uint8 (N, 3, H, W) `image`; None entries skipped).

    `decoder` is the module whose `decode` turns logits into predictions (the model itself unless
    it is wrapped, e.g. by DDP or torch.compile). With `loss_fn(logits, age, group)` the batches
    must carry `age` and `group` and `loss_sum` is the sum of per-batch mean loss times batch size.
    `on_batch(n)` is called after each batch with its size (progress bars).
    """
    decoder = decoder if decoder is not None else model
    parts: dict[str, list[np.ndarray]] = {}
    loss_sum = 0.0

    def keep(name: str, value: torch.Tensor | None, dtype: Any) -> None:
        if value is not None:
            parts.setdefault(name, []).append(value.detach().float().cpu().numpy().astype(dtype)
                                              if value.is_floating_point() else value.cpu().numpy().astype(dtype))

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for batch in batches:
                if batch is None:
                    continue
                x = input_spec.normalize(batch["image"].to(device, non_blocking=True))
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                with precision.autocast(device):
                    logits = predict_logits(model, x, tta)
                if loss_fn is not None:
                    loss = loss_fn(logits, batch["age"].to(device).float(), batch["group"].to(device).long())
                    loss_sum += float(loss.item()) * x.shape[0]
                dec = decoder.decode(logits.float())
                keep("age", dec.age, float)
                keep("group", dec.group, np.int64)
                keep("group_proba", dec.group_proba, np.float32)
                keep("rank_proba", dec.rank_proba, np.float32)
                keep("label_proba", getattr(dec, "label_proba", None), np.float32)
                for key in CARRIED:
                    if key in batch:
                        keep(f"batch.{key}", batch[key], np.int64 if key != "age" else float)
                if on_batch is not None:
                    on_batch(int(x.shape[0]))
    finally:
        model.train(was_training)
    cat = {k: np.concatenate(v) for k, v in parts.items()}
    if "age" not in cat:
        return Inferred(age=np.zeros(0), group=np.zeros(0, np.int64), group_proba=np.zeros((0, 0), np.float32))
    return Inferred(age=cat["age"], group=cat["group"], group_proba=cat["group_proba"],
                    rank_proba=cat.get("rank_proba"), label_proba=cat.get("label_proba"),
                    batch={k.split(".", 1)[1]: v for k, v in cat.items() if k.startswith("batch.")},
                    loss_sum=loss_sum)
