"""The optional `dlib` face detector: dlib's HOG frontal face detector (`pip install 'ordinalage[dlib]'`,
prebuilt dlib-bin wheels with the detector's weights compiled in; nothing is downloaded at run time),
aligned by dlib's 5-point landmarks when face_recognition_models is installed. Its boxes are
Haar-like, so the Haar crop ratios apply nearly unchanged (calibration.DEFAULT_RATIOS). Why this
detector and not others: docs/predict.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from ordinalage.inference.detection.geometry import (
    UTKFACE_CHIP,
    Box,
    ChipRatio,
    box_for_frame,
    chip_frame,
    detect_turned,
    shrink_and_pad,
    suppress_nested,
)
from ordinalage.inference.detection.haar import HaarFaceDetector
from ordinalage.inference.detection.interface import missing_package

# dlib's own HOG box on an aligned UTKFace chip (UTKFace was aligned with dlib, and the box is the same
# on every chip): measured on 1,000 chips of the training split with
# measure_chip_ratio(..., DlibFaceDetector(refine=False)); see docs/predict.md. DlibFaceDetector turns
# its boxes into Haar-like ones through it, so that the Haar pass can refine them.
UTKFACE_DLIB_CHIP = ChipRatio(scale=1.105, dx=0.030, dy=0.030)

# dlib's 5-point landmarks (face_recognition_models' shape_predictor_5_face_landmarks.dat, CC0) aligned
# with dlib.get_face_chip_details(shape, 200, LANDMARK_PADDING) give a square that relates to the
# UTKFace chip by this ratio (medians over 500 chips of the training split; UTKFace's chips were
# themselves aligned from dlib landmarks, so the spread is small: docs/predict.md).
LANDMARK_PADDING = 0.25
LANDMARK_CHIP = ChipRatio(scale=0.921, dx=0.001, dy=-0.006)
# the Haar-like box the detector reports for a landmark-aligned face: the box whose chip square by this
# ratio is the aligned square (fixed, so that DEFAULT_RATIOS["dlib"] stays valid when Haar's is re-measured)
LANDMARK_BOX = ChipRatio(scale=0.979, dx=0.004, dy=0.081)


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
        """dlib's boxes (refine=False), or Haar-like boxes (`geometry.box_for_frame` through
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
        """One pass of dlib's detector over a grey image (`upsample`: times doubled first), nested boxes dropped."""
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
