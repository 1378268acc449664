"""Decoded-image cache: epoch-2 images/s of the training loader with the cache against without it.

Both loaders are the package's `build_loader` over the same UTKFace sample (training mode, the
default augmentation, and again with augmentation off to isolate the data path), with persistent
workers; epoch 1 is run untimed (it warms the page cache of the JPEGs for the uncached loader
too), epoch 2 is timed, and every batch is normalised as training does (`InputSpec.normalize`,
one torch thread). The cached loader reads a disk cache built beforehand by `prepare_cache` in a
fresh cache folder; the build (content hashing + decoding) is timed separately. For each worker
count and augmentation setting the two run side by side in alternating order, `--repeats` times,
and each figure carries the 1-minute load average read right after it.

    python benchmarks/cache.py [--json OUT] [--images 2000] [--size 64] [--workers 0 2] [--repeats 3]
"""

from __future__ import annotations

import gc
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from common import UTKFACE, parser, ratio, summary, utkface_age, utkface_files, write_result

from ordinalage.config import AugmentConfig, DataConfig
from ordinalage.data.cache import ImageCache, prepare_cache
from ordinalage.data.dataset import build_loader
from ordinalage.data.records import Record
from ordinalage.groups import AgeGroups
from ordinalage.models.input_spec import InputSpec

AUGMENT = {"on": AugmentConfig(), "off": AugmentConfig(enabled=False)}


def load1() -> float:
    return round(os.getloadavg()[0], 2)


def epoch2(records: list[Record], cfg: DataConfig, size: int, batch: int, cache: ImageCache | None,
           spec: InputSpec) -> float:
    """Images/s of the second pass over a persistent-worker training loader."""
    loader = build_loader(records, AgeGroups.parse(), cfg, size, batch, train=True, seed=0, cache=cache)
    for b in loader:  # epoch 1: worker start-up, page cache
        spec.normalize(b["image"])
    n, start = 0, time.perf_counter()
    for b in loader:
        n += spec.normalize(b["image"]).shape[0]
    seconds = time.perf_counter() - start
    del loader
    gc.collect()
    return n / seconds


def run(records: list[Record], cache_dir: Path, size: int, batch: int, workers: list[int], augment: list[str],
        repeats: int) -> tuple[dict[str, Any], dict[str, Any]]:
    spec = InputSpec(size)
    base = DataConfig(cache="disk", cache_dir=str(cache_dir))
    start, load_before = time.perf_counter(), load1()
    cache = prepare_cache(records, base, size)
    if cache is None:
        sys.exit("the disk cache did not fit; see the message above")
    build = {"seconds": round(time.perf_counter() - start, 2), "images": len(records), "rows": len(cache),
             "mib": round(cache.path.stat().st_size / 2**20, 1), "loadavg_1m_before": load_before,
             "loadavg_1m_after": load1()}
    print(f"cache built: {build}", file=sys.stderr)
    figures: dict[str, Any] = {}
    for aug in augment:
        for w in workers:
            cfg = DataConfig(cache="disk", cache_dir=str(cache_dir), num_workers=w, augment=AUGMENT[aug])
            runs: dict[str, list[float]] = {"cached": [], "uncached": []}
            loads: dict[str, list[float]] = {"cached": [], "uncached": []}
            for r in range(repeats):
                for which in (("cached", "uncached") if r % 2 == 0 else ("uncached", "cached")):
                    ips = epoch2(records, cfg, size, batch, cache if which == "cached" else None, spec)
                    runs[which].append(ips)
                    loads[which].append(load1())
                print(f"augment={aug} workers={w} repeat {r + 1}/{repeats}: cached {runs['cached'][-1]:.0f} img/s, "
                      f"uncached {runs['uncached'][-1]:.0f} img/s, load {load1()}", file=sys.stderr)
            c, u = summary(runs["cached"]), summary(runs["uncached"])
            figures[f"augment_{aug}/workers_{w}"] = {
                "cached_images_per_s": {**c, "loadavg_1m": loads["cached"]},
                "uncached_images_per_s": {**u, "loadavg_1m": loads["uncached"]},
                "ratio": ratio(c["median"], u["median"]),
            }
    return build, figures


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--data", default=str(UTKFACE), help="UTKFace folder")
    p.add_argument("--images", type=int, default=2000, help="images per epoch (a seeded sample)")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    p.add_argument("--augment", nargs="+", choices=sorted(AUGMENT), default=["on", "off"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cache-dir", help="cache folder (default: a fresh temporary folder, removed afterwards)")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(1)  # as benchmarks/data_pipeline.py: the main process only normalises
    files = utkface_files(args.data, args.images, seed=0)
    records = [Record(str(f.resolve()), float(utkface_age(f))) for f in files]
    tmp = None if args.cache_dir else tempfile.mkdtemp(prefix="ordinalage-cache-bench-")
    try:
        build, figures = run(records, Path(args.cache_dir or tmp), args.size, args.batch_size, args.workers,
                             args.augment, args.repeats)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    settings = {"data": args.data, "images": args.images, "size": args.size, "batch_size": args.batch_size,
                "workers": args.workers, "augment": args.augment, "repeats": args.repeats,
                "torch_threads": torch.get_num_threads()}
    trained = [f["ratio"] for k, f in figures.items() if k.startswith("augment_on")]
    worst = min(trained or [f["ratio"] for f in figures.values()])
    write_result("cache", {"settings": settings, "ratio": worst,
                           "ratio_is": "min over worker counts (augmentation on) of median epoch-2 images/s "
                                       "with the cache / without", "build": build, "figures": figures}, args.json)
    for k, f in figures.items():
        print(f"{k}: cached {f['cached_images_per_s']['median']:.0f} img/s "
              f"(load {f['cached_images_per_s']['loadavg_1m']}), uncached {f['uncached_images_per_s']['median']:.0f} "
              f"img/s (load {f['uncached_images_per_s']['loadavg_1m']}), ratio {f['ratio']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
