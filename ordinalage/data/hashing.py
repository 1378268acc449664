"""SHA-256 content hashes of image files, cached on disk by (path, size, mtime).

The cache is one SQLite file (`hashes.sqlite` in the cache folder), so a 10k-image folder is
hashed once and later runs only `stat` each file. A cache that cannot be opened is skipped.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import cast

from rich.console import Console
from rich.progress import track

CACHE_FILE = "hashes.sqlite"


def default_cache_dir(cache_dir: str | Path | None = None) -> Path:
    """`cache_dir`, else $ORDINALAGE_CACHE, else ~/.cache/ordinalage."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    env = os.environ.get("ORDINALAGE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ordinalage"


def file_hash(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _open_cache(cache_dir: Path) -> sqlite3.Connection | None:
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(cache_dir / CACHE_FILE, timeout=30)
        conn.execute("CREATE TABLE IF NOT EXISTS hashes "
                     "(path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, digest TEXT)")
        return conn
    except (OSError, sqlite3.Error) as exc:
        print(f"ordinalage: hash cache in {cache_dir} not usable ({exc}); hashing without it", file=sys.stderr)
        return None


def _lookup(conn: sqlite3.Connection, keys: list[str]) -> dict[str, tuple[int, int, str]]:
    found: dict[str, tuple[int, int, str]] = {}
    for start in range(0, len(keys), 500):
        chunk = keys[start:start + 500]
        marks = ",".join("?" * len(chunk))
        for path, size, mtime, digest in conn.execute(
                f"SELECT path, size, mtime_ns, digest FROM hashes WHERE path IN ({marks})", chunk):
            found[path] = (size, mtime, digest)
    return found


def content_hashes(paths: Sequence[str | Path], cache_dir: str | Path | None = None,
                   use_cache: bool = True, progress: bool = False) -> list[str]:
    """SHA-256 of every file in `paths` (same order); unchanged files come from the on-disk cache."""
    keys = [os.path.abspath(p) for p in paths]
    stats = [os.stat(k) for k in keys]
    conn = _open_cache(default_cache_dir(cache_dir)) if use_cache else None
    cached = _lookup(conn, sorted(set(keys))) if conn is not None else {}
    out: list[str | None] = [None] * len(keys)
    todo: list[int] = []
    for i, (key, st) in enumerate(zip(keys, stats, strict=True)):
        hit = cached.get(key)
        if hit is not None and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
            out[i] = hit[2]
        else:
            todo.append(i)
    if todo:
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            digests = pool.map(file_hash, [keys[i] for i in todo])
            if progress:
                digests = track(digests, total=len(todo), description="hashing images",
                                console=Console(stderr=True), transient=True)
            for i, digest in zip(todo, digests, strict=True):
                out[i] = digest
        if conn is not None:
            rows = [(keys[i], stats[i].st_size, stats[i].st_mtime_ns, out[i]) for i in todo]
            try:
                with conn:
                    conn.executemany("INSERT OR REPLACE INTO hashes VALUES (?, ?, ?, ?)", rows)
            except sqlite3.Error as exc:
                print(f"ordinalage: could not update the hash cache ({exc})", file=sys.stderr)
    if conn is not None:
        conn.close()
    return cast(list[str], out)
