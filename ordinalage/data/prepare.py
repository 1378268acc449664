"""The whole record pipeline: read sources, group ages (dropping and counting the rest), split,
cap and sample. `prepare_data(cfg) -> PreparedData` is what training, evaluation and `data stats` call.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ordinalage.config import DataConfig
from ordinalage.data import sampling
from ordinalage.data.boxes import image_file
from ordinalage.data.hashing import content_hashes
from ordinalage.data.records import SPLITS, Record
from ordinalage.data.sources import read_sources
from ordinalage.data.splits import Fold, parse_protocol, protocol_folds, splits_of_fold
from ordinalage.errors import UsageError
from ordinalage.groups import AgeGroups


@dataclass
class PreparedData:
    """Records per split after grouping, splitting, caps and sampling, with the counts behind them."""

    groups: AgeGroups
    train: list[Record]
    val: list[Record]
    test: list[Record]
    n_read: int
    dropped: int
    dropped_ages: dict[int, int] = field(default_factory=dict)
    report: dict = field(default_factory=dict)
    sampler_weights: np.ndarray | None = None
    class_weights: np.ndarray | None = None
    all: list[Record] = field(default_factory=list)  # every record inside the groups, before caps and sampling

    def split(self, name: str) -> list[Record]:
        """Records of 'train', 'val', 'test' or 'all'."""
        if name == "all":
            return self.all
        if name not in SPLITS:
            raise UsageError(f"unknown split {name!r} (expected train, val, test or all)")
        return getattr(self, name)


def _age_ranges(ages: Sequence[int]) -> str:
    """'71-116' style summary of the dropped ages."""
    return f"{min(ages)}-{max(ages)}" if min(ages) != max(ages) else str(min(ages))


def group_records(records: Sequence[Record], groups: AgeGroups, specs: Sequence[str] = ()
                  ) -> tuple[list[Record], np.ndarray, dict[int, int]]:
    """Records inside the age groups, their group indices, and {age: count} of those dropped (logged on stderr)."""
    idx = groups.indices([r.age for r in records])
    keep = idx >= 0
    dropped_ages = dict(sorted(Counter(int(r.age) for r, k in zip(records, keep, strict=True) if not k).items()))
    n_dropped = int((~keep).sum())
    where = f" from {', '.join(specs)}" if specs else ""
    if n_dropped:
        print(f"ordinalage: dropped {n_dropped} of {len(records)} images{where} with ages outside the groups "
              f"{groups.spec} (ages {_age_ranges(list(dropped_ages))})", file=sys.stderr)
    if len(records) and not keep.any():
        raise UsageError(f"data: all {len(records)} images{where} have ages outside the age groups {groups.spec} "
                         f"(ages {_age_ranges(list(dropped_ages))}); change data.groups, "
                         "e.g. add an open top group such as '71+'")
    kept = [r for r, k in zip(records, keep, strict=True) if k]
    return kept, idx[keep], dropped_ages


def _folds(cfg: DataConfig, records: Sequence[Record] | None, progress: bool, skipped: dict[str, dict[str, int]]
           ) -> tuple[AgeGroups, Sequence[Record], list[Record], np.ndarray, dict[int, int], list[Fold]]:
    groups = AgeGroups.parse(cfg.groups)
    if records is None:
        records = read_sources(cfg.sources, cfg, skipped)
    if not records:
        raise UsageError(f"data: no images found in {', '.join(cfg.sources)}")
    kept, gidx, dropped_ages = group_records(records, groups, cfg.sources)
    # a face box path (faeb:) hashes its image file: two boxes of one photo are byte-identical duplicates
    hashes = content_hashes([image_file(r.path) for r in kept], cache_dir=cfg.cache_dir, progress=progress)
    folds = protocol_folds(kept, gidx, hashes, cfg.protocol, cfg.val_fraction, cfg.test_fraction, cfg.split_seed)
    return groups, records, kept, gidx, dropped_ages, folds


def fold_count(cfg: DataConfig, records: Sequence[Record] | None = None) -> int:
    """How many folds `cfg.protocol` has on this data (folds:K: K, faeb: 5, faeb:K: 1, without reading anything)."""
    fixed = parse_protocol(cfg.protocol).fixed_folds
    if fixed is not None:
        return fixed
    return len(_folds(cfg, records, False, {})[-1])


def prepare_data(cfg: DataConfig, records: Sequence[Record] | None = None, progress: bool = False) -> PreparedData:
    """Read `cfg.sources` (or use `records`), drop ages outside the groups, split by `cfg.protocol`
    (fold `cfg.fold`), cap and sample."""
    skipped: dict[str, dict[str, int]] = {}
    groups, records, kept, gidx, dropped_ages, folds = _folds(cfg, records, progress, skipped)
    if cfg.fold >= len(folds):
        raise UsageError(f"config key 'data.fold': {cfg.fold} is past the last fold: data.protocol "
                         f"{cfg.protocol!r} has {len(folds)} fold(s) on {', '.join(cfg.sources)} (0-{len(folds) - 1})")
    splits = np.asarray(splits_of_fold(folds[cfg.fold], len(kept)))

    caps = {"train": cfg.cap_train, "val": cfg.cap_val, "test": cfg.cap_test}
    before: dict[str, np.ndarray] = {}
    after: dict[str, np.ndarray] = {}
    chosen: dict[str, np.ndarray] = {}
    for offset, name in enumerate(SPLITS):
        pos = np.flatnonzero(splits == name)
        before[name] = gidx[pos]
        pos = pos[sampling.apply_caps(gidx[pos], caps[name], cfg.split_seed + offset)]
        if name == "train":
            pos = pos[sampling.resample(gidx[pos], cfg.sampling, cfg.split_seed)]
        chosen[name], after[name] = pos, gidx[pos]

    report = sampling.counts_report(groups.labels, before, after)
    report.update(sampling=cfg.sampling, caps=caps, protocol=cfg.protocol, fold=cfg.fold, n_folds=len(folds),
                  skipped=skipped, unused=int((splits == "").sum()))
    train_groups = after["train"]
    return PreparedData(
        groups=groups,
        train=[kept[i] for i in chosen["train"]],
        val=[kept[i] for i in chosen["val"]],
        test=[kept[i] for i in chosen["test"]],
        n_read=len(records),
        dropped=len(records) - len(kept),
        dropped_ages=dropped_ages,
        report=report,
        sampler_weights=sampling.sampler_weights(train_groups, len(groups)) if cfg.sampling == "weighted" else None,
        class_weights=sampling.class_weights(train_groups, len(groups)) if cfg.class_weighted_loss else None,
        all=kept,
    )
