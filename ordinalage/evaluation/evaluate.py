"""Predictions -> metrics -> report: judge a run (or a checkpoint), or any predictions CSV.

Outputs (into `out`): metrics.json, predictions.csv (runs only), confusion_count.png, confusion_norm.png,
and for runs and checkpoints MODEL_CARD.md (and report.html with `report`).
Tables go to stderr; the returned dict is what `--json` prints. See docs/evaluation.md.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ordinalage.data.records import Record
from ordinalage.errors import UsageError
from ordinalage.evaluation.report import plot_confusion, print_evaluation, stderr_console
from ordinalage.groups import AgeGroups
from ordinalage.posterior.metrics import baseline_metrics, compute_metrics, reference_from_truth
from ordinalage.runs.rundir import RunDir, eval_dir, parse_number, write_json

if TYPE_CHECKING:
    import torch

    from ordinalage.runs.checkpoint import LoadedModel

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
    from ordinalage.runs.runtime import resolve_precision, select_device

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
    prior: str | None = None,
    interval: float | None = None,
    thresholds: Sequence[int] = (),
    challenges: Sequence[int] = (),
    by: Sequence[str] = (),
    calibrate: bool = False,
    per_source: bool = False,
    ensemble: Sequence[str | Path] = (),
    report: bool = False,
) -> dict[str, Any]:
    """Evaluate a run folder (its best.pt) or a .pt checkpoint on `split` of its own data or `data`.

    `tta`: average each image's logits with its mirror's (see `predict_records`).
    `prior`: train | uniform | em | a prior file: adapt the predictions to that age mix (the main
    metrics are then the adapted ones; `prior.as_trained` keeps the plain ones). On data other than
    the run's own split, EM-adapted metrics are added as `prior.adapted` even without `prior`.
    `interval` (a level in (0, 1)): split-conformal intervals calibrated on the run's validation
    split (stored as calibration.json in the run folder). `thresholds`/`challenges`: age-threshold
    error rates. `by`: attributes to break the error down by (besides age). `calibrate`: fit a
    temperature on the validation split (group probabilities; also used before EM). `per_source`:
    one row of metrics per data source (each --data spec) and the combined row, as `per_source`.
    `ensemble`: more runs or checkpoints whose predictions are averaged with this one's (their
    label distributions, or ages for regression heads); the first target's split and data are used.
    The output folder always gets MODEL_CARD.md (`model_card.write_model_card`); `report`: also
    report.html (`html_report.write_report`), beside metrics.json.

    Returns the metrics dict plus `baseline` (training split's majority group and median age),
    `baseline_source`, `split`, `checkpoint`, `data`, `skipped`, `dropped_out_of_range`, `out`.
    """
    from ordinalage.runs.checkpoint import load_model
    from ordinalage.runs.runtime import select_device

    if split not in SPLIT_CHOICES:
        raise UsageError(f"split {split!r}: choose one of {', '.join(SPLIT_CHOICES)}")
    if isinstance(data, str):
        data = [data]
    target = Path(target)
    if not target.exists():
        raise UsageError(f"{target}: no such run folder or checkpoint")
    from ordinalage.runs.members import check_compatible, member_dirs

    members_of_target = member_dirs(target)
    card_run = target if members_of_target else None  # the ensemble's folder describes the model
    if members_of_target:  # an ensemble run: its members, written beside the ensemble's folder
        out = out or eval_dir(target, split, data, tta)
        target, ensemble = members_of_target[0], [*members_of_target[1:], *ensemble]
    loaded = load_model(target, select_device(device))
    checkpoint = Path(loaded.checkpoint_path)
    groups = loaded.groups
    run_dir = loaded.run_dir if loaded.run_dir is not None else (target if target.is_dir() else None)
    records, dropped = _select_records(loaded, run_dir, data, split)
    predict = functools.partial(predict_records, loaded, batch_size=batch_size, device=device, workers=workers,
                                strict=strict, tta=tta)
    members = [load_model(m, select_device(device)) for m in ensemble]
    for m in members:
        check_compatible(loaded, m)
    predictors = [predict] + [functools.partial(predict_records, m, batch_size=batch_size, device=device,
                                                workers=workers, strict=strict, tta=tta) for m in members]
    preds = combine_predictions([p(records, show=show) for p in predictors], loaded)
    val = None
    if interval is not None or calibrate:
        val = combine_predictions([_validation_predictions(loaded, run_dir, p) for p in predictors], loaded)
    result: dict[str, Any] = {}
    metrics = _metrics(preds, groups)
    adapted = _adapt(preds, loaded, prior, bool(data), val if calibrate else None)
    if adapted is not None:
        result["prior"] = adapted.pop("summary")
        adapted_preds = dataclasses.replace(preds, **adapted)
        adapted_metrics = _metrics(adapted_preds, groups)
        result["prior"]["as_trained"] = _headline(metrics)
        result["prior"]["adapted"] = _headline(adapted_metrics)
        if prior is not None:  # the adapted predictions become the evaluated ones
            preds, metrics = adapted_preds, adapted_metrics
    result.update(metrics)
    reference = dict(loaded.reference or {})
    if "majority_group" in reference:
        source = "training split"
    else:
        reference, source = reference_from_truth(preds.true_age, preds.true_group, len(groups)), "this data"
    result["baseline"] = baseline_metrics(preds.true_age, preds.true_group, reference["majority_group"],
                                          reference.get("median_age"), groups)
    out_dir = Path(out) if out else eval_dir(target, split, data, tta)  # TTA beside, not over, the plain one
    decisions = _decisions(preds, loaded, run_dir, records, val, interval, thresholds, challenges, by, calibrate)
    result.update(decisions)
    if per_source:
        from ordinalage.evaluation.per_source import per_source_rows

        by_path = {r.path: r for r in records}
        result["per_source"] = per_source_rows([by_path[p] for p in preds.paths], preds.pred_age, groups,
                                               true_age=preds.true_age, pred_group=preds.pred_group)
    result.update({
        "baseline_source": source,
        "split": split,
        "tta": "flip" if tta else "none",
        "checkpoint": str(checkpoint),
        "ensemble": [str(m.checkpoint_path) for m in members],
        "data": list(data) if data else f"{run_dir / 'split.csv'}",
        "skipped": preds.skipped,
        "dropped_out_of_range": dropped,
        "out": str(out_dir),
    })
    view = " with flip TTA" if tta else ""
    write_outputs(out_dir, result, groups.labels, f"{checkpoint.name} on {split}{view}")
    write_predictions_csv(out_dir / "predictions.csv", preds, groups)
    _write_extras(out_dir, result, preds, loaded, thresholds, challenges)
    from ordinalage.evaluation.model_card import write_model_card

    card_run = card_run or (run_dir if run_dir is not None and (Path(run_dir) / "config.yaml").is_file() else None)
    write_model_card(out_dir, card_run, records)
    if report:
        from ordinalage.evaluation.html_report import write_report

        result["report"] = write_report([card_run] if card_run is not None else [], out_dir / "report.html",
                                        eval_dir=out_dir, show=False)["out"]
    if show:
        console = stderr_console()
        print_evaluation(result, title=f"{checkpoint} on {split}{view} (n={result['n']})")
        if "prior" in result:
            print_prior(result["prior"], console)
        from ordinalage.evaluation.decision_report import print_decisions

        print_decisions(decisions, console)
        console.print(f"wrote {out_dir}" + (" (with MODEL_CARD.md and report.html)" if report else " (with MODEL_CARD.md)"))
    return result


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


def _metrics(preds: Predictions, groups: AgeGroups) -> dict[str, Any]:
    return compute_metrics(preds.true_age, preds.pred_age, preds.true_group, preds.pred_group, len(groups),
                           labels=groups.labels, rank_proba=preds.rank_proba)


def _headline(m: dict[str, Any]) -> dict[str, Any]:
    return {k: m.get(k) for k in ("mae", "accuracy", "one_off", "ca3", "ca5", "n")}


def _validation_predictions(loaded: LoadedModel, run_dir: Path | None, predict: Any) -> Predictions:
    """The model's predictions on its run's validation split (calibration data)."""
    if run_dir is None or not RunDir(run_dir).split_csv.is_file():
        raise UsageError("no validation split to calibrate on: this checkpoint has no run folder with split.csv")
    records = RunDir(run_dir).read_split("val")
    if not records:
        raise UsageError(f"no validation split to calibrate on: {RunDir(run_dir).split_csv} has no val rows")
    return predict(records, show=False)


def _adapt(preds: Predictions, loaded: LoadedModel, prior: str | None, other_data: bool,
           val: Predictions | None) -> dict[str, Any] | None:
    """Predictions adapted to `prior` (or, on other data without a prior, to the EM-estimated mix):
    the replaced Predictions fields plus a `summary`; None when there is nothing to adapt."""
    from ordinalage.posterior.adapt import adapt_predictions, prior_summary

    spec = prior if prior is not None else ("em" if other_data else None)
    if spec is None or (prior is None and (preds.label_proba is None or loaded.train_prior is None)):
        return None  # nothing asked, or (only the automatic EM row) a model without a distribution
    temperature = None
    if val is not None and val.label_proba is not None:
        from ordinalage.posterior.calibration import fit_temperature, to_logproba

        labels = np.clip(np.round(val.true_age), 0, loaded.config.model.max_age).astype(np.int64) \
            if loaded.config.model.target == "age" else val.true_group
        temperature = fit_temperature(to_logproba(val.label_proba), labels)
    a = adapt_predictions(preds.label_proba, loaded, spec, temperature=temperature)
    summary = prior_summary(a)
    summary["temperature"] = temperature
    summary["prior"] = [float(v) for v in a.prior]
    summary["train_prior"] = [float(v) for v in loaded.train_prior]
    summary["label_ages"] = [float(v) for v in loaded.label_ages]
    return {"pred_age": a.age, "pred_group": a.group, "group_proba": a.group_proba.astype(np.float32),
            "label_proba": a.label_proba.astype(np.float32), "rank_proba": None, "summary": summary}


def _decisions(preds: Predictions, loaded: LoadedModel, run_dir: Path | None, records: Sequence[Record],
               val: Predictions | None, interval: float | None, thresholds: Sequence[int],
               challenges: Sequence[int], by: Sequence[str], calibrate: bool) -> dict[str, Any]:
    """metrics.json keys `interval`, `threshold`, `breakdown` and `calibration` (docs/evaluation.md)."""
    from ordinalage.evaluation.breakdown import utkface_attributes
    from ordinalage.evaluation.decision_report import decision_metrics
    from ordinalage.posterior.intervals import fit_conformal

    cal = None
    ages = loaded.label_ages
    if interval is not None:
        assert val is not None
        cal = fit_conformal(val.true_age, 1.0 - interval, cal_pred_age=val.pred_age,
                            cal_label_proba=val.label_proba, label_ages=ages if val.label_proba is not None else None)
        if run_dir is not None:
            cal.save(RunDir(run_dir).calibration_json)
    by_path = {r.path: r for r in records}
    attributes = None
    if by:
        attributes = {}
        for key in by:
            values = [{**utkface_attributes(p), **by_path[p].meta}.get(key) if p in by_path else None
                      for p in preds.paths]
            if all(v is None for v in values):
                raise UsageError(f"--by {key}: no image of this data has a '{key}' attribute "
                                 "(UTKFace names give gender and race; a CSV gives its extra columns)")
            attributes[key] = values
    return decision_metrics(preds.true_age, preds.pred_age, loaded.groups, group_proba=preds.group_proba,
                            true_group=preds.true_group, label_proba=preds.label_proba if cal is not None else None,
                            label_ages=ages, calibration=cal, thresholds=list(thresholds), challenges=list(challenges),
                            attributes=attributes, by=list(by),
                            val_group_proba=val.group_proba if (calibrate and val is not None) else None,
                            val_true_group=val.true_group if (calibrate and val is not None) else None)


def _write_extras(out_dir: Path, result: dict[str, Any], preds: Predictions, loaded: LoadedModel,
                  thresholds: Sequence[int], challenges: Sequence[int]) -> None:
    """The decision PNGs and, when a prior was used or estimated, prior.json + prior.png."""
    from ordinalage.evaluation.decision_report import decision_plots

    decision_plots(out_dir, result, preds.true_age, preds.pred_age, group_proba=preds.group_proba,
                   true_group=preds.true_group, thresholds=list(thresholds), challenges=list(challenges))
    info = result.get("prior")
    if info is not None:
        from ordinalage.evaluation.report import plot_prior
        from ordinalage.posterior.prior import write_prior

        ages = np.asarray(info["label_ages"])
        true = np.bincount(np.clip(np.round(preds.true_age), 0, len(ages) - 1).astype(int), minlength=len(ages)) \
            if loaded.config.model.target == "age" else np.bincount(preds.true_group, minlength=len(ages))
        write_prior(out_dir / "prior.json", np.asarray(info["prior"]), ages,
                    {k: v for k, v in info.items() if k not in ("prior", "label_ages", "train_prior")})
        plot_prior(out_dir / "prior.png", ages, np.asarray(info["prior"]), train=np.asarray(info["train_prior"]),
                   true=true / max(true.sum(), 1))


def print_prior(info: dict[str, Any], console: Any) -> None:
    """Both rows, as trained and adapted to the prior, in one small table."""
    from rich.table import Table

    mode = info["mode"] + (f" ({info['file']})" if info.get("file") else "")
    table = Table(title=f"age mix: as trained vs adapted ({mode})")
    for col in ("", "MAE", "accuracy", "one-off", "CA(5)"):
        table.add_column(col, justify="right")
    for name in ("as_trained", "adapted"):
        m = info.get(name) or {}
        table.add_row(name.replace("_", " "), *(f"{m[k]:.3f}" if m.get(k) is not None else "-"
                                                 for k in ("mae", "accuracy", "one_off", "ca5")))
    console.print(table)


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
                ta.append(parse_number(row.get("true_age"), path, line, "true_age"))
                pa.append(parse_number(row.get("pred_age"), path, line, "pred_age"))
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



def evaluate_after_training(run_dir: str | Path, *, show: bool = True, device: str = "auto",
                            force: bool = False) -> dict[str, Any] | None:
    """Evaluate a finished run's best.pt on its test split and keep the metrics in summary.json
    (`test`), when its config asks for it (`train.eval_on_end`, or `force`, as cross-validation
    does) and the split holds any image; with flip TTA when `train.eval_tta`."""
    run = RunDir(run_dir)
    summary = run.read_summary()
    from ordinalage.config import load_config

    config = load_config(run.config_yaml)
    from ordinalage.runs.members import is_ensemble_run

    if summary.get("finished") and is_ensemble_run(run.path) and not run.val_best_json.is_file():
        _ensemble_validation(run, config)
    if not ((config.train.eval_on_end or force) and summary.get("finished") and summary.get("n_test", 1)):
        return None
    result = evaluate_run(run.path, split="test", show=show, device=device, tta=config.train.eval_tta)
    run.update_summary(test=result)
    return result


def _ensemble_validation(run: RunDir, config: Any) -> None:
    """An ensemble's validation metrics (its members averaged) into val_best.json and summary.json `val`."""
    val = evaluate_run(run.path, split="val", show=False, tta=config.train.eval_tta)
    write_json(run.val_best_json, {k: val[k] for k in ("n", "mae", "accuracy", "one_off", "ca3", "ca5") if k in val})
    run.update_summary(val={k: val.get(k) for k in ("mae", "accuracy", "one_off")})
