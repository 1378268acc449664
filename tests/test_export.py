"""export: ONNX translations against hand-made tensors, every head to ONNX and TorchScript, bad input."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ordinalage.cli import main
from ordinalage.errors import UsageError
from ordinalage.inference.export import OPSET, TOLERANCE, onnx_symbolics, run_export

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
HEADS = ("class", "coral", "corn", "regression")
# the legacy exporter and torch.jit announce their deprecation on every call
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning",
                                        "ignore:ONNX Preprocess:UserWarning")


class _Ops(nn.Module):
    """cumprod over dim 1, and index_add of 6 columns into 3 with repeated indices."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("index", torch.tensor([0, 0, 1, 2, 2, 2]))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = torch.zeros(x.shape[0], 3, dtype=x.dtype)
        out.index_add_(1, self.index, x)
        return torch.cumprod(x, dim=1), out


@pytest.mark.filterwarnings("ignore:.*does not support duplicated values:UserWarning")
def test_onnx_translations_of_cumprod_and_index_add(tmp_path: Path) -> None:
    x = torch.tensor([[0.5, 0.5, 0.5, 0.5, 0.5, 0.5],
                      [-1.0, 2.0, -3.0, 0.5, -1.0, 4.0],
                      [2.0, 0.0, 3.0, -1.0, 1.0, 1.0]])
    path = tmp_path / "ops.onnx"
    with onnx_symbolics():
        torch.onnx.export(_Ops(), (x,), str(path), dynamo=False, opset_version=OPSET, input_names=["x"],
                          dynamic_axes={"x": {0: "n"}})
    cum, added = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})
    np.testing.assert_allclose(cum[1], [-1, -2, 6, 3, -3, -12], rtol=1e-5)
    np.testing.assert_allclose(cum[2], [2, 0, 0, 0, 0, 0], atol=1e-6)
    np.testing.assert_allclose(cum[0], 0.5 ** np.arange(1, 7), rtol=1e-5)
    np.testing.assert_allclose(added, [[1.0, 0.5, 1.5], [1.0, -3.0, 3.5], [2.0, 3.0, 1.0]], rtol=1e-6)
    # outside the context the built-in translations are back: no cumprod, no repeated index_add indices
    with pytest.raises(torch.onnx.errors.OnnxExporterError, match="index_add|cumprod"):
        torch.onnx.export(_Ops(), (x,), str(tmp_path / "plain.onnx"), dynamo=False, opset_version=OPSET)


@pytest.mark.parametrize("head", HEADS)
def test_every_head_exports_and_matches_pytorch(tiny_run, head: str, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    run = tiny_run(head)
    for fmt, suffix in (("onnx", "onnx"), ("torchscript", "pt")):
        out = tmp_path / f"{head}.{suffix}"
        result = run_export(run, fmt=fmt, out=out)
        assert out.is_file() and result["ok"]
        for name, diff in result["max_abs_diff"].items():
            assert diff <= TOLERANCE[name], (fmt, name, diff)
    # the ONNX file on its own: batch of 1 (the trace used 2), metadata, same answers as AgeModel.predict
    from ordinalage.runs.checkpoint import load_model

    loaded = load_model(run, "cpu")
    images = torch.randint(0, 256, (1, 3, loaded.input_spec.size, loaded.input_spec.size), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(1))
    faces = loaded.input_spec.normalize(images)
    session = ort.InferenceSession(str(tmp_path / f"{head}.onnx"), providers=["CPUExecutionProvider"])
    proba, age, group = session.run(["group_proba", "age", "group"], {"faces": faces.numpy()})
    ref = loaded.model.eval().predict(images)
    np.testing.assert_allclose(proba, ref.group_proba.numpy(), atol=1e-4)
    np.testing.assert_allclose(age, ref.age.numpy(), atol=1e-3)
    assert group.dtype == np.int64 and (group == ref.group.numpy()).all()
    meta = {p.key: json.loads(p.value) for p in onnx.load(str(tmp_path / f"{head}.onnx")).metadata_props}
    assert meta["groups"] == list(loaded.groups.labels) and meta["head"] == head
    assert meta["input_shape"] == ["batch", 3, loaded.input_spec.size, loaded.input_spec.size]
    ts = torch.jit.load(str(tmp_path / f"{head}.pt"))
    torch.testing.assert_close(ts(faces)[1], ref.age, atol=1e-3, rtol=0)


def test_export_bad_input(tiny_run, tmp_path: Path, capsys, monkeypatch) -> None:
    fake = tmp_path / "fake.pt"
    torch.save({"format": "something-else"}, fake)
    assert main(["export", str(fake), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 2
    assert f"ordinalage: error: {fake}: not an ordinalage checkpoint (no " in capsys.readouterr().err
    assert main(["export", str(tmp_path / "none.pt"), "--format", "torchscript", "--out", str(tmp_path / "m.pt")]) == 2
    assert f"ordinalage: error: checkpoint not found: {tmp_path / 'none.pt'}" in capsys.readouterr().err
    assert not (tmp_path / "m.pt").exists()
    with pytest.raises(UsageError, match="unknown format"):
        run_export(tiny_run("coral"), fmt="tflite", out=tmp_path / "m.tflite")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if it were not installed
    with pytest.raises(UsageError, match="pip install onnx onnxruntime"):
        run_export(tiny_run("coral"), fmt="onnx", out=tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_cli_export_json(tiny_run, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cli.onnx"
    assert main(["export", str(tiny_run("coral")), "--format", "onnx", "--out", str(out), "--json"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert result["out"] == str(out) and result["ok"] and result["opset"] == OPSET
    assert "max |difference| to PyTorch" in captured.err


def _onnx_outputs(path: Path, faces: torch.Tensor) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["group_proba", "age", "group"], {"faces": faces.numpy()})


@pytest.mark.parametrize(("first_head", "second", "extra"), [("class", "coral", ()), ("class", "regression", ()),
                                                             ("coral", "class", ("model.target=group",))])
def test_an_ensemble_exports_as_one_graph_that_predicts_as_predict_does(tiny_run, first_head: str, second: str,
                                                                        extra: tuple[str, ...], tmp_path: Path) -> None:
    """class + CORAL average label distributions; class + regression average ages; CORAL + class over
    age groups decode the averaged groups by CORAL's median: each way the ONNX graph gives what
    FacePredictor (evaluate's and serve's averaging) gives for the same faces."""
    from ordinalage.inference.predictor import FacePredictor

    torch.set_num_threads(1)
    first, other = tiny_run(first_head, *extra), tiny_run(second, *extra)
    out = tmp_path / "ensemble.onnx"
    result = run_export(first, fmt="onnx", out=out, ensemble=[other])
    assert result["ok"] and result["members"] == 2
    predictor = FacePredictor(first, device="cpu", ensemble=[other])
    crops = np.random.default_rng(2).integers(0, 256, (4, predictor.size, predictor.size, 3), dtype=np.uint8)
    expected = predictor(crops)
    faces = predictor.spec.normalize(torch.from_numpy(crops).permute(0, 3, 1, 2))
    proba, age, group = _onnx_outputs(out, faces)
    np.testing.assert_allclose(age, expected.age, atol=1e-3)
    np.testing.assert_allclose(proba, expected.group_proba, atol=1e-4)
    assert (group == expected.group).all()
    alone = FacePredictor(first, device="cpu")(crops)
    assert not np.allclose(alone.age, expected.age, atol=1e-3)  # the second member counts
    meta = {p.key: json.loads(p.value) for p in onnx.load(str(out)).metadata_props}
    assert meta["heads"] == [first_head, second] and len(meta["members"]) == 2


def test_an_ensemble_of_one_model_twice_exports_the_model(tiny_run, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    run = tiny_run("corn")
    run_export(run, fmt="torchscript", out=tmp_path / "one.pt")
    run_export(run, fmt="torchscript", out=tmp_path / "two.pt", ensemble=[run])
    faces = torch.randn(3, 3, 48, 48, generator=torch.Generator().manual_seed(3))
    one, two = torch.jit.load(str(tmp_path / "one.pt")), torch.jit.load(str(tmp_path / "two.pt"))
    for a, b in zip(one(faces), two(faces), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_members_with_another_normalisation_see_their_own(tiny_run) -> None:
    from ordinalage.inference.export import EnsembleExportModule
    from ordinalage.models.input_spec import InputSpec
    from ordinalage.runs.checkpoint import load_model

    torch.set_num_threads(1)
    loaded = load_model(tiny_run("class"), "cpu")
    model = loaded.model.eval()
    own, other = loaded.input_spec, InputSpec(loaded.input_spec.size, mean=(0.5, 0.4, 0.3), std=(0.2, 0.3, 0.25))
    module = EnsembleExportModule([model, model], [own, other]).eval()
    images = torch.randint(0, 256, (2, 3, own.size, own.size), dtype=torch.uint8, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        proba, age, _ = module(own.normalize(images))
        expected = torch.stack([model.predict(own.normalize(images)).label_proba,
                                model.predict(other.normalize(images)).label_proba]).mean(0)
    torch.testing.assert_close(age, model.head.age_from(expected), atol=1e-4, rtol=0)
    torch.testing.assert_close(proba, model.head.years_to_groups(expected), atol=1e-5, rtol=0)


def test_members_that_cannot_be_averaged_are_refused(tiny_run, tmp_path: Path, capsys) -> None:
    torch.set_num_threads(1)
    smaller = tiny_run("class", "data.image_size=32")
    out = tmp_path / "m.onnx"
    assert main(["export", str(tiny_run("class")), "--ensemble", str(smaller), "--format", "onnx",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "members see faces at other sizes or crops" in err and str(smaller) in err and not out.exists()
    grouped = tiny_run("class", "model.target=group")
    with pytest.raises(UsageError, match="predicts other labels"):
        run_export(tiny_run("class"), fmt="onnx", out=out, ensemble=[grouped])
