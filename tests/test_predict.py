"""predict and faces: boxes, chip crops, Haar detection on real UTKFace chips, bad input, CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from ordinalage.cli import main
from ordinalage.inference.detection.calibration import measure_chip_ratio
from ordinalage.inference.detection.geometry import UTKFACE_CHIP, Box, ChipRatio, chip_square, crop_face
from ordinalage.inference.predict import collect_images, run_predict
from ordinalage.inference.predictor import load_rgb


def _utkface_spread(root: Path, n: int) -> list[Path]:
    """`n` UTKFace files spread evenly over the sorted ages."""
    named = []
    for name in os.listdir(root):
        head = name.split("_", 1)[0]
        if head.isdigit():
            named.append((int(head), name))
    named.sort()
    picks = np.linspace(0, len(named) - 1, n).round().astype(int)
    return [root / named[i][1] for i in picks]


# ---------------------------------------------------------------------------------------------
# boxes and crops: hand-worked answers


def test_box_iou_known_values() -> None:
    a = Box(0, 0, 10, 10)
    assert a.iou(a) == 1.0
    assert a.iou(Box(5, 0, 10, 10)) == pytest.approx(50 / 150)
    assert a.iou(Box(20, 20, 5, 5)) == 0.0
    assert a.iou(Box(10, 0, 10, 10)) == 0.0  # touching edges do not overlap


def test_chip_square_follows_the_ratio() -> None:
    box = Box(100, 50, 40, 40)
    assert chip_square(box, ChipRatio(1.0, 0.0, 0.0)) == (100, 50, 40)
    # twice the side, centre moved down by a quarter of the box: centre (120, 80), side 80
    assert chip_square(box, ChipRatio(2.0, 0.0, 0.25)) == (80, 40, 80)


def test_crop_face_is_the_resized_square_and_repeats_edges() -> None:
    img = np.zeros((60, 80, 3), np.uint8)
    img[:, :, 0] = np.arange(80, dtype=np.uint8)[None, :]  # red = column
    img[:, :, 1] = np.arange(60, dtype=np.uint8)[:, None]  # green = row
    crop = crop_face(img, Box(10, 20, 16, 16), 16, ChipRatio(1.0, 0.0, 0.0))
    assert np.array_equal(crop, img[20:36, 10:26])
    # a square reaching 4 px past the left edge: the first 4 columns repeat column 0
    edge = crop_face(img, Box(-4, 0, 8, 8), 8, ChipRatio(1.0, 0.0, 0.0))
    assert (edge[:, :5, 0] == 0).all() and list(edge[0, 4:, 0]) == [0, 1, 2, 3]
    assert crop_face(img, Box(0, 0, 30, 30), 24).shape == (24, 24, 3)


def test_collect_images_and_missing_paths(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    for name in ("b.jpg", "a.png", "sub/c.JPG", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in collect_images([tmp_path])] == ["a.png", "b.jpg", "c.JPG"]
    with pytest.raises(Exception, match="no such file or folder"):
        collect_images([tmp_path / "missing.jpg"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(Exception, match="no image files"):
        collect_images([tmp_path / "empty"])
    with pytest.raises(Exception, match="not a decodable image"):
        load_rgb(tmp_path / "b.jpg")


# ---------------------------------------------------------------------------------------------
# real faces


def test_predict_real_utkface_faces(tiny_run, utkface_dir: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    run = tiny_run("coral")
    files = _utkface_spread(utkface_dir, 40)
    inputs = tmp_path / "in"
    inputs.mkdir()
    for f in files:
        (inputs / f.name).symlink_to(f.resolve())
    records = run_predict(run, [inputs], detect="haar", csv_path=tmp_path / "p.csv", annotate=tmp_path / "ann",
                          batch_size=16, show=False)
    per_file: dict[str, list[dict]] = {}
    for r in records:
        per_file.setdefault(Path(r["file"]).name, []).append(r)
    assert len(per_file) == 40
    one_face = [name for name, rs in per_file.items() if len(rs) == 1 and rs[0]["face"] == 0]
    rate = len(one_face) / 40
    print(f"\nHaar detection on 40 UTKFace chips spread over ages: exactly one face in {len(one_face)}/40 ({rate:.0%}); "
          f"no face in {sum(rs[0]['face'] is None for rs in per_file.values())}")
    assert rate >= 0.8
    labels = ["0-10", "11-20", "21-30", "31-40", "41-50", "51-60", "61-70"]
    for r in records:
        if r["face"] is None:
            assert r["reason"] == "no face found" and r["age"] is None
            continue
        assert 0.0 <= r["age"] <= 100.0 and r["group"] in labels
        assert list(r["group_proba"]) == labels and sum(r["group_proba"].values()) == pytest.approx(1, abs=1e-3)
        x, y, w, h = r["box"]
        assert w > 60 and h > 60  # the face fills most of a 200 px chip
    # CSV: one row per record; annotated copies differ from the originals
    assert len((tmp_path / "p.csv").read_text().strip().splitlines()) == len(records) + 1
    name = one_face[0]
    ann = cv2.imread(str(tmp_path / "ann" / name))
    orig = cv2.imread(str(inputs / name))
    assert ann.shape == orig.shape and np.abs(ann.astype(int) - orig).max() > 100

    # calibration: the measured chip ratio on these chips is close to the named constant
    m = measure_chip_ratio(load_rgb(f) for f in files[::2])
    print(f"chip ratio on 20 chips: {m.ratio} (constant {UTKFACE_CHIP})")
    assert abs(m.ratio.scale - UTKFACE_CHIP.scale) < 0.08 and abs(m.ratio.dy - UTKFACE_CHIP.dy) < 0.04


@pytest.mark.parametrize("tta", [False, True])
def test_detect_none_matches_the_training_pipeline(tiny_run, tta: bool) -> None:
    """detect=none decodes each file as training did: ages equal evaluate.predict_records on the same
    files, with and without flip test-time augmentation."""
    from ordinalage.evaluation.model_predictions import predict_records
    from ordinalage.runs.checkpoint import load_model
    from ordinalage.runs.rundir import read_split_csv

    run = tiny_run("class")
    recs = read_split_csv(run / "split.csv", "test")[:12]
    ours = run_predict(run, [r.path for r in recs], detect="none", device="cpu", batch_size=5, show=False, tta=tta)
    theirs = predict_records(load_model(run, "cpu"), recs, batch_size=8, device="cpu", workers=0, tta=tta)
    assert [r["file"] for r in ours] == theirs.paths
    assert [r["box"] for r in ours] == [None] * len(recs)
    np.testing.assert_allclose([r["age"] for r in ours], theirs.pred_age, atol=0.01)
    labels = load_model(run, "cpu").groups.labels
    assert [r["group"] for r in ours] == [labels[g] for g in theirs.pred_group]
    if tta:  # the mirror really is a second view: some ages move
        plain = predict_records(load_model(run, "cpu"), recs, batch_size=8, device="cpu", workers=0)
        assert np.abs(plain.pred_age - theirs.pred_age).max() > 1e-4


# ---------------------------------------------------------------------------------------------
# bad input through the CLI


def test_bad_images_are_reported_and_the_rest_go_on(tiny_run, tmp_path: Path, capsys) -> None:
    from ordinalage.runs.rundir import read_split_csv

    run = tiny_run("coral")
    good = read_split_csv(run / "split.csv", "test")[0].path
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    cv2.imwrite(str(tmp_path / "blank.png"), np.full((90, 120, 3), 128, np.uint8))
    inputs = [str(tmp_path / "broken.jpg"), good, str(tmp_path / "blank.png")]

    assert main(["predict", str(run), *inputs, "--detector", "haar", "--json", "--device", "cpu"]) == 0
    out = json.loads(capsys.readouterr().out)["results"]
    assert [r["file"] for r in out] == [inputs[0], good, inputs[2]]  # every image listed, in order
    assert out[0]["face"] is None and out[0]["reason"].startswith("cannot read image")
    assert out[2]["face"] is None and out[2]["reason"] == "no face found"

    assert main(["predict", str(run), *inputs, "--detector", "none", "--json", "--device", "cpu"]) == 0
    out = json.loads(capsys.readouterr().out)["results"]
    assert out[0]["reason"].startswith("cannot read image") and out[0]["age"] is None
    assert out[1]["face"] == 0 and out[1]["age"] is not None and out[2]["age"] is not None


def test_cli_bad_checkpoint_and_missing_input_exit_2(tiny_run, tmp_path: Path, capsys) -> None:
    img = tmp_path / "x.png"
    cv2.imwrite(str(img), np.zeros((20, 20, 3), np.uint8))
    fake = tmp_path / "fake.pt"
    torch.save({"weights": torch.zeros(2)}, fake)
    assert main(["predict", str(fake), str(img)]) == 2
    assert f"ordinalage: error: {fake}: not an ordinalage checkpoint (no " in capsys.readouterr().err
    (tmp_path / "junk.pt").write_bytes(b"garbage")
    assert main(["predict", str(tmp_path / "junk.pt"), str(img)]) == 2
    assert f"ordinalage: error: {tmp_path / 'junk.pt'}: not an ordinalage checkpoint (cannot be read safely: " \
        in capsys.readouterr().err
    assert main(["predict", str(tiny_run("coral")), str(tmp_path / "nope.jpg")]) == 2
    assert f"ordinalage: error: {tmp_path / 'nope.jpg'}: no such file or folder" in capsys.readouterr().err
