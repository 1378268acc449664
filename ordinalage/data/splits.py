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
from ordinalage.protocols import (  # noqa: F401 (re-exported)
    FAEB_ONE_SPLIT,
    FAEB_SPLITS,
    PROTOCOLS,
    Folders,
    Protocol,
    parse_protocol,
)

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


# ---------------------------------------------------------------------------------------------
# protocols: data.protocol = random | subject | folds:K | loso | source | faeb | faeb:K

Fold = tuple[np.ndarray, np.ndarray, np.ndarray]  # train, val, test record indices


def _subjects(records: Sequence[Record], protocol: str) -> list[str]:
    """`source` + subject id of every record; a record without one is an error naming its source."""
    out = []
    for r in records:
        subject = r.meta.get("subject")
        if subject is None or subject == "":
            raise UsageError(f"data.protocol {protocol!r} needs subject ids, and {r.source or r.path} has none "
                             "(subject ids come from morph:, cacd:, fgnet:, agedb:, adience: and imdbwiki:)")
        out.append(f"{r.source}\0{subject}")
    return out


def _clusters(hashes: Sequence[str], keys: Sequence[str | None]) -> list[list[int]]:
    """Records linked by one content hash or one key (subject) form a cluster (union-find)."""
    parent = list(range(len(hashes)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[tuple[str, str], int] = {}
    for i, (h, k) in enumerate(zip(hashes, keys, strict=True)):
        for tag in (("h", h), ("k", k)):
            if tag[1] is None:
                continue
            j = first.setdefault(tag, i)  # type: ignore[arg-type]
            parent[find(i)] = find(j)
    members: dict[int, list[int]] = {}
    for i in range(len(hashes)):
        members.setdefault(find(i), []).append(i)
    return sorted(members.values())


def _cluster_key(seed: int, hashes: Sequence[str], members: list[int]) -> bytes:
    return _order_key(seed, min(hashes[i] for i in members))


def _take(clusters: list[list[int]], group_idx: np.ndarray, hashes: Sequence[str], share: float, seed: int,
          stratify: bool = True) -> tuple[list[int], list[int]]:
    """About `share` of the images (per age group when `stratify`), whole clusters in seeded order."""
    buckets: dict[int, list[tuple[bytes, list[int]]]] = {}
    for members in clusters:
        group = int(min(group_idx[i] for i in members)) if stratify else 0
        buckets.setdefault(group, []).append((_cluster_key(seed, hashes, members), members))
    taken: list[int] = []
    rest: list[int] = []
    for _group, items in sorted(buckets.items()):
        want = round(sum(len(m) for _, m in items) * share)
        filled = 0
        for _key, members in sorted(items):
            if filled < want:
                taken.extend(members)
                filled += len(members)
            else:
                rest.extend(members)
    return sorted(taken), sorted(rest)


def _fold(n: int, train: Sequence[int], val: Sequence[int], test: Sequence[int]) -> Fold:
    return (np.asarray(sorted(train), dtype=np.int64), np.asarray(sorted(val), dtype=np.int64),
            np.asarray(sorted(test), dtype=np.int64))


def _with_val(clusters: list[list[int]], test: set[int], group_idx: np.ndarray, hashes: Sequence[str],
              share: float, seed: int, stratify: bool) -> Fold:
    """Test = `test`; validation carved (by whole clusters) from the other clusters; the rest train."""
    rest = [m for m in clusters if not test.intersection(m)]
    val, train = _take(rest, group_idx, hashes, share, seed, stratify)
    return _fold(len(group_idx), train, val, sorted(test))


def splits_of_fold(fold: Fold, n: int) -> list[str]:
    """'train' / 'val' / 'test' per record for one fold (records in no set: '')."""
    out = [""] * n
    for name, idx in zip(("train", "val", "test"), fold, strict=True):
        for i in idx:
            out[int(i)] = name
    return out


def protocol_folds(records: Sequence[Record], group_idx: np.ndarray, hashes: Sequence[str], protocol: str,
                   val_fraction: float, test_fraction: float, seed: int) -> list[Fold]:
    """(train, val, test) record indices of every fold of `protocol` (pure: no files are read).

    random: one seeded, group-stratified split (assign_splits). subject: one split with no person on
    two sides. folds:K: K stratified folds, each the test set once (by person when every record has a
    subject id, else by image content). loso: one fold per subject (FG-NET: 82 folds). source: the
    dataset's own folds (`meta["fold"]`, Adience) or its own train/val/test split (MegaAge, CORAL CSVs).
    faeb / faeb:K: FAEB's fixed splits of the database files' folders (`faeb_folds`).
    Byte-identical images always stay on one side; validation is carved from the training side
    (except in faeb, whose splits are the benchmark's as published).
    """
    check_fractions(val_fraction, test_fraction)
    proto = parse_protocol(protocol)
    group_idx = np.asarray(group_idx)
    n = len(records)
    if proto.kind == "random":
        splits = assign_splits(records, group_idx, hashes, val_fraction, test_fraction, seed)
        return [_fold(n, *([i for i, s in enumerate(splits) if s == name] for name in ("train", "val", "test")))]
    if proto.kind == "source":
        return _source_folds(records, group_idx, hashes, val_fraction, seed)
    if proto.kind == "faeb":
        return faeb_folds(records, protocol)
    has_subjects = all(r.meta.get("subject") not in (None, "") for r in records)
    need_subjects = proto.kind in ("subject", "loso")
    keys: list[str | None] = list(_subjects(records, protocol)) if need_subjects or has_subjects else [None] * n
    clusters = _clusters(hashes, keys)
    by_person = keys[0] is not None if n else False
    if proto.kind == "subject":
        test, rest = _take(clusters, group_idx, hashes, test_fraction, seed, stratify=False)
        rest_set = set(rest)
        rest_clusters = [m for m in clusters if m[0] in rest_set]
        val, train = _take(rest_clusters, group_idx, hashes, val_fraction / (1.0 - test_fraction), seed, False)
        return [_fold(n, train, val, test)]
    if proto.kind == "folds":
        if len(clusters) < proto.k:
            raise UsageError(f"data.protocol {protocol!r}: only {len(clusters)} "
                             f"{'people' if by_person else 'distinct images'} for {proto.k} folds")
        fold_of = _deal(clusters, group_idx, hashes, proto.k, seed, stratify=not by_person)
        share = min(val_fraction / (1.0 - 1.0 / proto.k), 0.9)
        return [_with_val(clusters, {i for m, f in zip(clusters, fold_of, strict=True) if f == k for i in m},
                          group_idx, hashes, share, seed, stratify=not by_person) for k in range(proto.k)]
    # loso: each person is the test set once
    people = sorted({keys[m[0]] for m in clusters}, key=str)
    if len(people) < 2:
        raise UsageError(f"data.protocol 'loso' needs at least two subjects, found {len(people)}")
    out = []
    for person in people:
        test = {i for m in clusters if keys[m[0]] == person for i in m}
        out.append(_with_val(clusters, test, group_idx, hashes, val_fraction, seed, stratify=False))
    return out


def _deal(clusters: list[list[int]], group_idx: np.ndarray, hashes: Sequence[str], k: int, seed: int,
          stratify: bool) -> list[int]:
    """Fold number of each cluster: per age group in seeded order, each to the fold that has the fewest
    images of that group so far (then the fewest in all), so the folds are balanced and stratified."""
    order = sorted(range(len(clusters)), key=lambda c: (
        int(min(group_idx[i] for i in clusters[c])) if stratify else 0, _cluster_key(seed, hashes, clusters[c])))
    per_group: dict[int, list[int]] = {}
    total = [0] * k
    out = [0] * len(clusters)
    for c in order:
        group = int(min(group_idx[i] for i in clusters[c])) if stratify else 0
        counts = per_group.setdefault(group, [0] * k)
        f = min(range(k), key=lambda j: (counts[j], total[j], j))
        out[c] = f
        counts[f] += len(clusters[c])
        total[f] += len(clusters[c])
    return out


def _source_folds(records: Sequence[Record], group_idx: np.ndarray, hashes: Sequence[str], val_fraction: float,
                  seed: int) -> list[Fold]:
    """The dataset's own folds (meta "fold") or its own train/val/test split."""
    n = len(records)
    folds = [r.meta.get("fold") for r in records]
    if any(f is not None for f in folds):
        missing = next((r for r, f in zip(records, folds, strict=True) if f is None), None)
        if missing is not None:
            raise UsageError(f"data.protocol 'source': {missing.source} has no fold of its own "
                             "(mixing it with a source that has folds, like adience:, is ambiguous)")
        has_subjects = all(r.meta.get("subject") not in (None, "") for r in records)
        keys = _subjects(records, "source") if has_subjects else [None] * n
        clusters = _clusters(hashes, keys)
        out = []
        for k in sorted(set(folds), key=str):
            test = {i for i, f in enumerate(folds) if f == k}
            test |= {i for m in clusters if test.intersection(m) for i in m}  # a duplicate goes with its copy
            out.append(_with_val(clusters, test, group_idx, hashes, val_fraction, seed, stratify=not has_subjects))
        return out
    missing = next((r for r in records if r.split is None), None)
    if missing is not None:
        raise UsageError(f"data.protocol 'source': {missing.source or missing.path} has no split of its own "
                         "(use random, subject or folds:K for it)")
    splits = assign_splits(records, group_idx, hashes, val_fraction, 0.0, seed)
    return [_fold(n, *([i for i, s in enumerate(splits) if s == name] for name in ("train", "val", "test")))]


# ---------------------------------------------------------------------------------------------
# faeb: the FAEB benchmark's splits (Paplham et al., CVPR 2024) of its database files' folders


def faeb_layout(folders: set[int], source: str, protocol: str) -> Folders | None:
    """FAEB_ONE_SPLIT for a source whose folders are all 0-2 (CLAP2016, CACD2000), None for one with
    folders 0-9 (the five splits); anything else is an error naming the source."""
    used = {f for f in folders if f >= 0}  # a negative folder (CACD's -1: unassigned) is in no split
    if used <= {0, 1, 2}:
        return FAEB_ONE_SPLIT
    if used <= set(range(10)):
        return None
    raise UsageError(f"data.protocol {protocol!r}: {source} has folder {max(used)}, but FAEB's splits use "
                     "folders 0-9 (FG-Net's database file has one folder per person: use data.protocol=loso)")


def faeb_folds(records: Sequence[Record], protocol: str) -> list[Fold]:
    """(train, val, test) per FAEB split (`faeb`: all five; `faeb:K`: split K) from `meta["folder"]`.

    Each source (database file) is laid out on its own: folders 0-9 follow FAEB_SPLITS; a source whose
    folders are all 0-2 has one split (train 0, val 1, test 2) that every FAEB split uses, as FAEB's
    benchmark files do for CLAP2016 and CACD2000. Records in a folder outside the split are unused.
    """
    proto = parse_protocol(protocol)
    folders: dict[str, set[int]] = {}
    for r in records:
        folder = r.meta.get("folder")
        if folder is None:
            raise UsageError(f"data.protocol {protocol!r} needs FAEB folders, and {r.source or r.path} has none "
                             "(folders come from FAEB's database files: faeb:DB.json)")
        folders.setdefault(r.source, set()).add(int(folder))
    layout = {source: faeb_layout(f, source, protocol) for source, f in folders.items()}
    if proto.split is None and records and all(v is not None for v in layout.values()):
        raise UsageError(f"data.protocol {protocol!r}: {', '.join(layout)} has a single split of its own "
                         "(folders 0-2: train 0, val 1, test 2), the same in all five FAEB splits; "
                         "use data.protocol=faeb:0")
    out = []
    for k in range(len(FAEB_SPLITS)) if proto.split is None else [proto.split]:
        parts: tuple[list[int], list[int], list[int]] = ([], [], [])
        for i, r in enumerate(records):
            table = layout[r.source] or FAEB_SPLITS[k]
            folder = int(r.meta["folder"])
            for part, chosen in zip(parts, table, strict=True):
                if folder in chosen:
                    part.append(i)
        out.append(_fold(len(records), *parts))
    return out
