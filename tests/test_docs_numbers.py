"""Numbers in the user docs match the benchmark JSON they come from.

Two kinds of check, nothing trained or measured (only `benchmarks/results/*.json` is read):

- Marker blocks that a benchmark's `--report-only` writes (`<!-- NAME:start -->` ... `<!-- NAME:end -->`)
  equal what that script's own renderer makes from the published JSON today, so hand edits inside
  a block, or a JSON rewritten without the docs, fail here.
- Numbers quoted in prose (README.md, docs/*.md, config comments) are found by a pattern with its
  context and compared with the value computed from the JSON, to the precision the text gives
  (one unit of its last digit, so rounding a rounded value passes and a stale figure does not; a
  table's row, `exact`, must be the JSON's value rounded to the digits it shows).
  Every pattern must match somewhere: a sentence that is reworded or moved to another page must
  bring its check along (the search covers all user docs, so moving it between pages is fine).
"""

from __future__ import annotations

import json
import re
import shutil
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DOCS = ROOT / "docs"
USER_DOCS = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))


@cache
def result(name: str) -> dict[str, Any]:
    return json.loads((RESULTS / name).read_text(encoding="utf-8"))


def _flat(text: str) -> str:
    return re.sub(r"\s+", " ", text)


@cache
def doc_text(kind: str) -> str:
    """All user docs (or all config comments) as one string, whitespace collapsed, so that a pattern
    matches across the line breaks of wrapped prose."""
    if kind == "docs":
        return " \n ".join(_flat(p.read_text(encoding="utf-8")) for p in USER_DOCS)
    comments = []
    for p in CONFIGS:
        lines = [ln.split("#", 1)[1] for ln in p.read_text(encoding="utf-8").splitlines() if "#" in ln]
        comments.append(_flat(" ".join(lines)))
    return " \n ".join(comments)


# ------------------------------------------------------------------------------------------------
# budget_utkface.json


def cell(model: str, minutes: float) -> dict[str, Any]:
    for c in result("budget_utkface.json")["cells"]:
        if c["model"] == model and c["minutes"] == minutes:
            return c
    raise KeyError((model, minutes))


def runs(model: str, minutes: float) -> list[dict[str, Any]]:
    rows = [r for r in result("budget_utkface.json")["runs"] if r["model"] == model and r["minutes"] == minutes]
    return sorted(rows, key=lambda r: r["seed"])


def epochs(model: str, minutes: float) -> list[int]:
    return [r["epochs"] for r in runs(model, minutes)]


def decode_val_median() -> float:
    return result("decode_ensembles.json")["mean_over_runs"]["val"]["median"]["mean"]


# ------------------------------------------------------------------------------------------------
# other results


def distill(name: str, kind: str, temperature: float | None = 1.0) -> dict[str, Any]:
    return next(c for c in result(name)["cells"] if c["kind"] == kind and c.get("temperature", temperature) == temperature)


def distill_pair(name: str, b: str) -> dict[str, Any]:
    return next(c for c in result(name)["comparisons"] if c["a"] == "student T=1" and c["b"] == b)


def cpu_variant(name: str, backbone: str, variant: str) -> dict[str, Any]:
    return next(b for b in result(name)["backbones"] if b["backbone"] == backbone)["variants"][variant]


def bakeoff_minutes(name: str) -> list[float]:
    cells = result(f"{name}/bakeoff.json")["cells"]
    return sorted(c["minutes"] for c in cells if c["status"] == "done")


def bakeoff_cell_minutes(name: str, method: str) -> list[float]:
    cells = result(f"{name}/bakeoff.json")["cells"]
    return [c["minutes"] for c in sorted(cells, key=lambda c: c["seed"]) if c["method"] == method]


def bakeoff_method(name: str, method: str) -> dict[str, Any]:
    return next(m for m in result(f"{name}/bakeoff.json")["methods"] if m["method"] == method)


def slow_cells(name: str) -> list[float]:
    m = bakeoff_minutes(name)
    return [x for x in m if x > 2 * statistics.median(m)]


def e2e(setting: str) -> dict[str, Any]:
    return result("end_to_end.json")["by_setting"][setting]


def e2e_settings() -> list[str]:
    return list(result("end_to_end.json")["by_setting"])


def pipeline(workers: str) -> dict[str, Any]:
    return result("data_pipeline.json")["by_workers"][workers]


def memory(workers: str, n: str, key: str) -> float:
    return result("eval_memory.json")["by_workers"][workers][n][key]["median"]


def augment(backend: str, key: str) -> float:
    return result("augment_batched.json")["by_backend"][backend][key]


def cache_fig(key: str) -> dict[str, Any]:
    return result("cache.json")["figures"][key]


def serve_direct(threads: str) -> dict[str, Any]:
    return result("serve.json")["direct"][threads]


def serve_server(mode: str, clients: str) -> dict[str, Any]:
    return result("serve.json")["server"][mode][clients]


def latency(name: str, detector: str) -> dict[str, Any]:
    return result(name)["latency"][detector]


def decoded(split: str, rule: str) -> list[float]:
    """Each 30-minute ensemble's MAE on `split` under decoder `rule` (decode_ensembles.json, in run order)."""
    return [r[rule] for r in result("decode_ensembles.json")["rows"] if r["split"] == split]


def decoded_mean(split: str, rule: str) -> list[float]:
    summary = result("decode_ensembles.json")["mean_over_runs"][split][rule]
    return [summary["mean"], summary["std"]]


def budget_row(model: str) -> list[float]:
    """A 30-minute row of the decode table from budget_utkface.json: val per seed, val mean, test per seed,
    test mean and std."""
    c = cell(model, 30)
    return [*(r["val_mae"] for r in runs(model, 30)), c["val_mae_mean"], *(r["test_mae"] for r in runs(model, 30)),
            c["test_mae_mean"], c["test_mae_std"]]


def prior_model(name: str) -> dict[str, Any]:
    return next(r for r in result("prior_shift.json")["results"] if r["name"] == name)


PRIOR_MODELS = ("class", "corn", "class_no_label_distribution")


def em_recovered(name: str) -> list[float]:
    """The least and most of the known-mix gain (percent) that EM recovers over the shifted mixes."""
    m = prior_model(name)
    shares = [100 * r[f"em_{m['chosen_decoder']}_recovered"] for r in m["rows"]
              if r[f"em_{m['chosen_decoder']}_recovered"] is not None]
    return [min(shares), max(shares)]


def prior_mae(name: str, mix: str, prior: str) -> float:
    m = prior_model(name)
    return next(r for r in m["rows"] if r["mix"] == mix)[f"{prior}_{m['chosen_decoder']}_mae"]


def jitter_cell(detector: str, variant: str) -> dict[str, Any]:
    return next(c for c in result("frame_jitter.json")["cells"] if (c["detector"], c["variant"]) == (detector, variant))


def jitter_lowered_disagreement() -> int:
    """Detector x photo x seed cells where the mean |photo - chip| age is lower with more jitter."""
    runs = {(r["kind"], r["seed"]): {(x["detector"], x["variant"]): x["mean_abs_photo_minus_chip"] for x in r["rows"]}
            for r in result("frame_jitter.json")["runs"]}
    return sum(runs[("jitter", seed)][key] < base[key] for (kind, seed), base in runs.items() if kind == "base"
               for key in base)


def skew_row(detector: str, variant: str = "plain", mode: str = "jitter") -> dict:
    """The shipped model's row of photo_skew_zoo.json."""
    return next(r for r in result("photo_skew_zoo.json")["rows"]
                if (r["detector"], r["variant"], r["mode"]) == (detector, variant, mode))


@dataclass(frozen=True)
class Claim:
    """`pattern` (regular expression, whitespace collapsed) with one group per number; `values`
    computes the numbers from the JSON in the same order; `where`: "docs" or "configs"; `exact`: each quoted
    number is its value rounded to the quoted digits (tables written from the JSON), not merely within one unit."""

    name: str
    pattern: str
    values: Callable[[], list[float]]
    where: str = "docs"
    exact: bool = False


N = r"([+-]?\d[\d,]*(?:\.\d+)?)"  # one quoted number (thousands may be grouped: 2,000)

CLAIMS = [
    # README: the 30-minute ensembles (budget_utkface.json, decode_ensembles.json)
    Claim("three 10-minute models against one 30-minute model (val)",
          rf"three 10-minute models beat one 30-minute model on validation \({N} against {N}-{N}",
          lambda: [cell("recipe", 30)["val_mae_mean"], min(r["val_mae"] for r in runs("single", 30)),
                   max(r["val_mae"] for r in runs("single", 30))]),
    Claim("four 7.5-minute models against three 10-minute ones (val, median decoder)",
          rf"four 7\.5-minute models beat three 10-minute ones \(val {N} against {N}",
          lambda: [cell("recipe4", 30)["val_mae_mean"], decode_val_median()]),
    Claim("affine_p 0.8 against 0.2 (val)", rf"\(`data\.augment\.affine_p`\), which lowered val MAE on every seed \({N} against {N}",
          lambda: [cell("jitter4", 30)["val_mae_mean"], cell("recipe4", 30)["val_mae_mean"]]),
    Claim("the recipe's test MAE",
          rf"it reaches UTKFace test MAE \*\*{N} ± {N}\*\* over 3 seeds \({N}, {N}, {N}; {N} ± {N} at 20%\), against {N}",
          lambda: [cell("jitter4", 30)["test_mae_mean"], cell("jitter4", 30)["test_mae_std"],
                   *[r["test_mae"] for r in runs("jitter4", 30)],
                   cell("recipe4", 30)["test_mae_mean"], cell("recipe4", 30)["test_mae_std"],
                   result("budget_utkface.json")["start_as_published"]["test_mae_mean"]]),
    Claim("the recipe's minutes", rf"utkface_30min\.yaml` \({N} minutes on 2 CPU cores\)",
          lambda: [cell("jitter4", 30)["wall_minutes_max"]]),
    Claim("three members at 20 and 10 minutes",
          rf"`--budget 20m` {N} ± {N} in about {N} minutes, `--budget 10m` {N}",
          lambda: [cell("recipe", 20)["test_mae_mean"], cell("recipe", 20)["test_mae_std"],
                   cell("recipe", 20)["wall_minutes_max"], cell("recipe", 10)["test_mae_mean"]]),
    Claim("5 minutes: one model against three", rf"\(5 minutes: one model {N}, three {N}\)",
          lambda: [cell("single", 5)["test_mae_mean"], cell("recipe", 5)["test_mae_mean"]]),
    Claim("the one-model config's epochs",
          rf"\({N}-{N} epochs in 30 minutes on 2 cores, against {N}-{N} with 2 workers\)",
          lambda: [min(epochs("ordinal_mixup_w0", 30)), max(epochs("ordinal_mixup_w0", 30)),
                   min(epochs("ordinal_mixup", 30)), max(epochs("ordinal_mixup", 30))]),
    Claim("the one-model config's test MAE",
          rf"test \*\*{N} ± {N}\*\* \({N} ± {N} with 2 workers; one CORAL head without mixup {N} ± {N}, "
          rf"one class-head model {N}\)",
          lambda: [cell("ordinal_mixup_w0", 30)["test_mae_mean"], cell("ordinal_mixup_w0", 30)["test_mae_std"],
                   cell("ordinal_mixup", 30)["test_mae_mean"], cell("ordinal_mixup", 30)["test_mae_std"],
                   cell("ordinal", 30)["test_mae_mean"], cell("ordinal", 30)["test_mae_std"],
                   cell("single", 30)["test_mae_mean"]]),
    Claim("mixup by age (val)", rf"it lowered val MAE on every seed \({N} against {N}, paired by seed",
          lambda: [cell("ordinal_mixup", 30)["val_mae_mean"], cell("ordinal", 30)["val_mae_mean"]]),
    Claim("one model against the ensemble (predict.md)", rf"UTKFace test MAE {N} against the ensemble's {N}, 3 seeds",
          lambda: [cell("ordinal_mixup_w0", 30)["test_mae_mean"], cell("jitter4", 30)["test_mae_mean"]]),
    Claim("the recipe in its config", rf"Test MAE {N} \+- {N} over 3 seeds in {N} minutes",
          lambda: [cell("jitter4", 30)["test_mae_mean"], cell("jitter4", 30)["test_mae_std"],
                   cell("jitter4", 30)["wall_minutes_max"]], where="configs"),
    Claim("the one-model config in its config", rf"Test MAE {N} \+- {N} over 3 seeds \(the recipe: {N}\)",
          lambda: [cell("ordinal_mixup_w0", 30)["test_mae_mean"], cell("ordinal_mixup_w0", 30)["test_mae_std"],
                   cell("jitter4", 30)["test_mae_mean"]], where="configs"),
    # README: distillation (distill_utkface.json, distill_utkface_30.json)
    Claim("distilled students",
          rf"against {N} for the teacher at 8 passes per face: with `--budget 30m`, test MAE \*\*{N} ± {N}\*\* \(paired "
          rf"difference {N} \[{N}, {N}\], no difference shown\); with `--budget 10m`, {N} ± {N} \({N} \[{N}, {N}\]\), "
          rf"where a plain model given the same 10 minutes gets {N} ± {N}",
          lambda: [result("distill_utkface_30.json")["teacher"]["test_mae"],
                   distill("distill_utkface_30.json", "student")["test_mae"]["mean"],
                   distill("distill_utkface_30.json", "student")["test_mae"]["std"],
                   distill_pair("distill_utkface_30.json", "teacher")["mae_diff"],
                   *distill_pair("distill_utkface_30.json", "teacher")["ci"],
                   distill("distill_utkface.json", "student")["test_mae"]["mean"],
                   distill("distill_utkface.json", "student")["test_mae"]["std"],
                   distill_pair("distill_utkface.json", "teacher")["mae_diff"],
                   *distill_pair("distill_utkface.json", "teacher")["ci"],
                   distill("distill_utkface.json", "plain", None)["test_mae"]["mean"],
                   distill("distill_utkface.json", "plain", None)["test_mae"]["std"]]),
    # docs/results.md: folds, timm, transfer
    Claim("random splits against 5 folds",
          rf"split seeds 0, 1, 2: {N}, {N}, {N}, \*\*{N} ± {N}\*\* \({N} ± {N}\); 5-fold: {N}, {N}, {N}, {N}, {N}, "
          rf"\*\*{N} ± {N}\*\* \({N} ± {N}\)",
          lambda: [*[r["mae"] for r in result("folds_utkface.json")["random"]["runs"]],
                   result("folds_utkface.json")["random"]["mae"]["mean"], result("folds_utkface.json")["random"]["mae"]["std"],
                   result("folds_utkface.json")["random"]["accuracy"]["mean"],
                   result("folds_utkface.json")["random"]["accuracy"]["std"],
                   *[r["mae"] for r in result("folds_utkface.json")["folds5"]["runs"]],
                   result("folds_utkface.json")["folds5"]["mae"]["mean"], result("folds_utkface.json")["folds5"]["mae"]["std"],
                   result("folds_utkface.json")["folds5"]["accuracy"]["mean"],
                   result("folds_utkface.json")["folds5"]["accuracy"]["std"]]),
    Claim("timm against scratch",
          rf"scratch \(width 32\) {N} epochs at {N} train img/s, {N} wall minutes with the test evaluation, val {N}, test "
          rf"\*\*{N}\*\*; timm:resnet18d {N} epochs at {N} img/s \({N}x slower per image on a CPU\), {N} minutes, val {N}, test {N}",
          lambda: [*(lambda s, t: [s["epochs_done"], s["train_images_per_s"], s["wall_seconds"] / 60, s["best_val_mae"],
                                   s["test_mae"], t["epochs_done"], t["train_images_per_s"],
                                   s["train_images_per_s"] / t["train_images_per_s"], t["wall_seconds"] / 60,
                                   t["best_val_mae"], t["test_mae"]])(*result("timm_vs_scratch.json")["rows"])]),
    Claim("--init between halves",
          rf"A: 8 epochs, test MAE {N}\)\. Test MAE on B, 3 seeds: from scratch {N} ± {N} \({N}, {N}, {N}\); `--init` from "
          rf"the A model \*\*{N} ± {N}\*\* \({N}, {N}, {N}\)",
          lambda: [result("transfer_utkface.json")["run_a"]["test_mae"],
                   *(lambda t: [t["scratch"]["mean"], t["scratch"]["std"]])(result("transfer_utkface.json")["test_mae"]),
                   *[r["test_mae"] for r in result("transfer_utkface.json")["rows"] if r["arm"] == "scratch"],
                   *(lambda t: [t["init_from_A"]["mean"], t["init_from_A"]["std"]])(result("transfer_utkface.json")["test_mae"]),
                   *[r["test_mae"] for r in result("transfer_utkface.json")["rows"] if r["arm"] == "init_from_A"]]),
    # docs/performance.md: CPU step speed
    *[Claim(f"cpu speed, {backbone} {variant}",
            rf"\| {backbone} \| {re.escape(variant)} \| {N} \| {N} \|",
            lambda backbone=backbone, variant=variant: [cpu_variant("cpu_speed.json", backbone, variant)["images_per_s"],
                                                        cpu_variant("cpu_speed.json", backbone, variant)["speed_vs_eager"]])
      for backbone in ("scratch", "resnet18")
      for variant in ("eager", "channels_last", "compile", "compile+channels_last", "eager-1thread")],
    *[Claim(f"cpu speed, {backbone} channels_last confirmed",
            rf"\| {backbone} \| channels_last \(12-round confirmation\) \| {N} \| \*\*{N}\*\* \|",
            lambda backbone=backbone: [cpu_variant("cpu_speed_channels_last.json", backbone, "channels_last")["images_per_s"],
                                       cpu_variant("cpu_speed_channels_last.json", backbone, "channels_last")["speed_vs_eager"]])
      for backbone in ("scratch", "resnet18")],
    # docs/results.md: bake-off cell minutes
    Claim("bake-off cell minutes",
          rf"Their cells took a median of {N} minutes each; the slowest \({N}-{N} minutes, among them class_dldl's {N} "
          rf"and {N}\).*?\(class_dldl {N} ± {N}\)",
          lambda: [statistics.median(bakeoff_minutes("bakeoff_field_heads_utkface")),
                   min(slow_cells("bakeoff_field_heads_utkface")), max(slow_cells("bakeoff_field_heads_utkface")),
                   *bakeoff_cell_minutes("bakeoff_heads_utkface", "class_dldl")[:2],
                   bakeoff_method("bakeoff_heads_utkface", "class_dldl")["minutes"],
                   bakeoff_method("bakeoff_heads_utkface", "class_dldl")["minutes_std"]]),
    Claim("the one-split heads bake-off (verdicts_utkface.md)",
          rf"gave mean test MAEs of class with Gaussian labels σ=2 {N} ± {N}, CORN {N} ± {N}, class one-hot {N} ± {N}, "
          rf"CORAL {N} ± {N}, L1 regression {N} ± {N}",
          lambda: [v for m in ("class_dldl", "corn", "class", "coral", "regression")
                   for v in (bakeoff_method("bakeoff_heads_utkface", m)["mae"],
                             bakeoff_method("bakeoff_heads_utkface", m)["mae_std"])]),
    # docs/bakeoff.md: two processes on two cores
    Claim("bake-off with two processes", rf"`--jobs 2` finished 4 cells .*? in {N}x the time of one process",
          lambda: [result("bakeoff_workers.json")["ratio_2_over_1"]]),
    # docs/evaluation.md: EM's cost
    Claim("EM's cost", rf"10,000 images × 81 labels at the default smoothing took {N} s \({N} iterations",
          lambda: [result("prior_shift.json")["em_cost"]["seconds_per_10k"], result("prior_shift.json")["em_cost"]["n_iter"]]),
    # docs/results.md: the prior-shift readings below its table (the table itself: the prior-shift block)
    Claim("prior shift: EM's share of the known-mix gain",
          rf"On the shifted mixes EM recovers {N}-{N}% \(class\), {N}-{N}% \(CORN\) and {N}-{N}% \(class, label_sigma 0\)",
          lambda: [v for name in PRIOR_MODELS for v in em_recovered(name)], exact=True),
    Claim("prior shift: EM on the split's own mix",
          rf"On the split's own mix even the true mix gains almost nothing and EM adds {N}, {N} and {N} MAE",
          lambda: [prior_mae(name, "own", "em") - prior_mae(name, "own", "trained") for name in PRIOR_MODELS], exact=True),
    Claim("prior shift: the validation temperature",
          rf"A validation temperature \(T = {N}, {N}, {N}\) moves EM by at most {N}, never lower",
          lambda: [*(prior_model(name)["temperature"] for name in PRIOR_MODELS),
                   max(abs(prior_mae(name, r["mix"], "em_T") - prior_mae(name, r["mix"], "em"))
                       for name in PRIOR_MODELS for r in prior_model(name)["rows"])], exact=True),
    Claim("prior shift: decoders on validation",
          rf"the median is below the mean for all three models \(class {N} vs {N}, CORN {N} vs {N}\)",
          lambda: [prior_model("class")["val_mae_by_decoder"]["median"], prior_model("class")["val_mae_by_decoder"]["mean"],
                   prior_model("corn")["val_mae_by_decoder"]["median"], prior_model("corn")["val_mae_by_decoder"]["mean"]],
          exact=True),
    # docs/results.md: the ensemble size and decoder table (decode_ensembles.json; the 4-member rows: budget_utkface.json)
    Claim("decode table: 3 members, mean decoder",
          rf"\| 3 members, mean decoder \(as trained\) \| {N} / {N} / {N} \| {N} \| \| {N} ± {N} \|",
          lambda: [*decoded("val", "mean"), decoded_mean("val", "mean")[0], *decoded_mean("test", "mean")], exact=True),
    Claim("decode table: 3 members, median decoder",
          rf"\| 3 members, median decoder \| {N} / {N} / {N} \| {N} \| {N} / {N} / {N} \| {N} ± {N} \|",
          lambda: [*decoded("val", "median"), decoded_mean("val", "median")[0], *decoded("test", "median"),
                   *decoded_mean("test", "median")], exact=True),
    Claim("decode table: 4 members, affine_p 0.2",
          rf"\| 4 members, median decoder, `affine_p` 0\.2 \| {N} / {N} / {N} \| {N} \| {N} / {N} / {N} \| {N} ± {N} \|",
          lambda: budget_row("recipe4"), exact=True),
    Claim("decode table: 4 members, affine_p 0.8",
          rf"\| the same, `affine_p` 0\.8 \(`utkface_30min\.yaml`\) \| {N} / {N} / {N} \| {N} \| {N} / {N} / {N} \| "
          rf"\*\*{N} ± {N}\*\* \|",
          lambda: budget_row("jitter4"), exact=True),
    # docs/performance.md: the summary table and its readings
    *[Claim(f"data pipeline, {w} workers",
            rf"\| data pipeline, {w} workers?[^|]*\| {N} \| {N} \| \*\*{N}\*\* \| >= {N} \|",
            lambda w=w: [pipeline(w)["package_images_per_s"]["median"], pipeline(w)["reference_images_per_s"]["median"],
                         pipeline(w)["ratio"], result("data_pipeline.json")["target"]])
      for w in ("0", "1", "2")],
    Claim("trainer overhead", rf"\| trainer overhead [^|]*\| {N} \| {N} \| \*\*{N}\*\* \| >= {N} ",
          lambda: [result("train_overhead.json")["package_images_per_s"]["median"],
                   result("train_overhead.json")["bare_images_per_s"]["median"],
                   result("train_overhead.json")["ratio"], result("train_overhead.json")["target"]]),
    Claim("trainer overhead in words", rf"runs at {N} of a bare forward/backward/step loop .*?\(median of {N} "
          rf"paired steps; single pairs ranged {N}-{N}",
          lambda: [result("train_overhead.json")["ratio"], result("train_overhead.json")["steps_timed"],
                   result("train_overhead.json")["paired_ratio"]["min"], result("train_overhead.json")["paired_ratio"]["max"]]),
    Claim("end to end, auto", rf"\| end to end [^|]*\| {N} \| {N} \| \*\*{N}\*\* \| >= {N} \|",
          lambda: [e2e("auto:default")["fit_images_per_s"], result("end_to_end.json")["bare_images_per_s"]["median"],
                   e2e("auto:default")["ratio"], result("end_to_end.json")["target"]]),
    *[Claim(f"end to end, {w} workers", rf"\| the same at {w} workers \| {N} \| {N} \| \*\*{N}\*\* \| >= {N} ",
            lambda w=w: [e2e(f"{w}:default")["fit_images_per_s"], result("end_to_end.json")["bare_images_per_s"]["median"],
                         e2e(f"{w}:default")["ratio"], result("end_to_end.json")["target"]])
      for w in ("2", "0")],
    Claim("end to end in words",
          rf"\(1-minute load {N}-{N}, the benchmark's own two threads\), so the bare loop itself ranged {N}-{N} images/s "
          rf"\(median {N}\)\. Its ratios, "
          rf"medians of epochs 2-{N} \({N} for `auto`, which picks {N} workers on 2 cores, {N} at 2 workers, {N} at 0 workers",
          lambda: [min(e2e(s)["loadavg_1min"]["before"] for s in e2e_settings()),
                   max(e2e(s)["loadavg_1min"]["after"] for s in e2e_settings()),
                   result("end_to_end.json")["bare_images_per_s"]["min"], result("end_to_end.json")["bare_images_per_s"]["max"],
                   result("end_to_end.json")["bare_images_per_s"]["median"], result("end_to_end.json")["settings"]["epochs"],
                   e2e("auto:default")["ratio"], e2e("auto:default")["resolved_workers"],
                   e2e("2:default")["ratio"], e2e("0:default")["ratio"]]),
    Claim("batched augmentation, table", rf"\| augmentation per 64-face batch[^|]*\| {N} \| {N} \| \*\*{N}\*\*",
          lambda: [augment("kornia_2_threads", "core_ms_per_batch"), augment("albumentations", "core_ms_per_batch"),
                   augment("kornia_2_threads", "core_ms_vs_albumentations")]),
    Claim("batched augmentation, words",
          rf"cost {N} core-ms per batch with per-image albumentations, {N} with kornia 0\.9\.0 on the whole batch in one "
          rf"thread \({N}x\), {N} in two \({N} ms wall, {N}x\) and {N} with torchvision v2 one image at a time \({N}x",
          lambda: [augment("albumentations", "core_ms_per_batch"), augment("kornia_1_thread", "core_ms_per_batch"),
                   augment("kornia_1_thread", "core_ms_vs_albumentations"), augment("kornia_2_threads", "core_ms_per_batch"),
                   augment("kornia_2_threads", "wall_ms_per_batch"), augment("kornia_2_threads", "core_ms_vs_albumentations"),
                   augment("torchvision_v2", "core_ms_per_batch"), augment("torchvision_v2", "core_ms_vs_albumentations")]),
    Claim("eval memory, 0 workers", rf"\| eval memory, peak RSS at 500 / 2000 images \(0 workers\) \| {N} MiB / {N} MiB \| \| \*\*{N}\*\*",
          lambda: [memory("0", "N", "maxrss_mib"), memory("0", "4N", "maxrss_mib"),
                   result("eval_memory.json")["by_workers"]["0"]["ratio_maxrss"]]),
    Claim("eval memory, 2 workers",
          rf"\| eval memory, 2 workers [^|]*\| {N} / {N} MiB; {N} / {N} MiB \| \| \*\*{N}; {N}\*\*",
          lambda: [memory("2", "N", "maxrss_mib"), memory("2", "4N", "maxrss_mib"),
                   memory("2", "N", "tree_rss_mib"), memory("2", "4N", "tree_rss_mib"),
                   result("eval_memory.json")["by_workers"]["2"]["ratio_maxrss"],
                   result("eval_memory.json")["by_workers"]["2"]["ratio_tree_rss"]]),
    *[Claim(f"cache, augmentation {aug}, {w} workers",
            rf"\| {aug} \| {w} \| {N} \| {N} \| \*\*{N}\*\* \|",
            lambda aug=aug, w=w: [cache_fig(f"augment_{aug}/workers_{w}")["cached_images_per_s"]["median"],
                                  cache_fig(f"augment_{aug}/workers_{w}")["uncached_images_per_s"]["median"],
                                  cache_fig(f"augment_{aug}/workers_{w}")["ratio"]])
      for aug in ("on", "off") for w in ("0", "2")],
    Claim("building the cache", rf"\(hashing {N} files plus decoding them, {N} distinct contents, {N} MiB\) took {N} s",
          lambda: [result("cache.json")["build"]["images"], result("cache.json")["build"]["rows"],
                   result("cache.json")["build"]["mib"], result("cache.json")["build"]["seconds"]]),
    # docs/predict.md: serve throughput and detector latency
    Claim("serve: direct calls, default threads",
          rf"\| `AgeEstimator\.predict` in one process, default threads \| {N} \(one caller\) \| {N} / {N} ms \|",
          lambda: [serve_direct("default")["requests_per_s"], serve_direct("default")["p50_ms"], serve_direct("default")["p95_ms"]]),
    Claim("serve: direct calls, 1 thread",
          rf"\| `AgeEstimator\.predict` in one process, 1 thread \| {N} \(one caller\) \| {N} / {N} ms \|",
          lambda: [serve_direct("1")["requests_per_s"], serve_direct("1")["p50_ms"], serve_direct("1")["p95_ms"]]),
    *[Claim(f"serve: server, {label}",
            rf"\| server, {re.escape(label)} \| {N} / {N} / {N} \| {N} / {N} ms \|",
            lambda mode=mode: [serve_server(mode, "1")["requests_per_s"], serve_server(mode, "4")["requests_per_s"],
                               serve_server(mode, "16")["requests_per_s"], serve_server(mode, "1")["p50_ms"],
                               serve_server(mode, "1")["p95_ms"]])
      for label, mode in (("batching, default threads", "batching, threads=default"),
                          ("lock, default threads", "lock, threads=default"),
                          ("batching, `OMP_NUM_THREADS=1`", "batching, threads=1"),
                          ("lock, `OMP_NUM_THREADS=1`", "lock, threads=1"))],
    Claim("serve: the page", rf"The page annotated {N} frames per second", lambda: [result("serve.json")["page"]["frames_per_s"]]),
    Claim("detector latency, the 64 px model",
          rf"the plain Haar crop {N} ms, the default Haar \(5 views\) {N} ms \({N}x\), dlib {N} ms \({N}x\)",
          lambda: [latency("photo_skew.json", "haar-today")["ms_median"], latency("photo_skew.json", "haar")["ms_median"],
                   latency("photo_skew.json", "haar")["ratio_to_haar_today"], latency("photo_skew.json", "dlib")["ms_median"],
                   latency("photo_skew.json", "dlib")["ratio_to_haar_today"]]),
    Claim("serve measured before the 5-view default: the cost ratio quoted",
          rf"the default detection and crop cost about {N}x per photo",
          lambda: [latency("photo_skew.json", "haar")["ratio_to_haar_today"]]),
    Claim("the shipped model in photos: Haar against dlib (photo_skew_zoo.json, plain photos)",
          rf"Haar found {N}% of the faces and moved MAE by {N} years against the same faces as chips \(SE {N}\); "
          rf"dlib found {N}% and moved it by {N} \(SE {N}\), at {N} against {N} ms a photo",
          lambda: [100 * skew_row("haar")["found_rate"], skew_row("haar")["gap"], skew_row("haar")["gap_se"],
                   100 * skew_row("dlib")["found_rate"], skew_row("dlib")["gap"], skew_row("dlib")["gap_se"],
                   latency("photo_skew_zoo.json", "haar")["ms_median"],
                   latency("photo_skew_zoo.json", "dlib")["ms_median"]]),
    Claim("detector latency, the recipe",
          rf"the plain Haar crop {N} ms, the default Haar {N} ms \({N}x\), dlib {N} ms \({N}x\)",
          lambda: [latency("photo_skew_recipe.json", "haar-today")["ms_median"],
                   latency("photo_skew_recipe.json", "haar")["ms_median"],
                   latency("photo_skew_recipe.json", "haar")["ratio_to_haar_today"],
                   latency("photo_skew_recipe.json", "dlib")["ms_median"],
                   latency("photo_skew_recipe.json", "dlib")["ratio_to_haar_today"]]),
    # docs/predict.md: the readings below the frame-jitter table (the table itself: the frame-jitter block)
    Claim("frame jitter: cells where more jitter lowered the photo-to-chip disagreement",
          rf"the photo-to-chip disagreement of a face's age in all {N} detector x photo x seed cells",
          lambda: [jitter_lowered_disagreement()], exact=True),
    Claim("frame jitter: the Haar gap on turned faces",
          rf"the Haar gap on turned faces fell by {N} ± {N} \({N} seeds\)",
          lambda: [-jitter_cell("haar", "rot15")["gap_difference"]["mean"],
                   jitter_cell("haar", "rot15")["gap_difference"]["std"], len(jitter_cell("haar", "rot15")["seeds"])],
          exact=True),
    Claim("frame jitter: the other five gaps' changes",
          rf"the other five gaps moved by {N} to {N} years",
          lambda: [min(other_gap_changes()), max(other_gap_changes())], exact=True),
]


def other_gap_changes() -> list[float]:
    """The mean change of each detector x photo gap with more jitter, except Haar on turned faces."""
    return [c["gap_difference"]["mean"] for c in result("frame_jitter.json")["cells"]
            if (c["detector"], c["variant"]) != ("haar", "rot15")]


def _decimals(text: str) -> int:
    return len(text.split(".", 1)[1]) if "." in text else 0


@pytest.mark.parametrize("claim", CLAIMS, ids=[c.name for c in CLAIMS])
def test_quoted_number_matches_its_json(claim: Claim) -> None:
    matches = list(re.finditer(claim.pattern, doc_text(claim.where)))
    where = "README.md or docs/*.md" if claim.where == "docs" else "the comments of configs/**/*.yaml"
    assert matches, (f"{claim.name}: no text in {where} matches {claim.pattern!r}; if the sentence was reworded, "
                     "update its pattern here (and keep its numbers checked)")
    expected = claim.values()
    for m in matches:
        quoted = m.groups()
        assert len(quoted) == len(expected), f"{claim.name}: {len(quoted)} numbers quoted, {len(expected)} computed"
        for text, value in zip(quoted, expected, strict=True):
            if claim.exact:
                assert text.replace(",", "").lstrip("+") == f"{float(value):.{_decimals(text)}f}", (
                    f"{claim.name}: the docs say {text}, the JSON gives {value}, which rounds to "
                    f"{float(value):.{_decimals(text)}f} (in: {m.group(0)!r})")
                continue
            tolerance = 10.0 ** -_decimals(text) + 1e-9
            assert abs(float(text.replace(",", "")) - float(value)) <= tolerance, (
                f"{claim.name}: the docs say {text}, the JSON gives {value} (in: {m.group(0)!r})")


# ------------------------------------------------------------------------------------------------
# marker blocks regenerated from their JSON by the scripts' own renderers


@pytest.fixture(scope="module")
def benchmarks_on_path():
    path = str(ROOT / "benchmarks")
    added = path not in sys.path
    if added:
        sys.path.insert(0, path)
    yield
    if added:
        sys.path.remove(path)


def _block(text: str, start: str, end: str) -> str:
    assert start in text and end in text, f"markers {start} ... {end} missing"
    return start + text.split(start, 1)[1].split(end, 1)[0] + end


def test_budget_table_is_what_budget_utkface_writes(tmp_path: Path, benchmarks_on_path) -> None:
    """docs/results.md's `budget:` block = `python benchmarks/budget_utkface.py --report-only` from the JSON."""
    import budget_utkface

    doc = result("budget_utkface.json")
    command = " ".join(a for a in doc["command"].split() if a != "--report-only")
    copy = tmp_path / "results.md"
    shutil.copy(DOCS / "results.md", copy)
    budget_utkface.write_docs(copy, doc["cells"], doc["runs"], command, doc["start_as_published"])
    begin, end = budget_utkface.BEGIN, budget_utkface.END
    assert _block((DOCS / "results.md").read_text(encoding="utf-8"), begin, end) == _block(
        copy.read_text(encoding="utf-8"), begin, end), (
        "docs/results.md's budget table differs from what budget_utkface.py writes from budget_utkface.json: "
        "run `python benchmarks/budget_utkface.py --report-only ...` instead of editing the block")


#: (script, JSON, page, keyword arguments of the script's `docs_block` beside the JSON); the block's first and last
#: lines are its markers
MARKER_BLOCKS = [
    ("verdict_calibration", "verdict_calibration.json", "bakeoff.md", {}),
    ("verdicts_utkface", "verdicts_utkface.json", "verdicts_utkface.md", {}),
    ("improve_utkface", "improve_utkface.json", "results.md", {}),
    ("prior_shift", "prior_shift.json", "results.md", {}),
    ("decisions_utkface", "decisions_utkface.json", "results.md", {}),
    ("photo_skew", "photo_skew.json", "predict.md", {"name": "photo-skew"}),
    ("photo_skew", "photo_skew_recipe.json", "predict.md", {"name": "photo-skew-recipe"}),
    ("frame_jitter", "frame_jitter.json", "predict.md", {}),
]


@pytest.mark.parametrize(("script", "json_name", "page", "kwargs"), MARKER_BLOCKS,
                         ids=[f"{script}-{json_name}" for script, json_name, _, _ in MARKER_BLOCKS])
def test_marker_block_is_what_its_script_writes(script: str, json_name: str, page: str, kwargs: dict[str, Any],
                                                benchmarks_on_path) -> None:
    import importlib

    module = importlib.import_module(script)
    block = module.docs_block(result(json_name), **kwargs)
    start, end = block.splitlines()[0], block.splitlines()[-1]
    assert re.fullmatch(r"<!-- [\w-]+:start -->", start) and end == start.replace(":start", ":end"), (start, end)
    text = (DOCS / page).read_text(encoding="utf-8")
    assert text.count(start) == 1 and text.count(end) == 1, f"docs/{page}: {start} ... {end} must appear once each"
    assert _block(text, start, end) == block, (
        f"docs/{page}'s {start} block differs from what benchmarks/{script}.py writes from {json_name}: "
        f"run its --report-only (or --docs-only) instead of editing the block")


def test_zoo_block_and_manifest_are_what_the_zoo_script_wrote(benchmarks_on_path) -> None:
    """docs/predict.md's `zoo:` block = `python benchmarks/zoo_utkface_small.py --report-only`, and the shipped
    manifest's numbers are the JSON's."""
    import zoo_utkface_small

    from ordinalage.zoo import zoo_model

    doc = result("zoo_utkface_small.json")
    block = zoo_utkface_small.docs_block(doc)
    assert block in (DOCS / "predict.md").read_text(encoding="utf-8"), (
        "docs/predict.md's zoo block differs from zoo_utkface_small.json: run "
        "`python benchmarks/zoo_utkface_small.py --report-only`")
    model = zoo_model(doc["package"]["model"])
    assert model.metrics == doc["package"]["metrics"] and model.files == doc["package"]["files"]


def test_zoo_speed_block_is_what_its_script_writes(benchmarks_on_path) -> None:
    import zoo_speed

    block = zoo_speed.docs_block(result("zoo_speed.json"))
    assert block in (DOCS / "performance.md").read_text(encoding="utf-8"), (
        "docs/performance.md's zoo-speed block differs from zoo_speed.json: run "
        "`python benchmarks/zoo_speed.py --report-only`")
