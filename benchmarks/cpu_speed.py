"""CPU training-step speed: torch.compile (inductor), channels_last and thread count, side by side.

For each backbone (the scratch CNN and resnet18 by default) one model is built with the package's
own builder and copied into every variant, so all start from the same weights. Each variant trains
on the same random 64 px batches (forward, the head's loss, backward, AdamW step):

- `eager`: the default today (contiguous tensors, every core's thread);
- `channels_last`: model and batches in channels_last memory format;
- `compile`: `torch.compile` (inductor, which builds C++ with the machine's gcc);
- `compile+channels_last`;
- `eager-1thread`: `torch.set_num_threads(1)`, for runs that share the machine (two at once).

Variants take turns in rounds (each round times `--steps` steps of every variant, in a rotated
order), after untimed warm-up steps (compile's first steps include its compile time, reported on
its own); images/s is from the median round, and ratios are to `eager` in the same rounds.

    python benchmarks/cpu_speed.py [--backbones scratch,resnet18] [--rounds 6] [--steps 4] [--json OUT]
"""

from __future__ import annotations

import copy
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import parser, write_result  # noqa: E402

from ordinalage.config import ModelConfig  # noqa: E402
from ordinalage.groups import AgeGroups  # noqa: E402
from ordinalage.models.model import build_model  # noqa: E402

VARIANTS = ["eager", "channels_last", "compile", "compile+channels_last", "eager-1thread"]


class Variant:
    """One model copy with its optimiser, input format, compile setting and thread count."""

    def __init__(self, name: str, model: torch.nn.Module, threads: int) -> None:
        self.name = name
        self.channels_last = "channels_last" in name
        self.threads = 1 if name.endswith("1thread") else threads
        self.model = copy.deepcopy(model).train()
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.called = torch.compile(self.model) if name.startswith("compile") else self.model
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-3)
        self.compile_s: float | None = None
        self.rounds: list[float] = []  # seconds per step, one value per round

    def step(self, x: torch.Tensor, age: torch.Tensor, group: torch.Tensor) -> None:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        loss = self.model.head.loss(self.called(x), age, group)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def run(self, batches: list[tuple[torch.Tensor, ...]], steps: int) -> float:
        torch.set_num_threads(self.threads)
        start = time.perf_counter()
        for i in range(steps):
            self.step(*batches[i % len(batches)])
        return (time.perf_counter() - start) / steps


def bench_backbone(backbone: str, size: int, batch: int, rounds: int, steps: int, threads: int,
                   variants: list[str]) -> dict[str, Any]:
    groups = AgeGroups.parse("0-10,11-20,21-30,31-40,41-50,51-60,61-70,71+")
    model = build_model(ModelConfig(backbone=backbone, head="coral", target="age"), groups)
    g = torch.Generator().manual_seed(0)
    spec = model.input_spec
    batches = [(spec.normalize(torch.randint(0, 256, (batch, 3, size, size), generator=g, dtype=torch.uint8)),
                torch.randint(1, 90, (batch,), generator=g).float(), torch.zeros(batch, dtype=torch.long))
               for _ in range(3)]
    runs = [Variant(name, model, threads) for name in variants]
    for v in runs:  # warm-up; compile's first call compiles forward and backward
        start = time.perf_counter()
        v.run(batches, 2)
        if v.called is not v.model:
            v.compile_s = round(time.perf_counter() - start, 2)
        print(f"  {backbone} {v.name}: warmed up in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    for r in range(rounds):
        order = runs[r % len(runs):] + runs[:r % len(runs)]
        for v in order:
            v.rounds.append(v.run(batches, steps))
    torch.set_num_threads(threads)
    base = runs[0]
    out: dict[str, Any] = {"backbone": backbone, "image_size": size, "batch_size": batch, "variants": {}}
    for v in runs:
        per_round = [b / s for s, b in zip(v.rounds, base.rounds, strict=True)]  # speed ratio to eager per round
        out["variants"][v.name] = {
            "images_per_s": round(batch / statistics.median(v.rounds), 1),
            "speed_vs_eager": round(statistics.median(per_round), 3),
            "threads": v.threads, "compile_s": v.compile_s}
    return out


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__)
    p.add_argument("--backbones", default="scratch,resnet18")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--variants", default=",".join(VARIANTS))
    args = p.parse_args(argv)
    threads = torch.get_num_threads()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    results = [bench_backbone(b, args.image_size, args.batch_size, args.rounds, args.steps, threads,
                              [v for v in args.variants.split(",") if v])
               for b in args.backbones.split(",") if b]
    result = {"settings": {"image_size": args.image_size, "batch_size": args.batch_size, "rounds": args.rounds,
                           "steps": args.steps}, "threads": threads, "load_avg_1min_before": load,
              "load_avg_1min_after": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
              "rounds": args.rounds, "steps_per_round": args.steps, "backbones": results}
    write_result("cpu_speed", result, args.json)
    for r in results:
        for name, v in r["variants"].items():
            print(f"{r['backbone']:>9} {name:<22} {v['images_per_s']:8.1f} img/s  x{v['speed_vs_eager']:.2f}"
                  + (f"  (compile {v['compile_s']} s)" if v["compile_s"] else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
