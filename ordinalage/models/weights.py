"""Pretrained weights by name: the ordinalage weights cache, resumable downloads, offline messages.

`--weights` (config key `model.weights`) takes a name or a file:

    imagenet   torchvision weight enums for resnet18/34/50 and vgg16 (torch hub cache),
               the default pretrained tag of a `timm:` model (Hugging Face hub cache)
    vggface    a VGGFace file fetched by `ordinalage weights fetch vggface` (ordinalage cache)
    FILE       .pth / .safetensors state dict, or a keras-vggface .h5 / vgg_face_dag.pth for vgg16

The ordinalage cache is `$ORDINALAGE_CACHE/weights`, else `~/.cache/ordinalage/weights`. Downloads
go to `<file>.part` first and resume from its size with an HTTP Range request, so an interrupted
transfer (or a rerun after one) continues where it stopped; the finished file is checked (size,
sha256 when known, and that it loads) before it is renamed into place. Without network, a
`UsageError` names the URL or hub id, the file expected and where to put it by hand.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ordinalage.errors import UsageError

NAMES = ("imagenet", "vggface")
CHUNK = 1 << 20


@dataclass(frozen=True)
class KnownFile:
    """A weights file ordinalage knows how to fetch."""

    name: str  # what `weights fetch NAME` takes
    filename: str
    url: str
    sha256: str | None  # None: no checksum is published for it
    about: str


# No checksum is published for either VGGFace file; the download is checked by loading it instead.
KNOWN: dict[str, KnownFile] = {
    "vggface": KnownFile("vggface", "vgg_face_dag.pth",
                         "https://www.robots.ox.ac.uk/~albanie/models/pytorch-mcn/vgg_face_dag.pth", None,
                         "VGG-16 Face, PyTorch port by S. Albanie (about 580 MB)"),
    "vggface-keras": KnownFile("vggface-keras", "rcmalli_vggface_tf_vgg16.h5",
                               "https://github.com/rcmalli/keras-vggface/releases/download/v2.0/rcmalli_vggface_tf_vgg16.h5",
                               None, "VGG-16 Face, keras-vggface v2.0 release (about 580 MB)"),
}


def cache_dir() -> Path:
    """`$ORDINALAGE_CACHE/weights`, else `~/.cache/ordinalage/weights`."""
    root = os.environ.get("ORDINALAGE_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "ordinalage") / "weights"


# --------------------------------------------------------------------------------------------- download


def _check_vggface(path: Path) -> None:
    from ordinalage.models.vggface import read_vggface

    read_vggface(path)


def _offline_message(url: str, dest: Path, exc: BaseException) -> str:
    return (f"cannot download {url} ({type(exc).__name__}: {str(exc)[:160]}); no network? "
            f"Download it by hand and put it at {dest} (or pass the file itself as model.weights)")


def _progress(total: int | None, start: int, label: str) -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    prog = Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                    console=Console(stderr=True), transient=False, disable=not sys.stderr.isatty())
    task = prog.add_task(label, total=total, completed=start)
    return prog, task


def download(url: str, dest: str | Path, sha256: str | None = None, sha256_prefix: str | None = None,
             check: Callable[[Path], None] | None = None, retries: int = 3, timeout: float = 30.0) -> Path:
    """Download `url` to `dest` through `dest.part` (resumed with HTTP Range when present), then check
    the size, `sha256` (or the first hex digits `sha256_prefix`, torch hub style) and `check(path)`
    (which raises UsageError for a file that does not load). A bad file is deleted, never renamed into
    place. An existing `dest` is returned as is. Interrupted transfers are resumed up to `retries` times."""
    dest = Path(dest)
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    attempt = 0
    while True:
        try:
            _transfer(url, part, timeout)
            break
        except (OSError, http.client.HTTPException) as exc:  # URLError and ConnectionError are OSErrors
            got = part.stat().st_size if part.is_file() else 0
            if got == 0 or attempt >= retries:
                if got:
                    raise UsageError(f"download of {url} stopped after {got} bytes ({type(exc).__name__}); "
                                     f"run the same command again to resume from {part}") from None
                raise UsageError(_offline_message(url, dest, exc)) from None
            attempt += 1
            print(f"download interrupted after {got} bytes ({type(exc).__name__}); resuming", file=sys.stderr)
    try:
        _verify(part, url, sha256, sha256_prefix, check)
    except UsageError:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, dest)
    return dest


def _transfer(url: str, part: Path, timeout: float) -> None:
    """One HTTP request: append to `part` from its current size (206) or start over (200)."""
    start = part.stat().st_size if part.is_file() else 0
    req = urllib.request.Request(url, headers={"User-Agent": "ordinalage"})
    if start:
        req.add_header("Range", f"bytes={start}-")
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)  # noqa: S310 - user-given or known https URL
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start:  # the .part already holds everything
            return
        raise UsageError(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from None
    with resp:
        resumed = start > 0 and resp.status == 206
        length = resp.headers.get("Content-Length")
        total = (int(length) + (start if resumed else 0)) if length is not None else None
        mode = "ab" if resumed else "wb"
        done = start if resumed else 0
        prog, task = _progress(total, done, part.name.removesuffix(".part"))
        with prog, part.open(mode) as fh:
            while True:
                chunk = resp.read(CHUNK)
                if not chunk:
                    break
                fh.write(chunk)
                done += len(chunk)
                prog.update(task, completed=done)
        if total is not None and done < total:
            raise ConnectionError(f"connection closed after {done} of {total} bytes")


def _verify(path: Path, url: str, sha256: str | None, sha256_prefix: str | None,
            check: Callable[[Path], None] | None) -> None:
    if sha256 or sha256_prefix:
        h = hashlib.sha256()
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(CHUNK), b""):
                h.update(chunk)
        digest = h.hexdigest()
        want = (sha256 or sha256_prefix or "").lower()
        if not digest.startswith(want):
            raise UsageError(f"{url}: checksum mismatch (sha256 {digest}, expected {want}); the partial file "
                             "was deleted, run the command again")
    if check is not None:
        try:
            check(path)
        except UsageError as exc:
            raise UsageError(f"{url}: the downloaded file does not load ({exc}); it was deleted") from None


# --------------------------------------------------------------------------------------------- fetch / list


def fetch(name: str, url: str | None = None, dest: str | Path | None = None, sha256: str | None = None) -> Path:
    """`ordinalage weights fetch NAME`: download a known file into the cache (or `dest`), checked."""
    known = KNOWN.get(name)
    if known is None:
        raise UsageError(f"weights fetch: unknown name {name!r} (known: {', '.join(KNOWN)})")
    target = Path(dest) if dest is not None else cache_dir()
    check = _check_vggface if name.startswith("vggface") else None
    return download(url or known.url, target / known.filename, sha256=sha256 or known.sha256, check=check)


def find_cached(name: str, dest: str | Path | None = None) -> Path | None:
    """The cached file for `vggface` (either format), or None."""
    root = Path(dest) if dest is not None else cache_dir()
    for known in KNOWN.values():
        if known.name.split("-")[0] == name and (root / known.filename).is_file():
            return root / known.filename
    return None


def list_cached() -> list[dict[str, Any]]:
    """Weights files in the ordinalage cache, torch hub's checkpoints and the HF hub's `timm/*` repos."""
    rows: list[dict[str, Any]] = []
    root = cache_dir()
    if root.is_dir():
        for p in sorted(root.iterdir()):
            if p.is_file():
                rows.append({"cache": "ordinalage", "name": p.name, "bytes": p.stat().st_size, "path": str(p),
                             "complete": not p.name.endswith(".part")})
    hub = _torch_hub_checkpoints()
    if hub.is_dir():
        for p in sorted(hub.iterdir()):
            if p.is_file():
                rows.append({"cache": "torch-hub", "name": p.name, "bytes": p.stat().st_size, "path": str(p),
                             "complete": not p.name.endswith(".part")})
    try:
        from huggingface_hub import scan_cache_dir

        for repo in sorted(scan_cache_dir().repos, key=lambda r: r.repo_id):
            if repo.repo_id.startswith("timm/"):
                rows.append({"cache": "hf-hub", "name": repo.repo_id, "bytes": repo.size_on_disk,
                             "path": str(repo.repo_path), "complete": True})
    except Exception:  # noqa: BLE001 - no HF cache folder yet, or an unreadable one: nothing to list
        pass
    return rows


def _torch_hub_checkpoints() -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


# --------------------------------------------------------------------------------------------- resolve


def _reachable(url: str, timeout: float = 5.0) -> BaseException | None:
    """None if a TCP connection to the URL's host opens, else the error (a quick offline test that
    spares the user the HF hub's minute of retries)."""
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "", port), timeout=timeout):
            return None
    except OSError as exc:
        return exc


def torchvision_weights(backbone: str) -> Path:
    """The cached (downloaded once) torchvision ImageNet state dict file of `backbone`."""
    import torchvision

    enum = {"resnet18": torchvision.models.ResNet18_Weights, "resnet34": torchvision.models.ResNet34_Weights,
            "resnet50": torchvision.models.ResNet50_Weights, "vgg16": torchvision.models.VGG16_Weights}[backbone]
    url = enum.DEFAULT.url
    filename = url.rsplit("/", 1)[-1]
    dest = _torch_hub_checkpoints() / filename
    if dest.is_file():
        return dest
    stem = filename.rsplit(".", 1)[0]
    prefix = stem.rsplit("-", 1)[-1] if "-" in stem else None  # torch hub: name-<sha256 prefix>.pth
    return download(url, dest, sha256_prefix=prefix)


HF_FILES = ("model.safetensors", "pytorch_model.bin")


def timm_weights(model_name: str) -> Path:
    """The cached (downloaded once) pretrained file of a timm model name (`arch` or `arch.tag`)."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(model_name)
    if cfg is None:
        raise UsageError(f"config key 'model.weights': timm has no pretrained weights for {model_name!r}")
    if cfg.hf_hub_id:
        from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache

        for filename in HF_FILES:
            hit = try_to_load_from_cache(cfg.hf_hub_id, filename)
            if isinstance(hit, str):
                return Path(hit)
        endpoint = constants.ENDPOINT
        where = Path(constants.HF_HUB_CACHE) / f"models--{cfg.hf_hub_id.replace('/', '--')}"
        url = f"{endpoint}/{cfg.hf_hub_id}/resolve/main/{HF_FILES[0]}"
        err = _reachable(endpoint)
        if err is not None:
            raise UsageError(f"cannot download the timm weights of {model_name!r} from the Hugging Face hub "
                             f"(hub id {cfg.hf_hub_id}, file {HF_FILES[0]}, {url}): {type(err).__name__}: {err}; "
                             f"no network? Download it by hand and give the file as model.weights, or run "
                             f"`huggingface-cli download {cfg.hf_hub_id} {HF_FILES[0]}` where there is network "
                             f"and copy {where} to this machine")
        last: BaseException | None = None
        for filename in HF_FILES:
            try:
                return Path(hf_hub_download(cfg.hf_hub_id, filename))
            except Exception as exc:  # noqa: BLE001 - try the next file name, then report
                last = exc
        raise UsageError(f"cannot download the timm weights of {model_name!r} (hub id {cfg.hf_hub_id}, "
                         f"{' or '.join(HF_FILES)}): {type(last).__name__}: {str(last)[:200]}")
    if cfg.url:
        dest = _torch_hub_checkpoints() / cfg.url.rsplit("/", 1)[-1]
        return dest if dest.is_file() else download(cfg.url, dest)
    raise UsageError(f"config key 'model.weights': timm lists no download for {model_name!r}")


__all__ = ["KNOWN", "NAMES", "cache_dir", "download", "fetch", "find_cached", "list_cached", "timm_weights",
           "torchvision_weights"]
