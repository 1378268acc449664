"""Seeded, group-stratified, duplicate-aware train/val/test splits.

Records with the same content hash form one cluster and always land in the same split. A
cluster keeps its source's own split ("test" stays test, "val" stays val); validation is carved
out of the source's "train" records unless that source names its own "val" records (then its
train rows all stay train); records without a split are divided into train/val/test.
Inside each age group the clusters are ordered by a seeded hash of their content hash and cut at
the target counts, so the split depends on the seed and the image bytes, not on the file order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from ordinalage.data.records import Record
from ordinalage.errors import UsageError

_PRIORITY = {"test": 0, "val": 1, "train": 2}


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    if not 0.0 <= val_fraction < 1.0:
        raise UsageError(f"config key 'data.val_fraction': {val_fraction} is not in [0, 1)")
    if not 0.0 <= test_fraction < 1.0:
        raise UsageError(f"config key 'data.test_fraction': {test_fraction} is not in [0, 1)")
    if val_fraction + test_fraction >= 1.0:
        raise UsageError(f"config keys 'data.val_fraction' + 'data.test_fraction' = "
                         f"{val_fraction + test_fraction} leave nothing to train on (must be < 1)")


def _order_key(seed: int, content_hash: str) -> bytes:
    return hashlib.blake2b(f"{seed}:{content_hash}".encode(), digest_size=16).digest()


def _cut(clusters: list[tuple[bytes, list[int]]], targets: list[tuple[str, int]], rest: str,
         out: list[str]) -> None:
    """Walk clusters in key order, filling each (split, count) target in turn; the rest go to `rest`."""
    filled = dict.fromkeys((name for name, _ in targets), 0)
    for _key, members in sorted(clusters):
        split = next((name for name, want in targets if filled[name] < want), rest)
        if split in filled:
            filled[split] += len(members)
        for i in members:
            out[i] = split


def assign_splits(records: Sequence[Record], group_idx: np.ndarray, hashes: Sequence[str],
                  val_fraction: float, test_fraction: float, seed: int) -> list[str]:
    """'train' / 'val' / 'test' for every record (same order)."""
    check_fractions(val_fraction, test_fraction)
    group_idx = np.asarray(group_idx)
    if not len(records) == len(group_idx) == len(hashes):
        raise ValueError(f"assign_splits: {len(records)} records, {len(group_idx)} groups, {len(hashes)} hashes")
    members: dict[str, list[int]] = {}
    for i, h in enumerate(hashes):
        members.setdefault(h, []).append(i)
    # per (group, kind) the clusters to cut; kind is "free" (no source split) or "train" (source train)
    buckets: dict[tuple[int, str], list[tuple[bytes, list[int]]]] = {}
    out = [""] * len(records)
    own_val = {r.source for r in records if r.split == "val"}  # sources that name their validation rows
    for h, idx in members.items():
        own = {records[i].split for i in idx} - {None}
        for i in idx:
            if records[i].split not in (None, *_PRIORITY):
                raise UsageError(f"{records[i].path}: split {records[i].split!r} is not train, val or test")
        fixed = min(own, key=lambda s: _PRIORITY.get(s, 0)) if own else None
        if fixed in ("test", "val") or (fixed == "train" and any(records[i].source in own_val for i in idx)):
            for i in idx:
                out[i] = fixed
            continue
        kind = "train" if fixed == "train" else "free"
        group = int(min(group_idx[i] for i in idx))  # a cluster whose ages span groups goes with the youngest
        buckets.setdefault((group, kind), []).append((_order_key(seed, h), idx))
    val_of_rest = val_fraction / (1.0 - test_fraction)
    for (_group, kind), clusters in sorted(buckets.items()):
        n = sum(len(m) for _, m in clusters)
        if kind == "free":
            n_test = round(n * test_fraction)
            n_val = round((n - n_test) * val_of_rest)
            _cut(clusters, [("test", n_test), ("val", n_val)], "train", out)
        else:
            _cut(clusters, [("val", round(n * val_of_rest))], "train", out)
    return out
