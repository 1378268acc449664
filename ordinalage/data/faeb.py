"""`faeb:DB.json?root=IMAGES`: a database file of the FAEB benchmark (Paplham et al., CVPR 2024, "A Call
to Reflect on Evaluation Practices for Age Estimation"; github.com/paplhjak/Facial-Age-Estimation-Benchmark
and its -Databases repository), read as published.

A database file is a JSON list of entries such as
`{"img_path": "FG-NET/images/009A16b.jpg", "id_num": 9, "age": 16, "gender": "M", "database": "FG-NET",
"folder": 9, "aligned_bbox": [21, 69, 569, 103, 535, 652, -13, 617], "alignment_source": "in the wild"}`:

- `img_path`: the image, relative to `?root=` (default: the JSON file's folder);
- `age`: completed years; -1 (unknown) is skipped and counted;
- `gender`: M / F / U -> `meta["gender"]` 0 / 1 / absent (0 male, 1 female, as the other readers);
- `id_num`: the person -> `meta["subject"]` (absent in CLAP2016); `database` -> `meta["database"]`;
- `folder`: FAEB's folder (0-9; 0-2 for CLAP2016 and CACD2000) -> `meta["folder"]`, which
  `data.protocol: faeb` / `faeb:K` split by (data/splits.py);
- `aligned_bbox`: 8 numbers, the corners of the rotated face box clockwise from top-left in FAEB's
  1-based pixel coordinates; an entry without one (`[]`: FAEB's alignment failed) uses `bbox`: 8
  numbers in the same layout (FAEB writes IMDB-CLEAN's boxes so) or 4, read as an axis-aligned
  [x1, y1, x2, y2]. An entry with neither is skipped and counted; a file where no entry has a box
  (FAEB's unaligned `FG-Net.json`, ...) is an error that asks for the `_aligned.json` file.

Each record's path is a face box path (data/boxes.py) that `decode_image` crops to the box grown by
`data.bbox_extension`; `meta["box"]` keeps the box and `meta["entry"]` the entry's index. Images not
on disk are skipped and counted (an error when none is found). A malformed entry is an error naming
the file and the entry's index.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from ordinalage.data.boxes import box_area, box_path, check_extension
from ordinalage.data.records import Record, Skipped
from ordinalage.errors import UsageError

DEFAULT_EXTENSION = 0.25  # FAEB's documented bbox_extension (config key data.bbox_extension)
GENDERS = {"m": 0, "male": 0, "f": 1, "female": 1, "u": None, "unknown": None}
UNKNOWN_AGE = -1


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _integer(value: Any, key: str, where: str) -> int:
    if _is_number(value) and math.isfinite(value) and float(value).is_integer():
        return int(value)
    raise UsageError(f"{where}: {key!r} {value!r} is not a whole number")


def _box(entry: dict[str, Any], where: str) -> list[float] | None:
    """The entry's face box as 8 numbers (`aligned_bbox`, else `bbox`), or None when it has none."""
    for key in ("aligned_bbox", "bbox"):
        value = entry.get(key)
        if value is None or (isinstance(value, list) and not value):
            continue
        if not isinstance(value, list) or not all(_is_number(v) and math.isfinite(v) for v in value):
            raise UsageError(f"{where}: {key!r} must be a list of numbers, got {str(value)[:80]}")
        if len(value) == 8:
            return [float(v) for v in value]
        if key == "bbox" and len(value) == 4:  # axis-aligned [x1, y1, x2, y2]: corners clockwise from top-left
            x1, y1, x2, y2 = (float(v) for v in value)
            return [x1, y1, x2, y1, x2, y2, x1, y2]
        raise UsageError(f"{where}: {key!r} has {len(value)} numbers; expected 8 (the box's corners clockwise "
                         f"from top-left, x and y each){' or 4 (x1, y1, x2, y2)' if key == 'bbox' else ''}")
    return None


def _meta(entry: dict[str, Any], where: str, index: int, box: list[float]) -> dict[str, Any]:
    meta: dict[str, Any] = {"entry": index, "box": box}
    subject = entry.get("id_num")
    if isinstance(subject, str) and subject.strip():
        meta["subject"] = subject.strip()
    elif _is_number(subject) and math.isfinite(subject):
        meta["subject"] = str(_integer(subject, "id_num", where))
    elif subject is not None and not (isinstance(subject, float) and math.isnan(subject)):
        raise UsageError(f"{where}: 'id_num' {subject!r} is not a subject id (a whole number or text)")
    gender = entry.get("gender")
    if gender is not None:
        if not isinstance(gender, str) or gender.strip().lower() not in GENDERS:
            raise UsageError(f"{where}: 'gender' {gender!r} is not M, F or U")
        code = GENDERS[gender.strip().lower()]
        if code is not None:
            meta["gender"] = code
    if entry.get("folder") is not None:
        meta["folder"] = _integer(entry["folder"], "folder", where)
    if entry.get("database") is not None:
        meta["database"] = str(entry["database"])
    return meta


def _age(entry: dict[str, Any], where: str) -> float | None:
    """The entry's age in years, or None for FAEB's unknown age (-1)."""
    if "age" not in entry:
        raise UsageError(f"{where}: 'age' missing")
    age = entry["age"]
    if not _is_number(age) or not math.isfinite(age):
        raise UsageError(f"{where}: 'age' {age!r} is not a number")
    if age == UNKNOWN_AGE:
        return None
    if age < 0:
        raise UsageError(f"{where}: 'age' {age!r} is negative (FAEB marks an unknown age with -1)")
    return float(age)


def load_entries(path: Path) -> list[Any]:
    """The database file's list of entries; an unreadable file or another JSON shape is a UsageError."""
    try:
        with path.open(encoding="utf-8-sig") as fh:
            entries = json.load(fh)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read the FAEB database file ({exc})") from None
    if not isinstance(entries, list):
        raise UsageError(f"{path}: a FAEB database file is a JSON list of entries, found a {type(entries).__name__}")
    return entries


def read_faeb(path: Path, source: str, options: dict[str, str],
              extension: float = DEFAULT_EXTENSION) -> tuple[list[Record], Skipped]:
    """Records of a FAEB database file (module docstring); images under `?root=` or the file's folder."""
    if not path.is_file():
        raise UsageError(f"data spec {source!r}: {path} is not a file (a FAEB database file, e.g. AgeDB_aligned.json)")
    extension = check_extension(extension)
    if options.get("root"):
        root = Path(os.path.abspath(Path(options["root"]).expanduser()))
        if not root.is_dir():
            raise UsageError(f"data spec {source!r}: root={options['root']} is not a folder")
    else:
        root = path.parent
    skipped = Skipped(source)
    records: list[Record] = []
    with_box = without_box = missing = 0
    first_missing = ""
    for index, entry in enumerate(load_entries(path)):
        where = f"{path}: entry {index}"
        if not isinstance(entry, dict):
            raise UsageError(f"{where}: expected an object with 'img_path' and 'age', found {str(entry)[:80]}")
        img_path = entry.get("img_path")
        if img_path is None:
            raise UsageError(f"{where}: 'img_path' missing")
        if not isinstance(img_path, str) or not img_path.strip():
            raise UsageError(f"{where}: 'img_path' {img_path!r} is not a file path")
        age = _age(entry, where)
        box = _box(entry, where)
        meta = _meta(entry, where, index, box or [])
        if age is None:
            skipped.add("unknown age (-1)", img_path)
            continue
        if box is None:
            without_box += 1
            skipped.add("no face box (no 'aligned_bbox' or 'bbox')", img_path)
            continue
        with_box += 1
        if box_area(box) < 1.0:
            skipped.add("degenerate face box (no area)", img_path)
            continue
        image = root / img_path
        if not image.is_file():
            missing += 1
            first_missing = first_missing or str(image)
            skipped.add("image not found", str(image))
            continue
        records.append(Record(box_path(os.path.abspath(image), box, extension), age, None, source, meta))
    if without_box and not with_box:
        raise UsageError(f"{path}: no entry has a face box ('aligned_bbox' or 'bbox'); FAEB's boxes are in the "
                         f"aligned database files, e.g. {path.stem.removesuffix('_aligned')}_aligned.json")
    if missing and not records:
        raise UsageError(f"{path}: none of the {missing} images was found under {root} (e.g. {first_missing}); "
                         f"give the folder that holds the datasets' images as {source.partition('?')[0]}?root=DIR")
    return records, skipped
