"""Improve the bake-off's best model on UTKFace, one measured change at a time.

    python benchmarks/improve_utkface.py                  # every factor, then the combination, 3 seeds
    python benchmarks/improve_utkface.py --report-only    # rewrite JSON + docs from the finished runs

Starts from the best setting of benchmarks/accuracy_utkface.py (configs/experiments/
utkface_bakeoff.yaml with the class head over single years, scratch CNN), on the same split,
and changes one factor at a time (input size, augmentation, sampling, learning rate, batch size,
label distribution, flip TTA, the tuner's choice). Each factor's winner is picked by *validation*
MAE (the test split is only reported); the winners are then combined and the combination is
trained with three seeds, beside three seeds of the unchanged starting point. Writes
benchmarks/results/improve_utkface.json and a generated section of docs/results.md.
Finished runs are reused, so an interrupted benchmark continues where it stopped.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import fit_or_reuse, mean_std  # noqa: E402

from ordinalage.config import load_config, parse_set, set_dotted  # noqa: E402
from ordinalage.runs.checkpoint import versions  # noqa: E402

BASE_CONFIG = "configs/experiments/utkface_bakeoff.yaml"
# the bake-off's best setting (docs/results.md): softmax over single years, expected value
START_SETTINGS: dict[str, str] = {"model.backbone": "scratch", "model.head": "class", "model.target": "age"}
STRONG_AUGMENT = {"data.augment.affine_p": "0.8", "data.augment.scale": "0.15", "data.augment.rotate": "15",
                  "data.augment.shift": "0.08", "data.augment.color_p": "0.8", "data.augment.gray_p": "0.1",
                  "data.augment.occlusion_p": "0.2"}


@dataclass(frozen=True)
class Option:
    """One value of a factor: a name, what it changes, and the config overrides."""

    name: str
    overrides: dict[str, str]
    what: str


# factor -> options; the first option of every factor is the starting point (no override)
FACTORS: dict[str, list[Option]] = {
    "input size": [Option("64px", {}, "64 px (start)"),
                   Option("96px", {"data.image_size": "96"}, "96 px input")],
    "augmentation": [Option("aug-default", {}, "flip, mild affine and colour (start)"),
                     Option("aug-off", {"data.augment.enabled": "false"}, "no augmentation"),
                     Option("aug-strong", STRONG_AUGMENT, "stronger affine and colour, 10% grey, 20% occlusion")],
    "sampling": [Option("sampling-none", {}, "natural age distribution (start)"),
                 Option("sampling-weighted", {"data.sampling": "weighted"}, "weighted sampler, balanced age groups")],
    "learning rate": [Option("lr-3e-3", {}, "AdamW 3e-3, cosine (start)"),
                      Option("lr-1e-3", {"train.lr": "0.001"}, "AdamW 1e-3"),
                      Option("lr-6e-3", {"train.lr": "0.006"}, "AdamW 6e-3")],
    "batch size": [Option("batch-64", {}, "batch 64 (start)"),
                   Option("batch-32", {"train.batch_size": "32"}, "batch 32 (twice the updates, same epochs)")],
    "label distribution": [Option("onehot", {}, "one-hot cross-entropy (start)"),
                           Option("dldl-sigma1", {"model.label_sigma": "1"}, "Gaussian label distribution, sigma 1 year"),
                           Option("dldl-sigma2", {"model.label_sigma": "2"}, "Gaussian label distribution, sigma 2 years (DLDL)"),
                           Option("dldl-sigma3", {"model.label_sigma": "3"}, "Gaussian label distribution, sigma 3 years")],
}
METRICS = ["mae", "rmse", "ca3", "ca5", "accuracy", "one_off", "adjacent_accuracy", "qwk"]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="../shared/data/UTKFace", help="UTKFace folder (relative to the repo root)")
    p.add_argument("--factors", default=",".join(FACTORS), help="comma-separated subset of the factors")
    p.add_argument("--tuned", default=str(ROOT / "studies/utkface_class/best_config.yaml"),
                   help="best_config.yaml of the tuner's study (configs/tune/utkface_class.yaml); "
                        "its tuned keys become one more factor when the file exists")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--no-combine", action="store_true", help="run the single-factor options only")
    p.add_argument("--device", default="auto")
    p.add_argument("--runs", default=str(ROOT / "benchmarks/runs/improve_utkface"))
    p.add_argument("--json", default=str(ROOT / "benchmarks/results/improve_utkface.json"))
    p.add_argument("--docs", default=str(ROOT / "docs/results.md"))
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra config override for every run (a larger budget on a GPU: --set train.epochs=30)")
    p.add_argument("--config-out", default=str(ROOT / "configs/experiments/utkface_improved.yaml"),
                   help="where to write the combined model's training config")
    p.add_argument("--report-only", action="store_true", help="train nothing; report the finished runs")
    return p.parse_args()


def tuned_option(path: Path) -> Option | None:
    """The tuner's best values (the keys its study searched) as one option, or None without a study."""
    summary = path.parent / "summary.json"
    if not (path.is_file() and summary.is_file()):
        return None
    best = json.loads(summary.read_text()).get("best") or {}
    over = {k: "null" if v is None else str(v).lower() if isinstance(v, bool) else str(v)
            for k, v in (best.get("params") or {}).items()}
    if not over:
        return None
    shown = ", ".join(f"{k.split('.')[-1]}={float(v):.3g}" if _is_float(v) else f"{k.split('.')[-1]}={v}"
                      for k, v in over.items())
    return Option(f"tuned-trial{best.get('number')}", over, f"the tuner's best trial, number {best.get('number')} ({shown})")


def tuner_record(path: Path) -> dict[str, Any] | None:
    """The study behind the tuned option: its command, trial states, best trial and every trial row."""
    import csv

    summary, trials = path.parent / "summary.json", path.parent / "trials.csv"
    if not (summary.is_file() and trials.is_file()):
        return None
    from ordinalage.tuning.spec import load_tune_spec

    doc = json.loads(summary.read_text())
    with trials.open(newline="") as f:
        rows = list(csv.DictReader(f))
    spec = ROOT / "configs" / "tune" / f"{doc['study_name']}.yaml"
    return {"command": f"ordinalage tune --config {_rel(spec)} --out {_rel(path.parent)}",
            "epochs_per_trial": load_tune_spec(spec).epochs if spec.is_file() else None,
            "n_trials": doc["n_trials"], "states": doc["states"], "best": doc["best"], "trials": rows}


def _is_float(v: str) -> bool:
    try:
        float(v)
    except ValueError:
        return False
    return True


def train_one(args: argparse.Namespace, name: str, overrides: dict[str, str], seed: int) -> dict[str, Any] | None:
    """Train + test one configuration, or reuse its finished run folder (None: not run, --report-only)."""
    run_dir = Path(args.runs) / f"{name}-seed{seed}"

    def make_config() -> Any:
        sets = [f"data.sources=[utkface:{args.data}]", f"train.seed={seed}", f"train.out_dir={run_dir}",
                f"train.device={args.device}", *args.set, *(f"{k}={v}" for k, v in {**START_SETTINGS, **overrides}.items())]
        return load_config(ROOT / BASE_CONFIG, sets=sets)

    summary = fit_or_reuse(run_dir, make_config, args.report_only,
                           f"{run_dir.name}: {overrides or 'the starting point'}")
    if summary is None:
        return None
    val = json.loads((run_dir / "val_best.json").read_text())
    reused = run_dir / "REUSED.txt"  # a copy of an identical earlier run, with where it came from
    return {"name": name, "seed": seed, "overrides": overrides, "run_dir": _rel(run_dir),
            "reused": reused.read_text().strip() if reused.is_file() else None,
            "wall_seconds": summary.get("wall_seconds"), "best_epoch": summary.get("best_epoch"),
            "device": summary.get("device"), "val": {k: val.get(k) for k in METRICS},
            "test": {k: summary["test"].get(k) for k in [*METRICS, "n", "baseline"]}}


def flip_tta(row: dict[str, Any]) -> dict[str, Any]:
    """Validation and test metrics of a finished run with flip test-time augmentation (cached)."""
    from ordinalage.evaluation.evaluate import evaluate_run

    run_dir = ROOT / row["run_dir"]  # relative to the repo, or absolute
    out: dict[str, Any] = {}
    for split in ("val", "test"):
        path = run_dir / f"eval-{split}-tta" / "metrics.json"
        metrics = json.loads(path.read_text()) if path.is_file() else evaluate_run(
            run_dir, split=split, tta=True, show=False)
        out[split] = {k: metrics.get(k) for k in METRICS}
    return out


def _rel(p: Path) -> str:
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)


def seeds_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and standard deviation over seeds of every test metric (and val MAE)."""
    out: dict[str, Any] = {"seeds": [r["seed"] for r in rows]}
    for k in METRICS:
        vals = [r["test"][k] for r in rows if r["test"].get(k) is not None]
        out[k] = {**mean_std(vals), "values": vals}
    out["val_mae"] = mean_std([r["val"]["mae"] for r in rows])
    out["minutes"] = statistics.fmean([(r["wall_seconds"] or 0) / 60 for r in rows])
    return out


def ablation_row(factor: str, opt: Option, row: dict[str, Any], start: dict[str, Any]) -> dict[str, Any]:
    """One row of the one-factor-at-a-time table: the run, and its MAE changes against the start."""
    return {"factor": factor, "option": opt.name, "what": opt.what, **row,
            "delta_val_mae": row["val"]["mae"] - start["val"]["mae"],
            "delta_test_mae": row["test"]["mae"] - start["test"]["mae"]}


def combined_name(overrides: dict[str, str]) -> str:
    """Run-folder stem of a combination, distinct for every set of overrides (so reruns reuse only
    the runs of the same combination)."""
    digest = hashlib.sha1(json.dumps(overrides, sort_keys=True).encode()).hexdigest()[:8]
    return f"combined-{digest}"


def write_config(path: Path, overrides: dict[str, str]) -> None:
    """The combined model as a training YAML over the bake-off's (values typed as YAML reads them)."""
    import yaml

    nested: dict[str, Any] = {}
    for key, value in {**START_SETTINGS, **overrides}.items():  # typed exactly as `--set key=value` reads them
        nested = set_dotted(nested, *parse_set(f"{key}={value}"))
    base = os.path.relpath(ROOT / BASE_CONFIG, path.parent)
    header = ("# Written by benchmarks/improve_utkface.py: the UTKFace bake-off's best setting plus every change\n"
              "# that won on validation MAE (docs/results.md, \"Improving the best model\"). Retrain it with\n"
              f"#   ordinalage train --config {_rel(path)}\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + yaml.safe_dump({"base": base, **nested}, sort_keys=False))


def main() -> int:
    args = parse_args()
    if not Path(args.data).is_dir():
        print(f"UTKFace folder not found: {args.data}", file=sys.stderr)
        return 2
    factors = {f: FACTORS[f] for f in args.factors.split(",") if f}
    tuned = tuned_option(Path(args.tuned))
    if tuned is not None:
        factors["tuner"] = [Option("untuned", {}, "the bake-off's values (start)"), tuned]
    start_row = train_one(args, "start", {}, 0)
    if start_row is None:
        print("the starting point has not been trained yet; run without --report-only", file=sys.stderr)
        return 2
    ablations: list[dict[str, Any]] = []
    winners: dict[str, Option] = {}
    for factor, options in factors.items():
        best_opt, best_val = options[0], start_row["val"]["mae"]
        for opt in options[1:]:
            row = train_one(args, opt.name, opt.overrides, 0)
            if row is None:
                continue
            ablations.append(ablation_row(factor, opt, row, start_row))
            if row["val"]["mae"] < best_val:
                best_opt, best_val = opt, row["val"]["mae"]
        winners[factor] = best_opt
    tta = flip_tta(start_row)  # an evaluation-only factor: no retraining
    use_tta = tta["val"]["mae"] < start_row["val"]["mae"]
    ablations.append(ablation_row("test-time flip", Option("flip-tta", {}, "evaluate with flip TTA (no retraining)"),
                                  {**start_row, "val": tta["val"], "test": {**start_row["test"], **tta["test"]},
                                   "wall_seconds": None}, start_row))
    combined: dict[str, str] = {}
    for opt in winners.values():
        combined.update(opt.overrides)
    result: dict[str, Any] = {
        "benchmark": "improve_utkface", "command": "python benchmarks/improve_utkface.py",
        "start": {"config": BASE_CONFIG, "overrides": START_SETTINGS, **start_row},
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count()},
        "versions": versions(), "ablations": ablations,
        "winners": {**{f: {"option": o.name, "overrides": o.overrides} for f, o in winners.items()},
                    "test-time flip": {"option": "flip-tta" if use_tta else "no-tta", "overrides": {}}},
        "tta": use_tta,
        "tuner": tuner_record(Path(args.tuned)) if tuned is not None else None,
        "combined_overrides": combined, "config": _rel(Path(args.config_out)),
        "retrain": f"ordinalage train --config {_rel(Path(args.config_out))} --set train.out_dir=runs/utkface-best"}
    write_config(Path(args.config_out), combined)
    final_key, final_rows = "start", []  # the model the benchmark ends with, and its seed runs
    if not args.no_combine:
        start_seeds = [r for s in range(args.seeds) if (r := train_one(args, "start", {}, s))]
        seeds: dict[str, Any] = {"start": seeds_summary(start_seeds)} if start_seeds else {}
        result["runs_start"] = final_rows = start_seeds
        if combined:  # else no change beat the start on validation
            name = combined_name(combined)
            comb_seeds = [r for s in range(args.seeds) if (r := train_one(args, name, combined, s))]
            if comb_seeds:
                seeds["combined"] = seeds_summary(comb_seeds)
                result["runs_combined"] = final_rows = comb_seeds
                final_key = "combined"
        single = min((a for a in ablations if a["factor"] not in ("tuner", "test-time flip")),
                     key=lambda a: a["val"]["mae"], default=None)
        if single and single["val"]["mae"] < start_row["val"]["mae"] and single["overrides"] != combined:
            # does one knob alone carry the gain? the best single-factor change, over the same seeds
            rows = [r for s in range(args.seeds) if (r := train_one(args, single["option"], single["overrides"], s))]
            if rows:
                seeds["best single change"] = {**seeds_summary(rows), "overrides": single["overrides"]}
        if use_tta and final_rows:
            seeds[f"{final_key} + flip TTA"] = seeds_summary([{**r, "test": flip_tta(r)["test"]} for r in final_rows])
        result["seeds"] = seeds
    if final_rows:  # the confusion matrix of the final model's seed-0 run, as evaluated in the table
        run_dir = ROOT / final_rows[0]["run_dir"]
        png = run_dir / ("eval-test-tta" if use_tta else "eval-test") / "confusion_norm.png"
        if png.is_file():
            dest = Path(args.docs).parent / "img" / "utkface_improved_confusion.png"
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(png, dest)
            result["confusion_png"] = _rel(dest)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2, default=str))
    write_docs(Path(args.docs), result)
    print(json.dumps({"combined": combined, "seeds": {k: v["mae"]["mean"] for k, v in result.get("seeds", {}).items()}}),
          file=sys.stderr)
    return 0


START, END = "<!-- improve:start -->", "<!-- improve:end -->"


def docs_block(result: dict[str, Any]) -> str:
    """docs/results.md's improve block (markers included) from improve_utkface.json's contents."""
    s = result["start"]
    lines = [START, "## Improving the best model within the CPU budget", "",
             "Start: the bake-off's best setting (scratch CNN, class head over single years, 8 epochs at 64 px), "
             "on the same split. One factor changes at a time against that start (seed 0); a factor's winner is "
             "the option with the lowest **validation** MAE (the test column is reported, never used to choose). "
             "The winners are then combined (where two winners set the same key, the later factor's value is kept; "
             "the tuner comes last) and trained with three seeds beside three seeds of the start. Flip TTA is an "
             "evaluation-only factor, measured on the start's checkpoint.", "",
             "Reproduce: " + (f"`{result['tuner']['command']}` (the tuner's study, {result['tuner']['n_trials']} "
                              "trials), then " if result.get("tuner") else "") + "`" + result["command"] + "`", "",
             "| factor | change | val MAE | Δ val | test MAE | Δ test | CA(5) | minutes |", "|---|---|---|---|---|---|---|---|",
             f"| - | start: {', '.join(f'{k}={v}' for k, v in START_SETTINGS.items())} | {s['val']['mae']:.2f} | - | "
             f"{s['test']['mae']:.2f} | - | {s['test']['ca5']:.3f} | {(s['wall_seconds'] or 0) / 60:.1f} |"]
    for a in result["ablations"]:
        win = " (chosen)" if result["winners"][a["factor"]]["option"] == a["option"] else ""
        minutes = "-" if a["wall_seconds"] is None else f"{a['wall_seconds'] / 60:.1f}"
        what = re.sub(r"#(\d+)", r"number \1", a["what"])  # older JSONs wrote '#N', which reads as an issue
        lines.append(f"| {a['factor']} | {what}{win} | {a['val']['mae']:.2f} | {a['delta_val_mae']:+.2f} | "
                     f"{a['test']['mae']:.2f} | {a['delta_test_mae']:+.2f} | {a['test']['ca5']:.3f} | {minutes} |")
    lines.append("")
    seeds = result.get("seeds")
    if seeds:
        lines += ["### The combination against the start, three seeds each (test, mean ± std)", "",
                  "| model | test MAE | RMSE | CA(3) | CA(5) | group accuracy | one-off | val MAE | minutes per run |",
                  "|---|---|---|---|---|---|---|---|---|"]
        labels = {"start": "start (bake-off best)", "combined": "combined winners",
                  "combined + flip TTA": "combined winners, evaluated with flip TTA",
                  "start + flip TTA": "start, evaluated with flip TTA"}
        for key, g in seeds.items():
            label = labels.get(key, key)
            if key == "best single change":
                label += " (" + ", ".join(f"`{k}={v}`" for k, v in g["overrides"].items()) + ")"
            lines.append(f"| {label} | **{g['mae']['mean']:.2f} ± {g['mae']['std']:.2f}** | "
                         f"{g['rmse']['mean']:.2f} ± {g['rmse']['std']:.2f} | {g['ca3']['mean']:.3f} | "
                         f"{g['ca5']['mean']:.3f} | {g['accuracy']['mean']:.3f} | {g['one_off']['mean']:.3f} | "
                         f"{g['val_mae']['mean']:.2f} | {g['minutes']:.1f} |")
        if result.get("confusion_png"):
            lines += ["", "![confusion matrix of the final model (seed 0)](img/utkface_improved_confusion.png)"]
        lines.append("")
    lines += ["Retrain the combined model" + (" (and evaluate it with flip TTA)" if result.get("tta") else "") + ":", "",
              "```", result["retrain"],
              *(["ordinalage evaluate runs/utkface-best --tta"] if result.get("tta") else []), "```", "", END]
    return "\n".join(lines)


def write_docs(path: Path, result: dict[str, Any]) -> None:
    """Replace the section between the improve markers of docs/results.md (or append it)."""
    text = path.read_text() if path.exists() else ""
    if START in text and END in text:
        head, rest = text.split(START, 1)
        text = head + docs_block(result) + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + docs_block(result) + "\n"
    path.write_text(text)


if __name__ == "__main__":
    raise SystemExit(main())
