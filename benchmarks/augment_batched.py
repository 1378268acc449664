"""Augmentation cost per batch: per-image albumentations (the package) against batched tensors.

The 30-minute recipe's augmentation (`data.augment` of configs/experiments/utkface_30min.yaml:
flip, affine, colour jitter and one occluding hole, each with its probability and strength) on
batches of `--batch` UTKFace faces at `--size` px, three ways (the hole as each library's random
erasing of the same area):

- `albumentations`: the package's `build_transform`, one image at a time on uint8 HxWx3, as a
  DataLoader worker or the main process runs it (one thread: core-ms = wall ms);
- `kornia`: `kornia.augmentation` on the whole float batch with per-image parameters, in the
  main process with 1 and with all torch threads (optional: `pip install kornia`);
- `torchvision_v2`: `torchvision.transforms.v2` one uint8 tensor at a time (v2 draws one set of
  parameters per call, so per-image randomness needs one call per image).

Each backend runs `--repeats` times in turn (alternating order); figures are medians of wall ms
per batch, and core-ms (wall x threads, an upper bound on the CPU time a batch takes from the
model's cores). On a 2-core CPU the model step and augmentation share the cores, so core-ms is
what decides which is cheaper.

    python benchmarks/augment_batched.py [--json OUT] [--batch 64] [--size 64] [--repeats 5]
"""

from __future__ import annotations

import importlib.metadata
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
import torch
from common import ROOT, UTKFACE, parser, ratio, utkface_files, write_result

from ordinalage.config import load_config, to_dict
from ordinalage.data.augment import build_transform, reseed_transform

#: the 30-minute recipe's augmentation, read from its file so that it cannot drift from it
RECIPE = load_config(ROOT / "configs" / "experiments" / "utkface_30min.yaml").data.augment
#: the hole's area, as a share of the image: CoarseDropout's side is occlusion_size/2 to occlusion_size
HOLE_AREA = ((RECIPE.occlusion_size / 2) ** 2, RECIPE.occlusion_size ** 2)


def faces(n: int, size: int) -> np.ndarray:
    """n UTKFace faces as uint8 (n, size, size, 3) RGB."""
    out = []
    for path in utkface_files(UTKFACE, n, seed=0):
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        out.append(cv2.cvtColor(cv2.resize(bgr, (size, size), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB))
    return np.stack(out)


def albumentations_batch(images: np.ndarray) -> Callable[[], Any]:
    transform = build_transform(RECIPE, images.shape[1], train=True)
    reseed_transform(transform, 0)
    return lambda: [transform(image=im)["image"] for im in images]


def kornia_batch(images: np.ndarray) -> Callable[[], Any] | None:
    """The kornia pipeline on the whole batch, or None when kornia is not installed."""
    try:
        import kornia.augmentation as K
    except ImportError:
        return None
    a = RECIPE
    pipeline = torch.nn.Sequential(
        K.RandomHorizontalFlip(p=a.hflip_p),
        K.RandomAffine(degrees=a.rotate, translate=(a.shift, a.shift), scale=(1 - a.scale, 1 + a.scale),
                       padding_mode="reflection", p=a.affine_p),
        K.ColorJitter(a.brightness, a.contrast, a.saturation, a.hue, p=a.color_p),
        K.RandomErasing(scale=HOLE_AREA, ratio=(1.0, 1.0), p=a.occlusion_p))
    batch = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    return lambda: (pipeline(batch.float() / 255.0) * 255.0).round().to(torch.uint8)


def torchvision_v2_batch(images: np.ndarray) -> Callable[[], Any]:
    from torchvision.transforms import v2

    a = RECIPE
    t = v2.Compose([
        v2.RandomHorizontalFlip(a.hflip_p),
        v2.RandomApply([v2.RandomAffine(a.rotate, (a.shift, a.shift), (1 - a.scale, 1 + a.scale))], p=a.affine_p),
        v2.RandomApply([v2.ColorJitter(a.brightness, a.contrast, a.saturation, a.hue)], p=a.color_p),
        v2.RandomErasing(p=a.occlusion_p, scale=HOLE_AREA, ratio=(1.0, 1.0), value="random")])
    tensors = [torch.from_numpy(im).permute(2, 0, 1).contiguous() for im in images]
    return lambda: [t(x) for x in tensors]


def wall_ms(fn: Callable[[], Any], threads: int, loops: int) -> float:
    torch.set_num_threads(threads)
    fn()  # warm-up
    started = time.perf_counter()
    for _ in range(loops):
        fn()
    return (time.perf_counter() - started) / loops * 1000.0


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--loops", type=int, default=10, help="batches per timing")
    args = p.parse_args(argv)
    all_threads = torch.get_num_threads()
    images = faces(args.batch, args.size)
    cases: dict[str, tuple[Callable[[], Any], int]] = {"albumentations": (albumentations_batch(images), 1),
                                                        "torchvision_v2": (torchvision_v2_batch(images), 1)}
    k = kornia_batch(images)
    if k is not None:
        cases["kornia_1_thread"] = (k, 1)
        if all_threads > 1:
            cases[f"kornia_{all_threads}_threads"] = (k, all_threads)
    times: dict[str, list[float]] = {name: [] for name in cases}
    for r in range(args.repeats):
        order = list(cases) if r % 2 == 0 else list(reversed(cases))
        for name in order:
            fn, threads = cases[name]
            times[name].append(wall_ms(fn, threads, args.loops))
    torch.set_num_threads(all_threads)
    results: dict[str, Any] = {}
    for name, ms in times.items():
        threads = cases[name][1]
        wall = statistics.median(ms)
        results[name] = {"threads": threads, "wall_ms_per_batch": round(wall, 2),
                         "core_ms_per_batch": round(wall * threads, 2), "runs": [round(v, 2) for v in ms]}
        print(f"{name:>20}: {wall:6.2f} ms/batch wall, {wall * threads:6.2f} core-ms ({threads} thread(s))")
    base = results["albumentations"]["core_ms_per_batch"]
    for r in results.values():
        r["core_ms_vs_albumentations"] = ratio(r["core_ms_per_batch"], base)
    kornia_version = importlib.metadata.version("kornia") if k is not None else None
    write_result("augment_batched", {
        "settings": {"batch": args.batch, "size": args.size, "repeats": args.repeats, "loops": args.loops,
                     "augment": to_dict(RECIPE), "kornia": kornia_version or "not installed (pip install kornia)"},
        "ratio_is": "core-ms per batch of each backend / per-image albumentations' (below 1: cheaper)",
        "by_backend": results}, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
