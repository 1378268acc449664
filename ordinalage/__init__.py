"""ordinalage: facial age estimation by classification, ordinal regression and regression.

The Python API is loaded on first use (importing the package stays cheap):

    import ordinalage
    est = ordinalage.load("runs/x")          # an AgeEstimator (run folder, .pt, or a shipped model: load())
    faces = est.predict("photo.jpg")         # list[Face]
    run = ordinalage.fit("cfg.yaml", epochs=2)   # train (a Run); ordinalage.evaluate(run, split="test")
    student = ordinalage.distill(run, budget="10m")   # one model from a teacher's distributions
    cmp = ordinalage.bakeoff(grid={"model.head": ["class", "coral"]}, seeds=3, data="synth", budget="2m")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ordinalage.version import __version__

_LAZY = {"load": "ordinalage.inference.api", "AgeEstimator": "ordinalage.inference.api",
         "Face": "ordinalage.inference.api", "fit": "ordinalage.api", "evaluate": "ordinalage.api",
         "Run": "ordinalage.api", "bakeoff": "ordinalage.api", "distill": "ordinalage.api"}

__all__ = ["AgeEstimator", "Face", "Run", "__version__", "bakeoff", "distill", "evaluate", "fit", "load"]

if TYPE_CHECKING:  # pragma: no cover
    from ordinalage.api import Run, bakeoff, distill, evaluate, fit
    from ordinalage.inference.api import AgeEstimator, Face, load


def __getattr__(name: str) -> Any:
    """Import the API objects on first access (PEP 562)."""
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ordinalage' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
