"""Helpers for driving the served page in headless Chromium: a fake camera file, a server subprocess,
a Selenium driver. Used by tests/test_browser.py and benchmarks/serve_throughput.py."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("ORDINALAGE_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("ORDINALAGE_CHROMEDRIVER", "/usr/bin/chromedriver")


def browser_missing() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    for path, pkg in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not (Path(path).is_file() or shutil.which(path)):
            return f"{path} not found (apt-get install {pkg}; .ci/run installs it)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e .[dev])"
    return None


def face_scene(age: float = 35, width: int = 640, height: int = 480, face: int = 200, seed: int = 0) -> np.ndarray:
    """A synthetic face of `face` px (ordinalage.data.synth) in the middle of a grey RGB frame."""
    from ordinalage.data.synth import render_face

    img = np.full((height, width, 3), 110, np.uint8)
    y, x = (height - face) // 2, (width - face) // 2
    img[y:y + face, x:x + face] = render_face(age, np.random.default_rng(seed), face)
    return img


def write_y4m(path: Path, frames: list[np.ndarray], fps: int = 10) -> Path:
    """RGB frames (even width and height) as a YUV4MPEG2 4:2:0 file, Chromium's fake-camera format."""
    h, w = frames[0].shape[:2]
    if h % 2 or w % 2:
        raise ValueError(f"y4m 4:2:0 needs even sides, got {w}x{h}")
    with Path(path).open("wb") as fh:
        fh.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n".encode("ascii"))
        for rgb in frames:
            fh.write(b"FRAME\n")
            fh.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420).tobytes())  # Y plane, then U, then V
    return Path(path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(checkpoint: str | Path, port: int, timeout: float = 90.0, log: Path | None = None,
                 batching: bool = True, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """`ordinalage serve CHECKPOINT --port PORT --device cpu` in a subprocess (`batching=False`: the
    same through `run_server(..., batching=False)`); returns once /health answers."""
    env = {**os.environ, **(env or {}), "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = log.open("wb") if log is not None else subprocess.DEVNULL
    if batching:
        cmd = ["-m", "ordinalage", "serve", str(checkpoint), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]
    else:
        cmd = ["-c", "import sys; from ordinalage.inference.serve import run_server; "
               "run_server([sys.argv[1]], port=int(sys.argv[2]), device='cpu', batching=False)", str(checkpoint), str(port)]
    proc = subprocess.Popen([sys.executable, *cmd], env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"serve exited with {proc.returncode}" + (f"; see {log}" if log else ""))
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.3)
    stop_server(proc)
    raise RuntimeError(f"serve did not answer on port {port} within {timeout:.0f} s")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def chromium(tmp: Path, camera: Path | None = None, width: int = 1000, height: int = 900):  # type: ignore[no-untyped-def]
    """A headless Chromium driven by Selenium, with a fake camera playing `camera` (a .y4m)."""
    from selenium import webdriver

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={tmp / 'chromium-profile'}",
                 f"--window-size={width},{height}", "--use-fake-ui-for-media-stream",
                 "--use-fake-device-for-media-stream"):
        opts.add_argument(flag)
    if camera is not None:
        opts.add_argument(f"--use-file-for-fake-video-capture={camera}")
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER, log_output=str(tmp / "chromedriver.log"))
    return webdriver.Chrome(options=opts, service=service)
