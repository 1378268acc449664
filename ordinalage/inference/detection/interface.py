"""What every face detector is (`FaceDetector`), and the error for one whose optional package is missing.

A detector has a `name` and `detect(rgb) -> list[Box]`: boxes in image pixels, left to right, with
a roll `angle` on faces found turned. The detectors by name are in `registry`.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from ordinalage.errors import UsageError
from ordinalage.inference.detection.geometry import Box


class FaceDetector(Protocol):
    name: str

    def detect(self, rgb: np.ndarray) -> list[Box]: ...


# detector name -> (module to import, the pip command that installs it)
OPTIONAL: dict[str, tuple[str, str]] = {
    "dlib": ("dlib", "pip install 'ordinalage[dlib]'  (or: pip install dlib-bin face_recognition_models)"),
}


def missing_package(name: str, exc: ImportError) -> UsageError:
    """The UsageError for detector `name` when its optional package cannot be imported: names the pip command."""
    module, command = OPTIONAL[name]
    return UsageError(f"detector {name!r} needs the optional package {module!r}, which is not installed "
                      f"({exc}); install it with: {command}")
