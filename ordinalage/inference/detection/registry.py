"""Face detectors by name (`--detector`): `haar` (OpenCV's bundled cascade, the default) and `dlib`
(an optional extra). The one list of detectors, and the one way to make one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ordinalage.errors import UsageError
from ordinalage.inference.detection.dlib import DlibFaceDetector
from ordinalage.inference.detection.haar import HaarFaceDetector
from ordinalage.inference.detection.interface import FaceDetector

DETECTORS: dict[str, Callable[[], Any]] = {
    "haar": HaarFaceDetector,
    "dlib": DlibFaceDetector,
}


def make_detector(name: str) -> FaceDetector:
    """A detector by name; a UsageError naming the choices, or the pip command for a missing optional package."""
    if name not in DETECTORS:
        raise UsageError(f"detector: unknown detector {name!r} (choose from {', '.join(DETECTORS)})",
                         option="detector")
    return DETECTORS[name]()
