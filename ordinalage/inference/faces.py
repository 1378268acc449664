"""Face detection with OpenCV's bundled Haar cascade, and crops that look like training chips.

A Haar box covers roughly brow to mouth; a training chip (UTKFace: an aligned 200x200 face) shows
a little more, and lower. `UTKFACE_CHIP` says where the chip lies relative to the box, measured by
running this detector on real UTKFace chips (`measure_chip_ratio`, numbers in docs/predict.md).
`crop_face` cuts that square out of a photo and resizes it with the data layer's own `to_square`,
so a detected face reaches the model framed and scaled as in training.

A box may carry a roll `angle` (degrees; the face's eye line turned clockwise in the image): found
in a pass over the image turned by that angle (`HaarFaceDetector.angles`, tried when the upright
passes find nothing), or levelled from the two eyes (`level_eyes`). Its chip square is then turned
by the same angle, so the crop shows the face upright, as the aligned training chips do.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ordinalage.atomic import write_json
from ordinalage.data.decode import to_square
from ordinalage.errors import UsageError

HAAR_CASCADE = "haarcascade_frontalface_default.xml"
EYE_CASCADE = "haarcascade_eye.xml"
EYE_BOX = 160  # eyes are searched in a face box shrunk to at most this width


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

CROP_FILE = "face_crop.json"  # in a run folder: the run's own box-to-chip ratio per detector
CROP_FORMAT = "ordinalage-face-crop"


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


def _rotation(angle: float) -> np.ndarray:
    a = math.radians(angle)
    return np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])


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
    rot = _rotation(angle)
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
        self.classifier = _cascade(path)
        self.eyes = _cascade(Path(cv2.data.haarcascades) / EYE_CASCADE) if level_eyes else None
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
        rot = _rotation(angle) * k
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


def _cascade(path: Path) -> cv2.CascadeClassifier:
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


def chip_frame(box: Box, ratio: ChipRatio = UTKFACE_CHIP) -> tuple[float, float, float, float]:
    """(centre x, centre y, side, angle) of the training-chip square for a detected `box`."""
    side = max(1.0, ratio.scale * (box.w + box.h) / 2)
    cx, cy = np.array(box.centre) + _rotation(box.angle) @ np.array([ratio.dx * box.w, ratio.dy * box.h])
    return float(cx), float(cy), float(side), float(box.angle)


def box_for_frame(cx: float, cy: float, side: float, angle: float, ratio: ChipRatio = UTKFACE_CHIP) -> Box:
    """The (square) box whose chip square by `ratio` is the given one: `chip_frame`'s inverse."""
    b = side / ratio.scale
    centre = np.array([cx, cy]) - _rotation(angle) @ np.array([ratio.dx * b, ratio.dy * b])
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
    return local @ _rotation(angle).T + np.array([cx, cy])


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
    cx, cy = np.array([cx, cy]) + _rotation(angle) @ np.array([dx * side, dy * side])
    side *= scale
    out = max(1, round(side))
    rot = _rotation(angle) * (side / out)
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


def frame_ratio(box: Box, cx: float, cy: float, side: float) -> tuple[float, float, float]:
    """(scale, dx, dy) that would map `box` exactly onto the chip square (cx, cy, side): one sample of
    a `ChipRatio` (offsets in the box's own frame)."""
    off = _rotation(-box.angle) @ (np.array([cx, cy]) - np.array(box.centre))
    return side / ((box.w + box.h) / 2), float(off[0] / box.w), float(off[1] / box.h)


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
