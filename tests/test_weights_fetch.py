"""`weights fetch` against a local HTTP server: download, resume after a dropped connection, reject
corrupt files; offline errors name the URL and where to put the file; `--weights vggface` finds it."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from test_vggface import canonical, to_keras, write_h5

from ordinalage.cli import main
from ordinalage.errors import UsageError
from ordinalage.models import weights
from ordinalage.models.vggface import read_vggface


class Server:
    """Serves `files[path]` with HTTP Range support; `drop[path] = n` cuts the next response to that
    path after n bytes (the connection closes mid-body), once."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.drop: dict[str, int] = {}
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                rng = self.headers.get("Range")
                server.requests.append((self.path, rng))
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start = int(rng.removeprefix("bytes=").split("-")[0]) if rng else 0
                if start >= len(body):
                    self.send_error(416)
                    return
                self.send_response(206 if rng else 200)
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                cut = server.drop.pop(self.path, None)
                self.wfile.write(body[start:cut] if cut is not None else body[start:])
                if cut is not None:
                    self.wfile.flush()
                    self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


@pytest.fixture()
def h5_bytes(tmp_path: Path) -> bytes:
    """A small network in the keras-vggface VGG16 .h5 layout."""
    return write_h5(tmp_path / "src.h5", to_keras(canonical())).read_bytes()


def test_fetch_downloads_checks_and_prints_the_path(server: Server, h5_bytes: bytes, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    server.files["/w.h5"] = h5_bytes
    dest = tmp_path / "cache"
    sha = hashlib.sha256(h5_bytes).hexdigest()
    rc = main(["weights", "fetch", "vggface-keras", "--url", f"{server.url}/w.h5", "--dest", str(dest), "--sha256", sha])
    assert rc == 0
    path = Path(capsys.readouterr().out.strip())
    assert path == dest / "rcmalli_vggface_tf_vgg16.h5" and path.read_bytes() == h5_bytes
    assert not list(dest.glob("*.part"))
    assert set(read_vggface(path)) >= {"conv1_1.weight", "fc7.bias"}
    server.requests.clear()
    assert weights.fetch("vggface-keras", url=f"{server.url}/w.h5", dest=dest) == path  # cached: no request
    assert server.requests == []


def test_fetch_resumes_after_a_dropped_connection(server: Server, h5_bytes: bytes, tmp_path: Path) -> None:
    server.files["/w.h5"] = h5_bytes
    half = len(h5_bytes) // 2
    server.drop["/w.h5"] = half
    path = weights.fetch("vggface-keras", url=f"{server.url}/w.h5", dest=tmp_path)
    assert path.read_bytes() == h5_bytes
    assert server.requests == [("/w.h5", None), ("/w.h5", f"bytes={half}-")]


def test_interrupted_download_keeps_the_part_file_and_a_rerun_resumes(server: Server, h5_bytes: bytes,
                                                                     tmp_path: Path) -> None:
    server.files["/w.h5"] = h5_bytes
    server.drop["/w.h5"] = 1000
    dest = tmp_path / "w.h5"
    with pytest.raises(UsageError, match=r"stopped after 1000 bytes.*again to resume"):
        weights.download(f"{server.url}/w.h5", dest, retries=0)
    assert (tmp_path / "w.h5.part").stat().st_size == 1000 and not dest.exists()
    weights.download(f"{server.url}/w.h5", dest, check=lambda p: read_vggface(p) and None)
    assert dest.read_bytes() == h5_bytes and not (tmp_path / "w.h5.part").exists()
    assert server.requests[-1] == ("/w.h5", "bytes=1000-")


def test_corrupt_download_is_rejected_and_deleted(server: Server, h5_bytes: bytes, tmp_path: Path) -> None:
    dest = tmp_path / "cache"
    server.files["/junk.h5"] = b"not weights at all" * 100
    with pytest.raises(UsageError, match=r"junk.h5: the downloaded file does not load.*deleted"):
        weights.fetch("vggface-keras", url=f"{server.url}/junk.h5", dest=dest)
    assert list(dest.iterdir()) == []
    server.files["/w.h5"] = h5_bytes
    with pytest.raises(UsageError, match="checksum mismatch"):
        weights.fetch("vggface-keras", url=f"{server.url}/w.h5", dest=dest, sha256="0" * 64)
    assert list(dest.iterdir()) == []


def test_offline_fetch_names_url_and_destination(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    s = Server()
    url = f"{s.url}/w.pth"
    s.close()  # nothing listens on that port any more
    rc = main(["weights", "fetch", "vggface", "--url", url, "--dest", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2
    assert url in err and str(tmp_path / "vgg_face_dag.pth") in err and "by hand" in err


def test_weights_vggface_finds_the_cached_file_and_list_shows_it(server: Server, h5_bytes: bytes, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from ordinalage.config import ModelConfig
    from ordinalage.models.backbones import build_backbone

    monkeypatch.setenv("ORDINALAGE_CACHE", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    assert weights.find_cached("vggface") is None
    with pytest.raises(UsageError, match=r"model.weights.*weights fetch vggface.*vgg_face_dag.pth"):
        build_backbone(ModelConfig(backbone="vgg16", weights="vggface"))
    server.files["/w.h5"] = h5_bytes
    path = weights.fetch("vggface-keras", url=f"{server.url}/w.h5")
    assert path.parent == tmp_path / "weights" and weights.find_cached("vggface") == path
    assert main(["weights", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["results"]
    assert [(r["cache"], r["name"]) for r in rows] == [("ordinalage", "rcmalli_vggface_tf_vgg16.h5")]
