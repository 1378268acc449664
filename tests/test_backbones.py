"""Backbone registry, shapes, torchvision state dict loading, freezing and optimizer groups."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torchvision

from ordinalage.config import ModelConfig
from ordinalage.errors import UsageError
from ordinalage.groups import AgeGroups
from ordinalage.models.backbones import BACKBONES, build_backbone
from ordinalage.models.input_spec import IMAGENET_MEAN, VGGFACE_MEAN
from ordinalage.models.model import AgeModel, build_model, param_groups

GROUPS = AgeGroups.parse(None)


@pytest.mark.parametrize(("name", "features", "size"), [
    ("scratch", 256, 64), ("resnet18", 512, 64), ("resnet34", 512, 64), ("resnet50", 2048, 64), ("vgg16", 4096, 64),
])
def test_backbone_shapes(name: str, features: int, size: int) -> None:
    torch.manual_seed(0)
    net = build_backbone(ModelConfig(backbone=name)).eval()
    assert net.out_features == features
    x = net.input_spec.normalize(torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8))
    with torch.no_grad():
        y = net(x)
    assert y.shape == (2, features) and torch.isfinite(y).all()
    if name == "vgg16":  # 0-255 VGGFace input: the random init keeps activations at a sane scale
        assert net.input_spec.mean == VGGFACE_MEAN and net.input_spec.size == 224
        assert 1e-4 < y.std() < 10
        assert {"conv1_1.weight", "conv5_3.bias", "fc6.weight", "fc7.bias"} <= set(net.state_dict())
        assert not any(k.startswith("fc8") for k in net.state_dict())


def test_default_input_specs() -> None:
    assert build_backbone(ModelConfig(backbone="scratch")).input_spec.size == 64
    spec = build_backbone(ModelConfig(backbone="resnet18")).input_spec
    assert spec.size == 224 and spec.mean == IMAGENET_MEAN


def test_scratch_width_and_dropout() -> None:
    net = build_backbone(ModelConfig(backbone="scratch", width=8, dropout=0.3))
    assert net.out_features == 64 and net.dropout.p == 0.3


def test_unknown_backbone_lists_the_known_ones() -> None:
    with pytest.raises(UsageError, match="model.backbone.*'vgg19'.*resnet18.*scratch.*vgg16"):
        build_backbone(ModelConfig(backbone="vgg19"))
    assert {"scratch", "vgg16", "resnet18", "resnet34", "resnet50"} <= set(BACKBONES)


def test_missing_weights_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="model.weights.*nope.pth"):
        build_backbone(ModelConfig(backbone="resnet18", weights=str(tmp_path / "nope.pth")))


def test_torchvision_state_dict_file_loads(tmp_path: Path) -> None:
    torch.manual_seed(1)
    ref = torchvision.models.resnet18(weights=None, num_classes=1000)
    path = tmp_path / "resnet18-imagenet.pth"
    torch.save(ref.state_dict(), path)  # with fc.* (1000 classes): dropped on load
    net = build_backbone(ModelConfig(backbone="resnet18", weights=str(path)))
    assert torch.equal(net.body.conv1.weight, ref.conv1.weight)
    assert torch.equal(net.body.layer4[1].bn2.running_var, ref.layer4[1].bn2.running_var)
    ref.eval()
    net.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        pooled = torch.flatten(ref.avgpool(ref.layer4(ref.layer3(ref.layer2(ref.layer1(
            ref.maxpool(ref.relu(ref.bn1(ref.conv1(x))))))))), 1)
        assert torch.allclose(net(x), pooled, atol=1e-5)


def test_wrong_state_dict_names_file_and_keys(tmp_path: Path) -> None:
    path = tmp_path / "r34.pth"
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), path)
    with pytest.raises(UsageError, match=r"r34\.pth.*unexpected layer1\.2\."):
        build_backbone(ModelConfig(backbone="resnet18", weights=str(path)))
    path50 = tmp_path / "r50.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), path50)
    with pytest.raises(UsageError, match=r"r50\.pth"):
        build_backbone(ModelConfig(backbone="resnet18", weights=str(path50)))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a zip")
    with pytest.raises(UsageError, match="junk.pth"):
        build_backbone(ModelConfig(backbone="resnet18", weights=str(junk)))


def _step(model: AgeModel, x: torch.Tensor) -> None:
    opt = torch.optim.SGD(param_groups(model, lr=0.1, backbone_lr_mult=1.0, weight_decay=0.0), lr=0.1)
    model.train()
    loss = model.loss(model(x), torch.tensor([5.0, 25.0, 45.0, 65.0]), torch.tensor([0, 2, 4, 6]))
    opt.zero_grad()
    loss.backward()
    opt.step()


def test_freezing_keeps_backbone_and_bn_statistics() -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="scratch", width=4, head="coral"), GROUPS)
    x = torch.randn(4, 3, 32, 32)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.set_backbone_trainable(False)
    assert not any(p.requires_grad for p in model.backbone_parameters())
    assert all(p.requires_grad for p in model.head_parameters())
    _step(model, x)
    after = model.state_dict()
    assert not model.backbone.training and model.head.training
    for k in before:
        if k.startswith("backbone."):
            assert torch.equal(before[k], after[k]), k  # weights and BN running stats untouched
    assert not torch.equal(before["head.coral.coral_bias"], after["head.coral.coral_bias"])
    model.set_backbone_trainable(True)
    assert model.backbone.training
    _step(model, x)
    assert not torch.equal(before["backbone.features.0.weight"], model.state_dict()["backbone.features.0.weight"])


def test_param_groups_split_lr_and_decay() -> None:
    model = build_model(ModelConfig(backbone="scratch", width=4, head="coral"), GROUPS)
    groups = {g["name"]: g for g in param_groups(model, lr=1e-3, backbone_lr_mult=0.1, weight_decay=0.05)}
    assert set(groups) == {"backbone_decay", "backbone_no_decay", "head_decay", "head_no_decay"}
    assert groups["backbone_decay"]["lr"] == pytest.approx(1e-4) and groups["head_decay"]["lr"] == 1e-3
    assert groups["backbone_no_decay"]["weight_decay"] == 0.0 and groups["backbone_decay"]["weight_decay"] == 0.05
    assert all(p.ndim == 4 for p in groups["backbone_decay"]["params"])  # conv kernels only (BN has no bias decay)
    assert any(p is model.head.coral.coral_bias for p in groups["head_no_decay"]["params"])
    n = sum(p.numel() for g in groups.values() for p in g["params"])
    assert n == sum(p.numel() for p in model.parameters())


def test_predict_normalises_uint8() -> None:
    torch.manual_seed(0)
    model = build_model(replace(ModelConfig(backbone="scratch", width=4), head="regression"), GROUPS).eval()
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    a = model.predict(images)
    b = model.decode(model(model.input_spec.normalize(images)))
    assert torch.equal(a.age, b.age) and a.group.dtype == torch.long
