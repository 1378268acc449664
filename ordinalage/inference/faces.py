"""Face detection with OpenCV's bundled Haar cascade, and crops that look like training chips.

A Haar box covers roughly brow to mouth; a training chip (UTKFace: an aligned 200x200 face) shows
a little more, and lower. `UTKFACE_CHIP` says where the chip lies relative to the box, measured by
running this detector on real UTKFace chips (`measure_chip_ratio`, numbers in docs/predict.md).
`crop_face` cuts that square out of a photo and resizes it with the data layer's own `to_square`,
so a detected face reaches the model framed and scaled as in training.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ordinalage.data.decode import to_square
from ordinalage.errors import UsageError

HAAR_CASCADE = "haarcascade_frontalface_default.xml"


@dataclass(frozen=True)
class Box:
    """An axis-aligned face box in pixels: top-left corner (x, y), width w, height h."""

    x: int
    y: int
    w: int
    h: int

    def iou(self, other: Box) -> float:
        """Intersection over union with `other` (0 when they do not overlap)."""
        ix = max(0, min(self.x + self.w, other.x + other.w) - max(self.x, other.x))
        iy = max(0, min(self.y + self.h, other.y + other.h) - max(self.y, other.y))
        inter = ix * iy
        union = self.w * self.h + other.w * other.h - inter
        return inter / union if union > 0 else 0.0

    def as_list(self) -> list[int]:
        return [self.x, self.y, self.w, self.h]


@dataclass(frozen=True)
class ChipRatio:
    """Where a training chip lies relative to a detected box: the chip is a square of side
    `scale * box side` centred at the box centre moved by (`dx` * box width, `dy` * box height)."""

    scale: float
    dx: float
    dy: float


# Measured with HaarFaceDetector() on 1,000 UTKFace chips (a seeded random sample; a face was found in
# 973): medians of chip side / box side (0.971, quartiles 0.935-1.020) and of the chip centre's offset
# from the box centre in box sides (dx 0.002, dy 0.080, quartiles 0.068-0.095). See docs/predict.md.
UTKFACE_CHIP = ChipRatio(scale=0.97, dx=0.0, dy=0.08)


class HaarFaceDetector:
    """Frontal faces with `cv2.CascadeClassifier` and OpenCV's bundled cascade (nothing downloaded).

    The image is shrunk so its longer side is at most `max_side` and padded on every side by
    `pad` x its shorter side (edge pixels repeated), so a face that fills the frame, such as an
    aligned chip, still has the margin the cascade needs. Boxes come back in original pixels,
    sorted left to right; a box may reach a little past the image edge for a face cut by the frame
    (it is not clipped, so the crop keeps the face's true scale and centre).
    """

    def __init__(self, scale_factor: float = 1.1, min_neighbors: int = 5, min_size: int = 30,
                 pad: float = 0.25, max_side: int = 800, cascade: str | Path | None = None) -> None:
        path = Path(cascade) if cascade else Path(cv2.data.haarcascades) / HAAR_CASCADE
        if not path.is_file():
            raise UsageError(f"Haar cascade not found: {path} (opencv-python-headless 4.x ships it; 5.x does not)")
        self.classifier = cv2.CascadeClassifier(str(path))
        if self.classifier.empty():
            raise UsageError(f"{path}: OpenCV could not load this Haar cascade")
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.min_size = min_size
        self.pad = pad
        self.max_side = max_side

    def detect(self, rgb: np.ndarray) -> list[Box]:
        """Face boxes in an RGB (or grey) uint8 image."""
        gray = rgb if rgb.ndim == 2 else cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        h, w = gray.shape
        factor = min(1.0, self.max_side / max(h, w))
        if factor < 1.0:
            gray = cv2.resize(gray, (max(1, round(w * factor)), max(1, round(h * factor))),
                              interpolation=cv2.INTER_AREA)
        p = round(self.pad * min(gray.shape))
        if p:
            gray = cv2.copyMakeBorder(gray, p, p, p, p, cv2.BORDER_REPLICATE)
        found = self.classifier.detectMultiScale(gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
                                                 minSize=(self.min_size, self.min_size))
        boxes = []
        for bx, by, bw, bh in np.asarray(found, dtype=float).reshape(-1, 4):
            x0, y0 = round((bx - p) / factor), round((by - p) / factor)
            boxes.append(Box(x0, y0, round((bx - p + bw) / factor) - x0, round((by - p + bh) / factor) - y0))
        return sorted(boxes, key=lambda b: (b.x, b.y))


def chip_square(box: Box, ratio: ChipRatio = UTKFACE_CHIP) -> tuple[int, int, int]:
    """(left, top, side) of the training-chip square for a detected `box` (may reach outside the image)."""
    side = max(1, round(ratio.scale * (box.w + box.h) / 2))
    cx = box.x + box.w / 2 + ratio.dx * box.w
    cy = box.y + box.h / 2 + ratio.dy * box.h
    return round(cx - side / 2), round(cy - side / 2), side


def crop_face(rgb: np.ndarray, box: Box, size: int, ratio: ChipRatio = UTKFACE_CHIP) -> np.ndarray:
    """The chip-like square around `box`, edge pixels repeated where it leaves the image, as (size, size, 3)."""
    left, top, side = chip_square(box, ratio)
    h, w = rgb.shape[:2]
    x0, y0, x1, y1 = max(0, left), max(0, top), min(w, left + side), min(h, top + side)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"face box {box} lies outside the {w}x{h} image")
    crop = rgb[y0:y1, x0:x1]
    borders = (y0 - top, top + side - y1, x0 - left, left + side - x1)
    if any(borders):
        crop = cv2.copyMakeBorder(crop, *borders, cv2.BORDER_REPLICATE)
    return to_square(crop, size, "resize")


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
