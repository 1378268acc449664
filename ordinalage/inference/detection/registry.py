"""Face detectors by name (`--detector`): `haar` (OpenCV's bundled cascade), `dlib` (an optional extra)
and `auto` (the default: dlib when it is installed, else Haar). The one list of detectors, and the one
way to make one."""

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


AUTO = "auto"
DLIB_INSTALL = "pip install 'ordinalage[dlib]'"
# Measured on 300 UTKFace faces pasted into plain photos (docs/predict.md): dlib finds more faces and
# its crops add less error than Haar's.
AUTO_NOTICE = ("face detector: Haar (dlib is not installed; dlib finds more faces and its crops add less "
               f"error, docs/predict.md: {DLIB_INSTALL})")


def dlib_installed() -> bool:
    """True when the dlib module can be imported (without importing it)."""
    import importlib.util

    return importlib.util.find_spec("dlib") is not None


def resolve_detector_name(name: str) -> str:
    """`auto` -> dlib when installed, else haar; any other name as given."""
    if name != AUTO:
        return name
    return "dlib" if dlib_installed() else "haar"


def auto_notice(name: str) -> str | None:
    """The one line to say when `auto` falls back to Haar (None otherwise)."""
    return AUTO_NOTICE if name == AUTO and not dlib_installed() else None


def detector_choices() -> list[str]:
    """The names `--detector` takes: `auto` and every registered detector."""
    return [AUTO, *DETECTORS]


def make_detector(name: str) -> FaceDetector:
    """A detector by name (`auto` resolved); a UsageError naming the choices, or the pip command for a
    missing optional package."""
    name = resolve_detector_name(name)
    if name not in DETECTORS:
        raise UsageError(f"detector: unknown detector {name!r} (choose from {', '.join(detector_choices())})",
                         option="detector")
    return DETECTORS[name]()
