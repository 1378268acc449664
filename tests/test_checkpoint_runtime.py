"""Checkpoint helpers (atomic save, safe load, model rebuild) and runtime decisions (device,
precision, seeding), called directly rather than through `fit`."""

from __future__ import annotations

import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from ordinalage import atomic as rundir_mod
from ordinalage.config import Config, ModelConfig, to_dict
from ordinalage.errors import UsageError
from ordinalage.groups import AgeGroups
from ordinalage.models.model import build_model
from ordinalage.runs import checkpoint as ckpt_mod
from ordinalage.runs.checkpoint import FORMAT, VERSION, atomic_torch_save, load_checkpoint, load_model
from ordinalage.runs.runtime import fp16_supported, resolve_precision, seed_everything, select_device

GROUPS = AgeGroups.parse("0-20,21-40,41+")
CPU = torch.device("cpu")


class NotAllowed:
    """A custom class: `torch.load(weights_only=True)` must refuse to rebuild it."""

    def __init__(self) -> None:
        self.x = 1


def _tiny_checkpoint(head: str = "coral", epoch: int = 3) -> tuple[dict, torch.nn.Module]:
    cfg = Config(model=ModelConfig(head=head, width=8))
    torch.manual_seed(0)
    model = build_model(cfg.model, GROUPS)
    ck = {"format": FORMAT, "version": VERSION, "model": model.state_dict(), "epoch": epoch, "step": 7,
          "config": to_dict(cfg), "groups": GROUPS.labels, "reference": {"median_age": 31.0}}
    return ck, model


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --------------------------------------------------------------------------------------------- atomic save


def test_atomic_save_writes_the_file_and_nothing_else(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "last.pt"  # the folder is created
    atomic_torch_save({"a": torch.arange(3)}, target)
    assert _files(target.parent) == ["last.pt"]
    assert torch.equal(torch.load(target, weights_only=True)["a"], torch.arange(3))
    atomic_torch_save({"a": torch.arange(5)}, target)  # overwrite in place
    assert _files(target.parent) == ["last.pt"]
    assert torch.equal(torch.load(target, weights_only=True)["a"], torch.arange(5))


def test_atomic_save_failing_to_serialise_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "best.pt"
    atomic_torch_save({"old": torch.ones(2)}, target)
    before = target.read_bytes()
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        atomic_torch_save({"new": lambda: 0}, target)  # a lambda cannot be pickled
    assert _files(tmp_path) == ["best.pt"] and target.read_bytes() == before


def test_atomic_save_interrupted_midway_keeps_the_old_file(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "last.pt"
    atomic_torch_save({"old": torch.ones(2)}, target)
    before = target.read_bytes()

    def half_then_interrupt(obj, fh, *args, **kwargs):
        fh.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt_mod.torch, "save", half_then_interrupt)
    with pytest.raises(KeyboardInterrupt):  # BaseException too: Ctrl-C mid-save
        atomic_torch_save({"new": torch.zeros(2)}, target)
    assert _files(tmp_path) == ["last.pt"] and target.read_bytes() == before


def test_atomic_save_failing_rename_leaves_no_temp_file(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "last.pt"

    def no_rename(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(rundir_mod.os, "replace", no_rename)  # the one atomic writer (ordinalage/atomic.py)
    with pytest.raises(OSError, match="No space left"):
        atomic_torch_save({"a": 1}, target)
    assert _files(tmp_path) == []


# --------------------------------------------------------------------------------------------- load_checkpoint


def test_load_checkpoint_missing_file_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pt"
    with pytest.raises(UsageError) as info:
        load_checkpoint(missing)
    assert str(info.value) == f"checkpoint not found: {missing}"


@pytest.mark.parametrize("content", [b"", b"garbage, not a zip or a pickle", "truncated"])
def test_load_checkpoint_corrupt_file_names_it(tmp_path: Path, content) -> None:
    path = tmp_path / "broken.pt"
    if content == "truncated":
        ck, _ = _tiny_checkpoint()
        atomic_torch_save(ck, path)
        data = path.read_bytes()
        content = data[: len(data) // 2]
    path.write_bytes(content)
    with pytest.raises(UsageError) as info:
        load_checkpoint(path)
    assert str(info.value).startswith(f"{path}: not an ordinalage checkpoint (cannot be read safely: ")


def test_load_checkpoint_refuses_pickled_code(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "version": VERSION, "payload": NotAllowed()}, path)
    with pytest.raises(UsageError) as info:
        load_checkpoint(path)
    assert str(info.value).startswith(f"{path}: not an ordinalage checkpoint (cannot be read safely: ")
    assert "UnpicklingError" in str(info.value)


def test_load_checkpoint_wrong_marker_and_newer_version(tmp_path: Path) -> None:
    plain = tmp_path / "plain.pt"
    torch.save({"model": {}}, plain)
    with pytest.raises(UsageError) as info:
        load_checkpoint(plain)
    assert str(info.value) == f"{plain}: not an ordinalage checkpoint (no '{FORMAT}' marker)"
    newer = tmp_path / "newer.pt"
    torch.save({"format": FORMAT, "version": VERSION + 1}, newer)
    with pytest.raises(UsageError) as info:
        load_checkpoint(newer)
    assert str(info.value) == (f"{newer}: checkpoint version {VERSION + 1} is newer than this ordinalage "
                               f"reads ({VERSION})")


def test_load_checkpoint_from_a_folder_prefers_best(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as info:
        load_checkpoint(tmp_path)
    assert str(info.value) == f"{tmp_path}: no best.pt or last.pt in this folder (is it a run folder?)"
    ck, _ = _tiny_checkpoint()
    atomic_torch_save({**ck, "epoch": 5}, tmp_path / "last.pt")
    assert load_checkpoint(tmp_path)["path"] == str(tmp_path / "last.pt")
    atomic_torch_save({**ck, "epoch": 2}, tmp_path / "best.pt")
    got = load_checkpoint(tmp_path)
    assert got["path"] == str(tmp_path / "best.pt") and got["epoch"] == 2


# --------------------------------------------------------------------------------------------- load_model


@pytest.mark.parametrize("head", ["class", "coral", "corn", "regression"])
def test_load_model_round_trip(tmp_path: Path, head: str) -> None:
    ck, model = _tiny_checkpoint(head)
    path = tmp_path / "model.pt"  # a lone file: no config.yaml beside it
    atomic_torch_save(ck, path)
    loaded = load_model(path)
    assert loaded.checkpoint_path == path and loaded.run_dir is None and loaded.epoch == 3
    assert loaded.groups.labels == GROUPS.labels and loaded.config.model.head == head
    assert loaded.reference == {"median_age": 31.0} and not loaded.model.training
    got, want = loaded.model.state_dict(), model.state_dict()
    assert got.keys() == want.keys()
    for k in want:
        assert torch.equal(got[k], want[k]), k
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), model(x), rtol=0, atol=0)
    run = tmp_path / "run"  # a run folder: config.yaml beside best.pt
    atomic_torch_save(ck, run / "best.pt")
    (run / "config.yaml").write_text("")
    assert load_model(run).run_dir == run


def test_load_model_weights_that_do_not_fit_name_the_file(tmp_path: Path) -> None:
    ck, _ = _tiny_checkpoint("coral")
    ck["config"]["model"]["width"] = 16  # the config now builds a wider model than the weights
    path = tmp_path / "mismatch.pt"
    atomic_torch_save(ck, path)
    with pytest.raises(UsageError) as info:
        load_model(path)
    assert str(info.value).startswith(f"{path}: weights do not fit the model in its config (")


# --------------------------------------------------------------------------------------------- runtime


def test_select_device() -> None:
    assert select_device("cpu") == CPU
    assert select_device("auto") == (torch.device("cuda") if torch.cuda.is_available() else CPU)
    with pytest.raises(UsageError) as info:
        select_device("gpu0")
    assert str(info.value) == "train.device: unknown device 'gpu0'"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given when CUDA is absent")
@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_select_device_cuda_without_cuda(name: str) -> None:
    with pytest.raises(UsageError) as info:
        select_device(name)
    assert str(info.value) == f"train.device: {name!r} requested but CUDA is not available here"


def test_resolve_precision_table() -> None:
    cuda = torch.device("cuda")  # a device object needs no GPU
    table = {("auto", CPU): ("fp32", None, False), ("auto", cuda): ("bf16", torch.bfloat16, False),
             ("fp32", cuda): ("fp32", None, False), ("bf16", CPU): ("bf16", torch.bfloat16, False),
             ("fp16", cuda): ("fp16", torch.float16, True)}
    for (name, device), want in table.items():
        p = resolve_precision(name, device)
        assert (p.name, p.dtype, p.use_scaler) == want, (name, device)
    with pytest.raises(UsageError) as info:
        resolve_precision("fp8", CPU)
    assert str(info.value) == "train.precision: unknown value 'fp8' (auto, fp32, bf16, fp16)"


def test_fp16_on_cpu_follows_torch_support() -> None:
    if fp16_supported(CPU):
        p = resolve_precision("fp16", CPU)
        assert (p.name, p.dtype, p.use_scaler) == ("fp16", torch.float16, True)
    else:
        with pytest.raises(UsageError, match="train.precision: fp16 with a GradScaler is not supported on cpu"):
            resolve_precision("fp16", CPU)
    assert not fp16_supported(torch.device("meta"))


@pytest.mark.parametrize("name, dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_precision_autocast_on_cpu(name: str, dtype: torch.dtype) -> None:
    if name == "fp16" and not fp16_supported(CPU):
        pytest.skip(f"torch {torch.__version__} has no CPU fp16 autocast with a GradScaler")
    layer = torch.nn.Linear(4, 2)
    with resolve_precision(name, CPU).autocast(CPU):
        out = layer(torch.randn(3, 4))
    assert out.dtype == dtype


def test_seed_everything_reseeds_all_three_generators() -> None:
    def draw() -> tuple:
        return random.random(), float(np.random.rand()), float(torch.rand(1))

    seed_everything(123)
    a = draw()
    seed_everything(123)
    assert draw() == a
    seed_everything(124)
    b = draw()
    assert all(x != y for x, y in zip(a, b, strict=True))


def test_member_dirs_orders_members_by_number_and_model_cards_read_the_same(tmp_path: Path) -> None:
    from ordinalage.reporting.card import first_member
    from ordinalage.runs.rundir import member_dirs

    run = tmp_path / "ensemble"
    for i in (10, 2, 0, 1):
        (run / f"member-{i}").mkdir(parents=True)
        (run / f"member-{i}" / "config.yaml").write_text("model: {}\n")
    (run / "member-3").mkdir()  # no config.yaml: not a member
    assert member_dirs(run) == []  # the ensemble's own config.yaml is missing: not an ensemble folder
    assert first_member(run) == run
    (run / "config.yaml").write_text("train: {members: 4}\n")
    assert [p.name for p in member_dirs(run)] == ["member-0", "member-1", "member-2", "member-10"]
    assert first_member(run) == run / "member-0"
    (run / "summary.json").write_text('{"members": ["member-2", "member-0"]}')
    assert [p.name for p in member_dirs(run)] == ["member-2", "member-0"]  # summary.json's order wins
    assert first_member(run) == run / "member-2" and member_dirs(run / "member-2") == []
