"""The worked example of docs/examples/plugin_head (the `poisson` head of package ordinalage-poisson),
installed as its pyproject.toml declares it (a dist-info folder on sys.path, tests/plugin_dists.py):
a fresh `ordinalage heads` finds it; `--head poisson` trains, evaluates with `--prior em` and
`--interval`, exports to ONNX and TorchScript, serves, teaches a distilled student and runs in a
two-method bake-off, on tiny synthetic faces; docs/extending.md shows the example's code as it is."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from plugin_dists import EXAMPLE, install_example, plugin_site

import ordinalage
from ordinalage.cli import main
from ordinalage.config import ModelConfig
from ordinalage.groups import AgeGroups
from ordinalage.inference.serve import create_app

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    with plugin_site(tmp_path / "site", monkeypatch) as root:
        yield install_example(root)


def _sets(cache_dir: str) -> list[str]:
    """A width-8 scratch CNN on 160 synthetic 32 px faces (about a second per epoch)."""
    sets = [f"data.cache_dir={cache_dir}", "data.synth_n=160", "data.synth_size=48", "data.image_size=32",
            "data.num_workers=0", "model.width=8", "train.batch_size=32", "train.device=cpu"]
    return [arg for item in sets for arg in ("--set", item)]


def test_a_fresh_process_finds_the_installed_example(site: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-m", "ordinalage", "heads", "--json"], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    (row,) = [r for r in json.loads(done.stdout)["results"] if r["name"] == "poisson"]
    assert row == {"name": "poisson", "kind": "head", "source": "plugin ordinalage-poisson 0.1.0 "
                   "(ordinalage_poisson:PoissonHead)", "status": "ok",
                   "title": "unimodal: a Poisson distribution over the years with a learnt temperature"}


def test_the_example_head_gives_a_distribution_and_learns() -> None:

    from plugin_dists import EXAMPLE


    spec = importlib.util.spec_from_file_location("poisson_example", EXAMPLE / "ordinalage_poisson.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    torch.manual_seed(0)
    head = module.PoissonHead(ModelConfig(head="class", max_age=80), 4, AgeGroups.parse("0-20,21-40,41-80"))
    features, age = torch.randn(64, 4), torch.rand(64) * 80
    before = head.decode(head(torch.zeros(2, 4)))
    assert torch.allclose(before.label_proba.sum(1), torch.ones(2)) and before.label_proba.shape == (2, 81)
    optimizer = torch.optim.Adam(head.parameters(), 0.05)
    losses = []
    for _ in range(60):
        loss = head.loss(head(features), age, head.group_of_age(age))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert loss.dtype == torch.float32 and loss.ndim == 0 and losses[-1] < losses[0]
    decoded = head.decode(head(features))
    proba = decoded.label_proba
    assert (proba >= 0).all() and torch.allclose(proba.sum(1), torch.ones(64), atol=1e-5)
    mode = proba.argmax(1, keepdim=True)  # unimodal: non-decreasing up to the mode, non-increasing after
    steps = proba.diff(dim=1)
    below = torch.arange(80)[None] < mode
    assert (steps[below] >= -1e-6).all() and (steps[~below] <= 1e-6).all()
    np.testing.assert_allclose(decoded.age.numpy(), (proba @ torch.arange(81.0)).numpy(), rtol=1e-5)  # mean


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning", "ignore:ONNX Preprocess:UserWarning")
def test_the_example_trains_evaluates_exports_and_joins_a_bakeoff(site: Path, tmp_path: Path, synth_cache_dir: str,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert main(["train", "--head", "poisson", "--epochs", "1", "--out", str(run), *_sets(synth_cache_dir)]) == 0
    assert "head: poisson" in (run / "config.yaml").read_text() and (run / "best.pt").is_file()
    capsys.readouterr()
    assert main(["evaluate", str(run), "--prior", "em", "--interval", "0.9", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["prior"]["mode"] == "em" and 0 <= result["interval"]["coverage"] <= 1 and result["mae"] >= 0

    pytest.importorskip("onnxruntime")
    for fmt, suffix in (("onnx", "onnx"), ("torchscript", "pt")):
        assert main(["export", str(run), "--format", fmt, "--out", str(tmp_path / f"m.{suffix}"), "--json"]) == 0
        exported = json.loads(capsys.readouterr().out)
        assert exported["ok"] and (tmp_path / f"m.{suffix}").is_file(), exported

    with TestClient(create_app([ordinalage.load(run, device="cpu")])) as client:
        assert client.get("/model").json()["head"] == "poisson"
        assert "Poisson distribution over the years" in client.get("/model/card").text  # the head's title
        face = np.random.default_rng(0).integers(0, 256, (48, 48, 3), dtype=np.uint8)
        jpeg = cv2.imencode(".jpg", face)[1].tobytes()
        answer = client.post("/predict", files={"file": ("x", jpeg, "image/jpeg")}, params={"detect": "false"})
        assert answer.status_code == 200 and len(answer.json()["faces"]) == 1, answer.text

    assert main(["distill", str(run), "--epochs", "1", "--out", str(tmp_path / "student")]) == 0  # a poisson teacher
    assert "head: class" in (tmp_path / "student" / "config.yaml").read_text()

    out = tmp_path / "bakeoff"
    assert main(["bakeoff", "--grid", "model.head=class,poisson", "--seeds", "1", "--data", "synth", "--epochs", "1",
                 "--out", str(out), "--json", *_sets(synth_cache_dir)]) == 0
    bakeoff = json.loads(capsys.readouterr().out)
    assert bakeoff["missing"] == [] and sorted(c["method"] for c in bakeoff["cells"]) == ["class", "poisson"]
    assert all(c["status"] == "done" for c in bakeoff["cells"])
    assert [(p["a"], p["b"]) for p in bakeoff["pairs"]] == [("class", "poisson")]


def test_the_guide_shows_the_example_head_as_it_is() -> None:
    """docs/extending.md's Python block is the example module without its docstring and future import."""
    guide = (EXAMPLE.parents[1] / "extending.md").read_text(encoding="utf-8")
    (block,) = [b.split("\n", 1)[1] for b in guide.split("```")[1::2] if b.startswith("python\n")]
    module = (EXAMPLE / "ordinalage_poisson.py").read_text(encoding="utf-8")
    assert block.strip() == module.split("from __future__ import annotations\n", 1)[1].strip()
