"""The shipped models: their manifest, checksums, and how a `--model` argument becomes a model folder.

    ordinalage/zoo/models/manifest.json        {"models": {NAME: {description, license, data, metrics, files}}}
    ordinalage/zoo/models/NAME/                config.yaml, model.safetensors, MODEL_CARD.md, ...

`files` maps each file of a model's folder to its sha256; a file that does not match is refused
(a damaged or edited install), with the command that reinstalls the package.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from ordinalage.errors import UsageError

ZOO_DIR = Path(__file__).resolve().parent / "models"
MANIFEST = "manifest.json"
DEFAULT_MODEL = "utkface-small"
REINSTALL = "pip install --force-reinstall --no-deps ordinalage"


@dataclass(frozen=True)
class ZooModel:
    """One shipped model: its name, folder, licence and measured results."""

    name: str
    path: Path
    description: str
    license: str
    data: str
    metrics: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # file name -> sha256

    @property
    def notice(self) -> str:
        """The one line said when the model is used without being asked for."""
        return f"model: {self.name} (shipped; {self.data}; licence: {self.license})"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(root: Path | None = None) -> dict[str, Any]:
    """The manifest's models ({} when nothing is shipped); an unreadable manifest names the file."""
    path = (root or ZOO_DIR) / MANIFEST
    if not path.is_file():
        return {}
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        models = doc["models"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise UsageError(f"{path}: not a readable model manifest ({exc}); reinstall: {REINSTALL}") from None
    if not isinstance(models, dict):
        raise UsageError(f"{path}: 'models' must be an object; reinstall: {REINSTALL}")
    return models


def zoo_models(root: Path | None = None) -> list[ZooModel]:
    """Every shipped model, in the manifest's order."""
    root = root or ZOO_DIR
    return [ZooModel(name=name, path=root / name, description=str(entry.get("description", "")),
                     license=str(entry.get("license", "")), data=str(entry.get("data", "")),
                     metrics=dict(entry.get("metrics") or {}), files=dict(entry.get("files") or {}))
            for name, entry in read_manifest(root).items()]


def zoo_model(name: str, root: Path | None = None) -> ZooModel:
    """A shipped model by name; an unknown name lists the known ones."""
    models = {m.name: m for m in zoo_models(root)}
    if name not in models:
        known = ", ".join(models) or "none shipped"
        raise UsageError(f"model {name!r}: not a run folder, a checkpoint or a shipped model "
                         f"(shipped: {known}; `ordinalage models` lists them)", option="model")
    return models[name]


@lru_cache(maxsize=16)
def _verified(path: Path, size: int, mtime_ns: int, expected: str) -> bool:
    return sha256(path) == expected


def verify(model: ZooModel) -> Path:
    """The model's folder once every listed file matches its sha256; else a UsageError saying how to reinstall."""
    if not model.files:
        raise UsageError(f"{model.path}: the manifest lists no files for {model.name}; reinstall: {REINSTALL}")
    for name, expected in model.files.items():
        path = model.path / name
        if not path.is_file():
            raise UsageError(f"{path}: missing from the installed model {model.name}; reinstall: {REINSTALL}")
        stat = path.stat()
        if not _verified(path, stat.st_size, stat.st_mtime_ns, expected):
            raise UsageError(f"{path}: checksum does not match the manifest (a damaged or edited file); "
                             f"reinstall: {REINSTALL}")
    return model.path


@dataclass(frozen=True)
class ResolvedModel:
    """What a `--model` argument names: a folder or file to load, and the shipped model it is, if one."""

    path: Path
    zoo: ZooModel | None = None
    defaulted: bool = False  # no model was named: the default shipped model


def resolve_model(spec: str | Path | None, root: Path | None = None) -> ResolvedModel:
    """A run folder, checkpoint or weights file as given (a missing one is left to the loader's message);
    else a shipped model by name (verified); None: the default shipped model."""
    if spec is None:
        model = zoo_model(DEFAULT_MODEL, root)
        return ResolvedModel(verify(model), model, defaulted=True)
    path = Path(spec)
    if not path.exists() and isinstance(spec, str) and "/" not in spec and "\\" not in spec and not path.suffix:
        model = zoo_model(spec, root)
        return ResolvedModel(verify(model), model)
    return ResolvedModel(path)  # a path: the loader says what is wrong with it


__all__ = ["DEFAULT_MODEL", "REINSTALL", "ZOO_DIR", "ResolvedModel", "ZooModel", "read_manifest",
           "resolve_model", "sha256", "verify", "zoo_model", "zoo_models"]
