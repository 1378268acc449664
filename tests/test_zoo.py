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
    from ordinalage.zoo.package import portable_config

    assert shipped["config"] == portable_config(original["config"]) and shipped["groups"] == original["groups"]
    weights = {k: v for k, v in shipped["model"].items() if v.is_floating_point()}
    assert all(v.dtype == torch.float32 for v in weights.values())  # read back as fp32
    recs = read_split_csv(run / "split.csv", "test")[:16]
    a = predict_records(load_model(run, "cpu"), recs, batch_size=8, device="cpu", workers=0)
    b = predict_records(load_model(folder, "cpu"), recs, batch_size=8, device="cpu", workers=0)
    np.testing.assert_allclose(b.pred_age, a.pred_age, atol=0.05)  # fp16 weights: ages within 0.05 years
    assert (folder / "model.safetensors").stat().st_size < (run / "best.pt").stat().st_size


def test_checkpoint_config_reads_the_config_without_the_weights(zoo, tmp_path: Path) -> None:
    from ordinalage.runs.checkpoint import checkpoint_config, load_checkpoint

    root, run = zoo
    from ordinalage.zoo.package import portable_config

    config = load_checkpoint(run)["config"]
    assert checkpoint_config(run / "best.pt") == config
    assert checkpoint_config(root / "tiny" / "model.safetensors") == portable_config(config)
    legacy = tmp_path / "legacy.pt"  # torch's pre-zip format cannot be memory-mapped; it is read whole
    torch.save(load_checkpoint(run), legacy, _use_new_zipfile_serialization=False)
    assert checkpoint_config(legacy) == config
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UsageError, match="junk.pt: not an ordinalage checkpoint"):
        checkpoint_config(tmp_path / "junk.pt")


def test_a_packaged_model_carries_no_path_of_the_machine_it_was_trained_on(zoo) -> None:
    from ordinalage.runs.weights_file import read_weights_metadata

    root, run = zoo
    folder = root / "tiny"
    texts = {p.name: p.read_text(encoding="utf-8") for p in folder.iterdir() if p.suffix in (".yaml", ".json", ".md")}
    texts["model.safetensors"] = json.dumps(read_weights_metadata(folder / "model.safetensors"))
    leaked = [name for name, text in texts.items() if str(run) in text or str(run.resolve()) in text]
    assert not leaked, f"{leaked} name the training run's folder {run}"
    assert read_weights_metadata(folder / "model.safetensors")["config"]["train"]["out_dir"] is None


def test_portable_text_writes_the_run_folder_relative_to_the_working_directory(tmp_path: Path, monkeypatch) -> None:
    from ordinalage.zoo.package import portable_text

    run = tmp_path / "runs" / "student"
    run.mkdir(parents=True)
    text = f"evaluated in {run.resolve()}/eval-test; checkpoint `{run.resolve()}/best.pt`"
    monkeypatch.chdir(tmp_path)
    assert portable_text(text, run) == "evaluated in runs/student/eval-test; checkpoint `runs/student/best.pt`"
    elsewhere = tmp_path.parent / "other"  # the run outside the working directory: its name only
    elsewhere.mkdir(exist_ok=True)
    monkeypatch.chdir(elsewhere)
    assert portable_text(text, run) == "evaluated in student/eval-test; checkpoint `student/best.pt`"


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
    missing = tmp_path / "missing" / "best.pt"
    assert resolve_model(str(missing), root=root).path == missing  # a path: the loader reports it
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


def test_the_shipped_card_carries_the_shipped_name() -> None:
    import yaml

    from ordinalage.zoo.package import renamed_card

    card = ("---\nlicense: other\nmodel-index:\n- name: student\n  results: []\n---\n\n"
            "# Model card: student\n\nAn age estimator.\n")
    out = renamed_card(card, "utkface-small")
    meta = yaml.safe_load(out[4:].partition("\n---\n")[0])
    assert meta["model-index"][0]["name"] == "utkface-small" and meta["license"] == "other"
    assert "# Model card: utkface-small\n\nAn age estimator.\n" in out and "student" not in out


@pytest.fixture(scope="module")
def default_zoo(tiny_run, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A zoo whose `utkface-small` is a packaged tiny run (trained on synthetic faces)."""
    root = tmp_path_factory.mktemp("default-zoo")
    package_model(tiny_run("class"), "utkface-small", description="tiny", license="non-commercial research only",
                  data="synthetic faces", metrics={"test_mae": 9.9, "split": "test"}, root=root)
    return root


def _faces(run: Path, n: int) -> list[str]:
    from ordinalage.runs.rundir import read_split_csv

    return [str(r.path) for r in read_split_csv(run / "split.csv", "test")[:n]]


def test_models_lists_the_zoo_as_one_json_object(default_zoo, monkeypatch, capsys) -> None:
    from ordinalage.cli import main
    from ordinalage.zoo import catalog

    monkeypatch.setattr(catalog, "ZOO_DIR", default_zoo)
    assert main(["models", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["results"]
    assert row["name"] == "utkface-small" and row["default"] and row["metrics"]["test_mae"] == 9.9
    assert row["license"] == "non-commercial research only"
    assert main(["models"]) == 0
    assert "utkface-small (default)" in capsys.readouterr().out


def test_predict_without_a_model_uses_the_shipped_one_and_says_so(default_zoo, tiny_run, monkeypatch,
                                                                  capsys) -> None:
    from ordinalage.cli import main
    from ordinalage.zoo import catalog

    monkeypatch.setattr(catalog, "ZOO_DIR", default_zoo)
    run = tiny_run("class")
    faces = _faces(run, 2)
    assert main(["predict", *faces, "--detector", "none", "--device", "cpu", "--json"]) == 0
    captured = capsys.readouterr()
    assert len(json.loads(captured.out)["results"]) == 2
    assert "model: utkface-small (shipped; synthetic faces; licence: non-commercial research only)" in captured.err
    # the older form: a run folder first is the model, and a synthetic-only model is flagged
    assert main(["predict", str(run), *faces, "--detector", "none", "--device", "cpu", "--json"]) == 0
    captured = capsys.readouterr()
    assert len(json.loads(captured.out)["results"]) == 2 and "trained on synthetic faces only" in captured.err
    assert main(["predict", "--model", "utkface-small", faces[0], "--detector", "none", "--device", "cpu",
                 "--json"]) == 0
    assert "licence:" not in capsys.readouterr().err  # asked for by name: no default-model notice


def test_an_unknown_model_name_lists_the_known_ones(default_zoo, tiny_run, monkeypatch, capsys) -> None:
    from ordinalage.cli import main
    from ordinalage.zoo import catalog

    monkeypatch.setattr(catalog, "ZOO_DIR", default_zoo)
    faces = _faces(tiny_run("class"), 1)
    assert main(["predict", "--model", "utkface-large", *faces]) == 2
    err = capsys.readouterr().err
    assert "--model" in err and "'utkface-large'" in err and "shipped: utkface-small" in err
    assert main(["export", "--format", "onnx", "--out", "x.onnx"]) == 2
    assert "name the model to export" in capsys.readouterr().err


def test_the_python_api_loads_the_shipped_model_by_default(default_zoo, tiny_run, monkeypatch) -> None:
    import ordinalage
    from ordinalage.zoo import catalog

    monkeypatch.setattr(catalog, "ZOO_DIR", default_zoo)
    est = ordinalage.load(device="cpu")
    (face,) = est.predict(_faces(tiny_run("class"), 1)[0], detect=False)
    assert 0 <= face.age <= 100


def test_evaluate_and_prior_estimate_take_a_shipped_model_by_name(default_zoo, tiny_run, monkeypatch, tmp_path: Path,
                                                                  capsys) -> None:
    """`evaluate utkface-small --data ...` measures the shipped model on named faces and writes beside the working
    directory, never into the installed package; without data it says how to name them."""
    from ordinalage.cli import main
    from ordinalage.runs.rundir import read_split_csv
    from ordinalage.zoo import catalog

    monkeypatch.setattr(catalog, "ZOO_DIR", default_zoo)
    monkeypatch.chdir(tmp_path)
    rows = read_split_csv(tiny_run("class") / "split.csv", "test")[:12]
    faces = tmp_path / "faces.csv"
    faces.write_text("path,age\n" + "".join(f"{r.path},{r.age}\n" for r in rows), encoding="utf-8")
    before = sorted(p.name for p in (default_zoo / "utkface-small").iterdir())
    assert main(["evaluate", "utkface-small", "--data", f"csv:{faces}", "--split", "all", "--device", "cpu",
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 12 and Path(result["out"]).resolve().parent == tmp_path.resolve()
    assert (tmp_path / result["out"] / "metrics.json").is_file()
    assert sorted(p.name for p in (default_zoo / "utkface-small").iterdir()) == before
    verify(zoo_model("utkface-small", default_zoo))  # the shipped files are untouched
    assert main(["evaluate", "utkface-small"]) == 2
    assert "--data" in capsys.readouterr().err
    assert main(["evaluate", "utkface-small", "--data", f"csv:{faces}", "--split", "all", "--interval", "0.9"]) == 2
    assert "validation split" in capsys.readouterr().err
    assert main(["evaluate", "utkface-smal", "--data", f"csv:{faces}"]) == 2
    assert "shipped: utkface-small" in capsys.readouterr().err
    assert main(["prior", "estimate", "utkface-small", "--data", f"csv:{faces}", "--out", "mix.json",
                 "--device", "cpu", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n_images"] == 12 and (tmp_path / "mix.json").is_file()
    assert main(["prior", "estimate", "utkface-small", "--out", "mix.json"]) == 2
    assert "--data" in capsys.readouterr().err
