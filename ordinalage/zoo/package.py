"""Put a trained run into the zoo: weights as fp16 safetensors, the files inference reads, a manifest entry.

Used by benchmarks/zoo_utkface_small.py; the same function packages a user's own run
(`package_model(run, "my-model", root=...)`) into a folder that `--model` loads.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from ordinalage.atomic import atomic_write_text
from ordinalage.errors import UsageError
from ordinalage.zoo.catalog import MANIFEST, ZOO_DIR, ZooModel, sha256, zoo_model

# run-folder files inference reads beside the weights (copied when the run has them)
SIDE_FILES = ("config.yaml", "calibration.json", "face_crop.json", "train_prior.json")
SUMMARY_KEYS = ("test", "best_value", "epochs_done", "budget", "n_test", "finished")


def _summary_subset(run_dir: Path) -> dict[str, Any]:
    """The summary's results, with the run folder's own paths made relative to it."""
    from ordinalage.runs.rundir import RunDir

    summary = RunDir(run_dir).read_summary(tolerant=True)
    subset = {k: summary[k] for k in SUMMARY_KEYS if k in summary}
    if isinstance(subset.get("test"), dict):
        subset["test"] = {k: _relative(v, run_dir) for k, v in subset["test"].items()}
    return subset


def _relative(value: Any, run_dir: Path) -> Any:
    """A path inside `run_dir` as a path relative to it; anything else unchanged."""
    if not isinstance(value, str) or not value:
        return value
    try:
        return str(Path(value).resolve().relative_to(run_dir.resolve()))
    except (ValueError, OSError):
        return value


def portable_text(text: str, run_dir: Path) -> str:
    """`text` with the run folder's absolute path written relative to the working directory (the
    repository a model is built in), or as the folder's name when it lies elsewhere."""
    import os

    absolute = run_dir.resolve()
    try:
        shown = os.path.relpath(absolute, Path.cwd()) if absolute.is_relative_to(Path.cwd().resolve()) else run_dir.name
    except ValueError:  # another drive (Windows)
        shown = run_dir.name
    return text.replace(str(absolute), shown)


def portable_config(raw: dict[str, Any]) -> dict[str, Any]:
    """A run's config without the paths of the machine it was trained on: no output folder, and the
    teacher (of a distilled run) by its folder's name only."""
    train = dict(raw.get("train") or {})
    train["out_dir"] = None
    if train.get("distill_from"):
        train["distill_from"] = Path(str(train["distill_from"])).name
    return {**raw, "train": train}


def renamed_card(card: str, name: str) -> str:
    """The card with the shipped name in its title and in its metadata's model-index."""
    import re

    import yaml

    from ordinalage.reporting.hub_metadata import front_matter, strip_front_matter

    body = re.sub(r"^# Model card: .*$", f"# Model card: {name}", strip_front_matter(card), count=1, flags=re.M)
    if not card.startswith("---\n"):
        return body
    meta = yaml.safe_load(card[4:].partition("\n---\n")[0])
    for entry in meta.get("model-index") or []:
        entry["name"] = name
    return front_matter(meta) + body


def package_model(run_dir: str | Path, name: str, *, description: str, license: str, data: str,
                  metrics: dict[str, Any], card: str | Path | None = None, root: Path = ZOO_DIR) -> ZooModel:
    """Write `root/name/` from `run_dir` (its best.pt as fp16 safetensors, config, calibration, crop
    ratios, a summary subset, the card) and list it in `root/manifest.json` with each file's sha256."""
    from ordinalage.config import config_from_dict, load_config, save_config, to_dict
    from ordinalage.runs.checkpoint import load_checkpoint
    from ordinalage.runs.weights_file import WEIGHTS_FILE, save_weights

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise UsageError(f"{run_dir}: not a run folder (no config.yaml); only one network's run is packaged")
    out = root / name
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    ckpt = load_checkpoint(run_dir)
    ckpt["config"] = portable_config(ckpt["config"])
    save_weights(ckpt, out / WEIGHTS_FILE)
    for side in SIDE_FILES:
        if (run_dir / side).is_file():
            shutil.copy2(run_dir / side, out / side)
    save_config(config_from_dict(portable_config(to_dict(load_config(run_dir / "config.yaml")))), out / "config.yaml")
    atomic_write_text(out / "summary.json", json.dumps(_summary_subset(run_dir), indent=2) + "\n")
    if card is not None:
        text = renamed_card(Path(card).read_text(encoding="utf-8"), name)
        atomic_write_text(out / "MODEL_CARD.md", portable_text(text, run_dir))
    for path in out.iterdir():
        path.chmod(0o644)  # package data: readable by every user of an installed package
    files = {p.name: sha256(p) for p in sorted(out.iterdir()) if p.is_file()}
    manifest_path = root / MANIFEST
    doc = json.loads(manifest_path.read_text(encoding="utf-8")) if manifest_path.is_file() else {"models": {}}
    doc["models"][name] = {"description": description, "license": license, "data": data,
                           "metrics": metrics, "files": files}
    atomic_write_text(manifest_path, json.dumps(doc, indent=2) + "\n")
    manifest_path.chmod(0o644)
    return zoo_model(name, root)


__all__ = ["SIDE_FILES", "package_model", "portable_config", "portable_text"]
