"""Which model an inference command uses: `--model NAME|RUN|CHECKPOINT`, a leading positional that is
a run folder or checkpoint (the older `predict RUN IMAGE...`), or the shipped default; and the
notices a user should read before trusting the ages (the default model's licence, a model trained
on synthetic faces only, the face detector `auto` fell back to)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ordinalage.errors import UsageError
from ordinalage.zoo import ResolvedModel, resolve_model

SYNTHETIC_WARNING = ("{model}: trained on synthetic faces only (`make demo`'s data): its ages are meaningless "
                     "on real photos; train on real faces (README, quickstart) or leave the model out to use the "
                     "shipped utkface-small")
MODEL_FILES = (".pt", ".safetensors")


def looks_like_model(path: str | Path) -> bool:
    """A run folder (its config.yaml, checkpoints or ensemble members) or a checkpoint/weights file."""
    path = Path(path)
    if path.is_file():
        return path.suffix in MODEL_FILES
    if not path.is_dir():
        return False
    return any((path / name).is_file() for name in ("config.yaml", "best.pt", "last.pt", "model.safetensors")) \
        or any(path.glob("member-*/config.yaml"))


def split_model(model: str | None, positionals: Sequence[str]) -> tuple[str | None, list[str]]:
    """(the model, the inputs): `--model` when given; else a first positional that is a run folder or a
    checkpoint (followed by inputs); else None (the shipped default) and every positional an input."""
    rest = list(positionals)
    if model is None and len(rest) > 1 and looks_like_model(rest[0]):
        return rest[0], rest[1:]
    return model, rest


def trained_on_synthetic(model: ResolvedModel) -> bool:
    """True when the model's training data was synthetic faces only (read from its config)."""
    from ordinalage.config import load_config
    from ordinalage.data.sources import synthetic_only

    path = model.path
    folder = path if path.is_dir() else path.parent
    member = next(iter(sorted(folder.glob("member-*/config.yaml"))), None)
    config_file = folder / "config.yaml" if (folder / "config.yaml").is_file() else member
    if config_file is not None:
        try:
            return synthetic_only(load_config(config_file).data.sources)
        except UsageError:
            return False
    from ordinalage.runs.checkpoint import checkpoint_config

    return synthetic_only((checkpoint_config(path).get("data") or {}).get("sources") or [])


def model_notices(model: ResolvedModel, detector: str | None = None) -> list[str]:
    """The lines to say once on stderr before predicting with `model`."""
    from ordinalage.inference.detection.registry import auto_notice

    notices = []
    if model.defaulted and model.zoo is not None:
        notices.append(f"{model.zoo.notice}; give --model to use another")
    elif trained_on_synthetic(model):
        notices.append(SYNTHETIC_WARNING.format(model=model.path))
    if detector is not None and (line := auto_notice(detector)):
        notices.append(line)
    return notices


__all__ = ["SYNTHETIC_WARNING", "looks_like_model", "model_notices", "resolve_model", "split_model",
           "trained_on_synthetic"]
