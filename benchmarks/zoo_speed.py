"""The shipped model against a run folder of the 30-minute recipe: cold start and steady-state speed.

Cold start: a fresh Python process imports ordinalage, loads the model (`ordinalage.load(MODEL)`) and
predicts one 200x200 UTKFace face (detector on); seconds for each step, the median of `--starts`
processes, the two models alternating. Steady state: faces per second in one process, one photo per
call with the face detector (`predict`) and 32 aligned faces per call without it (`predict_batch`,
detect=False), both models side by side.

    python benchmarks/zoo_speed.py [--run benchmarks/runs/zoo_utkface_small/teacher] [--starts 5]
    python benchmarks/zoo_speed.py --report-only     # rewrite docs/performance.md's block from the JSON
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import RESULTS, ROOT, parser, ratio, replace_block, utkface_files, write_result

DOCS = ROOT / "docs" / "performance.md"

COLD = """
import json, sys, time
t0 = time.perf_counter()
import ordinalage
t1 = time.perf_counter()
est = ordinalage.load(sys.argv[1] or None, device="cpu")
t2 = time.perf_counter()
faces = est.predict(sys.argv[2])
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "first_predict_s": t3 - t2, "total_s": t3 - t0,
                  "faces": len(faces)}))
"""


def cold_start(model: str, image: Path) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", COLD, model, str(image)], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def steady(model: str, images: list[Path], seconds: float) -> dict[str, float]:
    """Faces per second: photos one at a time with the detector, then aligned faces 32 per call."""
    import numpy as np
    from PIL import Image

    import ordinalage

    est = ordinalage.load(model or None, device="cpu")
    rgb = [np.asarray(Image.open(p).convert("RGB")) for p in images]
    est.predict(rgb[0])  # warm-up
    result = {}
    for name, call, per_call in (("detect_faces_per_s", lambda i: est.predict(rgb[i % len(rgb)]), 1),
                                 ("aligned_faces_per_s", lambda i: est.predict_batch(rgb[:32], detect=False), 32)):
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            call(n)
            n += 1
        result[name] = round(n * per_call / (time.perf_counter() - start), 1)
    return result


def docs_block(result: dict[str, Any]) -> str:
    """docs/performance.md's table of the shipped model against the run folder, from zoo_speed.json."""
    cold, speed = result["cold_start"], result["steady"]
    rows = [("shipped `utkface-small` (one network)", "zoo"), ("the 30-minute recipe's run folder (four)", "run")]
    lines = ["<!-- zoo-speed:start -->",
             "| model | load (s) | first prediction (s) | photos/s, detector on | aligned faces/s |",
             "|---|---|---|---|---|"]
    lines += [f"| {label} | {cold[k]['load_s']:.2f} | {cold[k]['first_predict_s']:.2f} | "
              f"{speed[k]['detect_faces_per_s']:.1f} | {speed[k]['aligned_faces_per_s']:.0f} |" for label, k in rows]
    lines += ["", f"Medians of {result['settings']['starts']} fresh processes (load includes importing torch); "
              f"throughput over {result['settings']['seconds']:.0f} s each, one process, CPU; load average at the "
              f"end {result['machine']['loadavg_at_start'][0]:.1f} on {result['machine']['cpu_count']} cores "
              "(benchmarks/results/zoo_speed.json).", "<!-- zoo-speed:end -->"]
    return "\n".join(lines)


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--run", default=str(ROOT / "benchmarks" / "runs" / "zoo_utkface_small" / "teacher"),
                   help="a run folder of the 30-minute recipe (default: the zoo model's teacher)")
    p.add_argument("--starts", type=int, default=5, help="cold starts per model")
    p.add_argument("--seconds", type=float, default=10.0, help="seconds per steady-state measurement")
    p.add_argument("--report-only", action="store_true")
    args = p.parse_args()
    if args.report_only:
        replace_block(DOCS, docs_block(json.loads((RESULTS / "zoo_speed.json").read_text(encoding="utf-8"))))
        return
    images = utkface_files(n=32, seed=0)
    models = {"zoo": "", "run": args.run}  # "" -> ordinalage.load() with no model: the shipped default
    starts: dict[str, list[dict[str, float]]] = {k: [] for k in models}
    for _ in range(args.starts):
        for key, model in models.items():
            starts[key].append(cold_start(model, images[0]))
    cold = {key: {field: round(statistics.median(r[field] for r in rows), 3)
                  for field in ("import_s", "load_s", "first_predict_s", "total_s")} for key, rows in starts.items()}
    speed = {key: steady(model, images, args.seconds) for key, model in models.items()}
    result: dict[str, Any] = {
        "settings": {"run": str(Path(args.run)), "starts": args.starts, "seconds": args.seconds,
                     "images": "32 UTKFace 200x200 faces (seed 0)"},
        "cold_start": cold, "steady": speed,
        "ratio": ratio(speed["zoo"]["aligned_faces_per_s"], speed["run"]["aligned_faces_per_s"]),
        "ratio_meaning": "aligned faces per second, shipped model / the run folder",
        "cold_start_ratio": ratio(cold["run"]["total_s"], cold["zoo"]["total_s"]),
    }
    write_result("zoo_speed", result, args.json)


if __name__ == "__main__":
    main()
