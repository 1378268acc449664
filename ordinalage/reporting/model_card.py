"""MODEL_CARD.md of one evaluation: the sections of Mitchell et al., *Model Cards for Model
Reporting* (FAT* 2019), filled only with what the evaluation measured.

`render_model_card` writes Markdown from `CardFacts`, which `evaluation.model_card.card_facts`
gathers (metrics.json, predictions.csv, bootstrap intervals, per-attribute rows). Sections: model
details (`reporting.card.model_details`), intended and out-of-scope use, factors, metrics with 95%
bootstrap confidence intervals, evaluation and training data, the error by age group and by every
attribute the evaluated images have, calibration, prior correction, intervals and thresholds when
measured, ethical considerations, and caveats drawn from the numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from ordinalage.errors import UsageError
from ordinalage.reporting.card import INTENDED_USE, first_member, model_details, training_age_mix
from ordinalage.reporting.formatting import fmt_number as _f
from ordinalage.reporting.formatting import with_interval
from ordinalage.reporting.hub_metadata import front_matter, hub_metadata
from ordinalage.runs.rundir import read_json_object

SMALL_N = 30  # fewer images than this in a group: its interval is wide, said so in the caveats
FLAT_RATIO = 1.5  # a training mix whose largest group share is at most this times its smallest is "flat"
CI_METRICS = (("mae", "MAE (years)"), ("bias", "signed error (years, estimate - truth)"),
              ("accuracy", "accuracy (exact age group)"), ("one_off", "one-off (1 exact, 0.5 adjacent group)"),
              ("ca3", "CA(3) (share within 3 years)"), ("ca5", "CA(5) (share within 5 years)"))


@dataclass
class CardFacts:
    """What a model card says, measured: the evaluation's metrics.json and predictions, the 95%
    bootstrap intervals of the per-image metrics (`cis`), rows per age group and per attribute."""

    eval_dir: Path
    run: Path | None
    metrics: Mapping[str, Any]
    pred: Mapping[str, Any]  # evaluation.predictions.read_predictions
    config: Mapping[str, Any]
    data_specs: list[str]
    cis: Mapping[str, Mapping[str, Any]]  # {metric: {value, lo, hi}}
    by_group: list[dict[str, Any]]
    attr_rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    attr_gaps: dict[str, Any] = field(default_factory=dict)
    measured: set[str] = field(default_factory=set)  # attributes from metrics.json's breakdown
    head: Any = None  # the head's traits (models.heads.HeadTraits: title, output, ...); None: unknown
    backbone: Any = None  # the backbone's traits (models.backbones.BackboneInfo: input size, ...); None: unknown


def spec_kind_path(spec: str) -> tuple[str, str | None]:
    """A data spec's kind and folder: 'utkface:DIR?x' -> ('utkface', 'DIR'); 'synth' -> ('synth', None)."""
    spec = spec.strip()
    if spec == "synth":
        return "synth", None
    kind, _, rest = spec.partition(":")
    return kind, (rest.partition("?")[0] or None)


def _ci(value: Any, lo: Any, hi: Any, digits: int = 2) -> str:
    return with_interval(value, lo, hi, digits)


def _cell(text: Any) -> str:
    return str(text).replace("|", "/").replace("\n", " ")


def _table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    out = ["| " + " | ".join(_cell(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    out += ["| " + " | ".join(_cell(c) for c in r) + " |" for r in rows]
    return out + [""]


def _error_table(first: str, rows: Sequence[Mapping[str, Any]], code: bool = False) -> list[str]:
    cols = [first] + (["code"] if code else []) + ["n", "MAE [95% CI]", "signed error [95% CI]"]
    body = [[r["value"]] + ([r.get("code") or "-"] if code else []) + [r["n"], _ci(r["mae"], r["mae_lo"], r["mae_hi"]),
            _ci(r["bias"], r["bias_lo"], r["bias_hi"])] for r in rows]
    return _table(cols, body)


def _worst(rows: Sequence[Mapping[str, Any]], min_n: int = 10) -> Mapping[str, Any] | None:
    ok = [r for r in rows if r["n"] >= min_n and r["mae"] is not None] or [r for r in rows if r["mae"] is not None]
    return max(ok, key=lambda r: r["mae"]) if ok else None


def render_model_card(facts: CardFacts, today: date | None = None) -> str:
    """The Markdown card of one evaluation, from what `evaluation.model_card.card_facts` measured."""
    metrics, pred, run, cfg = facts.metrics, facts.pred, facts.run, facts.config
    data_specs, cis, by_group = facts.data_specs, facts.cis, facts.by_group
    attr_rows, attr_gaps, measured = facts.attr_rows, facts.attr_gaps, facts.measured
    eval_dir = facts.eval_dir
    n = len(pred["paths"])
    split = metrics.get("split", "?")
    title = run.name if run is not None else Path(str(metrics.get("checkpoint", eval_dir))).name
    evaluated_on = ", ".join(f"`{s}`" for s in data_specs) or "-"
    what = (f"the `{split}` split of the run's own data ({evaluated_on})" if not isinstance(metrics.get("data"), list)
            else f"the `{split}` split of {evaluated_on}")
    lines = [f"# Model card: {title}", "",
             f"An age estimator evaluated on {n} images of {what}. Every number in this card was measured in "
             f"that evaluation ({eval_dir}); confidence intervals are 95% bootstrap intervals over its images. "
             "Nothing else is claimed.", ""]
    if run is not None:
        lines += model_details(run, metrics.get("checkpoint"), today, head=facts.head, backbone=facts.backbone)
    else:
        lines += ["## Model details", "", f"- **Checkpoint**: `{metrics.get('checkpoint')}` (no run folder: no "
                  "config, training data or age mix to describe)", ""]
    lines += INTENDED_USE
    lines += _factors(attr_rows, data_specs)
    lines += _metrics_section(metrics, cis, n)
    lines += _data_sections(metrics, pred, run, cfg, what)
    lines += ["## Error by age group", "",
              "Absolute and signed error (estimate - truth; positive: too old) per true age group. "
              "error_by_age.png in the evaluation folder shows them per year of age.", ""]
    lines += _error_table("age group", by_group)
    for name, rows in attr_rows.items():
        lines += _attribute_section(name, rows, attr_gaps.get(name), name in measured)
    lines += _calibration_section(metrics)
    lines += _prior_section(metrics)
    lines += _interval_section(metrics)
    lines += _threshold_section(metrics)
    lines += _ethics(attr_rows)
    lines += _caveats(metrics, cis, by_group, attr_rows, attr_gaps, run, cfg, pred, data_specs, facts.head)
    model_cfg = cfg.get("model") or {}
    meta = hub_metadata(title, metrics, data_specs, (cfg.get("data") or {}).get("sources") or [],
                        model_cfg.get("head"), model_cfg.get("backbone"), cis)
    return front_matter(meta) + "\n".join(lines).rstrip() + "\n"


def _factors(attr_rows: Mapping[str, Any], specs: Sequence[str]) -> list[str]:
    lines = ["## Factors", "",
             "Age estimation errs differently with the age itself (faces change fastest in childhood, training "
             "data thins out at the ends of the range) and may err differently between groups of people, "
             "cameras and datasets."]
    if attr_rows:
        names = ", ".join(attr_rows)
        lines[-1] += f" This evaluation breaks the error down by age group and by {names} (the attributes its images carry)."
        if any(spec_kind_path(s)[0] == "utkface" for s in specs):
            lines[-1] += (" UTKFace codes gender as male/female and race as White, Black, Asian, Indian, Others; its "
                          "age, gender and race labels are DEX estimates checked by a human annotator, not "
                          "self-reported, so the groups and the true ages themselves carry some error.")
    else:
        lines[-1] += (" **The evaluated images carry no attributes besides age** (no gender, race or several data "
                      "sources"
                      + (": synthetic faces, whose drawn traits are not people's" if any(
                          spec_kind_path(s)[0] == "synth" for s in specs) else "")
                      + "), so the error is broken down by age only, and this card cannot say whether the "
                      "model errs more for some groups of people than for others.")
    return lines + [""]


def _metrics_section(metrics: Mapping[str, Any], cis: Mapping[str, Mapping[str, Any]], n: int) -> list[str]:
    base = metrics.get("baseline") or {}
    source = metrics.get("baseline_source") or "training split"
    rows = []
    for key, title in CI_METRICS:
        ci = cis[key]
        value = metrics.get(key, ci["value"]) if key != "bias" else ci["value"]
        rows.append([title, _ci(value, ci["lo"], ci["hi"], 3), _f(base.get(key), 3)])
    for key, title in (("rmse", "RMSE (years)"), ("macro_f1", "macro F1 (age groups)"),
                       ("qwk", "quadratic weighted kappa (age groups)")):
        if metrics.get(key) is not None:
            rows.append([title, _f(metrics.get(key), 3) + " (no interval)", _f(base.get(key), 3)])
    lines = ["## Metrics", "",
             f"On {n} images. The baseline always answers the majority age group and the median age of the "
             f"{source} (it knows no face): a model that does not beat it has learnt nothing useful.", ""]
    return lines + _table(["metric", "model [95% CI]", "baseline"], rows)


def _data_sections(metrics: Mapping[str, Any], pred: Mapping[str, Any], run: Path | None, cfg: Mapping[str, Any],
                   what: str) -> list[str]:
    labels = pred["labels"]
    counts = np.bincount(pred["true_group"], minlength=len(labels))
    total = max(int(counts.sum()), 1)
    lines = ["## Evaluation data", "", f"{int(counts.sum())} images of {what}"
             + (f"; {len(metrics.get('skipped') or [])} unreadable image(s) skipped" if metrics.get("skipped") else "")
             + (f"; {metrics.get('dropped_out_of_range')} image(s) with ages outside the groups dropped"
                if metrics.get("dropped_out_of_range") else "")
             + ("; flip test-time augmentation" if metrics.get("tta") == "flip" else "")
             + (f"; an ensemble with {len(metrics.get('ensemble') or []) + 1} models" if metrics.get("ensemble") else "")
             + ".", ""]
    mix = training_age_mix(run, (cfg.get("data") or {}).get("groups")) if run is not None else None
    train_mix = {m["label"]: m["share"] for m in mix or []}
    summary = {}
    if run is not None:
        try:
            summary = read_json_object(first_member(run) / "summary.json")
        except UsageError:
            summary = {}
    report = summary.get("data_report") or {}
    train_counts = (report.get("after") or {}).get("train") or (report.get("before") or {}).get("train")
    cols = ["age group", "evaluated images", "share"]
    if train_counts and len(train_counts) == len(labels):
        cols.append("training images")
    if train_mix:
        cols.append("training mix (effective)")
    rows = []
    for g, lab in enumerate(labels):
        row: list[Any] = [lab, int(counts[g]), f"{counts[g] / total:.1%}"]
        if "training images" in cols:
            row.append(train_counts[g])
        if train_mix:
            row.append(f"{train_mix.get(lab, 0.0):.1%}")
        rows.append(row)
    lines += _table(cols, rows)
    lines += ["## Training data", ""]
    if run is None:
        return lines + ["No run folder: the training data is not known to this card.", ""]
    data = cfg.get("data") or {}
    lines += [f"Sources {', '.join(f'`{s}`' for s in data.get('sources') or []) or '-'}, split by protocol "
              f"`{data.get('protocol', 'random')}` (split seed {data.get('split_seed', '-')}, validation "
              f"{data.get('val_fraction', '-')}, test {data.get('test_fraction', '-')}), sampling "
              f"`{data.get('sampling', 'none')}`, caps {data.get('cap_train') or 'none'}. The counts and the effective mix "
              "per age group are in the table above (the effective mix weighs each training image as the sampler "
              "and the loss did).", ""]
    return lines


def _attribute_section(name: str, rows: Sequence[Mapping[str, Any]], gap: Mapping[str, Any] | None,
                       measured: bool) -> list[str]:
    src = "metrics.json `breakdown`" if measured else "computed for this card from predictions.csv"
    lines = [f"## Error by {name}", "", f"Per value of `{name}` ({src}); images without a value are left out.", ""]
    lines += _error_table(name, rows, code=any(r.get("code") is not None for r in rows))
    if gap:
        lines += [f"Largest MAE gap between values with at least {gap.get('min_n', 10)} images: "
                  f"{_ci(gap['mae_gap'], gap.get('mae_gap_lo'), gap.get('mae_gap_hi'))} years "
                  f"({gap['mae_high']} vs {gap['mae_low']})"
                  + ("; the interval includes 0: within sampling noise." if gap.get("mae_gap_lo") is not None
                     and gap["mae_gap_lo"] <= 0 else "."), ""]
    elif gap is None and rows:
        lines += ["Fewer than two values with enough images (10) to compare.", ""]
    return lines


def _calibration_section(metrics: Mapping[str, Any]) -> list[str]:
    cal = metrics.get("calibration")
    if not cal:
        return []
    lines = ["## Calibration", "",
             f"Top-label expected calibration error of the age-group probabilities ({cal.get('n_bins', 15)} bins; "
             f"0 is perfect): **ECE {_f(cal.get('ece'), 3)}**."]
    if cal.get("T") is not None:
        lines[-1] += (f" After temperature scaling fitted on the validation split (T = {_f(cal['T'], 2)}): "
                      f"ECE {_f(cal.get('ece_after'), 3)}.")
    lines[-1] += " reliability.png in the evaluation folder plots accuracy against confidence."
    return lines + [""]


def _prior_section(metrics: Mapping[str, Any]) -> list[str]:
    info = metrics.get("prior")
    if not info:
        return []
    rows = [[name.replace("_", " "), *(_f((info.get(name) or {}).get(k), 3) for k in ("mae", "accuracy", "one_off", "ca5"))]
            for name in ("as_trained", "adapted")]
    mode = info.get("mode", "?") + (f" ({info['file']})" if info.get("file") else "")
    lines = ["## Prior correction", "",
             f"The predictions adapted to another age mix ({mode}): each image's age distribution reweighted by "
             "the target mix over the training mix, then decoded again.", ""]
    return lines + _table(["predictions", "MAE", "accuracy", "one-off", "CA(5)"], rows)


def _interval_section(metrics: Mapping[str, Any]) -> list[str]:
    iv = metrics.get("interval")
    if not iv:
        return []
    lines = ["## Age intervals", "",
             f"Split-conformal intervals at {_f(iv.get('level'), 2)} coverage ({iv.get('method')}), calibrated on "
             f"{iv.get('n_cal')} validation images: coverage **{_f(iv.get('coverage'), 3)}**, mean width "
             f"{_f(iv.get('mean_width'), 1)} years.", ""]
    rows = [[g.get("label"), g.get("n"), _f(g.get("coverage"), 3), _f(g.get("mean_width"), 1)]
            for g in iv.get("per_group", [])]
    return lines + _table(["age group", "n", "coverage", "mean width (years)"], rows)


def _threshold_section(metrics: Mapping[str, Any]) -> list[str]:
    rows = metrics.get("threshold")
    if not rows:
        return []
    lines = ["## Age thresholds", "",
             "Accept when the estimate is at least the challenge age. False accept: truly under the threshold "
             "but accepted; false reject: at or over it but rejected.", ""]
    return lines + _table(["threshold", "challenge", "n under", "n over", "false accept", "false reject"],
                          [[r.get("threshold"), r.get("challenge"), r.get("n_under"), r.get("n_over"),
                            _f(r.get("false_accept"), 3), _f(r.get("false_reject"), 3)] for r in rows])


def _ethics(attr_rows: Mapping[str, Any]) -> list[str]:
    lines = ["## Ethical considerations", "",
             "- Faces are biometric data: whoever deploys the model processes them only with a lawful basis and the "
             "consent the law asks for.",
             "- An age estimate can deny a person something (a purchase, an entry, a service). Give people a way to "
             "prove their age otherwise, and do not rely on the estimate alone.",
             "- Dataset labels of gender and race are coarse, annotated categories; a small measured gap does not "
             "show that the model is fair to groups the labels do not capture."]
    if not attr_rows:
        lines.append("- This evaluation had no attributes of people, so its fairness across groups is **unmeasured**.")
    return lines + [""]


def _caveats(metrics: Mapping[str, Any], cis: Mapping[str, Mapping[str, Any]], by_group: Sequence[Mapping[str, Any]],
             attr_rows: Mapping[str, Sequence[Mapping[str, Any]]], attr_gaps: Mapping[str, Any], run: Path | None,
             cfg: Mapping[str, Any], pred: Mapping[str, Any], specs: Sequence[str], head: Any = None) -> list[str]:
    """Caveats drawn from this evaluation's numbers only (`head`: the head's traits, None: unknown)."""
    out: list[str] = []
    mae, base = cis["mae"], (metrics.get("baseline") or {}).get("mae")
    if base is not None and mae["hi"] is not None and mae["hi"] >= base:
        out.append(f"**Not clearly better than the baseline**: MAE {_ci(mae['value'], mae['lo'], mae['hi'])} against "
                   f"{_f(base)} years for always answering the median age.")
    elif base is not None:
        out.append(f"MAE {_ci(mae['value'], mae['lo'], mae['hi'])} years, against {_f(base)} for always answering the "
                   "median age: a single estimate is typically off by this much, some by far more "
                   f"(only {cis['ca5']['value']:.0%} of the estimates are within 5 years of the label).")
    worst = _worst(by_group)
    best = min((r for r in by_group if r["n"] >= 10 and r["mae"] is not None), key=lambda r: r["mae"], default=None)
    if worst is not None:
        text = (f"The largest error is in age group **{worst['value']}**: MAE "
                f"{_ci(worst['mae'], worst['mae_lo'], worst['mae_hi'])} years on {worst['n']} images")
        if best is not None and best is not worst:
            text += f", against {_ci(best['mae'], best['mae_lo'], best['mae_hi'])} for {best['value']}"
        out.append(text + ".")
    signed = [r for r in by_group if r["n"] and r["bias"] is not None]
    young, old = (signed[0], signed[-1]) if len(signed) >= 2 else (None, None)
    if young is not None and old is not None and (young["bias_lo"] if young["bias_lo"] is not None else young["bias"]) > 0 \
            > (old["bias_hi"] if old["bias_hi"] is not None else old["bias"]):
        out.append(f"Estimates are pulled toward the middle ages: the youngest group ({signed[0]['value']}) is "
                   f"over-estimated by {_f(signed[0]['bias'])} years on average, the oldest ({signed[-1]['value']}) "
                   f"under-estimated by {_f(-signed[-1]['bias'])} (both 95% intervals exclude 0).")
    small = [r["value"] for r in by_group if 0 < r["n"] < SMALL_N]
    if small:
        out.append(f"Few evaluated images (under {SMALL_N}) in {', '.join(small)}: their intervals are wide; "
                   "read their rows with care.")
    empty = [r["value"] for r in by_group if r["n"] == 0]
    if empty:
        out.append(f"No evaluated image in {', '.join(empty)}: the error there is unmeasured.")
    for name, rows in attr_rows.items():
        w = _worst(rows)
        gap = attr_gaps.get(name)
        if w is None:
            continue
        text = f"By {name}, the largest error is for **{w['value']}** (MAE {_ci(w['mae'], w['mae_lo'], w['mae_hi'])}, n = {w['n']})"
        if gap:
            sure = gap.get("mae_gap_lo") is not None and gap["mae_gap_lo"] > 0
            text += (f"; the gap to {gap['mae_low']} is {_ci(gap['mae_gap'], gap.get('mae_gap_lo'), gap.get('mae_gap_hi'))} "
                     f"years, {'larger than sampling noise' if sure else 'within sampling noise'}")
        out.append(text + ".")
    out += _prior_caveats(metrics, run, cfg, pred, head)
    cal = metrics.get("calibration") or {}
    if cal.get("ece") is not None and cal["ece"] > 0.05:
        out.append(f"The age-group probabilities are miscalibrated (ECE {_f(cal['ece'], 3)}): do not read them as "
                   "chances" + (f"; temperature scaling brings ECE to {_f(cal.get('ece_after'), 3)}."
                                if cal.get("ece_after") is not None else " without temperature scaling "
                                "(`evaluate --calibrate` measures it)."))
    iv = metrics.get("interval") or {}
    if iv.get("coverage") is not None and iv.get("level") is not None:
        under = [g["label"] for g in iv.get("per_group", []) if g.get("n") and g.get("coverage") is not None
                 and g["coverage"] < iv["level"] - 0.05]
        if under:
            out.append(f"The {_f(iv['level'], 2)} intervals cover less than that in {', '.join(under)} (coverage "
                       "holds on average over the evaluated images, not within every group).")
    if any(spec_kind_path(s)[0] == "synth" for s in specs):
        out.append("Evaluated on **synthetic faces**: these numbers say nothing about real photographs.")
    trained_on = [str(x) for x in (cfg.get("data") or {}).get("sources") or []]
    if any(spec_kind_path(s)[0] == "utkface" for s in [*trained_on, *specs]):
        out.append("UTKFace is available for non-commercial research only, and its labels are algorithmic estimates "
                   "checked by a person, so part of the measured error may be the labels' own.")
    if not attr_rows:
        out.append("No attributes of people were available: the error across gender, race or other groups is "
                   "unmeasured (evaluate on data that has them, e.g. UTKFace, with `--by gender,race`).")
    lines = ["## Caveats and recommendations", ""]
    lines += [f"- {c}" for c in out]
    return lines + [""]


def _prior_caveats(metrics: Mapping[str, Any], run: Path | None, cfg: Mapping[str, Any], pred: Mapping[str, Any],
                   head: Any = None) -> list[str]:
    """What the training prior is (flat or not, from train_prior.json) and what prior correction did
    here, or that it was not measured (`head`: the head's traits; its `output` says whether it applies)."""
    out: list[str] = []
    mix = training_age_mix(run, (cfg.get("data") or {}).get("groups")) if run is not None else None
    shares = [m["share"] for m in mix or [] if m["share"] > 0]
    if mix and shares:
        hi = max(mix, key=lambda m: m["share"])
        lo = min(mix, key=lambda m: m["share"])
        counts = np.bincount(pred["true_group"], minlength=len(pred["labels"])) / max(len(pred["true_group"]), 1)
        eval_hi = pred["labels"][int(np.argmax(counts))]
        if max(shares) <= FLAT_RATIO * min(shares):
            out.append(f"The training prior is **flat**: the model learnt every age group as about equally common "
                       f"({lo['label']} {lo['share']:.0%} to {hi['label']} {hi['share']:.0%} of the effective training "
                       f"mix; the evaluated images: most often {eval_hi}, {counts.max():.0%}). Its probabilities assume "
                       "that mix: on people whose ages are far from evenly spread (a school, a retirement home) they "
                       "ignore what is known about the place, and a prior correction toward the place's mix can lower "
                       "the error there.")
        else:
            out.append(f"The training prior is **not flat**: {hi['label']} {hi['share']:.0%} of the effective training "
                       f"mix, {lo['label']} {lo['share']:.0%}. The model's probabilities carry this mix, so on people "
                       "of another age mix its estimates lean toward the ages common in training.")
    info = metrics.get("prior")
    if info and info.get("as_trained") and info.get("adapted"):
        a, b = info["as_trained"].get("mae"), info["adapted"].get("mae")
        out.append(f"Prior correction ({info.get('mode')}) was measured here: MAE {_f(a)} as trained, {_f(b)} adapted. "
                   "It is sound when only the age mix differs, not when the faces themselves do (other cameras, "
                   "populations).")
    elif head is not None and not head.prior_correction:
        out.append("Prior correction (reweighting the age distribution by the target mix over the training mix) "
                   f"does not apply to the {head.name} head: it gives one age, no distribution.")
    elif mix:
        out.append("Prior correction was not measured in this evaluation. It reweights each image's age distribution "
                   "by (target mix / training mix), so the estimates follow the population's own age mix; "
                   "`ordinalage evaluate RUN --prior em` measures it on these images.")
    return out
