"""FAEB (Paplham et al., CVPR 2024): `faeb:DB.json?root=IMAGES`, `data.protocol: faeb | faeb:K`, aligned crops.

Everything runs on generated databases in the published format: PNG images (lossless, so crops can
be compared pixel for pixel) with a drawn pattern that has no black pixel, and a DB.json of entries
like FAEB's (`img_path`, `id_num`, `age`, `gender`, `database`, `folder`, `aligned_bbox`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from ordinalage.config import DataConfig, load_config
from ordinalage.data.boxes import box_path, box_suffix, extended_corners, image_file, parse_box_path
from ordinalage.data.cache import cache_key, prepare_cache, row_id
from ordinalage.data.decode import decode_image
from ordinalage.data.hashing import file_hash
from ordinalage.data.prepare import fold_count, prepare_data
from ordinalage.data.records import Record
from ordinalage.data.sources import read_sources
from ordinalage.data.splits import protocol_folds
from ordinalage.errors import UsageError
from ordinalage.protocols import FAEB_SPLITS, parse_protocol

H, W = 100, 120  # image rows, columns
FULL = [11, 11, 90, 11, 90, 90, 11, 90]  # an axis-aligned box (1-based corners A, B, C, D) inside the image


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ORDINALAGE_CACHE", str(tmp_path / "cache"))


def pattern(seed: int = 0) -> np.ndarray:
    """(H, W, 3) RGB with every value in 20-229 (a pad pixel, 0, stands out), distinct per seed."""
    y, x = np.mgrid[0:H, 0:W]
    rgb = np.stack([20 + x, 20 + 2 * y, 30 + (seed * 37 + 3 * x + 5 * y) % 200], axis=-1).astype(np.uint8)
    cv2.rectangle(rgb, (40, 30), (49, 39), (255, 255, 0), -1)  # a yellow marker, columns 40-49, rows 30-39
    return rgb


def write_png(path: Path, rgb: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


def write_db(path: Path, entries: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(entries, indent=4))
    return path


def entry(img_path: str, age: int, subject: int | None, folder: int, box=FULL, **extra) -> dict:
    """One entry as FAEB's database files write it (keys in their order)."""
    out = {"img_path": img_path, "id_num": subject, "age": age, "gender": "M" if (subject or 0) % 2 else "F",
           "database": "TOY", "folder": folder, "aligned_bbox": list(box), "alignment_source": "in the wild"}
    if subject is None:
        del out["id_num"]
    out.update(extra)
    return out


def ten_folder_db(root: Path, name: str = "TOY_aligned.json", images: Path | None = None) -> Path:
    """Folders 0-9, two people per folder, two photos each (40 entries), plus two of unknown age (-1)."""
    images = images or root
    entries = []
    for person in range(20):
        for j in range(2):
            rel = f"TOY/{person:02d}_{j}.png"
            write_png(images / rel, pattern(2 * person + j))
            entries.append(entry(rel, 5 + (7 * person + 3 * j) % 60, 1000 + person, person // 2))
    write_png(images / "TOY/unknown.png", pattern(99))
    entries.insert(5, entry("TOY/unknown.png", -1, 2000, 3))
    entries.append(entry("TOY/unknown.png", -1, 2001, 4))
    return write_db(root / name, entries)


def expected_crop(rgb: np.ndarray, box, extension: float, size: int) -> np.ndarray:
    """FAEB's crop by hand: 1-based corners -> 0-based, grown by `extension`, A, B, C -> the square's corners."""
    a, b, c, d = np.asarray(box, dtype=np.float64).reshape(4, 2) - 1
    ext_a = a + (a - b) * extension + (a - d) * extension
    ext_b = b + (b - a) * extension + (b - c) * extension
    ext_c = c + (c - d) * extension + (c - b) * extension
    matrix = cv2.getAffineTransform(np.float32([ext_a, ext_b, ext_c]),
                                    np.float32([[0, 0], [size - 1, 0], [size - 1, size - 1]]))
    return cv2.warpAffine(rgb, matrix, (size, size))


def rotated(cx: float, cy: float, side: float, degrees: float) -> list[float]:
    """A square box of `side` centred at (cx, cy) turned by `degrees`: corners clockwise from its top-left."""
    t = math.radians(degrees)
    u, v = np.array([math.cos(t), math.sin(t)]), np.array([-math.sin(t), math.cos(t)])  # the box's x and y axes
    h = side / 2
    corners = [(-h, -h), (h, -h), (h, h), (-h, h)]
    return [float(round(k, 3)) for p, q in corners for k in (np.array([cx, cy]) + p * u + q * v)]


# ---------------------------------------------------------------------------------------------
# the reader


def test_reader_records_ages_subjects_folders_and_skips(tmp_path):
    db = ten_folder_db(tmp_path)
    spec = f"faeb:{db}"
    skipped: dict = {}
    records = read_sources([spec], DataConfig(sources=(spec,)), skipped)
    assert len(records) == 40
    assert skipped == {spec: {"unknown age (-1)": 2}}  # counted, never silent
    first = records[0]
    file, box, extension = parse_box_path(first.path)
    assert file == str(tmp_path / "TOY" / "00_0.png") and Path(file).is_file()  # relative to the JSON's folder
    assert box == tuple(FULL) and extension == 0.25
    assert first.age == 5.0 and first.source == spec and first.split is None
    assert first.meta == {"entry": 0, "box": FULL, "subject": "1000", "gender": 1, "folder": 0, "database": "TOY"}
    assert [r.meta["folder"] for r in records] == [p // 2 for p in range(20) for _ in range(2)]
    assert {r.meta["subject"] for r in records} == {str(1000 + p) for p in range(20)}
    assert [r.age for r in records[:4]] == [5.0, 8.0, 12.0, 15.0]
    assert {r.meta["gender"] for r in records} == {0, 1}  # M -> 0, F -> 1 (as the other readers)


def test_root_option_and_missing_images(tmp_path):
    db = ten_folder_db(tmp_path / "json", images=tmp_path / "images")
    with pytest.raises(UsageError, match=r"none of the 40 images was found under .*json.*\?root=DIR"):
        read_sources([f"faeb:{db}"], DataConfig())
    spec = f"faeb:{db}?root={tmp_path / 'images'}"
    records = read_sources([spec], DataConfig(sources=(spec,)))
    assert len(records) == 40 and image_file(records[0].path) == str(tmp_path / "images" / "TOY" / "00_0.png")
    (tmp_path / "images" / "TOY" / "03_1.png").unlink()
    skipped: dict = {}
    assert len(read_sources([spec], DataConfig(), skipped)) == 39
    assert skipped[spec] == {"unknown age (-1)": 2, "image not found": 1}
    with pytest.raises(UsageError, match="root=.*nowhere is not a folder"):
        read_sources([f"faeb:{db}?root={tmp_path / 'nowhere'}"], DataConfig())
    with pytest.raises(UsageError, match="unknown option 'images=x'"):
        read_sources([f"faeb:{db}?images=x"], DataConfig())


def test_bbox_fallback_and_box_formats(tmp_path):
    write_png(tmp_path / "a.png", pattern(1))
    db = write_db(tmp_path / "DB.json", [
        entry("a.png", 30, 1, 0, box=[]) | {"bbox": [11, 11, 90, 11, 90, 90, 11, 90]},  # FAEB's IMDB-CLEAN layout
        entry("a.png", 30, 1, 0, box=[]) | {"bbox": [11, 11, 90, 90]},  # 4 numbers: axis-aligned x1, y1, x2, y2
        entry("a.png", 30, 1, 0, box=[]),  # FAEB's alignment failed and no bbox: skipped
        entry("a.png", 30, 1, 0, box=[5, 5, 5, 5, 5, 5, 5, 5]),  # no area: skipped
        {"img_path": "a.png", "age": 41.0, "folder": 2, "aligned_bbox": FULL, "std_age": 4.6},  # CLAP2016: no id/gender
    ])
    skipped: dict = {}
    records = read_sources([f"faeb:{db}"], DataConfig(), skipped)
    assert records[0].path == records[1].path == box_path(tmp_path / "a.png", FULL, 0.25)
    assert skipped[f"faeb:{db}"] == {"no face box (no 'aligned_bbox' or 'bbox')": 1, "degenerate face box (no area)": 1}
    assert records[2].meta == {"entry": 4, "box": FULL, "folder": 2} and records[2].age == 41.0
    unaligned = write_db(tmp_path / "FG-Net.json", [{"img_path": "a.png", "id_num": 1, "age": 3, "folder": 1}])
    with pytest.raises(UsageError, match=r"FG-Net.json: no entry has a face box.*FG-Net_aligned.json"):
        read_sources([f"faeb:{unaligned}"], DataConfig())


@pytest.mark.parametrize(("bad", "message"), [
    ({"age": 30, "folder": 0, "aligned_bbox": FULL}, "entry 1: 'img_path' missing"),
    ({"img_path": "a.png", "folder": 0, "aligned_bbox": FULL}, "entry 1: 'age' missing"),
    ({"img_path": "a.png", "age": "30", "aligned_bbox": FULL}, "entry 1: 'age' '30' is not a number"),
    ({"img_path": "a.png", "age": -3, "aligned_bbox": FULL}, r"entry 1: 'age' -3 is negative \(FAEB marks"),
    ({"img_path": "", "age": 3, "aligned_bbox": FULL}, "entry 1: 'img_path' '' is not a file path"),
    ({"img_path": "a.png", "age": 3, "aligned_bbox": FULL[:5]}, "entry 1: 'aligned_bbox' has 5 numbers; expected 8"),
    ({"img_path": "a.png", "age": 3, "bbox": [1, 2, 3]}, r"entry 1: 'bbox' has 3 numbers; expected 8 .* or 4"),
    ({"img_path": "a.png", "age": 3, "aligned_bbox": ["1"] * 8}, "entry 1: 'aligned_bbox' must be a list of numbers"),
    ({"img_path": "a.png", "age": 3, "aligned_bbox": FULL, "gender": "X"}, "entry 1: 'gender' 'X' is not M, F or U"),
    ({"img_path": "a.png", "age": 3, "aligned_bbox": FULL, "folder": 2.5}, "entry 1: 'folder' 2.5 is not a whole"),
    ({"img_path": "a.png", "age": 3, "aligned_bbox": FULL, "id_num": [1]}, "entry 1: 'id_num' \\[1\\] is not a subj"),
    ("a.png", "entry 1: expected an object with 'img_path' and 'age'"),
])
def test_bad_entries_name_the_file_and_entry(tmp_path, bad, message):
    write_png(tmp_path / "a.png", pattern())
    db = write_db(tmp_path / "DB.json", [entry("a.png", 30, 1, 0), bad])
    with pytest.raises(UsageError, match=f"DB.json: {message}"):
        read_sources([f"faeb:{db}"], DataConfig())


def test_bad_files(tmp_path):
    (tmp_path / "broken.json").write_text('[{"img_path": "a.png",')
    with pytest.raises(UsageError, match="broken.json: not valid JSON"):
        read_sources([f"faeb:{tmp_path / 'broken.json'}"], DataConfig())
    (tmp_path / "dict.json").write_text('{"img_path": "a.png"}')
    with pytest.raises(UsageError, match="dict.json: a FAEB database file is a JSON list of entries, found a dict"):
        read_sources([f"faeb:{tmp_path / 'dict.json'}"], DataConfig())
    with pytest.raises(UsageError, match="is not a file"):
        read_sources([f"faeb:{tmp_path}"], DataConfig())


# ---------------------------------------------------------------------------------------------
# the protocol


def _folders(records, idx) -> set[int]:
    return {records[int(i)].meta["folder"] for i in idx}


def test_each_faeb_split_follows_the_table_and_is_subject_exclusive(tmp_path):
    db = ten_folder_db(tmp_path)
    spec = f"faeb:{db}"
    for k, (train, val, test) in enumerate(FAEB_SPLITS):
        cfg = DataConfig(sources=(spec,), protocol=f"faeb:{k}")
        assert fold_count(cfg) == 1
        prep = prepare_data(cfg)
        sides = [prep.train, prep.val, prep.test]
        assert [{r.meta["folder"] for r in side} for side in sides] == [set(train), set(val), set(test)]
        assert [len(side) for side in sides] == [24, 8, 8]  # 4 photos per folder
        people = [{r.meta["subject"] for r in side} for side in sides]
        assert not (people[0] & people[1]) and not (people[0] & people[2]) and not (people[1] & people[2])
        assert prep.report["protocol"] == f"faeb:{k}" and prep.report["unused"] == 0
    # the spelled-out table (paper / FAEB databases README)
    assert FAEB_SPLITS[3] == ((5, 6, 7, 8, 9, 0), (1, 2), (3, 4))
    assert FAEB_SPLITS[4] == ((6, 7, 8, 9, 0, 1), (2, 3), (4, 5))


def test_faeb_means_all_five_splits_as_folds(tmp_path):
    db = ten_folder_db(tmp_path)
    spec = f"faeb:{db}"
    proto = parse_protocol("faeb")
    assert proto.fixed_folds == 5 and parse_protocol("faeb:3").fixed_folds == 1
    assert fold_count(DataConfig(sources=("faeb:/nowhere.json",), protocol="faeb")) == 5  # nothing read
    records = read_sources([spec], DataConfig())
    folds = protocol_folds(records, np.zeros(len(records), int), [str(i) for i in range(len(records))], "faeb",
                           0.1, 0.2, seed=0)
    assert [tuple(tuple(sorted(_folders(records, part))) for part in fold) for fold in folds] == \
        [tuple(tuple(sorted(p)) for p in split) for split in FAEB_SPLITS]
    for k in (0, 3):  # data.fold picks the split: the same as faeb:K
        by_fold = prepare_data(DataConfig(sources=(spec,), protocol="faeb", fold=k))
        by_split = prepare_data(DataConfig(sources=(spec,), protocol=f"faeb:{k}"))
        assert [r.path for r in by_fold.test] == [r.path for r in by_split.test]
        assert by_fold.report["n_folds"] == 5
    with pytest.raises(UsageError, match="'data.fold': 5 is past the last fold"):
        prepare_data(DataConfig(sources=(spec,), protocol="faeb", fold=5))


def test_run_folds_trains_the_five_faeb_splits(tmp_path):
    """The folds machinery (`ordinalage train` with a folds protocol) runs faeb unchanged."""
    from ordinalage.training.folds import run_folds

    db = ten_folder_db(tmp_path)
    config = load_config(overrides={"data.sources": [f"faeb:{db}"], "data.protocol": "faeb",
                                    "train.out_dir": str(tmp_path / "runs")})
    seen = []

    def fit(cfg):
        prep = prepare_data(cfg.data)
        seen.append((cfg.data.fold, sorted({r.meta["folder"] for r in prep.test})))
        Path(cfg.train.out_dir).mkdir(parents=True)
        return Path(cfg.train.out_dir)

    result = run_folds(config, fit, evaluate_fn=lambda run: {"mae": float(run.name[-1])}, quiet=True)
    assert seen == [(k, sorted(split[2])) for k, split in enumerate(FAEB_SPLITS)]
    assert result["n_folds"] == 5 and result["summary"]["mae"]["mean"] == 2.0


def test_one_split_databases_and_mixing(tmp_path):
    """CLAP2016 / CACD2000: folders 0-2 only -> train 0, val 1, test 2 in every FAEB split."""
    entries = []
    for i in range(9):
        write_png(tmp_path / "clap" / f"{i}.png", pattern(50 + i))
        entries.append({"img_path": f"clap/{i}.png", "age": 20 + i, "folder": i % 3, "aligned_bbox": FULL})
    entries.append({"img_path": "clap/0.png", "age": 20, "folder": -1, "aligned_bbox": FULL})  # CACD's unassigned
    clap = f"faeb:{write_db(tmp_path / 'CLAP2016_aligned.json', entries)}"
    for k in range(5):
        prep = prepare_data(DataConfig(sources=(clap,), protocol=f"faeb:{k}"))
        assert [{r.meta["folder"] for r in s} for s in (prep.train, prep.val, prep.test)] == [{0}, {1}, {2}]
        assert prep.report["unused"] == 1
    with pytest.raises(UsageError, match=r"'faeb'.*has a single split of its own.*use data.protocol=faeb:0"):
        prepare_data(DataConfig(sources=(clap,), protocol="faeb"))
    toy = f"faeb:{ten_folder_db(tmp_path)}"
    for k in (1, 4):  # mixed with a ten-folder database: each file keeps its own layout
        prep = prepare_data(DataConfig(sources=(toy, clap), protocol="faeb", fold=k))
        test = {(r.source, r.meta["folder"]) for r in prep.test}
        assert test == {(toy, f) for f in FAEB_SPLITS[k][2]} | {(clap, 2)}


def test_faeb_protocol_needs_folders_in_the_faeb_layout(tmp_path):
    records = [Record(f"/x/{i}.jpg", 20.0, None, "utkface:/data/UTK", {}) for i in range(3)]
    with pytest.raises(UsageError, match=r"'faeb:0' needs FAEB folders, and utkface:/data/UTK has none"):
        protocol_folds(records, np.zeros(3, int), ["a", "b", "c"], "faeb:0", 0.1, 0.2, seed=0)
    fgnet = [Record(f"/x/{i}.jpg", 20.0, None, "faeb:FG-Net_aligned.json", {"folder": f}) for i, f in enumerate((1, 34, 82))]
    with pytest.raises(UsageError, match=r"faeb:FG-Net_aligned.json has folder 82.*use data.protocol=loso"):
        protocol_folds(fgnet, np.zeros(3, int), ["a", "b", "c"], "faeb", 0.1, 0.2, seed=0)


# ---------------------------------------------------------------------------------------------
# the aligned crop


def test_axis_aligned_crop_is_the_subimage_and_a_quarter_turn_rotates_it(tmp_path):
    rgb = pattern(3)
    png = write_png(tmp_path / "a.png", rgb)
    x0, y0, s = 30, 20, 32  # 0-based top-left of a 32 x 32 region, which holds the marker
    box = [x0 + 1, y0 + 1, x0 + s, y0 + 1, x0 + s, y0 + s, x0 + 1, y0 + s]  # FAEB's 1-based corners
    region = rgb[y0:y0 + s, x0:x0 + s]
    crop = decode_image(box_path(png, box, 0.0), s)
    assert np.array_equal(crop, region)
    assert np.all(crop[10:20, 10:20] == (255, 255, 0))  # the marker: columns 40-49, rows 30-39 of the image
    # the face turned a quarter: its top-left corner is the region's top-right, and so on clockwise
    quarter = [x0 + s, y0 + 1, x0 + s, y0 + s, x0 + 1, y0 + s, x0 + 1, y0 + 1]
    assert np.array_equal(decode_image(box_path(png, quarter, 0.0), s), np.rot90(region))
    # geometry does not matter for a box
    for geometry in ("resize", "center_square", "crop_megaage"):
        assert np.array_equal(decode_image(box_path(png, box, 0.0), s, geometry), region)


@pytest.mark.parametrize("extension", [0.0, 0.25, 0.4])
def test_rotated_crop_equals_the_hand_computed_warp(tmp_path, extension):
    rgb = pattern(4)
    png = write_png(tmp_path / "a.png", rgb)
    box = rotated(60.0, 50.0, 40.0, 30.0)
    for size in (24, 48):
        got = decode_image(box_path(png, box, extension), size)
        assert got.shape == (size, size, 3) and got.dtype == np.uint8
        np.testing.assert_array_equal(got, expected_crop(rgb, box, extension, size))
    # extended_corners is FAEB's crop_image formula: the extended box is (1 + 2e) times as large, same centre
    corners = extended_corners(box, extension)
    np.testing.assert_allclose(corners.mean(0), np.asarray(box).reshape(4, 2).mean(0) - 1, atol=1e-9)
    np.testing.assert_allclose(np.hypot(*(corners[1] - corners[0])), 40.0 * (1 + 2 * extension), rtol=1e-4)


def test_box_partly_outside_the_image_is_padded_black(tmp_path):
    rgb = pattern(5)
    png = write_png(tmp_path / "a.png", rgb)
    x0, y0, s = -10, -6, 32  # 10 columns left of the image and 6 rows above it
    box = [x0 + 1, y0 + 1, x0 + s, y0 + 1, x0 + s, y0 + s, x0 + 1, y0 + s]
    crop = decode_image(box_path(png, box, 0.0), s)
    assert np.all(crop[:, :10] == 0) and np.all(crop[:6] == 0)  # padded, not an error
    assert np.array_equal(crop[6:, 10:], rgb[0:s - 6, 0:s - 10])
    wholly_outside = [500, 500, 600, 500, 600, 600, 500, 600]
    assert not decode_image(box_path(png, wholly_outside, 0.25), 16).any()
    np.testing.assert_array_equal(decode_image(box_path(png, box, 0.25), 40), expected_crop(rgb, box, 0.25, 40))


def test_large_jpeg_is_decoded_reduced_and_still_aligned(tmp_path):
    """A big JPEG and a small output: decoded at 1/8 with the box mapped onto the reduced pixels."""
    big = cv2.resize(pattern(6), (W * 8, H * 8), interpolation=cv2.INTER_NEAREST)
    jpg = tmp_path / "big.jpg"
    assert cv2.imwrite(str(jpg), cv2.cvtColor(big, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 98])
    box = rotated(480.0, 400.0, 320.0, 20.0)
    full = cv2.cvtColor(cv2.imread(str(jpg)), cv2.COLOR_BGR2RGB)
    got = decode_image(box_path(jpg, box, 0.25), 32).astype(int)
    want = expected_crop(cv2.GaussianBlur(full, (0, 0), 4), box, 0.25, 32).astype(int)  # an anti-aliased reference
    assert np.abs(got - want).mean() < 3  # one reduced pixel off would be ~14


def test_split_csv_round_trip_keeps_the_crop(tmp_path):
    """split.csv (what evaluation reads back) holds the box path, so the test images stay cropped."""
    from ordinalage.runs.rundir import RunDir

    db = ten_folder_db(tmp_path)
    prep = prepare_data(DataConfig(sources=(f"faeb:{db}",), protocol="faeb:2"))
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    run.write_split({"train": prep.train, "val": prep.val, "test": prep.test}, prep.groups)
    back = run.read_split("test")
    assert [r.path for r in back] == [r.path for r in prep.test]
    assert np.array_equal(decode_image(back[0].path, 24), decode_image(prep.test[0].path, 24))


# ---------------------------------------------------------------------------------------------
# the decoded-image cache


def test_cache_rows_and_key_follow_the_box_and_extension(tmp_path):
    png = write_png(tmp_path / "a.png", pattern(7))
    one, two = box_path(png, FULL, 0.25), box_path(png, rotated(60, 50, 40, 30), 0.25)
    digest = file_hash(png)
    assert row_id(one, digest) != row_id(two, digest) and row_id(str(png), digest) == digest
    assert cache_key([row_id(one, digest)], "auto", 32) != cache_key([row_id(two, digest)], "auto", 32)
    wider = box_path(png, FULL, 0.5)
    assert cache_key([row_id(one, digest)], "auto", 32) != cache_key([row_id(wider, digest)], "auto", 32)
    records = [Record(p, 30.0, None, "faeb:x") for p in (one, two, wider, one)]
    for mode in ("ram", "disk"):
        cache = prepare_cache(records, DataConfig(cache=mode, cache_dir=str(tmp_path / "c")), 32)
        assert cache is not None and len(cache) == 3  # two boxes, two extensions of one image: three rows
        rows = cache.rows_for([r.path for r in records])
        assert len(set(rows[:3].tolist())) == 3 and rows[3] == rows[0]
        for r, row in zip(records, rows, strict=True):
            np.testing.assert_array_equal(cache.pixels[row], decode_image(r.path, 32))


def test_box_paths_and_the_extension_setting(tmp_path):
    path = box_path("/d/x#1.jpg", [21, 69, 569, 103, 535, 652, -13, 617], 0.25)
    assert path == "/d/x#1.jpg#box=21,69,569,103,535,652,-13,617;ext=0.25"
    assert parse_box_path(path) == ("/d/x#1.jpg", (21, 69, 569, 103, 535, 652, -13, 617), 0.25)
    assert image_file(path) == "/d/x#1.jpg" and box_suffix(path) == "#box=21,69,569,103,535,652,-13,617;ext=0.25"
    assert parse_box_path("/d/x#1.jpg") == ("/d/x#1.jpg", None, 0.0) and box_suffix("/d/a.jpg") == ""
    assert box_path("a.png", [0.5] * 8, 0.125).endswith("#box=0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5;ext=0.125")
    assert load_config(sets=["data.bbox_extension=0.5"]).data.bbox_extension == 0.5
    assert DataConfig().bbox_extension == 0.25
    write_png(tmp_path / "a.png", pattern())
    db = write_db(tmp_path / "DB.json", [entry("a.png", 30, 1, 0)])
    (record,) = read_sources([f"faeb:{db}"], DataConfig(bbox_extension=0.0))
    assert parse_box_path(record.path)[2] == 0.0
    with pytest.raises(UsageError, match="config key 'data.bbox_extension': -0.5 must be a number above -0.5"):
        read_sources([f"faeb:{db}"], DataConfig(bbox_extension=-0.5))


def test_prepare_hashes_the_image_file_of_each_box(tmp_path):
    """Two boxes of one photo are byte-identical duplicates for the random protocols (one side of a split)."""
    write_png(tmp_path / "a.png", pattern(8))
    entries = [entry("a.png", 30, 1, 0), entry("a.png", 30, 1, 0, box=rotated(60, 50, 40, 30))]
    for i in range(30):
        write_png(tmp_path / f"{i}.png", pattern(10 + i))
        entries.append(entry(f"{i}.png", 20 + i, 10 + i, i % 10))
    db = write_db(tmp_path / "DB.json", entries)
    prep = prepare_data(DataConfig(sources=(f"faeb:{db}",), protocol="random", groups="0-100"))
    side = {r.path: name for name in ("train", "val", "test") for r in prep.split(name)}
    assert side[prep.all[0].path] == side[prep.all[1].path]


def test_data_audit_reads_the_image_file_behind_each_box(tmp_path):
    from ordinalage.data.audit import data_audit

    db = ten_folder_db(tmp_path)
    report = data_audit([f"faeb:{db}"], show=False)
    assert report["n"] > 0 and not report.get("problems")
