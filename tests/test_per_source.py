"""Per-source evaluation rows (Record.source survives combining several --data specs) and the MAE matrix."""

from __future__ import annotations

import math

import numpy as np
import pytest
from fakes_data import make_utkface, write_jpeg

from ordinalage.config import DataConfig
from ordinalage.data.prepare import prepare_data
from ordinalage.data.records import Record
from ordinalage.evaluation.per_source import mae_matrix, per_source_rows
from ordinalage.groups import AgeGroups
from ordinalage.reporting.plots import plot_mae_matrix

GROUPS = AgeGroups.parse("0-10,11-20,21-30,31-40,41+")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ORDINALAGE_CACHE", str(tmp_path / "cache"))


def test_per_source_rows_one_per_source_and_combined():
    records = [Record(f"/a/{i}.jpg", 20.0, source="afad:/A") for i in range(3)] + \
              [Record(f"/f/{i}.jpg", 5.0, source="fgnet:/F") for i in range(2)]
    pred = [22.0, 18.0, 26.0, 5.0, 8.0]  # afad errors 2, 2, 6; fgnet 0, 3
    rows = per_source_rows(records, pred, GROUPS)
    assert [r["source"] for r in rows] == ["afad:/A", "fgnet:/F", "all"]
    assert [r["n"] for r in rows] == [3, 2, 5]
    assert [r["mae"] for r in rows] == pytest.approx([10 / 3, 1.5, 13 / 5])
    assert rows[0]["accuracy"] == pytest.approx(1 / 3)  # true group 11-20: only the 18 lands in it
    with pytest.raises(ValueError, match="5 records, 4 predictions"):
        per_source_rows(records, pred[:4], GROUPS)


def test_mixed_data_of_three_kinds_keeps_each_records_source(tmp_path):
    make_utkface(tmp_path / "utk", [f"{a}_0_0_{i}.jpg" for i, a in enumerate([5, 15, 25, 35, 45] * 2)])
    for i, a in enumerate([3, 12, 33, 44]):
        write_jpeg(tmp_path / "fg" / f"{i + 1:03d}A{a:02d}.JPG", 100 + i)
    for i, a in enumerate([18, 29, 39]):
        write_jpeg(tmp_path / "afad" / str(a) / "111" / f"{i}-0.jpg", 200 + i)
    specs = (f"utkface:{tmp_path / 'utk'}", f"fgnet:{tmp_path / 'fg'}", f"afad:{tmp_path / 'afad'}")
    prep = prepare_data(DataConfig(sources=specs, groups=GROUPS.spec, val_fraction=0.0, test_fraction=0.5))
    everything = prep.train + prep.val + prep.test
    assert sorted({r.source for r in everything}) == sorted(specs) and len(everything) == 17
    rows = per_source_rows(prep.test, [r.age + 1 for r in prep.test], GROUPS)
    assert {r["source"] for r in rows} == {r.source for r in prep.test} | {"all"}
    assert all(r["mae"] == pytest.approx(1.0) for r in rows)


def test_mixed_data_of_three_kinds_trains(tmp_path):
    from ordinalage.cli import main

    make_utkface(tmp_path / "utk", [f"{a}_0_0_{i}.jpg" for i, a in enumerate([5, 15, 25, 35, 45] * 4)])
    for i, a in enumerate([3, 12, 33, 44, 8, 17]):
        write_jpeg(tmp_path / "fg" / f"{i + 1:03d}A{a:02d}.JPG", 100 + i)
    for i, a in enumerate([18, 29, 39, 50, 22, 31]):
        write_jpeg(tmp_path / "afad" / str(a) / "112" / f"{i}-0.jpg", 200 + i)
    out = tmp_path / "run"
    code = main(["train", "--data", f"utkface:{tmp_path / 'utk'}", "--data", f"fgnet:{tmp_path / 'fg'}",
                 "--data", f"afad:{tmp_path / 'afad'}", "--groups", GROUPS.spec, "--out", str(out),
                 "--set", "train.epochs=1", "--set", "data.image_size=16", "--set", "model.width=4",
                 "--set", "data.num_workers=0", "--set", "train.batch_size=8", "--set", "train.device=cpu",
                 "--set", "train.eval_on_end=false"])
    assert code == 0 and (out / "best.pt").is_file()
    assert len((out / "split.csv").read_text().splitlines()) == 1 + 32  # every image of the three kinds


def test_mae_matrix_and_heat_map(tmp_path):
    results = {
        "runs/a": [{"source": "afad:/A", "mae": 3.0}, {"source": "fgnet:/F", "mae": 5.0}, {"source": "all", "mae": 3.5}],
        "runs/b": [{"source": "fgnet:/F", "mae": 4.0}, {"source": "morph:/M", "mae": None}],
    }
    runs, datasets, values = mae_matrix(results)
    assert runs == ["runs/a", "runs/b"] and datasets == ["afad:/A", "fgnet:/F", "morph:/M", "all"]
    assert values[0].tolist()[:2] == [3.0, 5.0] and values[0, 3] == 3.5
    assert math.isnan(values[1, 0]) and values[1, 1] == 4.0 and math.isnan(values[1, 2])
    png = plot_mae_matrix(runs, datasets, values, tmp_path / "plots" / "mae_matrix.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    import cv2

    img = cv2.imread(str(png))
    assert img is not None and img.shape[1] > img.shape[0] > 100 and np.ptp(img) > 100
