"""Pretrained backbones: timm models, weights files and names, offline errors, --init, layer decay."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file
from test_vggface import SMALL, canonical

from ordinalage.cli import main
from ordinalage.config import ModelConfig, load_config
from ordinalage.errors import UsageError
from ordinalage.groups import AgeGroups
from ordinalage.models import weights
from ordinalage.models.backbones import (
    TimmBackbone,
    VGGFace16,
    build_backbone,
    fold_input_normalisation,
    is_known_backbone,
)
from ordinalage.models.input_spec import IMAGENET_MEAN, InputSpec
from ordinalage.models.model import AgeModel, build_model
from ordinalage.models.param_groups import param_groups
from ordinalage.runs.init import init_from

GROUPS = AgeGroups.parse(None)
TIMM = "timm:test_resnet"  # timm's own tiny test network: 0.4 M parameters, mean/std 0.5, 160 px


def _train_step(model: torch.nn.Module, size: int = 32) -> None:
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = model.input_spec.normalize(torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8))
    loss = model.loss(model(x), torch.tensor([20.0, 50.0]), torch.tensor([1, 4]))
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))


@pytest.mark.parametrize("backbone", ["scratch", "resnet18", TIMM, "timm:test_convnext", "vgg16-small"])
def test_every_family_builds_and_trains_a_step(backbone: str) -> None:
    torch.manual_seed(0)
    if backbone == "vgg16-small":  # the real VGG-16 is 138 M parameters: the same class, narrower
        cfg = ModelConfig(backbone="vgg16")
        net = VGGFace16(widths=SMALL, fc_width=16, pool_size=1)
        from ordinalage.models.heads import build_head

        model = AgeModel(net, build_head(cfg, net.out_features, GROUPS))
    else:
        model = build_model(ModelConfig(backbone=backbone, width=8), GROUPS)
    _train_step(model.train())


def test_timm_backbone_takes_its_input_spec_from_the_pretrained_config() -> None:
    net = build_backbone(ModelConfig(backbone=TIMM))
    assert isinstance(net, TimmBackbone)
    cfg = timm.create_model("test_resnet", num_classes=0).pretrained_cfg
    assert net.input_spec == InputSpec(cfg["input_size"][-1], tuple(cfg["mean"]), tuple(cfg["std"]))
    assert net.input_spec.mean != IMAGENET_MEAN  # so the test below would notice ImageNet defaults


def test_known_backbones() -> None:
    assert is_known_backbone("scratch") and is_known_backbone(TIMM) and is_known_backbone("timm:resnet18d.ra2_in1k")
    assert not is_known_backbone("timm:no_such_net") and not is_known_backbone("timm:") and not is_known_backbone("vgg19")
    with pytest.raises(UsageError, match=r"model.backbone.*timm:no_such_net.*timm:NAME"):
        build_backbone(ModelConfig(backbone="timm:no_such_net"))


def test_timm_input_spec_survives_save_and_load(tiny_run: Callable[..., Path]) -> None:
    from ordinalage.runs.checkpoint import load_model

    run = tiny_run("coral", f"model.backbone={TIMM}")
    loaded = load_model(run)
    assert loaded.config.model.backbone == TIMM
    assert loaded.input_spec.mean == (0.5, 0.5, 0.5) and loaded.input_spec.std == (0.5, 0.5, 0.5)
    assert loaded.input_spec.size == 48  # data.image_size of the run


# --------------------------------------------------------------------------------------------- files


def test_weights_files_pth_and_safetensors(tmp_path: Path) -> None:
    tv = build_backbone(ModelConfig(backbone="resnet18"))
    state = {f"{k}": v.clone() for k, v in tv.body.state_dict().items()}
    state["fc.weight"], state["fc.bias"] = torch.randn(1000, 512), torch.randn(1000)  # a classifier, dropped
    torch.save(state, tmp_path / "r18.pth")
    save_file(state, str(tmp_path / "r18.safetensors"))
    for name in ("r18.pth", "r18.safetensors"):
        net = build_backbone(ModelConfig(backbone="resnet18", weights=str(tmp_path / name)))
        assert torch.equal(net.body.conv1.weight, state["conv1.weight"])

    src = timm.create_model("test_resnet", num_classes=1000)  # with its classifier, as timm releases are
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(tmp_path / "t.safetensors"))
    net = build_backbone(ModelConfig(backbone=TIMM, weights=str(tmp_path / "t.safetensors")))
    want = {k: v for k, v in src.state_dict().items() if not k.startswith("fc.")}
    assert set(net.body.state_dict()) == set(want)
    assert all(torch.equal(v, want[k]) for k, v in net.body.state_dict().items())
    with pytest.raises(UsageError, match=r"r18.pth: the weights do not fit"):
        build_backbone(ModelConfig(backbone=TIMM, weights=str(tmp_path / "r18.pth")))


def test_vgg16_safetensors_and_torchvision_layout(tmp_path: Path) -> None:
    state = canonical(fc_width=16, side=1)
    save_file({k: v for k, v in state.items()}, str(tmp_path / "face.safetensors"))
    net = VGGFace16(widths=SMALL, fc_width=16, pool_size=1)
    net.load_vggface(tmp_path / "face.safetensors")
    assert torch.equal(net.conv3_2.weight, state["conv3_2.weight"])

    tv = {}  # the same network in torchvision's VGG-16 names (ImageNet input)
    convs = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
    from ordinalage.models.backbones import VGG16_CONV_NAMES

    for i, name in zip(convs, VGG16_CONV_NAMES, strict=True):
        tv[f"features.{i}.weight"], tv[f"features.{i}.bias"] = state[f"{name}.weight"], state[f"{name}.bias"]
    for i, name in ((0, "fc6"), (3, "fc7"), (6, "fc8")):
        tv[f"classifier.{i}.weight"], tv[f"classifier.{i}.bias"] = state[f"{name}.weight"], state[f"{name}.bias"]
    torch.save(tv, tmp_path / "tv.pth")
    net.load_torchvision_vgg16(tmp_path / "tv.pth")
    assert torch.equal(net.conv5_3.weight, state["conv5_3.weight"])
    assert not torch.equal(net.conv1_1.weight, state["conv1_1.weight"])  # normalisation folded in


def test_folding_the_normalisation_keeps_the_first_conv_output() -> None:
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 4, 3, padding=1)
    imagenet, vggface = InputSpec(8), VGGFace16(widths=SMALL, fc_width=4, pool_size=1).input_spec
    w, b = fold_input_normalisation(conv.weight.data, conv.bias.data, trained_for=imagenet, fed=vggface)
    x = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    want = conv(imagenet.normalize(x))
    got = torch.nn.functional.conv2d(vggface.normalize(x), w, b, padding=1)
    torch.testing.assert_close(got[..., 1:-1, 1:-1], want[..., 1:-1, 1:-1], rtol=1e-4, atol=1e-3)


# --------------------------------------------------------------------------------------------- names, offline


def test_named_weights_that_a_backbone_lacks() -> None:
    with pytest.raises(UsageError, match=r"model.weights.*no 'imagenet' weights for backbone 'scratch'"):
        build_backbone(ModelConfig(backbone="scratch", weights="imagenet"))
    with pytest.raises(UsageError, match=r"model.weights.*no 'vggface' weights.*resnet18.*imagenet"):
        build_backbone(ModelConfig(backbone="resnet18", weights="vggface"))


def _offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError(OSError(-2, "Name or service not known"))

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(weights, "_reachable", lambda url, timeout=5.0: OSError(-2, "Name or service not known"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)


def test_imagenet_offline_names_the_url_and_the_place(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import torchvision

    _offline(monkeypatch, tmp_path)
    url = torchvision.models.ResNet18_Weights.DEFAULT.url
    with pytest.raises(UsageError, match="no network") as err:
        build_backbone(ModelConfig(backbone="resnet18", weights="imagenet"))
    assert url in str(err.value) and str(tmp_path / "torch" / "hub" / "checkpoints" / url.rsplit("/", 1)[-1]) in str(err.value)
    with pytest.raises(UsageError, match=r"timm/resnet18d\.ra2_in1k.*model.safetensors.*model.weights"):
        build_backbone(ModelConfig(backbone="timm:resnet18d", weights="imagenet"))


def test_cli_train_with_imagenet_offline_exits_2(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    import torchvision

    _offline(monkeypatch, tmp_path)
    rc = main(["train", "--backbone", "resnet18", "--weights", "imagenet", "--data", "synth", "--out", str(tmp_path / "run"),
               "--set", "data.synth_n=40", "--set", "data.synth_size=32", "--set", f"data.cache_dir={tmp_path}",
               "--set", "data.num_workers=0", "--set", "train.epochs=1", "--set", "data.image_size=32"])
    assert rc == 2
    assert torchvision.models.ResNet18_Weights.DEFAULT.url in capsys.readouterr().err


# --------------------------------------------------------------------------------------------- --init


def test_init_from_a_run_with_matching_and_other_heads(tiny_run: Callable[..., Path]) -> None:
    from ordinalage.runs.checkpoint import load_checkpoint

    run = tiny_run("coral")
    trained = load_checkpoint(run)["model"]
    cfg = load_config(run / "config.yaml")
    groups = AgeGroups.parse(load_checkpoint(run)["groups"])

    same = build_model(cfg.model, groups)
    msg = init_from(same, run)
    assert "backbone and head" in msg
    assert all(torch.equal(v, trained[k]) for k, v in same.state_dict().items())

    other = build_model(cfg.model.__class__(**{**cfg.model.__dict__, "head": "class"}), groups)
    fresh_head = {k: v.clone() for k, v in other.head.state_dict().items()}
    msg = init_from(other, run)
    assert "new head (head 'coral' there, 'class' here)" in msg
    assert all(torch.equal(v, trained[f"backbone.{k}"]) for k, v in other.backbone.state_dict().items())
    assert all(torch.equal(v, fresh_head[k]) for k, v in other.head.state_dict().items())

    regrouped = build_model(cfg.model, AgeGroups.parse("0-20,21-40,41-60,61+"))
    assert "new head (age groups 0-10," in init_from(regrouped, run)

    wider = build_model(cfg.model.__class__(**{**cfg.model.__dict__, "width": 16}), groups)
    with pytest.raises(UsageError, match=r"model.init.*does not fit"):
        init_from(wider, run)
    with pytest.raises(UsageError, match=r"model.init.*checkpoint not found"):
        init_from(same, run / "nope.pt")


# --------------------------------------------------------------------------------------------- layer decay


def test_layer_decay_gives_the_expected_per_group_learning_rates() -> None:
    cfg = load_config(sets=["model.width=8", "train.lr=1.0", "train.layer_decay=0.5", "train.backbone_lr_mult=0.5",
                            "train.weight_decay=0.01"])
    model = build_model(cfg.model, GROUPS)
    model.set_backbone_trainable(False)  # frozen parameters still get their groups
    groups = param_groups(model, cfg)
    lrs = {g["name"]: g["lr"] for g in groups}
    for k in range(8):  # scratch: 8 conv-BN layers; layer k gets 0.5 (mult) * 0.5 ** (8 - k)
        assert lrs[f"backbone_layer{k}_decay"] == pytest.approx(0.5 * 0.5 ** (8 - k))
        assert lrs[f"backbone_layer{k}_no_decay"] == pytest.approx(0.5 * 0.5 ** (8 - k))
    assert lrs["head_decay"] == 1.0 and lrs["head_no_decay"] == 1.0
    assert {g["weight_decay"] for g in groups if g["name"].endswith("_no_decay")} == {0.0}
    assert {g["weight_decay"] for g in groups if g["name"].endswith("_decay") and "no_decay" not in g["name"]} == {0.01}
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    assert not any(p.requires_grad for p in model.backbone.parameters())  # flags restored

    off = param_groups(model, load_config(sets=["model.width=8", "train.lr=1.0", "train.backbone_lr_mult=0.5"]))
    assert {g["name"]: g["lr"] for g in off} == {"backbone_decay": 0.5, "backbone_no_decay": 0.5,
                                                  "head_decay": 1.0, "head_no_decay": 1.0}


@pytest.mark.parametrize("backbone", [TIMM, "resnet18"])
def test_layer_decay_on_timm_and_torchvision(backbone: str) -> None:
    cfg = load_config(sets=[f"model.backbone={backbone}", "train.lr=1.0", "train.layer_decay=0.8"])
    groups = param_groups(build_model(cfg.model, GROUPS), cfg)
    layers = sorted({int(g["name"].split("_")[1].removeprefix("layer")) for g in groups if g["name"].startswith("backbone")})
    top = layers[-1]
    assert layers == list(range(top + 1)) and top >= 4  # stem + residual blocks
    by_layer = {int(g["name"].split("_")[1].removeprefix("layer")): g["lr"] for g in groups if g["name"].startswith("backbone")}
    assert by_layer[top] == pytest.approx(0.8) and by_layer[0] == pytest.approx(0.8 ** (top + 1))


def test_config_keys_are_validated() -> None:
    with pytest.raises(UsageError, match=r"train.layer_decay.*\(0, 1\]"):
        load_config(sets=["train.layer_decay=1.5"])
    with pytest.raises(UsageError, match=r"train.backbone_lr_mult"):
        load_config(sets=["train.backbone_lr_mult=-1"])
    assert load_config(sets=["model.init=runs/a"]).model.init == "runs/a"


def test_tune_space_accepts_timm_backbones(tmp_path: Path) -> None:
    from ordinalage.tuning.space import check_space, parse_space

    space = parse_space({"model.backbone": {"type": "categorical", "choices": ["scratch", TIMM]}}, "t.yaml")
    check_space(space, {}, "t.yaml")
    bad = parse_space({"model.backbone": {"type": "categorical", "choices": ["timm:no_such_net"]}}, "t.yaml")
    with pytest.raises(UsageError, match="unknown choice 'timm:no_such_net'"):
        check_space(bad, {}, "t.yaml")
