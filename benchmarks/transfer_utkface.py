"""Transfer on real faces without downloads: does `--init` from a model trained on other faces help?

    python benchmarks/transfer_utkface.py                  # halves of the UTKFace folder, 3 seeds
    python benchmarks/transfer_utkface.py --smoke          # seconds, synthetic faces: proves it runs

The folder is split by content hash into halves A and B: every file's SHA-256 is re-hashed with
`--split-seed` and the lower half of that order is A, so byte-identical duplicates always land in the
same half and the split does not depend on file names or listing order. One model is trained on A
(`--epochs-a`); then, for each seed, B is trained `--epochs-b` epochs from scratch and from the A
model (`model.init`: backbone and head, same groups), on the same split of B (fixed split seed). B's
test MAE both ways goes to benchmarks/results/transfer_utkface.json. Settings otherwise come from
configs/experiments/utkface_bakeoff.yaml (scratch CNN, coral head over years, 64 px).
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import UTKFACE, mean_std, parser, utkface_files, write_csv_spec, write_result  # noqa: E402

CONFIG = ROOT / "configs" / "experiments" / "utkface_bakeoff.yaml"


def split_halves(files: list[Path], seed: int) -> tuple[list[Path], list[Path]]:
    """Halves A and B by content: sort by sha256(seed, file hash); duplicates share a half."""
    from ordinalage.data.hashing import content_hashes

    hashes = content_hashes(files)
    key = {h: hashlib.sha256(f"{seed}:{h}".encode()).hexdigest() for h in set(hashes)}
    order = sorted(set(hashes), key=key.__getitem__)
    in_a = set(order[: len(order) // 2])
    a = [f for f, h in zip(files, hashes, strict=True) if h in in_a]
    b = [f for f, h in zip(files, hashes, strict=True) if h not in in_a]
    return a, b


def train(sets: list[str], out: Path, init: Path | None) -> dict[str, Any]:
    """One run through `fit` (which applies `model.init`), then the test evaluation."""
    from ordinalage.config import load_config
    from ordinalage.evaluation.evaluate import evaluate_after_training
    from ordinalage.training.train import train as fit

    config = load_config(CONFIG, sets=[*sets, f"train.out_dir={out}"] + ([f"model.init={init}"] if init else []))
    start = time.perf_counter()
    run_dir = fit(config, quiet=True)
    test = evaluate_after_training(run_dir, show=False) or {}
    wall = time.perf_counter() - start
    summary = json.loads((run_dir / "summary.json").read_text())
    return {"run_dir": str(run_dir), "wall_seconds": round(wall, 1), "best_val": summary.get("best_value"),
            "test_mae": test.get("mae"), "init": str(init) if init else None}


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--data", default=str(UTKFACE))
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--epochs-a", type=int, default=8)
    p.add_argument("--epochs-b", type=int, default=4)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "runs" / "transfer_utkface"))
    p.add_argument("--smoke", action="store_true", help="synthetic faces, 1 epoch each, 1 seed, tiny network")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sets = [f"data.num_workers={args.workers}", "train.device=cpu", "data.split_seed=0"]
    if args.smoke:
        from ordinalage.data.synth import write_synth

        folder = Path(tempfile.mkdtemp(prefix="transfer-smoke-"))
        write_synth(folder, n=160, seed=0, size=32)
        files = sorted(folder.glob("*.jpg"))
        args.epochs_a, args.epochs_b, args.seeds = 1, 1, 1
        sets += ["data.image_size=32", "model.width=8", "data.num_workers=0", "train.batch_size=32"]
    else:
        files = utkface_files(args.data)
    a, b = split_halves(files, args.split_seed)
    spec_a = write_csv_spec(a, out / "half_a.csv")
    spec_b = write_csv_spec(b, out / "half_b.csv")
    print(f"half A: {len(a)} images, half B: {len(b)} images", file=sys.stderr)

    run_a = train([*sets, f"data.sources=[{spec_a}]", f"train.epochs={args.epochs_a}", "train.seed=0"], out / "A", None)
    rows: list[dict[str, Any]] = []
    for seed in range(args.seeds):
        for arm, init in (("scratch", None), ("init_from_A", Path(run_a["run_dir"]))):
            r = train([*sets, f"data.sources=[{spec_b}]", f"train.epochs={args.epochs_b}", f"train.seed={seed}"],
                      out / f"B-{arm}-seed{seed}", init)
            rows.append({"arm": arm, "seed": seed, **r})
            print(json.dumps(rows[-1]), file=sys.stderr)
    result = {arm: mean_std([r["test_mae"] for r in rows if r["arm"] == arm]) for arm in ("scratch", "init_from_A")}
    write_result("transfer_utkface", {
        "settings": {"config": str(CONFIG.relative_to(ROOT)), "sets": sets, "split_seed": args.split_seed,
                     "epochs_a": args.epochs_a, "epochs_b": args.epochs_b, "seeds": args.seeds, "smoke": args.smoke,
                     "half_a": len(a), "half_b": len(b)},
        "run_a": run_a, "rows": rows, "test_mae": result,
    }, out=args.json or (out / "smoke.json" if args.smoke else None))


if __name__ == "__main__":
    main()
