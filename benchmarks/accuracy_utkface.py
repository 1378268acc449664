"""The head bake-off on real faces: every head on every backbone, one split, one budget.

    python benchmarks/accuracy_utkface.py                      # the CPU budget (see docs/results.md)
    python benchmarks/accuracy_utkface.py --epochs 30 --image-size 128 --backbones scratch,resnet18,resnet50
    python benchmarks/accuracy_utkface.py --budget 10m --backbones scratch  # equal time, not equal epochs

With `--budget`, every run gets the same wall time (`train.time_budget_min`: each measures its own
step time and trains the epochs that fit), so heads and backbones are compared at equal cost; the
JSON then defaults to benchmarks/results/accuracy_utkface_equal_time.json and docs/results.md is
left alone unless `--docs` is given.

Trains and evaluates on `utkface:../shared/data/UTKFace` with the fixed split of
configs/experiments/utkface_bakeoff.yaml, then repeats the two settings with the best
*validation* MAE with two more seeds. Each finished run is kept, so an interrupted benchmark
continues where it stopped. Writes benchmarks/results/accuracy_utkface.json and docs/results.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import fit_or_reuse, mean_std  # noqa: E402

from ordinalage.config import load_config  # noqa: E402
from ordinalage.runs.checkpoint import versions  # noqa: E402

# name -> config overrides; "years" targets rank/classify single years, "decades" the age groups
SETTINGS: dict[str, dict[str, Any]] = {
    "class-decades": {"model.head": "class", "model.target": "group"},
    "class-years": {"model.head": "class", "model.target": "age"},
    "coral-years": {"model.head": "coral", "model.target": "age"},
    "corn-years": {"model.head": "corn", "model.target": "age"},
    "regression-l1": {"model.head": "regression", "model.target": "age", "model.regression_loss": "l1"},
}
METRICS = ["mae", "rmse", "ca3", "ca5", "accuracy", "one_off", "adjacent_accuracy", "macro_f1", "qwk"]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "configs/experiments/utkface_bakeoff.yaml"))
    p.add_argument("--data", default="../shared/data/UTKFace", help="UTKFace folder (relative to the repo root)")
    p.add_argument("--backbones", default="scratch,resnet18")
    p.add_argument("--settings", default=",".join(SETTINGS))
    p.add_argument("--epochs", type=int, default=None, help="override train.epochs (same for every run)")
    p.add_argument("--budget", default=None, metavar="TIME",
                   help="equal-time mode: every run gets this wall time (e.g. 10m), train.time_budget_min")
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--seeds", type=int, default=3, help="seeds for the two best settings (1 = no repeats)")
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--runs", default=str(ROOT / "benchmarks/runs/accuracy_utkface"), help="run folders")
    p.add_argument("--json", default=None, help="default benchmarks/results/accuracy_utkface[_equal_time].json")
    p.add_argument("--docs", default=None, help="default docs/results.md (equal-time mode: none unless given)")
    p.add_argument("--set", action="append", default=[], help="extra config override for every run")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: write the JSON and docs from the runs that have finished so far")
    args = p.parse_args()
    if args.budget:
        from ordinalage.training.budget import parse_budget

        args.budget_min = parse_budget(args.budget)
        if args.epochs:
            p.error("--budget sets each run's epochs; leave out --epochs")
    suffix = "_equal_time" if args.budget else ""
    args.json = args.json or str(ROOT / f"benchmarks/results/accuracy_utkface{suffix}.json")
    args.docs = args.docs or (None if args.budget else str(ROOT / "docs/results.md"))
    return args


def run_one(args: argparse.Namespace, name: str, backbone: str, seed: int) -> dict[str, Any] | None:
    """Train + evaluate one setting (or reuse a finished run folder; None: not run, --report-only)."""
    tag = f"-{args.budget}" if args.budget else ""
    run_dir = Path(args.runs) / f"{backbone}-{name}{tag}-seed{seed}"

    def make_config() -> Any:
        sets = [f"data.sources=[utkface:{args.data}]", f"model.backbone={backbone}", f"train.seed={seed}",
                f"train.out_dir={run_dir}", f"train.device={args.device}", *args.set]
        sets += [f"{k}={v}" for k, v in SETTINGS[name].items()]
        if args.epochs:
            sets.append(f"train.epochs={args.epochs}")
        if args.budget:
            sets.append(f"train.time_budget_min={args.budget_min}")
        if args.image_size:
            sets.append(f"data.image_size={args.image_size}")
        if args.workers is not None:
            sets.append(f"data.num_workers={args.workers}")
        return load_config(args.config, sets=sets)

    summary = fit_or_reuse(run_dir, make_config, args.report_only, run_dir.name)
    return None if summary is None else _record(run_dir, name, backbone, seed, summary, summary.get("wall_seconds"))


def _record(run_dir: Path, name: str, backbone: str, seed: int, summary: dict, wall: float | None) -> dict[str, Any]:
    from ordinalage.config import read_yaml

    val = json.loads((run_dir / "val_best.json").read_text())
    test = summary["test"]
    return {"setting": name, "backbone": backbone, "seed": seed, "run_dir": str(run_dir.relative_to(ROOT))
            if run_dir.is_relative_to(ROOT) else str(run_dir), "wall_seconds": wall,
            "best_epoch": summary.get("best_epoch"), "epochs": summary.get("epochs_done"),
            "budget": summary.get("budget"), "device": summary.get("device"), "val": {k: val.get(k) for k in METRICS},
            "test": {k: v for k, v in test.items() if k not in ("confusion_png",)},
            "config": read_yaml(run_dir / "config.yaml")}


def aggregate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k in METRICS:
        vals = [r["test"][k] for r in rows if r["test"].get(k) is not None]
        if vals:
            out[k] = {**mean_std(vals), "values": vals}
    return out


def fmt(v: Any, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def write_docs(path: Path, result: dict[str, Any], args: argparse.Namespace) -> None:
    rows = result["runs"]
    main_rows = [r for r in rows if r["seed"] == 0]
    base = main_rows[0]["test"]["baseline"]
    lines = ["# Results", "", "## The head bake-off on UTKFace (real faces)", "",
             f"Data: `utkface:{args.data}` ({result['n_test']} test images), one fixed duplicate-aware 70/10/20 split "
             "(`split_seed: 0`), every age kept (groups `0-10,...,61-70,71+`). Every run: the same input size, "
             "epochs, augmentation and optimiser (configs/experiments/utkface_bakeoff.yaml); only the head, "
             "target and backbone change. Budget: " + result["budget"] + ".", "",
             *([] if result["complete"] else [f"**Partial:** {len(rows)} of the {result['planned_runs']} planned runs "
                                              "have finished; rerunning the command continues the rest.", ""]),
             "Reproduce: `" + result["command"] + "`", "",
             "| backbone | head | target | test MAE | RMSE | CA(3) | CA(5) | accuracy | one-off | adjacent acc. | QWK | val MAE | minutes |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(main_rows, key=lambda r: r["test"]["mae"]):
        c = r["config"]["model"]
        t = r["test"]
        lines.append(f"| {r['backbone']} | {c['head']} | {c['target']} | **{fmt(t['mae'], 2)}** | {fmt(t['rmse'], 2)} | "
                     f"{fmt(t['ca3'])} | {fmt(t['ca5'])} | {fmt(t['accuracy'])} | {fmt(t['one_off'])} | "
                     f"{fmt(t['adjacent_accuracy'])} | {fmt(t['qwk'])} | {fmt(r['val']['mae'], 2)} | "
                     f"{fmt((r['wall_seconds'] or 0) / 60, 1)} |")
    lines.append(f"| baseline | majority group / median age of train | - | {fmt(base['mae'], 2)} | {fmt(base['rmse'], 2)} | "
                 f"{fmt(base['ca3'])} | {fmt(base['ca5'])} | {fmt(base['accuracy'])} | {fmt(base['one_off'])} | "
                 f"{fmt(base['adjacent_accuracy'])} | {fmt(base['qwk'])} | - | - |")
    if result.get("seeds"):
        lines += ["", f"### The two best settings by validation MAE, {args.seeds} seeds (mean ± std on test)", "",
                  "| setting | test MAE | CA(5) | accuracy | one-off |", "|---|---|---|---|---|"]
        for key, agg in result["seeds"].items():
            lines.append(f"| {key} | {agg['mae']['mean']:.2f} ± {agg['mae']['std']:.2f} | "
                         f"{agg['ca5']['mean']:.3f} ± {agg['ca5']['std']:.3f} | "
                         f"{agg['accuracy']['mean']:.3f} ± {agg['accuracy']['std']:.3f} | "
                         f"{agg['one_off']['mean']:.3f} ± {agg['one_off']['std']:.3f} |")
    best = result["best_run"]
    lines += ["", f"Best run by validation MAE: `{best['run_dir']}` (test MAE {best['test']['mae']:.2f} against the "
              f"baseline's {base['mae']:.2f}). Retrain it with:", "", "```", best["retrain"], "```", "",
              "![confusion matrix of the best run](img/utkface_best_confusion.png)", ""]
    text = path.read_text() if path.exists() else ""
    marker = "<!-- bakeoff:end -->"
    tail = text.split(marker, 1)[1] if marker in text else ""
    path.write_text("\n".join(lines) + "\n" + marker + tail)


def main() -> int:
    args = parse_args()
    if not Path(args.data).is_dir():
        print(f"UTKFace folder not found: {args.data}", file=sys.stderr)
        return 2
    backbones = [b for b in args.backbones.split(",") if b]
    settings = [s for s in args.settings.split(",") if s]
    rows: list[dict[str, Any]] = []
    for backbone in backbones:
        for name in settings:
            row = run_one(args, name, backbone, 0)
            if row is not None:
                rows.append(row)
    if not rows:
        print("no finished run to report", file=sys.stderr)
        return 2
    ranked = sorted(rows, key=lambda r: r["val"]["mae"])
    seeds: dict[str, Any] = {}
    for r in ranked[:2] if args.seeds > 1 else []:
        reps = [r] + [x for s in range(1, args.seeds) if (x := run_one(args, r["setting"], r["backbone"], s))]
        rows.extend(reps[1:])
        if len(reps) > 1:
            seeds[f"{r['backbone']} {r['setting']}"] = aggregate(reps)
    planned = len(backbones) * len(settings) + (2 * (args.seeds - 1) if args.seeds > 1 else 0)
    complete = len(rows) == planned
    best = ranked[0]
    cmd = "python benchmarks/accuracy_utkface.py" + (f" --epochs {args.epochs}" if args.epochs else "") + (
        f" --budget {args.budget}" if args.budget else "") + (
        f" --image-size {args.image_size}" if args.image_size else "")
    best["retrain"] = (f"ordinalage train --config configs/experiments/utkface_bakeoff.yaml --backbone {best['backbone']} "
                       + " ".join(f"--set {k}={v}" for k, v in SETTINGS[best["setting"]].items()))
    cfg0 = rows[0]["config"]
    result = {"benchmark": "accuracy_utkface", "command": cmd,
              "budget": (f"{args.budget} of wall time per run (train.time_budget_min; epochs per run in 'runs') at "
                         if args.budget else f"{cfg0['train']['epochs']} epochs at ") + f"{cfg0['data']['image_size']} px, batch "
                        f"{cfg0['train']['batch_size']}, on {rows[0]['device']} "
                        f"({os.cpu_count()} CPU cores, {platform.machine()})",
              "n_test": rows[0]["test"]["n"], "complete": complete, "planned_runs": planned, "machine": {"platform": platform.platform(), "python": platform.python_version()},
              "versions": versions(), "runs": rows, "seeds": seeds, "best_run": best}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2, default=str))
    png = ROOT / best["run_dir"] / "eval-test" / "confusion_norm.png"
    if args.docs is None:
        print(json.dumps({"best": best["run_dir"], "test_mae": best["test"]["mae"], "json": args.json}), file=sys.stderr)
        return 0
    if png.is_file():
        (Path(args.docs).parent / "img").mkdir(parents=True, exist_ok=True)
        shutil.copy(png, Path(args.docs).parent / "img" / "utkface_best_confusion.png")
    write_docs(Path(args.docs), result, args)
    print(json.dumps({"best": best["run_dir"], "test_mae": best["test"]["mae"]}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
