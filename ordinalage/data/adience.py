"""`adience:PATH`: the Adience benchmark as distributed: five fold files `fold_<k>_data.txt`
(tab-separated: user_id, original_image, face_id, age like "(25, 32)", gender, ...) and the aligned
faces `aligned/<user_id>/landmark_aligned_face.<face_id>.<original_image>` (or the same names, or
`coarse_tilt_aligned_face.*`, under `faces/<user_id>/`).

Adience labels eight age groups with gaps (`ADIENCE_GROUPS`; train with `data.groups` set to them).
A row's age is its group's midpoint (a label that is a single year inside a group keeps that year);
`meta` keeps the person (`subject` = user_id), the `fold` k (the protocol `source` runs these five
folds) and the gender. Rows without an age ("None"), labels that span several groups and images
that are not on disk are skipped and counted; a malformed age is a UsageError naming file and line.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from ordinalage.data.records import Record, Skipped
from ordinalage.errors import UsageError
from ordinalage.groups import AgeGroups

ADIENCE_GROUPS = "0-2,4-6,8-12,15-20,25-32,38-43,48-53,60-100"
FOLD_FILE = re.compile(r"^fold_(\d+)_data\.txt$")
RANGE = re.compile(r"^\(\s*(\d+)\s*,\s*(\d+)\s*\)$")
COLUMNS = ("user_id", "original_image", "face_id", "age")
GENDER = {"m": 0, "f": 1}
PREFIXES = ("landmark_aligned_face", "coarse_tilt_aligned_face")


def fold_files(folder: Path) -> list[tuple[int, Path]]:
    """(k, path) of every `fold_<k>_data.txt` in `folder` or one level down, by k."""
    found: dict[int, Path] = {}
    for root in (folder, *sorted(p for p in folder.iterdir() if p.is_dir())):
        for p in sorted(root.iterdir()):
            m = FOLD_FILE.match(p.name)
            if m and p.is_file():
                found.setdefault(int(m.group(1)), p)
    if not found:
        raise UsageError(f"{folder}: no Adience fold files (fold_0_data.txt ... fold_4_data.txt) here or one folder down")
    return sorted(found.items())


def parse_age(text: str, where: str) -> tuple[int, int] | None:
    """(lo, hi) of "(25, 32)" or "35"; None for "None" (no label)."""
    text = text.strip()
    if text in ("None", ""):
        return None
    m = RANGE.match(text)
    if m:
        lo, hi = int(m.group(1)), int(m.group(2))
        if lo <= hi:
            return lo, hi
    elif text.isascii() and text.isdigit():
        return int(text), int(text)
    raise UsageError(f"{where}, column 'age': {text!r} is not an Adience age such as '(25, 32)', '35' or 'None'")


def _find_image(roots: list[Path], user_id: str, face_id: str, original: str) -> Path | None:
    for root in roots:
        for prefix in PREFIXES:
            p = root / user_id / f"{prefix}.{face_id}.{original}"
            if p.is_file():
                return p
    return None


def read_adience(folder: Path, source: str, options: dict[str, str]) -> tuple[list[Record], Skipped]:
    """Every labelled face of the fold files whose aligned image is on disk."""
    if not folder.is_dir():
        raise UsageError(f"data spec {source!r}: {folder} is not a folder")
    groups = AgeGroups.parse(ADIENCE_GROUPS).groups
    skipped = Skipped(source)
    records: list[Record] = []
    for k, fold_file in fold_files(folder):
        roots = [r / sub for r in dict.fromkeys((fold_file.parent, folder)) for sub in ("aligned", "faces")]
        with fold_file.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh, delimiter="\t")
            missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise UsageError(f"{fold_file}:1: missing column {missing[0]!r} (a tab-separated header with "
                                 f"{', '.join(COLUMNS)}; found: {', '.join(reader.fieldnames or [])})")
            for row in reader:
                where = f"{fold_file}:{reader.line_num}"
                values = {c: (row.get(c) or "").strip() for c in COLUMNS}
                if not any(values.values()):
                    continue
                age = parse_age(values["age"], where)
                if age is None:
                    skipped.add("no age label ('None')", where)
                    continue
                group = next((g for g in groups if g.lo <= age[0] and age[1] <= g.hi), None)
                if group is None:
                    skipped.add("age label outside the eight Adience groups", f"{where} {values['age']}")
                    continue
                image = _find_image(roots, values["user_id"], values["face_id"], values["original_image"])
                if image is None:
                    skipped.add("aligned image not found", f"{where} {values['original_image']}")
                    continue
                meta = {"subject": values["user_id"], "fold": k, "group_label": group.label}
                gender = GENDER.get((row.get("gender") or "").strip().lower())
                if gender is not None:
                    meta["gender"] = gender
                exact = float(age[0]) if age[0] == age[1] else group.midpoint
                records.append(Record(str(image), exact, None, source, meta))
    return records, skipped
