"""Predictions -> metrics -> report: judge a run (or a checkpoint), or any predictions CSV.

Outputs (into `out`): metrics.json, predictions.csv (runs only), confusion_count.png, confusion_norm.png.
Tables go to stderr; the returned dict is what `--json` prints. See docs/evaluation.md.
"""

from __future__ import annotations

import csv
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ordinalage.data.records import Record
from ordinalage.errors import UsageError
from ordinalage.evaluation.metrics import baseline_metrics, compute_metrics, reference_from_truth
from ordinalage.evaluation.report import plot_confusion, print_evaluation, stderr_console
from ordinalage.groups import AgeGroups
from ordinalage.training.rundir import RunDir, eval_dir, write_json

if TYPE_CHECKING:
    import torch

    from ordinalage.training.checkpoint import LoadedModel

SPLIT_CHOICES = ("train", "val", "test", "all")


@dataclass
class Predictions:
    """Small per-image arrays (never the images), in the order of the records that were read."""

    paths: list[str]
    true_age: np.ndarray  # float (N,)
    true_group: np.ndarray  # int64 (N,)
    pred_age: np.ndarray  # float (N,)
    pred_group: np.ndarray  # int64 (N,)
    group_proba: np.ndarray  # float32 (N, G)
    rank_proba: np.ndarray | None  # float32 (N, K), None for heads without ordinal probabilities
    label_proba: np.ndarray | None = None  # float32 (N, L): the head's distribution over its labels
    skipped: list[str] = field(default_factory=list)  # records whose image could not be read

    def __len__(self) -> int:
        return len(self.paths)


# ---------------------------------------------------------------------------------------------
# model predictions


def predict_records(
    loaded: LoadedModel,
    records: Sequence[Record],
    batch_size: int = 128,
    device: str | torch.device = "auto",
    workers: int | None = None,
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
    from ordinalage.inference.infer import infer
    from ordinalage.training.runtime import resolve_precision, select_device

    if not records:
        raise UsageError("evaluate: no images to predict")
    dev = select_device(str(device))
    data_cfg = replace(loaded.config.data, strict=True) if strict else loaded.config.data
    loader = build_loader(list(records), loaded.groups, data_cfg, loaded.input_spec.size, batch_size,
                          train=False, seed=0, num_workers=data_cfg.num_workers if workers is None else workers)
    progress = None
    if show:
        from rich.progress import Progress

        progress = Progress(console=stderr_console(), transient=True)
        progress.start()
        task = progress.add_task("predicting", total=len(records))
    try:
        out = infer(loaded.model.to(dev), loader, input_spec=loaded.input_spec, device=dev,
                    precision=resolve_precision(loaded.config.train.precision, dev), tta=tta,
                    channels_last=loaded.config.train.channels_last and dev.type == "cuda",
                    on_batch=(lambda n: progress.update(task, advance=n)) if progress is not None else None)
    finally:
        if progress is not None:
            progress.stop()
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


# ---------------------------------------------------------------------------------------------
# records to evaluate


def _select_records(loaded: LoadedModel, run_dir: Path | None, data: Sequence[str] | None,
                    split: str) -> tuple[list[Record], int]:
    """Records to evaluate and the number dropped for ages outside every group."""
    from ordinalage.config import replace

    groups = loaded.groups
    if not data:
        if run_dir is None:
            raise UsageError("evaluate: this checkpoint has no run folder with split.csv; give --data SPEC")
        records = RunDir(run_dir).read_split(split)
        where = f"split '{split}' of {run_dir / 'split.csv'}"
    elif split == "all":
        from ordinalage.data.sources import read_sources

        records = read_sources(list(data), loaded.config.data)
        where = f"--data {' '.join(data)}"
    else:
        from ordinalage.data.prepare import prepare_data

        prepared = prepare_data(replace(loaded.config.data, sources=tuple(data)))
        records = list(getattr(prepared, split))
        where = f"split '{split}' of --data {' '.join(data)}"
    idx = groups.indices([r.age for r in records])
    kept = [r for r, i in zip(records, idx, strict=True) if i >= 0]
    dropped = len(records) - len(kept)
    if dropped:
        print(f"evaluate: {dropped} image(s) with ages outside {groups.spec} dropped", file=sys.stderr)
    if not kept:
        raise UsageError(f"evaluate: no images in {where}")
    return kept, dropped


# ---------------------------------------------------------------------------------------------
# outputs


def write_predictions_csv(path: str | Path, preds: Predictions, groups: AgeGroups) -> Path:
    """file, true_age, true_group, pred_age, pred_group, p_<label>... (groups written as labels)."""
    path = Path(path)
    labels = groups.labels
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["file", "true_age", "true_group", "pred_age", "pred_group"] + [f"p_{lab}" for lab in labels])
        for i, p in enumerate(preds.paths):
            w.writerow([p, f"{preds.true_age[i]:g}", labels[preds.true_group[i]], f"{preds.pred_age[i]:.4f}",
                        labels[preds.pred_group[i]]] + [f"{v:.6f}" for v in preds.group_proba[i]])
    return path


def write_outputs(out: Path, result: dict[str, Any], labels: Sequence[str], title: str) -> None:
    """metrics.json and the two confusion-matrix PNGs."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "metrics.json", result)
    n = result["n"]
    plot_confusion(result["confusion"], labels, out / "confusion_count.png", normalize=False,
                   title=f"{title}: counts (n={n})")
    plot_confusion(result["confusion"], labels, out / "confusion_norm.png", normalize=True,
                   title=f"{title}: share of each true group")


# ---------------------------------------------------------------------------------------------
# public entry points


def evaluate_run(
    target: str | Path,
    data: Sequence[str] | None = None,
    split: str = "test",
    out: str | Path | None = None,
    batch_size: int = 128,
    device: str = "auto",
    show: bool = True,
    strict: bool = False,
    workers: int | None = None,
    tta: bool = False,
) -> dict[str, Any]:
    """Evaluate a run folder (its best.pt) or a .pt checkpoint on `split` of its own data or `data`.

    `tta`: average each image's logits with its mirror's (see `predict_records`).

    Returns the metrics dict plus `baseline` (training split's majority group and median age),
    `baseline_source`, `split`, `checkpoint`, `data`, `skipped`, `dropped_out_of_range`, `out`.
    """
    from ordinalage.training.checkpoint import load_model

    if split not in SPLIT_CHOICES:
        raise UsageError(f"--split {split!r}: choose one of {', '.join(SPLIT_CHOICES)}")
    if isinstance(data, str):
        data = [data]
    target = Path(target)
    if not target.exists():
        raise UsageError(f"{target}: no such run folder or checkpoint")
    from ordinalage.training.runtime import select_device

    loaded = load_model(target, select_device(device))
    checkpoint = Path(loaded.checkpoint_path)
    groups = loaded.groups
    run_dir = loaded.run_dir if loaded.run_dir is not None else (target if target.is_dir() else None)
    records, dropped = _select_records(loaded, run_dir, data, split)

    preds = predict_records(loaded, records, batch_size=batch_size, device=device, workers=workers,
                            strict=strict, show=show, tta=tta)
    result = compute_metrics(preds.true_age, preds.pred_age, preds.true_group, preds.pred_group, len(groups),
                             labels=groups.labels, rank_proba=preds.rank_proba)
    reference = dict(loaded.reference or {})
    if "majority_group" in reference:
        source = "training split"
    else:
        reference, source = reference_from_truth(preds.true_age, preds.true_group, len(groups)), "this data"
    result["baseline"] = baseline_metrics(preds.true_age, preds.true_group, reference["majority_group"],
                                          reference.get("median_age"), groups)
    out_dir = Path(out) if out else eval_dir(target, split, data, tta)  # TTA beside, not over, the plain one
    result.update({
        "baseline_source": source,
        "split": split,
        "tta": "flip" if tta else "none",
        "checkpoint": str(checkpoint),
        "data": list(data) if data else f"{run_dir / 'split.csv'}",
        "skipped": preds.skipped,
        "dropped_out_of_range": dropped,
        "out": str(out_dir),
    })
    view = " with flip TTA" if tta else ""
    write_outputs(out_dir, result, groups.labels, f"{checkpoint.name} on {split}{view}")
    write_predictions_csv(out_dir / "predictions.csv", preds, groups)
    if show:
        print_evaluation(result, title=f"{checkpoint} on {split}{view} (n={result['n']})")
        stderr_console().print(f"wrote {out_dir}")
    return result


def _number(value: str | None, path: Path, line: int, column: str) -> float:
    try:
        x = float(value) if value is not None else math.nan
    except ValueError:
        x = None
    if x is None or not math.isfinite(x):
        raise UsageError(f"{path}: line {line}, column {column}: {value!r} is not a finite number")
    return x


def _group_index(value: str | None, groups: AgeGroups, path: Path, line: int, column: str) -> int:
    v = (value or "").strip()
    if v in groups.labels:
        return groups.labels.index(v)
    try:
        i = int(v)
    except ValueError:
        raise UsageError(f"{path}: line {line}, column {column}: {value!r} is neither a group label "
                         f"({groups.spec}) nor a group index") from None
    if not 0 <= i < len(groups):
        raise UsageError(f"{path}: line {line}, column {column}: group index {i} is outside 0..{len(groups) - 1}")
    return i


def read_predictions_csv(path: str | Path, groups: AgeGroups) -> dict[str, Any]:
    """Parse a predictions CSV into arrays: true_age/pred_age (or None), true_group, pred_group, dropped.

    With ages, groups come from the true_group/pred_group columns when present, else from binning
    (true ages outside every group: row dropped and counted; predicted ages clipped into range).
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: predictions file not found")
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        cols = [c.strip() for c in (reader.fieldnames or [])]
        reader.fieldnames = cols
        has_age = "true_age" in cols and "pred_age" in cols
        has_group = "true_group" in cols and "pred_group" in cols
        if not (has_age or has_group):
            want = [c for c in ("true_age", "pred_age") if c not in cols] if ("true_age" in cols or "pred_age" in cols) \
                else [c for c in ("true_group", "pred_group") if c not in cols] if ("true_group" in cols or "pred_group" in cols) \
                else ["true_age", "pred_age"]
            raise UsageError(f"{path}: missing column(s) {', '.join(want)} (need true_age and pred_age, "
                             f"or true_group and pred_group; found: {', '.join(cols) or 'no header'})")
        ta, pa, tg, pg = [], [], [], []
        for row in reader:
            line = reader.line_num
            if has_age:
                ta.append(_number(row.get("true_age"), path, line, "true_age"))
                pa.append(_number(row.get("pred_age"), path, line, "pred_age"))
            if has_group:
                tg.append(_group_index(row.get("true_group"), groups, path, line, "true_group"))
                pg.append(_group_index(row.get("pred_group"), groups, path, line, "pred_group"))
    if not (ta or tg):
        raise UsageError(f"{path}: no rows (only a header)")
    dropped = 0
    true_age = np.asarray(ta, dtype=float) if has_age else None
    pred_age = np.asarray(pa, dtype=float) if has_age else None
    if has_group:
        true_group, pred_group = np.asarray(tg, dtype=np.int64), np.asarray(pg, dtype=np.int64)
    else:
        true_group = groups.indices(true_age)
        keep = true_group >= 0
        dropped = int((~keep).sum())
        if not keep.any():
            raise UsageError(f"{path}: no true age lies in the groups {groups.spec}")
        true_age, pred_age, true_group = true_age[keep], pred_age[keep], true_group[keep]
        pred_group = groups.clip_indices(pred_age)
    return {"true_age": true_age, "pred_age": pred_age, "true_group": true_group, "pred_group": pred_group,
            "dropped_out_of_range": dropped}


def evaluate_predictions_file(
    path: str | Path,
    groups: str | None = None,
    out: str | Path | None = None,
    show: bool = True,
) -> dict[str, Any]:
    """Metrics from a CSV made by anything (see read_predictions_csv and docs/evaluation.md).

    The baseline predicts the majority group and median age of the file's own truth
    (`baseline_source: "this file"`). With `out`, metrics.json and the confusion PNGs are written.
    """
    age_groups = AgeGroups.parse(groups)
    arrays = read_predictions_csv(path, age_groups)
    n_groups = len(age_groups)
    result = compute_metrics(arrays["true_age"], arrays["pred_age"], arrays["true_group"], arrays["pred_group"],
                             n_groups, labels=age_groups.labels)
    ref = reference_from_truth(arrays["true_age"], arrays["true_group"], n_groups)
    result["baseline"] = baseline_metrics(arrays["true_age"], arrays["true_group"], ref["majority_group"],
                                          ref["median_age"], age_groups)
    result.update({"baseline_source": "this file", "predictions": str(path),
                   "dropped_out_of_range": arrays["dropped_out_of_range"]})
    if arrays["dropped_out_of_range"]:
        print(f"evaluate: {arrays['dropped_out_of_range']} row(s) with true ages outside {age_groups.spec} dropped",
              file=sys.stderr)
    if out:
        out_dir = Path(out)
        result["out"] = str(out_dir)
        write_outputs(out_dir, result, age_groups.labels, Path(path).name)
    if show:
        print_evaluation(result, title=f"{path} (n={result['n']})")
    return result



def evaluate_after_training(run_dir: str | Path, *, show: bool = True, device: str = "auto") -> dict[str, Any] | None:
    """Evaluate a finished run's best.pt on its test split and keep the metrics in summary.json
    (`test`), when its config asks for it (`train.eval_on_end`) and the split holds any image."""
    run = RunDir(run_dir)
    summary = run.read_summary()
    from ordinalage.config import load_config

    config = load_config(run.config_yaml)
    if not (config.train.eval_on_end and summary.get("finished") and summary.get("n_test", 1)):
        return None
    result = evaluate_run(run.path, split="test", show=show, device=device)
    run.update_summary(test=result)
    return result
