"""Face boxes and the maths that turns them into crops that look like training chips.

A Haar box covers roughly brow to mouth; a training chip (UTKFace: an aligned 200x200 face) shows
a little more, and lower. A `ChipRatio` says where the chip lies relative to a box (`UTKFACE_CHIP`:
measured with the Haar detector on real UTKFace chips, `calibration.measure_chip_ratio`, numbers in
docs/predict.md). `crop_face` cuts that square out of a photo and resizes it with the data layer's
own `to_square`, so a detected face reaches the model framed and scaled as in training.

A box may carry a roll `angle` (degrees; the face's eye line turned clockwise in the image): found
in a pass over the image turned by that angle (`detect_turned`), or levelled from the two eyes
(`haar.HaarFaceDetector.level`). Its chip square is then turned by the same angle, so the crop shows
the face upright, as the aligned training chips do.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from ordinalage.data.decode import to_square


@dataclass(frozen=True)
class Box:
    """A face box in pixels: top-left corner (x, y), width w, height h, and the face's roll `angle`
    in degrees (0: upright; positive: turned clockwise in the image). A turned box is the (x, y, w,
    h) rectangle turned by `angle` about its centre; (x, y, w, h) alone is the axis-aligned
    approximation (same centre and size) that IoU, drawing and the JSON `box` use."""

    x: int
    y: int
    w: int
    h: int
    angle: float = field(default=0.0, compare=False)

    def iou(self, other: Box) -> float:
        """Intersection over union with `other` (0 when they do not overlap)."""
        ix = max(0, min(self.x + self.w, other.x + other.w) - max(self.x, other.x))
        iy = max(0, min(self.y + self.h, other.y + other.h) - max(self.y, other.y))
        inter = ix * iy
        union = self.w * self.h + other.w * other.h - inter
        return inter / union if union > 0 else 0.0

    def as_list(self) -> list[int]:
        return [self.x, self.y, self.w, self.h]

    @property
    def centre(self) -> tuple[float, float]:
        return self.x + self.w / 2, self.y + self.h / 2


@dataclass(frozen=True)
class ChipRatio:
    """Where a training chip lies relative to a detected box: the chip is a square of side
    `scale * box side` centred at the box centre moved by (`dx` * box width, `dy` * box height)
    (in the box's own frame: turned with a turned box)."""

    scale: float
    dx: float
    dy: float


# Measured with HaarFaceDetector() on 1,000 UTKFace chips (a seeded random sample; a face was found in
# 973): medians of chip side / box side (0.971, quartiles 0.935-1.020) and of the chip centre's offset
# from the box centre in box sides (dx 0.002, dy 0.080, quartiles 0.068-0.095). See docs/predict.md.
UTKFACE_CHIP = ChipRatio(scale=0.97, dx=0.0, dy=0.08)


def rotation(angle: float) -> np.ndarray:
    """The 2x2 matrix that turns a vector by `angle` degrees (clockwise in image coordinates)."""
    a = math.radians(angle)
    return np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])


# ---------------------------------------------------------------------------------------------
# searching an image (shared by the detectors)


def suppress_nested(boxes: Sequence[Box], overlap: float = 0.3) -> list[Box]:
    """Drop a box whose centre lies inside a larger kept box or that overlaps one by IoU > `overlap`:
    faces do not nest, so a second box on one face (a cascade's partial hit) is not a second face."""
    kept: list[Box] = []
    for b in sorted(boxes, key=lambda b: -b.w * b.h):
        cx, cy = b.centre
        if any(k.iou(b) > overlap or (k.x <= cx <= k.x + k.w and k.y <= cy <= k.y + k.h) for k in kept):
            continue
        kept.append(b)
    return sorted(kept, key=lambda b: (b.x, b.y))


def turned_image(image: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """The image turned so that a face rolled by `angle` stands upright (the whole image kept, edges
    repeated), and the 2x3 matrix from its pixels back to the original's."""
    h, w = image.shape[:2]
    rot = rotation(angle)
    c, s = abs(rot[0, 0]), abs(rot[1, 0])
    tw, th = round(w * c + h * s), round(w * s + h * c)
    back = np.zeros((2, 3))
    back[:, :2] = rot
    back[:, 2] = np.array([w / 2, h / 2]) - rot @ np.array([tw / 2, th / 2])
    turned = cv2.warpAffine(image, back, (tw, th), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                            borderMode=cv2.BORDER_REPLICATE)
    return turned, back


def detect_turned(detect: Callable[[np.ndarray], list[Box]], image: np.ndarray, angle: float) -> list[Box]:
    """`detect` on the image turned by `angle`; boxes mapped back (same size, centre moved, their own
    angle plus `angle`)."""
    turned, back = turned_image(image, angle)
    out = []
    for b in detect(turned):
        cx, cy = back[:, :2] @ np.array(b.centre) + back[:, 2]
        out.append(Box(round(cx - b.w / 2), round(cy - b.h / 2), b.w, b.h, angle=float(angle + b.angle)))
    return out


def shrink_and_pad(gray: np.ndarray, max_side: int, pad: float) -> tuple[np.ndarray, float, int]:
    """A grey image as the detectors search it: shrunk so its longer side is at most `max_side`
    (INTER_AREA), then padded by `pad` x its shorter side on every side (edge pixels repeated), so
    faces at the border are found whole. Returns the image, the scale `factor` and the pad `p`:
    a box found at (x, y) lies at ((x - p) / factor, (y - p) / factor) in the original."""
    h, w = gray.shape
    factor = min(1.0, max_side / max(h, w))
    if factor < 1.0:
        gray = cv2.resize(gray, (max(1, round(w * factor)), max(1, round(h * factor))), interpolation=cv2.INTER_AREA)
    p = round(pad * min(gray.shape))
    if p:
        gray = cv2.copyMakeBorder(gray, p, p, p, p, cv2.BORDER_REPLICATE)
    return gray, factor, p


# ---------------------------------------------------------------------------------------------
# chip squares


def chip_frame(box: Box, ratio: ChipRatio = UTKFACE_CHIP) -> tuple[float, float, float, float]:
    """(centre x, centre y, side, angle) of the training-chip square for a detected `box`."""
    side = max(1.0, ratio.scale * (box.w + box.h) / 2)
    cx, cy = np.array(box.centre) + rotation(box.angle) @ np.array([ratio.dx * box.w, ratio.dy * box.h])
    return float(cx), float(cy), float(side), float(box.angle)


def box_for_frame(cx: float, cy: float, side: float, angle: float, ratio: ChipRatio = UTKFACE_CHIP) -> Box:
    """The (square) box whose chip square by `ratio` is the given one: `chip_frame`'s inverse."""
    b = side / ratio.scale
    centre = np.array([cx, cy]) - rotation(angle) @ np.array([ratio.dx * b, ratio.dy * b])
    return Box(round(centre[0] - b / 2), round(centre[1] - b / 2), round(b), round(b), angle=angle)


def chip_square(box: Box, ratio: ChipRatio = UTKFACE_CHIP) -> tuple[int, int, int]:
    """(left, top, side) of the training-chip square for a detected upright `box` (may reach outside the image)."""
    side = max(1, round(ratio.scale * (box.w + box.h) / 2))
    cx = box.x + box.w / 2 + ratio.dx * box.w
    cy = box.y + box.h / 2 + ratio.dy * box.h
    return round(cx - side / 2), round(cy - side / 2), side


def square_corners(cx: float, cy: float, side: float, angle: float) -> np.ndarray:
    """Corners (4, 2) of a square turned by `angle`: top-left, top-right, bottom-right, bottom-left."""
    half = side / 2
    local = np.array([[-half, -half], [half, -half], [half, half], [-half, half]])
    return local @ rotation(angle).T + np.array([cx, cy])


def frame_ratio(box: Box, cx: float, cy: float, side: float) -> tuple[float, float, float]:
    """(scale, dx, dy) that would map `box` exactly onto the chip square (cx, cy, side): one sample of
    a `ChipRatio` (offsets in the box's own frame)."""
    off = rotation(-box.angle) @ (np.array([cx, cy]) - np.array(box.centre))
    return side / ((box.w + box.h) / 2), float(off[0] / box.w), float(off[1] / box.h)


# ---------------------------------------------------------------------------------------------
# cutting and pasting chips


def crop_face(rgb: np.ndarray, box: Box, size: int, ratio: ChipRatio = UTKFACE_CHIP,
              view: tuple[float, float, float] = (1.0, 0.0, 0.0)) -> np.ndarray:
    """The chip-like square around `box`, edge pixels repeated where it leaves the image, as (size, size, 3).

    `view` = (scale, dx, dy) moves the square: side times `scale`, centre moved by (dx, dy) chip
    sides in the chip's frame (test-time jitter); (1, 0, 0) is the square itself. A turned box is
    cut turned (at full resolution, then resized), so the face comes out upright."""
    if box.angle == 0 and view == (1.0, 0.0, 0.0):
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
    cx, cy, side, angle = chip_frame(box, ratio)
    scale, dx, dy = view
    cx, cy = np.array([cx, cy]) + rotation(angle) @ np.array([dx * side, dy * side])
    side *= scale
    out = max(1, round(side))
    rot = rotation(angle) * (side / out)
    back = np.zeros((2, 3))
    back[:, :2] = rot
    back[:, 2] = np.array([cx, cy]) - 0.5 - rot @ np.array([(out - 1) / 2, (out - 1) / 2])  # pixel centres
    crop = cv2.warpAffine(rgb, back, (out, out), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)
    return to_square(crop, size, "resize")


def paste_chip(chip: np.ndarray, canvas: np.ndarray, cx: float, cy: float, side: float,
               angle: float = 0.0) -> tuple[float, float, float, float]:
    """Paste an aligned face chip into `canvas` (in place): resized to `side` px (area-averaged),
    turned by `angle` degrees (clockwise, as `Box.angle`), centred at (cx, cy). Returns its true
    chip square (cx, cy, side, angle) in `canvas` pixels, to compare with `chip_frame` of a detection."""
    small = cv2.resize(chip, (max(1, round(side)), max(1, round(side))), interpolation=cv2.INTER_AREA)
    s = small.shape[0]
    m = cv2.getRotationMatrix2D(((s - 1) / 2, (s - 1) / 2), -angle, 1.0)  # cv2 turns counter-clockwise
    m[:, 2] += (cx - (s - 1) / 2 - 0.5, cy - (s - 1) / 2 - 0.5)
    cv2.warpAffine(small, m, (canvas.shape[1], canvas.shape[0]), dst=canvas, flags=cv2.INTER_LINEAR,
                   borderMode=cv2.BORDER_TRANSPARENT)
    return float(cx), float(cy), float(s), float(angle)
