"""`ordinalage serve`: a browser page and an HTTP API over one or more checkpoints (FastAPI + uvicorn).

Endpoints: `POST /predict` (multipart field `file`: a JPEG, PNG or WebP image; query `model` =
index of the checkpoint when several are served, `detect` = false to take the whole image as one
face) -> `{"faces": [Face.to_dict()...], "model": index, "detector": the face detector's name ("none"
with detect=false), "ms": server time}`; `GET /health`;
`GET /model` (`AgeEstimator.info()` of `?model=`); `GET /model/card` (the model card of `?model=`:
the MODEL_CARD.md of its run's latest eval-test folder, else a card from the run's config and
summary that says it is not evaluated; Markdown, or `?format=html` a page); `GET /` (the page in
static/index.html); OpenAPI docs at `/docs`.

Bad input never stops the server: a body over `max_mb` (413), an image over `max_pixels` (413,
checked from the header before decoding), a content type or format other than JPEG/PNG/WebP
(415), an empty, truncated or corrupt image (400) each answer `{"detail": reason}`. Decoding,
detection and the model run in the threadpool; the model calls of requests that arrive together
are batched into one (`Batcher`), or, with `batching=False`, taken one at a time under a lock.
"""

from __future__ import annotations

import concurrent.futures
import io
import ipaddress
import queue
import sys
import threading
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse

from ordinalage.errors import UsageError
from ordinalage.inference.api import AgeEstimator, load
from ordinalage.inference.predictor import FaceResults
from ordinalage.reporting.card import card_for, markdown_to_html

FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
CONTENT_TYPES = frozenset({"image/jpeg", "image/jpg", "image/pjpeg", "image/png", "image/webp",
                           "application/octet-stream"})  # octet-stream: the format is checked from the bytes
DEFAULT_MAX_PIXELS = 50_000_000
MULTIPART_SLACK = 64 * 1024  # multipart boundaries and headers around the file


class UploadError(Exception):
    """A rejected upload: HTTP `status` and a `reason` for the client."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def decode_upload(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Uploaded bytes -> RGB uint8 (H, W, 3), EXIF orientation applied; UploadError when unusable.

    The pixel count is read from the header and checked before the image is decoded.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not data:
        raise UploadError(400, "empty file")
    try:
        im = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise UploadError(413, f"image over the pixel limit ({exc})") from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise UploadError(415, "not a JPEG, PNG or WebP image") from None
    if im.format not in FORMATS:
        raise UploadError(415, f"unsupported image format {im.format} (send JPEG, PNG or WebP)")
    w, h = im.size
    if w * h > max_pixels:
        raise UploadError(413, f"image is {w}x{h} = {w * h:,} pixels, over the limit of {max_pixels:,}")
    if w < 1 or h < 1:
        raise UploadError(400, f"image has no pixels ({w}x{h})")
    try:
        im.load()
        im = ImageOps.exif_transpose(im)
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except Exception as exc:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError, struct.error ...
        raise UploadError(400, f"truncated or corrupt {im.format} image ({exc})") from None


class Batcher:
    """One thread runs the model; requests that wait together are joined into one model call.

    `infer(crops)` blocks until its results are ready. The worker takes the first waiting request
    and every other one already queued (up to `max_batch` crops), so a lone request is not delayed.
    """

    def __init__(self, estimator: AgeEstimator, max_batch: int = 64) -> None:
        self.estimator = estimator
        self.max_batch = max_batch
        self.calls = 0  # model calls made (for tests and benchmarks)
        self.requests = 0
        self._queue: queue.Queue[tuple[list[np.ndarray], concurrent.futures.Future[FaceResults]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="ordinalage-batcher", daemon=True)
        self._thread.start()

    def infer(self, crops: Sequence[np.ndarray]) -> FaceResults:
        if not crops:
            return self.estimator._infer([])
        fut: concurrent.futures.Future[FaceResults] = concurrent.futures.Future()
        self._queue.put((list(crops), fut))
        return fut.result()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch, n, stop = [item], len(item[0]), False
            while n < self.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
                n += len(nxt[0])
            self._run(batch)
            if stop:
                return

    def _run(self, batch: list[tuple[list[np.ndarray], concurrent.futures.Future[FaceResults]]]) -> None:
        try:
            res = self.estimator._infer([c for crops, _ in batch for c in crops])
        except BaseException as exc:  # noqa: BLE001 - handed to every waiting request
            for _, fut in batch:
                fut.set_exception(exc)
            return
        self.calls += 1
        self.requests += len(batch)
        k = 0
        for crops, fut in batch:
            sl = slice(k, k + len(crops))
            fut.set_result(FaceResults(*(None if v is None else v[sl] for v in (
                res.age, res.group, res.group_proba, res.label_proba, res.age_lo, res.age_hi))))
            k += len(crops)


def page_html() -> str:
    """The browser page (package data static/index.html)."""
    return resources.files("ordinalage.inference").joinpath("static/index.html").read_text(encoding="utf-8")


def _check_limits(estimators: Sequence[AgeEstimator], max_mb: float, max_pixels: int) -> None:
    if not estimators:
        raise UsageError("serve: give at least one checkpoint")
    if max_mb <= 0:
        raise UsageError(f"max_mb: must be above 0, got {max_mb}", option="max_mb")
    if max_pixels < 1:
        raise UsageError(f"max_pixels: must be at least 1, got {max_pixels}", option="max_pixels")


def _closing(batchers: Sequence[Batcher]) -> Any:
    """The app's lifespan: the batchers' threads are closed when the server stops."""

    @asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        yield
        for b in batchers:
            b.close()

    return lifespan


def create_app(estimators: Sequence[AgeEstimator], max_mb: float = 10, max_pixels: int = DEFAULT_MAX_PIXELS,
               batching: bool = True) -> FastAPI:
    """The FastAPI app serving `estimators` (the first is the default model)."""
    _check_limits(estimators, max_mb, max_pixels)
    ests = list(estimators)
    max_bytes = int(max_mb * 1024 * 1024)
    batchers = [Batcher(e) for e in ests] if batching else None
    page = page_html()

    app = FastAPI(title="ordinalage", summary="Age and age group of the faces in an image",
                  lifespan=_closing(batchers or []))
    app.state.estimators = ests
    app.state.batchers = batchers

    @app.middleware("http")
    async def limit_body(request: Request, call_next: Any) -> Any:
        """Refuse a body that says it is over the limit before it is read."""
        if request.url.path == "/predict":
            length = request.headers.get("content-length")
            if length is not None and length.isdigit() and int(length) > max_bytes + MULTIPART_SLACK:
                return JSONResponse({"detail": f"upload of {int(length):,} bytes is over this server's limit of "
                                               f"{max_mb:g} MB"}, status_code=413)
        return await call_next(request)

    def pick(model: int) -> int:
        if not 0 <= model < len(ests):
            raise HTTPException(400, f"model: index {model} out of range (0 to {len(ests) - 1})")
        return model

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> str:
        return page

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "models": len(ests)}

    @app.get("/model")
    def model_info(model: Annotated[int, Query(description="index of the served checkpoint")] = 0) -> dict[str, Any]:
        i = pick(model)
        return {"index": i, "count": len(ests), **ests[i].info()}

    @app.get("/model/card", response_class=PlainTextResponse)
    def model_card(model: Annotated[int, Query(description="index of the served checkpoint")] = 0,
                   fmt: Annotated[str, Query(alias="format", pattern="^(md|html)$",
                                             description="md (Markdown, the default) or html (a page)")] = "md",
                   ) -> Any:
        i = pick(model)
        text, _source = estimator_card(ests[i])
        if fmt == "html":
            return HTMLResponse(markdown_to_html(text, title=f"Model card: model {i}"))
        return PlainTextResponse(text, media_type="text/markdown; charset=utf-8")

    @app.post("/predict")
    async def predict(file: Annotated[UploadFile, File(description="a JPEG, PNG or WebP image")],
                      model: Annotated[int, Query(description="index of the served checkpoint")] = 0,
                      detect: Annotated[bool, Query(description="find faces; false: the whole image is one face")] = True,
                      ) -> dict[str, Any]:
        i = pick(model)
        ctype = (file.content_type or "application/octet-stream").split(";")[0].strip().lower()
        if ctype not in CONTENT_TYPES:
            raise HTTPException(415, f"content type {ctype} is not accepted (send image/jpeg, image/png or image/webp)")
        data = await file.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise HTTPException(413, f"upload is over this server's limit of {max_mb:g} MB")
        started = time.perf_counter()
        try:
            faces = await run_in_threadpool(_predict_one, ests[i], batchers[i] if batchers else None, data,
                                            max_pixels, detect)
        except UploadError as exc:
            raise HTTPException(exc.status, exc.reason) from None
        return {"faces": [f.to_dict() for f in faces], "model": i,
                "detector": ests[i].detector_name if detect else "none",
                "ms": round((time.perf_counter() - started) * 1000, 1)}

    return app


def estimator_card(est: AgeEstimator) -> tuple[str, Path | None]:
    """The model card (Markdown) of a served model and the MODEL_CARD.md it came from (None: made
    from the run's config and summary, saying it is not evaluated); see `reporting.card.card_for`."""
    loaded = est.predictor.loaded
    run = Path(loaded.run_dir) if loaded.run_dir else Path(loaded.checkpoint_path).parent
    from ordinalage.models.backbones import backbone_info

    return card_for(run, loaded.checkpoint_path, ensemble=bool(est.predictor.others), head=loaded.head_traits,
                    backbone=backbone_info(loaded.config.model.backbone))


def _predict_one(est: AgeEstimator, batcher: Batcher | None, data: bytes, max_pixels: int, detect: bool) -> list[Any]:
    """Decode, crop, run the model (batched or under the estimator's lock), make Faces (in a worker thread)."""
    rgb = decode_upload(data, max_pixels)
    crops, boxes = est._prepare([rgb], detect)
    res = batcher.infer(crops[0]) if batcher is not None else est._infer(crops[0])
    return est._split([res], boxes)[0]


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run_server(checkpoints: Sequence[str | Path], host: str = "127.0.0.1", port: int = 8000, max_mb: float = 10,
               device: str = "auto", max_pixels: int = DEFAULT_MAX_PIXELS, batching: bool = True,
               log_level: str = "warning", prior: str | None = None, interval: float | None = None,
               detector: str = "auto", tta: bool = False) -> None:
    """Load the checkpoints and serve them with uvicorn until interrupted.

    `prior`: train | uniform | a prior file (from `ordinalage prior estimate`); `interval`: add
    age_lo/age_hi at this coverage from each run's calibration.json; `detector`: the face detector
    (detection.registry.DETECTORS: haar, dlib), named in `GET /model` (`detector`, and the `crop` ratio);
    `tta`: average each face's logits with its mirror's (twice the model time)."""
    import uvicorn

    if not checkpoints:
        raise UsageError("serve: give at least one checkpoint (a run folder or a .pt file)")
    if not 0 <= port <= 65535:
        raise UsageError(f"port: must be 0-65535, got {port}", option="port")
    if prior == "em":
        raise UsageError("prior em: a server sees one photo at a time and cannot estimate an age mix; "
                         "estimate one with `ordinalage prior estimate` (a prior.json) and serve with that file",
                         option="prior")
    ests = [load(c, device=device, tta=tta, prior=prior, interval=interval, detector=detector) for c in checkpoints]
    app = create_app(ests, max_mb=max_mb, max_pixels=max_pixels, batching=batching)
    for k, e in enumerate(ests):
        print(f"serve: model {k}: {e!r}", file=sys.stderr)
    shown = f"[{host}]" if ":" in host else host
    print(f"serve: listening on http://{shown}:{port}  (page /, API /predict, docs /docs; Ctrl+C to stop)",
          file=sys.stderr, flush=True)
    if not is_loopback(host):
        print(f"serve: WARNING: bound to {host}, not a loopback address: anyone who can reach this machine "
              "can send images to it (there is no authentication)", file=sys.stderr, flush=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)
