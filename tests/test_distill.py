"""Distillation (`ordinalage distill`): a student of a tiny two-member teacher trains on the
teacher's tempered distributions, keeps them in its run folder, resumes without the teacher, and
loads, evaluates and predicts as an ordinary run. Tiny synthetic data, one thread."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ordinalage.cli import main
from ordinalage.distillation import distill, student_config, teacher_targets
from ordinalage.errors import UsageError
from ordinalage.evaluation.evaluate import evaluate_run
from ordinalage.inference.predictor import FacePredictor
from ordinalage.runs.checkpoint import load_model
from ordinalage.runs.rundir import RunDir
from ordinalage.training.soft_targets import distillation_loss, read_soft_targets, targets_for, temper

pytestmark = pytest.mark.usefixtures("one_thread")

SETS = ["data.synth_n=160", "data.synth_size=48", "data.image_size=32", "data.num_workers=0", "model.width=8",
        "train.batch_size=32", "train.device=cpu"]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory, synth_cache_dir: str) -> Path:
    """A two-member CORAL ensemble, one epoch each."""
    out = tmp_path_factory.mktemp("teacher") / "run"
    argv = ["train", "--head", "coral", "--epochs", "1", "--members", "2", "--out", str(out)]
    for item in [f"data.cache_dir={synth_cache_dir}", *SETS, "train.eval_on_end=false"]:
        argv += ["--set", item]
    assert main(argv) == 0
    return out


@pytest.fixture(scope="module")
def student(teacher: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("student") / "run"
    assert main(["distill", str(teacher), "--epochs", "2", "--temperature", "2", "--out", str(out),
                 "--device", "cpu", "--set", "train.eval_on_end=true"]) == 0
    return out


def test_tempering_keeps_distributions_and_flattens_them_above_one() -> None:
    p = np.random.default_rng(0).dirichlet(np.full(101, 0.3), size=20)
    for t in (0.5, 1.0, 2.0, 4.0):
        np.testing.assert_allclose(temper(p, t).sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(temper(p, 1.0), p, atol=1e-6)
    entropy = [float(-(q * np.log(q + 1e-12)).sum(1).mean()) for q in (temper(p, 0.5), p, temper(p, 2.0))]
    assert entropy[0] < entropy[1] < entropy[2]


def test_the_loss_is_cross_entropy_to_the_soft_targets_scaled_by_t_squared() -> None:
    logits = torch.randn(6, 11)
    soft = torch.softmax(torch.randn(6, 11), 1)
    expected = -(soft * F.log_softmax(logits / 3.0, 1)).sum(1).mean() * 9.0
    assert distillation_loss(logits, soft, 3.0).item() == pytest.approx(expected.item(), rel=1e-6)
    # at its minimum the student's distribution is the teacher's
    free = torch.zeros(6, 11, requires_grad=True)
    opt = torch.optim.SGD([free], lr=5.0)
    for _ in range(500):
        opt.zero_grad()
        distillation_loss(free, soft, 1.0).backward()
        opt.step()
    torch.testing.assert_close(torch.softmax(free.detach(), 1), soft, atol=1e-3, rtol=0)


def test_teacher_targets_are_the_averaged_flip_distributions_summing_to_one(teacher: Path) -> None:
    targets = teacher_targets(teacher, device="cpu")
    train = RunDir(teacher / "member-0").read_split("train")
    assert targets.paths == [r.path for r in train] and targets.skipped == []
    assert targets.proba.shape == (len(train), 101)
    np.testing.assert_allclose(targets.proba.sum(1), 1.0, atol=1e-5)
    # the ensemble's distribution: the two members' flip-TTA distributions averaged
    from ordinalage.evaluation.model_predictions import predict_records

    members = [load_model(teacher / f"member-{i}") for i in (0, 1)]
    each = [predict_records(m, train, device="cpu", workers=0, tta=True).label_proba for m in members]
    np.testing.assert_allclose(targets.proba, np.mean(each, axis=0), atol=1e-5)
    hot = teacher_targets(teacher, temperature=2.0, device="cpu")
    np.testing.assert_allclose(hot.proba, temper(targets.proba, 2.0), atol=1e-5)


def test_a_student_trains_keeps_its_targets_and_loads_as_an_ordinary_run(student: Path, teacher: Path,
                                                                         tmp_path: Path) -> None:
    config = load_model(student).config
    assert (config.model.head, config.train.members, config.train.epochs) == ("class", 1, 2)
    assert config.train.distill_from == str(teacher) and config.train.distill_temperature == 2.0
    summary = json.loads((student / "summary.json").read_text())
    assert summary["finished"] and summary["epochs_done"] == 2
    saved = read_soft_targets(student / "teacher_targets.npz")
    np.testing.assert_allclose(saved["proba"].sum(1), 1.0, atol=1e-5)
    assert saved["meta"]["temperature"] == 2.0 and len(saved["meta"]["members"]) == 2
    # the student is one model: it evaluates, predicts and exports like any run
    result = evaluate_run(student, split="val", show=False, out=tmp_path / "eval")
    assert result["n"] > 0 and np.isfinite(result["mae"])
    crops = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    out = FacePredictor(student, device="cpu")(crops)
    assert out.label_proba is not None and out.label_proba.shape == (3, 101)
    assert summary["test"]["n"] > 0 and (student / "eval-test").is_dir()  # tested at the end, one pass per face


def test_the_student_learns_from_the_teacher_not_the_labels(teacher: Path, tmp_path: Path) -> None:
    """Two students of different teachers' targets (the real one, and its targets rolled by one
    image) end with different weights: the loss reads the targets, not the true ages."""
    import ordinalage

    a = ordinalage.distill(teacher, epochs=1, out=tmp_path / "a", quiet=True, train__lr=0.002).path
    assert ordinalage.Run(a).config.train.lr == 0.002  # the Python API, with a section__key override
    run = RunDir(tmp_path / "b")
    run.path.mkdir()
    saved = read_soft_targets(a / "teacher_targets.npz")
    from ordinalage.training.fit import fit
    from ordinalage.training.soft_targets import write_soft_targets

    write_soft_targets(run.teacher_targets_npz, saved["paths"], np.roll(saved["proba"], 1, axis=0))
    b = fit(student_config(teacher, epochs=1, out=run.path), quiet=True)
    wa, wb = (torch.load(p / "last.pt", weights_only=False)["model"]["head.fc.weight"] for p in (a, b))
    assert not torch.allclose(wa, wb)


def test_a_stopped_student_resumes_without_its_teacher(teacher: Path, tmp_path: Path) -> None:
    from ordinalage.training.fit import fit

    once = distill(teacher, epochs=2, out=tmp_path / "once", device="cpu", quiet=True)
    config = student_config(teacher, epochs=2, out=tmp_path / "twice")
    run = RunDir(tmp_path / "twice")
    run.path.mkdir()
    (once / "teacher_targets.npz").rename(run.teacher_targets_npz)
    fit(config, quiet=True, stop_after_epochs=1)
    fit(None, resume=run.path, quiet=True)
    a = torch.load(once / "last.pt", weights_only=False)["model"]
    b = torch.load(run.last_pt, weights_only=False)["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key])


def test_distill_refuses_what_it_cannot_learn_from(teacher: Path, tmp_path: Path, synth_cache_dir: str) -> None:
    with pytest.raises(UsageError, match="no such run folder"):
        student_config(tmp_path / "nowhere")
    with pytest.raises(UsageError, match="model.head 'class'"):
        student_config(teacher, sets=["model.head=coral"])
    decades = tmp_path / "decades"
    argv = ["train", "--head", "class", "--target", "group", "--epochs", "1", "--out", str(decades)]
    for item in [f"data.cache_dir={synth_cache_dir}", *SETS, "train.eval_on_end=false"]:
        argv += ["--set", item]
    assert main(argv) == 0
    with pytest.raises(UsageError, match="predicts age groups"):
        teacher_targets(decades, device="cpu")
    assert main(["distill", str(teacher), "--budget", "1m", "--epochs", "1"]) == 2


def test_targets_that_do_not_match_the_split_are_refused() -> None:
    class R:
        def __init__(self, path: str) -> None:
            self.path = path

    targets = {"paths": ["a", "b"], "proba": np.full((2, 5), 0.2, np.float32), "skipped": ["c"], "meta": {}}
    out = targets_for([R("b"), R("c"), R("a")], targets, num_classes=5, where="t.npz")
    assert out.shape == (3, 5) and out[1].sum() == 0 and out[0].sum() == pytest.approx(1.0)
    with pytest.raises(UsageError, match="no teacher target"):
        targets_for([R("d")], targets, num_classes=5, where="t.npz")
    with pytest.raises(UsageError, match="validation or test"):
        targets_for([R("a")], targets, held_out=[R("b")], num_classes=5, where="t.npz")
    with pytest.raises(UsageError, match="labels"):
        targets_for([R("a")], targets, num_classes=7, where="t.npz")
    with pytest.raises(UsageError, match="ordinalage distill"):
        read_soft_targets("/nonexistent/teacher_targets.npz")


def test_a_mixup_student_reads_its_partners_teacher_rows(teacher: Path, tmp_path: Path) -> None:
    """With mixup the partners' targets are their own teacher rows (looked up by training index)."""
    import ordinalage
    from ordinalage.training.loop import _rows_of

    age, group = torch.tensor([10.0, 20.0, 30.0]), torch.tensor([1, 2, 3])
    batch = {"index": torch.tensor([7, 8, 9]), "age": age}
    a, g, picked = _rows_of(age, group, batch, torch.tensor([2, 0, 0]))
    assert a.tolist() == [30.0, 10.0, 10.0] and g.tolist() == [3, 1, 1] and picked["index"].tolist() == [9, 7, 7]
    assert batch["index"].tolist() == [7, 8, 9]  # the batch itself is left as it was
    run = ordinalage.distill(teacher, epochs=1, out=tmp_path / "mix", quiet=True, train__mixup_alpha=0.4,
                             train__mixup_sigma=5.0).path
    plain = ordinalage.distill(teacher, epochs=1, out=tmp_path / "plain", quiet=True).path
    wa, wb = (torch.load(p / "last.pt", weights_only=False)["model"]["head.fc.weight"] for p in (run, plain))
    assert torch.isfinite(wa).all() and not torch.allclose(wa, wb)
