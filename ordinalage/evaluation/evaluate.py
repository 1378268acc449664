"""Predictions -> metrics -> report: judge a run (or a checkpoint), or any predictions CSV.

Outputs (into `out`): metrics.json, predictions.csv (runs only), confusion_count.png, confusion_norm.png,
and for runs and checkpoints MODEL_CARD.md (and report.html with `report`).
Tables go to stderr; the returned dict is what `--json` prints. See docs/evaluation.md.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ordinalage.console import stderr_console
from ordinalage.data.records import Record
from ordinalage.errors import UsageError
from ordinalage.evaluation.model_predictions import (
    combine_predictions,
    predict_records,
    select_records,
    shipped_model,
    validation_predictions,
)
from ordinalage.evaluation.predictions import Predictions, read_predictions_csv, write_predictions_csv
from ordinalage.groups import AgeGroups
from ordinalage.posterior.metrics import baseline_metrics, compute_metrics, reference_from_truth
from ordinalage.reporting.plots import plot_confusion
from ordinalage.reporting.tables import print_evaluation, print_prior
from ordinalage.runs.rundir import RunDir, eval_dir, write_json

if TYPE_CHECKING:

    from ordinalage.runs.checkpoint import LoadedModel

SPLIT_CHOICES = ("train", "val", "test", "all")


# ---------------------------------------------------------------------------------------------
# model predictions


# ---------------------------------------------------------------------------------------------
# records to evaluate


# ---------------------------------------------------------------------------------------------
# outputs


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


@dataclass(frozen=True)
class EvaluateOptions:
    """How to evaluate (the keyword arguments of `evaluate_run`).

    `data`/`split`: which images (the run's own split, or `split` of other data specs). `tta`: average
    each image's logits with its mirror's. `prior`: train | uniform | em | a prior file: adapt the
    predictions to that age mix (the main metrics are then the adapted ones; `prior.as_trained` keeps
    the plain ones); on data other than the run's own split, EM-adapted metrics are added as
    `prior.adapted` even without `prior`. `interval` (a level in (0, 1)): split-conformal intervals
    calibrated on the run's validation split (stored as calibration.json in the run folder).
    `thresholds`/`challenges`: age-threshold error rates. `by`: attributes to break the error down by
    (besides age). `calibrate`: fit a temperature on the validation split (group probabilities; also
    used before EM). `per_source`: one row of metrics per data source and the combined row.
    `ensemble`: more runs or checkpoints whose predictions are averaged with this one's (their label
    distributions, or ages for regression heads); the first target's split and data are used.
    `report`: also report.html beside metrics.json and MODEL_CARD.md."""

    data: Sequence[str] | None = None
    split: str = "test"
    out: str | Path | None = None
    batch_size: int = 128
    device: str = "auto"
    strict: bool = False
    workers: int | None = None
    tta: bool = False
    prior: str | None = None
    interval: float | None = None
    thresholds: Sequence[int] = ()
    challenges: Sequence[int] = ()
    by: Sequence[str] = ()
    calibrate: bool = False
    per_source: bool = False
    ensemble: Sequence[str | Path] = ()
    report: bool = False


@dataclass
class Evaluation:
    """One evaluation, computed: `metrics` is what metrics.json holds (and `evaluate_run` returns),
    beside the predictions and records it was computed from and where its files go."""

    metrics: dict[str, Any]
    predictions: Predictions
    records: list[Record]
    loaded: LoadedModel
    out: Path
    card_run: Path | None  # the run folder the model card describes (None: a bare checkpoint)
    options: EvaluateOptions
    decisions: dict[str, Any] = field(default_factory=dict)  # the decision keys of metrics

    @property
    def view(self) -> str:
        """'<split>[ with flip TTA]'."""
        return self.options.split + (" with flip TTA" if self.options.tta else "")


def evaluate_run(target: str | Path, *, show: bool = True, **options: Any) -> dict[str, Any]:
    """Evaluate a run folder (its best.pt) or a .pt checkpoint on `split` of its own data or `data`
    (options: the fields of `EvaluateOptions`), write its files into `out` (`write_evaluation`: also
    MODEL_CARD.md, and report.html with `report`), print its tables when `show`.

    Returns the metrics dict plus `baseline` (training split's majority group and median age),
    `baseline_source`, `split`, `checkpoint`, `data`, `skipped`, `dropped_out_of_range`, `out`."""
    if isinstance(options.get("data"), str):
        options["data"] = [options["data"]]
    evaluation = evaluate(target, EvaluateOptions(**options), show=show)
    write_evaluation(evaluation)
    if show:
        show_evaluation(evaluation)
    return evaluation.metrics


def _shipped_target(target: str | Path, options: EvaluateOptions) -> tuple[Path, Path] | None:
    """A shipped model's name (`utkface-small`): its verified folder and the output folder, in the working
    directory (never inside the installed package); None for anything else. A shipped model holds no split
    of its training data, so it is evaluated on named data."""
    zoo = shipped_model(target, options.data)
    if zoo is None:
        return None
    if options.interval is not None or options.calibrate:
        raise UsageError(f"{zoo.name}: `interval` and `calibrate` fit on a run's validation split, which a shipped "
                         "model does not hold (its calibration is shipped with it)", option="interval")
    return zoo.path, Path(options.out) if options.out else eval_dir(zoo.name, options.split, options.data,
                                                                     options.tta)


def _load_target(target: Path, options: EvaluateOptions) -> tuple[Path, list[str | Path], Path | None, Path | None]:
    """The model to load, the ensemble's other members, the run the card describes, the output folder
    of an ensemble run (its members are evaluated as one, written beside the ensemble's folder) or of
    a shipped model (in the working directory)."""
    from ordinalage.runs.members import member_dirs

    shipped = _shipped_target(target, options)
    if shipped is not None:
        return shipped[0], list(options.ensemble), None, shipped[1]
    if not target.exists():
        raise UsageError(f"{target}: no such run folder or checkpoint")
    members = member_dirs(target)
    if not members:
        return target, list(options.ensemble), None, None
    out = Path(options.out) if options.out else eval_dir(target, options.split, options.data, options.tta)
    return members[0], [*members[1:], *options.ensemble], target, out


def evaluate(target: str | Path, options: EvaluateOptions = EvaluateOptions(), show: bool = True) -> Evaluation:
    """Predict and measure (no file written): the `Evaluation` of `target` under `options`."""
    from ordinalage.runs.checkpoint import load_model
    from ordinalage.runs.members import check_compatible
    from ordinalage.runs.runtime import select_device

    if options.split not in SPLIT_CHOICES:
        raise UsageError(f"split {options.split!r}: choose one of {', '.join(SPLIT_CHOICES)}")
    model_path, ensemble, card_run, out = _load_target(Path(target), options)
    loaded = load_model(model_path, select_device(options.device))
    run_dir = loaded.run_dir if loaded.run_dir is not None else (model_path if model_path.is_dir() else None)
    records, dropped = select_records(loaded, run_dir, options.data, options.split)
    members = [load_model(m, select_device(options.device)) for m in ensemble]
    for m in members:
        check_compatible(loaded, m)
    predictors = [functools.partial(predict_records, m, batch_size=options.batch_size, device=options.device,
                                    workers=options.workers, strict=options.strict, tta=options.tta)
                  for m in [loaded, *members]]
    preds = combine_predictions([p(records, show=show) for p in predictors], loaded)
    val = None
    if options.interval is not None or options.calibrate:
        val = combine_predictions([validation_predictions(loaded, run_dir, p) for p in predictors], loaded)
    metrics, preds = _measure(preds, loaded, options, val)
    decisions = _decisions(preds, loaded, run_dir, records, val, options.interval, options.thresholds,
                           options.challenges, options.by, options.calibrate)
    metrics.update(decisions)
    if options.per_source:
        from ordinalage.evaluation.per_source import per_source_rows

        by_path = {r.path: r for r in records}
        metrics["per_source"] = per_source_rows([by_path[p] for p in preds.paths], preds.pred_age, loaded.groups,
                                                true_age=preds.true_age, pred_group=preds.pred_group)
    checkpoint = Path(loaded.checkpoint_path)
    out_dir = out or (Path(options.out) if options.out else eval_dir(model_path, options.split, options.data,
                                                                     options.tta))
    metrics.update({
        "split": options.split, "tta": "flip" if options.tta else "none", "checkpoint": str(checkpoint),
        "ensemble": [str(m.checkpoint_path) for m in members],
        "data": list(options.data) if options.data else f"{run_dir / 'split.csv'}",
        "skipped": preds.skipped, "dropped_out_of_range": dropped, "out": str(out_dir),
    })
    card_run = card_run or (run_dir if run_dir is not None and (Path(run_dir) / "config.yaml").is_file() else None)
    return Evaluation(metrics=metrics, predictions=preds, records=list(records), loaded=loaded, out=out_dir,
                      card_run=card_run, options=options, decisions=decisions)


def _measure(preds: Predictions, loaded: LoadedModel, options: EvaluateOptions, val: Predictions | None
             ) -> tuple[dict[str, Any], Predictions]:
    """The metrics (adapted to the prior when one is asked for, with both rows under `prior`) and the
    baseline's; the predictions they were computed from."""
    groups = loaded.groups
    result: dict[str, Any] = {}
    metrics = _metrics(preds, groups)
    adapted = _adapt(preds, loaded, options.prior, bool(options.data), val if options.calibrate else None)
    if adapted is not None:
        result["prior"] = adapted.pop("summary")
        adapted_preds = dataclasses.replace(preds, **adapted)
        adapted_metrics = _metrics(adapted_preds, groups)
        result["prior"]["as_trained"] = _headline(metrics)
        result["prior"]["adapted"] = _headline(adapted_metrics)
        if options.prior is not None:  # the adapted predictions become the evaluated ones
            preds, metrics = adapted_preds, adapted_metrics
    result.update(metrics)
    reference = dict(loaded.reference or {})
    if "majority_group" in reference:
        source = "training split"
    else:
        reference, source = reference_from_truth(preds.true_age, preds.true_group, len(groups)), "this data"
    result["baseline"] = baseline_metrics(preds.true_age, preds.true_group, reference["majority_group"],
                                          reference.get("median_age"), groups)
    result["baseline_source"] = source
    return result, preds


def write_evaluation(evaluation: Evaluation) -> None:
    """metrics.json, the confusion PNGs, predictions.csv, the decision PNGs, prior.json, MODEL_CARD.md
    and, with the `report` option, report.html (its path then in `metrics["report"]`) into `evaluation.out`."""
    from ordinalage.evaluation.model_card import card_facts, write_model_card

    ev, out_dir, options = evaluation, evaluation.out, evaluation.options
    groups = ev.loaded.groups
    write_outputs(out_dir, ev.metrics, groups.labels, f"{Path(ev.metrics['checkpoint']).name} on {ev.view}")
    write_predictions_csv(out_dir / "predictions.csv", ev.predictions, groups)
    _write_extras(out_dir, ev.metrics, ev.predictions, ev.loaded, options.thresholds, options.challenges)
    facts = card_facts(out_dir, ev.card_run, ev.records)
    write_model_card(out_dir, facts=facts)
    if options.report:
        from ordinalage.evaluation.reports import write_report

        ev.metrics["report"] = write_report([ev.card_run] if ev.card_run is not None else [], out_dir / "report.html",
                                            eval_dir=out_dir, show=False, facts=facts)["out"]


def show_evaluation(evaluation: Evaluation) -> None:
    """The evaluation's tables on stderr: metrics, groups, confusion, prior rows, decisions."""
    from ordinalage.reporting.tables import print_decisions

    console = stderr_console()
    metrics = evaluation.metrics
    print_evaluation(metrics, title=f"{metrics['checkpoint']} on {evaluation.view} (n={metrics['n']})")
    if "prior" in metrics:
        print_prior(metrics["prior"], console)
    print_decisions(evaluation.decisions, console)
    report = " (with MODEL_CARD.md and report.html)" if evaluation.options.report else " (with MODEL_CARD.md)"
    console.print(f"wrote {evaluation.out}" + report)


def _metrics(preds: Predictions, groups: AgeGroups) -> dict[str, Any]:
    return compute_metrics(preds.true_age, preds.pred_age, preds.true_group, preds.pred_group, len(groups),
                           labels=groups.labels, rank_proba=preds.rank_proba)


def _headline(m: dict[str, Any]) -> dict[str, Any]:
    return {k: m.get(k) for k in ("mae", "accuracy", "one_off", "ca3", "ca5", "n")}


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
    from ordinalage.evaluation.decisions import decision_metrics
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
                raise UsageError(f"by {key}: no image of this data has a '{key}' attribute "
                                 "(UTKFace names give gender and race; a CSV gives its extra columns)", option="by")
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
    from ordinalage.reporting.plots import decision_plots

    decision_plots(out_dir, result, preds.true_age, preds.pred_age, group_proba=preds.group_proba,
                   true_group=preds.true_group, thresholds=list(thresholds), challenges=list(challenges))
    info = result.get("prior")
    if info is not None:
        from ordinalage.posterior.prior_files import write_prior
        from ordinalage.reporting.plots import plot_prior

        ages = np.asarray(info["label_ages"])
        true = np.bincount(np.clip(np.round(preds.true_age), 0, len(ages) - 1).astype(int), minlength=len(ages)) \
            if loaded.config.model.target == "age" else np.bincount(preds.true_group, minlength=len(ages))
        write_prior(out_dir / "prior.json", np.asarray(info["prior"]), ages,
                    {k: v for k, v in info.items() if k not in ("prior", "label_ages", "train_prior")})
        plot_prior(out_dir / "prior.png", ages, np.asarray(info["prior"]), train=np.asarray(info["train_prior"]),
                   true=true / max(true.sum(), 1))


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
