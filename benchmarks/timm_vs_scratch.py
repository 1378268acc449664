"""A small timm backbone beside the scratch CNN on real faces, at (about) equal wall minutes.

    python benchmarks/timm_vs_scratch.py                           # 4 minutes each (docs/results.md)
    python benchmarks/timm_vs_scratch.py --minutes 10 --backbones scratch,timm:convnext_nano
    python benchmarks/timm_vs_scratch.py --smoke                   # seconds, synthetic faces

Each backbone first runs a 10 s forward+backward probe on random 64 px batches; its epoch count is
the number of passes over the training split that fit in `--minutes` at that speed (at least 1).
Then `ordinalage train` (the CLI, in a subprocess) trains it with the settings of
configs/experiments/utkface_bakeoff.yaml (random init, coral head over years), evaluating on the
test split at the end. Records wall seconds, training img/s (metrics.csv), best val MAE and test
MAE in benchmarks/results/timm_vs_scratch.json.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import UTKFACE, parser, write_result  # noqa: E402

CONFIG = ROOT / "configs" / "experiments" / "utkface_bakeoff.yaml"


def probe_images_per_s(backbone: str, size: int, batch: int = 64, seconds: float = 10.0) -> float:
    """Forward+backward images/s of the model on random uint8 batches (after 2 warm-up steps)."""
    import torch

    from ordinalage.config import load_config
    from ordinalage.groups import AgeGroups
    from ordinalage.models.model import build_model

    cfg = load_config(CONFIG, {"model.backbone": backbone})
    model = build_model(cfg.model, AgeGroups.parse(cfg.data.groups)).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    spec = model.input_spec
    x = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8)
    age = torch.randint(1, 90, (batch,)).float()
    group = torch.zeros(batch, dtype=torch.long)
    n, start = 0, 0.0
    for step in range(10_000):
        if step == 2:
            start, n = time.perf_counter(), 0
        loss = model.loss(model(spec.normalize(x)), age, group)
        opt.zero_grad()
        loss.backward()
        opt.step()
        n += batch
        if step >= 2 and time.perf_counter() - start > seconds:
            break
    return n / (time.perf_counter() - start)


def run_cli(backbone: str, epochs: int, out: Path, sets: list[str]) -> float:
    cmd = [sys.executable, "-m", "ordinalage", "train", "--config", str(CONFIG), "--backbone", backbone,
           "--epochs", str(epochs), "--out", str(out), *[a for s in sets for a in ("--set", s)]]
    print("[run]", " ".join(cmd), file=sys.stderr)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT)
    return time.perf_counter() - start


def read_run(run_dir: Path) -> dict[str, Any]:
    with (run_dir / "metrics.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    summary = json.loads((run_dir / "summary.json").read_text())
    return {"epochs_done": len(rows),
            "train_images_per_s": round(sum(float(r["images_per_s"]) for r in rows) / len(rows), 1),
            "train_seconds": round(sum(float(r["seconds"]) for r in rows), 1),
            "best_val_mae": round(min(float(r["val_mae"]) for r in rows), 3),
            "test_mae": round(float(summary["test"]["mae"]), 3) if "test" in summary else None,
            "run_dir": str(run_dir)}


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=4.0, help="training budget per backbone")
    p.add_argument("--backbones", default="scratch,timm:resnet18d")
    p.add_argument("--data", default=str(UTKFACE))
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--out", default=str(ROOT / "runs" / "timm_vs_scratch"))
    p.add_argument("--smoke", action="store_true", help="synthetic faces, 1 epoch, tiny: proves the script runs")
    args = p.parse_args()
    size = 64
    sets = [f"data.num_workers={args.workers}", "train.device=cpu"]
    if args.smoke:
        size = 32
        sets += ["data.sources=[synth]", "data.synth_n=120", "data.synth_size=32", f"data.image_size={size}",
                 "data.groups=0-10,11-20,21-30,31-40,41-50,51-60,61-70", "model.width=8"]
    else:
        sets += [f"data.sources=[utkface:{args.data}]"]
    n_train = 120 * 0.7 if args.smoke else sum(1 for _ in Path(args.data).glob("*.jpg")) * 0.7
    rows = []
    for backbone in args.backbones.split(","):
        ips = probe_images_per_s(backbone, size, seconds=1.0 if args.smoke else 10.0)
        epochs = 1 if args.smoke else max(1, int(args.minutes * 60 * ips / n_train))
        out = Path(args.out) / backbone.replace(":", "-")
        wall = run_cli(backbone, epochs, out, sets)
        rows.append({"backbone": backbone, "probe_images_per_s": round(ips, 1), "epochs": epochs,
                     "wall_seconds": round(wall, 1), **read_run(out)})
        print(json.dumps(rows[-1]), file=sys.stderr)
    write_result("timm_vs_scratch", {"settings": {"config": str(CONFIG.relative_to(ROOT)), "image_size": size,
                                                  "minutes": args.minutes, "sets": sets, "smoke": args.smoke,
                                                  "init": "random (no downloads)"},
                                     "rows": rows},
                 out=args.json or (Path(args.out) / "smoke.json" if args.smoke else None))


if __name__ == "__main__":
    main()
