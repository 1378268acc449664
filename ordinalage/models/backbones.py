"""Backbones: a registry of feature extractors by name (timm style).

A backbone maps a normalised image batch (N, 3, S, S) to features (N, F). Each one carries
`out_features` (F) and `input_spec` (default side and the RGB normalisation it expects). The input
spec never depends on `ModelConfig.weights`, so a model rebuilt from a checkpoint without the
original weights file normalises its input the same way.

    scratch               small fast CNN for CPU training, 64 px
    vgg16                 VGG-16 Face topology (names match `read_vggface`), 224 px, VGGFace input
    resnet18/34/50        torchvision ResNets, ImageNet input, 224 px (any size works)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from ordinalage.config import ModelConfig
from ordinalage.errors import UsageError
from ordinalage.models.input_spec import IMAGENET_STD, VGGFACE_MEAN, VGGFACE_STD, InputSpec


class Backbone(nn.Module):
    """Base class: `forward(x: (N,3,S,S)) -> (N, out_features)`."""

    out_features: int
    input_spec: InputSpec


BackboneFactory = Callable[[ModelConfig], Backbone]
BACKBONES: dict[str, BackboneFactory] = {}


def register_backbone(name: str) -> Callable[[BackboneFactory], BackboneFactory]:
    """Decorator: register `factory(cfg) -> Backbone` under `name`."""

    def deco(factory: BackboneFactory) -> BackboneFactory:
        if name in BACKBONES:
            raise ValueError(f"backbone {name!r} is registered twice")
        BACKBONES[name] = factory
        return factory

    return deco


def build_backbone(cfg: ModelConfig) -> Backbone:
    """Build the backbone named by `cfg.backbone` (loading `cfg.weights` when given)."""
    factory = BACKBONES.get(cfg.backbone)
    if factory is None:
        raise UsageError(f"config key 'model.backbone': unknown backbone {cfg.backbone!r} "
                         f"(known: {', '.join(sorted(BACKBONES))})")
    if cfg.weights is not None and not Path(cfg.weights).is_file():
        raise UsageError(f"config key 'model.weights': file not found: {cfg.weights}")
    return factory(cfg)


# --------------------------------------------------------------------------------------------- scratch


def _conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True)]


class ScratchCNN(Backbone):
    """Four conv-BN-ReLU x2 blocks of widths w, 2w, 4w, 8w; global average pooling; dropout.

    The first conv has stride 2 and blocks 1-3 end in a 2x2 max pool, so a 64 px input is
    seen at 32, 16, 8 and 4 px: about 450 img/s forward+backward at batch 64 on 2 CPU cores
    (width 32, channels_last) where the same net without the strided stem manages about 150.
    """

    def __init__(self, width: int = 32, dropout: float = 0.0, size: int = 64) -> None:
        super().__init__()
        if width < 1:
            raise UsageError(f"config key 'model.width': must be at least 1, got {width}")
        widths = [width * m for m in (1, 2, 4, 8)]
        layers: list[nn.Module] = []
        c_in = 3
        for i, c in enumerate(widths):
            layers += _conv_bn_relu(c_in, c, stride=2 if i == 0 else 1) + _conv_bn_relu(c, c)
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            c_in = c
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.out_features = widths[-1]
        self.input_spec = InputSpec(size)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(torch.flatten(self.pool(self.features(x)), 1))


@register_backbone("scratch")
def scratch(cfg: ModelConfig) -> Backbone:
    """The scratch CNN; `cfg.weights` (optional): a state dict file of this backbone."""
    net = ScratchCNN(cfg.width, cfg.dropout)
    if cfg.weights is not None:
        _load_state_dict_file(net, cfg.weights, drop_prefixes=())
    return net


# --------------------------------------------------------------------------------------------- vgg16

VGG16_WIDTHS = (64, 128, 256, 512, 512)
VGG16_DEPTHS = (2, 2, 3, 3, 3)
VGG16_CONV_NAMES = tuple(f"conv{b + 1}_{i + 1}" for b, n in enumerate(VGG16_DEPTHS) for i in range(n))


class VGGFace16(Backbone):
    """VGG-16 Face: `conv1_1` ... `conv5_3`, `fc6`, `fc7` (fc8 dropped: the head replaces it).

    Module names match the canonical state dict of `read_vggface`. Features are fc7's output after
    ReLU and dropout. pool5 is average-pooled adaptively to `pool_size` x `pool_size` (a no-op at
    224 px), so other input sizes work too. `widths` and `fc_width` exist for small test networks.
    Input: VGGFace normalisation (RGB 0-255 minus the VGGFace mean), with or without weights; a
    random initialisation scales conv1_1 down to make up for the 0-255 input range.
    """

    def __init__(self, widths: Sequence[int] = VGG16_WIDTHS, fc_width: int = 4096, dropout: float = 0.0,
                 pool_size: int = 7, size: int = 224) -> None:
        super().__init__()
        if len(widths) != len(VGG16_DEPTHS):
            raise ValueError(f"VGGFace16 needs {len(VGG16_DEPTHS)} block widths, got {len(widths)}")
        c_in = 3
        for b, (w, n) in enumerate(zip(widths, VGG16_DEPTHS, strict=True)):
            for i in range(n):
                self.add_module(f"conv{b + 1}_{i + 1}", nn.Conv2d(c_in, w, 3, padding=1))
                c_in = w
        self.pool_size = pool_size
        self.fc6 = nn.Linear(c_in * pool_size * pool_size, fc_width)
        self.fc7 = nn.Linear(fc_width, fc_width)
        self.dropout = nn.Dropout(dropout)
        self.out_features = fc_width
        self.input_spec = InputSpec(size, VGGFACE_MEAN, VGGFACE_STD)
        self._init_random()

    def _init_random(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)
        with torch.no_grad():  # inputs span about +-128 instead of ImageNet's +-2
            self.conv1_1.weight.mul_(VGGFACE_STD[0] / (sum(IMAGENET_STD) / 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for b, n in enumerate(VGG16_DEPTHS):
            for i in range(n):
                x = F.relu(getattr(self, f"conv{b + 1}_{i + 1}")(x), inplace=True)
            x = F.max_pool2d(x, 2, 2)
        x = torch.flatten(F.adaptive_avg_pool2d(x, self.pool_size), 1)
        x = self.dropout(F.relu(self.fc6(x), inplace=True))
        return self.dropout(F.relu(self.fc7(x), inplace=True))

    def load_vggface(self, path: str | Path) -> None:
        """Load a keras-vggface `.h5` or `vgg_face_dag.pth` (fc8 ignored); errors name file and layer."""
        from ordinalage.models.vggface import read_vggface

        state = {k: v for k, v in read_vggface(path).items() if not k.startswith("fc8.")}
        _load_checked(self, state, path)


@register_backbone("vgg16")
def vgg16(cfg: ModelConfig) -> Backbone:
    net = VGGFace16(dropout=cfg.dropout)
    if cfg.weights is not None:
        net.load_vggface(cfg.weights)
    return net


# --------------------------------------------------------------------------------------------- resnets


class TorchvisionBackbone(Backbone):
    """A torchvision classifier with its `fc` replaced by dropout (features = pooled activations)."""

    def __init__(self, body: nn.Module, dropout: float = 0.0, size: int = 224) -> None:
        super().__init__()
        self.out_features = int(body.fc.in_features)
        body.fc = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.body = body
        self.input_spec = InputSpec(size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _resnet_factory(name: str) -> BackboneFactory:
    def factory(cfg: ModelConfig) -> Backbone:
        net = TorchvisionBackbone(getattr(torchvision.models, name)(weights=None), cfg.dropout)
        if cfg.weights is not None:
            _load_state_dict_file(net.body, cfg.weights, drop_prefixes=("fc.",))
        return net

    factory.__name__ = name
    factory.__doc__ = f"torchvision {name} (weights=None); `cfg.weights`: a torchvision state dict file."
    return factory


for _name in ("resnet18", "resnet34", "resnet50"):
    register_backbone(_name)(_resnet_factory(_name))


# --------------------------------------------------------------------------------------------- loading


def _load_checked(module: nn.Module, state: Mapping[str, torch.Tensor], path: str | Path) -> None:
    """`load_state_dict` with every missing/unexpected key and shape mismatch named (UsageError)."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:8])}" + (" ..." if len(missing) > 8 else ""))
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:8])}" + (" ..." if len(unexpected) > 8 else ""))
        raise UsageError(f"{path}: the weights do not fit the {type(module).__name__} backbone ({'; '.join(parts)})")
    for k, v in own.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise UsageError(f"{path}: layer {k} has shape {tuple(state[k].shape)}, the backbone expects {tuple(v.shape)}")
    module.load_state_dict(state, strict=True)


def _load_state_dict_file(module: nn.Module, path: str | Path, drop_prefixes: Sequence[str]) -> None:
    """Load a plain state dict file (`torch.load(weights_only=True)`), dropping keys under `drop_prefixes`."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a usage error
        raise UsageError(f"{path}: not a readable PyTorch state dict file ({type(exc).__name__}: {str(exc)[:200]})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UsageError(f"{path}: expected a state dict (a mapping of names to tensors)")
    state = {k.removeprefix("module."): v for k, v in state.items()
             if not any(k.removeprefix("module.").startswith(p) for p in drop_prefixes)}
    _load_checked(module, state, path)


__all__ = ["BACKBONES", "Backbone", "ScratchCNN", "TorchvisionBackbone", "VGGFace16", "build_backbone",
           "register_backbone"]
