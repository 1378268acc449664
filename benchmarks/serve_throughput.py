"""Serve throughput: `ordinalage serve` (uvicorn, a real subprocess on 127.0.0.1) against calling
`AgeEstimator.predict` directly in one process, on 200x200 face images with the scratch model.

Each client thread keeps one HTTP connection and POSTs JPEGs in a bounded loop (`--requests` per
concurrency level, split over the clients); requests/s and p50/p95 latency at each concurrency, for
the server with request batching (the default) and with a plain lock around the model. The direct
figure does the same work in one thread (decode the JPEG as the server does, detect, crop, model).
Optionally (`--page-seconds`, needs chromium + chromedriver) the page's annotated frames per second
on a fake camera in headless Chromium. The clients share the machine's cores with the server.

    python benchmarks/serve_throughput.py [--requests 96] [--concurrency 1 4 16] [--page-seconds 8]
"""

from __future__ import annotations

import io
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import ROOT, UTKFACE, parser, ratio, write_result

sys.path.insert(0, str(ROOT / "tests"))
from browser_tools import (  # noqa: E402
    browser_missing,
    chromium,
    face_scene,
    free_port,
    start_server,
    stop_server,
    write_y4m,
)


def make_checkpoint(out: Path) -> Path:
    """One epoch of the default scratch model (CORAL, 64 px input) on 200 synthetic faces: speed only."""
    from ordinalage.config import load_config
    from ordinalage.training.fit import fit

    sets = ["data.synth_n=200", "data.synth_size=64", "data.num_workers=0", "train.epochs=1", "train.device=cpu",
            "train.eval_on_end=false", f"data.cache_dir={out / 'cache'}", f"train.out_dir={out / 'run'}"]
    return fit(load_config(sets=sets), quiet=True)


def face_jpegs(n: int) -> tuple[list[bytes], str]:
    """`n` 200x200 face JPEGs: UTKFace chips when present, else synthetic faces."""
    from PIL import Image

    if UTKFACE.is_dir():
        files = sorted(UTKFACE.glob("*.jpg"))[:: max(1, len(list(UTKFACE.glob("*.jpg"))) // n)][:n]
        return [f.read_bytes() for f in files], "utkface"
    from ordinalage.data.synth import render_face

    out = []
    for i in range(n):
        buf = io.BytesIO()
        Image.fromarray(render_face(10 + 4 * i, np.random.default_rng(i), 200)).save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out, "synth"


def stats(latencies_ms: list[float], seconds: float) -> dict[str, Any]:
    lat = np.asarray(latencies_ms)
    return {"requests": len(lat), "seconds": round(seconds, 3), "requests_per_s": round(len(lat) / seconds, 2),
            "p50_ms": round(float(np.percentile(lat, 50)), 1), "p95_ms": round(float(np.percentile(lat, 95)), 1)}


def direct(checkpoint: Path, images: list[bytes], n: int, threads: int | None) -> dict[str, Any]:
    import torch

    import ordinalage
    from ordinalage.inference.serve import decode_upload

    default = torch.get_num_threads()
    torch.set_num_threads(threads or default)
    try:
        return _direct(ordinalage.load(checkpoint, device="cpu"), images, n, decode_upload)
    finally:
        torch.set_num_threads(default)


def _direct(est: Any, images: list[bytes], n: int, decode_upload: Any) -> dict[str, Any]:
    est.predict(decode_upload(images[0]))  # warm-up
    lat, start = [], time.perf_counter()
    for i in range(n):
        t = time.perf_counter()
        est.predict(decode_upload(images[i % len(images)]))
        lat.append((time.perf_counter() - t) * 1000)
    return stats(lat, time.perf_counter() - start)


def load_test(url: str, images: list[bytes], clients: int, total: int) -> dict[str, Any]:
    import httpx

    per_client = [total // clients + (1 if k < total % clients else 0) for k in range(clients)]
    lat: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)

    def client(k: int) -> None:
        with httpx.Client(timeout=60) as http:
            http.get(url + "health")
            barrier.wait()
            for i in range(per_client[k]):
                data = images[(k * 7 + i) % len(images)]
                t = time.perf_counter()
                r = http.post(url + "predict", files={"file": ("face.jpg", data, "image/jpeg")})
                ms = (time.perf_counter() - t) * 1000
                with lock:
                    (lat.append(ms) if r.status_code == 200 else errors.append(f"{r.status_code} {r.text[:80]}"))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    out = stats(lat, time.perf_counter() - start)
    out["errors"] = len(errors)
    return out


def page_fps(url: str, tmp: Path, seconds: float) -> dict[str, Any]:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    camera = write_y4m(tmp / "camera.y4m", [face_scene(age=30, seed=2)] * 10)
    driver = chromium(tmp, camera)
    try:
        driver.get(url)
        wait = WebDriverWait(driver, 60, poll_frequency=0.2)
        wait.until(lambda d: d.find_element(By.ID, "model-info").text.startswith("model:"))
        driver.find_element(By.ID, "start-camera").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".age-label"))
        time.sleep(seconds)
        fps = float(driver.find_element(By.ID, "fps").text)
        ms = driver.find_element(By.ID, "ms").text
    finally:
        driver.quit()
    return {"frames_per_s": fps, "last_frame_ms": ms, "seconds": seconds,
            "note": "page sends the next frame when the last answer is back, at most one per 150 ms"}


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--checkpoint", help="run folder or .pt (default: train a scratch model for 1 epoch)")
    p.add_argument("--requests", type=int, default=96, help="requests per concurrency level")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--direct", type=int, default=96, help="direct predict calls")
    p.add_argument("--page-seconds", type=float, default=8.0, help="0: skip the browser frame rate")
    p.add_argument("--modes", nargs="+", default=["batching", "lock"], choices=["batching", "lock"])
    p.add_argument("--threads", nargs="+", default=["default", "1"],
                   help="torch threads: 'default' (torch's choice, all cores) or N (OMP_NUM_THREADS for the server)")
    args = p.parse_args(argv)

    load_start = list(__import__("os").getloadavg())
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        checkpoint = Path(args.checkpoint) if args.checkpoint else make_checkpoint(tmp)
        images, source = face_jpegs(16)
        result: dict[str, Any] = {"direct": {}, "server": {}}
        for threads in args.threads:
            n = None if threads == "default" else int(threads)
            result["direct"][threads] = direct(checkpoint, images, args.direct, n)
            print(f"direct threads={threads}: {result['direct'][threads]}", file=sys.stderr)
            for mode in args.modes:
                key = f"{mode}, threads={threads}"
                port = free_port()
                proc = start_server(checkpoint, port, log=tmp / f"serve-{mode}-{threads}.log", batching=mode == "batching",
                                    env=None if n is None else {"OMP_NUM_THREADS": str(n)})
                url = f"http://127.0.0.1:{port}/"
                try:
                    load_test(url, images, 1, 8)  # warm-up
                    result["server"][key] = {}
                    for c in args.concurrency:
                        r = load_test(url, images, c, args.requests)
                        result["server"][key][str(c)] = r
                        print(f"{key} c={c}: {r}", file=sys.stderr)
                    if "page" not in result and threads == args.threads[-1] and args.page_seconds > 0:
                        missing = browser_missing()
                        result["page"] = {"server": key, **({"skipped": missing} if missing
                                                              else page_fps(url, tmp, args.page_seconds))}
                        print(f"page: {result['page']}", file=sys.stderr)
                finally:
                    stop_server(proc)
    last = args.threads[-1]
    c1 = result["server"][f"{args.modes[0]}, threads={last}"][str(args.concurrency[0])]["requests_per_s"]
    payload = {
        "settings": {"requests_per_level": args.requests, "concurrency": args.concurrency, "direct_calls": args.direct,
                     "images": f"16 x 200x200 JPEG ({source})", "model": "scratch CNN, CORAL head, 64 px input",
                     "checkpoint": str(args.checkpoint or "trained 1 epoch on 200 synthetic faces"),
                     "page_seconds": args.page_seconds, "threads": args.threads},
        **result,
        "ratio": ratio(c1, result["direct"][last]["requests_per_s"]),
        "ratio_meaning": f"server requests/s at {args.concurrency[0]} client ({args.modes[0]}, threads={last}) / "
                         f"direct predict calls/s (threads={last})",
        "best_server_requests_per_s": max(r["requests_per_s"] for m in result["server"].values() for r in m.values()),
        "loadavg": {"start": load_start, "end": list(__import__("os").getloadavg())},
    }
    write_result("serve", payload, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
