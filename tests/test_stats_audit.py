"""`data stats` and `data audit`: on tiny trees, on the real UTKFace sample, and through the CLI."""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter

import cv2
import pytest
from fakes_data import UTKFACE, UTKFACE_DUPLICATES, make_utkface, needs_utkface, write_jpeg

from ordinalage.cli import main
from ordinalage.config import data_config
from ordinalage.data.audit import data_audit, image_problem
from ordinalage.data.stats import data_stats


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ORDINALAGE_CACHE", str(tmp_path / "cache"))


def _stats(specs, groups=None, sets=(), plot_dir=None):
    return data_stats(data_config(None, specs, groups, list(sets)), plot_dir=plot_dir, show=False)


# --------------------------------------------------------------------------------------- stats


def test_stats_counts_groups_splits_and_plots(tmp_path):
    ages = [3] * 20 + [15] * 10 + [33] * 30 + [72] * 5 + [101] * 2
    folder = tmp_path / "utk"
    make_utkface(folder, [f"{a}_0_0_{i}.jpg" for i, a in enumerate(ages)])
    out = _stats([f"utkface:{folder}"], groups="0-10,11-20,21-40,41+", sets=["data.sampling=undersample"],
                 plot_dir=str(tmp_path / "plots"))
    assert out["n"] == 67 and out["dropped"] == 0
    assert [(g["label"], g["lo"], g["hi"], g["count"]) for g in out["groups"]] == [
        ("0-10", 0, 10, 20), ("11-20", 11, 20, 10), ("21-40", 21, 40, 30), ("41+", 41, None, 7)]
    splits = out["splits"]
    assert [splits[s]["n"] for s in ("train", "val", "test")] == [47, 7, 13]
    assert [sum(c) for c in zip(*(splits[s]["counts"] for s in splits), strict=True)] == [20, 10, 30, 7]
    after = out["sampling"]["after"]
    assert out["sampling"]["mode"] == "undersample"
    assert len(set(after["train"]["counts"])) == 1 and after["train"]["counts"][0] == min(splits["train"]["counts"])
    assert after["test"] == splits["test"]
    json.dumps(out)
    (png,) = out["plots"]
    img = cv2.imread(png)
    assert img is not None and img.shape[0] > 200 and img.shape[1] > 400


def test_stats_json_through_the_cli(tmp_path, capsys):
    folder = tmp_path / "utk"
    make_utkface(folder, [f"{a}_1_0_{i}.jpg" for i, a in enumerate([8, 8, 44, 80, 95])])
    assert main(["data", "stats", "--data", f"utkface:{folder}", "--json"]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert out["n"] == 5 and out["dropped"] == 2 and out["dropped_ages"] == {"80": 1, "95": 1}
    assert [g["count"] for g in out["groups"]] == [2, 0, 0, 0, 1, 0, 0]
    assert "dropped 2 of 5 images" in captured.err


def test_stats_empty_after_filtering_exits_2(tmp_path, capsys):
    folder = tmp_path / "utk"
    make_utkface(folder, ["80_0_0_1.jpg", "90_0_0_2.jpg"])
    assert main(["data", "stats", "--data", f"utkface:{folder}", "--groups", "0-10,11-20"]) == 2
    err = capsys.readouterr().err
    assert "all 2 images" in err and "0-10,11-20" in err and "(ages 80-90)" in err


# --------------------------------------------------------------------------------------- audit


def test_image_problem_catches_garbage_and_truncation(tmp_path):
    good = write_jpeg(tmp_path / "good.jpg", 0, size=64)
    data = good.read_bytes()
    (tmp_path / "half.jpg").write_bytes(data[: len(data) // 2])
    assert cv2.imread(str(tmp_path / "half.jpg")) is not None  # OpenCV pads it with grey, no error
    (tmp_path / "junk.jpg").write_bytes(b"this is not a jpeg at all")
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert image_problem(good) is None
    assert "truncated" in image_problem(tmp_path / "half.jpg")
    assert "cannot be decoded" in image_problem(tmp_path / "junk.jpg")
    assert image_problem(tmp_path / "empty.jpg") == "empty file"


def test_audit_finds_unreadable_duplicates_and_conflicts(tmp_path, capsys):
    folder = tmp_path / "utk"
    paths = make_utkface(folder, ["20_0_0_a.jpg", "30_0_0_b.jpg", "40_0_0_c.jpg", "50_0_0_d.jpg"])
    shutil.copy(paths[0], folder / "20_1_0_same.jpg")  # duplicate, ages agree
    shutil.copy(paths[1], folder / "35_0_0_other.jpg")  # duplicate, ages disagree
    shutil.copy(paths[1], folder / "30_0_1_third.jpg")
    data = paths[3].read_bytes()
    (folder / "60_0_0_cut.jpg").write_bytes(data[: len(data) - 40])
    (folder / "70_0_0_junk.jpg").write_bytes(b"\x00" * 100)
    out = data_audit([f"utkface:{folder}"], show=True)
    assert out["n"] == 9
    assert out["unreadable"] == ["60_0_0_cut.jpg", "70_0_0_junk.jpg"]
    assert out["duplicate_groups"] == [["20_0_0_a.jpg", "20_1_0_same.jpg"],
                                       ["30_0_0_b.jpg", "30_0_1_third.jpg", "35_0_0_other.jpg"]]
    assert out["conflicting_groups"] == [["30_0_0_b.jpg", "30_0_1_third.jpg", "35_0_0_other.jpg"]]
    err = capsys.readouterr().err
    assert "60_0_0_cut.jpg" in err and "35_0_0_other.jpg (35)" in err


def test_audit_json_through_the_cli(tmp_path, capsys):
    make_utkface(tmp_path / "utk", ["20_0_0_a.jpg"])
    assert main(["data", "audit", "--data", f"utkface:{tmp_path / 'utk'}", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["n"], out["unreadable"], out["duplicate_groups"]) == (1, [], [])
    assert main(["data", "audit", "--data", f"csv:{tmp_path / 'none.csv'}", "--json"]) == 2
    assert "none.csv" in capsys.readouterr().err


# --------------------------------------------------------------------------------------- real UTKFace


@needs_utkface
def test_real_utkface_stats():
    out = _stats([f"utkface:{UTKFACE}"], groups="0-10,11-20,21-30,31-40,41-50,51-60,61-70,71+")
    ages = [int(n.split("_")[0]) for n in os.listdir(UTKFACE)]
    assert out["n"] == len(ages) == 10808 and out["dropped"] == 0
    decades = Counter(min((a - 1) // 10, 7) if a > 0 else 0 for a in ages)
    assert [g["count"] for g in out["groups"]] == [decades[i] for i in range(8)]
    # README of the sample: 0-10: 1470, 11-20: 1274, 21-30: 1502, ..., 61-70: 1052
    assert [g["count"] for g in out["groups"][:7]] == [1470, 1274, 1502, 1493, 1430, 1367, 1052]
    default = _stats([f"utkface:{UTKFACE}"])
    assert default["dropped"] == sum(a > 70 for a in ages) == 1220


@needs_utkface
@pytest.mark.skipif(not UTKFACE_DUPLICATES.is_file(), reason=f"needs {UTKFACE_DUPLICATES.resolve()}, not found")
def test_real_utkface_audit_matches_the_duplicates_list():
    want = []
    for line in UTKFACE_DUPLICATES.read_text().splitlines():
        if line and not line.startswith("#"):
            want.append(sorted(line.split("\t")[1:]))
    out = data_audit([f"utkface:{UTKFACE}"], show=False)
    assert out["n"] == 10808 and out["unreadable"] == []
    assert len(out["duplicate_groups"]) == 104
    assert out["duplicate_groups"] == sorted(want)
    conflicting = [g for g in want if len({n.split("_")[0] for n in g}) > 1]
    assert out["conflicting_groups"] == sorted(conflicting) and len(conflicting) == 77
