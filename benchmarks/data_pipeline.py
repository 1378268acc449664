"""Data pipeline throughput: the package's loader against a plain PIL + torchvision pipeline.

Both pipelines do the same work per image: decode a JPEG, bring it to `size` x `size`, random
horizontal flip, random affine (shift/scale/rotate), colour jitter, convert to a normalised float
tensor and collate a batch. The package decodes with OpenCV at a reduced JPEG scale, augments
uint8 with albumentations, ships uint8 and normalises the whole batch at once
(`InputSpec.normalize`, on the device in training); the reference uses PIL + torchvision
(`Resize`, `RandomHorizontalFlip`, `RandomAffine`, `ColorJitter`, `ToTensor`, `Normalize`).

For each worker count the two run side by side, in alternating order, `--repeats` times; the
first batch (worker start-up) is not timed. Figures are medians of images/s. The main process
runs torch with one thread (`--threads`), as the reference's normalisation runs in one-thread
workers.

    python benchmarks/data_pipeline.py [--json OUT] [--images 1024] [--repeats 3] [--workers 0 1 2]
"""

from __future__ import annotations

import gc
import sys
import time
from pathlib import Path
from typing import Any

import torch
from common import UTKFACE, parser, ratio, summary, utkface_age, utkface_files, write_result
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from ordinalage.config import AugmentConfig, DataConfig
from ordinalage.data.dataset import build_loader
from ordinalage.data.records import Record
from ordinalage.groups import AgeGroups
from ordinalage.models.input_spec import InputSpec

# Every transform on at the package defaults' strengths, for both pipelines.
AUG = AugmentConfig()


class PILFaces(Dataset):
    """The reference: PIL decode + torchvision transforms, one float tensor per image."""

    def __init__(self, paths: list[Path], ages: list[float], size: int, spec: InputSpec) -> None:
        self.paths, self.ages = paths, ages
        self.transform = T.Compose([
            T.Resize((size, size)),
            T.RandomHorizontalFlip(AUG.hflip_p),
            T.RandomApply([T.RandomAffine(degrees=AUG.rotate, translate=(AUG.shift, AUG.shift),
                                          scale=(1 - AUG.scale, 1 + AUG.scale))], p=AUG.affine_p),
            T.RandomApply([T.ColorJitter(AUG.brightness, AUG.contrast, AUG.saturation, AUG.hue)], p=AUG.color_p),
            T.ToTensor(),
            T.Normalize(spec.mean, spec.std),
        ])

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, Any]:
        with Image.open(self.paths[i]) as im:
            x = self.transform(im.convert("RGB"))
        return {"image": x, "age": torch.tensor(self.ages[i], dtype=torch.float32)}


def reference_loader(paths: list[Path], size: int, batch: int, workers: int, spec: InputSpec) -> DataLoader:
    ages = [float(utkface_age(p)) for p in paths]
    return DataLoader(PILFaces(paths, ages, size, spec), batch_size=batch, shuffle=True, num_workers=workers,
                      drop_last=True, persistent_workers=workers > 0, prefetch_factor=4 if workers else None,
                      generator=torch.Generator().manual_seed(0))


def package_loader(paths: list[Path], size: int, batch: int, workers: int) -> DataLoader:
    records = [Record(str(p), float(utkface_age(p))) for p in paths]
    cfg = DataConfig(augment=AUG, num_workers=workers)
    return build_loader(records, AgeGroups.parse(), cfg, size, batch, train=True, seed=0)


def throughput(loader: DataLoader, spec: InputSpec | None) -> float:
    """Images/s over every batch but the first; `spec` normalises uint8 batches (the package's step)."""
    it = iter(loader)
    next(it)  # start-up: workers spawn, first batch
    n, start = 0, time.perf_counter()
    for batch in it:
        x = batch["image"]
        if spec is not None:
            x = spec.normalize(x)
        n += x.shape[0]
    return n / (time.perf_counter() - start)


def run(paths: list[Path], size: int, batch: int, workers: list[int], repeats: int) -> dict[str, Any]:
    spec = InputSpec(size)
    figures: dict[str, Any] = {}
    for w in workers:
        pkg, ref = [], []
        for r in range(repeats):
            order = ("package", "reference") if r % 2 == 0 else ("reference", "package")
            for which in order:
                if which == "package":
                    loader = package_loader(paths, size, batch, w)
                    pkg.append(throughput(loader, spec))
                else:
                    loader = reference_loader(paths, size, batch, w, spec)
                    ref.append(throughput(loader, None))
                del loader
                gc.collect()
            print(f"workers={w} repeat {r + 1}/{repeats}: package {pkg[-1]:.0f} img/s, "
                  f"reference {ref[-1]:.0f} img/s", file=sys.stderr)
        p, q = summary(pkg), summary(ref)
        figures[str(w)] = {"package_images_per_s": p, "reference_images_per_s": q,
                           "ratio": ratio(p["median"], q["median"])}
    return figures


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--data", default=str(UTKFACE), help="UTKFace folder")
    p.add_argument("--images", type=int, default=1024, help="images per timed pass (plus one start-up batch)")
    p.add_argument("--size", type=int, default=64, help="output side (64: the scratch model's input)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads in the main process, which normalises the package's batches (default 1: "
                        "with 2 threads on 2 shared cores OpenMP contention made that step up to 100x slower)")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    paths = utkface_files(args.data, args.images + args.batch_size, seed=0)
    figures = run(paths, args.size, args.batch_size, args.workers, args.repeats)
    worst = min(f["ratio"] for f in figures.values())
    settings = {"data": args.data, "images": args.images, "size": args.size, "batch_size": args.batch_size,
                "workers": args.workers, "repeats": args.repeats, "augment": AUG.__dict__,
                "torch_threads": torch.get_num_threads()}
    write_result("data_pipeline", {"settings": settings, "ratio": worst, "ratio_is": "min over worker counts of "
                                   "median package images/s / median reference images/s",
                                   "target": 1.5, "by_workers": figures}, args.json)
    for w, f in figures.items():
        print(f"workers {w}: package {f['package_images_per_s']['median']:.0f} img/s, reference "
              f"{f['reference_images_per_s']['median']:.0f} img/s, ratio {f['ratio']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
