"""A teacher's soft targets: the distribution over years that a trained run (one model or an
ensemble, averaged as `evaluate` averages it) gives each of its training images, each image's
logits averaged with its mirror's (the training images plus their flips), then softened by a
temperature. The images are decoded once (or read from the decoded-image cache that the teacher's
training filled) and every member runs over the same batches."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ordinalage.console import transient_progress
from ordinalage.errors import UsageError
from ordinalage.runs.members import load_members
from ordinalage.runs.rundir import RunDir
from ordinalage.training.soft_targets import temper


@dataclass
class TeacherTargets:
    """The teacher's tempered distribution per readable training image, and what it was made from."""

    paths: list[str]
    proba: np.ndarray  # (N, L) float32, rows sum to 1
    skipped: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)


def teacher_targets(teacher: str | Path, *, temperature: float = 1.0, device: str = "auto", batch_size: int = 256,
                    workers: int | str | None = None, show: bool = False) -> TeacherTargets:
    """Run the teacher (a run folder; an ensemble's folder stands for its members) over its own
    training split with flip TTA and return its averaged, tempered label distributions."""
    from ordinalage.data.cache import prepare_cache
    from ordinalage.data.dataset import build_loader
    from ordinalage.data.loader_workers import resolve_num_workers
    from ordinalage.inference.infer import infer
    from ordinalage.runs.runtime import resolve_precision, select_device

    dev = select_device(device)
    members = load_members(teacher, device=dev)
    first = members[0]
    if first.config.model.target != "age":
        raise UsageError(f"{teacher}: the teacher predicts age groups (model.target group); a student learns "
                         "from a teacher's distribution over single years (model.target age)")
    if first.run_dir is None or not RunDir(first.run_dir).split_csv.is_file():
        raise UsageError(f"{teacher}: no run folder with split.csv; the teacher must be a run folder")
    records = RunDir(first.run_dir).read_split("train")
    if not records:
        raise UsageError(f"{first.run_dir / 'split.csv'}: no training images")
    cfg = first.config.data
    # the decoded-image cache of the teacher's whole split (the one its training built: same key), when it has one
    cache = prepare_cache(RunDir(first.run_dir).read_split("all"), cfg, first.input_spec.size, progress=show)
    loader = build_loader(records, first.groups, cfg, first.input_spec.size, batch_size, train=False, seed=0,
                          num_workers=resolve_num_workers(cfg.num_workers if workers is None else workers),
                          cache=cache)
    batches = _decoded_batches(loader, len(records), show)
    outputs = []
    for m in members:
        out = infer(m.model, batches, input_spec=m.input_spec, device=dev,
                    precision=resolve_precision(m.config.train.precision, dev), tta=True,
                    channels_last=m.config.train.channels_last and dev.type == "cuda")
        if out.label_proba is None:
            raise UsageError(f"{m.checkpoint_path}: a {m.config.model.head} head gives no distribution over ages "
                             "to learn from; distill from class, CORAL, CORN or the field's distribution heads")
        outputs.append(out)
    proba = np.mean(np.stack([o.label_proba for o in outputs]), axis=0)  # the ensemble's mean, as evaluate takes it
    index = outputs[0].batch["index"]
    seen = set(index.tolist())
    meta = {"teacher": str(teacher), "members": [str(m.checkpoint_path) for m in members], "temperature": temperature,
            "tta": "flip", "images": len(index)}
    return TeacherTargets(paths=[records[i].path for i in index], proba=temper(np.asarray(proba), temperature),
                          skipped=[r.path for i, r in enumerate(records) if i not in seen], meta=meta)


def _decoded_batches(loader: Any, total: int, show: bool) -> list[dict[str, torch.Tensor]]:
    """Every batch of `loader`, decoded once and kept (uint8: 7,600 faces at 64 px are 93 MB)."""
    kept = []
    with transient_progress("decoding the teacher's training images", total, show) as advance:
        for batch in loader:
            if batch is None:
                continue
            kept.append(batch)
            if advance is not None:
                advance(int(batch["image"].shape[0]))
    return kept


__all__ = ["TeacherTargets", "teacher_targets"]
