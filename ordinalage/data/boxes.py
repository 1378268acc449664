"""Face box paths: `FILE#box=x1,y1,x2,y2,x3,y3,x4,y4;ext=E` names the aligned face crop of FILE.

The FAEB reader (data/faeb.py) gives each record such a path; `decode.decode_image` warps the box to
the square (`decode.crop_box`), `prepare_data` and the decoded-image cache hash FILE and key the cache
rows on the box and the extension. The box rides in the path (no torch, no OpenCV here) so that
every consumer of record paths (split.csv, predictions, the cache) tells two boxes of one image apart.

Box numbers: corners A, B, C, D clockwise from the face's top-left, as x, y in FAEB's 1-based pixel
coordinates (FAEB's `crop_image(..., one_based_bbox=True)`: the top-left pixel's centre is (1, 1)).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ordinalage.errors import UsageError

MARK = "#box="
_BOX_PATH = re.compile(r"^(?P<file>.+)#box=(?P<box>[^#;]+);ext=(?P<ext>[^#;]+)$", re.DOTALL)


def _number(value: float) -> str:
    """Shortest text that reads back as the same float ("21", "-13", "0.25")."""
    value = float(value)
    return repr(int(value)) if value.is_integer() else repr(value)


def check_extension(extension: float) -> float:
    """`data.bbox_extension` if usable (finite, above -0.5: the box keeps a positive size), else a UsageError."""
    if isinstance(extension, bool) or not isinstance(extension, int | float) or not math.isfinite(extension) \
            or extension <= -0.5:
        raise UsageError(f"config key 'data.bbox_extension': {extension!r} must be a number above -0.5 "
                         "(the share of the face box's side added on each side; FAEB's default 0.25)")
    return float(extension)


def box_path(file: str | Path, box: Sequence[float], extension: float) -> str:
    """The path naming the crop of `file` inside `box` (8 numbers) grown by `extension` of its side on each side."""
    numbers = [float(v) for v in box]
    if len(numbers) != 8 or not all(math.isfinite(v) for v in numbers):
        raise ValueError(f"a face box is 8 finite numbers, got {list(box)}")
    return f"{file}{MARK}{','.join(_number(v) for v in numbers)};ext={_number(check_extension(extension))}"


def parse_box_path(path: str | Path) -> tuple[str, tuple[float, ...] | None, float]:
    """(file, box or None, extension) of a path; any other path gives (path, None, 0.0)."""
    text = str(path)
    m = _BOX_PATH.match(text) if MARK in text else None
    if m is None:
        return text, None, 0.0
    try:
        box = tuple(float(v) for v in m.group("box").split(","))
        extension = float(m.group("ext"))
    except ValueError:
        return text, None, 0.0
    if len(box) != 8 or not all(math.isfinite(v) for v in (*box, extension)):
        return text, None, 0.0
    return m.group("file"), box, extension


def image_file(path: str | Path) -> str:
    """The image file behind a path (a face box path's FILE; any other path itself)."""
    return parse_box_path(path)[0]


def box_suffix(path: str | Path) -> str:
    """The `#box=...;ext=...` part of a face box path ("" for any other path)."""
    text = str(path)
    return text[len(image_file(text)):]


def extended_corners(box: Sequence[float], extension: float) -> np.ndarray:
    """Corners A, B, C, D (4, 2) in 0-based pixel coordinates of `box` grown by `extension` of its width
    on the left and right and of its height on top and bottom, as FAEB's `crop_image` does:
    A' = A + (A - B) e + (A - D) e, B' = B + (B - A) e + (B - C) e, and so on round the box."""
    a, b, c, d = np.asarray(box, dtype=np.float64).reshape(4, 2) - 1.0
    return np.stack([a + (a - b) * extension + (a - d) * extension,
                     b + (b - a) * extension + (b - c) * extension,
                     c + (c - d) * extension + (c - b) * extension,
                     d + (d - c) * extension + (d - a) * extension])


def box_area(box: Sequence[float]) -> float:
    """Area of the quadrilateral `box` (shoelace); 0 for a degenerate box."""
    x, y = np.asarray(box, dtype=np.float64).reshape(4, 2).T
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2.0)
