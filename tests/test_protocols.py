"""data.protocol: random | subject | folds:K | loso | source, as pure functions and through prepare_data."""

from __future__ import annotations

import numpy as np
import pytest
from fakes_data import write_jpeg
from test_age_datasets import ADIENCE_ROWS, _adience

from ordinalage.config import DataConfig, load_config
from ordinalage.data.adience import ADIENCE_GROUPS
from ordinalage.data.prepare import fold_count, prepare_data
from ordinalage.data.records import Record
from ordinalage.data.splits import PROTOCOLS, Protocol, parse_protocol, protocol_folds
from ordinalage.errors import UsageError


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ORDINALAGE_CACHE", str(tmp_path / "cache"))


def _people(n_people: int = 30, per: int = 6, seed: int = 0):
    """Records of `n_people` subjects with `per` images each, ages spread over 5 groups; some duplicates."""
    rng = np.random.default_rng(seed)
    records, groups, hashes = [], [], []
    for p in range(n_people):
        for j in range(per):
            g = int(rng.integers(0, 5))
            records.append(Record(f"/x/{p}_{j}.jpg", float(g * 10 + 1), None, "fgnet:X", {"subject": f"{p:03d}"}))
            groups.append(g)
            hashes.append(f"h{p}_{j}")
    hashes[7] = hashes[6]  # a byte-identical copy within one person
    return records, np.array(groups), hashes


def _person(records, idx) -> set[str]:
    return {records[i].meta["subject"] for i in idx}


def _check_partition(fold, n, exhaustive=True):
    train, val, test = (set(map(int, a)) for a in fold)
    assert not (train & val) and not (train & test) and not (val & test)
    if exhaustive:
        assert train | val | test == set(range(n))


def test_parse_protocol_and_config_validation():
    assert parse_protocol("folds:5").k == 5 and parse_protocol("loso").kind == "loso"
    for bad, msg in [("folds:1", "folds >= 2"), ("folds", "is not one of"), ("kfold", "is not one of"),
                     ("loso:3", "is not one of")]:
        with pytest.raises(UsageError, match=f"data.protocol.*{msg}"):
            parse_protocol(bad)
    with pytest.raises(UsageError, match="config key 'data.protocol': 'folds:x'"):
        load_config(sets=["data.protocol=folds:x"])
    with pytest.raises(UsageError, match="config key 'data.fold': -1"):
        load_config(sets=["data.fold=-1"])
    assert load_config(sets=["data.protocol=folds:3", "data.fold=2"]).data.protocol == "folds:3"


def test_subject_protocol_keeps_each_person_on_one_side():
    records, groups, hashes = _people()
    (fold,) = protocol_folds(records, groups, hashes, "subject", 0.1, 0.2, seed=0)
    _check_partition(fold, len(records))
    sides = [_person(records, idx) for idx in fold]
    assert not (sides[0] & sides[1]) and not (sides[0] & sides[2]) and not (sides[1] & sides[2])
    assert len(sides[2]) == 6 and len(sides[1]) == 3  # 20 % and 10 % of 30 people (equal image counts)
    other = protocol_folds(records, groups, hashes, "subject", 0.1, 0.2, seed=1)[0]
    assert not all(np.array_equal(a, b) for a, b in zip(fold, other, strict=True))  # seeded


def test_subject_and_loso_need_subject_ids():
    records, groups, hashes = _people(4, 2)
    records[3] = Record("/x/y.jpg", 11.0, None, "utkface:/data/UTKFace", {})
    for protocol in ("subject", "loso"):
        with pytest.raises(UsageError, match=f"'{protocol}' needs subject ids, and utkface:/data/UTKFace has none"):
            protocol_folds(records, groups, hashes, protocol, 0.1, 0.2, seed=0)


def test_kfold_each_image_tested_once_and_folds_balanced():
    records, groups, hashes = _people()
    folds = protocol_folds(records, groups, hashes, "folds:5", 0.1, 0.2, seed=0)
    assert len(folds) == 5
    for fold in folds:
        _check_partition(fold, len(records))
        assert not (_person(records, fold[2]) & _person(records, fold[0]))  # by person: they have subject ids
    tested = np.concatenate([f[2] for f in folds])
    assert sorted(tested.tolist()) == list(range(len(records)))  # every image is tested exactly once
    assert [len(f[2]) for f in folds] == [36] * 5  # 30 people x 6 images in 5 folds of 6 people
    # without subject ids: by content, stratified per age group, copies together
    anon = [Record(r.path, r.age) for r in records]
    folds = protocol_folds(anon, groups, hashes, "folds:4", 0.1, 0.2, seed=0)
    assert sorted(np.concatenate([f[2] for f in folds]).tolist()) == list(range(len(records)))
    for fold in folds:
        _check_partition(fold, len(records))
        assert (6 in fold[2]) == (7 in fold[2])
        counts = np.bincount(groups[fold[2]], minlength=5)
        assert np.all(np.abs(counts - np.bincount(groups, minlength=5) / 4) <= 2)


def test_loso_one_fold_per_person():
    records, groups, hashes = _people(8, 3)
    folds = protocol_folds(records, groups, hashes, "loso", 0.15, 0.2, seed=0)
    assert len(folds) == 8
    for k, fold in enumerate(folds):
        _check_partition(fold, len(records))
        assert _person(records, fold[2]) == {f"{k:03d}"} and len(fold[2]) == 3
        assert f"{k:03d}" not in _person(records, fold[0]) | _person(records, fold[1])
        assert len(_person(records, fold[1])) == 1  # 15 % of the 7 others: one person validates


def test_source_protocol_keeps_the_own_split_and_needs_one():
    records = [Record(f"/x/{i}.jpg", 20.0, "test" if i < 3 else "train", "megaage:M") for i in range(20)]
    groups, hashes = np.zeros(20, dtype=int), [f"h{i}" for i in range(20)]
    (fold,) = protocol_folds(records, groups, hashes, "source", 0.1, 0.2, seed=0)
    assert fold[2].tolist() == [0, 1, 2] and len(fold[1]) == 2 and len(fold[0]) == 15
    records.append(Record("/x/u.jpg", 20.0, None, "utkface:/U"))
    with pytest.raises(UsageError, match="'source': utkface:/U has no split of its own"):
        protocol_folds(records, np.zeros(21, dtype=int), hashes + ["u"], "source", 0.1, 0.2, seed=0)


def test_adience_source_protocol_runs_its_folds(tmp_path):
    rows = {k: [(f"user{k}_{j}", f"{k}_{j}_o.jpg", str(j), age, "f")
                for j, age in enumerate(["(0, 2)", "(25, 32)", "(38, 43)", "(60, 100)"] * 2)] for k in range(5)}
    root = _adience(tmp_path, rows)
    cfg = DataConfig(sources=(f"adience:{root}",), groups=ADIENCE_GROUPS, protocol="source", fold=2)
    assert fold_count(cfg) == 5
    prep = prepare_data(cfg)
    assert {r.meta["fold"] for r in prep.test} == {2} and len(prep.test) == 8
    assert {r.meta["fold"] for r in prep.train + prep.val} == {0, 1, 3, 4} and len(prep.train) + len(prep.val) == 32
    assert prep.report["protocol"] == "source" and prep.report["n_folds"] == 5
    with pytest.raises(UsageError, match=r"'data.fold': 5 is past the last fold.*5 fold\(s\)"):
        prepare_data(DataConfig(sources=(f"adience:{root}",), groups=ADIENCE_GROUPS, protocol="source", fold=5))
    skipped_root = _adience(tmp_path / "other", ADIENCE_ROWS)
    prep = prepare_data(DataConfig(sources=(f"adience:{skipped_root}",), groups=ADIENCE_GROUPS))
    assert prep.report["skipped"] == {f"adience:{skipped_root}": {
        "no age label ('None')": 1, "age label outside the eight Adience groups": 3, "aligned image not found": 1}}


def test_fgnet_loso_through_prepare_data(tmp_path):
    folder = tmp_path / "FGNET" / "images"
    for s in range(1, 5):
        for j, age in enumerate((3, 15, 30)):
            write_jpeg(folder / f"{s:03d}A{age:02d}{'ab'[j % 2] if j else ''}.JPG", 100 * s + j)
    cfg = DataConfig(sources=(f"fgnet:{tmp_path / 'FGNET'}",), protocol="loso", fold=1, val_fraction=0.3)
    assert fold_count(cfg) == 4 and fold_count(DataConfig(protocol="folds:7")) == 7
    prep = prepare_data(cfg)
    assert {r.meta["subject"] for r in prep.test} == {"002"} and len(prep.test) == 3
    assert "002" not in {r.meta["subject"] for r in prep.train + prep.val}


def test_parse_faeb_protocols():
    """faeb: FAEB's five splits as folds; faeb:K (0-4): split K alone (data/splits.py faeb_folds)."""
    assert parse_protocol("faeb") == Protocol("faeb") and parse_protocol("faeb").fixed_folds == 5
    assert parse_protocol("faeb:4") == Protocol("faeb", split=4) and parse_protocol("faeb:0").fixed_folds == 1
    for bad in ("faeb:5", "faeb:-1", "faeb:", "faeb:x", "faeb:folds", "faeb:١"):
        with pytest.raises(UsageError, match=r"config key 'data.protocol'.*split number 0-4"):
            parse_protocol(bad)
    assert "faeb" in PROTOCOLS and "faeb:K" in PROTOCOLS
    with pytest.raises(UsageError, match="config key 'data.protocol': 'faeb:9'"):
        load_config(sets=["data.protocol=faeb:9"])
    assert load_config(sets=["data.protocol=faeb", "data.fold=4"]).data.fold == 4
    assert fold_count(DataConfig(protocol="faeb")) == 5 and fold_count(DataConfig(protocol="faeb:2")) == 1
