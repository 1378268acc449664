"""Training with more framing jitter: does it close the gap between faces in photos and the same faces as chips?

    python benchmarks/frame_jitter.py --seeds 0,1            # trains what is missing, then writes the JSON
    python benchmarks/frame_jitter.py --seeds 0,1 --report-only

Two single models of the 30-minute recipe's member config (`configs/experiments/utkface_30min.yaml`,
`train.members=1`, no test-time flip) trained for the same number of epochs (`--epochs`, default 24,
about what one recipe member gets), differing only in how often the random affine (shift, zoom,
turn: the detector's box jitter) is applied to a training image: `--base-p` (0.2, the recipe's value
when this was measured; the recipe has 0.8 since) against `--jitter-p` (0.8). Each is then put
through `benchmarks/photo_skew.py` on its **validation** faces (`--split val --n 1000`, Haar and
dlib, 5 views, photos `plain`, `small`, `rot15`), so that the choice is made on validation only. Per
seed the two models share seed, split and epochs; the JSON holds each model's validation MAE on
chips, its photo rows and, per detector and photo kind, the gap (photo MAE - chip MAE) of each model
and their difference.
Run folders: benchmarks/runs/frame_{base,jitter}_s{seed}/ (reused when finished). Written to the default
JSON, the results also rewrite docs/predict.md's table between its `frame-jitter` markers (`docs_block`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import fit_or_reuse, mean_std, parser, replace_block, write_result  # noqa: E402

from ordinalage.config import load_config, parse_set  # noqa: E402

RECIPE = ROOT / "configs" / "experiments" / "utkface_30min.yaml"
RUNS = ROOT / "benchmarks" / "runs"
PHOTO_ARGS = ["--split", "val", "--detectors", "haar,dlib", "--modes", "jitter",
              "--variants", "plain,small,rot15", "--latency-n", "0"]


DOCS = ROOT / "docs" / "predict.md"
START, END = "<!-- frame-jitter:start -->", "<!-- frame-jitter:end -->"
DETECTOR_TITLES = {"haar": "Haar", "dlib": "dlib"}


def docs_block(result: dict[str, Any]) -> str:
    """docs/predict.md's table from frame_jitter.json: per `affine_p`, the validation MAE of each seed, the range of
    the mean |photo - chip| age over photo kinds and seeds, and each seed's gaps (photo kinds in order; seeds split by ;)."""
    runs = result["runs"]
    seeds = result["settings"]["seeds"]
    detectors = list(dict.fromkeys(r["detector"] for r in runs[0]["rows"]))
    variants = list(dict.fromkeys(r["variant"] for r in runs[0]["rows"]))
    titles = [DETECTOR_TITLES.get(d, d) for d in detectors]
    lines = [START, f"| `affine_p` | val MAE ({len(seeds)} seeds) | mean \\|photo - chip\\| age, {titles[0]} | "
             + " | ".join(f"the same, {t}" for t in titles[1:]) + " | "
             + " | ".join(f"gap {t} {' / '.join(variants)}" for t in titles) + " |",
             "| " + " | ".join(["---"] * (2 + 2 * len(detectors))) + " |"]
    for kind, affine_p in result["settings"]["affine_p"].items():
        mine = [next(r for r in runs if r["kind"] == kind and r["seed"] == s) for s in seeds]
        cells = [f"{affine_p:g}",
                 ", ".join(f"{r['val_mae']:.2f}" for r in mine)]
        for det in detectors:
            spread = [x["mean_abs_photo_minus_chip"] for r in mine for x in r["rows"] if x["detector"] == det]
            cells.append(f"{min(spread):.1f}-{max(spread):.1f}")
        for det in detectors:
            gaps = [{x["variant"]: x["gap"] for x in r["rows"] if x["detector"] == det} for r in mine]
            cells.append("; ".join(" ".join(f"{g[v]:+.2f}" for v in variants) for g in gaps))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join([*lines, "", END])


def train_and_measure(kind: str, affine_p: float, seed: int, args: Any) -> dict[str, Any] | None:
    """Train (or reuse) one model and its validation photo benchmark; None when `--report-only` and missing."""
    import photo_skew

    out = args.runs / f"frame_{kind}_s{seed}"
    overrides = {"train.members": 1, "train.time_budget_min": None, "train.epochs": args.epochs,
                 "train.seed": seed, "train.eval_tta": False, "data.augment.affine_p": affine_p,
                 "train.out_dir": str(out), **dict(parse_set(s) for s in args.set)}
    summary = fit_or_reuse(out, lambda: load_config(args.config, overrides), args.report_only, f"{kind} seed {seed}")
    photos = out / "photo_skew_val.json"
    if summary is None or (not photos.is_file() and args.report_only):
        return None
    if not photos.is_file():
        photo_skew.main(["--run", str(out), "--n", str(args.n), "--json", str(photos), *PHOTO_ARGS])
    doc = json.loads(photos.read_text())
    return {"kind": kind, "seed": seed, "affine_p": affine_p, "epochs": summary.get("epochs_done"),
            "val_mae": summary.get("best_value"), "chip_mae_val_faces": doc["chip_mae"],
            "run_dir": str(out.relative_to(ROOT)) if out.is_relative_to(ROOT) else str(out),
            "rows": [{k: r.get(k) for k in ("detector", "variant", "found_rate", "mae_photo", "mae_chip", "gap", "gap_se",
                                        "mean_abs_photo_minus_chip")} for r in doc["rows"]]}


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--epochs", type=int, default=24)
    p.add_argument("--base-p", type=float, default=0.2, dest="base_p")
    p.add_argument("--jitter-p", type=float, default=0.8, dest="jitter_p")
    p.add_argument("--n", type=int, default=1000, help="validation faces pasted into photos")
    p.add_argument("--config", type=Path, default=RECIPE)
    p.add_argument("--set", action="append", default=[], help="KEY=VALUE for both models (tests: tiny data)")
    p.add_argument("--runs", type=Path, default=RUNS)
    p.add_argument("--report-only", action="store_true")
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    runs = [r for s in seeds for kind, ap in (("base", args.base_p), ("jitter", args.jitter_p))
            if (r := train_and_measure(kind, ap, s, args)) is not None]
    by = {(r["kind"], r["seed"]): r for r in runs}
    paired = [s for s in seeds if ("base", s) in by and ("jitter", s) in by]
    cells = []
    for row in runs[0]["rows"] if runs else []:
        key = (row["detector"], row["variant"])

        def gaps(kind: str, key: tuple = key) -> list[float]:
            return [next(x["gap"] for x in by[(kind, s)]["rows"] if (x["detector"], x["variant"]) == key) for s in paired]

        if paired:
            base, jit = gaps("base"), gaps("jitter")
            diffs = [j - b for j, b in zip(jit, base, strict=True) if j is not None and b is not None]
            cells.append({"detector": key[0], "variant": key[1], "seeds": paired, "gap_base": base, "gap_jitter": jit,
                          "gap_difference": mean_std(diffs) if diffs else None})
    val = {kind: mean_std([by[(kind, s)]["val_mae"] for s in paired]) for kind in ("base", "jitter")} if paired else {}
    settings = {"config": str(args.config), "epochs": args.epochs, "seeds": seeds,
                "affine_p": {"base": args.base_p, "jitter": args.jitter_p}, "n": args.n, "photo_skew": PHOTO_ARGS,
                "set": args.set}
    path = write_result("frame_jitter", {"settings": settings, "val_mae": val, "cells": cells, "runs": runs}, args.json)
    if not args.json and paired:
        replace_block(DOCS, docs_block(json.loads(path.read_text(encoding="utf-8"))))
    for c in cells:
        print(f"{c['detector']:5s} {c['variant']:6s} gap {c['gap_base']} -> {c['gap_jitter']}", file=sys.stderr)
    if val:
        print(f"val MAE: affine_p {args.base_p} {val['base']['mean']:.3f}, {args.jitter_p} {val['jitter']['mean']:.3f}",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
