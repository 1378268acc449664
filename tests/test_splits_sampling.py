"""Content hashes (cached), duplicate-aware seeded splits, caps and sampling, and prepare_data."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections import Counter, defaultdict

import numpy as np
import pytest
from fakes_data import make_megaage, make_utkface

from ordinalage.config import DataConfig
from ordinalage.data import hashing, sampling
from ordinalage.data.hashing import content_hashes
from ordinalage.data.prepare import prepare_data
from ordinalage.data.records import Record
from ordinalage.data.splits import assign_splits
from ordinalage.errors import UsageError


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ORDINALAGE_CACHE", str(tmp_path / "cache"))


# --------------------------------------------------------------------------------------- hashing


def test_content_hashes_are_sha256_and_cached(tmp_path, monkeypatch):
    paths = make_utkface(tmp_path / "d", ["1_0_0_a.jpg", "2_0_0_b.jpg"])
    shutil.copy(paths[0], tmp_path / "d" / "3_0_0_copy.jpg")
    paths.append(tmp_path / "d" / "3_0_0_copy.jpg")
    want = [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]
    assert content_hashes(paths) == want
    assert want[0] == want[2] != want[1]

    def no_reading(path):
        raise AssertionError(f"re-hashed {path}")

    monkeypatch.setattr(hashing, "file_hash", no_reading)
    assert content_hashes([str(p) for p in paths]) == want  # all from the cache
    monkeypatch.undo()
    monkeypatch.setenv("ORDINALAGE_CACHE", str(tmp_path / "cache"))
    paths[1].write_bytes(paths[1].read_bytes() + b"\0")  # size changes: must be re-hashed
    assert content_hashes(paths)[1] == hashlib.sha256(paths[1].read_bytes()).hexdigest() != want[1]


# --------------------------------------------------------------------------------------- splits


def _synthetic(n: int = 600, n_groups: int = 5, seed: int = 0):
    """Records with duplicate clusters (some spanning two groups) and their hashes."""
    rng = np.random.default_rng(seed)
    groups = rng.integers(0, n_groups, n)
    hashes = [f"h{i}" for i in range(n)]
    for i in range(0, n, 10):  # every 10th record duplicates its neighbour, mostly in the same group
        hashes[i + 1] = hashes[i]
        if i % 50:
            groups[i + 1] = groups[i]
    for i in range(0, n, 97):  # a few triples
        hashes[i + 2] = hashes[i]
    records = [Record(f"/x/{i}.jpg", float(g * 10 + 1)) for i, g in enumerate(groups)]
    return records, groups, hashes


def _sides(hashes, splits):
    sides = defaultdict(set)
    for h, s in zip(hashes, splits, strict=True):
        sides[h].add(s)
    return sides


def test_split_keeps_every_hash_on_one_side_and_is_seeded():
    records, groups, hashes = _synthetic()
    a = assign_splits(records, groups, hashes, 0.1, 0.2, seed=0)
    assert all(len(s) == 1 for s in _sides(hashes, a).values())
    assert set(a) == {"train", "val", "test"}
    assert assign_splits(records, groups, hashes, 0.1, 0.2, seed=0) == a
    b = assign_splits(records, groups, hashes, 0.1, 0.2, seed=1)
    assert b != a and all(len(s) == 1 for s in _sides(hashes, b).values())
    # stratified: every group gets close to 20 % test, 10 % val (clusters of 2-3 may overshoot by 2)
    for g in range(5):
        c = Counter(s for s, gg in zip(a, groups, strict=True) if gg == g)
        n = sum(c.values())
        assert abs(c["test"] - 0.2 * n) <= 3 and abs(c["val"] - 0.1 * n) <= 3


def test_split_does_not_depend_on_record_order():
    records, groups, hashes = _synthetic(200)
    a = assign_splits(records, groups, hashes, 0.15, 0.25, seed=3)
    perm = np.random.default_rng(9).permutation(len(records))
    b = assign_splits([records[i] for i in perm], groups[perm], [hashes[i] for i in perm], 0.15, 0.25, seed=3)
    assert [b[list(perm).index(i)] for i in range(len(records))] == a


def test_split_keeps_the_source_split():
    records, groups, hashes = _synthetic(400)
    own = ["train" if i % 3 else "test" for i in range(len(records))]
    own[1::10] = own[0::10]  # duplicates share the source split ...
    own[5] = "train"
    hashes[5] = hashes[3]  # ... except one cluster mixing train (5) and test (3)
    records = [Record(r.path, r.age, s) for r, s in zip(records, own, strict=True)]
    out = assign_splits(records, groups, hashes, 0.1, 0.2, seed=0)
    assert out[5] == out[3] == "test"
    has_test = {h for h, s in zip(hashes, own, strict=True) if s == "test"}
    for h, got in zip(hashes, out, strict=True):
        # test stays test (and pulls its byte-identical copies along); the rest is train or val
        assert got == "test" if h in has_test else got in ("train", "val")
    n_train_source = sum(h not in has_test for h in hashes)
    assert abs(out.count("val") - n_train_source * 0.1 / 0.8) <= 5  # val carved from the source's train


def test_bad_fractions_name_the_key():
    records, groups, hashes = _synthetic(20)
    with pytest.raises(UsageError, match="data.val_fraction"):
        assign_splits(records, groups, hashes, 0.5, 0.5, seed=0)
    with pytest.raises(UsageError, match="data.test_fraction"):
        assign_splits(records, groups, hashes, 0.1, -0.1, seed=0)


# --------------------------------------------------------------------------------------- sampling

G = np.array([0] * 10 + [1] * 3 + [2] * 6 + [4] * 1)  # group 3 empty


def test_caps_keep_at_most_cap_per_group_seeded():
    pos = sampling.apply_caps(G, 4, seed=0)
    assert sampling.group_counts(G[pos], 5).tolist() == [4, 3, 4, 0, 1]
    assert np.array_equal(pos, sampling.apply_caps(G, 4, seed=0))
    assert not np.array_equal(pos, sampling.apply_caps(G, 4, seed=1))
    assert np.array_equal(sampling.apply_caps(G, None, 0), np.arange(len(G)))


def test_undersample_and_oversample():
    under = sampling.resample(G, "undersample", seed=0)
    assert sampling.group_counts(G[under], 5).tolist() == [1, 1, 1, 0, 1]
    assert len(set(under.tolist())) == len(under)
    over = sampling.resample(G, "oversample", seed=0)
    assert sampling.group_counts(G[over], 5).tolist() == [10, 10, 10, 0, 10]
    assert set(over.tolist()) == set(range(len(G)))  # every original record kept
    assert np.array_equal(sampling.resample(G, "weighted", 0), np.arange(len(G)))
    with pytest.raises(UsageError, match="data.sampling"):
        sampling.resample(G, "smote", 0)


def test_weights():
    w = sampling.sampler_weights(G, 5)
    assert w.mean() == pytest.approx(1.0)
    per_group = [w[G == g].sum() for g in (0, 1, 2, 4)]
    assert np.allclose(per_group, per_group[0])  # every group drawn equally often
    cw = sampling.class_weights(np.array([0, 1, 1, 1]), 3)
    assert np.allclose(cw, [1.5, 0.5, 0.0])  # balanced 2 and 2/3, scaled to mean 1 over present groups


# --------------------------------------------------------------------------------------- prepare


def _utk(tmp_path, ages, dup_pairs=()):
    folder = tmp_path / "utk"
    paths = make_utkface(folder, [f"{a}_0_0_{i:04d}.jpg.chip.jpg" for i, a in enumerate(ages)])
    for i, j in dup_pairs:  # byte-identical copy of image i under the name of j
        shutil.copy(paths[i], paths[j])
    return folder


def test_prepare_data_drops_counts_and_keeps_duplicates_together(tmp_path, capsys):
    ages = [5, 15, 25, 35, 45, 55, 65] * 12 + [75, 80, 80, 99]
    folder = _utk(tmp_path, ages, dup_pairs=[(0, 1), (2, 9), (3, 10), (4, 11), (7, 14)])
    cfg = DataConfig(sources=(f"utkface:{folder}",), split_seed=4)
    prep = prepare_data(cfg)
    assert (prep.n_read, prep.dropped, prep.dropped_ages) == (88, 4, {75: 1, 80: 2, 99: 1})
    assert "dropped 4 of 88 images" in capsys.readouterr().err
    assert len(prep.train) + len(prep.val) + len(prep.test) == 84 == len(prep.all)
    side = {}
    for name in ("train", "val", "test"):
        for r, h in zip(prep.split(name), content_hashes([r.path for r in prep.split(name)]), strict=True):
            assert side.setdefault(h, name) == name, f"{r.path} split across {side[h]} and {name}"
    assert len(side) == 84 - 5
    assert prep.report["before"] == prep.report["after"]
    assert [sum(prep.report["before"][s]) for s in ("train", "val", "test")] == [
        len(prep.train), len(prep.val), len(prep.test)]
    assert prep.sampler_weights is None and prep.class_weights is None


def test_prepare_data_sampling_and_caps(tmp_path):
    folder = _utk(tmp_path, [5] * 30 + [25] * 10 + [45] * 20)
    cfg = DataConfig(sources=(f"utkface:{folder}",), groups="0-10,21-30,41-50", cap_test=3,
                     sampling="oversample", class_weighted_loss=True)
    prep = prepare_data(cfg)
    before, after = prep.report["before"], prep.report["after"]
    assert before["test"] == [6, 2, 4] and after["test"] == [3, 2, 3]
    top = max(before["train"])
    assert after["train"] == [top] * 3 and len(prep.train) == 3 * top
    assert np.allclose(prep.class_weights, 1.0)  # balanced after oversampling
    prep = prepare_data(DataConfig(sources=(f"utkface:{folder}",), groups="0-10,21-30,41-50", sampling="weighted"))
    assert prep.sampler_weights is not None and len(prep.sampler_weights) == len(prep.train)


def test_prepare_data_megaage_keeps_test(tmp_path):
    train = [(f"{i}.jpg", 5 + 10 * (i % 5)) for i in range(40)]  # 8 in each of 5 groups
    test = [(f"{i}.jpg", 30) for i in range(8)]
    make_megaage(tmp_path, train, test)
    prep = prepare_data(DataConfig(sources=(f"megaage:{tmp_path}",)))
    assert sorted(r.path for r in prep.test) == sorted(str(tmp_path / "test" / n) for n, _ in test)
    assert len(prep.val) == 5 and all("/train/" in r.path for r in prep.val)  # 8 * 0.1/0.8 per group


def test_empty_after_filtering_says_why(tmp_path):
    folder = _utk(tmp_path, [80, 85, 90])
    with pytest.raises(UsageError, match=r"all 3 images .* outside the age groups 0-10.*61-70 \(ages 80-90\)"):
        prepare_data(DataConfig(sources=(f"utkface:{folder}",)))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no images found in utkface:"):
        prepare_data(DataConfig(sources=(f"utkface:{tmp_path / 'empty'}",)))


def test_csv_that_names_its_val_rows_is_honoured_exactly(tmp_path):
    """2048 train + 256 val rows: train on 2048, validate on 256, no val carved out of train (nor test)."""
    images = tmp_path / "img"
    images.mkdir()
    rows = ["path,age,split"]
    for i in range(2048 + 256):
        (images / f"{i}.jpg").write_bytes(f"not decoded {i}".encode())  # only hashed, never decoded
        rows.append(f"img/{i}.jpg,{i % 70},{'train' if i < 2048 else 'val'}")
    (tmp_path / "faces.csv").write_text("\n".join(rows) + "\n")
    prep = prepare_data(DataConfig(sources=(f"csv:{tmp_path / 'faces.csv'}",)))
    assert (len(prep.train), len(prep.val), len(prep.test)) == (2048, 256, 0)
    assert {int(os.path.basename(r.path)[:-4]) for r in prep.val} == set(range(2048, 2304))


def test_val_is_still_carved_for_a_source_without_val_rows_next_to_one_with_them(tmp_path):
    records, groups, _ = _synthetic(400)
    hashes = [f"u{i}" for i in range(400)]  # no duplicates: a duplicate would pull its copy to val
    own = [("train" if i % 4 else "val") if i < 200 else "train" for i in range(400)]
    records = [Record(r.path, r.age, s, source="a" if i < 200 else "b")
               for i, (r, s) in enumerate(zip(records, own, strict=True))]
    out = assign_splits(records, groups, hashes, 0.1, 0.2, seed=0)
    assert out[:200] == own[:200]  # source a names its val rows: kept exactly
    assert 10 <= out[200:].count("val") <= 40 and out[200:].count("test") == 0  # b: val carved from its train
