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
    from ordinalage.training.checkpoint import load_model

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
