"""Faces in photos vs the same faces as chips: detection, framing and the age error it adds.

Faces of a run's test split (UTKFace, split_seed 0: the split the run's split.csv records) are pasted,
one per photo, at a random size and place into a plain 480 x 360 photo (a flat, seeded colour),
built in memory (no image is written). Variants: `plain` (sides 140-220 px), `small` (70-110 px),
`rot15` (140-220 px, turned 15 degrees left or right) and `dark` (140-220 px, the whole photo at 40%
brightness). For each detector and crop mode it reports the share of faces found, false faces per
100 photos, the MAE of the photo predictions and of the chip predictions (`detect=False`, the
training decode) on the same faces, their gap, the mean |photo - chip| age difference, the framing
error of the crop against the true chip square, and milliseconds per photo (detection + crops +
model, one photo at a time as `serve` sees them).

    python benchmarks/photo_skew.py [--run RUN] [--n 300] [--seed 0] [--split test]
        [--detectors haar-today,haar,dlib] [--modes box,turned,exposed,jitter] [--json benchmarks/results/photo_skew.json]
    python benchmarks/photo_skew.py --model utkface-small --run benchmarks/runs/zoo_utkface_small/student-96px \
        --detectors haar,dlib --modes jitter --json benchmarks/results/photo_skew_zoo.json   # the shipped model
    python benchmarks/photo_skew.py --docs-only   # rewrite docs/predict.md's tables from the published JSON

RUN is a run folder or an ensemble's (`train --members N`: its members averaged, the faces of its
first member's split). RUN defaults to the first finished cell of benchmarks/runs/bakeoff_heads_utkface/ (its cell.json says
done), else benchmarks/runs/photo_model (train it with `ordinalage train --config
configs/experiments/utkface_bakeoff.yaml --epochs 6 --out benchmarks/runs/photo_model`).
`haar-today` is the detector and crop as they were before this benchmark (minNeighbors 5, no
retries, no levelling); `haar` the tuned default; `dlib` the optional dlib HOG detector (skipped,
saying so, when dlib is not installed).

docs/predict.md's two tables are written from benchmarks/results/photo_skew.json and
photo_skew_recipe.json (`docs_block`, between the markers `DOCS_BLOCKS` names), whenever a run writes one
of those files and with `--docs-only`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from common import RESULTS, ROOT, parser, replace_block, write_result

from ordinalage.inference.detection.calibration import expose
from ordinalage.inference.detection.geometry import UTKFACE_CHIP, Box, chip_frame, crop_face, paste_chip
from ordinalage.inference.predictor import VIEWS

W, H = 480, 360
VARIANTS: dict[str, dict[str, Any]] = {
    "plain": {"size": (140, 220), "angle": 0.0, "light": 1.0},
    "small": {"size": (70, 110), "angle": 0.0, "light": 1.0},
    "rot15": {"size": (140, 220), "angle": 15.0, "light": 1.0},
    "dark": {"size": (140, 220), "angle": 0.0, "light": 0.4},
}
JITTER = VIEWS  # test-time jitter: the (scale, dx, dy) views of the chip square the package averages
# box: the upright crop of the box (today's); turned: turned by the box's roll; exposed: turned and
# brightened when underexposed (calibration.expose; the package's crop); jitter: exposed, 5 framings averaged
MODES = ("box", "turned", "exposed", "jitter")


def default_run() -> Path:
    """The first finished bake-off cell, else benchmarks/runs/photo_model."""
    cells = ROOT / "benchmarks" / "runs" / "bakeoff_heads_utkface"
    for cell in sorted(cells.glob("*/cell.json")):
        try:
            info = json.loads(cell.read_text())
        except (OSError, ValueError):
            continue
        if str(info.get("status", info.get("state", ""))).lower() in ("done", "finished", "complete") and \
                (cell.parent / "best.pt").is_file():
            return cell.parent
    return ROOT / "benchmarks" / "runs" / "photo_model"


def read_rgb(path: str | Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        sys.exit(f"{path}: cannot read image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def make_photo(chip: np.ndarray, rng: random.Random, variant: str) -> tuple[np.ndarray, dict[str, float]]:
    """A plain 480x360 photo with `chip` pasted at a random size, place (and turn); and the true chip
    square in it: centre (cx, cy), side and angle (the face's eye line, clockwise, in degrees)."""
    v = VARIANTS[variant]
    side = rng.uniform(*v["size"])
    angle = v["angle"] * rng.choice((-1.0, 1.0))
    grey = rng.randint(40, 220)
    colour = np.clip(np.array([grey + rng.randint(-20, 20) for _ in range(3)]), 0, 255)
    photo = np.empty((H, W, 3), np.uint8)
    photo[:] = colour
    a = math.radians(angle)
    reach = round(side) / 2 * (abs(math.sin(a)) + abs(math.cos(a)))
    cx, cy = rng.uniform(reach, W - reach), rng.uniform(reach, H - reach)
    cx, cy, s, angle = paste_chip(chip, photo, cx, cy, side, angle)
    if v["light"] != 1.0:
        photo = np.clip(photo.astype(np.float32) * v["light"], 0, 255).astype(np.uint8)
    return photo, {"cx": cx, "cy": cy, "side": s, "angle": angle}


def match(boxes: list[Box], truth: dict[str, float], ratio: Any) -> tuple[Box | None, int]:
    """The detection of the pasted face (its chip square centred within a quarter side of the truth,
    its side 0.6-1.6x) and the number of other detections (false faces)."""
    best, best_d, false = None, float("inf"), 0
    for b in boxes:
        cx, cy, side, _ = chip_frame(b, ratio)
        d = math.hypot(cx - truth["cx"], cy - truth["cy"]) / truth["side"]
        if d < 0.25 and 0.6 < side / truth["side"] < 1.6 and d < best_d:
            if best is not None:
                false += 1
            best, best_d = b, d
        else:
            false += 1
    return best, false


def frame_error(box: Box, truth: dict[str, float], ratio: Any, use_angle: bool) -> tuple[float, float, float, float]:
    """(side / true side - 1, centre x and y error in true sides, angle error in degrees) of the crop."""
    cx, cy, side, angle = chip_frame(box if use_angle else Box(box.x, box.y, box.w, box.h), ratio)
    return (side / truth["side"] - 1, (cx - truth["cx"]) / truth["side"], (cy - truth["cy"]) / truth["side"],
            angle - truth["angle"])


def make_detector(name: str) -> Any:
    from ordinalage.inference.detection.haar import HaarFaceDetector
    from ordinalage.inference.detection.registry import make_detector as make

    if name == "haar-today":
        return HaarFaceDetector(min_neighbors=5, retry_scale_factor=None, angles=(), level_eyes=False, refine=False)
    if name.startswith("haar-mn"):  # a tuning variant: haar-mn5 = minNeighbors 5
        return HaarFaceDetector(min_neighbors=int(name[len("haar-mn"):]))
    return make(name)


def quart(values: list[float]) -> list[float]:
    return [round(float(np.percentile(values, q)), 4) for q in (25, 50, 75)] if values else []


def run_benchmark(run: Path, n: int, seed: int, split: str, detectors: list[str], modes: list[str],
                  variants: list[str], device: str, latency_n: int = 100, model: str | Path | None = None
                  ) -> dict[str, Any]:
    """`model` (a shipped model's name or another run) predicts; `run`'s split gives the faces."""
    import torch

    from ordinalage.inference.api import load
    from ordinalage.reporting.card import first_member
    from ordinalage.runs.rundir import RunDir

    torch.set_num_threads(1)
    records = RunDir(first_member(run)).read_split(split)
    if n > len(records):
        sys.exit(f"{run}: split {split!r} has {len(records)} faces, asked for {n}")
    records = random.Random(seed).sample(records, n)
    model = run if model is None else model
    est = load(model, device=device)
    pred = est.predictor
    ages = np.array([r.age for r in records])
    chip_age = np.array([f.age for faces in est.predict_batch([r.path for r in records], detect=False) for f in faces])
    out: dict[str, Any] = {"chip_mae": round(float(np.abs(chip_age - ages).mean()), 3), "rows": []}
    print(f"chips: MAE {out['chip_mae']:.3f} on {n} faces of split {split!r}", file=sys.stderr)
    chips = [read_rgb(r.path) for r in records]
    for det_name in detectors:
        try:
            detector = make_detector(det_name)
        except Exception as exc:  # noqa: BLE001 - an optional detector that is not installed
            print(f"[skip] {det_name}: {exc}", file=sys.stderr)
            out.setdefault("skipped", {})[det_name] = str(exc)
            continue
        # today's crop: the ratio measured on chips; else the run's own or the detector's default
        ratio = UTKFACE_CHIP if det_name == "haar-today" else pred.ratio_for(detector.name)
        det_name = det_name if not det_name.startswith("haar-mn") else det_name
        for variant in variants:
            rng = random.Random(f"{seed}-{variant}")
            found: list[int] = []
            boxes_of: list[Box | None] = []
            all_boxes: list[list[Box]] = []
            false = 0
            det_s: list[float] = []
            photos = []
            for chip in chips:
                photo, truth = make_photo(chip, rng, variant)
                t0 = time.perf_counter()
                boxes = detector.detect(photo)
                det_s.append(time.perf_counter() - t0)
                hit, extra = match(boxes, truth, ratio)
                false += extra
                boxes_of.append(hit)
                all_boxes.append(boxes)
                photos.append((photo, truth))
                if hit is not None:
                    found.append(len(boxes_of) - 1)
            for mode in modes if det_name != "haar-today" else ["box"]:
                views = JITTER if mode == "jitter" else ((1.0, 0.0, 0.0),)

                def crops_of(photo: np.ndarray, box: Box, views: tuple = views, mode: str = mode,
                             ratio: Any = ratio) -> np.ndarray:
                    if mode == "box":
                        box = Box(box.x, box.y, box.w, box.h)
                    crops = np.stack([crop_face(photo, box, pred.size, ratio, view=v) for v in views])
                    return expose(crops, pred.exposure) if mode in ("exposed", "jitter") else crops

                ages_photo, errs, per_photo = [], [], []
                for i, (photo, truth) in enumerate(photos):
                    t0 = time.perf_counter()
                    res = pred([crops_of(photo, b) for b in all_boxes[i]]) if all_boxes[i] else None
                    per_photo.append(det_s[i] + time.perf_counter() - t0)
                    box = boxes_of[i]
                    if box is None or res is None:
                        continue
                    ages_photo.append(float(res.age[all_boxes[i].index(box)]))
                    errs.append(frame_error(box, truth, ratio, mode != "box"))
                idx = np.array(found, dtype=int)
                photo_age = np.array(ages_photo)
                e = np.array(errs).reshape(-1, 4)
                row = {
                    "detector": det_name, "variant": variant, "mode": mode, "faces": n, "found": len(found),
                    "found_rate": round(len(found) / n, 4), "false_faces_per_100": round(100 * false / n, 2),
                    "mae_photo": round(float(np.abs(photo_age - ages[idx]).mean()), 3) if len(idx) else None,
                    "mae_chip": round(float(np.abs(chip_age[idx] - ages[idx]).mean()), 3) if len(idx) else None,
                    "mean_abs_photo_minus_chip": round(float(np.abs(photo_age - chip_age[idx]).mean()), 3)
                    if len(idx) else None,
                    "scale_error_quartiles": quart(list(e[:, 0])),
                    "centre_error_median": round(float(np.median(np.hypot(e[:, 1], e[:, 2]))), 4) if len(e) else None,
                    "abs_angle_error_median": round(float(np.median(np.abs(e[:, 3]))), 2) if len(e) else None,
                    "share_angle_error_over_7": round(float(np.mean(np.abs(e[:, 3]) > 7)), 3) if len(e) else None,
                    "ms_detect_per_photo": round(1000 * float(np.mean(det_s)), 1),
                    "ms_per_photo": round(1000 * float(np.mean(per_photo)), 1),
                    "ms_per_photo_median": round(1000 * float(np.median(per_photo)), 1),
                }
                row["gap"] = round(row["mae_photo"] - row["mae_chip"], 3) if row["mae_photo"] is not None else None
                if len(idx) > 1:  # standard error of the gap (paired over the same faces)
                    paired = np.abs(photo_age - ages[idx]) - np.abs(chip_age[idx] - ages[idx])
                    row["gap_se"] = round(float(paired.std(ddof=1) / np.sqrt(len(idx))), 3)
                out["rows"].append(row)
                print(json.dumps(row), file=sys.stderr)
    if latency_n > 0:
        out["latency"] = latency(model, chips[:latency_n], detectors, seed, device)
    return out


def latency(run: str | Path, chips: list[np.ndarray], detectors: list[str], seed: int, device: str) -> dict[str, Any]:
    """Milliseconds per `plain` photo through `AgeEstimator.predict` (decode excluded: photos in memory),
    what `serve` does per upload: the detectors take turns on each photo, so load changes on the
    machine hit them alike. `haar-today` is the estimator as it was (upright crop by the chip-measured
    ratio, one view, no exposure correction)."""
    from ordinalage.inference.api import AgeEstimator, load
    from ordinalage.inference.predictor import FacePredictor

    ests: dict[str, Any] = {}
    for name in detectors:
        try:
            if name == "haar-today":
                p = FacePredictor(run, device, ratio=UTKFACE_CHIP, views=((1.0, 0.0, 0.0),))
                p.exposure = None
                ests[name] = AgeEstimator(p, detector=make_detector(name))
            elif name in ("haar", "dlib"):
                ests[name] = load(run, device=device, detector=name)
        except Exception as exc:  # noqa: BLE001 - an optional detector that is not installed
            print(f"[skip latency] {name}: {exc}", file=sys.stderr)
    rng = random.Random(f"{seed}-latency")
    times: dict[str, list[float]] = {name: [] for name in ests}
    for chip in chips:
        photo, _ = make_photo(chip, rng, "plain")
        for name, est in ests.items():
            t0 = time.perf_counter()
            est.predict(photo)
            times[name].append(1000 * (time.perf_counter() - t0))
    base = float(np.median(times["haar-today"])) if "haar-today" in times else None
    return {name: {"photos": len(t), "ms_median": round(float(np.median(t)), 1), "ms_mean": round(float(np.mean(t)), 1),
                   "ratio_to_haar_today": round(float(np.median(t)) / base, 2) if base else None}
            for name, t in times.items()}


DOCS = ROOT / "docs" / "predict.md"
#: the docs/predict.md block each published JSON writes (file name -> marker name)
DOCS_BLOCKS = {"photo_skew.json": "photo-skew", "photo_skew_recipe.json": "photo-skew-recipe"}
START, END = "<!-- photo-skew:start -->", "<!-- photo-skew:end -->"
#: the table's rows: (detector, crop mode) and its label, in this order
TABLE_ROWS = (
    (("haar-today", "box"), "Haar, plain (box crop, one view)"),
    (("haar", "exposed"), "Haar, one view"),
    (("haar", "jitter"), "**Haar, 5 views (default)**"),
    (("dlib", "exposed"), "dlib + landmarks, one view"),
    (("dlib", "jitter"), "**dlib + landmarks, 5 views (`--detector dlib`)**"),
)


def docs_block(result: dict[str, Any], name: str = "photo-skew") -> str:
    """A docs/predict.md table from a photo_skew JSON, between `<!-- NAME:start -->` and `<!-- NAME:end -->`:
    one row per detector, crop mode and kind of photo (those of `TABLE_ROWS` the JSON has)."""
    lines = [f"<!-- {name}:start -->",
             "| detector, crop | photos | faces found | false faces / 100 photos | MAE in photos "
             "| MAE of the same faces as chips | gap (± SE) | ms / photo (median) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for (detector, mode), label in TABLE_ROWS:
        for variant in VARIANTS:
            row = next((r for r in result["rows"] if (r["detector"], r["mode"], r["variant"]) == (detector, mode, variant)),
                       None)
            if row is None:
                continue
            lines.append(f"| {label} | {variant} | {row['found_rate']:.1%} | {row['false_faces_per_100']:.1f} "
                         f"| {row['mae_photo']:.2f} | {row['mae_chip']:.2f} | {row['gap']:+.2f} ± {row['gap_se']:.2f} "
                         f"| {row['ms_per_photo_median']:.0f} |")
    return "\n".join([*lines, "", f"<!-- {name}:end -->"])


def write_docs(json_path: Path) -> None:
    """Rewrite the docs/predict.md table of a published JSON (others have none)."""
    name = DOCS_BLOCKS.get(json_path.name)
    if name is not None and json_path.resolve().parent == RESULTS.resolve():
        replace_block(DOCS, docs_block(json.loads(json_path.read_text(encoding="utf-8")), name))


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, default=None)
    p.add_argument("--model", default=None, help="predict with this model (a shipped model's name or a run "
                   "folder) on the faces of --run's split, e.g. --model utkface-small --run ITS_TRAINING_RUN")
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", default="test")
    p.add_argument("--detectors", default="haar-today,haar,dlib")
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--device", default="cpu")
    p.add_argument("--latency-n", type=int, default=100, dest="latency_n", help="photos timed end to end")
    p.add_argument("--docs-only", action="store_true", dest="docs_only",
                   help="measure nothing; rewrite docs/predict.md's tables from the published JSON files")
    args = p.parse_args(argv)
    if args.docs_only:
        for json_name in DOCS_BLOCKS:
            write_docs(RESULTS / json_name)
        return 0
    run = args.run or default_run()
    from ordinalage.runs.members import member_dirs

    if not (run / "best.pt").is_file() and not member_dirs(run):
        sys.exit(f"{run}: no trained run (train one: ordinalage train --config configs/experiments/"
                 "utkface_bakeoff.yaml --epochs 6 --out benchmarks/runs/photo_model)")
    result = run_benchmark(run, args.n, args.seed, args.split, args.detectors.split(","), args.modes.split(","),
                           args.variants.split(","), args.device, args.latency_n, args.model)
    from ordinalage.inference.detection.calibration import DEFAULT_RATIOS, load_crop_ratios, load_exposure

    own, source = load_crop_ratios(run)
    settings = {"run": str(run.relative_to(ROOT) if run.is_relative_to(ROOT) else run), "model": args.model,
                "n": args.n,
                "seed": args.seed, "split": args.split, "photo": [W, H], "variants": VARIANTS,
                "jitter_views": JITTER, "crop_source": source,
                "crop_ratios": {k: dataclasses.asdict(v) for k, v in {**DEFAULT_RATIOS, **own}.items()},
                "exposure": dataclasses.asdict(load_exposure(run)), "haar_today_ratio": dataclasses.asdict(UTKFACE_CHIP),
                "latency_photos": min(args.latency_n, args.n)}
    write_docs(write_result("photo_skew", {"settings": settings, **result}, args.json))
    return 0


if __name__ == "__main__":
    sys.exit(main())
