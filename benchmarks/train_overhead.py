"""Trainer overhead: the package's `train_one_epoch` against a bare forward/backward/step loop.

Same model architecture and initial weights, same batches (in memory, no loader), same device,
same precision. The package loop gets uint8 batches and does what it does in a real run
(normalisation on the device, float32 loss, NaN check, gradient clipping, scheduler step,
`loss.item()` per step); the bare loop gets the already-normalised float tensors and does only
`model(x)`, the head's loss, `zero_grad`, `backward`, `AdamW.step`. They alternate step by
step (the package runs `train_one_epoch` over a one-batch list), in swapped order each pair,
after two untimed warm-up steps each; images/s are from median step times and the ratio is the
median of the per-pair ratios, which a shared machine's load swings affect least.

    python benchmarks/train_overhead.py [--json OUT] [--steps 8] [--repeats 6] [--batch-size 64]
"""

from __future__ import annotations

import copy
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from common import parser, summary, write_result

from ordinalage.config import Config, ModelConfig, to_dict
from ordinalage.groups import AgeGroups
from ordinalage.models.model import build_model
from ordinalage.runs.runtime import select_device
from ordinalage.training.loop import train_one_epoch
from ordinalage.training.state import TrainState, build_training


def make_batches(n_batches: int, batch_size: int, size: int, groups: AgeGroups, seed: int = 0
                 ) -> list[dict[str, torch.Tensor]]:
    """Random uint8 images with ages 1-90, shaped like the package loader's batches."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n_batches):
        age = torch.randint(1, 91, (batch_size,), generator=g).float()
        out.append({
            "image": torch.randint(0, 256, (batch_size, 3, size, size), generator=g, dtype=torch.uint8),
            "age": age,
            "group": torch.from_numpy(groups.clip_indices(age.numpy()).astype("int64")),
            "index": torch.arange(i * batch_size, (i + 1) * batch_size),
        })
    return out


class BareLoop:
    """model(x) -> loss -> backward -> AdamW.step on pre-normalised device tensors."""

    def __init__(self, model: torch.nn.Module, batches: list[dict[str, torch.Tensor]], state: TrainState) -> None:
        self.model, self.state = model, state
        cl = state.device.type == "cuda" and state.config.train.channels_last
        fmt = torch.channels_last if cl else torch.contiguous_format
        self.data = [(state.input_spec.normalize(b["image"].to(state.device)).contiguous(memory_format=fmt),
                      b["age"].to(state.device), b["group"].to(state.device)) for b in batches]
        t = state.config.train
        self.opt = torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)

    def step(self, i: int) -> None:
        """One training step on in-memory batch `i`."""
        model, opt, precision, device = self.model, self.opt, self.state.precision, self.state.device
        x, age, group = self.data[i]
        with precision.autocast(device):
            logits = model(x)
        loss = model.head.loss(logits, age, group)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def package_state(config: Config, model: torch.nn.Module, groups: AgeGroups, steps: int, run_dir: Path
                  ) -> TrainState:
    """A TrainState from fit's own builder (`build_training`: device placement, compile, optimiser,
    scheduler, GradScaler, precision), without the data and loaders the benchmark replaces."""
    device = select_device(config.train.device)
    train_model, optimizer, scheduler, scaler, precision = build_training(config, model, device, steps)
    return TrainState(config=config, run_dir=run_dir, device=device, precision=precision, model=model,
                      train_model=train_model, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                      input_spec=model.input_spec, groups=groups, reference={})


def timed_step(fn: Callable[[], Any], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def run(config: Config, steps: int, repeats: int) -> dict[str, Any]:
    """Paired per-step timings: package step i and bare step i run back to back (order swapped
    every step), so load changes on a shared machine hit both alike; the ratio is the median of
    the per-pair ratios."""
    groups = AgeGroups.parse(config.data.groups)
    torch.manual_seed(config.train.seed)
    model = build_model(config.model, groups)
    bare_model = copy.deepcopy(model)
    size = model.input_spec.size
    batches = make_batches(steps, config.train.batch_size, size, groups)
    n = steps * repeats
    with tempfile.TemporaryDirectory() as tmp:
        state = package_state(config, model, groups, n + steps, Path(tmp))
        bare_model.to(state.device)
        if state.device.type == "cuda" and config.train.channels_last:
            bare_model.to(memory_format=torch.channels_last)
        bare = BareLoop(bare_model, batches, state)
        model.train()
        bare_model.train()
        for i in range(min(steps, 2)):  # warm-up (allocator, kernels, optimizer state)
            train_one_epoch(state, batches[i : i + 1], None, None)
            bare.step(i)
        pkg_t, bare_t = [], []
        for k in range(n):
            i = k % steps
            pair = [("package", lambda i=i: train_one_epoch(state, batches[i : i + 1], None, None)),
                    ("bare", lambda i=i: bare.step(i))]
            for which, fn in (pair if k % 2 == 0 else pair[::-1]):
                (pkg_t if which == "package" else bare_t).append(timed_step(fn, state.device))
            if (k + 1) % steps == 0:
                print(f"step {k + 1}/{n}: package {statistics.median(pkg_t[-steps:]) * 1e3:.0f} ms, "
                      f"bare {statistics.median(bare_t[-steps:]) * 1e3:.0f} ms per step", file=sys.stderr)
        device, precision = str(state.device), state.precision.name
    b = config.train.batch_size
    pairs = [bt / pt for pt, bt in zip(pkg_t, bare_t, strict=True)]
    return {"package_images_per_s": summary([b / t for t in pkg_t]), "bare_images_per_s": summary([b / t for t in bare_t]),
            "paired_ratio": summary(pairs), "ratio": round(statistics.median(pairs), 3),
            "device": device, "precision": precision, "image_size": size, "steps_timed": n}


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=8, help="distinct in-memory batches")
    p.add_argument("--repeats", type=int, default=6, help="passes over the batches (steps x repeats pairs)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--backbone", default=ModelConfig.backbone)
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    base = Config()
    config = replace(base, model=replace(base.model, backbone=args.backbone),
                     train=replace(base.train, batch_size=args.batch_size, device=args.device))
    figures = run(config, args.steps, args.repeats)
    settings = {"steps": args.steps, "repeats": args.repeats, "batch_size": args.batch_size,
                "model": to_dict(config.model), "train": to_dict(config.train),
                "torch_threads": torch.get_num_threads()}
    write_result("train_overhead", {"settings": settings, "ratio": figures["ratio"], "target": 0.95,
                                    "ratio_is": "median over step pairs of bare step time / package step time",
                                    **figures}, args.json)
    print(f"package {figures['package_images_per_s']['median']:.0f} img/s, bare loop "
          f"{figures['bare_images_per_s']['median']:.0f} img/s, ratio {figures['ratio']:.3f} "
          f"({figures['device']}, {figures['precision']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

