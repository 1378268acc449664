"""HTTP API (`ordinalage serve`): endpoints, bad uploads answered with 4xx, concurrency, run_server."""

from __future__ import annotations

import io
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

import ordinalage  # noqa: E402
from ordinalage.cli import main  # noqa: E402
from ordinalage.inference.detection.registry import resolve_detector_name
from ordinalage.inference.serve import UploadError, create_app, decode_upload, is_loopback, run_server  # noqa: E402


def _encode(rgb: np.ndarray, fmt: str = "JPEG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture(scope="module")
def face_jpeg(utkface_or_none: Path | None) -> bytes:
    """A real UTKFace chip when present (else a synthetic face) on a wider background, as JPEG."""
    if utkface_or_none is not None:
        from ordinalage.inference.predictor import load_rgb

        face = load_rgb(sorted(utkface_or_none.glob("3*_*.jpg"))[0])
    else:
        from ordinalage.data.synth import render_face

        face = render_face(35, np.random.default_rng(0), 200)
    canvas = np.full((300, 400, 3), 90, np.uint8)
    canvas[50:250, 100:300] = face
    return _encode(canvas)


@pytest.fixture(scope="module")
def estimator(tiny_run):  # type: ignore[no-untyped-def]
    return ordinalage.load(tiny_run("coral"), device="cpu")


@pytest.fixture(scope="module")
def client(estimator):  # type: ignore[no-untyped-def]
    app = create_app([estimator, estimator], max_mb=0.5, max_pixels=1_000_000)
    with TestClient(app) as c:
        yield c


def _post(client: TestClient, data: bytes, ctype: str = "image/jpeg", **params: object):  # type: ignore[no-untyped-def]
    return client.post("/predict", files={"file": ("x", data, ctype)}, params=params)


def _check_good(client: TestClient, face_jpeg: bytes) -> dict:
    r = _post(client, face_jpeg)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"faces", "model", "detector", "ms"} and body["model"] == 0 and body["ms"] >= 0
    assert body["detector"] == resolve_detector_name("auto")  # the detector used: dlib where installed
    assert len(body["faces"]) >= 1
    return body


def test_health_model_and_page(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok", "models": 2}
    info = client.get("/model").json()
    assert info["head"] == "coral" and info["index"] == 0 and info["count"] == 2 and info["input_size"] == 48
    assert client.get("/model", params={"model": 1}).json()["index"] == 1
    assert client.get("/model", params={"model": 2}).status_code == 400
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "age-label" in page.text and "getUserMedia" in page.text
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", page.text)  # self-contained: no CDN
    assert "<script src" not in page.text and "<link" not in page.text
    assert client.get("/openapi.json").status_code == 200


def test_predict_a_face(client: TestClient, face_jpeg: bytes, estimator) -> None:  # type: ignore[no-untyped-def]
    body = _check_good(client, face_jpeg)
    face = body["faces"][0]
    assert set(face) == {"box", "age", "group", "group_index", "group_proba"}
    x, y, w, h = face["box"]
    assert 60 <= x <= 200 and 20 <= y <= 150 and w > 60  # around the face pasted at (100, 50), 200 px
    assert face["group"] == estimator.labels[face["group_index"]]
    assert sum(face["group_proba"].values()) == pytest.approx(1, abs=1e-2)
    # the same as the Python API on the decoded image
    direct = estimator.predict(np.asarray(Image.open(io.BytesIO(face_jpeg)).convert("RGB")))
    assert face == direct[0].to_dict()
    whole_body = _post(client, face_jpeg, detect="false").json()
    whole = whole_body["faces"]
    assert len(whole) == 1 and whole[0]["box"] is None and whole_body["detector"] == "none"
    assert _post(client, face_jpeg, model=1).json()["model"] == 1
    png = _encode(np.asarray(Image.open(io.BytesIO(face_jpeg))), "PNG")
    webp = _encode(np.asarray(Image.open(io.BytesIO(face_jpeg))), "WEBP")
    assert _post(client, png, "image/png").status_code == 200
    assert _post(client, webp, "image/webp").status_code == 200
    assert _post(client, png, "application/octet-stream").status_code == 200


def test_bad_inputs_get_4xx_and_the_server_goes_on(client: TestClient, face_jpeg: bytes) -> None:
    rng = np.random.default_rng(0)
    noise = _encode(rng.integers(0, 256, (400, 400, 3), dtype=np.uint8), "PNG")  # ~480 KB
    big = _encode(rng.integers(0, 256, (700, 700, 3), dtype=np.uint8), "PNG")  # ~1.5 MB
    gif = io.BytesIO()
    Image.new("RGB", (20, 20)).save(gif, format="GIF")
    cases = {
        "not an image": (_post(client, b"hello, not a picture"), 415),
        "empty": (_post(client, b""), 400),
        "truncated JPEG": (_post(client, face_jpeg[: len(face_jpeg) // 2]), 400),
        "truncated PNG": (_post(client, noise[:20_000], "image/png"), 400),
        "GIF": (_post(client, gif.getvalue(), "image/gif"), 415),
        "GIF as png": (_post(client, gif.getvalue(), "image/png"), 415),
        "wrong content type": (_post(client, face_jpeg, "text/plain"), 415),
        "over --max-mb (header)": (_post(client, big, "image/png"), 413),
        "over --max-mb (body)": (_post(client, noise + b"\0" * 80_000, "image/png"), 413),
        "over the pixel limit": (_post(client, _encode(np.zeros((1100, 1000, 3), np.uint8))), 413),
        "bad model index": (_post(client, face_jpeg, model=7), 400),
        "no file field": (client.post("/predict", data={"x": "1"}), 422),
    }
    for name, (resp, status) in cases.items():
        assert resp.status_code == status, (name, resp.status_code, resp.text)
        detail = resp.json()["detail"]
        assert detail, name
        _check_good(client, face_jpeg)  # the next good request still works
    assert "1100" in cases["over the pixel limit"][0].json()["detail"]


def test_concurrent_requests_are_batched(client: TestClient, face_jpeg: bytes) -> None:
    batcher = client.app.state.batchers[0]
    calls0, reqs0 = batcher.calls, batcher.requests
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: _post(client, face_jpeg), range(24)))
    assert all(r.status_code == 200 for r in results)
    ages = {r.json()["faces"][0]["age"] for r in results}
    assert len(ages) == 1  # the same image gives the same answer however it was batched
    assert batcher.requests - reqs0 == 24 and batcher.calls - calls0 <= 24


def test_lock_mode_serves_concurrently(estimator, face_jpeg: bytes) -> None:  # type: ignore[no-untyped-def]
    with TestClient(create_app([estimator], batching=False)) as c, ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: _post(c, face_jpeg), range(8)))
    assert [r.status_code for r in results] == [200] * 8
    assert c.app.state.batchers is None


def test_decode_upload_and_settings(estimator) -> None:  # type: ignore[no-untyped-def]
    rgb = np.zeros((10, 12, 3), np.uint8)
    rgb[:, :, 0] = 200
    out = decode_upload(_encode(rgb, "PNG"))
    assert out.shape == (10, 12, 3) and out[0, 0, 0] == 200
    with pytest.raises(UploadError) as err:
        decode_upload(_encode(rgb, "PNG"), max_pixels=100)
    assert err.value.status == 413
    with pytest.raises(Exception, match="max_mb"):
        create_app([estimator], max_mb=0)
    with pytest.raises(Exception, match="at least one"):
        create_app([])
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2") and not is_loopback("example.org")


def test_run_server_says_where_and_warns_off_loopback(tiny_run, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    import uvicorn

    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(kw))
    run_server([tiny_run("coral")], host="0.0.0.0", port=8123, device="cpu")
    err = capsys.readouterr().err
    assert "http://0.0.0.0:8123" in err and "WARNING" in err and seen["port"] == 8123
    run_server([tiny_run("coral")], port=8124, device="cpu")
    err = capsys.readouterr().err
    assert "http://127.0.0.1:8124" in err and "WARNING" not in err


def test_cli_serve_bad_checkpoint_exits_2(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["serve", str(tmp_path / "missing.pt")]) == 2
    assert "missing.pt" in capsys.readouterr().err
