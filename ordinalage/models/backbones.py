"""Backbones: a registry of feature extractors by name (timm style).

A backbone maps a normalised image batch (N, 3, S, S) to features (N, F). Each one carries
`out_features` (F) and `input_spec` (default side and the RGB normalisation it expects). The input
spec never depends on `ModelConfig.weights`, so a model rebuilt from a checkpoint without the
original weights file normalises its input the same way.

    scratch               small fast CNN for CPU training, 64 px
    vgg16                 VGG-16 Face topology (names match `read_vggface`), 224 px, VGGFace input
    resnet18/34/50        torchvision ResNets, ImageNet input, 224 px (any size works)
    timm:NAME             any `timm.create_model` name (`arch` or `arch.tag`) as a feature extractor
                          (num_classes=0); input size and normalisation from its pretrained config

Each registered backbone declares its traits when registered (`register_backbone(name, input_size=,
weight_sources=, options=)`, kept as a `BackboneInfo` in `BACKBONE_INFO`, `backbone_info(name)`): its
default image size, the pretrained weight names it accepts (`build_backbone` refuses the others,
naming `model.weights`) and the model config keys it reads besides weights and dropout (cards show
them). No module outside this one tests a backbone's name.

`cfg.weights` is a file or a name resolved by `models/weights.py` (imagenet, vggface). Every backbone
has `group_matcher(coarse=False)` (timm's interface: parameter name -> layer ordinal, stem lowest)
so timm's layer-wise learning-rate decay applies to every family (see models/param_groups.py).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from ordinalage.config import ModelConfig
from ordinalage.errors import UsageError
from ordinalage.models.backbone_base import (
    BACKBONE_INFO,
    BACKBONES,
    IMAGENET_SIZE,
    SCRATCH_SIZE,
    TIMM_PREFIX,
    WEIGHT_NAMES,
    Backbone,
    BackboneFactory,
    BackboneInfo,
    add_backbone,
    backbone_info,
    is_known_backbone,
    only_named_weights,
    register_backbone,
)
from ordinalage.models.input_spec import IMAGENET_MEAN, IMAGENET_STD, VGGFACE_MEAN, VGGFACE_STD, InputSpec
from ordinalage.plugins import load_plugins


def build_backbone(cfg: ModelConfig) -> Backbone:
    """Build the backbone named by `cfg.backbone` (loading `cfg.weights` when given)."""
    load_plugins("ordinalage.backbones", add_backbone, builtin=BACKBONES, need=cfg.backbone)  # plugins, once
    if cfg.backbone.startswith(TIMM_PREFIX):
        factory: BackboneFactory | None = timm_backbone if is_known_backbone(cfg.backbone) else None
    else:
        factory = BACKBONES.get(cfg.backbone)
    if factory is None:
        raise UsageError(f"config key 'model.backbone': unknown backbone {cfg.backbone!r} "
                         f"(known: {', '.join(sorted(BACKBONES))}, or timm:NAME with a timm model name)")
    if cfg.weights is not None and cfg.weights not in WEIGHT_NAMES and not Path(cfg.weights).is_file():
        raise UsageError(f"config key 'model.weights': file not found: {cfg.weights} "
                         f"(or a name: {', '.join(WEIGHT_NAMES)})")
    only_named_weights(cfg, backbone_info(cfg.backbone).weight_sources)
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

    def __init__(self, width: int = 32, dropout: float = 0.0, size: int = SCRATCH_SIZE) -> None:
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

    def group_matcher(self, coarse: bool = False) -> Callable[[str], Any]:
        """One layer per conv-BN pair (8 layers), or per block of two pairs when `coarse` (4)."""
        layer: dict[str, int] = {}
        conv = -1
        for i, m in enumerate(self.features):
            conv += isinstance(m, nn.Conv2d)
            layer[str(i)] = conv // 2 if coarse else conv
        return lambda name: layer[name.split(".")[1]]


@register_backbone("scratch", input_size=SCRATCH_SIZE, weight_sources=(), options=("width",),
                   description="a small fast CNN for CPU training (four conv blocks, `model.width` channels first)")
def scratch(cfg: ModelConfig) -> Backbone:
    """The scratch CNN; `cfg.weights` (optional): a state dict file of this backbone (.pth, .safetensors)."""
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
                 pool_size: int = 7, size: int = IMAGENET_SIZE) -> None:
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

    def group_matcher(self, coarse: bool = False) -> Callable[[str], Any]:
        """conv1_1 ... conv5_3, fc6, fc7 in order (15 layers), or 5 conv blocks, fc6, fc7 when `coarse`."""
        order = {n: (int(n[4]) - 1 if coarse else i) for i, n in enumerate(VGG16_CONV_NAMES)}
        top = max(order.values())
        order.update({"fc6": top + 1, "fc7": top + 2})
        return lambda name: order[name.split(".")[0]]

    def load_vggface(self, path: str | Path) -> None:
        """Load a keras-vggface `.h5` or `vgg_face_dag.pth` (fc8 ignored); errors name file and layer."""
        from ordinalage.models.vggface import read_vggface

        state = {k: v for k, v in read_vggface(path).items() if not k.startswith("fc8.")}
        _load_checked(self, state, path)

    def load_torchvision_vgg16(self, path: str | Path) -> None:
        """Load a torchvision VGG-16 state dict (`features.N`, `classifier.0/3`; ImageNet input),
        with the ImageNet normalisation folded into conv1_1 so this backbone's VGGFace input spec
        fits (exact away from the image border, where the zero padding differs)."""
        state = read_state_dict(path)
        convs = [i for i in range(31) if f"features.{i}.weight" in state]
        if len(convs) != len(VGG16_CONV_NAMES) or "classifier.3.weight" not in state:
            raise UsageError(f"{path}: not a torchvision VGG-16 state dict (expected 13 features.N convs "
                             "and classifier.0/3 layers)")
        out: dict[str, torch.Tensor] = {}
        for name, i in zip(VGG16_CONV_NAMES, convs, strict=True):
            out[f"{name}.weight"], out[f"{name}.bias"] = state[f"features.{i}.weight"], state[f"features.{i}.bias"]
        for name, i in (("fc6", 0), ("fc7", 3)):
            out[f"{name}.weight"], out[f"{name}.bias"] = state[f"classifier.{i}.weight"], state[f"classifier.{i}.bias"]
        out["conv1_1.weight"], out["conv1_1.bias"] = fold_input_normalisation(
            out["conv1_1.weight"], out["conv1_1.bias"], trained_for=InputSpec(224), fed=self.input_spec)
        _load_checked(self, out, path)


def fold_input_normalisation(weight: torch.Tensor, bias: torch.Tensor, trained_for: InputSpec,
                             fed: InputSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """First-conv weights trained on `trained_for`-normalised input, rewritten to take `fed`-normalised
    input: x_trained = a * x_fed + d per channel with a = std_fed / std_trained and
    d = (mean_fed - mean_trained) / std_trained, so W' = W * a and b' = b + sum(W * d)."""
    std_t, std_f = torch.tensor(trained_for.std, dtype=torch.float64), torch.tensor(fed.std, dtype=torch.float64)
    a = (std_f / std_t).view(1, 3, 1, 1)
    d = ((torch.tensor(fed.mean, dtype=torch.float64) - torch.tensor(trained_for.mean, dtype=torch.float64))
         / std_t).view(1, 3, 1, 1)
    w = weight.double()
    return (w * a).to(weight.dtype), (bias.double() + (w * d).sum(dim=(1, 2, 3))).to(bias.dtype)


@register_backbone("vgg16", input_size=IMAGENET_SIZE, weight_sources=("vggface", "imagenet"),
                   description="VGG-16 Face topology (VGGFace input), with VGGFace or ImageNet weights")
def vgg16(cfg: ModelConfig) -> Backbone:
    """VGG-16 Face; weights: vggface (cached by `weights fetch`), imagenet (torchvision, folded into
    conv1_1), or a file: keras-vggface .h5, vgg_face_dag.pth, the canonical dict as .safetensors, or a
    torchvision VGG-16 state dict."""
    import h5py

    from ordinalage.models import weights as named

    net = VGGFace16(dropout=cfg.dropout)
    if cfg.weights == "vggface":
        path = named.find_cached("vggface")
        if path is None:
            known = named.KNOWN["vggface"]
            raise UsageError(f"config key 'model.weights': the vggface weights are not in the cache "
                             f"{named.cache_dir()}; run `ordinalage weights fetch vggface`, or download "
                             f"{known.url} by hand and put it at {named.cache_dir() / known.filename}")
        net.load_vggface(path)
    elif cfg.weights == "imagenet":
        net.load_torchvision_vgg16(named.torchvision_weights("vgg16"))
    elif cfg.weights is not None:
        if not h5py.is_hdf5(cfg.weights) and "features.0.weight" in read_state_dict(cfg.weights):
            net.load_torchvision_vgg16(cfg.weights)
        else:
            net.load_vggface(cfg.weights)
    return net


# --------------------------------------------------------------------------------------------- resnets


class TorchvisionBackbone(Backbone):
    """A torchvision classifier with its `fc` replaced by dropout (features = pooled activations)."""

    def __init__(self, body: nn.Module, dropout: float = 0.0, size: int = IMAGENET_SIZE) -> None:
        super().__init__()
        self.out_features = int(body.fc.in_features)
        body.fc = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.body = body
        self.input_spec = InputSpec(size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def group_matcher(self, coarse: bool = False) -> Callable[[str], Any]:
        """ResNet: the stem (conv1, bn1) first, then the `layerS.B` blocks in order (stages when `coarse`)."""

        def ordinal(name: str) -> Any:
            parts = name.split(".")
            if parts[1].startswith("layer"):
                stage = int(parts[1][5:])
                return stage if coarse else (stage, int(parts[2]))
            return 0 if coarse else (0, 0)

        return ordinal


def _resnet_factory(name: str) -> BackboneFactory:
    def factory(cfg: ModelConfig) -> Backbone:
        net = TorchvisionBackbone(getattr(torchvision.models, name)(weights=None), cfg.dropout)
        if cfg.weights == "imagenet":
            from ordinalage.models.weights import torchvision_weights

            _load_state_dict_file(net.body, torchvision_weights(name), drop_prefixes=("fc.",))
        elif cfg.weights is not None:
            _load_state_dict_file(net.body, cfg.weights, drop_prefixes=("fc.",))
        return net

    factory.__name__ = name
    factory.__doc__ = (f"torchvision {name} (weights=None); `cfg.weights`: imagenet (the torchvision enum's "
                       "DEFAULT, cached by torch hub) or a torchvision state dict file (.pth, .safetensors).")
    return factory


for _name in ("resnet18", "resnet34", "resnet50"):
    register_backbone(_name, input_size=IMAGENET_SIZE, weight_sources=("imagenet",),
                      description=f"torchvision {_name} (ImageNet input)")(_resnet_factory(_name))


# --------------------------------------------------------------------------------------------- timm


class TimmBackbone(Backbone):
    """`timm.create_model(name, num_classes=0)` (pooled features), then dropout.

    `input_spec` comes from the model's pretrained config (input size, mean, std), which timm fills
    in from the name alone: a model rebuilt from a checkpoint's config normalises as it trained.
    """

    def __init__(self, model_name: str, dropout: float = 0.0, pretrained_file: str | Path | None = None) -> None:
        import timm

        super().__init__()
        self.model_name = model_name
        try:
            body = timm.create_model(model_name, pretrained=False, num_classes=0)
        except (RuntimeError, KeyError, ValueError) as exc:
            raise UsageError(f"config key 'model.backbone': timm cannot build {model_name!r} "
                             f"({type(exc).__name__}: {str(exc)[:300]})") from None
        if pretrained_file is not None:
            _load_timm_file(body, pretrained_file)
        self.body = body
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.out_features = int(body.num_features)
        cfg = dict(getattr(body, "pretrained_cfg", None) or {})
        size = int(cfg.get("input_size", (3, 224, 224))[-1])
        mean = tuple(float(v) for v in cfg.get("mean", IMAGENET_MEAN))
        std = tuple(float(v) for v in cfg.get("std", IMAGENET_STD))
        if len(mean) != 3 or len(std) != 3:
            raise UsageError(f"config key 'model.backbone': timm model {model_name!r} expects "
                             f"{len(mean)} input channels; ordinalage feeds RGB")
        self.input_spec = InputSpec(size, mean, std)  # type: ignore[arg-type]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.body(x))

    def group_matcher(self, coarse: bool = False) -> Callable[[str], Any]:
        """timm's own grouping of the model (stem, blocks, final norm), for names under `body.`."""
        from timm.models._manipulate import group_with_matcher

        names = [(n, None) for n, _ in self.body.named_parameters()]
        groups = group_with_matcher(iter(names), self.body.group_matcher(coarse=coarse))
        layer = {n: i for i, members in groups.items() for n in members}
        return lambda name: layer[name.removeprefix("body.")]


def _load_timm_file(body: nn.Module, path: str | Path) -> None:
    """Load a timm-format state dict (the classifier's keys dropped; every other key must fit). A file
    that does not fit as is goes through the model module's `checkpoint_filter_fn` first (timm's
    converter of original releases)."""
    cfg = dict(getattr(body, "pretrained_cfg", None) or {})
    classifiers = cfg.get("classifier") or ()
    classifiers = (classifiers,) if isinstance(classifiers, str) else tuple(classifiers)

    def drop_classifier(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v for k, v in state.items() if not any(k.startswith(c + ".") for c in classifiers)}

    state = drop_classifier(read_state_dict(path))
    if set(state) != set(body.state_dict()):
        convert = getattr(sys.modules.get(type(body).__module__), "checkpoint_filter_fn", None)
        if convert is not None:
            try:
                state = drop_classifier(convert(dict(state), body))
            except Exception:  # noqa: BLE001 - not a convertible release: the key check below reports it
                pass
    _load_checked(body, state, path)


def timm_backbone(cfg: ModelConfig) -> Backbone:
    """`timm:NAME`; weights: imagenet (timm's default pretrained tag of NAME, HF hub cache) or a file
    (.pth, .safetensors in timm's layout; the classifier is dropped)."""
    name = cfg.backbone[len(TIMM_PREFIX):]
    path: str | Path | None = cfg.weights
    if cfg.weights == "imagenet":
        from ordinalage.models.weights import timm_weights

        path = timm_weights(name)
    return TimmBackbone(name, cfg.dropout, pretrained_file=path)


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


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a `.safetensors` file or a `torch.save` file (`weights_only=True`); a
    `{"state_dict": ...}` wrapper and DataParallel's `module.` prefixes are taken off."""
    try:
        if str(path).endswith(".safetensors"):
            from safetensors.torch import load_file

            state: Any = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a usage error
        raise UsageError(f"{path}: not a readable PyTorch state dict file ({type(exc).__name__}: {str(exc)[:200]})") from None
    if isinstance(state, dict) and state.get("format") == "ordinalage-checkpoint":
        raise UsageError(f"{path}: an ordinalage checkpoint, not a backbone weights file; to start from a "
                         "trained run use `init` (config key model.init)")
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UsageError(f"{path}: expected a state dict (a mapping of names to tensors)")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _load_state_dict_file(module: nn.Module, path: str | Path, drop_prefixes: Sequence[str]) -> None:
    """Load a state dict file (.pth or .safetensors), dropping keys under `drop_prefixes`."""
    state = {k: v for k, v in read_state_dict(path).items() if not any(k.startswith(p) for p in drop_prefixes)}
    _load_checked(module, state, path)


__all__ = ["BACKBONES", "BACKBONE_INFO", "TIMM_PREFIX", "WEIGHT_NAMES", "Backbone", "BackboneInfo", "ScratchCNN",
           "TimmBackbone", "TorchvisionBackbone", "VGGFace16", "add_backbone", "backbone_info", "build_backbone",
           "fold_input_normalisation", "is_known_backbone", "read_state_dict", "register_backbone"]
