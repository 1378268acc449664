"""What every backbone shares: the `Backbone` base class, the registry (`BACKBONES`,
`register_backbone`, `add_backbone`) and the traits each backbone declares when registered
(`BackboneInfo`, `BACKBONE_INFO`, `backbone_info`): its default input size, the pretrained weight
names it accepts, the model config keys it reads. The backbones themselves are in `backbones.py`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from ordinalage.config import ModelConfig
from ordinalage.errors import UsageError
from ordinalage.models.input_spec import InputSpec

TIMM_PREFIX = "timm:"
WEIGHT_NAMES = ("imagenet", "vggface")  # named weights (models/weights.py); anything else is a file


class Backbone(nn.Module):
    """Base class: `forward(x: (N,3,S,S)) -> (N, out_features)`."""

    out_features: int
    input_spec: InputSpec

    def group_matcher(self, coarse: bool = False) -> Callable[[str], Any]:
        """Parameter name -> layer ordinal (stem lowest): timm's `group_matcher` interface. The base
        class puts every parameter in one layer."""
        return lambda name: 0


BackboneFactory = Callable[[ModelConfig], Backbone]
BACKBONES: dict[str, BackboneFactory] = {}

SCRATCH_SIZE = 64  # the scratch CNN's default side (px)
IMAGENET_SIZE = 224  # VGG and ResNet's


@dataclass(frozen=True)
class BackboneInfo:
    """What the package asks of a backbone, torch-free: `input_size` (its default image side in px;
    None: read from the model, timm), `weight_sources` (the pretrained weight names it accepts, e.g.
    ("imagenet",); any backbone also takes a weights file), `options` (model config keys it reads
    besides weights and dropout, e.g. ("width",)), `description` (one line)."""

    name: str
    input_size: int | None = IMAGENET_SIZE
    weight_sources: tuple[str, ...] = ()
    options: tuple[str, ...] = ()
    description: str = ""


BACKBONE_INFO: dict[str, BackboneInfo] = {}


def add_backbone(name: str, factory: BackboneFactory, *, input_size: int | None = None,
                 weight_sources: Sequence[str] | None = None, options: Sequence[str] | None = None,
                 description: str | None = None) -> BackboneFactory:
    """Register `factory(cfg) -> Backbone` under `name` with its traits (ValueError: a name taken, a
    weight source `models/weights.py` does not know, or a name starting with `timm:`). A trait not
    given is read from the factory's attribute of that name (a plugin's factory may carry them, e.g. a
    class with `input_size = 112`), else its default: 224 px, no named weights, no options, the first
    line of the factory's docstring."""
    input_size = getattr(factory, "input_size", IMAGENET_SIZE) if input_size is None else input_size
    weight_sources = getattr(factory, "weight_sources", ()) if weight_sources is None else weight_sources
    options = getattr(factory, "options", ()) if options is None else options
    description = getattr(factory, "description", None) if description is None else description
    if isinstance(weight_sources, str) or isinstance(options, str):
        raise ValueError(f"backbone {name!r}: weight_sources and options are sequences of names, not one string")
    if name in BACKBONES:
        raise ValueError(f"backbone {name!r} is registered twice")
    if name.startswith(TIMM_PREFIX):
        raise ValueError(f"backbone {name!r}: names starting with {TIMM_PREFIX!r} are timm's")
    unknown = [w for w in weight_sources if w not in WEIGHT_NAMES]
    if unknown:
        raise ValueError(f"backbone {name!r}: unknown weight sources {unknown} (known: {', '.join(WEIGHT_NAMES)})")
    if not isinstance(input_size, int) or input_size < 1:
        raise ValueError(f"backbone {name!r}: input_size must be a positive number of pixels, got {input_size}")
    doc = (factory.__doc__ or "").strip().splitlines()
    BACKBONES[name] = factory
    BACKBONE_INFO[name] = BackboneInfo(name, input_size, tuple(weight_sources), tuple(options),
                                       description if description is not None else (doc[0] if doc else ""))
    return factory


def register_backbone(name: str, *, input_size: int | None = None, weight_sources: Sequence[str] | None = None,
                      options: Sequence[str] | None = None, description: str | None = None
                      ) -> Callable[[BackboneFactory], BackboneFactory]:
    """Decorator: register `factory(cfg) -> Backbone` under `name` (see `add_backbone`; `description`
    defaults to the first line of the factory's docstring)."""

    def deco(factory: BackboneFactory) -> BackboneFactory:
        return add_backbone(name, factory, input_size=input_size, weight_sources=weight_sources, options=options,
                            description=description)

    return deco


def backbone_info(name: str) -> BackboneInfo:
    """The traits of a registered backbone or of `timm:NAME` (input size from the model, ImageNet
    weights); UsageError naming `model.backbone` when unknown."""
    if name in BACKBONE_INFO:
        return BACKBONE_INFO[name]
    if name.startswith(TIMM_PREFIX) and len(name) > len(TIMM_PREFIX):
        return BackboneInfo(name, None, ("imagenet",), (), "a timm model as a feature extractor")
    raise UsageError(f"config key 'model.backbone': unknown backbone {name!r} "
                     f"(known: {', '.join(sorted(BACKBONES))}, or timm:NAME with a timm model name)")


def is_known_backbone(name: str) -> bool:
    """True for a registered name and for `timm:NAME` where timm knows NAME (`arch` or `arch.tag`)."""
    if name in BACKBONES:
        return True
    if name.startswith(TIMM_PREFIX) and len(name) > len(TIMM_PREFIX):
        import timm

        return bool(timm.is_model(name[len(TIMM_PREFIX):]))
    return False


def only_named_weights(cfg: ModelConfig, allowed: Sequence[str]) -> None:
    """A weights name this backbone has no file for (not among its `weight_sources`) is a UsageError
    naming model.weights."""
    if cfg.weights in WEIGHT_NAMES and cfg.weights not in allowed:
        ok = f" (this backbone takes: {', '.join(allowed)}, or a file)" if allowed else " (give a weights file)"
        raise UsageError(f"config key 'model.weights': no {cfg.weights!r} weights for backbone {cfg.backbone!r}{ok}")
