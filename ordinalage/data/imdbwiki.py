"""`imdbwiki:PATH`: IMDB-WIKI as distributed: `imdb_crop/imdb.mat` or `wiki_crop/wiki.mat` (a 1x1
MATLAB struct `imdb` / `wiki` of 1xN fields) next to the face crops named by `full_path`.

Age = `photo_taken` - the year of `dob` (a MATLAB datenum), less one when the birthday falls in the
second half of the year (the photo is assumed taken mid-year, as in Rothe et al.). The usual cleaning
drops, counted per reason: no face or a weak one (`face_score` below `?min_score=`, default 1.0),
a second face in the photo (`second_face_score` not NaN), a missing or impossible date of birth, an
age outside 0-100, and crops not on disk. `meta["subject"]` is `celeb_id` (IMDB) or the name (WIKI).
"""

from __future__ import annotations

import math
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from ordinalage.data.records import Record, Skipped
from ordinalage.errors import UsageError

REQUIRED = ("dob", "photo_taken", "full_path", "face_score", "second_face_score")
MAX_AGE = 100


def find_mat(path: Path) -> Path:
    """The .mat file itself, or imdb.mat / wiki.mat in the folder or in its imdb_crop/ or wiki_crop/."""
    if path.is_file():
        return path
    for sub in (".", "imdb_crop", "wiki_crop"):
        for name in ("imdb.mat", "wiki.mat"):
            if (path / sub / name).is_file():
                return (path / sub / name).resolve()
    raise UsageError(f"{path}: no imdb.mat or wiki.mat here or in imdb_crop/ or wiki_crop/")


def load_struct(mat: Path) -> tuple[str, dict[str, np.ndarray]]:
    """(struct name, {field: 1-D array}) of the one struct in an IMDB-WIKI .mat file."""
    from scipy.io import loadmat

    try:
        data = loadmat(str(mat), squeeze_me=True)
    except (ValueError, NotImplementedError, OSError) as exc:
        raise UsageError(f"{mat}: not a MATLAB v5 .mat file scipy can read ({exc})") from None
    names = [k for k in data if not k.startswith("__")]
    if len(names) != 1 or data[names[0]].dtype.names is None:
        raise UsageError(f"{mat}: expected one struct (imdb or wiki), found {', '.join(names) or 'nothing'}")
    struct = data[names[0]]
    fields = {f: np.atleast_1d(struct[f].item() if struct.ndim == 0 else struct[f]) for f in struct.dtype.names}
    missing = [f for f in REQUIRED if f not in fields]
    if missing:
        raise UsageError(f"{mat}: struct '{names[0]}' has no field {missing[0]!r} "
                         f"(fields: {', '.join(struct.dtype.names)})")
    n = len(fields["full_path"])
    bad = [f for f in REQUIRED if len(fields[f]) != n]
    if bad:
        raise UsageError(f"{mat}: field {bad[0]!r} has {len(fields[bad[0]])} entries, full_path has {n}")
    return names[0], fields


def age_at_photo(dob: float, photo_taken: float) -> int | None:
    """Whole years at the photo (taken mid-year) of a MATLAB datenum birth date; None when invalid."""
    if not (math.isfinite(dob) and math.isfinite(photo_taken)) or dob < 367:
        return None
    try:
        born = date.fromordinal(int(dob) - 366)
    except (ValueError, OverflowError):
        return None
    return int(photo_taken) - born.year - (1 if born.month >= 7 else 0)


def _subject(fields: dict[str, np.ndarray], i: int) -> str | None:
    for key in ("celeb_id", "name"):
        if key in fields:
            value = fields[key][i]
            text = str(value).strip() if not isinstance(value, np.ndarray) else ""
            if text:
                return text
    return None


def read_imdbwiki(path: Path, source: str, options: dict[str, str]) -> tuple[list[Record], Skipped]:
    """Records of the faces that pass the cleaning; every other row is counted with its reason."""
    try:
        min_score = float(options.get("min_score", "1.0"))
    except ValueError:
        raise UsageError(f"data spec {source!r}: min_score={options['min_score']!r} is not a number") from None
    mat = find_mat(path)
    _name, fields = load_struct(mat)
    root = mat.parent
    skipped = Skipped(source)
    records: list[Record] = []
    for i, rel in enumerate(fields["full_path"]):
        where = f"{mat} entry {i + 1}"
        score, second = float(fields["face_score"][i]), float(fields["second_face_score"][i])
        if not score >= min_score:  # -inf: no face found
            skipped.add(f"face_score below {min_score:g} (no face or a weak one)", where)
            continue
        if not math.isnan(second):
            skipped.add("a second face in the photo", where)
            continue
        age = age_at_photo(float(fields["dob"][i]), float(fields["photo_taken"][i]))
        if age is None:
            skipped.add("missing or impossible date of birth", where)
            continue
        if not 0 <= age <= MAX_AGE:
            skipped.add(f"age outside 0-{MAX_AGE}", f"{where} (age {age})")
            continue
        image = root / str(rel).strip()
        if not image.is_file():
            skipped.add("image not found", str(image))
            continue
        meta: dict[str, Any] = {}
        subject = _subject(fields, i)
        if subject is not None:
            meta["subject"] = subject
        if "gender" in fields and math.isfinite(float(fields["gender"][i])):
            meta["gender"] = 0 if float(fields["gender"][i]) == 1.0 else 1  # IMDB-WIKI 1 male -> 0 as in UTKFace
        records.append(Record(str(image), float(age), None, source, meta))
    return records, skipped
