"""The default face detector: OpenCV's bundled Haar cascade (nothing downloaded), with passes over
the image turned for rolled faces, eye levelling, and a refining pass that frames each box as on
the chips its crop ratio was measured on (geometry.UTKFACE_CHIP)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from ordinalage.errors import UsageError
from ordinalage.inference.detection.geometry import (
    UTKFACE_CHIP,
    Box,
    chip_frame,
    detect_turned,
    rotation,
    shrink_and_pad,
    suppress_nested,
)

HAAR_CASCADE = "haarcascade_frontalface_default.xml"
EYE_CASCADE = "haarcascade_eye.xml"
EYE_BOX = 160  # eyes are searched in a face box shrunk to at most this width


class HaarFaceDetector:
    """Frontal faces with `cv2.CascadeClassifier` and OpenCV's bundled cascade (nothing downloaded).

    The image is shrunk so its longer side is at most `max_side` and padded on every side by
    `pad` x its shorter side (edge pixels repeated), so a face that fills the frame, such as an
    aligned chip, still has the margin the cascade needs. Boxes come back in original pixels,
    sorted left to right; a box may reach a little past the image edge for a face cut by the frame
    (it is not clipped, so the crop keeps the face's true scale and centre). A box inside (or mostly
    over) a larger one is dropped (`suppress_nested`).

    When the first pass finds nothing, the search goes on, pass by pass until one finds a face:
    upright with the finer `retry_scale_factor`, then over the image turned by each of `angles`
    (a face rolled by 15 degrees is often missed upright). `level_eyes` turns a face's crop by the
    slope of its eye line (two eyes found with OpenCV's eye cascade in the box's upper half) when
    that slope is at least `min_level` degrees. Tuned on faces of the UTKFace validation split pasted into
    photos (benchmarks/photo_skew.py, docs/predict.md).
    """

    name = "haar"

    def __init__(self, scale_factor: float = 1.1, min_neighbors: int = 4, min_size: int = 30,
                 pad: float = 0.25, max_side: int = 800, cascade: str | Path | None = None,
                 retry_scale_factor: float | None = 1.05, angles: Sequence[float] = (15.0, -15.0),
                 level_eyes: bool = True, min_level: float = 10.0, refine: bool = True) -> None:
        path = Path(cascade) if cascade else Path(cv2.data.haarcascades) / HAAR_CASCADE
        self.classifier = load_cascade(path)
        self.eyes = load_cascade(Path(cv2.data.haarcascades) / EYE_CASCADE) if level_eyes else None
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.min_size = min_size
        self.pad = pad
        self.max_side = max_side
        self.retry_scale_factor = retry_scale_factor
        self.angles = tuple(float(a) for a in angles)
        self.min_level = min_level
        self.refine = refine

    def detect(self, rgb: np.ndarray) -> list[Box]:
        """Face boxes in an RGB (or grey) uint8 image."""
        gray = rgb if rgb.ndim == 2 else cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        boxes = self.detect_upright(gray)
        if not boxes and self.retry_scale_factor:
            boxes = self.detect_upright(gray, self.retry_scale_factor)
        for angle in self.angles if not boxes else ():
            boxes = suppress_nested(detect_turned(self.detect_upright, gray, angle))
            if boxes:
                break
        if self.eyes is not None:
            boxes = suppress_nested([self.level(gray, b) if b.angle == 0 else b for b in boxes])
        if self.refine:
            boxes = [self.refined(gray, b) for b in boxes]
        return boxes

    def turned_around(self, gray: np.ndarray, box: Box, reach: float = 2.5, larger: float = 1.6) -> Box | None:
        """A face found by the turned passes (`angles`) around `box` (within `reach` box sides of its
        centre) that holds `box`'s centre and is at least `larger` times its side: the whole of a
        turned face of which the upright pass found only a part (an eye, the mouth). None if there is none."""
        cx, cy = box.centre
        half = reach * max(box.w, box.h)
        h, w = gray.shape
        x0, y0, x1, y1 = max(0, round(cx - half)), max(0, round(cy - half)), min(w, round(cx + half)), min(h, round(cy + half))
        best = None
        min_size = max(self.min_size, round(larger * box.w))
        for angle in self.angles:
            for b in detect_turned(lambda im: self.detect_upright(im, min_size=min_size), gray[y0:y1, x0:x1], angle):
                b = Box(b.x + x0, b.y + y0, b.w, b.h, angle=b.angle)
                if b.w >= larger * box.w and abs(b.centre[0] - cx) < b.w / 2 and abs(b.centre[1] - cy) < b.h / 2 \
                        and (best is None or b.w > best.w):
                    best = b
        return best

    def refined(self, gray: np.ndarray, box: Box, chip: int = 160, scale_factor: float = 1.04) -> Box:
        """`box` found again in its own chip square cut out (turned by the box's angle) at the size and
        margin of the chips the ratio was measured on (`chip` px plus `pad`), with a fine scale step:
        the box then relates to the chip as on those chips, whatever the face's size and the pyramid
        step of the first pass. `box` itself when the second pass finds no face near its centre."""
        cx, cy, side, angle = chip_frame(box, UTKFACE_CHIP)
        out = round(chip * (1 + 2 * self.pad))
        k = side * (1 + 2 * self.pad) / out  # region pixel -> image pixels
        rot = rotation(angle) * k
        back = np.zeros((2, 3))
        back[:, :2] = rot
        back[:, 2] = np.array([cx, cy]) - rot @ np.array([out / 2, out / 2])
        region = cv2.warpAffine(gray, back, (out, out), flags=cv2.INTER_AREA | cv2.WARP_INVERSE_MAP,
                                borderMode=cv2.BORDER_REPLICATE)
        expect = chip / UTKFACE_CHIP.scale
        found = self.classifier.detectMultiScale(region, scaleFactor=scale_factor, minNeighbors=self.min_neighbors,
                                                 minSize=(round(0.7 * expect),) * 2, maxSize=(round(1.4 * expect),) * 2)
        best, best_d = None, 0.2 * chip
        rc = out / 2 - np.array([UTKFACE_CHIP.dx, UTKFACE_CHIP.dy]) * expect  # where the box centre should be
        for bx, by, bw, bh in np.asarray(found, dtype=float).reshape(-1, 4):
            d = math.hypot(bx + bw / 2 - rc[0], by + bh / 2 - rc[1])
            if d < best_d:
                best, best_d = (bx, by, bw, bh), d
        if best is None:
            return box
        bx, by, bw, bh = best
        c = rot @ np.array([bx + bw / 2, by + bh / 2]) + back[:, 2]
        w, h = bw * k, bh * k
        return Box(round(c[0] - w / 2), round(c[1] - h / 2), round(w), round(h), angle=box.angle)

    def detect_upright(self, gray: np.ndarray, scale_factor: float | None = None,
                       min_size: int | None = None) -> list[Box]:
        """One pass of the cascade over a grey image (faces of at least `min_size` px, default
        `self.min_size`), nested boxes dropped."""
        gray, factor, p = shrink_and_pad(gray, self.max_side, self.pad)
        smallest = self.min_size if min_size is None else max(self.min_size, round(min_size * factor))
        found = self.classifier.detectMultiScale(gray, scaleFactor=scale_factor or self.scale_factor,
                                                 minNeighbors=self.min_neighbors, minSize=(smallest, smallest))
        boxes = []
        for bx, by, bw, bh in np.asarray(found, dtype=float).reshape(-1, 4):
            x0, y0 = round((bx - p) / factor), round((by - p) / factor)
            boxes.append(Box(x0, y0, round((bx - p + bw) / factor) - x0, round((by - p + bh) / factor) - y0))
        return suppress_nested(boxes)

    def level(self, gray: np.ndarray, box: Box) -> Box:
        """`box` turned by the slope of its eye line, when two eyes are found and the slope is at least
        `min_level` degrees. A box without a pair of eyes may be part of a turned face: the face the
        turned passes find around it (`turned_around`) when there is one; else `box` as it is."""
        angle = eye_angle(self.eyes, gray, box)
        if angle is None:
            return (self.turned_around(gray, box) if self.angles else None) or box
        if abs(angle) < self.min_level:
            return box
        return Box(box.x, box.y, box.w, box.h, angle=angle)


def load_cascade(path: Path) -> cv2.CascadeClassifier:
    """An OpenCV cascade from its XML file; a UsageError when it is missing or unreadable."""
    if not path.is_file():
        raise UsageError(f"Haar cascade not found: {path} (opencv-python-headless 4.x ships it; 5.x does not)")
    classifier = cv2.CascadeClassifier(str(path))
    if classifier.empty():
        raise UsageError(f"{path}: OpenCV could not load this Haar cascade")
    return classifier


def eye_angle(eyes: cv2.CascadeClassifier, gray: np.ndarray, box: Box, max_angle: float = 25.0) -> float | None:
    """The slope in degrees of the line through the two eyes of an upright `box` (None when no pair
    of eyes is found): eyes searched with `eyes` in the band 10-60% down the box; a pair counts when
    the eyes are 0.25-0.6 box widths apart, at most `max_angle` steep and centred within 15% of the
    box's middle (the most central pair wins)."""
    h, w = gray.shape
    x0, y0 = max(0, box.x), max(0, box.y + round(0.1 * box.h))
    x1, y1 = min(w, box.x + box.w), min(h, box.y + round(0.6 * box.h))
    if x1 - x0 < 16 or y1 - y0 < 8:
        return None
    roi, k = gray[y0:y1, x0:x1], 1.0
    if box.w > EYE_BOX:  # searched at a box width of EYE_BOX px: as good, and cheaper for large faces
        k = box.w / EYE_BOX
        roi = cv2.resize(roi, (max(1, round(roi.shape[1] / k)), max(1, round(roi.shape[0] / k))),
                         interpolation=cv2.INTER_AREA)
    bw = box.w / k
    found = eyes.detectMultiScale(roi, 1.1, 3, minSize=(max(8, round(bw / 8)),) * 2, maxSize=(max(9, round(bw / 2)),) * 2)
    centres = sorted(((ex + ew / 2) * k + x0, (ey + eh / 2) * k + y0)
                     for ex, ey, ew, eh in np.asarray(found, dtype=float).reshape(-1, 4))
    best: tuple[float, float] | None = None
    for i, (ax, ay) in enumerate(centres):
        for bx, by in centres[i + 1:]:
            if not 0.25 * box.w < math.hypot(bx - ax, by - ay) < 0.6 * box.w:
                continue
            angle = math.degrees(math.atan2(by - ay, bx - ax))
            off = abs((ax + bx) / 2 - (box.x + box.w / 2)) / box.w
            if abs(angle) <= max_angle and off <= 0.15 and (best is None or off < best[0]):
                best = (off, angle)
    return None if best is None else best[1]
