"""`ordinalage export`: a checkpoint as ONNX or TorchScript, checked against PyTorch on the spot.

The exported graph is `ExportModule`: the AgeModel and its head's decoding, from a normalised face
batch `faces` (N, 3, S, S) float32 (uint8 RGB / 255, minus mean, over std: see the metadata) to
`group_proba` (N, G), `age` (N,) and `group` (N,) int64. The batch axis is dynamic.

An ensemble (an ensemble run folder, or `--ensemble` runs) is exported as one graph,
`EnsembleExportModule`: every member sees the faces (renormalised to its own mean and std when
they differ from the first member's), their label distributions are averaged and decoded by the
first member's rule, or, when a member has no distribution (regression), their ages and group
distributions are averaged: what `evaluate`, `predict` and `serve` do with the same members.

ONNX uses torch's TorchScript-based exporter (`dynamo=False`): in torch 2.14 the default dynamo
exporter needs the extra `onnxscript` package and still cannot convert CORN's `cumprod`. Two aten
ops get exact ONNX translations here, registered only for the length of the export: `cumprod`
(CORN; the built-in exporter has none) and `index_add` (years -> groups; the built-in translation
overwrites repeated indices instead of adding them). After writing, the file is run with
onnxruntime (ONNX) or `torch.jit.load` (TorchScript) on a batch of another size than the one traced,
and the largest difference to PyTorch is printed and returned.
"""

from __future__ import annotations

import contextlib
import json
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ordinalage.errors import UsageError

FORMATS = ("onnx", "torchscript")
OPSET = 17  # ScatterElements with reduction="add" needs 16
INPUT_NAME = "faces"
OUTPUT_NAMES = ("group_proba", "age", "group")
TOLERANCE = {"group_proba": 1e-4, "age": 1e-3, "group": 0.0}
TRACE_BATCH, CHECK_BATCH = 2, 5


class ExportMismatch(UsageError):
    """The exported model does not reproduce PyTorch's outputs within `TOLERANCE`."""


class ExportModule(nn.Module):
    """AgeModel + decode as one traceable module: faces -> (group_proba, age, group)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        dec = self.model.decode(self.model(faces))
        return dec.group_proba, dec.age, dec.group


class EnsembleExportModule(nn.Module):
    """Several AgeModels on the same faces, averaged as `evaluation.adapt.average_outputs` averages
    them: faces (normalised for the first member) -> (group_proba, age, group)."""

    def __init__(self, models: Sequence[nn.Module], specs: Sequence[Any]) -> None:
        super().__init__()
        self.members = nn.ModuleList(models)
        first = specs[0]
        # member i sees (x * std0 + mean0 - mean_i) / std_i = x * scale_i + shift_i
        scale = [[a / b for a, b in zip(first.std, s.std, strict=True)] for s in specs]
        shift = [[(m0 - m) / sd for m0, m, sd in zip(first.mean, s.mean, s.std, strict=True)] for s in specs]
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float32).view(len(specs), 1, 3, 1, 1))
        self.register_buffer("shift", torch.tensor(shift, dtype=torch.float32).view(len(specs), 1, 3, 1, 1))

    def forward(self, faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # scale 1 and shift 0 (exactly) for members normalised like the first
        decoded = [model.decode(model(faces * self.scale[i] + self.shift[i])) for i, model in enumerate(self.members)]
        head = self.members[0].head
        if all(d.label_proba is not None for d in decoded):
            proba = torch.stack([d.label_proba for d in decoded]).mean(0)
            if head.target == "age":
                age = head.age_from(proba)
                return head.years_to_groups(proba), age, head.group_of_age(age)
            # groups: the median's group (age_from's rule over the group labels), else the most probable
            group = head.age_from(proba).long() if head.decoder == "median" else proba.argmax(1)
            return proba, proba @ head.midpoints, group
        age = torch.stack([d.age for d in decoded]).mean(0)
        return torch.stack([d.group_proba for d in decoded]).mean(0), age, head.group_of_age(age)


# ---------------------------------------------------------------------------------------------
# ONNX translations for the legacy exporter


def _cumprod_symbolic(g: Any, x: Any, dim: int, dtype: Any) -> Any:
    """cumprod(x) = sign * exp(cumsum(log|x|)); sign from the parity of the running count of negatives.
    Zeros give log 0 = -inf, hence exactly 0 from there on, as a product should."""
    from torch.onnx import symbolic_helper

    if not symbolic_helper._is_none(dtype):
        raise torch.onnx.errors.SymbolicValueError("cumprod with a dtype argument is not supported here", x)

    def const(v: float) -> Any:
        return g.op("Constant", value_t=torch.tensor(v, dtype=torch.float32))

    axis = g.op("Constant", value_t=torch.tensor(dim, dtype=torch.int64))
    magnitude = g.op("Exp", g.op("CumSum", g.op("Log", g.op("Abs", x)), axis))
    negatives = g.op("Cast", g.op("Less", x, const(0.0)), to_i=1)  # 1 = FLOAT
    parity = g.op("Mod", g.op("CumSum", negatives, axis), const(2.0), fmod_i=1)
    sign = g.op("Sub", const(1.0), g.op("Mul", const(2.0), parity))
    return g.op("Mul", magnitude, sign)


def _index_add_symbolic(g: Any, x: Any, dim: int, index: Any, source: Any, alpha: float) -> Any:
    """index_add as ScatterElements(reduction="add"): repeated indices accumulate."""
    from torch.onnx import symbolic_helper

    rank = symbolic_helper._get_tensor_rank(source)
    if rank is None:
        raise torch.onnx.errors.SymbolicValueError("index_add: the rank of the source must be known", source)
    dim = dim % rank
    if alpha != 1:
        source = g.op("Mul", source, g.op("Constant", value_t=torch.tensor(alpha, dtype=torch.float32)))
    shape = [1] * rank
    shape[dim] = -1
    idx = g.op("Reshape", index, g.op("Constant", value_t=torch.tensor(shape, dtype=torch.int64)))
    idx = g.op("Expand", idx, g.op("Shape", source))
    return g.op("ScatterElements", x, idx, source, axis_i=dim, reduction_s="add")


@contextlib.contextmanager
def onnx_symbolics(opset: int = OPSET) -> Iterator[None]:
    """Register the translations above for the length of one export (the built-in ones come back after)."""
    from torch.onnx import register_custom_op_symbolic, symbolic_helper, unregister_custom_op_symbolic

    ops = {
        "aten::cumprod": symbolic_helper.parse_args("v", "i", "v")(_cumprod_symbolic),
        "aten::index_add": symbolic_helper.parse_args("v", "i", "v", "v", "f")(_index_add_symbolic),
    }
    for name, fn in ops.items():
        register_custom_op_symbolic(name, fn, opset)
    try:
        yield
    finally:
        for name in ops:
            unregister_custom_op_symbolic(name, opset)


# ---------------------------------------------------------------------------------------------
# export + check


def _require_onnx() -> tuple[Any, Any]:
    try:
        import onnx
        import onnxruntime
    except ImportError as exc:
        raise UsageError(f"ONNX export needs the '{exc.name}' package: pip install onnx onnxruntime "
                         "(both come with: pip install 'ordinalage[dev]')") from None
    return onnx, onnxruntime


def export_onnx(module: ExportModule, example: torch.Tensor, out: Path, metadata: dict[str, Any]) -> None:
    """Write `module` as ONNX (dynamic batch axis) with `metadata` as the model's metadata_props."""
    onnx, _ = _require_onnx()
    axes = {INPUT_NAME: {0: "batch"}, **{name: {0: "batch"} for name in OUTPUT_NAMES}}
    with onnx_symbolics(OPSET), warnings.catch_warnings():
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=FutureWarning)
        torch.onnx.export(module, (example,), str(out), dynamo=False, opset_version=OPSET,
                          input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES), dynamic_axes=axes)
    proto = onnx.load(str(out))
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(out))


def run_onnx(path: Path, faces: torch.Tensor) -> list[np.ndarray]:
    """Outputs of an exported ONNX file on CPU with onnxruntime."""
    _, ort = _require_onnx()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(list(OUTPUT_NAMES), {INPUT_NAME: faces.cpu().numpy()})


def export_torchscript(module: ExportModule, example: torch.Tensor, out: Path, metadata: dict[str, Any]) -> None:
    """Trace `module` and save it with `metadata` as the extra file `ordinalage.json`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=FutureWarning)
        traced = torch.jit.trace(module, (example,), check_trace=False)
        torch.jit.save(traced, str(out), _extra_files={"ordinalage.json": json.dumps(metadata)})


def run_torchscript(path: Path, faces: torch.Tensor) -> list[np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=FutureWarning)
        loaded = torch.jit.load(str(path), map_location=faces.device)
    with torch.no_grad():
        return [t.cpu().numpy() for t in loaded(faces)]


def compare_outputs(reference: list[np.ndarray], exported: list[np.ndarray]) -> dict[str, float]:
    """Max |difference| per output name (group as a number)."""
    out = {}
    for name, ref, got in zip(OUTPUT_NAMES, reference, exported, strict=True):
        if ref.shape != got.shape:
            raise ExportMismatch(f"export: output '{name}' has shape {got.shape}, PyTorch gives {ref.shape}")
        out[name] = float(np.abs(ref.astype(np.float64) - got.astype(np.float64)).max()) if ref.size else 0.0
    return out


def run_export(checkpoint: str | Path, fmt: str = "onnx", out: str | Path = "model.onnx",
               device: str = "cpu", ensemble: Sequence[str | Path] = ()) -> dict[str, Any]:
    """Export `checkpoint` (file or run folder) to `out` and check it; return the check as a dict.

    An ensemble run folder, or more runs in `ensemble`, are written as one averaged graph
    (`EnsembleExportModule`). `device` is where the TorchScript trace is made (the trace is fixed
    to that device type); ONNX files are device-neutral. Raises ExportMismatch (a UsageError) when
    the export differs from PyTorch by more than `TOLERANCE`.
    """
    from ordinalage.runs.members import load_members
    from ordinalage.runs.runtime import select_device

    if fmt not in FORMATS:
        raise UsageError(f"fmt: unknown format {fmt!r} (choose from {', '.join(FORMATS)})", option="fmt")
    if fmt == "onnx":
        _require_onnx()
    dev = select_device(device)
    members = load_members(checkpoint, ensemble, dev)
    loaded = members[0]
    if len(members) == 1:
        module: nn.Module = ExportModule(loaded.model)
    else:
        module = EnsembleExportModule([m.model for m in members], [m.input_spec for m in members])
    module = module.to(dev).eval()
    spec = loaded.input_spec
    size = int(spec.size)
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{out.parent}: cannot create the output folder ({exc.strerror or exc})") from None
    metadata = {
        "format": "ordinalage-export", "input": INPUT_NAME, "input_shape": ["batch", 3, size, size],
        "input_dtype": "float32", "normalize": {"scale": 1 / 255, "mean": list(spec.mean), "std": list(spec.std)},
        "outputs": list(OUTPUT_NAMES), "groups": list(loaded.groups.labels),
        "head": loaded.config.model.head, "target": loaded.config.model.target,
        "checkpoint": str(loaded.checkpoint_path),
    }
    if len(members) > 1:
        metadata["members"] = [str(m.checkpoint_path) for m in members]
        metadata["heads"] = [m.config.model.head for m in members]
    gen = torch.Generator().manual_seed(0)
    example = torch.randn(TRACE_BATCH, 3, size, size, generator=gen).to(dev)
    check = torch.randn(CHECK_BATCH, 3, size, size, generator=gen).to(dev)
    with torch.no_grad():
        reference = [t.cpu().numpy() for t in module(check)]
        if fmt == "onnx":
            export_onnx(module, example, out, metadata)
        else:
            export_torchscript(module, example, out, metadata)
    exported = run_onnx(out, check) if fmt == "onnx" else run_torchscript(out, check)
    diffs = compare_outputs(reference, exported)
    ok = all(diffs[k] <= TOLERANCE[k] for k in OUTPUT_NAMES)
    result = {"format": fmt, "out": str(out), "checkpoint": str(loaded.checkpoint_path), "members": len(members),
              "input_size": size, "groups": list(loaded.groups.labels), "checked_batch": CHECK_BATCH, "max_abs_diff": diffs,
              "max_diff": max(diffs.values()), "tolerance": dict(TOLERANCE), "ok": ok}
    if fmt == "onnx":
        result["opset"] = OPSET
    shown = ", ".join(f"{k} {v:.3g}" for k, v in diffs.items())
    what = f"an ensemble of {len(members)} models as {fmt}" if len(members) > 1 else fmt
    print(f"exported {what} to {out}; max |difference| to PyTorch on a batch of {CHECK_BATCH}: {shown}",
          file=sys.stderr)
    if not ok:
        raise ExportMismatch(f"{out}: the export differs from PyTorch beyond the tolerance {TOLERANCE} ({shown})")
    return result
