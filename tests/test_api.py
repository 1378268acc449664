"""Python API: ordinalage.load -> AgeEstimator.predict / predict_batch / info, Face.to_dict, and the
heads in a hand-written training loop (`from ordinalage.heads import CoralHead`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import ordinalage
from ordinalage.errors import UsageError
from ordinalage.inference.api import Face


def _face_image(utk: Path | None, size: int = 200) -> np.ndarray:
    """A real UTKFace chip when present, else a synthetic face (RGB uint8)."""
    if utk is not None:
        from ordinalage.inference.predictor import load_rgb

        return load_rgb(sorted(utk.glob("3*_*.jpg"))[0])
    from ordinalage.data.synth import render_face

    return render_face(35, np.random.default_rng(0), size)


@pytest.fixture(scope="module")
def estimator(tiny_run):  # type: ignore[no-untyped-def]
    return ordinalage.load(tiny_run("coral"), device="cpu")


def test_import_is_cheap_and_lazy() -> None:
    code = ("import sys, ordinalage; assert 'torch' not in sys.modules and 'cv2' not in sys.modules; "
            "ordinalage.load; assert 'ordinalage.inference.api' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])
    with pytest.raises(AttributeError, match="no attribute"):
        ordinalage.not_a_thing  # noqa: B018


def test_face_to_dict_omits_absent_interval() -> None:
    f = Face(box=(1, 2, 3, 4), age=31.234, group="31-40", group_index=3, group_proba={"31-40": 0.91234})
    d = f.to_dict()
    assert d == {"box": [1, 2, 3, 4], "age": 31.23, "group": "31-40", "group_index": 3, "group_proba": {"31-40": 0.9123}}
    assert "age_lo" not in d and "age_hi" not in d
    d2 = Face(None, 5.0, "0-10", 0, {}, age_lo=2.0, age_hi=9.5).to_dict()
    assert d2["box"] is None and (d2["age_lo"], d2["age_hi"]) == (2.0, 9.5)
    json.dumps(d2)


def test_predict_path_pil_array_agree(estimator, tmp_path: Path, utkface_or_none) -> None:  # type: ignore[no-untyped-def]
    from PIL import Image

    rgb = _face_image(utkface_or_none)
    path = tmp_path / "face.png"
    Image.fromarray(rgb).save(path)
    by_array = estimator.predict(rgb)
    assert by_array, "no face detected in the test image"
    by_path = estimator.predict(path)
    by_pil = estimator.predict(Image.fromarray(rgb))
    assert [f.to_dict() for f in by_path] == [f.to_dict() for f in by_array] == [f.to_dict() for f in by_pil]
    f = by_array[0]
    x, y, w, h = f.box
    assert w > 20 and h > 20
    assert f.group == estimator.labels[f.group_index]
    assert sum(f.group_proba.values()) == pytest.approx(1.0, abs=1e-4)
    assert 0 <= f.age <= 100
    whole = estimator.predict(rgb, detect=False)
    assert len(whole) == 1 and whole[0].box is None


def test_predict_batch_matches_single_calls(estimator) -> None:  # type: ignore[no-untyped-def]
    from ordinalage.data.synth import render_face

    images = [render_face(a, np.random.default_rng(a), 120) for a in (8, 30, 66)]
    blank = np.full((80, 80, 3), 127, np.uint8)
    batch = estimator.predict_batch([images[0], blank, images[1], images[2]], detect=True)
    assert len(batch) == 4 and batch[1] == []
    singles = [estimator.predict(im) for im in images]
    for got, want in zip([batch[0], batch[2], batch[3]], singles, strict=True):
        assert [f.box for f in got] == [f.box for f in want]
        np.testing.assert_allclose([f.age for f in got], [f.age for f in want], atol=1e-4)
    assert [len(x) for x in estimator.predict_batch(images, detect=False)] == [1, 1, 1]


def test_bad_inputs_are_usage_errors(estimator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UsageError, match="dtype uint8"):
        estimator.predict(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(UsageError, match=r"shape \(H, W, 3\)"):
        estimator.predict(np.zeros((10, 10, 4), np.uint8))
    with pytest.raises(UsageError, match="expected a path"):
        estimator.predict(123)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(UsageError, match="bad.jpg"):
        estimator.predict(bad)
    with pytest.raises(UsageError, match="sequence of images"):
        estimator.predict_batch(str(bad))


def test_info_reports_the_model(estimator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    info = estimator.info()
    assert info["head"] == "coral" and info["backbone"] == "scratch" and info["target"] == "age"
    assert info["input_size"] == 48 and info["groups"] == estimator.labels and info["data"] == ["synth"]
    json.dumps(info)
    assert "CoralHead" not in repr(estimator) and "coral/scratch" in repr(estimator)


def test_info_reads_test_metrics_from_summary(tiny_run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run("coral"), run)
    summary = json.loads((run / "summary.json").read_text())
    summary["test"] = {"mae": 7.5, "accuracy": 0.4, "confusion": [[1, 2], [3, 4]]}
    (run / "summary.json").write_text(json.dumps(summary))
    info = ordinalage.load(run / "best.pt", device="cpu").info()
    assert info["test_metrics"] == {"mae": 7.5, "accuracy": 0.4}


def test_coral_head_in_someone_elses_training_loop() -> None:
    from ordinalage.heads import AgeGroups, CoralHead, ModelConfig

    torch.manual_seed(0)
    groups = AgeGroups.parse("0-20,21-40,41-60,61+")
    head = CoralHead(ModelConfig(head="coral", target="age", max_age=80), in_features=8, groups=groups)
    backbone = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.ReLU())
    ages = torch.randint(0, 81, (128,)).float()
    feats = torch.randn(128, 16) + ages[:, None] / 20  # features that carry the age
    groups_idx = torch.from_numpy(groups.clip_indices(ages.numpy())).long()
    opt = torch.optim.Adam([*backbone.parameters(), *head.parameters()], lr=1e-2)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = head.loss(head(backbone(feats)), ages, groups_idx)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]
    with torch.no_grad():
        dec = head.decode(head(backbone(feats)))
    assert dec.age.shape == (128,) and ((dec.age >= 0) & (dec.age <= 80)).all()
    assert dec.group_proba.shape == (128, 4)
    mae = (dec.age - ages).abs().mean()
    assert mae < (ages - ages.median()).abs().mean()  # better than the constant median


def test_fit_and_evaluate_from_python(tmp_path: Path) -> None:
    """`ordinalage.fit(None, **overrides) -> Run`, then `ordinalage.evaluate(run)` and `run.load()`."""
    from conftest import TINY_SETS

    from ordinalage.config import parse_set

    overrides = {k.replace(".", "__"): v for k, v in (parse_set(s) for s in TINY_SETS)}
    torch.set_num_threads(1)
    run = ordinalage.fit(None, quiet=True, head="corn", out=str(tmp_path / "run"), data__cache_dir=str(tmp_path / "c"),
                         **overrides)
    assert isinstance(run, ordinalage.Run) and run.config.model.head == "corn"
    assert len(run.metrics) == 1 and run.summary["finished"]
    metrics = ordinalage.evaluate(run)
    assert metrics["n"] > 0 and 0 <= metrics["mae"] < 80 and metrics["split"] == "test"
    faces = run.load(device="cpu").predict(_face_image(None, 48), detect=False)
    assert len(faces) == 1 and 0 <= faces[0].age <= 100
    with pytest.raises(UsageError, match="override 'lr_rate'"):
        ordinalage.fit(None, lr_rate=0.1)
