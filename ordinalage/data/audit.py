"""`ordinalage data audit`: unreadable or truncated images, byte-identical duplicates and their age conflicts."""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
from rich.console import Console
from rich.progress import track
from rich.table import Table

from ordinalage.config import DataConfig
from ordinalage.data.boxes import image_file
from ordinalage.data.hashing import content_hashes
from ordinalage.data.records import Record
from ordinalage.data.sources import read_sources

JPEG_SOI, JPEG_SOS, JPEG_EOI = b"\xff\xd8", b"\xff\xda", b"\xff\xd9"


def image_problem(path: str | Path) -> str | None:
    """Why the image at `path` is unusable, or None if it decodes.

    `cv2.imread` decodes a truncated JPEG into a half-grey picture without an error, so a JPEG must
    end its last scan with the end-of-image marker (FFD9 after the last start-of-scan FFDA; neither
    can occur inside entropy-coded data).
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if not data:
        return "empty file"
    if data.startswith(JPEG_SOI) and data.rfind(JPEG_EOI) < data.rfind(JPEG_SOS):
        return "truncated JPEG (no end-of-image marker after the last scan)"
    if cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) is None:
        return "cannot be decoded as an image"
    return None


def display_names(paths: Sequence[str]) -> list[str]:
    """Paths relative to their common folder (just the file names for one flat folder)."""
    if not paths:
        return []
    root = os.path.commonpath([os.path.dirname(p) for p in paths])
    return [os.path.relpath(p, root) for p in paths]


def find_duplicates(records: Sequence[Record], hashes: Sequence[str], names: Sequence[str]
                    ) -> tuple[list[list[str]], list[list[str]]]:
    """(groups of names sharing one content hash, the subset of those whose ages disagree), sorted."""
    by_hash: dict[str, list[int]] = {}
    for i, h in enumerate(hashes):
        by_hash.setdefault(h, []).append(i)
    dup = [idx for idx in by_hash.values() if len(idx) > 1]
    groups = sorted(sorted(names[i] for i in idx) for idx in dup)
    conflicting = sorted(sorted(names[i] for i in idx) for idx in dup if len({records[i].age for i in idx}) > 1)
    return groups, conflicting


def data_audit(specs: Sequence[str], show: bool) -> dict:
    """Audit every image of `specs`: decode each, hash each, report problems and duplicates."""
    cfg = DataConfig(sources=tuple(specs))
    records = read_sources(specs, cfg)
    paths = [r.path for r in records]
    names = display_names(paths)
    files = [image_file(p) for p in paths]  # a FAEB record's path carries its face box after the file name
    hashes = content_hashes(files, cache_dir=cfg.cache_dir, progress=show)
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        problems = pool.map(image_problem, files)
        if show:
            problems = track(problems, total=len(paths), description="decoding images",
                             console=Console(stderr=True), transient=True)
        problems = list(problems)
    duplicate_groups, conflicting_groups = find_duplicates(records, hashes, names)
    age_of = dict(zip(names, (r.age for r in records), strict=True))
    result = {
        "n": len(records),
        "root": os.path.commonpath([os.path.dirname(p) for p in paths]) if paths else None,
        "unreadable": [n for n, p in zip(names, problems, strict=True) if p],
        "problems": {n: p for n, p in zip(names, problems, strict=True) if p},
        "duplicate_groups": duplicate_groups,
        "duplicate_files": sum(len(g) for g in duplicate_groups),
        "conflicting_groups": conflicting_groups,
        "conflicting_ages": [[age_of[n] for n in g] for g in conflicting_groups],
    }
    if show:
        _print_report(result)
    return result


def _print_report(result: dict, limit: int = 20) -> None:
    console = Console(stderr=True)
    table = Table(title=f"audit of {result['n']} images in {result['root']}")
    table.add_column("check")
    table.add_column("count", justify="right")
    table.add_row("unreadable or truncated", str(len(result["unreadable"])))
    table.add_row("byte-identical groups", str(len(result["duplicate_groups"])))
    table.add_row("files in those groups", str(result["duplicate_files"]))
    table.add_row("groups whose ages disagree", str(len(result["conflicting_groups"])))
    console.print(table)
    for name, why in list(result["problems"].items())[:limit]:
        console.print(f"unreadable: {name}: {why}")
    for group, ages in list(zip(result["conflicting_groups"], result["conflicting_ages"], strict=True))[:limit]:
        console.print("same image, ages disagree: " + ", ".join(f"{n} ({a:g})" for n, a in zip(group, ages, strict=True)))
    hidden = max(0, len(result["problems"]) - limit) + max(0, len(result["conflicting_groups"]) - limit)
    if hidden:
        console.print(f"... and {hidden} more (use --json for the full lists)")
