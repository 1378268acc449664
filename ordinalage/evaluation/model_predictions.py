"""A model's predictions on records: the images of a split or of other data, run through one model
(with flip TTA when asked) or through an ensemble (averaged as `ordinalage evaluate` averages them)."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ordinalage.console import transient_progress
from ordinalage.data.records import Record
from ordinalage.errors import UsageError
from ordinalage.evaluation.predictions import Predictions
from ordinalage.runs.rundir import RunDir

if TYPE_CHECKING:
    import torch

    from ordinalage.runs.checkpoint import LoadedModel
    from ordinalage.zoo import ZooModel


def predict_records(
    loaded: LoadedModel,
    records: Sequence[Record],
    batch_size: int = 128,
    device: str | torch.device = "auto",
    workers: int | str | None = None,  # DataLoader workers: an int or auto (default: the run's data.num_workers)
    strict: bool = False,
    show: bool = False,
    tta: bool = False,
) -> Predictions:
    """Run `loaded.model` over `records` in streaming batches through `ordinalage.inference.infer`.

    `tta`: test-time augmentation, the mean of the logits of each image and its horizontal mirror
    (twice the compute; faces are close to left-right symmetric, so the mirror is a second view).
    Only per-image scalars and probabilities are kept, so memory does not grow with the number of
    images. Unreadable images are skipped and listed in `.skipped` (a UsageError when `strict`).
    """
    from ordinalage.config import replace
    from ordinalage.data.dataset import build_loader
    from ordinalage.data.loader_workers import resolve_num_workers
    from ordinalage.inference.infer import infer
    from ordinalage.runs.runtime import resolve_precision, select_device

    if not records:
        raise UsageError("evaluate: no images to predict")
    dev = select_device(str(device))
    data_cfg = replace(loaded.config.data, strict=True) if strict else loaded.config.data
    loader = build_loader(list(records), loaded.groups, data_cfg, loaded.input_spec.size, batch_size,
                          train=False, seed=0,
                          num_workers=resolve_num_workers(data_cfg.num_workers if workers is None else workers))
    with transient_progress("predicting", len(records), show) as advance:
        out = infer(loaded.model.to(dev), loader, input_spec=loaded.input_spec, device=dev,
                    precision=resolve_precision(loaded.config.train.precision, dev), tta=tta,
                    channels_last=loaded.config.train.channels_last and dev.type == "cuda", on_batch=advance)
    if not len(out):
        raise UsageError(f"evaluate: none of the {len(records)} images could be read")
    order = np.argsort(out.batch["index"], kind="stable")
    index = out.batch["index"][order]
    seen = set(index.tolist())
    return Predictions(
        paths=[records[i].path for i in index],
        true_age=out.batch["age"][order],
        true_group=out.batch["group"][order],
        pred_age=out.age[order],
        pred_group=out.group[order],
        group_proba=out.group_proba[order],
        rank_proba=out.rank_proba[order] if out.rank_proba is not None else None,
        label_proba=out.label_proba[order] if out.label_proba is not None else None,
        skipped=[r.path for i, r in enumerate(records) if i not in seen],
    )


def shipped_model(target: str | Path, data: Sequence[str] | None) -> ZooModel | None:
    """The shipped model `target` names (verified; an unknown name lists the shipped ones), None for a path.
    A shipped model holds no split of its training data, so the faces must be named (`data`)."""
    from ordinalage.zoo import resolve_model

    if Path(target).exists():
        return None
    zoo = resolve_model(str(target)).zoo
    if zoo is not None and not data:
        raise UsageError(f"{zoo.name}: a shipped model holds no split of its training data; name the faces with "
                         "`data` (`split` all: every face; `data` utkface:PATH with `split` test: the UTKFace test "
                         "split it was measured on)", option="data")
    return zoo


def select_records(loaded: LoadedModel, run_dir: Path | None, data: Sequence[str] | None,
                    split: str) -> tuple[list[Record], int]:
    """Records to evaluate and the number dropped for ages outside every group."""
    from ordinalage.config import replace

    groups = loaded.groups
    if not data:
        if run_dir is None:
            raise UsageError("evaluate: this checkpoint has no run folder with split.csv; give `data` SPEC", option="data")
        records = RunDir(run_dir).read_split(split)
        where = f"split '{split}' of {run_dir / 'split.csv'}"
    elif split == "all":
        from ordinalage.data.sources import read_sources

        records = read_sources(list(data), loaded.config.data)
        where = f"data {' '.join(data)}"
    else:
        from ordinalage.data.prepare import prepare_data

        prepared = prepare_data(replace(loaded.config.data, sources=tuple(data)))
        records = list(getattr(prepared, split))
        where = f"split '{split}' of data {' '.join(data)}"
    idx = groups.indices([r.age for r in records])
    kept = [r for r, i in zip(records, idx, strict=True) if i >= 0]
    dropped = len(records) - len(kept)
    if dropped:
        print(f"evaluate: {dropped} image(s) with ages outside {groups.spec} dropped", file=sys.stderr)
    if not kept:
        raise UsageError(f"evaluate: no images in {where}")
    return kept, dropped


def combine_predictions(parts: Sequence[Predictions], loaded: LoadedModel) -> Predictions:
    """The ensemble of several models' predictions on the same images: the mean of their label
    distributions decoded by the first model's rule (`model.decode`), or, when a member has no
    distribution (regression), the mean age. One member is returned unchanged."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    if any(p.paths != first.paths for p in parts):
        raise UsageError("ensemble: the models could not read the same images (see the skipped ones above)")
    from ordinalage.posterior.adapt import average_outputs

    age, group, group_proba, proba = average_outputs([p.label_proba for p in parts], [p.pred_age for p in parts],
                                                     [p.group_proba for p in parts], loaded)
    return dataclasses.replace(first, pred_age=age, pred_group=group, group_proba=group_proba, rank_proba=None,
                               label_proba=proba)


def validation_predictions(loaded: LoadedModel, run_dir: Path | None, predict: Any) -> Predictions:
    """The model's predictions on its run's validation split (calibration data)."""
    if run_dir is None or not RunDir(run_dir).split_csv.is_file():
        raise UsageError("no validation split to calibrate on: this checkpoint has no run folder with split.csv")
    records = RunDir(run_dir).read_split("val")
    if not records:
        raise UsageError(f"no validation split to calibrate on: {RunDir(run_dir).split_csv} has no val rows")
    return predict(records, show=False)
