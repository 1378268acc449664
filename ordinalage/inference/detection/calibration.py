"""Crop calibration: how a detector's box becomes a training-chip-like crop, per run.

The box-to-chip ratio depends on the detector (`geometry.ChipRatio`): the defaults are in
`DEFAULT_RATIOS`; a run can hold its own, with the training crops' brightness (`Exposure`), in
`face_crop.json` (`CROP_FILE`: written by `measure_crop_ratios`, read by `load_crop_ratios` and
`load_exposure`). `measure_chip_ratio` measures a detector on whole chips. Numbers: docs/predict.md.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ordinalage.atomic import write_json
from ordinalage.errors import UsageError
from ordinalage.inference.detection.geometry import UTKFACE_CHIP, ChipRatio, frame_ratio, paste_chip
from ordinalage.inference.detection.haar import HaarFaceDetector
from ordinalage.inference.detection.registry import make_detector

CROP_FILE = "face_crop.json"  # in a run folder: the run's own box-to-chip ratio per detector
CROP_FORMAT = "ordinalage-face-crop"

# The defaults for runs without their own face_crop.json: measure_crop_ratios on 300 faces of the
# UTKFace validation split (split_seed 0) pasted into photos (docs/predict.md). Both detectors give
# Haar-like boxes (dlib's from its landmarks, or refined by the Haar pass without them).
DEFAULT_RATIOS: dict[str, ChipRatio] = {"haar": ChipRatio(scale=0.976, dx=0.005, dy=0.081),
                                        "dlib": ChipRatio(scale=0.983, dx=0.003, dy=0.083)}


def detector_ratio(name: str) -> ChipRatio:
    """The default box-to-chip ratio of a detector (UTKFace-framed chips)."""
    return DEFAULT_RATIOS.get(name, UTKFACE_CHIP)


# ---------------------------------------------------------------------------------------------
# exposure


@dataclass(frozen=True)
class Exposure:
    """Brightness of training crops, as the 99th percentile of a crop's grey levels (its highlights):
    `low` is the 1st percentile of that over training chips, `target` the median. A face crop whose
    highlights stay below `low` comes from an underexposed photo and is scaled up to `target`
    (`expose`); any other crop is left as it is."""

    low: float
    target: float


# 400 chips of the UTKFace training split (split_seed 0), 64 px as the model sees them: the 99th
# percentile of grey levels is 147 at the chips' 1st percentile and 211 at their median.
UTKFACE_EXPOSURE = Exposure(low=147.0, target=211.0)
MAX_GAIN = 4.0


def expose(crop: np.ndarray, exposure: Exposure | None) -> np.ndarray:
    """`crop` (or a stack of views of one face: the gain comes from the first) brightened to the training
    crops' highlights when it is darker than nearly all of them (`Exposure`); else unchanged."""
    if exposure is None:
        return crop
    first = crop if crop.ndim == 3 else crop[0]
    high = float(np.percentile(cv2.cvtColor(first, cv2.COLOR_RGB2GRAY), 99))
    if high >= exposure.low or high <= 0:
        return crop
    gain = min(MAX_GAIN, exposure.target / high)
    return np.clip(crop.astype(np.float32) * gain + 0.5, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# face_crop.json


def _read_crop_file(run_dir: str | Path | None) -> tuple[dict[str, object] | None, Path | None]:
    path = Path(run_dir) / CROP_FILE if run_dir is not None else None
    if path is None or not path.is_file():
        return None, None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(doc, dict) or doc.get("format") != CROP_FORMAT:
            raise ValueError(f"format is {doc.get('format') if isinstance(doc, dict) else doc!r}, "
                             f"expected {CROP_FORMAT!r}")
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: not a readable face crop file ({exc}); delete it to use the defaults") from None
    return doc, path


def load_crop_ratios(run_dir: str | Path | None) -> tuple[dict[str, ChipRatio], str]:
    """The ratios stored in `run_dir`/face_crop.json ({detector: ChipRatio}) and where they came from
    (the file's path; "default" when the run has none, and the detectors' defaults apply)."""
    doc, path = _read_crop_file(run_dir)
    if doc is None:
        return {}, "default"
    try:
        ratios = {str(name): ChipRatio(float(r["scale"]), float(r["dx"]), float(r["dy"]))
                  for name, r in doc["ratios"].items()}  # type: ignore[union-attr]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UsageError(f"{path}: not a readable face crop file ({exc}); delete it to use the defaults") from None
    for name, r in ratios.items():
        if not (math.isfinite(r.scale) and r.scale > 0 and math.isfinite(r.dx) and math.isfinite(r.dy)):
            raise UsageError(f"{path}: ratio for {name!r} is not usable: {r}")
    return ratios, str(path)


def load_exposure(run_dir: str | Path | None) -> Exposure:
    """The exposure stored in `run_dir`/face_crop.json, else `UTKFACE_EXPOSURE`."""
    doc, path = _read_crop_file(run_dir)
    if doc is None or "exposure" not in doc:
        return UTKFACE_EXPOSURE
    try:
        e = doc["exposure"]
        return Exposure(float(e["low"]), float(e["target"]))  # type: ignore[index]
    except (ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"{path}: not a readable face crop file ({exc}); delete it to use the defaults") from None


def write_crop_ratios(run_dir: str | Path, ratios: Mapping[str, ChipRatio], info: Mapping[str, object],
                      exposure: Exposure | None = None) -> Path:
    """Store the box-to-chip ratio per detector (and the training crops' `exposure`) in
    `run_dir`/face_crop.json (read by `load_crop_ratios`, `load_exposure`)."""
    doc: dict[str, object] = {
        "format": CROP_FORMAT, "version": 1,
        "ratios": {name: {"scale": r.scale, "dx": r.dx, "dy": r.dy} for name, r in ratios.items()}}
    if exposure is not None:
        doc["exposure"] = {"low": exposure.low, "target": exposure.target}
    doc.update({k: v for k, v in info.items() if k not in doc})
    return write_json(Path(run_dir) / CROP_FILE, doc)


# ---------------------------------------------------------------------------------------------
# measuring


@dataclass(frozen=True)
class ChipMeasurement:
    """Result of `measure_chip_ratio`: medians and quartiles over the chips where a face was found."""

    images: int
    detected: int
    ratio: ChipRatio
    scale_quartiles: tuple[float, float]
    dy_quartiles: tuple[float, float]

    @property
    def detection_rate(self) -> float:
        return self.detected / self.images if self.images else 0.0


def measure_chip_ratio(chips: Iterable[np.ndarray], detector: HaarFaceDetector | None = None) -> ChipMeasurement:
    """Run `detector` on whole training chips (RGB arrays) and measure where the chip lies relative to
    the largest box found: the `ChipRatio` that turns a detection back into a chip-like crop."""
    detector = detector or HaarFaceDetector()
    scale, dx, dy, n = [], [], [], 0
    for chip in chips:
        n += 1
        boxes = detector.detect(chip)
        if not boxes:
            continue
        b = max(boxes, key=lambda b: b.w * b.h)
        h, w = chip.shape[:2]
        side = (b.w + b.h) / 2
        scale.append(min(h, w) / side)
        dx.append((w / 2 - (b.x + b.w / 2)) / b.w)
        dy.append((h / 2 - (b.y + b.h / 2)) / b.h)
    if not scale:
        return ChipMeasurement(n, 0, ChipRatio(float("nan"), float("nan"), float("nan")), (float("nan"),) * 2,
                               (float("nan"),) * 2)
    q = np.percentile
    return ChipMeasurement(
        images=n, detected=len(scale),
        ratio=ChipRatio(float(np.median(scale)), float(np.median(dx)), float(np.median(dy))),
        scale_quartiles=(float(q(scale, 25)), float(q(scale, 75))),
        dy_quartiles=(float(q(dy, 25)), float(q(dy, 75))),
    )


def measure_crop_ratios(run: str | Path, detectors: Sequence[str] = ("haar",), n: int = 300, split: str = "val",
                        seed: int = 0, write: bool = True) -> dict[str, Any]:
    """Measure, per detector, the box-to-chip ratio on the run's own faces as they look in photos, and
    store it in the run (CROP_FILE, read by `FacePredictor`): `n` faces of `split` (validation
    by default: never the test faces) pasted, one per photo, at 100-220 px into a plain 480x360
    photo of a random flat colour at a random place (seeded); for each face found, the (scale, dx,
    dy) that maps its box onto the true chip square; the medians are the ratio. Unlike measuring on
    the chips alone (`measure_chip_ratio`) this includes what resizing a face into a photo
    does to the detector's box. The same faces give the crops' `Exposure` (`expose`). Returns
    {detector: {ratio, quartiles, found, faces}, "exposure": {low, target}}."""
    import random

    from ordinalage.data.decode import decode_image
    from ordinalage.runs.rundir import RunDir

    run_dir = Path(run)
    records = RunDir(run_dir).read_split(split)
    if not records:
        raise UsageError(f"{run_dir}: split {split!r} of split.csv is empty")
    records = random.Random(seed).sample(records, min(n, len(records)))
    chips = [decode_image(r.path, 200, "auto") for r in records]
    highs = [np.percentile(cv2.cvtColor(cv2.resize(c, (64, 64), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY), 99)
             for c in chips]
    exposure = Exposure(round(float(np.percentile(highs, 1)), 1), round(float(np.median(highs)), 1))
    out: dict[str, Any] = {}
    ratios: dict[str, ChipRatio] = {}
    for name in detectors:
        detector = make_detector(name)
        rng = random.Random(f"{seed}-{name}")
        samples = []
        for chip in chips:
            canvas = np.empty((360, 480, 3), np.uint8)
            canvas[:] = rng.randint(40, 220)
            side = rng.uniform(100, 220)
            cx, cy = rng.uniform(side / 2, 480 - side / 2), rng.uniform(side / 2, 360 - side / 2)
            cx, cy, side, _ = paste_chip(chip, canvas, cx, cy, side)
            near = [b for b in detector.detect(canvas)
                    if abs(b.centre[0] - cx) < 0.25 * side and abs(b.centre[1] - cy) < 0.3 * side]
            if near:
                samples.append(frame_ratio(max(near, key=lambda b: b.w), cx, cy, side))
        if not samples:
            raise UsageError(f"{run_dir}: the {name} detector found none of {len(chips)} faces of split {split!r}")
        a = np.array(samples)
        med = np.median(a, axis=0)
        ratios[name] = ChipRatio(round(float(med[0]), 4), round(float(med[1]), 4), round(float(med[2]), 4))
        out[name] = {"ratio": dataclasses.asdict(ratios[name]), "faces": len(chips), "found": len(samples),
                     "scale_quartiles": [round(float(np.percentile(a[:, 0], q)), 4) for q in (25, 75)],
                     "dy_quartiles": [round(float(np.percentile(a[:, 2], q)), 4) for q in (25, 75)]}
    out["exposure"] = dataclasses.asdict(exposure)
    if write:
        write_crop_ratios(run_dir, ratios, {"measured": out, "split": split, "seed": seed,
                                            "how": "faces pasted into plain 480x360 photos at 100-220 px"}, exposure)
    return out
