"""`photos:PATH`: any images, ages unknown (a plain folder of photos, no ages in the names, no group
sub-folders), one record per face found in them.

The faces are found as `ordinalage predict` finds them; the finder is passed in by the caller
(`inference.detectors.photo_records` gives the same detector and crop as `predict`), so this layer
needs no detector. Each face becomes a `Record` with a face box path (`boxes.box_path`: the turned
chip square of the face, extension 0, so that two faces of one photo are two paths and any consumer
of record paths decodes the face's own crop), `age` NaN, and `meta` = {file, face, box, angle,
detector}.

Commands that need ages (training, evaluation) get the spec through `sources.read_sources`, whose
reader for `photos:` refuses it with a message saying so (`read_photos_as_labelled`); the commands
that need none (`prior estimate`) read it with `photo_records`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ordinalage.data.boxes import box_path
from ordinalage.data.files import list_images
from ordinalage.data.records import Record, Skipped
from ordinalage.errors import UsageError

KIND = "photos"
UNKNOWN_AGE = math.nan

#: a face finder: image file -> faces, each (corners (4, 2) of its chip square in 0-based pixels:
#: top-left, top-right, bottom-right, bottom-left; [x, y, w, h] box; roll angle in degrees)
FaceFinder = Callable[[Path], Sequence[tuple[np.ndarray, Sequence[int], float]]]


def is_photos_spec(spec: str) -> bool:
    return spec.strip().startswith(KIND + ":")


def photo_files(spec: str) -> list[Path]:
    """The image files of a `photos:PATH` spec (a folder, searched recursively, or one image)."""
    spec = spec.strip()
    if not is_photos_spec(spec):
        raise UsageError(f"data spec {spec!r}: expected photos:PATH")
    raw = spec[len(KIND) + 1:]
    if not raw:
        raise UsageError(f"data spec {spec!r}: missing PATH after 'photos:'")
    path = Path(raw).expanduser()
    if not path.exists():
        raise UsageError(f"data spec {spec!r}: path not found: {path}")
    files = list_images(path.resolve(), recursive=True, allow_empty=True)
    if not files:
        raise UsageError(f"data spec {spec!r}: no image files in {path}")
    return files


def photo_records(spec: str, find_faces: FaceFinder, detector: str = "haar",
                  skipped: Skipped | None = None) -> list[Record]:
    """One record per face found by `find_faces` in the images of `spec`, age unknown (NaN).

    An image where no face is found, or that cannot be read (`find_faces` raises UsageError), is
    counted in `skipped` (reported on stderr when the caller reports it) and left out."""
    skips = skipped if skipped is not None else Skipped(spec)
    records: list[Record] = []
    for path in photo_files(spec):
        try:
            faces = find_faces(path)
        except UsageError as exc:
            skips.add("unreadable", f"{path} ({exc})")
            continue
        if not faces:
            skips.add("no face found", str(path))
            continue
        for i, (corners, box, angle) in enumerate(faces):
            one_based = (np.asarray(corners, dtype=np.float64).reshape(4, 2) + 1.0).ravel()
            records.append(Record(box_path(path, one_based.tolist(), 0.0), UNKNOWN_AGE, None, spec,
                                  {"file": str(path), "face": i, "box": [int(v) for v in box],
                                   "angle": float(angle), "detector": detector}))
    return records


def read_photos_as_labelled(path: Path, source: str, options: dict[str, str]) -> tuple[list[Record], Skipped]:
    """The `photos:` reader for `sources.read_sources`, which serves commands that need ages: refused."""
    raise UsageError(f"data spec {source!r}: photos have no ages, so they cannot be used to train or "
                     "evaluate (give labelled data: utkface:, folder:, csv:, ...); photos: serves where no ages "
                     "are needed, such as estimating the age mix of a set of photos")
