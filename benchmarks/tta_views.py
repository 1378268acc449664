"""Multi-crop test-time augmentation: does averaging more views than the mirror lower the MAE?

    python benchmarks/tta_views.py benchmarks/runs/recipe30_burst

For a run (an ensemble's folder: every member), each image of the validation and test splits is
seen through several views: the mirror, and zooms and shifts of the crop (an affine resampling of
the decoded chip, reflection at the borders, then each view's mirror). Each member averages its
logits over the views, as `--tta` averages the image and its mirror; the members' distributions
are averaged and decoded by the run's rule. Decisions go by validation MAE; test is for the record.
Writes benchmarks/results/tta_views.json.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import parser, write_result  # noqa: E402

#: name -> views as (zoom, dx, dy): zoom > 1 shows less of the chip (closer), dx/dy shift by a share of the side
VIEW_SETS: dict[str, list[tuple[float, float, float]]] = {
    "none": [(1.0, 0.0, 0.0)],
    "flip": [(1.0, 0.0, 0.0)],
    "flip+zoom": [(1.0, 0.0, 0.0), (1.05, 0.0, 0.0), (0.95, 0.0, 0.0)],
    "flip+shift": [(1.0, 0.0, 0.0), (1.0, 0.03, 0.0), (1.0, -0.03, 0.0), (1.0, 0.0, 0.03), (1.0, 0.0, -0.03)],
    "flip+zoom+shift": [(1.0, 0.0, 0.0), (1.05, 0.0, 0.0), (0.95, 0.0, 0.0), (1.0, 0.03, 0.0), (1.0, -0.03, 0.0),
                        (1.0, 0.0, 0.03), (1.0, 0.0, -0.03)],
}


def view(x: torch.Tensor, zoom: float, dx: float, dy: float) -> torch.Tensor:
    """The batch resampled by an affine map (zoom about the centre, shift by dx/dy of the side)."""
    if (zoom, dx, dy) == (1.0, 0.0, 0.0):
        return x
    theta = torch.tensor([[1 / zoom, 0.0, 2 * dx], [0.0, 1 / zoom, 2 * dy]], dtype=x.dtype).expand(x.shape[0], 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def member_logits(model: torch.nn.Module, x: torch.Tensor, views: list[tuple[float, float, float]],
                  mirror: bool) -> torch.Tensor:
    out = []
    for v in views:
        xv = view(x, *v)
        out.append(model(xv).float())
        if mirror:
            out.append(model(xv.flip(3)).float())
    return torch.stack(out).mean(0)


def evaluate_views(loaded: list[Any], batches: list[dict[str, torch.Tensor]], name: str) -> float:
    from ordinalage.posterior.adapt import average_outputs

    views, mirror = VIEW_SETS[name], name != "none"
    probas, ages = [], None
    for m in loaded:
        parts = []
        with torch.inference_mode():
            for b in batches:
                x = m.input_spec.normalize(b["image"])
                parts.append(m.model.head.decode(member_logits(m.model, x, views, mirror)).label_proba.numpy())
        probas.append(np.concatenate(parts))
    ages = np.concatenate([b["age"].numpy() for b in batches])
    age, _, _, _ = average_outputs(probas, [np.zeros(len(ages))] * len(probas), [np.zeros((len(ages), 1))] * len(probas),
                                   loaded[0])
    return float(np.mean(np.abs(age - ages)))


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("run")
    p.add_argument("--sets", default=",".join(VIEW_SETS))
    args = p.parse_args(argv)
    from ordinalage.data.dataset import build_loader
    from ordinalage.runs.members import load_members
    from ordinalage.runs.rundir import RunDir

    loaded = load_members(args.run)
    first = loaded[0]
    rows = []
    splits = {}
    for split in ("val", "test"):
        records = RunDir(first.run_dir).read_split(split)
        loader = build_loader(records, first.groups, first.config.data, first.input_spec.size, 256, train=False,
                              seed=0, num_workers=first.config.data.num_workers)
        splits[split] = [b for b in loader if b is not None]
    for name in args.sets.split(","):
        n_views = len(VIEW_SETS[name]) * (1 if name == "none" else 2)
        row = {"views": name, "passes_per_face": n_views * len(loaded),
               **{f"{s}_mae": round(evaluate_views(loaded, b, name), 4) for s, b in splits.items()}}
        rows.append(row)
        print(row, file=sys.stderr)
    write_result("tta_views", {"settings": {"run": args.run, "view_sets": {k: VIEW_SETS[k] for k in args.sets.split(",")}},
                               "rows": rows, "chosen_on": "val_mae"}, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
