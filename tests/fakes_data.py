"""Tiny on-disk datasets in the real layouts (UTKFace, MegaAge, Keras group folders, CSV) for tests."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
# The real UTKFace sample (research use only, never copied into the repo): ../shared/data/UTKFace
# from the repo root; $ORDINALAGE_TEST_UTKFACE points the tests elsewhere (or at nothing, to see the skips).
UTKFACE = Path(os.environ.get("ORDINALAGE_TEST_UTKFACE") or REPO / ".." / "shared" / "data" / "UTKFace")
UTKFACE_DUPLICATES = UTKFACE.parent / "UTKFace_duplicates.txt"
UTKFACE_MISSING = f"needs the real UTKFace folder, not found at {UTKFACE.resolve()}"
# one visible line per skipped test (pytest -ra, set in pyproject, lists skips with their reason)
needs_utkface = pytest.mark.skipif(not UTKFACE.is_dir(), reason=UTKFACE_MISSING)

# irregular names that exist in the real UTKFace set (see shared/data/UTKFace_README.txt)
IRREGULAR_UTKFACE = [
    "39_1_20170116174525125.jpg.chip.jpg",
    "24_0_1_20170116220224657 .jpg.chip.jpg",
    "55_0_0_20170116232725357jpg.chip.jpg",
    "14_0_0_2017011022340900.jpg.chip.jpg",
    "28_1_2_201701161846515488.jpg.chip.jpg",
    "3_0_4_20170109212345678.jpg.chip.jpg",
]


def write_jpeg(path: str | Path, seed: int, size: int = 12) -> Path:
    """A small noise JPEG whose bytes depend on `seed` (different seeds give different content)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".jpg", img)
    assert ok
    path.write_bytes(buf.tobytes())
    return path


def make_utkface(root: Path, names: Iterable[str], seed: int = 0) -> list[Path]:
    """Flat folder of UTKFace-named JPEGs, each with its own content."""
    return [write_jpeg(root / name, seed + i) for i, name in enumerate(names)]


def make_megaage(root: Path, train: Sequence[tuple[str, int]], test: Sequence[tuple[str, int]],
                 nested: bool = False) -> Path:
    """MegaAge layout: train/, test/, list/{split}_{name,age}.txt; `nested` adds megaage_asian/megaage_asian/."""
    base = root / "megaage_asian" / "megaage_asian" if nested else root
    seed = 1000
    for split, items in (("train", train), ("test", test)):
        for name, _age in items:
            write_jpeg(base / split / name, seed)
            seed += 1
        (base / "list").mkdir(parents=True, exist_ok=True)
        (base / "list" / f"{split}_name.txt").write_text("".join(f"{n}\n" for n, _ in items))
        (base / "list" / f"{split}_age.txt").write_text("".join(f"{a}\n" for _, a in items))
    return base


def make_group_folders(root: Path, counts: dict[str, int], seed: int = 2000) -> list[Path]:
    """Keras flow_from_directory layout: root/<group label>/<n>.jpg."""
    out = []
    for label, n in counts.items():
        for i in range(n):
            out.append(write_jpeg(root / label / f"img{i}.jpg", seed))
            seed += 1
    return out


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path
