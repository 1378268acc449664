"""Image files -> RGB uint8 (size, size, 3) with OpenCV: reduced JPEG decoding, crop, resize.

The hot path per image is: read bytes, peek the JPEG header for the frame size, `cv2.imdecode` at
the smallest libjpeg reduction (1/2, 1/4, 1/8) that still leaves at least `size` pixels on the
side the geometry keeps, crop, `cv2.resize`. PIL is touched only for a JPEG that lacks its end
marker (to tell a truncated file from one with harmless trailing bytes).

A face box path, `FILE#box=x1,y1,...,x4,y4;ext=E` (data/boxes.py, written by the FAEB reader),
names the aligned crop of FILE: the rotated box grown by E of its side on each side is warped to the
square (`crop_box`), whatever `data.geometry` says.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from ordinalage.data.boxes import extended_corners, parse_box_path
from ordinalage.errors import UsageError

GEOMETRIES = ("auto", "resize", "center_square", "crop_megaage")
MEGAAGE_CROP = 20  # pixels cut from top and bottom of a 178x218 MegaAge image (as in SSR-Net)
# Bump whenever a change here alters the pixels `decode_image` returns: decoded-image caches
# (data/cache.py) are keyed on it, so old caches are then rebuilt instead of reused.
DECODER_VERSION = 1

_REDUCED = {
    8: cv2.IMREAD_REDUCED_COLOR_8,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    2: cv2.IMREAD_REDUCED_COLOR_2,
    1: cv2.IMREAD_COLOR,
}
_SOI, _EOI = b"\xff\xd8", b"\xff\xd9"
# Start-of-frame markers (baseline, progressive, lossless, arithmetic ...): C0-CF except C4, C8, CC.
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_NO_LENGTH = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM and RSTn carry no length field

# OpenCV's own thread pool is off in every process that imports the data layer: a DataLoader
# worker forked after the parent used that pool (e.g. filling the decoded-image cache) deadlocks
# in OpenCV, and the parallelism here comes from loader workers and the cache's thread pool anyway.
cv2.setNumThreads(0)


class ImageDecodeError(UsageError):
    """A file that is not a readable image; `path` and `reason` say which and why."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: cannot read image ({reason})")
        self.path = str(path)
        self.reason = reason


def check_geometry(geometry: str) -> str:
    """Return `geometry` if known, else raise a UsageError naming the config key."""
    if geometry not in GEOMETRIES:
        raise UsageError(
            f"config key 'data.geometry': unknown value {geometry!r} (choose from {', '.join(GEOMETRIES)})"
        )
    return geometry


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) from a JPEG's start-of-frame header, or None if `data` is not a parsable JPEG."""
    if not data.startswith(_SOI):
        return None
    pos, n = 2, len(data)
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _NO_LENGTH:
            pos += 2
            continue
        (length,) = struct.unpack_from(">H", data, pos + 2)
        if marker in _SOF:
            if pos + 9 > n:
                return None
            height, width = struct.unpack_from(">HH", data, pos + 5)
            return height, width
        if marker == 0xDA or length < 2:  # start of scan before any frame header: give up
            return None
        pos += 2 + length
    return None


def _kept_side(height: int, width: int, geometry: str) -> int:
    """Shortest side (full-resolution pixels) left after the geometry's crop."""
    crop = 2 * MEGAAGE_CROP if geometry == "crop_megaage" and height > 2 * MEGAAGE_CROP else 0
    return min(height - crop, width)


def choose_reduction(height: int, width: int, size: int, geometry: str) -> int:
    """Largest libjpeg reduction (8, 4, 2 or 1) that keeps at least `size` pixels after the crop."""
    kept = _kept_side(height, width, geometry)
    return next(factor for factor in _REDUCED if kept // factor >= size or factor == 1)


def _truncated_jpeg(data: bytes) -> str | None:
    """A reason if a JPEG's bytes are cut short, else None (PIL only when the end marker is missing)."""
    if data.rstrip(b"\x00\r\n\t ").endswith(_EOI):
        return None
    from PIL import Image  # rare path: trailing bytes after EOI, or a truncated file

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
    except Exception as exc:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError ...
        return f"truncated or corrupt JPEG: {exc}"
    return None


# ---------------------------------------------------------------------------------------------
# face boxes (data/boxes.py): the aligned crop


def box_transform(box: Sequence[float], extension: float, size: int, reduction: int = 1) -> np.ndarray:
    """The 2x3 affine matrix taking an image decoded at 1/`reduction` to the (size, size) crop: the
    extended corners A, B, C go to (0, 0), (size-1, 0), (size-1, size-1) (`cv2.getAffineTransform`)."""
    src = extended_corners(box, extension)[:3]
    if reduction != 1:  # a reduced pixel j covers full pixels [j f, (j+1) f): its centre is f j + (f-1)/2
        src = (src + 0.5) / reduction - 0.5
    dst = np.float32([[0, 0], [size - 1, 0], [size - 1, size - 1]])
    return cv2.getAffineTransform(np.float32(src), dst)


def _box_sides(box: Sequence[float], extension: float) -> tuple[float, float]:
    a, b, c, _d = extended_corners(box, extension)
    return float(np.hypot(*(b - a))), float(np.hypot(*(c - b)))


def crop_box(image: np.ndarray, box: Sequence[float], extension: float, size: int, reduction: int = 1) -> np.ndarray:
    """The aligned (size, size) crop of an image decoded at 1/`reduction`: `cv2.warpAffine` with
    bilinear interpolation; parts of the box outside the image are black (BORDER_CONSTANT 0, as FAEB)."""
    matrix = box_transform(box, extension, size, reduction)
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))


def _read(path: str | Path, shown: str | Path) -> bytes:
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ImageDecodeError(shown, "file not found") from None
    except OSError as exc:
        raise ImageDecodeError(shown, exc.strerror or str(exc)) from None
    if not data:
        raise ImageDecodeError(shown, "empty file")
    return data


def decode_image(path: str | Path, size: int, geometry: str = "auto") -> np.ndarray:
    """Read `path` as RGB uint8 of shape (size, size, 3) after `geometry`; raise ImageDecodeError.

    Geometries: `resize` (stretch to a square), `center_square` (centre crop to the short side,
    then resize), `crop_megaage` (cut 20 px - scaled by the decode reduction - off top and bottom,
    then resize), `auto` (`center_square` for a non-square image, else `resize`). A face box path
    (`box_path`) is cropped to its box (`crop_box`) instead, whatever the geometry.
    """
    check_geometry(geometry)
    file, box, extension = parse_box_path(path)
    data = _read(file, path)

    factor, flag = 1, cv2.IMREAD_COLOR
    hw = jpeg_size(data)
    if hw is not None:
        reason = _truncated_jpeg(data)
        if reason:
            raise ImageDecodeError(path, reason)
        if box is None:
            factor = choose_reduction(hw[0], hw[1], size, geometry)
        else:  # decode reduced while the extended box keeps at least `size` pixels on its short side
            kept = min(_box_sides(box, extension))
            factor = next(f for f in _REDUCED if kept / f >= size or f == 1)
        flag = _REDUCED[factor]
    bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flag)
    if bgr is None or bgr.size == 0:
        raise ImageDecodeError(path, "not a decodable image")
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    if box is not None:
        return crop_box(rgb, box, extension, size, factor)
    full_height = hw[0] if hw is not None else None
    return to_square(rgb, size, geometry, factor, full_height)


def to_square(
    image: np.ndarray, size: int, geometry: str, reduction: int = 1, full_height: int | None = None
) -> np.ndarray:
    """Apply `geometry` to an HxWx3 image decoded at 1/`reduction` of its `full_height`; return (size, size, 3)."""
    h, w = image.shape[:2]
    if geometry == "auto":
        geometry = "center_square" if h != w else "resize"
    if geometry == "center_square":
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        image = image[top : top + side, left : left + side]
    elif geometry == "crop_megaage":
        # libjpeg rounds reduced sides up: map the full-size rows [20, H - 20) and keep whole rows only
        full = full_height or h * reduction
        top, bottom = -(-MEGAAGE_CROP // reduction), (full - MEGAAGE_CROP) // reduction
        if bottom - top > 0:
            image = image[top:bottom]
    elif geometry != "resize":
        check_geometry(geometry)
    h, w = image.shape[:2]
    if (h, w) == (size, size):
        return np.ascontiguousarray(image)
    # INTER_AREA only where it matters: shrinking by 2x or more (e.g. a PNG, or no JPEG reduction
    # left). Below 2x - always the case after a reduced JPEG decode - bilinear is as faithful to a
    # full-size area resize on UTKFace (mean abs diff 0.62 vs 0.66 grey levels) and 4x faster.
    interpolation = cv2.INTER_AREA if min(h, w) >= 2 * size else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interpolation)
