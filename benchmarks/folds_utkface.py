"""The spread a single split hides: the random protocol (a few split seeds) vs 5-fold cross-validation
of one recipe on UTKFace, mean +- std of the test MAE and accuracy for each.

    python benchmarks/folds_utkface.py                      # the improved recipe, 3 random splits vs 5 folds
    python benchmarks/folds_utkface.py --smoke --json OUT   # tiny settings on synthetic faces (seconds)

Each run is a normal `ordinalage train` run folder under --runs; finished runs are reused, so an
interrupted benchmark continues where it stopped. Writes benchmarks/results/folds_utkface.json.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import UTKFACE, mean_std, parser, write_result  # noqa: E402

from ordinalage.config import Config, load_config, replace  # noqa: E402
from ordinalage.training.folds import run_folds  # noqa: E402

CONFIG = "configs/experiments/utkface_improved.yaml"
SMOKE = ["data.synth_n=96", "data.synth_size=32", "data.image_size=16", "model.width=4", "train.epochs=1",
         "data.num_workers=0", "train.batch_size=16", "train.device=cpu", "data.augment.enabled=false"]
METRICS = ("mae", "accuracy")


def _test_metrics(run_dir: Path) -> dict[str, Any]:
    """The test metrics of a finished run: its summary's `test` block, else evaluated now (and kept)."""
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    if "test" in summary:
        return summary["test"]
    from ordinalage.evaluation.evaluate import evaluate_after_training

    return evaluate_after_training(run_dir, show=False, force=True) or {}


def _fit(config: Config) -> Path:
    from ordinalage.training.train import train as fit

    return fit(config, quiet=True)


def random_protocol(config: Config, seeds: list[int], runs: Path) -> dict[str, Any]:
    """One run per split seed (the subject-free random protocol), each tested on its own test split."""
    rows = []
    for seed in seeds:
        cfg = replace(config, data=replace(config.data, protocol="random", split_seed=seed),
                      train=replace(config.train, out_dir=str(runs / f"random-seed{seed}")))
        result = run_folds(cfg, _fit, evaluate_fn=_test_metrics, n_folds=1, quiet=True)
        rows.append({"split_seed": seed, **{k: result["folds"][0][k] for k in METRICS if k in result["folds"][0]}})
    return {"runs": rows, **{k: mean_std([r[k] for r in rows]) for k in METRICS if all(k in r for r in rows)}}


def kfold_protocol(config: Config, k: int, runs: Path) -> dict[str, Any]:
    cfg = replace(config, data=replace(config.data, protocol=f"folds:{k}"),
                  train=replace(config.train, out_dir=str(runs / f"folds{k}")))
    result = run_folds(cfg, _fit, evaluate_fn=_test_metrics, quiet=True)
    rows = [{"fold": r["fold"], **{m: r[m] for m in METRICS if m in r}} for r in result["folds"]]
    return {"runs": rows, **{m: mean_std([r[m] for r in rows]) for m in METRICS if all(m in r for r in rows)}}


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--config", default=CONFIG, help=f"recipe to measure (default {CONFIG})")
    p.add_argument("--data", default=f"utkface:{UTKFACE}", help="data spec (default the shared UTKFace folder)")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--random-seeds", type=int, default=3, help="split seeds of the random protocol")
    p.add_argument("--runs", default="runs/folds_utkface", help="folder for the run folders")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra config override")
    p.add_argument("--smoke", action="store_true", help="tiny settings on synthetic faces, 2 folds, 2 seeds")
    args = p.parse_args(argv)
    sets = list(args.set)
    data, folds, seeds = args.data, args.folds, list(range(args.random_seeds))
    if args.smoke:
        sets = [*SMOKE, *sets]
        data, folds, seeds = "synth", 2, [0, 1]
    config = load_config(ROOT / args.config, {"data.sources": [data]}, sets)
    runs = Path(args.runs)
    start = time.perf_counter()
    random_result = random_protocol(config, seeds, runs)
    kfold_result = kfold_protocol(config, folds, runs)
    result = {
        "settings": {"config": args.config, "data": data, "folds": folds, "random_seeds": seeds, "sets": sets,
                     "smoke": args.smoke, "val_fraction": config.data.val_fraction,
                     "test_fraction": config.data.test_fraction},
        "random": random_result,
        f"folds{folds}": kfold_result,
        "wall_seconds": round(time.perf_counter() - start, 1),
    }
    for name, block in (("random", random_result), (f"{folds}-fold", kfold_result)):
        if "mae" in block:
            print(f"{name}: test MAE {block['mae']['mean']:.3f} +- {block['mae']['std']:.3f} "
                  f"over {len(block['runs'])} runs", file=sys.stderr)
    write_result("folds_utkface", result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
