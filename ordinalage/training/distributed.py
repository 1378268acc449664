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
    """This process's place in the job; `owns_group` when `init_distributed` created the process group."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False

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
    wants_cuda = device_name.startswith("cuda")
    if wants_cuda and not torch.cuda.is_available():
        raise UsageError(f"config key 'train.device': {device_name!r} requested but CUDA is not available here")
    use_cuda = wants_cuda or (device_name == "auto" and torch.cuda.is_available())
    if use_cuda:  # one process per GPU: LOCAL_RANK picks it, whatever index the config names
        if local_rank >= torch.cuda.device_count():
            raise UsageError(f"LOCAL_RANK {local_rank}: this host has only {torch.cuda.device_count()} GPU(s); "
                             "start at most that many processes per node (torchrun's nproc-per-node)")
        torch.cuda.set_device(local_rank)
        device_name = f"cuda:{local_rank}"
    elif device_name == "auto":
        device_name = "cpu"
    owns = not dist.is_initialized()  # a caller (e.g. a distributed Optuna trial) may hold the group already
    if owns:
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistContext(rank=rank, world_size=world, local_rank=local_rank, owns_group=owns), device_name


def context_from_group() -> DistContext:
    """The context of a process group someone else initialised (one process: the default context)."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistContext()
    return DistContext(rank=dist.get_rank(), world_size=dist.get_world_size(),
                       local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def shutdown(ctx: DistContext) -> None:
    """Destroy the process group if `init_distributed` created it (a caller's group is left alone)."""
    if ctx.enabled and ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def local_batch_size(global_batch: int, ctx: DistContext) -> int:
    """`train.batch_size` is the global batch; each rank takes an equal share (the lr is not rescaled)."""
    if global_batch % ctx.world_size:
        raise UsageError(f"config key 'train.batch_size': the global batch {global_batch} must divide evenly "
                         f"over {ctx.world_size} processes")
    return global_batch // ctx.world_size


class ShardSampler(Sampler[int]):
    """This rank's share of one epoch: a seeded permutation (or weighted draw), every `world`-th index.

    All ranks draw the same epoch order from (seed, epoch), then rank r keeps positions r, r+W, ...
    No padding: every index of the epoch is used exactly once across ranks.

    `global_batch` (training) first cuts the epoch order to whole global batches, the global form
    of `drop_last`: every rank then holds the same number of full local batches (no rank waits
    for another), global batch k is positions [kB, (k+1)B) of the order whatever the number of
    processes, so 1- and N-process runs see the same global batches. The few images cut off
    change every epoch with the order. A set smaller than one global batch is kept whole.
    Without it (validation) ranks differ by at most one image.
    """

    def __init__(self, n: int, ctx: DistContext, shuffle: bool = True, seed: int = 0,
                 weights: np.ndarray | None = None, global_batch: int | None = None) -> None:
        self.n, self.ctx, self.shuffle, self.seed = n, ctx, shuffle, seed
        self.weights = None if weights is None else torch.as_tensor(np.asarray(weights, dtype=np.float64))
        if self.weights is not None and self.weights.shape != (n,):
            raise UsageError(f"sampler weights: expected {n} values, got shape {tuple(self.weights.shape)}")
        self.epoch = 0
        self.used = n if not global_batch or n < global_batch else (n // global_batch) * global_batch

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
        return iter(self.epoch_order()[: self.used][self.ctx.rank :: self.ctx.world_size].tolist())

    def __len__(self) -> int:
        return len(range(self.ctx.rank, self.used, self.ctx.world_size))


def sync_buffers(ctx: DistContext, module: torch.nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank.

    DDP broadcasts them before each training forward, but each rank then updates its own copy
    with its own half batch; after the last step the ranks differ. Syncing before validation
    makes every rank validate with the weights that rank 0 saves in the checkpoint.
    """
    if ctx.enabled:
        for buf in module.buffers():
            dist.broadcast(buf, src=0)


def all_reduce_sum(ctx: DistContext, *values: float) -> list[float]:
    """Each value summed over ranks."""
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
    """Wait for every rank."""
    if ctx.enabled:
        dist.barrier()
