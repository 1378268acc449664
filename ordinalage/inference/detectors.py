"""Face detectors by name: `haar` (OpenCV's bundled cascade, the default) and `dlib` (dlib's HOG
frontal face detector, an optional extra: `pip install 'ordinalage[dlib]'`, prebuilt dlib-bin wheels
with the detector's weights compiled in; nothing is downloaded at run time).

Every detector has `name` and `detect(rgb) -> list[Box]` (boxes in image pixels, left to right,
a roll `angle` on faces found turned). The crop that turns a box into a training-chip-like square
depends on the detector (`faces.ChipRatio`): the defaults are in `DEFAULT_RATIOS`, a run can hold
its own (`crop.measure_crop_mapping`). Why these and not others: docs/predict.md.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from ordinalage.errors import UsageError
from ordinalage.inference.faces import (
    UTKFACE_CHIP,
    Box,
    ChipRatio,
    HaarFaceDetector,
    box_for_frame,
    chip_frame,
    detect_turned,
    shrink_and_pad,
    suppress_nested,
)


class FaceDetector(Protocol):
    name: str

    def detect(self, rgb: np.ndarray) -> list[Box]: ...


# dlib's own HOG box on an aligned UTKFace chip (UTKFace was aligned with dlib, and the box is the same
# on every chip): measured on 1,000 chips of the training split with
# measure_chip_ratio(..., DlibFaceDetector(refine=False)); see docs/predict.md. DlibFaceDetector turns
# its boxes into Haar-like ones through it, so that the Haar pass can refine them.
UTKFACE_DLIB_CHIP = ChipRatio(scale=1.105, dx=0.030, dy=0.030)
# The defaults for runs without their own face_crop.json: measure_crop_ratios on 300 faces of the
# UTKFace validation split (split_seed 0) pasted into photos (docs/predict.md). Both detectors give
# Haar-like boxes (dlib's from its landmarks, or refined by the Haar pass without them).
DEFAULT_RATIOS: dict[str, ChipRatio] = {"haar": ChipRatio(scale=0.976, dx=0.005, dy=0.081),
                                        "dlib": ChipRatio(scale=0.983, dx=0.003, dy=0.083)}

# dlib's 5-point landmarks (face_recognition_models' shape_predictor_5_face_landmarks.dat, CC0) aligned
# with dlib.get_face_chip_details(shape, 200, LANDMARK_PADDING) give a square that relates to the
# UTKFace chip by this ratio (medians over 500 chips of the training split; UTKFace's chips were
# themselves aligned from dlib landmarks, so the spread is small: docs/predict.md).
LANDMARK_PADDING = 0.25
LANDMARK_CHIP = ChipRatio(scale=0.921, dx=0.001, dy=-0.006)
# the Haar-like box the detector reports for a landmark-aligned face: the box whose chip square by this
# ratio is the aligned square (fixed, so that DEFAULT_RATIOS["dlib"] stays valid when Haar's is re-measured)
LANDMARK_BOX = ChipRatio(scale=0.979, dx=0.004, dy=0.081)

# name -> (module to import, the pip command that installs it)
OPTIONAL: dict[str, tuple[str, str]] = {
    "dlib": ("dlib", "pip install 'ordinalage[dlib]'  (or: pip install dlib-bin face_recognition_models)"),
}


def missing_package(name: str, exc: ImportError) -> UsageError:
    module, command = OPTIONAL[name]
    return UsageError(f"detector {name!r} needs the optional package {module!r}, which is not installed "
                      f"({exc}); install it with: {command}")


def landmark_model() -> Path | None:
    """face_recognition_models' 5-point landmark file, found without importing that package (its
    __init__ needs setuptools' pkg_resources, gone from current setuptools); None when not installed."""
    import importlib.util

    spec = importlib.util.find_spec("face_recognition_models")
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(folder) / "models" / "shape_predictor_5_face_landmarks.dat"
        if path.is_file():
            return path
    return None


class DlibFaceDetector:
    """dlib's HOG + linear SVM frontal face detector (`dlib.get_frontal_face_detector()`, weights inside
    the library). As with `HaarFaceDetector`, the image is shrunk to at most `max_side` and padded by
    `pad` x its shorter side; when a pass finds nothing the search goes on with the image upsampled
    once (faces down to about 40 px) and then turned by each of `angles`; when all of that finds
    nothing, `HaarFaceDetector` searches (`fallback`). With dlib's 5-point landmark model installed
    (face_recognition_models) each face is aligned by its landmarks (roll, scale and centre, as
    UTKFace's own chips were made); without it, by the Haar detector's eye levelling and refining pass."""

    name = "dlib"

    def __init__(self, threshold: float = 0.0, pad: float = 0.25, max_side: int = 800,
                 angles: Sequence[float] = (15.0, -15.0), refine: bool = True, level_eyes: bool = True,
                 landmarks: bool = True, fallback: bool = True) -> None:
        try:
            import dlib
        except ImportError as exc:
            raise missing_package("dlib", exc) from None
        self._dlib = dlib
        self._detector = dlib.get_frontal_face_detector()
        self._shape = None  # the 5-point landmark model, when face_recognition_models is installed
        model = landmark_model() if landmarks else None
        if model is not None:
            self._shape = dlib.shape_predictor(str(model))
        self.landmarks = self._shape is not None
        self.threshold = threshold
        self.pad = pad
        self.max_side = max_side
        self.angles = tuple(float(a) for a in angles)
        self.refine = refine
        self.level_eyes = level_eyes
        self.fallback = fallback
        # levels and refines dlib's boxes (without landmarks), and searches where dlib found nothing
        self._haar = HaarFaceDetector(pad=pad, level_eyes=level_eyes)

    def detect(self, rgb: np.ndarray) -> list[Box]:
        """dlib's boxes (refine=False), or Haar-like boxes (`faces.box_for_frame` through
        UTKFACE_DLIB_CHIP), levelled by the eyes and refined by `HaarFaceDetector.refined`."""
        gray = rgb if rgb.ndim == 2 else cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        boxes = self.detect_upright(gray)
        if not boxes:
            boxes = self.detect_upright(gray, upsample=1)
        for angle in self.angles if not boxes else ():
            boxes = suppress_nested(detect_turned(self.detect_upright, gray, angle))
            if boxes:
                break
        if not boxes and self.fallback:
            return self._haar.detect(gray)  # Haar-like boxes already
        if self.landmarks or not (self.refine or self.level_eyes):
            return boxes
        boxes = [box_for_frame(*chip_frame(b, UTKFACE_DLIB_CHIP), UTKFACE_CHIP) for b in boxes]
        if self._haar.eyes is not None:
            boxes = [self._haar.level(gray, b) if b.angle == 0 else b for b in boxes]
        if self.refine:
            boxes = [self._haar.refined(gray, b) for b in boxes]
        return boxes

    def detect_upright(self, gray: np.ndarray, upsample: int = 0) -> list[Box]:
        gray, factor, p = shrink_and_pad(gray, self.max_side, self.pad)
        gray = np.ascontiguousarray(gray)
        rects, _scores, _kinds = self._detector.run(gray, upsample, self.threshold)
        boxes = []
        for r in rects:
            if self._shape is not None:  # aligned by the landmarks: a Haar-like box with the face's roll
                d = self._dlib.get_face_chip_details(self._shape(gray, r), 200, LANDMARK_PADDING)
                rc = d.rect
                side = (rc.width() + rc.height()) / 2 / factor
                cx, cy = ((rc.left() + rc.right()) / 2 + 0.5 - p) / factor, ((rc.top() + rc.bottom()) / 2 + 0.5 - p) / factor
                b = Box(round(cx - side / 2), round(cy - side / 2), round(side), round(side), angle=math.degrees(d.angle))
                boxes.append(box_for_frame(*chip_frame(b, LANDMARK_CHIP), LANDMARK_BOX))
                continue
            x0, y0 = round((r.left() - p) / factor), round((r.top() - p) / factor)
            x1, y1 = round((r.right() + 1 - p) / factor), round((r.bottom() + 1 - p) / factor)
            boxes.append(Box(x0, y0, x1 - x0, y1 - y0))
        return suppress_nested(boxes)


DETECTORS: dict[str, Callable[[], Any]] = {
    "haar": HaarFaceDetector,
    "dlib": DlibFaceDetector,
}


def make_detector(name: str) -> FaceDetector:
    """A detector by name; a UsageError naming the choices, or the pip command for a missing optional package."""
    if name not in DETECTORS:
        raise UsageError(f"--detector: unknown detector {name!r} (choose from {', '.join(DETECTORS)})")
    return DETECTORS[name]()


def detector_ratio(name: str) -> ChipRatio:
    """The default box-to-chip ratio of a detector (UTKFace-framed chips)."""
    return DEFAULT_RATIOS.get(name, UTKFACE_CHIP)


def measure_crop_ratios(run: str | Path, detectors: Sequence[str] = ("haar",), n: int = 300, split: str = "val",
                        seed: int = 0, write: bool = True) -> dict[str, Any]:
    """Measure, per detector, the box-to-chip ratio on the run's own faces as they look in photos, and
    store it in the run (faces.CROP_FILE, read by `FacePredictor`): `n` faces of `split` (validation
    by default: never the test faces) pasted, one per photo, at 100-220 px into a plain 480x360
    photo of a random flat colour at a random place (seeded); for each face found, the (scale, dx,
    dy) that maps its box onto the true chip square; the medians are the ratio. Unlike measuring on
    the chips alone (`faces.measure_chip_ratio`) this includes what resizing a face into a photo
    does to the detector's box. The same faces give the crops' `Exposure` (faces.expose). Returns
    {detector: {ratio, quartiles, found, faces}, "exposure": {low, target}}."""
    import random

    from ordinalage.data.decode import decode_image
    from ordinalage.inference.faces import Exposure, frame_ratio, paste_chip, write_crop_ratios
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
