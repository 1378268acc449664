"""Checkpoints: one plain dict, written atomically, read with `torch.load(weights_only=True)`.

Nothing is ever unpickled as code: a checkpoint handed to a user holds tensors, numbers, strings,
lists and dicts only, and the model is rebuilt from the config stored inside it.
"""

from __future__ import annotations

import platform
import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from ordinalage.config import Config, config_from_dict
from ordinalage.errors import UsageError
from ordinalage.groups import AgeGroups
from ordinalage.runs.weights_file import FORMAT  # one marker for .pt and .safetensors files
from ordinalage.version import __version__

VERSION = 1


def versions() -> dict[str, str]:
    """Package versions recorded in every checkpoint and benchmark."""
    import numpy

    out = {"ordinalage": __version__, "torch": str(torch.__version__), "numpy": str(numpy.__version__),
           "python": platform.python_version()}
    try:
        import torchvision

        out["torchvision"] = str(torchvision.__version__)
    except ImportError:  # pragma: no cover
        pass
    return out


def rng_state() -> dict[str, Any]:
    """The global random states (python, numpy, torch CPU and CUDA) as plain lists and tensors, so a
    checkpoint that holds them still loads with `weights_only=True` (`restore_rng_state` undoes it)."""
    import numpy as np

    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {"python": [version, list(internal), gauss],
                             "numpy": [str(kind), torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos),
                                       int(has_gauss), float(cached)],
                             "torch": torch.get_rng_state(), "cuda": None}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Set the global random states saved by `rng_state`."""
    import numpy as np

    version, internal, gauss = state["python"]
    random.setstate((int(version), tuple(int(v) for v in internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over `path`."""
    from ordinalage.atomic import atomic_write

    atomic_write(path, lambda fh: torch.save(obj, fh), binary=True)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read an ordinalage checkpoint safely; anything else is a UsageError naming the file."""
    from ordinalage.runs.rundir import resolve_checkpoint

    path = resolve_checkpoint(path)
    if path.suffix == ".safetensors":
        from ordinalage.runs.weights_file import read_weights

        ckpt = read_weights(path)
        ckpt["path"] = str(path)
        return ckpt
    return _read_pt(path)


def checkpoint_config(path: str | Path) -> dict[str, Any]:
    """A checkpoint's config as stored (a dict), without reading its weights: a safetensors file's
    header, or a .pt file memory-mapped (its tensors are never loaded)."""
    from ordinalage.runs.rundir import resolve_checkpoint

    path = resolve_checkpoint(path)
    if path.suffix == ".safetensors":
        from ordinalage.runs.weights_file import read_weights_metadata

        return dict(read_weights_metadata(path).get("config") or {})
    try:
        ckpt = _read_pt(path, mmap=True)
    except UsageError:  # a file in torch's legacy (non-zip) format cannot be memory-mapped
        ckpt = _read_pt(path)
    return dict(ckpt.get("config") or {})


def _read_pt(path: Path, mmap: bool = False) -> dict[str, Any]:
    """A .pt checkpoint read with weights_only (memory-mapped when `mmap`); a UsageError names the file."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # noqa: BLE001 - any failure means "not one of ours"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise UsageError(f"{path}: not an ordinalage checkpoint (cannot be read safely: "
                         f"{type(exc).__name__}{': ' + first[:200] if first else ''})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise UsageError(f"{path}: not an ordinalage checkpoint (no '{FORMAT}' marker)")
    if int(ckpt.get("version", 0)) > VERSION:
        raise UsageError(f"{path}: checkpoint version {ckpt.get('version')} is newer than this ordinalage reads ({VERSION})")
    ckpt["path"] = str(path)
    return ckpt


@dataclass
class LoadedModel:
    """A model rebuilt from a checkpoint, ready for inference."""

    model: torch.nn.Module
    config: Config
    groups: AgeGroups
    input_spec: Any  # ordinalage.models.input_spec.InputSpec
    reference: dict[str, Any]
    checkpoint_path: Path
    run_dir: Path | None
    epoch: int
    train_prior: Any = None  # np.ndarray (L,): the head's effective training label distribution, when stored

    @property
    def label_ages(self) -> Any:
        """The age of each of the head's labels: years 0..max_age, or group midpoints for target group."""
        import numpy as np

        if self.config.model.target == "group":
            return self.groups.midpoints()
        return np.arange(self.config.model.max_age + 1, dtype=float)

    @property
    def head_traits(self) -> Any:
        """The head's traits (`models.heads.HeadTraits`: title, output, default decoder, ...), torch-free,
        for the layers that may not look at the model (posterior, reporting)."""
        from ordinalage.models.heads import head_traits

        return head_traits(self.config.model.head)

    @property
    def decoder(self) -> str:
        """The age decoder (mean | median | mode) of the model's `model.decode`, `auto` resolved by its head."""
        return str(self.head_traits.decoder(self.config.model.decode))


def resolve_input_spec(config: Config, backbone: Any) -> Any:
    """The backbone's InputSpec, with the side overridden by `data.image_size` when set."""
    spec = backbone.input_spec
    return replace(spec, size=config.data.image_size) if config.data.image_size else spec


def load_model(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild the model of a run folder or checkpoint file (best.pt preferred) on `device`."""
    from ordinalage.models.model import build_model

    ckpt = load_checkpoint(path)
    config = config_from_dict(ckpt["config"])
    groups = AgeGroups.parse(ckpt["groups"])
    # The weights come from the checkpoint: do not read the original pretrained file again.
    model_cfg = replace(config.model, weights=None)
    model = build_model(model_cfg, groups)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise UsageError(f"{ckpt['path']}: weights do not fit the model in its config ({str(exc)[:300]})") from None
    model.to(device).eval()
    ckpt_path = Path(ckpt["path"])
    run_dir = ckpt_path.parent if (ckpt_path.parent / "config.yaml").is_file() else None
    return LoadedModel(model=model, config=config, groups=groups, input_spec=resolve_input_spec(config, model.backbone),
                       reference=dict(ckpt.get("reference") or {}), checkpoint_path=ckpt_path, run_dir=run_dir,
                       epoch=int(ckpt.get("epoch", -1)),
                       train_prior=_array(ckpt.get("train_prior")))


def _array(values: Any) -> Any:
    import numpy as np

    return None if values is None else np.asarray(values, dtype=float)
