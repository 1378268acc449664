"""DistributedDataParallel support for `torchrun ... -m ordinalage train` (NCCL on CUDA, gloo on CPU).

Launching is torchrun's job; this module reads its environment (RANK, WORLD_SIZE, LOCAL_RANK),
initialises the process group, shards samples across ranks without padding (so no image is
seen twice or lost in an epoch) and gathers validation outputs so metrics are computed over
the whole split exactly once.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from ordinalage.errors import UsageError


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_name: str) -> tuple[DistContext, str]:
    """Join the torchrun process group when WORLD_SIZE > 1; returns the context and the device to use."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext(), device_name
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_name in ("auto", "cuda") or device_name.startswith("cuda")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device_name = f"cuda:{local_rank}"
    elif device_name == "auto":
        device_name = "cpu"
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistContext(rank=rank, world_size=world, local_rank=local_rank), device_name


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def local_batch_size(global_batch: int, ctx: DistContext) -> int:
    """`train.batch_size` is the global batch; each rank takes an equal share."""
    if global_batch % ctx.world_size:
        raise UsageError(f"config key 'train.batch_size': the global batch {global_batch} must divide evenly "
                         f"over {ctx.world_size} processes")
    return global_batch // ctx.world_size


class ShardSampler(Sampler[int]):
    """This rank's share of one epoch: a seeded permutation (or weighted draw), every `world`-th index.

    All ranks draw the same epoch order from (seed, epoch), then rank r keeps positions r, r+W, ...
    No padding: every index of the epoch is used exactly once across ranks. With one process it
    is a plain seeded shuffle, so 1- and N-process runs see the same global batches.
    """

    def __init__(self, n: int, ctx: DistContext, shuffle: bool = True, seed: int = 0,
                 weights: np.ndarray | None = None) -> None:
        self.n, self.ctx, self.shuffle, self.seed = n, ctx, shuffle, seed
        self.weights = None if weights is None else torch.as_tensor(np.asarray(weights, dtype=np.float64))
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def epoch_order(self) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        if self.weights is not None:
            return torch.multinomial(self.weights, self.n, replacement=True, generator=g)
        if self.shuffle:
            return torch.randperm(self.n, generator=g)
        return torch.arange(self.n)

    def __iter__(self) -> Iterator[int]:
        return iter(self.epoch_order()[self.ctx.rank :: self.ctx.world_size].tolist())

    def __len__(self) -> int:
        return len(range(self.ctx.rank, self.n, self.ctx.world_size))


def all_reduce_sum(ctx: DistContext, *values: float) -> list[float]:
    if not ctx.enabled:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return t.cpu().tolist()


def gather_concat(ctx: DistContext, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Concatenate each named array over ranks (rank order)."""
    if not ctx.enabled:
        return arrays
    parts: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(parts, arrays)
    return {k: np.concatenate([p[k] for p in parts if p[k] is not None and len(p[k])]) if any(
        p[k] is not None and len(p[k]) for p in parts) else arrays[k] for k in arrays}


def broadcast(ctx: DistContext, obj: Any) -> Any:
    """Rank 0's `obj` on every rank."""
    if not ctx.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()
