"""Ensemble runs (`train.members`, `--members`): members with their own seeds and budget shares in
one run folder, resumed where they stopped, and evaluated, predicted and refused as one model.
Tiny synthetic data, one thread."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tiny_training import tiny

from ordinalage.cli import main
from ordinalage.errors import UsageError
from ordinalage.evaluation.evaluate import evaluate_run
from ordinalage.inference.predictor import FacePredictor
from ordinalage.runs.checkpoint import load_model
from ordinalage.runs.members import is_ensemble_run, member_dirs
from ordinalage.training.ensemble import member_config
from ordinalage.training.train import train as fit

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ensemble_run(tmp_path_factory: pytest.TempPathFactory, synth_cache_dir: str) -> Path:
    """A two-member ensemble trained with `ordinalage train --members 2`, evaluated at the end."""
    out = tmp_path_factory.mktemp("ens") / "run"
    sets = [f"data.cache_dir={synth_cache_dir}", "data.synth_n=160", "data.synth_size=48", "data.image_size=32",
            "data.num_workers=0", "model.width=8", "train.batch_size=32", "train.seed=3"]
    argv = ["train", "--head", "class", "--epochs", "1", "--device", "cpu", "--members", "2", "--out", str(out)]
    for item in sets:
        argv += ["--set", item]
    assert main(argv) == 0
    return out


def test_members_get_their_own_seeds_folders_and_budget_shares(tmp_path: Path, synth_cache_dir: str) -> None:
    config = tiny(synth_cache_dir, tmp_path / "run", "train.members=3", "train.seed=2", "train.time_budget_min=12")
    second = member_config(config, 1, tmp_path / "run")
    assert (second.train.members, second.train.seed, second.train.time_budget_min) == (1, 7, 4.0)
    assert second.train.out_dir == str(tmp_path / "run" / "member-1")
    assert member_config(tiny(synth_cache_dir, tmp_path, "train.members=2"), 0, tmp_path).train.time_budget_min is None


def test_members_must_be_at_least_one(tmp_path: Path, synth_cache_dir: str) -> None:
    with pytest.raises(UsageError, match="train.members"):
        tiny(synth_cache_dir, tmp_path, "train.members=0")


def test_an_ensemble_run_holds_its_members_and_their_evaluation(ensemble_run: Path) -> None:
    summary = json.loads((ensemble_run / "summary.json").read_text())
    assert summary["finished"] and summary["members"] == ["member-0", "member-1"]
    assert [r["seed"] for r in summary["member_runs"]] == [6, 7]
    assert [load_model(m).config.train.seed for m in member_dirs(ensemble_run)] == [6, 7]
    assert is_ensemble_run(ensemble_run) and not is_ensemble_run(ensemble_run / "member-0")
    assert (ensemble_run / "val_best.json").is_file() and summary["val"]["mae"] > 0
    # the test evaluation is of the ensemble, kept in the ensemble's summary and folder
    assert summary["test"]["ensemble"] == [str(ensemble_run / "member-1" / "best.pt")]
    assert (ensemble_run / "eval-test" / "metrics.json").is_file()
    assert "test" not in json.loads((ensemble_run / "member-0" / "summary.json").read_text())


def test_evaluating_the_folder_equals_evaluating_its_members_together(ensemble_run: Path, tmp_path: Path) -> None:
    whole = evaluate_run(ensemble_run, split="val", show=False, out=tmp_path / "a")
    parts = evaluate_run(ensemble_run / "member-0", split="val", show=False, out=tmp_path / "b",
                         ensemble=[ensemble_run / "member-1"])
    assert whole["mae"] == pytest.approx(parts["mae"]) and whole["n"] == parts["n"]
    alone = evaluate_run(ensemble_run / "member-0", split="val", show=False, out=tmp_path / "c")
    assert whole["mae"] != pytest.approx(alone["mae"])  # the second member counts


def test_predicting_with_the_folder_averages_the_members(ensemble_run: Path) -> None:
    crops = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    both = FacePredictor(ensemble_run, device="cpu")(crops)
    members = [FacePredictor(m, device="cpu")(crops) for m in member_dirs(ensemble_run)]
    assert both.label_proba is not None
    np.testing.assert_allclose(both.label_proba, np.mean([m.label_proba for m in members], axis=0), atol=1e-6)
    assert not np.allclose(both.age, members[0].age)


def test_predict_ensemble_flag_equals_the_ensemble_folder(ensemble_run: Path, tmp_path: Path) -> None:
    import cv2

    image = tmp_path / "face.png"
    cv2.imwrite(str(image), np.random.default_rng(1).integers(0, 256, (48, 48, 3), dtype=np.uint8))
    flags = ["--detector", "none", "--device", "cpu", "--json"]
    out_folder, out_flag = tmp_path / "a.csv", tmp_path / "b.csv"
    assert main(["predict", str(ensemble_run), str(image), "--csv", str(out_folder), *flags]) == 0
    assert main(["predict", str(ensemble_run / "member-0"), str(image), "--ensemble", str(ensemble_run / "member-1"),
                 "--csv", str(out_flag), *flags]) == 0
    assert out_folder.read_text() == out_flag.read_text()


def test_commands_that_need_one_model_name_the_members(ensemble_run: Path) -> None:
    with pytest.raises(UsageError, match="member-0"):
        load_model(ensemble_run)
    with pytest.raises(UsageError, match="interval"):
        FacePredictor(ensemble_run, device="cpu", interval=0.9)


def test_a_stopped_ensemble_resumes_where_it_stopped(tmp_path: Path, synth_cache_dir: str) -> None:
    config = tiny(synth_cache_dir, tmp_path / "run", "train.members=2", "train.epochs=2")
    run = fit(config, quiet=True, stop_after_epochs=1)
    summary = json.loads((run / "summary.json").read_text())
    assert not summary["finished"] and summary["epochs_done"] == [1]
    assert not (run / "member-1").exists()
    with pytest.raises(UsageError, match="already holds a run"):
        fit(config, quiet=True)
    fit(None, resume=run, quiet=True)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["finished"] and summary["epochs_done"] == [2, 2]


def test_exporting_the_folder_writes_the_averaged_members(ensemble_run: Path, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    import torch

    out = tmp_path / "ensemble.onnx"
    assert main(["export", str(ensemble_run), "--format", "onnx", "--out", str(out)]) == 0
    predictor = FacePredictor(ensemble_run, device="cpu")
    crops = np.random.default_rng(5).integers(0, 256, (3, predictor.size, predictor.size, 3), dtype=np.uint8)
    faces = predictor.spec.normalize(torch.from_numpy(crops).permute(0, 3, 1, 2)).numpy()
    _, age, group = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(
        ["group_proba", "age", "group"], {"faces": faces})
    expected = predictor(crops)
    np.testing.assert_allclose(age, expected.age, atol=1e-3)
    assert (group == expected.group).all()
