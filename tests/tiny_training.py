"""Tiny training configs for option tests: a width-8 scratch CNN on 160 synthetic 32 px faces
(with the `synth_cache_dir` and `one_thread` fixtures of conftest.py)."""

from __future__ import annotations

from pathlib import Path

from ordinalage.config import Config, load_config


def tiny(cache_dir: str, out: Path, *sets: str) -> Config:
    """A width-8 scratch CNN on 160 synthetic 32 px faces: about a second per epoch on one core."""
    base = [f"data.cache_dir={cache_dir}", "data.synth_n=160", "data.synth_size=48", "data.image_size=32",
            "data.num_workers=0", "model.width=8", "train.batch_size=32", "train.device=cpu",
            "train.eval_on_end=false", f"train.out_dir={out}"]
    return load_config(sets=base + list(sets))
