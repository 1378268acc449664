"""Readers of every data spec, on tiny trees in the real layouts, and their errors."""

from __future__ import annotations

import os
import sys
import types
from collections import Counter
from pathlib import Path

import pytest
from fakes_data import (
    IRREGULAR_UTKFACE,
    UTKFACE,
    make_group_folders,
    make_megaage,
    make_utkface,
    needs_utkface,
    write_csv,
    write_jpeg,
)

from ordinalage.cli import main
from ordinalage.config import DataConfig
from ordinalage.data.sources import parse_spec, read_sources
from ordinalage.errors import UsageError

CFG = DataConfig()


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ORDINALAGE_CACHE", str(tmp_path / "cache"))


def _read(spec: str):
    return read_sources([spec], CFG)


# --------------------------------------------------------------------------------------- utkface


def test_utkface_irregular_names(tmp_path):
    folder = tmp_path / "UTKFace"
    make_utkface(folder, IRREGULAR_UTKFACE)
    (folder / "README.txt").write_text("not an image")
    (folder / ".hidden.jpg").write_bytes(b"x")
    records = _read(f"utkface:{folder}")
    by_name = {Path(r.path).name: r for r in records}
    assert sorted(by_name) == sorted(IRREGULAR_UTKFACE)
    assert {n: r.age for n, r in by_name.items()} == {n: float(n.split("_")[0]) for n in IRREGULAR_UTKFACE}
    assert all(r.split is None and os.path.isabs(r.path) and r.source == f"utkface:{folder}" for r in records)
    assert by_name["39_1_20170116174525125.jpg.chip.jpg"].meta == {"gender": 1}  # race missing
    assert by_name["24_0_1_20170116220224657 .jpg.chip.jpg"].meta == {"gender": 0, "race": 1}
    assert by_name["3_0_4_20170109212345678.jpg.chip.jpg"].meta == {"gender": 0, "race": 4}


@pytest.mark.parametrize("bad", ["abc_0_0_2017.jpg.chip.jpg", "-5_0_0_2017.jpg", "4.5_1_0_x.jpg"])
def test_utkface_bad_age_names_the_file(tmp_path, bad):
    make_utkface(tmp_path, ["20_0_0_1.jpg.chip.jpg", bad])
    with pytest.raises(UsageError, match=bad.split("_")[0].replace(".", r"\.")) as info:
        _read(f"utkface:{tmp_path}")
    assert bad in str(info.value)


@needs_utkface
def test_real_utkface_ages_match_names():
    records = _read(f"utkface:{UTKFACE}")  # <repo>/../shared/data/UTKFace
    names = os.listdir(UTKFACE)
    assert len(records) == len(names) == 10808
    assert Counter(int(r.age) for r in records) == Counter(int(n.split("_")[0]) for n in names)
    assert sum("race" not in r.meta for r in records) == 3  # README: race missing in 3 names


# --------------------------------------------------------------------------------------- megaage

TRAIN = [("1.jpg", 23), ("2.jpg", 5), ("3.jpg", 61)]
TEST = [("1.jpg", 40), ("2.jpg", 0)]


@pytest.mark.parametrize("nested", [False, True])
def test_megaage_layouts_read_back_exactly(tmp_path, nested):
    base = make_megaage(tmp_path, TRAIN, TEST, nested=nested)
    records = _read(f"megaage:{tmp_path}")
    got = [(Path(r.path).relative_to(base).as_posix(), r.age, r.split) for r in records]
    want = [(f"train/{n}", float(a), "train") for n, a in TRAIN] + [(f"test/{n}", float(a), "test") for n, a in TEST]
    assert got == want


def test_megaage_length_mismatch_names_both_files(tmp_path):
    base = make_megaage(tmp_path, TRAIN, TEST)
    (base / "list" / "train_age.txt").write_text("23\n5\n")
    with pytest.raises(UsageError) as info:
        _read(f"megaage:{tmp_path}")
    msg = str(info.value)
    assert "train_name.txt has 3 lines" in msg and "train_age.txt has 2" in msg


@pytest.mark.parametrize(("ages", "line", "what"), [("23\nold\n61\n", 2, "not an integer"),
                                                    ("23\n5\n-4\n", 3, "negative"),
                                                    ("23.5\n5\n61\n", 1, "not an integer")])
def test_megaage_bad_age_names_file_and_line(tmp_path, ages, line, what):
    base = make_megaage(tmp_path, TRAIN, TEST)
    (base / "list" / "train_age.txt").write_text(ages)
    with pytest.raises(UsageError, match=what) as info:
        _read(f"megaage:{tmp_path}")
    assert f"{base / 'list' / 'train_age.txt'}:{line}:" in str(info.value)


def test_megaage_missing_image_names_list_and_line(tmp_path):
    base = make_megaage(tmp_path, TRAIN, TEST)
    (base / "test" / "2.jpg").unlink()
    with pytest.raises(UsageError, match="'2.jpg' not found") as info:
        _read(f"megaage:{tmp_path}")
    assert f"{base / 'list' / 'test_name.txt'}:2:" in str(info.value)


def test_megaage_without_lists_is_an_error(tmp_path):
    write_jpeg(tmp_path / "train" / "1.jpg", 0)
    with pytest.raises(UsageError, match="no MegaAge layout"):
        _read(f"megaage:{tmp_path}")


# --------------------------------------------------------------------------------------- folder


def test_group_folders_give_midpoint_ages(tmp_path):
    make_group_folders(tmp_path, {"0-10": 2, "21-30": 3, "71+": 1})
    (tmp_path / "labels.txt").write_text("ignored")
    records = _read(f"folder:{tmp_path}")
    assert Counter((r.age, r.meta["group_label"]) for r in records) == {
        (5.0, "0-10"): 2, (25.5, "21-30"): 3, (76.0, "71+"): 1}
    assert all(r.split is None for r in records)


def test_split_folders_set_the_split(tmp_path):
    make_group_folders(tmp_path / "train", {"11-20": 2, "31-40": 1})
    make_group_folders(tmp_path / "validation", {"11-20": 1}, seed=50)
    make_group_folders(tmp_path / "test", {"31-40": 2}, seed=60)
    records = _read(f"folder:{tmp_path}")
    assert Counter((r.split, r.meta["group_label"]) for r in records) == {
        ("train", "11-20"): 2, ("train", "31-40"): 1, ("val", "11-20"): 1, ("test", "31-40"): 2}


def test_folder_with_a_non_group_name_is_an_error(tmp_path):
    make_group_folders(tmp_path, {"0-10": 1, "kids": 1})
    with pytest.raises(UsageError, match="kids"):
        _read(f"folder:{tmp_path}")


# --------------------------------------------------------------------------------------- csv


def test_csv_relative_paths_and_splits(tmp_path):
    write_jpeg(tmp_path / "imgs" / "a.jpg", 1)
    write_jpeg(tmp_path / "imgs" / "b.png", 2)
    absolute = write_jpeg(tmp_path / "elsewhere" / "c.jpg", 3)
    write_csv(tmp_path / "sub" / ".." / "faces.csv", ["path", "age", "split", "who"],
              [["imgs/a.jpg", 33, "train", "x"], ["imgs/b.png", "7.5", "", "y"], [str(absolute), 80, "test", "z"]])
    records = _read(f"csv:{tmp_path / 'faces.csv'}")
    assert [(Path(r.path).relative_to(tmp_path).as_posix(), r.age, r.split, r.meta) for r in records] == [
        ("imgs/a.jpg", 33.0, "train", {"who": "x"}),
        ("imgs/b.png", 7.5, None, {"who": "y"}),
        ("elsewhere/c.jpg", 80.0, "test", {"who": "z"}),
    ]


@pytest.mark.parametrize(("row", "column"), [(["a.jpg", "old"], "age"), (["a.jpg", "-1"], "age"),
                                             (["missing.jpg", "3"], "path"), (["", "3"], "path"),
                                             (["a.jpg", "3", "holdout"], "split")])
def test_csv_bad_row_names_line_and_column(tmp_path, row, column):
    write_jpeg(tmp_path / "a.jpg", 1)
    csv_path = write_csv(tmp_path / "f.csv", ["path", "age", "split"], [["a.jpg", "3", "train"], row])
    with pytest.raises(UsageError, match=f"column '{column}'") as info:
        _read(f"csv:{csv_path}")
    assert f"{csv_path}:3" in str(info.value)


def test_csv_missing_column(tmp_path):
    csv_path = write_csv(tmp_path / "f.csv", ["file", "age"], [["a.jpg", "3"]])
    with pytest.raises(UsageError, match="missing column 'path'"):
        _read(f"csv:{csv_path}")


# --------------------------------------------------------------------------------------- specs


def test_specs_combine_and_synth_is_read_as_utkface(tmp_path, monkeypatch):
    synth_dir = tmp_path / "synth"
    make_utkface(synth_dir, ["30_0_0_1.jpg", "45_1_2_2.jpg"])
    fake = types.ModuleType("ordinalage.data.synth")
    fake.ensure_default_synth = lambda cfg: synth_dir  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ordinalage.data.synth", fake)
    make_group_folders(tmp_path / "groups", {"41-50": 2})
    records = read_sources(["synth", f"folder:{tmp_path / 'groups'}"], CFG)
    assert [(r.source, r.age) for r in records] == [
        ("synth", 30.0), ("synth", 45.0), (f"folder:{tmp_path / 'groups'}", 45.5), (f"folder:{tmp_path / 'groups'}", 45.5)]


@pytest.mark.parametrize(("spec", "match"), [("imagenet:/x", "unknown kind"), ("/some/folder", "unknown kind"),
                                              ("utkface:", "missing PATH"),
                                              ("utkface:/no/such/dir", "path not found: /no/such/dir")])
def test_bad_specs(spec, match):
    with pytest.raises(UsageError, match=match):
        parse_spec(spec) if "not found" not in match else _read(spec)


def test_cli_bad_input_exits_2_naming_file_and_line(tmp_path, capsys):
    base = make_megaage(tmp_path, TRAIN, TEST)
    (base / "list" / "test_age.txt").write_text("40\nabc\n")
    assert main(["data", "stats", "--data", f"megaage:{tmp_path}", "--json"]) == 2
    err = capsys.readouterr()
    assert err.out == ""
    assert f"{base / 'list' / 'test_age.txt'}:2:" in err.err
    assert main(["data", "stats", "--data", f"utkface:{tmp_path / 'nope'}"]) == 2
    assert str(tmp_path / "nope") in capsys.readouterr().err
