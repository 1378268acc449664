"""Decoded-image cache: each image decoded and resized once, later epochs and runs read uint8 pixels.

`prepare_cache(records, cfg, size)` returns an `ImageCache` (or None when `data.cache` is `off` or
the cache would not fit). The pixels are one (rows, size, size, 3) uint8 array, one row per
distinct image content:

- `disk` (and `auto` when it fits): a `.npy` file in `<cache folder>/images/`, opened with
  `np.load(mmap_mode="r")`, so loader workers, several runs and several processes read the same
  page-cache pages without copies. It outlives the run: a later run with the same images,
  geometry and size opens it instead of decoding.
- `ram`: an array in this process, filled each run; forked loader workers share its pages.

The key is a SHA-256 of the sorted row ids of the distinct images, the geometry, the size,
`decode.DECODER_VERSION`, OpenCV's version and this file's format. A row id is the image file's
content hash, plus, for a face box path (`boxes.box_path`, the FAEB reader's aligned crops), its
box and extension (`row_id`): a changed image has a new content hash and so a new key, two boxes of
one image are two rows, and a changed box or `data.bbox_extension` is a new key (the order of the
records does not matter). A disk cache is
filled up front in the main process (a thread pool, OpenCV releases the GIL) into a temporary
file; the file is renamed into place and then its manifest (`<key>.json`), the "complete"
marker, is written last, both with `os.replace`. A cache without a valid manifest (a killed
writer, a truncated file) is never read: it is rebuilt, and the rebuild says so. A file lock
makes a second process that wants the same cache wait for the first and then reuse it.

Unreadable images are recorded in the manifest with their reason; the dataset reports or raises
for them exactly as it does without a cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ordinalage.config import DataConfig
from ordinalage.data.boxes import box_suffix, image_file
from ordinalage.data.decode import DECODER_VERSION, ImageDecodeError, check_geometry, decode_image
from ordinalage.data.hashing import content_hashes, default_cache_dir
from ordinalage.data.records import Record
from ordinalage.errors import UsageError

MODES = ("auto", "off", "ram", "disk")
FORMAT = "ordinalage-image-cache"
FORMAT_VERSION = 1
SUBDIR = "images"
DISK_RESERVE = 512 * 2**20  # a disk cache must leave this much free space on its file system
RAM_SHARE = 0.5  # a RAM cache may take at most this share of the memory available now


def check_cache_mode(mode: str) -> str:
    """Return `mode` if known, else raise a UsageError naming the config key."""
    if mode not in MODES:
        raise UsageError(f"config key 'data.cache': unknown value {mode!r} (choose from {', '.join(MODES)})")
    return mode


def _note(message: str) -> None:
    print(f"ordinalage: {message}", file=sys.stderr, flush=True)


def _mib(nbytes: float) -> str:
    return f"{nbytes / 2**20:,.0f} MiB"


@dataclass
class ImageCache:
    """Decoded pixels of a set of images: `image(path)` gives a read-only (size, size, 3) uint8 view."""

    size: int
    geometry: str
    key: str
    mode: str  # "disk" or "ram"
    row_of: dict[str, int]  # image path -> row
    bad: dict[int, str]  # row -> why the image could not be read
    path: Path | None = None  # the .npy file of a disk cache
    _pixels: np.ndarray | None = field(default=None, repr=False)

    @property
    def pixels(self) -> np.ndarray:
        """(rows, size, size, 3) uint8; a disk cache is (re)mapped on first use in each process."""
        if self._pixels is None:
            assert self.path is not None
            self._pixels = np.load(self.path, mmap_mode="r")
        return self._pixels

    def __len__(self) -> int:
        return len(self.pixels)

    def __getstate__(self) -> dict[str, Any]:
        # a spawned loader worker maps the file itself instead of receiving a pickled copy
        state = dict(self.__dict__)
        if self.path is not None:
            state["_pixels"] = None
        return state

    def rows_for(self, paths: Sequence[str]) -> np.ndarray:
        """Row of each path (int64); a UsageError names the first path this cache was not built for."""
        try:
            return np.fromiter((self.row_of[str(p)] for p in paths), dtype=np.int64, count=len(paths))
        except KeyError as exc:
            raise UsageError(f"image cache {self.key}: {exc.args[0]} is not in it; "
                             "build the cache from records that include every loader's images") from None

    def check(self, size: int, geometry: str) -> None:
        """Raise a UsageError unless this cache holds images of `size` px after `geometry`."""
        if (size, geometry) != (self.size, self.geometry):
            raise UsageError(f"image cache {self.key} holds {self.size} px images ({self.geometry}); "
                             f"the loader wants {size} px ({geometry})")


# --------------------------------------------------------------------------------------------
# keys, size guards


def row_id(path: str, content_hash: str) -> str:
    """What one cache row holds: the file's content hash, plus the box and extension of a face box path."""
    return content_hash + box_suffix(path)


def cache_key(hashes: Sequence[str], geometry: str, size: int) -> str:
    """Hex digest naming a cache: distinct row ids (`row_id`, sorted), geometry, size, decoder versions."""
    h = hashlib.sha256()
    header = {"format": FORMAT, "version": FORMAT_VERSION, "decoder": DECODER_VERSION,
              "opencv": cv2.__version__, "geometry": geometry, "size": int(size)}
    h.update(json.dumps(header, sort_keys=True).encode())
    for digest in sorted(set(hashes)):
        h.update(digest.encode())
    return h.hexdigest()[:32]


def available_ram() -> int | None:
    """Bytes of memory available to new allocations now (MemAvailable), or None if unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _fits_ram(nbytes: int) -> str | None:
    """None if a RAM cache of `nbytes` fits the budget, else why not."""
    avail = available_ram()
    if avail is not None and nbytes > RAM_SHARE * avail:
        return f"needs {_mib(nbytes)} of RAM, over {RAM_SHARE:.0%} of the {_mib(avail)} available"
    return None


def _fits_disk(folder: Path, nbytes: int) -> str | None:
    """None if a disk cache of `nbytes` fits in `folder` (creating it), else why not."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(folder).free
    except OSError as exc:
        return f"cannot use {folder} ({exc.strerror or exc})"
    if not os.access(folder, os.W_OK):
        return f"cannot write to {folder}"
    if nbytes + DISK_RESERVE > free:
        return (f"needs {_mib(nbytes)} in {folder}, where {_mib(free)} is free "
                f"({_mib(DISK_RESERVE)} must stay free)")
    return None


# --------------------------------------------------------------------------------------------
# filling


def _fill(pixels: np.ndarray, paths: Sequence[str], size: int, geometry: str, progress: bool,
          threads: int | None = None) -> dict[int, str]:
    """Decode `paths[i]` into `pixels[i]` (a thread pool); return {row: reason} for unreadable ones."""
    def one(row: int) -> str | None:
        try:
            pixels[row] = decode_image(paths[row], size, geometry)
        except ImageDecodeError as exc:
            pixels[row] = 0
            return exc.reason
        return None

    threads = threads or max(1, min(8, os.cpu_count() or 1))
    bad: dict[int, str] = {}
    with ThreadPoolExecutor(max_workers=threads) as pool:
        results: Iterator[str | None] = pool.map(one, range(len(paths)))
        if progress:
            from rich.console import Console
            from rich.progress import track

            results = track(results, total=len(paths), description=f"decoding images into the cache ({size} px)",
                            console=Console(stderr=True), transient=True)
        for row, reason in enumerate(results):
            if reason is not None:
                bad[row] = reason
    return bad


def _fsync(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on `path` (released by the OS if this process dies); no-op without fcntl."""
    try:
        import fcntl
    except ImportError:  # not POSIX: one writer at a time is then the user's job
        yield
        return
    with open(path, "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --------------------------------------------------------------------------------------------
# disk caches: open a complete one or build it


def _files(folder: Path, key: str) -> tuple[Path, Path]:
    return folder / f"{key}.npy", folder / f"{key}.json"


def _open_complete(folder: Path, key: str, rows: int, size: int) -> tuple[Path, np.ndarray, dict[int, str]] | None:
    """The mapped pixels and bad rows of a complete cache `key`, or None if absent, partial or stale."""
    npy, manifest = _files(folder, key)
    if not manifest.is_file():
        return None
    try:
        meta = json.loads(manifest.read_text(encoding="utf-8"))
        expected = (FORMAT, FORMAT_VERSION, key, rows, size, True)
        if (meta.get("format"), meta.get("version"), meta.get("key"), meta.get("rows"), meta.get("size"),
                meta.get("complete")) != expected or npy.stat().st_size != meta.get("bytes"):
            return None
        pixels = np.load(npy, mmap_mode="r")
        if pixels.shape != (rows, size, size, 3) or pixels.dtype != np.uint8:
            return None
        return npy, pixels, {int(k): str(v) for k, v in meta.get("bad", {}).items()}
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def _leftovers(folder: Path, key: str) -> list[Path]:
    """Files of an incomplete or stale cache `key`: temporaries, a data file without a valid manifest."""
    return sorted(p for p in folder.glob(f"{key}.*") if p.suffix != ".lock")


def _build_disk(folder: Path, key: str, paths: Sequence[str], size: int, geometry: str,
                progress: bool) -> tuple[Path, np.ndarray, dict[int, str]]:
    """Fill cache `key` into a temporary file, rename it into place, then write the manifest last."""
    npy, manifest = _files(folder, key)
    old = _leftovers(folder, key)
    if old:
        _note(f"image cache {key} in {folder} is incomplete or stale (a writer killed mid-way?); rebuilding it")
        for p in old:
            with contextlib.suppress(OSError):
                p.unlink()
    tmp = folder / f"{key}.npy.{os.getpid()}.tmp"
    start = time.perf_counter()
    try:
        pixels = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(paths), size, size, 3))
        bad = _fill(pixels, paths, size, geometry, progress)
        pixels.flush()
        del pixels
        _fsync(tmp)
        os.replace(tmp, npy)
        meta = {"format": FORMAT, "version": FORMAT_VERSION, "key": key, "rows": len(paths), "size": size,
                "geometry": geometry, "decoder": DECODER_VERSION, "opencv": cv2.__version__,
                "bytes": npy.stat().st_size, "bad": {str(k): v for k, v in bad.items()},
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "complete": True}
        tmp_manifest = folder / f"{key}.json.{os.getpid()}.tmp"
        tmp_manifest.write_text(json.dumps(meta, indent=1), encoding="utf-8")
        _fsync(tmp_manifest)
        os.replace(tmp_manifest, manifest)  # the "complete" marker: written last
    except BaseException:
        for p in (tmp, folder / f"{key}.json.{os.getpid()}.tmp"):
            with contextlib.suppress(OSError):
                p.unlink()
        raise
    if progress:
        _note(f"image cache: decoded {len(paths)} images at {size} px into {npy} "
              f"({_mib(npy.stat().st_size)}, {time.perf_counter() - start:.1f} s)")
    return npy, np.load(npy, mmap_mode="r"), bad


def open_disk_cache(folder: Path, key: str, paths: Sequence[str], size: int, geometry: str,
                    progress: bool = False) -> tuple[Path, np.ndarray, dict[int, str]]:
    """Open the complete cache `key` in `folder`, or build it (under a lock shared with other processes)."""
    found = _open_complete(folder, key, len(paths), size)
    if found is not None:
        return found
    with _locked(folder / f"{key}.lock"):
        found = _open_complete(folder, key, len(paths), size)  # another process may have built it meanwhile
        if found is not None:
            return found
        return _build_disk(folder, key, paths, size, geometry, progress)


# --------------------------------------------------------------------------------------------
# the entry point


def prepare_cache(records: Sequence[Record], cfg: DataConfig, size: int, progress: bool = False) -> ImageCache | None:
    """The decoded-image cache of `records` at `size` px for `cfg.cache`, or None (off, or would not fit).

    Build it once from every record the run's loaders will read (e.g. `PreparedData.all`) and pass
    it to each `build_loader(..., cache=...)`. `auto` is `disk` when the cache fits on disk, else
    off; `disk` and `ram` that would not fit also fall back to off. Each fallback prints one line.
    """
    mode = check_cache_mode(cfg.cache)
    geometry = check_geometry(cfg.geometry)
    if mode == "off" or not records:
        return None
    if size <= 0:
        raise UsageError(f"image size must be positive, got {size}")
    paths = [r.path for r in records]
    files = [image_file(p) for p in paths]
    hashes = [row_id(p, h) for p, h in
              zip(paths, content_hashes(files, cache_dir=cfg.cache_dir, progress=progress), strict=True)]
    first: dict[str, str] = {}  # row id -> the first path with it (duplicates share a row)
    for p, h in zip(paths, hashes, strict=True):
        first.setdefault(h, p)
    distinct = sorted(first)
    row_of_hash = {h: i for i, h in enumerate(distinct)}
    row_of = {p: row_of_hash[h] for p, h in zip(paths, hashes, strict=True)}
    unique_paths = [first[h] for h in distinct]
    key = cache_key(distinct, geometry, size)
    nbytes = len(distinct) * size * size * 3

    if mode in ("auto", "disk"):
        folder = default_cache_dir(cfg.cache_dir) / SUBDIR
        found = _open_complete(folder, key, len(distinct), size) if folder.is_dir() else None
        why = None if found is not None else _fits_disk(folder, nbytes)
        if why is not None:
            _note(f"data.cache={mode}: the decoded-image cache {why}; reading images without a cache")
            return None
        try:
            npy, pixels, bad = found or open_disk_cache(folder, key, unique_paths, size, geometry, progress)
        except OSError as exc:
            _note(f"data.cache={mode}: could not write the decoded-image cache in {folder} "
                  f"({exc.strerror or exc}); reading images without a cache")
            return None
        return ImageCache(size, geometry, key, "disk", row_of, bad, npy, pixels)

    why = _fits_ram(nbytes)
    if why is not None:
        _note(f"data.cache=ram: the decoded-image cache {why}; reading images without a cache")
        return None
    pixels = np.empty((len(distinct), size, size, 3), dtype=np.uint8)
    bad = _fill(pixels, unique_paths, size, geometry, progress)
    return ImageCache(size, geometry, key, "ram", row_of, bad, None, pixels)
