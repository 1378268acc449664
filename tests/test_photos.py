"""Faces in photos: a chip pasted into a photo is cropped and aged as the chip, the crop ratio a run
stores, turned faces, optional detectors, and the `photos:` data spec (prior estimate, refused by train)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import ordinalage
from ordinalage.cli import main
from ordinalage.errors import UsageError
from ordinalage.inference.detection.calibration import (
    CROP_FILE,
    DEFAULT_RATIOS,
    UTKFACE_EXPOSURE,
    Exposure,
    expose,
    load_crop_ratios,
    write_crop_ratios,
)
from ordinalage.inference.detection.geometry import (
    Box,
    ChipRatio,
    chip_frame,
    crop_face,
    detect_turned,
    paste_chip,
)
from ordinalage.inference.detection.haar import HaarFaceDetector
from ordinalage.inference.detection.registry import make_detector

pytestmark = pytest.mark.usefixtures("one_thread")


def _chip(utk: Path | None, k: int = 0) -> np.ndarray:
    """An aligned 200 px face chip: a real adult UTKFace chip the detector finds, else a synthetic face."""
    if utk is not None:
        from ordinalage.inference.predictor import load_rgb

        det = HaarFaceDetector()
        found = 0
        for path in sorted(utk.glob("3[0-9]_*.jpg")):
            rgb = load_rgb(path)
            canvas = np.full((360, 480, 3), 120, np.uint8)
            paste_chip(rgb, canvas, 240, 180, 180)
            if len(det.detect(canvas)) == 1:
                if found == k:
                    return rgb
                found += 1
        pytest.skip("no UTKFace chip found alone in a photo")
    from ordinalage.data.synth import render_face

    return render_face((30, 60, 10)[k % 3], np.random.default_rng(k), 200)


def _write_png(path: Path, rgb: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


# ---------------------------------------------------------------------------------------------
# the crop of a pasted chip is the chip


def test_chip_in_a_photo_is_cropped_and_aged_as_the_chip(tiny_run, utkface_or_none) -> None:
    """The default path (`load(run).predict(photo)`, Haar) on 4 chips pasted at 150-200 px into plain
    photos: one face each; the crops are close to the chips' own training framing (and much closer
    than crops framed 30% too wide, so the comparison can tell); the ages are the chips' within 1.5
    years on average."""
    est = ordinalage.load(tiny_run("coral"), device="cpu")
    size, ratio = est.predictor.size, est.predictor.ratio
    diffs, wides, gaps = [], [], []
    for k, (x, y, side) in enumerate([(250, 170, 180), (150, 200, 150), (300, 160, 200), (240, 180, 165)]):
        chip = _chip(utkface_or_none, k)
        photo = np.full((360, 480, 3), 60 + 40 * k, np.uint8)
        truth = paste_chip(chip, photo, x, y, side)
        faces = est.predict(photo)
        assert len(faces) == 1
        box = est._face_detector().detect(photo)[0]
        cx, cy, s, _ = chip_frame(box, ratio)
        assert abs(s / truth[2] - 1) < 0.15 and np.hypot(cx - truth[0], cy - truth[1]) < 0.1 * truth[2]
        want = cv2.resize(chip, (size, size), interpolation=cv2.INTER_AREA).astype(float)
        diffs.append(np.abs(est.predictor.crop(photo, box, view=(1.0, 0.0, 0.0)).astype(float) - want).mean())
        wide = crop_face(photo, box, size, ChipRatio(ratio.scale * 1.3, ratio.dx, ratio.dy))
        wides.append(np.abs(wide.astype(float) - want).mean())
        gaps.append(abs(faces[0].age - est.predict(chip, detect=False)[0].age))
    print(f"\ncrop vs chip: {np.mean(diffs):.1f} grey levels (30% wider crops: {np.mean(wides):.1f}); "
          f"|age in photo - age as chip| {np.round(gaps, 2)}")
    assert np.mean(diffs) < 0.7 * np.mean(wides)
    assert np.mean(gaps) < 1.5


def test_turned_faces_are_found_and_cropped_upright(utkface_or_none) -> None:
    """Chips pasted turned by 15 degrees either way: all found (upright pass or the turned passes);
    most get the roll (from a turned pass or the eyes), and their crops, turned back by the box's
    angle, are closer to the upright chips than the unturned crops of the same boxes."""
    det, ratio = HaarFaceDetector(), DEFAULT_RATIOS["haar"]
    turned, flat, angles = [], [], []
    for k in range(4):
        chip = _chip(utkface_or_none, k)
        photo = np.full((360, 480, 3), 128, np.uint8)
        paste_chip(chip, photo, 240, 180, 190, angle=15.0 * (-1) ** k)
        boxes = det.detect(photo)
        assert len(boxes) == 1
        b = boxes[0]
        angles.append(b.angle * (-1) ** k)
        want = cv2.resize(chip, (64, 64), interpolation=cv2.INTER_AREA).astype(float)
        turned.append(np.abs(crop_face(photo, b, 64, ratio).astype(float) - want).mean())
        flat.append(np.abs(crop_face(photo, Box(b.x, b.y, b.w, b.h), 64, ratio).astype(float) - want).mean())
    print(f"\nroll found (true 15): {np.round(angles, 1)}; turned crops {np.mean(turned):.1f} vs unturned "
          f"{np.mean(flat):.1f} grey levels from the chips")
    assert sum(8 <= a <= 22 for a in angles) >= 2 and all(-5 <= a <= 22 for a in angles)
    assert np.mean(turned) < np.mean(flat)


def test_underexposed_crops_are_brightened_and_others_left_alone(utkface_or_none) -> None:
    """A chip in a photo at 40% brightness: its crop is brought back near the crop of the same face in
    the normal photo; the normal crop itself is untouched."""
    chip = _chip(utkface_or_none)
    photo = np.full((360, 480, 3), 128, np.uint8)
    paste_chip(chip, photo, 240, 180, 180)
    box = HaarFaceDetector().detect(photo)[0]
    normal = crop_face(photo, box, 64, DEFAULT_RATIOS["haar"])
    dark = crop_face((photo * 0.4).astype(np.uint8), box, 64, DEFAULT_RATIOS["haar"])
    assert np.array_equal(expose(normal, UTKFACE_EXPOSURE), normal)
    fixed = expose(dark, UTKFACE_EXPOSURE)
    before, after = np.abs(dark.astype(float) - normal).mean(), np.abs(fixed.astype(float) - normal).mean()
    print(f"\ndark crop {before:.1f} grey levels from the normal one, brightened {after:.1f}")
    assert after < 0.4 * before
    views = expose(np.stack([dark, dark]), UTKFACE_EXPOSURE)  # views of one face: one gain
    assert views.shape == (2, 64, 64, 3) and np.array_equal(views[0], fixed)


def test_views_of_a_face_are_averaged(tiny_run, utkface_or_none) -> None:
    """`crop` gives the default VIEWS of a face; the predictor averages them into one face, also when
    one batch mixes single crops (detect=False) with stacks of views (as the server batches them)."""
    from ordinalage.inference.predictor import VIEWS, FacePredictor

    p = FacePredictor(tiny_run("class"), "cpu")
    photo = np.full((360, 480, 3), 128, np.uint8)
    paste_chip(_chip(utkface_or_none), photo, 240, 180, 180)
    box = HaarFaceDetector().detect(photo)[0]
    views = p.crop(photo, box)
    assert views.shape == (len(VIEWS), p.size, p.size, 3)
    one = views[0]
    mixed = p([one, views, np.stack([one, one])])
    assert len(mixed.age) == 3
    single = p([one])
    assert mixed.age[0] == pytest.approx(single.age[0], abs=1e-4)
    assert mixed.age[2] == pytest.approx(single.age[0], abs=1e-4)  # two identical views: the view itself
    each = p(list(views))  # the views as separate faces: their mean distribution is the averaged face's
    assert np.allclose(mixed.label_proba[1], each.label_proba.mean(axis=0), atol=1e-5)
    assert FacePredictor(tiny_run("class"), "cpu", views=[(1.0, 0.0, 0.0)]).crop(photo, box).shape == (p.size, p.size, 3)


def test_detect_turned_maps_boxes_back() -> None:
    """A fake detector that finds one box in the middle of whatever image it gets: mapped back from a
    turned image, the box's centre is the image's centre and its angle the turn."""
    img = np.zeros((100, 200, 3), np.uint8)

    def centre_box(im: np.ndarray) -> list[Box]:
        h, w = im.shape[:2]
        return [Box(w // 2 - 10, h // 2 - 10, 20, 20)]

    (b,) = detect_turned(centre_box, img, 15.0)
    assert b.angle == 15.0 and abs(b.centre[0] - 100) <= 1 and abs(b.centre[1] - 50) <= 1


# ---------------------------------------------------------------------------------------------
# the crop ratio a run stores


def test_crop_ratio_is_stored_with_the_run_and_loaded(tiny_run, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run("coral"), run)
    est = ordinalage.load(run, device="cpu", detector="haar")
    assert est.predictor.crop_source == "default" and est.predictor.ratio == DEFAULT_RATIOS["haar"]
    assert est.info()["crop"]["source"] == "default"
    mine = ChipRatio(1.1, 0.01, 0.05)
    write_crop_ratios(run, {"haar": mine, "dlib": ChipRatio(1.0, 0.0, 0.1)}, {"split": "val"})
    assert load_crop_ratios(run) == ({"haar": mine, "dlib": ChipRatio(1.0, 0.0, 0.1)}, str(run / CROP_FILE))
    est = ordinalage.load(run, device="cpu", detector="haar")
    assert est.predictor.ratio == mine and est.info()["crop"] == {"ratio": {"scale": 1.1, "dx": 0.01, "dy": 0.05},
                                                                  "source": str(run / CROP_FILE)}
    assert est.predictor.exposure == UTKFACE_EXPOSURE  # the file holds no exposure: the default
    write_crop_ratios(run, {"haar": mine}, {}, exposure=Exposure(100.0, 180.0))
    assert ordinalage.load(run, device="cpu", detector="haar").predictor.exposure == Exposure(100.0, 180.0)
    (run / CROP_FILE).write_text(json.dumps({"format": "something else"}))
    with pytest.raises(UsageError, match="not a readable face crop file"):
        ordinalage.load(run, device="cpu", detector="haar")


def test_measure_crop_ratios_on_a_runs_validation_faces(utkface_dir: Path, tmp_path: Path) -> None:
    """measure_crop_ratios reads the run's split.csv (validation faces only), pastes them into photos,
    and writes face_crop.json with a ratio near the documented default."""
    from ordinalage.inference.detection.calibration import measure_crop_ratios

    files = sorted(utkface_dir.glob("*.jpg"))[::400][:24]
    rows = ["path,age,group,split"] + [f"{f},30,2,{'val' if i % 2 else 'test'}" for i, f in enumerate(files)]
    (tmp_path / "split.csv").write_text("\n".join(rows) + "\n")
    out = measure_crop_ratios(tmp_path, n=12)
    ratios, source = load_crop_ratios(tmp_path)
    print(f"\nmeasured on {out['haar']['found']}/{out['haar']['faces']} faces: {ratios['haar']}")
    assert source.endswith(CROP_FILE) and out["haar"]["faces"] == 12 and out["haar"]["found"] >= 9
    assert 60 < out["exposure"]["low"] <= out["exposure"]["target"] < 255
    assert abs(ratios["haar"].scale - DEFAULT_RATIOS["haar"].scale) < 0.1
    assert abs(ratios["haar"].dy - DEFAULT_RATIOS["haar"].dy) < 0.05


# ---------------------------------------------------------------------------------------------
# optional detectors


def test_missing_optional_detector_names_the_pip_command(monkeypatch, tiny_run, tmp_path: Path, capsys) -> None:
    monkeypatch.setitem(sys.modules, "dlib", None)  # import dlib -> ImportError, installed or not
    with pytest.raises(UsageError, match=r"pip install 'ordinalage\[dlib\]'"):
        make_detector("dlib")
    with pytest.raises(UsageError, match="pip install"):
        ordinalage.load(tiny_run("coral"), device="cpu", detector="dlib")
    with pytest.raises(UsageError, match="unknown detector 'yolo'.*haar, dlib"):
        make_detector("yolo")
    img = _write_png(tmp_path / "a.png", np.full((40, 40, 3), 100, np.uint8))
    assert main(["predict", str(tiny_run("coral")), str(img), "--detector", "dlib"]) == 2
    assert "pip install 'ordinalage[dlib]'" in capsys.readouterr().err


def test_predict_records_the_detector(tiny_run, utkface_or_none, tmp_path: Path, capsys) -> None:
    photo = np.full((300, 400, 3), 128, np.uint8)
    paste_chip(_chip(utkface_or_none), photo, 200, 150, 170)
    img = _write_png(tmp_path / "p.png", photo)
    assert main(["predict", str(tiny_run("coral")), str(img), "--json", "--device", "cpu", "--detector", "haar"]) == 0
    records = json.loads(capsys.readouterr().out)["results"]
    assert [r["detector"] for r in records] == ["haar"] and records[0]["face"] == 0
    assert main(["predict", str(tiny_run("coral")), str(img), "--json", "--device", "cpu", "--detector", "none"]) == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["detector"] == "none"


def test_dlib_detector_when_installed(utkface_or_none) -> None:
    """With dlib (and its landmark model) installed: a face pasted turned by 10 degrees is found, its
    roll measured by the landmarks, and its chip square close to the truth."""
    pytest.importorskip("dlib", reason="the optional dlib detector is not installed (pip install 'ordinalage[dlib]')")
    from ordinalage.inference.detection.dlib import landmark_model

    photo = np.full((360, 480, 3), 128, np.uint8)
    truth = paste_chip(_chip(utkface_or_none), photo, 240, 180, 180, angle=10.0)
    det = make_detector("dlib")
    (box,) = det.detect(photo)
    cx, cy, side, angle = chip_frame(box, DEFAULT_RATIOS["dlib"])
    print(f"\ndlib (landmarks: {det.landmarks}): chip square ({cx:.0f}, {cy:.0f}, {side:.0f}, {angle:.1f} deg) "
          f"vs true {tuple(round(v) for v in truth)}")
    assert abs(side / truth[2] - 1) < 0.15 and np.hypot(cx - truth[0], cy - truth[1]) < 0.1 * truth[2]
    if landmark_model() is not None:
        assert det.landmarks and abs(angle - 10.0) < 4


def test_dlib_falls_back_to_haar_where_it_finds_nothing(monkeypatch, utkface_or_none) -> None:
    """A stand-in dlib whose detector finds nothing (so this runs without dlib): the Haar search takes over."""
    import types

    class Blind:
        def run(self, *_args: object) -> tuple[list, list, list]:
            return [], [], []

    fake = types.ModuleType("dlib")
    fake.get_frontal_face_detector = Blind  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "dlib", fake)
    monkeypatch.setattr("ordinalage.inference.detection.dlib.landmark_model", lambda: None)
    photo = np.full((360, 480, 3), 128, np.uint8)
    paste_chip(_chip(utkface_or_none), photo, 240, 180, 180)
    det = make_detector("dlib")
    assert not det.landmarks and len(det.detect(photo)) == 1
    det.fallback = False
    assert det.detect(photo) == []


# ---------------------------------------------------------------------------------------------
# photos: unlabeled photos


@pytest.fixture
def photo_folder(tmp_path: Path, utkface_or_none) -> Path:
    """A plain folder: one photo with one face, one with two, one with none (no ages anywhere)."""
    folder = tmp_path / "school_photos"
    one = np.full((360, 480, 3), 150, np.uint8)
    paste_chip(_chip(utkface_or_none, 0), one, 240, 180, 170)
    two = np.full((360, 640, 3), 90, np.uint8)
    paste_chip(_chip(utkface_or_none, 0), two, 160, 180, 170)
    paste_chip(_chip(utkface_or_none, 1), two, 480, 180, 170)
    _write_png(folder / "one.png", one)
    _write_png(folder / "sub" / "two.png", two)
    _write_png(folder / "empty.png", np.full((200, 200, 3), 200, np.uint8))
    return folder


def test_photos_spec_gives_one_record_per_face(tiny_run, photo_folder: Path, capsys) -> None:
    from ordinalage.data.boxes import parse_box_path
    from ordinalage.inference.predictor import FacePredictor, predict_photos

    predictor = FacePredictor(tiny_run("coral"), "cpu")
    records, res = predict_photos(f"photos:{photo_folder}", predictor, HaarFaceDetector())
    assert len(records) == 3 and len(res.age) == 3 and res.label_proba.shape[0] == 3
    assert sorted((Path(r.meta["file"]).name, r.meta["face"]) for r in records) == \
        [("one.png", 0), ("two.png", 0), ("two.png", 1)]
    assert all(np.isnan(r.age) and r.meta["detector"] == "haar" for r in records)
    assert len({r.path for r in records}) == 3  # two faces of one photo are two paths
    file, box, ext = parse_box_path(records[0].path)
    assert Path(file).name == "one.png" and box is not None and ext == 0.0
    assert "1 no face found" in capsys.readouterr().err


def test_prior_estimate_on_plain_photos(tiny_run, photo_folder: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "school.json"
    run = tiny_run("coral")
    assert main(["prior", "estimate", str(run), "--data", f"photos:{photo_folder}", "--out", str(out),
                 "--device", "cpu", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    from ordinalage.inference.detection.registry import resolve_detector_name

    assert result["n_faces"] == 3 and result["n_images"] == 3
    assert result["detector"] == resolve_detector_name("auto")  # the detector used, not "auto"
    prior = json.loads(out.read_text())
    assert abs(sum(prior["weight"]) - 1) < 1e-6 and prior["meta"]["n_faces"] == 3
    # the labelled folder: spec on the same folder says what to use instead
    assert main(["prior", "estimate", str(run), "--data", f"folder:{photo_folder}", "--out", str(out)]) == 2
    assert f"photos:{photo_folder}" in capsys.readouterr().err
    # the detector is chosen as predict chooses it
    assert main(["prior", "estimate", str(run), "--data", f"photos:{photo_folder}", "--out", str(out),
                 "--detector", "yolo"]) == 2
    assert "unknown detector 'yolo'" in capsys.readouterr().err


def test_commands_that_need_ages_refuse_photos(tiny_run, photo_folder: Path, tmp_path: Path, capsys) -> None:
    assert main(["train", "--data", f"photos:{photo_folder}", "--out", str(tmp_path / "r"), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "photos have no ages" in err and "train" in err
    assert main(["evaluate", str(tiny_run("coral")), "--data", f"photos:{photo_folder}"]) == 2
    assert "photos have no ages" in capsys.readouterr().err
