"""The model zoo: a run packaged as fp16 safetensors predicts what its best.pt predicts, checksums are
enforced, names resolve, unknown names list the known ones."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ordinalage.errors import UsageError
from ordinalage.zoo.catalog import ZOO_DIR, resolve_model, verify, zoo_model, zoo_models
from ordinalage.zoo.package import package_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def zoo(tiny_run, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A zoo folder holding one packaged tiny run, and the run."""
    run = tiny_run("class")
    root = tmp_path_factory.mktemp("zoo")
    package_model(run, "tiny", description="a test model", license="test-only", data="synthetic faces",
                  metrics={"test_mae": 1.0}, root=root)
    return root, run


def test_weights_file_rebuilds_the_model_within_fp16(zoo) -> None:
    from ordinalage.evaluation.model_predictions import predict_records
    from ordinalage.runs.checkpoint import load_checkpoint, load_model
    from ordinalage.runs.rundir import read_split_csv

    root, run = zoo
    folder = root / "tiny"
    assert (folder / "model.safetensors").is_file() and not (folder / "best.pt").exists()
    original, shipped = load_checkpoint(run), load_checkpoint(folder)
    assert shipped["config"] == original["config"] and shipped["groups"] == original["groups"]
    weights = {k: v for k, v in shipped["model"].items() if v.is_floating_point()}
    assert all(v.dtype == torch.float32 for v in weights.values())  # read back as fp32
    recs = read_split_csv(run / "split.csv", "test")[:16]
    a = predict_records(load_model(run, "cpu"), recs, batch_size=8, device="cpu", workers=0)
    b = predict_records(load_model(folder, "cpu"), recs, batch_size=8, device="cpu", workers=0)
    np.testing.assert_allclose(b.pred_age, a.pred_age, atol=0.05)  # fp16 weights: ages within 0.05 years
    assert (folder / "model.safetensors").stat().st_size < (run / "best.pt").stat().st_size


def test_manifest_lists_every_file_with_its_checksum(zoo) -> None:
    root, _ = zoo
    (model,) = zoo_models(root)
    assert model.name == "tiny" and model.license == "test-only" and model.metrics == {"test_mae": 1.0}
    assert {"model.safetensors", "config.yaml", "summary.json"} <= set(model.files)
    assert verify(model) == root / "tiny"


def test_a_damaged_file_is_refused_with_the_reinstall_command(zoo, tmp_path: Path) -> None:
    import shutil

    root, _ = zoo
    copy = tmp_path / "zoo"
    shutil.copytree(root, copy)
    weights = copy / "tiny" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(UsageError, match=r"checksum does not match.*pip install --force-reinstall"):
        resolve_model("tiny", root=copy)
    (copy / "tiny" / "config.yaml").unlink()
    with pytest.raises(UsageError, match="config.yaml: missing"):
        verify(zoo_model("tiny", copy))


def test_resolve_paths_names_and_the_default(zoo, tmp_path: Path) -> None:
    root, run = zoo
    assert resolve_model(str(run), root=root).path == run and resolve_model(str(run), root=root).zoo is None
    named = resolve_model("tiny", root=root)
    assert named.path == root / "tiny" and named.zoo is not None and not named.defaulted
    with pytest.raises(UsageError, match=r"'nope'.*shipped: tiny.*ordinalage models"):
        resolve_model("nope", root=root)
    with pytest.raises(UsageError, match="no such run folder or checkpoint"):
        resolve_model(str(tmp_path / "missing" / "best.pt"), root=root)
    with pytest.raises(UsageError, match="utkface-small.*shipped: tiny"):
        resolve_model(None, root=root)  # this zoo has no default model


def test_a_foreign_safetensors_file_is_refused(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from ordinalage.runs.checkpoint import load_checkpoint

    path = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(UsageError, match="without ordinalage's metadata"):
        load_checkpoint(path)
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(UsageError, match="not a readable safetensors file"):
        load_checkpoint(path)


def test_the_shipped_manifest_verifies() -> None:
    """Every shipped model's files match the manifest, and the weights stay within the 5 MB budget."""
    models = zoo_models(ZOO_DIR)
    if not models:
        pytest.skip("no model shipped in this checkout")
    for model in models:
        verify(model)
        total = sum((model.path / name).stat().st_size for name in model.files)
        assert total <= 5 * 2**20, f"{model.name}: {total} bytes"
    doc = json.loads((ZOO_DIR / "manifest.json").read_text())
    assert set(doc["models"]) == {m.name for m in models}
