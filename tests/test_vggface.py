"""VGGFace readers: keras `.h5` and `vgg_face_dag.pth` files holding the same network give one canonical dict."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ordinalage.errors import UsageError
from ordinalage.models.backbones import VGGFace16
from ordinalage.models.vggface import CONV_LAYERS, is_vggface_file, read_vggface

SMALL = (4, 8, 8, 16, 16)  # conv widths of the small test network (real: 64, 128, 256, 512, 512)


def canonical(widths=SMALL, fc_width: int = 12, n_ids: int = 5, side: int = 7, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random network in the canonical layout (what vgg_face_dag.pth holds)."""
    g = torch.Generator().manual_seed(seed)
    depths = (2, 2, 3, 3, 3)
    state: dict[str, torch.Tensor] = {}
    c_in = 3
    names = iter(CONV_LAYERS)
    for w, n in zip(widths, depths, strict=True):
        for _ in range(n):
            name = next(names)
            state[f"{name}.weight"] = torch.randn(w, c_in, 3, 3, generator=g)
            state[f"{name}.bias"] = torch.randn(w, generator=g)
            c_in = w
    fc_in = c_in * side * side
    for name, (o, i) in {"fc6": (fc_width, fc_in), "fc7": (fc_width, fc_width), "fc8": (n_ids, fc_width)}.items():
        state[f"{name}.weight"] = torch.randn(o, i, generator=g) / i**0.5
        state[f"{name}.bias"] = torch.randn(o, generator=g)
    return state


def to_keras(state: dict[str, torch.Tensor], side: int = 7) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The exact inverse transforms: OIHW -> HWIO (conv1_1 RGB -> BGR), (out, in) -> (in, out), fc6 CHW -> HWC rows."""
    out = {}
    for name in CONV_LAYERS:
        w = state[f"{name}.weight"]
        if name == "conv1_1":
            w = w[:, [2, 1, 0]]
        out[name] = (w.permute(2, 3, 1, 0).numpy().copy(), state[f"{name}.bias"].numpy().copy())
    channels = state["conv5_3.weight"].shape[0]
    for name in ("fc6", "fc7", "fc8"):
        k = state[f"{name}.weight"].t()  # (in, out), in = CHW for fc6
        if name == "fc6":
            k = k.reshape(channels, side, side, -1).permute(1, 2, 0, 3).reshape(side * side * channels, -1)
        out[name] = (k.numpy().copy(), state[f"{name}.bias"].numpy().copy())
    return out


def write_h5(path: Path, layers: dict[str, tuple[np.ndarray, np.ndarray]], full_model: bool = False) -> Path:
    """A keras-vggface style weights file: f[layer][layer]['kernel:0'] with keras attributes."""
    with h5py.File(path, "w") as f:
        root = f.create_group("model_weights") if full_model else f
        order = ["input_1", *CONV_LAYERS[:2], "pool1", *layers.keys()]
        order = list(dict.fromkeys(order))
        root.attrs["layer_names"] = np.array([n.encode() for n in order])
        for name in order:
            grp = root.create_group(name)
            if name not in layers:
                grp.attrs["weight_names"] = np.array([], dtype="S1")
                continue
            kernel, bias = layers[name]
            grp.attrs["weight_names"] = np.array([f"{name}/kernel:0".encode(), f"{name}/bias:0".encode()])
            inner = grp.create_group(name)
            inner.create_dataset("kernel:0", data=kernel)
            inner.create_dataset("bias:0", data=bias)
        if "fc6" in layers:  # keras-vggface's activation layers are named 'fc6/relu': a nested empty group
            root["fc6"].create_group("relu")
    return path


@pytest.fixture()
def files(tmp_path: Path) -> tuple[dict[str, torch.Tensor], Path, Path]:
    state = canonical()
    pth = tmp_path / "vgg_face_dag.pth"
    torch.save(state, pth)
    h5 = write_h5(tmp_path / "rcmalli_vggface_tf_vgg16.h5", to_keras(state))
    return state, h5, pth


def test_both_formats_give_the_canonical_dict(files) -> None:
    state, h5, pth = files
    from_h5, from_pth = read_vggface(h5), read_vggface(pth)
    assert list(from_h5) == list(state) == list(from_pth)
    for k, v in state.items():
        assert from_h5[k].dtype == torch.float32
        assert torch.equal(from_pth[k], v), k
        assert torch.equal(from_h5[k], v), k
    assert is_vggface_file(h5) and is_vggface_file(pth)


def test_full_model_save_with_model_weights_group(tmp_path: Path, files) -> None:
    state, _, _ = files
    h5 = write_h5(tmp_path / "full.h5", to_keras(state), full_model=True)
    assert all(torch.equal(v, state[k]) for k, v in read_vggface(h5).items())


def test_conv1_1_keras_bgr_math_matches_canonical_rgb(files) -> None:
    """keras semantics, written out: out[o] = sum_hwi kernel[h, w, i, o] * bgr_patch[h, w, i] + bias[o]."""
    _, h5, _ = files
    with h5py.File(h5) as f:
        kernel, bias = np.asarray(f["conv1_1/conv1_1/kernel:0"]), np.asarray(f["conv1_1/conv1_1/bias:0"])
    rgb = np.random.default_rng(1).uniform(-100, 100, size=(5, 5, 3)).astype(np.float32)  # HWC
    bgr_patch = rgb[1:4, 1:4, ::-1]
    keras_out = np.einsum("hwi,hwio->o", bgr_patch, kernel) + bias
    sd = read_vggface(h5)
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None]
    torch_out = F.conv2d(x, sd["conv1_1.weight"], sd["conv1_1.bias"])[0, :, 1, 1]  # output pixel (1, 1)
    np.testing.assert_allclose(torch_out.numpy(), keras_out, rtol=1e-5, atol=1e-4)


def fc6_check(h5: Path, channels: int, side: int = 7) -> None:
    with h5py.File(h5) as f:
        kernel, bias = np.asarray(f["fc6/fc6/kernel:0"]), np.asarray(f["fc6/fc6/bias:0"])
    pool5 = np.random.default_rng(2).standard_normal((channels, side, side)).astype(np.float32)  # a CHW map
    keras_out = pool5.transpose(1, 2, 0).reshape(-1) @ kernel + bias  # keras flattens HWC
    sd = read_vggface(h5)
    torch_out = F.linear(torch.from_numpy(pool5).reshape(1, -1), sd["fc6.weight"], sd["fc6.bias"])[0]  # CHW
    np.testing.assert_allclose(torch_out.numpy(), keras_out, rtol=1e-4, atol=1e-4)


def test_fc6_hwc_rows_become_chw_columns(files) -> None:
    _, h5, _ = files
    fc6_check(h5, channels=SMALL[-1])


def test_real_shapes_512x7x7(tmp_path: Path) -> None:
    """Real conv widths (pool5 = 512 x 7 x 7, fc6 25088 inputs), narrow fc layers to stay small."""
    state = canonical(widths=(64, 128, 256, 512, 512), fc_width=8, n_ids=3)
    h5 = write_h5(tmp_path / "real.h5", to_keras(state))
    sd = read_vggface(h5)
    assert sd["fc6.weight"].shape == (8, 25088) and sd["conv5_3.weight"].shape == (512, 512, 3, 3)
    assert torch.equal(sd["fc6.weight"], state["fc6.weight"])
    assert torch.equal(sd["conv1_1.weight"], state["conv1_1.weight"])
    fc6_check(h5, channels=512)


def test_both_files_load_into_the_backbone_with_identical_features(files) -> None:
    state, h5, pth = files
    a = VGGFace16(widths=SMALL, fc_width=12).eval()
    b = VGGFace16(widths=SMALL, fc_width=12).eval()
    a.load_vggface(h5)
    b.load_vggface(pth)
    assert torch.equal(a.fc7.weight, state["fc7.weight"])
    images = torch.randint(0, 256, (2, 3, 224, 224), dtype=torch.uint8)
    x = a.input_spec.normalize(images)
    with torch.no_grad():
        fa, fb = a(x), b(x)
    assert fa.shape == (2, 12) and torch.equal(fa, fb) and fa.abs().sum() > 0
    # pool5 mean subtraction: the spec is RGB 0-255 minus the VGGFace mean
    assert torch.allclose(x[0, :, 0, 0], images[0, :, 0, 0].float() - torch.tensor([129.1863, 104.7624, 93.5940]), atol=1e-3)


def test_backbone_shape_mismatch_names_file_and_layer(files) -> None:
    _, h5, _ = files
    net = VGGFace16(widths=(4, 8, 8, 16, 32), fc_width=12)
    with pytest.raises(UsageError, match=r"rcmalli_vggface_tf_vgg16\.h5.*conv5_\d"):
        net.load_vggface(h5)


def test_not_a_weights_file(tmp_path: Path) -> None:
    p = tmp_path / "notes.txt"
    p.write_text("hello")
    with pytest.raises(UsageError, match="notes.txt.*neither"):
        read_vggface(p)
    assert not is_vggface_file(p)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    with pytest.raises(UsageError, match="other.h5.*conv1_1"):
        read_vggface(other)
    with pytest.raises(UsageError, match="not found"):
        read_vggface(tmp_path / "missing.pth")


def test_missing_layer_names_file_and_layer(tmp_path: Path, files) -> None:
    state, _, _ = files
    layers = to_keras(state)
    del layers["conv3_2"]
    h5 = write_h5(tmp_path / "holes.h5", layers)
    with pytest.raises(UsageError, match="holes.h5.*conv3_2"):
        read_vggface(h5)
    pth = tmp_path / "holes.pth"
    torch.save({k: v for k, v in state.items() if not k.startswith("fc7.")}, pth)
    with pytest.raises(UsageError, match="holes.pth.*fc7"):
        read_vggface(pth)


def test_fc8_is_optional(tmp_path: Path, files) -> None:
    state, _, _ = files
    layers = to_keras(state)
    del layers["fc8"]
    sd = read_vggface(write_h5(tmp_path / "notop8.h5", layers))
    assert "fc8.weight" not in sd and torch.equal(sd["fc7.weight"], state["fc7.weight"])


@pytest.mark.parametrize("layer", ["conv2_1", "fc6", "fc7"])
def test_wrong_shape_names_file_and_layer(tmp_path: Path, files, layer: str) -> None:
    state, _, _ = files
    layers = to_keras(state)
    kernel, bias = layers[layer]
    layers[layer] = (kernel[..., :-1, :] if kernel.ndim == 4 else kernel[:-1], bias)  # one input too few
    with pytest.raises(UsageError, match=f"bad.h5.*{layer}"):
        read_vggface(write_h5(tmp_path / "bad.h5", layers))
    bad = dict(state)
    bad[f"{layer}.weight"] = state[f"{layer}.weight"][:, :-1]
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(UsageError, match=f"bad.pth.*{layer}"):
        read_vggface(tmp_path / "bad.pth")
