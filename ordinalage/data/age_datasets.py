"""Readers of the standard age benchmarks whose labels live in file names, folders or small CSVs,
read as the archives unpack: `afad:`, `morph:`, `cacd:`, `fgnet:`, `agedb:`, `appa:`.

`morph:`, `cacd:` and `afad:` also read the CORAL paper's split CSVs (`<name>_train.csv`,
`<name>_valid.csv`, `<name>_test.csv`): give the CSV folder (or one CSV) as PATH and the image folder
as `?images=DIR` (default: the CSV's folder). Their `age` column is a class label (age minus the
dataset's youngest age), so the age is taken from the file name (or AFAD's age folder) and the label
is only checked to sit at one constant offset from it. `meta["subject"]` holds the person's id where
the dataset has one (MORPH, CACD, FG-NET, AgeDB). Files whose name does not fit the layout are
skipped and counted (`Skipped`); a malformed CSV is a UsageError naming the file and line.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ordinalage.data.files import IMAGE_EXTENSIONS, list_images
from ordinalage.data.records import Record, Skipped
from ordinalage.data.sources import parse_age
from ordinalage.errors import UsageError

NameParser = Callable[[Path], "tuple[int, dict[str, Any]] | None"]

MORPH_NAME = re.compile(r"^(\d+)_(\d+)([MF])(\d+)\.jpe?g$", re.IGNORECASE)  # 102146_03M36.JPG
CACD_NAME = re.compile(r"^(\d+)_(.+)_(\d+)\.jpe?g$", re.IGNORECASE)  # 14_Aaron_Johnson_0001.jpg
FGNET_NAME = re.compile(r"^(\d+)A(\d+)([a-z]?)\.jpe?g$", re.IGNORECASE)  # 001A02.JPG, 001A43a.JPG
AGEDB_NAME = re.compile(r"^(\d+)_(.+)_(\d+)_([mf])\.jpe?g$", re.IGNORECASE)  # 0_MariaCallas_35_f.jpg
AFAD_GENDER = {"111": 0, "112": 1}  # AFAD folder codes; 0 male, 1 female as in UTKFace
CORAL_SPLITS = {"train": "train", "valid": "val", "test": "test"}
CORAL_CSV = re.compile(r"^(.*)_(train|valid|test)\.csv$", re.IGNORECASE)


def morph_name(path: Path) -> tuple[int, dict[str, Any]] | None:
    m = MORPH_NAME.match(path.name)
    if not m:
        return None
    return int(m.group(4)), {"subject": m.group(1), "gender": 0 if m.group(3).upper() == "M" else 1}


def cacd_name(path: Path) -> tuple[int, dict[str, Any]] | None:
    m = CACD_NAME.match(path.name)
    return (int(m.group(1)), {"subject": m.group(2)}) if m else None


def fgnet_name(path: Path) -> tuple[int, dict[str, Any]] | None:
    m = FGNET_NAME.match(path.name)
    return (int(m.group(2)), {"subject": m.group(1)}) if m else None


def agedb_name(path: Path) -> tuple[int, dict[str, Any]] | None:
    m = AGEDB_NAME.match(path.name)
    if not m:
        return None
    return int(m.group(3)), {"subject": m.group(2), "gender": 0 if m.group(4).lower() == "m" else 1}


def afad_path(path: Path) -> tuple[int, dict[str, Any]] | None:
    """AFAD: `<age>/<111|112>/<image>.jpg`."""
    age_dir, gender_dir = path.parent.parent.name, path.parent.name
    if not (age_dir.isascii() and age_dir.isdigit()) or gender_dir not in AFAD_GENDER:
        return None
    return int(age_dir), {"gender": AFAD_GENDER[gender_dir]}


def read_named(folder: Path, source: str, parse: NameParser, layout: str) -> tuple[list[Record], Skipped]:
    """Every image under `folder` whose name (or place) `parse` understands; the others are skipped."""
    if not folder.is_dir():
        raise UsageError(f"data spec {source!r}: {folder} is not a folder")
    skipped = Skipped(source)
    records: list[Record] = []
    for p in list_images(folder):
        parsed = parse(p)
        if parsed is None:
            skipped.add(f"not named like {layout}", str(p))
            continue
        age, meta = parsed
        records.append(Record(str(p), float(age), None, source, meta))
    return records, skipped


# ---------------------------------------------------------------------------------------------
# the CORAL paper's split CSVs


def coral_csvs(path: Path) -> list[Path]:
    """The split CSVs at `path`: the file itself, or `<name>_{train,valid,test}.csv` in the folder."""
    if path.is_file():
        return [path]
    return sorted(p for p in path.iterdir() if p.is_file() and CORAL_CSV.match(p.name))


def _image_index(images: Path) -> dict[str, Path]:
    index: dict[str, Path] = {}
    for p in list_images(images):
        index.setdefault(p.name, p)
    return index


def read_coral_csvs(csvs: list[Path], images: Path, source: str, parse: NameParser,
                    layout: str) -> tuple[list[Record], Skipped]:
    """Rows of the CORAL split CSVs (file name in an unnamed index column or `file`; AFAD adds `path`)."""
    if not images.is_dir():
        raise UsageError(f"data spec {source!r}: image folder {images} is not a folder (set ?images=DIR)")
    skipped = Skipped(source)
    index: dict[str, Path] | None = None
    offset: tuple[int, str] | None = None  # (age - label, where it was first seen)
    records: list[Record] = []
    for csv_path in csvs:
        m = CORAL_CSV.match(csv_path.name)
        split = CORAL_SPLITS[m.group(2).lower()] if m else None
        with csv_path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = [h.strip().lower() for h in next(reader, [])]
            if "age" not in header:
                raise UsageError(f"{csv_path}:1: missing column 'age' (found: {', '.join(header) or 'nothing'})")
            name_col = header.index("file") if "file" in header else 0 if header and header[0] == "" else None
            if name_col is None:
                raise UsageError(f"{csv_path}:1: no file-name column (expected 'file' or an unnamed first column)")
            age_col, path_col = header.index("age"), header.index("path") if "path" in header else None
            for row in reader:
                if not any(c.strip() for c in row):
                    continue
                where = f"{csv_path}:{reader.line_num}"
                if len(row) != len(header):
                    raise UsageError(f"{where}: {len(row)} fields, the header has {len(header)}")
                name = row[name_col].strip()
                if not name.lower().endswith(IMAGE_EXTENSIONS):
                    raise UsageError(f"{where}: {name!r} is not an image file name")
                try:
                    label = int(row[age_col])
                except ValueError:
                    raise UsageError(f"{where}, column 'age': {row[age_col]!r} is not an integer") from None
                rel = Path(row[path_col].strip()) if path_col is not None else Path(name)
                parsed = parse(images / rel)
                if parsed is None:
                    raise UsageError(f"{where}: {rel} is not named like {layout}, so its age is unknown")
                age, meta = parsed
                if offset is None:
                    offset = (age - label, where)
                elif age - label != offset[0]:
                    raise UsageError(f"{where}, column 'age': label {label} is age {age} - {age - label}, but "
                                     f"{offset[1]} had age - label = {offset[0]} (the labels must be one offset "
                                     "from the ages in the names)")
                image = images / rel
                if not image.is_file():
                    index = _image_index(images) if index is None else index
                    found = index.get(Path(name).name)
                    if found is None:
                        skipped.add("listed in a CSV but not found under the image folder", f"{where} {name}")
                        continue
                    image = found
                records.append(Record(str(image), float(age), split, source, {**meta, "label": label}))
    return records, skipped


def read_with_csv_option(path: Path, source: str, options: dict[str, str], parse: NameParser,
                         layout: str) -> tuple[list[Record], Skipped]:
    """Split CSVs when PATH is a CSV or a folder holding `<name>_{train,valid,test}.csv`, else the images."""
    csvs = coral_csvs(path)
    if csvs:
        images = Path(options["images"]).expanduser().resolve() if "images" in options else (
            path.parent if path.is_file() else path)
        return read_coral_csvs(csvs, images, source, parse, layout)
    if "images" in options:
        raise UsageError(f"data spec {source!r}: ?images= is for the split CSVs, and {path} holds none")
    return read_named(path, source, parse, layout)


def read_afad(path: Path, source: str, options: dict[str, str]) -> tuple[list[Record], Skipped]:
    """AFAD-Full / AFAD-Lite: `<age>/<111 male|112 female>/<image>.jpg` (or the CORAL CSVs)."""
    return read_with_csv_option(path, source, options, afad_path, "<age>/<111|112>/<image>.jpg")


def read_morph(path: Path, source: str, options: dict[str, str]) -> tuple[list[Record], Skipped]:
    """MORPH-2 album names `<subject>_<photo><M|F><age>.JPG` (or the CORAL CSVs)."""
    return read_with_csv_option(path, source, options, morph_name, "<subject>_<nn><M|F><age>.JPG")


def read_cacd(path: Path, source: str, options: dict[str, str]) -> tuple[list[Record], Skipped]:
    """CACD2000 names `<age>_<Name>_<nnnn>.jpg` (or the CORAL CSVs)."""
    return read_with_csv_option(path, source, options, cacd_name, "<age>_<Name>_<nnnn>.jpg")


def read_fgnet(path: Path, source: str, options: dict[str, str]) -> tuple[list[Record], Skipped]:
    """FG-NET names `<subject>A<age>[a-z].JPG`."""
    return read_named(path, source, fgnet_name, "<subject>A<age>[a-z].JPG")


def read_agedb(path: Path, source: str, options: dict[str, str]) -> tuple[list[Record], Skipped]:
    """AgeDB names `<id>_<Name>_<age>_<m|f>.jpg`."""
    return read_named(path, source, agedb_name, "<id>_<Name>_<age>_<m|f>.jpg")


# ---------------------------------------------------------------------------------------------
# APPA-REAL: gt_avg_{train,valid,test}.csv next to train/, valid/, test/


APPA_COLUMNS = ("file_name", "apparent_age_avg", "real_age")


def find_appa_root(folder: Path) -> Path:
    for root in (folder, *sorted(p for p in folder.iterdir() if p.is_dir())):
        if any((root / f"gt_avg_{s}.csv").is_file() for s in CORAL_SPLITS):
            return root
    raise UsageError(f"{folder}: no APPA-REAL layout found (expected gt_avg_train.csv, gt_avg_valid.csv or "
                     "gt_avg_test.csv here or one folder down)")


def read_appa(path: Path, source: str, options: dict[str, str]) -> tuple[list[Record], Skipped]:
    """APPA-REAL: the face crops `<split>/<file_name>_face.jpg` (else `<split>/<file_name>`), age =
    the mean apparent age (`?target=apparent`, the default) or the real age (`?target=real`)."""
    target = options.get("target", "apparent")
    root = find_appa_root(path)
    skipped = Skipped(source)
    records: list[Record] = []
    for name, split in CORAL_SPLITS.items():
        gt = root / f"gt_avg_{name}.csv"
        if not gt.is_file():
            continue
        with gt.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in APPA_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise UsageError(f"{gt}:1: missing column {missing[0]!r} (found: {', '.join(reader.fieldnames or [])})")
            for row in reader:
                where = f"{gt}:{reader.line_num}"
                file_name = (row["file_name"] or "").strip()
                if not file_name:
                    raise UsageError(f"{where}, column 'file_name': empty")
                apparent = parse_age(row["apparent_age_avg"], where, "apparent_age_avg")
                real = parse_age(row["real_age"], where, "real_age")
                image = next((p for p in (root / name / f"{file_name}_face.jpg", root / name / file_name)
                              if p.is_file()), None)
                if image is None:
                    skipped.add("listed in gt_avg but the image is missing", f"{where} {file_name}")
                    continue
                meta = {"real_age": real, "apparent_age": apparent}
                if row.get("apparent_age_std"):
                    meta["apparent_std"] = parse_age(row["apparent_age_std"], where, "apparent_age_std")
                records.append(Record(str(image), apparent if target == "apparent" else real, split, source, meta))
    return records, skipped
