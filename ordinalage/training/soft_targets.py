"""Soft targets for a distilled student: a teacher's label distribution per training image, kept in
the student's run folder (`teacher_targets.npz`), and the loss that trains on them.

The file holds `paths` (the training images), `proba` (N, L) rows that sum to 1 (the teacher's
distribution, already softened by the temperature), `skipped` (training images the teacher could
not read) and `meta` (JSON: the teacher, the temperature). `fit` reads it when `train.distill_from`
is set, so a resumed student trains on the same targets without its teacher.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ordinalage.errors import UsageError


def temper(proba: np.ndarray, temperature: float) -> np.ndarray:
    """Rows of `proba` raised to 1/temperature and renormalised: T > 1 flattens them, T < 1 sharpens
    them, T = 1 keeps them (the softmax of logits / T when `proba` is a softmax of logits)."""
    p = np.clip(np.asarray(proba, dtype=np.float64), 1e-12, None)
    logp = np.log(p) / float(temperature)
    logp -= logp.max(axis=1, keepdims=True)
    out = np.exp(logp)
    return (out / out.sum(axis=1, keepdims=True)).astype(np.float32)


def write_soft_targets(path: str | Path, paths: Sequence[str], proba: np.ndarray, *, skipped: Sequence[str] = (),
                       meta: dict[str, Any] | None = None) -> Path:
    """Write `teacher_targets.npz` atomically (a temporary file, then a rename)."""
    proba = np.asarray(proba, dtype=np.float32)
    if proba.ndim != 2 or proba.shape[0] != len(paths):
        raise ValueError(f"soft targets: {len(paths)} paths but proba of shape {proba.shape}")
    path = Path(path)
    buf = io.BytesIO()
    np.savez_compressed(buf, paths=np.asarray(list(paths), dtype=str), proba=proba,
                        skipped=np.asarray(list(skipped), dtype=str), meta=np.asarray(json.dumps(meta or {})))
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, path)
    return path


def read_soft_targets(path: str | Path) -> dict[str, Any]:
    """`paths`, `proba`, `skipped` and `meta` of a teacher_targets.npz; a UsageError names a missing or broken file."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: missing; a distilled run (train.distill_from) keeps its teacher's targets there. "
                         "Start the student with: ordinalage distill TEACHER_RUN")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {"paths": [str(p) for p in z["paths"]], "proba": z["proba"].astype(np.float32),
                    "skipped": [str(p) for p in z["skipped"]], "meta": json.loads(str(z["meta"]))}
    except (OSError, KeyError, ValueError) as exc:
        raise UsageError(f"{path}: not a readable teacher_targets.npz ({exc})") from None


def targets_for(records: Sequence[Any], targets: dict[str, Any], *, held_out: Sequence[Any] = (),
                num_classes: int, where: str) -> torch.Tensor:
    """The (len(records), L) soft targets of the training records, in their order.

    Rows of images the teacher could not read are zeros (the loader skips those images too). A
    training image without a target, a target width other than the head's `num_classes`, or a
    validation or test image (`held_out`) that the teacher trained on is a UsageError naming `where`."""
    proba = targets["proba"]
    if proba.shape[1] != num_classes:
        raise UsageError(f"{where}: the teacher's distributions have {proba.shape[1]} labels, the student's head "
                         f"{num_classes}; give the student the teacher's model.max_age and target")
    row = {p: i for i, p in enumerate(targets["paths"])}
    leaked = [r.path for r in held_out if r.path in row]
    if leaked:
        raise UsageError(f"{where}: the teacher trained on {len(leaked)} of this run's validation or test images "
                         f"(e.g. {leaked[0]}); distill on the teacher's own data and split")
    skipped = set(targets["skipped"])
    missing = [r.path for r in records if r.path not in row and r.path not in skipped]
    if missing:
        raise UsageError(f"{where}: {len(missing)} training image(s) have no teacher target (e.g. {missing[0]}); "
                         "the student must use the teacher's data and split (data.sources, split_seed, fractions)")
    out = np.zeros((len(records), num_classes), dtype=np.float32)
    for i, r in enumerate(records):
        j = row.get(r.path)
        if j is not None:
            out[i] = proba[j]
    return torch.from_numpy(out)


def distillation_loss(logits: torch.Tensor, soft: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean cross-entropy of the student's softmax(logits / T) against the soft targets, times T**2
    (Hinton et al., 2015: keeps the gradient's scale when T changes). Zero rows add nothing."""
    with torch.autocast(device_type=logits.device.type, enabled=False):
        t = float(temperature)
        logp = F.log_softmax(logits.float() / t, dim=1)
        return -(soft.float() * logp).sum(1).mean() * (t * t)


__all__ = ["distillation_loss", "read_soft_targets", "targets_for", "temper", "write_soft_targets"]
