"""Shared fixtures: tiny trained runs on the synthetic set, made once per session and per head."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from fakes_data import UTKFACE, UTKFACE_MISSING

TINY_SETS = [
    "data.synth_n=200",
    "data.synth_size=48",
    "data.image_size=48",
    "data.num_workers=0",
    "train.epochs=1",
    "train.batch_size=32",
    "train.device=cpu",
    "train.eval_on_end=false",
    "model.width=8",
]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Factory `tiny_run(head="coral", *extra_sets) -> run folder`: one epoch of a width-8 scratch
    CNN on 200 synthetic 48 px faces (a few seconds on a CPU), cached per (head, extra_sets)."""
    cache = tmp_path_factory.mktemp("synth-cache")
    runs: dict[tuple[str, ...], Path] = {}

    def make(head: str = "coral", *extra_sets: str) -> Path:
        key = (head, *extra_sets)
        if key not in runs:
            import torch

            from ordinalage.config import load_config
            from ordinalage.training.fit import fit

            out = tmp_path_factory.mktemp(f"run-{head}")
            sets = [*TINY_SETS, f"model.head={head}", f"data.cache_dir={cache}", f"train.out_dir={out}", *extra_sets]
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                runs[key] = fit(load_config(sets=sets), quiet=True)
            finally:
                torch.set_num_threads(threads)
        return runs[key]

    return make


@pytest.fixture(scope="session")
def utkface_dir() -> Path:
    """The real UTKFace sample (../shared/data/UTKFace from the repo root); skips, saying so, when absent."""
    if not UTKFACE.is_dir():
        pytest.skip(UTKFACE_MISSING)
    return UTKFACE


@pytest.fixture(scope="session")
def utkface_or_none() -> Path | None:
    """The real UTKFace folder when present, else None (tests then use a synthetic face)."""
    return UTKFACE if UTKFACE.is_dir() else None


@pytest.fixture(scope="module")
def synth_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A cache folder for one test module's synthetic faces (see tiny_training.tiny)."""
    return str(tmp_path_factory.mktemp("synth-cache"))


@pytest.fixture
def one_thread() -> Iterator[None]:
    """torch on one thread for the test (opt in with pytestmark = pytest.mark.usefixtures("one_thread"))."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
