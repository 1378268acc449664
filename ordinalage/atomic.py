"""Atomic file writers and JSON conversion: the package's one way to write a file that a reader,
or a process killed mid-write, never sees half-written. No torch, no package imports."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np


def atomic_write(path: str | Path, write: Callable[[IO[Any]], object], binary: bool = False) -> Path:
    """The package's one atomic writer: `write(fh)` into a temporary file beside `path`, fsync, then
    rename it over `path`, so a reader (or a run killed mid-write) never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with (os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8", newline="")) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """`text` written atomically to `path` (see `atomic_write`)."""
    return atomic_write(path, lambda fh: fh.write(text))


def jsonable(obj: Any) -> Any:
    """numpy scalars/arrays, tuples and non-string keys -> plain JSON types."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path: str | Path, obj: Any) -> Path:
    """Atomic JSON (indented, numpy-safe)."""
    return atomic_write_text(path, json.dumps(jsonable(obj), indent=2) + "\n")


__all__ = ["atomic_write", "atomic_write_text", "jsonable", "write_json"]
