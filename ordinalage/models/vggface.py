"""VGGFace (VGG-16) weight readers: keras-vggface `.h5` and PyTorch `vgg_face_dag.pth`.

Both give ONE canonical state dict (see DESIGN.md): keys `conv1_1.weight` ... `conv5_3.bias`,
`fc6.*`, `fc7.*` and, when the file has it, `fc8.*`; PyTorch layouts (conv OIHW, linear (out, in));
conv1_1's input channels in RGB order; fc6's input columns in PyTorch's CHW flatten order of the
pool5 map. So one input normalisation fits both files (`input_spec.VGGFACE_MEAN`: RGB 0-255 minus
(129.1863, 104.7624, 93.5940)).

Keras conversions: conv kernels HWIO -> OIHW; conv1_1 additionally flips its input channels (the
keras weights expect BGR); dense kernels (in, out) -> (out, in); fc6's rows are in HWC flatten order
(7, 7, 512) and are reordered to CHW. The readers check the layer chain (3 input channels, each
layer's input = the previous layer's output, fc6 input = conv5_3 channels x a square pool size)
rather than absolute widths, so they accept the real 4096-wide files and small test networks alike.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ordinalage.errors import UsageError

CONV_LAYERS = tuple(f"conv{b}_{i}" for b, n in zip(range(1, 6), (2, 2, 3, 3, 3), strict=True)
                    for i in range(1, n + 1))
FC_LAYERS = ("fc6", "fc7", "fc8")
REQUIRED_LAYERS = CONV_LAYERS + ("fc6", "fc7")  # fc8 (the 2622 identities) is optional: nobody uses it


def is_vggface_file(path: str | Path) -> bool:
    """True if `path` reads as a VGGFace weights file (either format)."""
    try:
        read_vggface(path)
    except UsageError:
        return False
    return True


def read_vggface(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a keras-vggface VGG16 `.h5` or `vgg_face_dag.pth` (or the canonical dict as `.safetensors`)
    into the canonical state dict."""
    import h5py

    p = Path(path)
    if not p.is_file():
        raise UsageError(f"VGGFace weights file not found: {p}")
    if h5py.is_hdf5(p):
        state = _read_keras_h5(p)
    else:
        state = _read_torch_pth(p)
    _check_chain(state, p)
    return state


# --------------------------------------------------------------------------------------------- readers


def _read_torch_pth(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            raw = load_file(str(path), device="cpu")
        else:
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a usage error
        raise UsageError(f"{path}: neither a keras-vggface .h5 nor a vgg_face_dag.pth state dict "
                         f"({type(exc).__name__}: {str(exc)[:200]})") from None
    if not isinstance(raw, dict) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise UsageError(f"{path}: neither a keras-vggface .h5 nor a vgg_face_dag.pth state dict "
                         "(expected a mapping of names to tensors)")
    state: dict[str, torch.Tensor] = {}
    for layer in CONV_LAYERS + FC_LAYERS:
        keys = (f"{layer}.weight", f"{layer}.bias")
        if not all(k in raw for k in keys):
            if layer in REQUIRED_LAYERS:
                raise UsageError(f"{path}: layer {layer} is missing (expected keys {keys[0]}, {keys[1]})")
            continue
        for k in keys:
            state[k] = raw[k].detach().to(torch.float32).contiguous()
    return state


def _h5_layer(root: object, layer: str, path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """(kernel, bias) of a keras layer group, or None if the file has no such layer."""
    if layer not in root:  # type: ignore[operator]
        return None
    group = root[layer]  # type: ignore[index]
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in group.attrs.get("weight_names", [])]
    kernel_name = next((n for n in names if n.endswith("kernel:0")), f"{layer}/kernel:0")
    bias_name = next((n for n in names if n.endswith("bias:0")), f"{layer}/bias:0")
    if kernel_name not in group or bias_name not in group:
        raise UsageError(f"{path}: layer {layer} has no {kernel_name} / {bias_name} datasets")
    return np.asarray(group[kernel_name], dtype=np.float32), np.asarray(group[bias_name], dtype=np.float32)


def _read_keras_h5(path: Path) -> dict[str, torch.Tensor]:
    import h5py

    try:
        fh = h5py.File(path, "r")
    except OSError as exc:
        raise UsageError(f"{path}: not a readable HDF5 file ({exc})") from None
    with fh:
        root = fh["model_weights"] if "model_weights" in fh else fh
        if "conv1_1" not in root:
            raise UsageError(f"{path}: an HDF5 file without keras-vggface VGG16 layers (layer conv1_1 is missing)")
        state: dict[str, torch.Tensor] = {}
        for layer in CONV_LAYERS + FC_LAYERS:
            found = _h5_layer(root, layer, path)
            if found is None:
                if layer in REQUIRED_LAYERS:
                    raise UsageError(f"{path}: layer {layer} is missing")
                continue
            kernel, bias = found
            state[f"{layer}.weight"] = _keras_kernel(layer, kernel, state, path)
            state[f"{layer}.bias"] = torch.from_numpy(np.ascontiguousarray(bias))
    return state


def _keras_kernel(layer: str, kernel: np.ndarray, done: dict[str, torch.Tensor], path: Path) -> torch.Tensor:
    """A keras kernel in canonical PyTorch layout (see the module docstring)."""
    if layer.startswith("conv"):
        if kernel.ndim != 4:
            raise UsageError(f"{path}: layer {layer} kernel has shape {kernel.shape}, expected HWIO (3, 3, in, out)")
        w = torch.from_numpy(kernel).permute(3, 2, 0, 1)  # HWIO -> OIHW
        if layer == "conv1_1":
            if w.shape[1] != 3:
                raise UsageError(f"{path}: layer conv1_1 kernel has {w.shape[1]} input channels, expected 3 (BGR)")
            w = w.flip(1)  # BGR -> RGB
        return w.contiguous()
    if kernel.ndim != 2:
        raise UsageError(f"{path}: layer {layer} kernel has shape {kernel.shape}, expected (in, out)")
    w = torch.from_numpy(kernel)
    if layer == "fc6":
        channels = done["conv5_3.weight"].shape[0]
        side = _pool_side(kernel.shape[0], channels)
        if side is None:
            raise UsageError(f"{path}: layer fc6 kernel has {kernel.shape[0]} rows, expected conv5_3's "
                             f"{channels} channels x a square pool map (25088 = 7 x 7 x 512)")
        # rows in HWC order -> (C, H, W) order
        w = w.reshape(side, side, channels, -1).permute(2, 0, 1, 3).reshape(channels * side * side, -1)
    return w.t().contiguous()


def _pool_side(rows: int, channels: int) -> int | None:
    if channels <= 0 or rows % channels:
        return None
    side = math.isqrt(rows // channels)
    return side if side * side * channels == rows and side > 0 else None


# --------------------------------------------------------------------------------------------- checks


def _check_chain(state: dict[str, torch.Tensor], path: Path) -> None:
    """Shapes: 3x3 convs chained from 3 input channels, fc6 fed by conv5_3 x a square map, fc chain."""
    c_in = 3
    for layer in CONV_LAYERS:
        w, b = state[f"{layer}.weight"], state[f"{layer}.bias"]
        if w.ndim != 4 or tuple(w.shape[1:]) != (c_in, 3, 3) or tuple(b.shape) != (w.shape[0],):
            raise UsageError(f"{path}: layer {layer} has weight {tuple(w.shape)} and bias {tuple(b.shape)}, "
                             f"expected weight (out, {c_in}, 3, 3) and bias (out,)")
        c_in = w.shape[0]
    prev = None
    for layer in FC_LAYERS:
        if f"{layer}.weight" not in state:
            continue
        w, b = state[f"{layer}.weight"], state[f"{layer}.bias"]
        if w.ndim != 2:
            ok_in = False
        elif layer == "fc6":
            ok_in = _pool_side(w.shape[1], c_in) is not None
        else:
            ok_in = w.shape[1] == prev
        if not ok_in or tuple(b.shape) != (w.shape[0],):
            expected = f"{c_in} x 7 x 7 inputs" if layer == "fc6" else f"{prev} inputs"
            raise UsageError(f"{path}: layer {layer} has weight {tuple(w.shape)} and bias {tuple(b.shape)}, "
                             f"expected (out, {expected}) and bias (out,)")
        prev = w.shape[0]
