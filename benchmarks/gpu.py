"""GPU training-step throughput and model FLOP utilisation (MFU), plus the CPU data path feeding it.

For each model (VGG-16 at 224 px, ResNet-50 at 224 px) and each combination of channels_last
and torch.compile: images/s of a bf16-autocast training step (forward, float32 cross-entropy
over 100 age ranks, backward, SGD-momentum step) on random in-memory data, and MFU = FLOPs per
step (counted once with torch.utils.flop_counter.FlopCounterMode, forward + backward) x steps/s /
the GPU's dense bf16 peak (`--peak-tflops`, 989 for an H200 SXM; recorded in the JSON). Then the
data path on this machine's CPUs: the package's loader (decode + augment + collate, uint8 out) if
its imports are available, else OpenCV decode alone, else torchvision.io; on UTKFace if
`--data` exists, else on generated JPEGs; and a GPU JPEG decode (nvJPEG through
torchvision.io.decode_jpeg) when CUDA is present. Last, the projected seconds for one
`--epoch-images` epoch of VGG-16: compute-bound and data-bound.

Needs only torch and torchvision (OpenCV / albumentations / the package are used when present).
One prepared command on a lent H200, a few minutes:

    python benchmarks/gpu.py --json benchmarks/results/gpu.json
    python benchmarks/gpu.py --smoke   # tiny CPU run that keeps the script from rotting
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torchvision
from common import UTKFACE, list_images, parser, summary, utkface_age, write_result

H200_BF16_DENSE_TFLOPS = 989.0  # H200 SXM dense bf16 (no sparsity), NVIDIA datasheet
NUM_CLASSES = 100  # age ranks, like the package's CORAL head over max_age 100


def build(name: str) -> torch.nn.Module:
    return getattr(torchvision.models, name)(weights=None, num_classes=NUM_CLASSES)


def step_fn(model: torch.nn.Module, opt: torch.optim.Optimizer, device: torch.device
            ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss
    return step


def count_flops(name: str, size: int, batch: int, device: torch.device) -> int:
    """Forward + backward FLOPs of one training step (FlopCounterMode counts matmuls and convolutions)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = build(name).to(device)
    x = torch.randn(batch, 3, size, size, device=device)
    with FlopCounterMode(display=False) as counter:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            logits = model(x)
        logits.float().sum().backward()
    return int(counter.get_total_flops())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(name: str, size: int, batch: int, device: torch.device, channels_last: bool, compiled: bool,
               warmup: int, steps: int, repeats: int) -> dict[str, Any]:
    torch.manual_seed(0)
    model = build(name).to(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    fwd = torch.compile(model) if compiled else model
    step = step_fn(fwd, opt, device)
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, NUM_CLASSES, (batch,), device=device)
    t0 = time.perf_counter()
    for _ in range(warmup):
        step(x, y)
    _sync(device)
    warm_s = time.perf_counter() - t0
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            loss = step(x, y)
        _sync(device)
        rates.append(batch * steps / (time.perf_counter() - start))
    if not torch.isfinite(loss):
        raise RuntimeError(f"{name}: non-finite loss")
    out = {"images_per_s": summary(rates), "warmup_s": round(warm_s, 2)}
    if device.type == "cuda":
        out["max_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        torch.cuda.reset_peak_memory_stats(device)
    del model, fwd, opt
    return out


# ------------------------------------------------------------------------------------------ data path


def _jpeg_folder(src: str, n: int, tmp: Path) -> list[Path]:
    """`n` JPEGs from `src` (UTKFace) when it exists, else generated 200x200 faces-sized JPEGs."""
    folder = Path(src)
    if folder.is_dir():
        files = [p for p in list_images(folder, recursive=False) if p.suffix.lower() in (".jpg", ".jpeg")]
        if len(files) >= n:
            return files[:n]
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        base = torch.linspace(0, 255, 200).view(1, 200, 1).expand(200, 200, 3)
        img = (base * torch.rand(3, generator=g) + 40 * torch.rand(200, 200, 3, generator=g)).clamp(0, 255)
        path = tmp / f"{20 + i % 60}_{i}.jpg"
        Image.fromarray(img.to(torch.uint8).numpy()).save(path, quality=90)
        out.append(path)
    return out


def _loader_rate(loader: Any, batches: int | None = None) -> float:
    it = iter(loader)
    next(it)
    n, start = 0, time.perf_counter()
    for i, b in enumerate(it):
        n += (b["image"] if isinstance(b, dict) else b).shape[0]
        if batches is not None and i + 1 >= batches:
            break
    return n / (time.perf_counter() - start)


def data_path(files: list[Path], size: int, batch: int, workers: list[int]) -> dict[str, Any]:
    """CPU data path images/s per worker count, with the most complete pipeline importable here."""
    try:
        from ordinalage.config import DataConfig
        from ordinalage.data.dataset import build_loader
        from ordinalage.data.records import Record
        from ordinalage.groups import AgeGroups

        kind = "package loader (OpenCV reduced decode + albumentations + batch collation)"

        def make(w: int) -> Any:
            recs = [Record(str(p), float(utkface_age(p))) for p in files]
            return build_loader(recs, AgeGroups.parse(), DataConfig(num_workers=w), size, batch, True, 0)
    except ImportError as exc:
        from torch.utils.data import DataLoader

        try:
            from ordinalage.data.decode import decode_image

            kind = f"OpenCV decode only (package loader unavailable: {exc})"

            def load(p: Path) -> torch.Tensor:
                return torch.from_numpy(decode_image(p, size)).permute(2, 0, 1)
        except ImportError:
            kind = f"torchvision.io decode + resize (no OpenCV: {exc})"

            def load(p: Path) -> torch.Tensor:
                img = torchvision.io.decode_jpeg(torchvision.io.read_file(str(p)))
                return torchvision.transforms.v2.functional.resize(img, [size, size], antialias=True)

        def make(w: int) -> Any:
            return DataLoader(files, batch_size=batch, num_workers=w, collate_fn=lambda ps: torch.stack(
                [load(p) for p in ps]), persistent_workers=w > 0, shuffle=True, drop_last=True)
    rates = {}
    for w in workers:
        rates[str(w)] = round(_loader_rate(make(w)), 1)
    return {"kind": kind, "images": len(files), "size": size, "images_per_s_by_workers": rates}


def gpu_decode(files: list[Path], size: int, batch: int, device: torch.device, repeats: int = 3) -> dict[str, Any]:
    """nvJPEG batch decode + resize on the GPU (bytes read on the CPU), images/s."""
    from torchvision.io import decode_jpeg
    from torchvision.transforms.v2.functional import resize

    data = [torchvision.io.read_file(str(p)) for p in files]
    rates = []
    for r in range(repeats + 1):
        _sync(device)
        start = time.perf_counter()
        for i in range(0, len(data) - batch + 1, batch):
            imgs = decode_jpeg(data[i : i + batch], device=device)
            torch.stack([resize(im, [size, size], antialias=True) for im in imgs])
        _sync(device)
        if r:  # the first pass initialises nvJPEG
            rates.append((len(data) // batch) * batch / (time.perf_counter() - start))
    return {"kind": "torchvision.io.decode_jpeg(device='cuda') + resize", "images_per_s": summary(rates)}


# ------------------------------------------------------------------------------------------ main


def _onoff(values: list[str]) -> list[bool]:
    return [v == "on" for v in values]


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (for tests); overrides the rest")
    p.add_argument("--models", nargs="+", default=["vgg16", "resnet50"])
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--steps", type=int, default=15)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--channels-last", nargs="+", choices=("on", "off"), default=["off", "on"])
    p.add_argument("--compile", nargs="+", choices=("on", "off"), default=["off", "on"])
    p.add_argument("--peak-tflops", type=float, default=H200_BF16_DENSE_TFLOPS)
    p.add_argument("--epoch-images", type=int, default=73_000)
    p.add_argument("--data", default=str(UTKFACE))
    p.add_argument("--data-images", type=int, default=2048)
    p.add_argument("--workers", type=int, nargs="+", default=None, help="default: 0, half and all CPU cores")
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    if args.smoke:
        args = argparse.Namespace(**{**vars(args), "models": ["resnet18"], "size": 32, "batch_size": 2, "warmup": 1,
                                     "steps": 1, "repeats": 1, "compile": ["off"], "data_images": 12,
                                     "workers": [0], "device": "cpu"})
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = args.workers or sorted({0, max(1, cores // 2), cores})
    peak = args.peak_tflops * 1e12

    models: dict[str, Any] = {}
    for name in args.models:
        flops = count_flops(name, args.size, args.batch_size, device)
        runs = {}
        for cl in _onoff(args.channels_last):
            for comp in _onoff(args.compile):
                key = f"channels_last={'on' if cl else 'off'},compile={'on' if comp else 'off'}"
                r = time_steps(name, args.size, args.batch_size, device, cl, comp, args.warmup, args.steps,
                               args.repeats)
                r["mfu"] = round(flops * r["images_per_s"]["median"] / args.batch_size / peak, 4)
                runs[key] = r
                print(f"{name} {key}: {r['images_per_s']['median']:.0f} img/s, MFU {r['mfu']:.1%}", file=sys.stderr)
        best = max(runs, key=lambda k: runs[k]["images_per_s"]["median"])
        models[name] = {"flops_per_step": flops, "flops_per_image": flops // args.batch_size, "runs": runs,
                        "best": best}

    with tempfile.TemporaryDirectory() as tmp:
        files = _jpeg_folder(args.data, args.data_images, Path(tmp))
        data = data_path(files, args.size, min(args.batch_size, 64), workers)
        data["source"] = "UTKFace" if Path(args.data).is_dir() else "generated 200x200 JPEGs"
        if device.type == "cuda":
            try:
                data["gpu_decode"] = gpu_decode(files, args.size, min(args.batch_size, 64), device)
            except Exception as exc:  # noqa: BLE001 - optional measurement; record why it failed
                data["gpu_decode"] = {"error": repr(exc)}
    cpu_best = max(data["images_per_s_by_workers"].values())

    projection = {}
    if "vgg16" in models:
        v = models["vgg16"]
        compute = v["runs"][v["best"]]["images_per_s"]["median"]
        projection = {"epoch_images": args.epoch_images, "vgg16_images_per_s": compute,
                      "data_images_per_s": cpu_best,
                      "compute_bound_s": round(args.epoch_images / compute, 1),
                      "data_bound_s": round(args.epoch_images / cpu_best, 1),
                      "projected_s": round(args.epoch_images / min(compute, cpu_best), 1)}
    settings = {k: v for k, v in vars(args).items() if k != "json"}
    settings.update({"device": str(device), "peak_tflops_used": args.peak_tflops, "workers": workers,
                     "optimizer": "SGD momentum 0.9", "precision": "bf16 autocast, float32 loss",
                     "num_classes": NUM_CLASSES})
    if args.smoke:
        settings["note"] = "smoke run on the CPU: sizes are tiny and MFU against a GPU peak is meaningless"
    if args.json or not args.smoke:  # a smoke run writes only where told to
        write_result("gpu", {"settings": settings, "models": models, "data_path": data, "vgg16_epoch": projection},
                     args.json)

    print(f"{'model':<10}{'setting':<34}{'img/s':>9}{'MFU':>8}")
    for name, m in models.items():
        for key, r in m["runs"].items():
            print(f"{name:<10}{key:<34}{r['images_per_s']['median']:>9.0f}{r['mfu']:>8.1%}")
    print(f"data path ({data['kind'].split(' (')[0]}): " +
          ", ".join(f"{w} workers {v:.0f} img/s" for w, v in data["images_per_s_by_workers"].items()))
    if "gpu_decode" in data and "images_per_s" in data["gpu_decode"]:
        print(f"GPU JPEG decode: {data['gpu_decode']['images_per_s']['median']:.0f} img/s")
    if projection:
        print(f"VGG-16 epoch of {args.epoch_images} images: {projection['projected_s']:.0f} s "
              f"(compute {projection['compute_bound_s']:.0f} s, data {projection['data_bound_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
