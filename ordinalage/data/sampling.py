"""Group balance on arrays of group indices (pure numpy): caps, under/oversampling, weights.

Every function takes `group_idx` (one group index per record, 0..n_groups-1) and returns
positions into it, or weights; nothing here knows about files.
"""

from __future__ import annotations

import numpy as np
from sklearn.utils.class_weight import compute_class_weight

from ordinalage.errors import UsageError

SAMPLING_MODES = ("none", "undersample", "oversample", "weighted")


def group_counts(group_idx: np.ndarray, n_groups: int) -> np.ndarray:
    """Records per group, length `n_groups`."""
    return np.bincount(np.asarray(group_idx, dtype=np.int64), minlength=n_groups)[:n_groups]


def apply_caps(group_idx: np.ndarray, cap: int | None, seed: int) -> np.ndarray:
    """Sorted positions that keep at most `cap` records per group, chosen at random (seeded)."""
    group_idx = np.asarray(group_idx, dtype=np.int64)
    if cap is None:
        return np.arange(len(group_idx))
    if cap < 0:
        raise UsageError(f"per-group cap {cap} is negative (data.cap_train / cap_val / cap_test)")
    rng = np.random.default_rng(seed)
    keep = [rng.permutation(np.flatnonzero(group_idx == g))[:cap] for g in np.unique(group_idx)]
    return np.sort(np.concatenate(keep)) if keep else np.arange(0)


def resample(group_idx: np.ndarray, mode: str, seed: int) -> np.ndarray:
    """Positions after sampling (sorted; repeated for `oversample`).

    none / weighted: every record once. undersample: each group cut at random to the smallest
    non-empty group. oversample: each group topped up with random repeats to the largest group.
    """
    if mode not in SAMPLING_MODES:
        raise UsageError(f"config key 'data.sampling': {mode!r} is not one of {', '.join(SAMPLING_MODES)}")
    group_idx = np.asarray(group_idx, dtype=np.int64)
    if mode in ("none", "weighted") or len(group_idx) == 0:
        return np.arange(len(group_idx))
    rng = np.random.default_rng(seed)
    present = np.unique(group_idx)
    members = [np.flatnonzero(group_idx == g) for g in present]
    sizes = [len(m) for m in members]
    if mode == "undersample":
        parts = [rng.choice(m, size=min(sizes), replace=False) for m in members]
    else:
        parts = [np.concatenate([m, rng.choice(m, size=max(sizes) - len(m), replace=True)]) for m in members]
    return np.sort(np.concatenate(parts))


def sampler_weights(group_idx: np.ndarray, n_groups: int) -> np.ndarray:
    """Per-record weights 1/count(group), scaled to mean 1 (for torch's WeightedRandomSampler)."""
    group_idx = np.asarray(group_idx, dtype=np.int64)
    if len(group_idx) == 0:
        return np.zeros(0)
    counts = group_counts(group_idx, n_groups).astype(float)
    w = 1.0 / counts[group_idx]
    return w / w.mean()


def class_weights(group_idx: np.ndarray, n_groups: int) -> np.ndarray:
    """Inverse-frequency weight per group (sklearn 'balanced'), mean 1 over present groups; absent groups 0."""
    group_idx = np.asarray(group_idx, dtype=np.int64)
    out = np.zeros(n_groups)
    present = np.unique(group_idx)
    if len(present) == 0:
        return out
    w = compute_class_weight("balanced", classes=present, y=group_idx)
    out[present] = w / w.mean()
    return out


def counts_report(labels: list[str], before: dict[str, np.ndarray], after: dict[str, np.ndarray]) -> dict:
    """{'groups': labels, 'before': {split: [count per group]}, 'after': {...}} from group indices per split."""
    n = len(labels)
    return {
        "groups": list(labels),
        "before": {k: group_counts(v, n).tolist() for k, v in before.items()},
        "after": {k: group_counts(v, n).tolist() for k, v in after.items()},
    }
