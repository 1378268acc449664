"""Training: every head on scratch and resnet18, learning, resume, NaN handling, run folder contents."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ordinalage.cli import main
from ordinalage.config import load_config
from ordinalage.errors import UsageError
from ordinalage.evaluation.evaluate import evaluate_after_training
from ordinalage.runs.checkpoint import load_checkpoint, load_model
from ordinalage.training.fit import fit
from ordinalage.training.loop import TrainingDiverged

HEADS = ["class", "coral", "corn", "regression"]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("cache"))


def tiny(cache_dir: str, out: Path, *sets: str, n: int = 240, size: int = 32):
    base = [f"data.cache_dir={cache_dir}", f"data.synth_n={n}", "data.synth_size=48", f"data.image_size={size}",
            "data.num_workers=0", "model.width=8", "train.batch_size=32", "train.epochs=1",
            "train.eval_on_end=false", f"train.out_dir={out}"]
    return load_config(sets=base + list(sets))


def _decoded_ok(run: Path) -> None:
    loaded = load_model(run)
    size = loaded.input_spec.size
    x = torch.randint(0, 255, (5, 3, size, size), dtype=torch.uint8)
    dec = loaded.model.predict(x)
    g = len(loaded.groups)
    assert dec.group.dtype == torch.long and ((dec.group >= 0) & (dec.group < g)).all()
    assert torch.isfinite(dec.age).all() and (dec.age >= 0).all() and (dec.age <= 101).all()
    assert dec.group_proba.shape == (5, g)
    assert torch.allclose(dec.group_proba.sum(1), torch.ones(5), atol=1e-4)


@pytest.mark.parametrize("backbone", ["scratch", "resnet18"])
@pytest.mark.parametrize("head", HEADS)
def test_every_head_trains_an_epoch_and_decodes(head: str, backbone: str, cache_dir: str, tmp_path: Path) -> None:
    run = fit(tiny(cache_dir, tmp_path / "run", f"model.head={head}", f"model.backbone={backbone}"), quiet=True)
    for name in ["config.yaml", "metrics.csv", "last.pt", "best.pt", "split.csv", "summary.json"]:
        assert (run / name).is_file(), name
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert len(rows) == 1 and np.isfinite(float(rows[0]["train_loss"])) and np.isfinite(float(rows[0]["val_mae"]))
    ckpt = torch.load(run / "best.pt", weights_only=True)  # safe to load: no pickled code
    assert ckpt["config"]["model"]["head"] == head
    _decoded_ok(run)


@pytest.mark.parametrize("target", ["group"])
@pytest.mark.parametrize("head", ["class", "coral", "corn"])
def test_group_target_heads(head: str, target: str, cache_dir: str, tmp_path: Path) -> None:
    run = fit(tiny(cache_dir, tmp_path / "run", f"model.head={head}", f"model.target={target}"), quiet=True)
    _decoded_ok(run)


def test_coral_learns_beyond_the_median(cache_dir: str, tmp_path: Path) -> None:
    """A few CPU epochs of CORAL on synthetic faces clearly beat predicting the training median."""
    torch.set_num_threads(2)
    cfg = tiny(cache_dir, tmp_path / "run", "train.epochs=6", "train.eval_on_end=true", "train.lr=0.003",
               "model.width=16", "data.groups=0-10,11-20,21-30,31-40,41-50,51-60,61+", n=900, size=48)
    run = fit(cfg, quiet=True)
    assert "test" not in json.loads((run / "summary.json").read_text())  # fit trains; the caller evaluates
    evaluate_after_training(run, show=False)
    test = json.loads((run / "summary.json").read_text())["test"]
    assert test["n"] > 150
    assert test["mae"] < 0.75 * test["baseline"]["mae"], (test["mae"], test["baseline"]["mae"])


def test_resume_equals_uninterrupted_run(cache_dir: str, tmp_path: Path) -> None:
    sets = ["train.epochs=2", "data.augment.hflip_p=0.5", "model.dropout=0.2"]
    full = fit(tiny(cache_dir, tmp_path / "full", *sets), quiet=True)
    part = fit(tiny(cache_dir, tmp_path / "part", *sets), quiet=True, stop_after_epochs=1)
    assert load_checkpoint(part / "last.pt")["epoch"] == 1
    assert main(["train", "--resume", str(part)]) == 0
    a = torch.load(full / "last.pt", weights_only=True)["model"]
    b = torch.load(part / "last.pt", weights_only=True)["model"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert len(list(csv.DictReader((part / "metrics.csv").open()))) == 2


def test_nan_loss_stops_with_epoch_and_step(cache_dir: str, tmp_path: Path) -> None:
    cfg = tiny(cache_dir, tmp_path / "run", "model.head=regression", "train.lr=1e30", "train.grad_clip=0",
               "train.epochs=2", "train.warmup_epochs=0", "model.regression_loss=mse")
    with pytest.raises(TrainingDiverged, match=r"epoch \d+, step \d+"):
        fit(cfg, quiet=True)


def test_existing_run_folder_is_not_overwritten(cache_dir: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = fit(tiny(cache_dir, tmp_path / "run"), quiet=True)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    with pytest.raises(UsageError) as info:
        fit(tiny(cache_dir, run), quiet=True)
    assert str(info.value).startswith(f"{run}: already holds a run")
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before  # nothing touched
    assert main(["train", "--out", str(run), "--epochs", "1"]) == 2  # the CLI adds how to continue it
    assert f"continue it with: ordinalage train --resume {run}" in capsys.readouterr().err


def test_label_distribution_class_head_trains(cache_dir: str, tmp_path: Path) -> None:
    run = fit(tiny(cache_dir, tmp_path / "run", "model.head=class", "model.label_sigma=2"), quiet=True)
    assert load_model(run).config.model.label_sigma == 2.0
    _decoded_ok(run)


def test_class_weighted_loss_and_weighted_sampler_run(cache_dir: str, tmp_path: Path) -> None:
    run = fit(tiny(cache_dir, tmp_path / "run", "data.class_weighted_loss=true", "data.sampling=weighted"), quiet=True)
    state = torch.load(run / "last.pt", weights_only=True)["model"]
    w = state["head.class_weights"]
    assert not torch.allclose(w, torch.ones_like(w))  # imbalanced groups -> unequal weights saved with the model
