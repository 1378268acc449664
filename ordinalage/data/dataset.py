"""Torch side of the data layer: uint8 face tensors, bad-image skipping, seeded loaders.

Workers decode (or, with an `ImageCache`, read decoded pixels) and augment only; they ship uint8
(3, H, W) tensors and the device normalises (`InputSpec.normalize`). Each worker's albumentations pipeline is reseeded from torch's
per-worker seed, so workers never repeat each other's augmentations and a run is reproducible
from the loader seed.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import (
    DataLoader,
    Dataset,
    Sampler,
    WeightedRandomSampler,
    default_collate,
    get_worker_info,
)

from ordinalage.config import DataConfig
from ordinalage.data.augment import build_transform, reseed_transform
from ordinalage.data.decode import ImageDecodeError, check_geometry, decode_image
from ordinalage.data.loader_workers import resolve_num_workers
from ordinalage.data.records import Record
from ordinalage.errors import UsageError
from ordinalage.groups import AgeGroups

if TYPE_CHECKING:
    from ordinalage.data.cache import ImageCache

Item = dict[str, torch.Tensor]


class FaceDataset(Dataset):
    """Records -> {"image": uint8 (3, size, size) RGB, "age": float32, "group": int64, "index": int64}.

    An unreadable file gives None (named once on stderr per process) or, with `strict`, a
    UsageError naming it. With a `cache` (data/cache.py) the decoded pixels come from it instead
    of the files; augmentation still runs on every read.
    """

    def __init__(
        self,
        records: Sequence[Record],
        groups: AgeGroups,
        size: int,
        geometry: str = "auto",
        transform: Any = None,
        strict: bool = False,
        cache: ImageCache | None = None,
    ) -> None:
        if size <= 0:
            raise UsageError(f"image size must be positive, got {size}")
        self.paths = [r.path for r in records]
        self.ages = np.asarray([r.age for r in records], dtype=np.float32)
        self.groups = groups.clip_indices(self.ages).astype(np.int64)
        self.size = size
        self.geometry = check_geometry(geometry)
        self.transform = transform
        self.strict = strict
        self._reported: set[str] = set()
        self.cache = cache
        self.rows: np.ndarray | None = None
        if cache is not None:
            cache.check(size, self.geometry)
            self.rows = cache.rows_for(self.paths)

    def __len__(self) -> int:
        return len(self.paths)

    def _unreadable(self, path: str, reason: str) -> None:
        """Raise (strict) or report `path` once on stderr."""
        if self.strict:
            raise UsageError(f"{path}: cannot read image ({reason})")
        if path not in self._reported:
            self._reported.add(path)
            print(f"warning: skipping {path}: cannot read image ({reason})", file=sys.stderr, flush=True)

    def decoded(self, index: int) -> np.ndarray | None:
        """HxWx3 uint8 RGB before augmentation (a read-only view when cached), or None if unreadable."""
        path = self.paths[index]
        if self.cache is not None and self.rows is not None:
            row = int(self.rows[index])
            reason = self.cache.bad.get(row)
            if reason is not None:
                self._unreadable(path, reason)
                return None
            return self.cache.pixels[row]
        try:
            return decode_image(path, self.size, self.geometry)
        except ImageDecodeError as exc:
            self._unreadable(path, exc.reason)
            return None

    def load(self, index: int) -> np.ndarray | None:
        """Decoded (and, with a transform, augmented) HxWx3 uint8 RGB image, or None if unreadable."""
        image = self.decoded(index)
        if image is not None and self.transform is not None:
            # cached pixels are a read-only mapping: augment a private copy
            image = self.transform(image=image if image.flags.writeable else image.copy())["image"]
        return image

    def __getitems__(self, indices: Sequence[int]) -> Item | None:
        """A whole collated batch (DataLoader calls this instead of `__getitem__` per index).

        Images land in one preallocated NHWC uint8 array and leave as one contiguous NCHW tensor
        (a single copy); labels are sliced from arrays. This avoids four small tensors per image
        and `default_collate`'s stack, whose channels-last result made normalisation 3x slower
        (see docs/performance.md). Unreadable images are left out; an all-bad batch gives None.
        """
        images = np.empty((len(indices), self.size, self.size, 3), dtype=np.uint8)
        kept: list[int] = []
        for index in indices:
            image = self.load(index)
            if image is not None:
                images[len(kept)] = image
                kept.append(int(index))
        if not kept:
            return None
        idx = np.asarray(kept, dtype=np.int64)
        return {
            "image": torch.from_numpy(images[: len(kept)]).permute(0, 3, 1, 2).contiguous(),
            "age": torch.from_numpy(self.ages[idx]),
            "group": torch.from_numpy(self.groups[idx]),
            "index": torch.from_numpy(idx),
        }

    def __getitem__(self, index: int) -> Item | None:
        image = self.load(index)
        if image is None:
            return None
        return {
            # HWC -> CHW view; collate's stack writes the one contiguous copy (own a cached image first)
            "image": torch.from_numpy(np.ascontiguousarray(image) if image.flags.writeable else image.copy())
            .permute(2, 0, 1),
            "age": torch.tensor(self.ages[index]),
            "group": torch.tensor(self.groups[index]),
            "index": torch.tensor(index, dtype=torch.int64),
        }


def collate_skip_none(batch: Sequence[Item | None] | Item | None) -> dict[str, torch.Tensor] | None:
    """Drop None items (unreadable images), then default-collate; an all-None batch gives None.

    A batch that `FaceDataset.__getitems__` already collated (a dict, or None) passes through.
    """
    if batch is None or isinstance(batch, dict):
        return batch
    items = [b for b in batch if b is not None]
    return default_collate(items) if items else None


def _unwrap(dataset: Any) -> Any:
    """The innermost dataset of Subset-style wrappers."""
    while not hasattr(dataset, "transform") and hasattr(dataset, "dataset"):
        dataset = dataset.dataset
    return dataset


def worker_init_fn(worker_id: int) -> None:
    """Reseed this worker's albumentations pipeline, numpy and random from torch's worker seed.

    torch derives the worker seed from the loader's generator (base seed + worker id), so
    workers differ from each other and the whole run follows the loader seed.
    """
    info = get_worker_info()
    if info is None:
        return
    seed = int(info.seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
    reseed_transform(getattr(_unwrap(info.dataset), "transform", None), seed)


def build_loader(
    records: Sequence[Record],
    groups: AgeGroups,
    cfg: DataConfig,
    size: int,
    batch_size: int,
    train: bool,
    seed: int,
    sampler_weights: np.ndarray | None = None,
    sampler: Sampler | None = None,
    drop_last: bool | None = None,
    num_workers: int | str | None = None,
    cache: ImageCache | None = None,
) -> DataLoader:
    """A DataLoader over `records` with augmentation when `train`.

    Order: an explicit `sampler` (e.g. DistributedSampler) wins; else `sampler_weights` give a
    WeightedRandomSampler (with replacement, one epoch = len(records) draws); else train shuffles
    and eval keeps record order. All randomness follows `seed`. `drop_last` defaults to True
    for training when there is more than one batch. A `cache` (`data.cache.prepare_cache`) that
    holds these records' images replaces decoding; augmentation is unchanged. `num_workers`
    (default: `cfg.num_workers`) is an int or `auto` (`data.loader_workers.resolve_num_workers`).
    """
    if not records:
        raise UsageError(f"no images to load for the {'training' if train else 'evaluation'} loader")
    if batch_size <= 0:
        raise UsageError(f"batch size must be positive, got {batch_size}")
    workers = resolve_num_workers(cfg.num_workers if num_workers is None else num_workers)
    transform = build_transform(cfg.augment, size, train)
    reseed_transform(transform, seed)  # the main-process stream (num_workers=0)
    dataset = FaceDataset(records, groups, size, cfg.geometry, transform, cfg.strict, cache)

    generator = torch.Generator().manual_seed(int(seed))
    shuffle = False
    if sampler is None and sampler_weights is not None:
        weights = np.asarray(sampler_weights, dtype=np.float64)
        if weights.shape != (len(records),):
            raise UsageError(f"sampler weights: expected {len(records)} values, got shape {weights.shape}")
        sampler = WeightedRandomSampler(
            torch.from_numpy(weights), len(records), replacement=True, generator=generator
        )
    elif sampler is None:
        shuffle = train
    if drop_last is None:
        drop_last = train and len(records) > batch_size
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate_skip_none,
        pin_memory=torch.cuda.is_available(),
        drop_last=drop_last,
        worker_init_fn=worker_init_fn,
        generator=generator,
        prefetch_factor=4 if workers > 0 else None,
        persistent_workers=workers > 0,
    )
