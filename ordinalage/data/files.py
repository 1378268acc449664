"""The one image lister and the one UTKFace file-name parser (sources, predict and benchmarks use these)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ordinalage.errors import UsageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def is_image(name: str) -> bool:
    """True for a file name with an image extension (case-insensitive), hidden files excluded."""
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _folder_images(folder: Path, recursive: bool) -> list[Path]:
    if not recursive:
        return sorted(p for p in folder.iterdir() if p.is_file() and is_image(p.name))
    found: list[Path] = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found.extend(Path(root) / name for name in files if is_image(name))
    return sorted(found)


def list_images(folder_or_files: str | Path | Sequence[str | Path], recursive: bool = True,
                allow_empty: bool = True) -> list[Path]:
    """Image files of a folder (sorted by path, hidden files and folders skipped), or of a list of
    files and folders (files kept as given and in order, each folder expanded in place).

    A path that does not exist is a UsageError; so is a folder without images when not `allow_empty`.
    """
    items = [folder_or_files] if isinstance(folder_or_files, (str, os.PathLike)) else list(folder_or_files)
    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = _folder_images(p, recursive)
            if not found and not allow_empty:
                raise UsageError(f"{p}: no image files in this folder ({', '.join(IMAGE_EXTENSIONS)})")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise UsageError(f"{p}: no such file or folder")
    return out


@dataclass(frozen=True)
class UTKFaceName:
    """What a UTKFace name `age_gender_race_datetime.jpg.chip.jpg` says (gender/race None when absent)."""

    age: int
    gender: int | None = None
    race: int | None = None

    def meta(self) -> dict[str, int]:
        """gender and race as Record meta (only those present)."""
        return {k: v for k, v in (("gender", self.gender), ("race", self.race)) if v is not None}


def parse_utkface_name(name: str) -> UTKFaceName | None:
    """Age (first `_` token), gender (0/1) and race (0-4) of a UTKFace file name; None when the name
    does not start with a whole number of years (race is missing in a few real names)."""
    tokens = Path(name).name.split("_")
    head = tokens[0].strip()
    if not (head.isascii() and head.isdigit()):
        return None
    gender = int(tokens[1]) if len(tokens) >= 3 and tokens[1] in ("0", "1") else None
    race = int(tokens[2]) if len(tokens) >= 4 and len(tokens[2]) == 1 and tokens[2].isdigit() else None
    return UTKFaceName(int(head), gender, race)
