"""Decoded-image cache: same pixels as decoding, reuse across opens, invalidation, killed writers, guards."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import pickle
import signal
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from ordinalage.config import AugmentConfig, DataConfig
from ordinalage.data import cache as cache_mod
from ordinalage.data.cache import ImageCache, cache_key, prepare_cache
from ordinalage.data.dataset import build_loader
from ordinalage.data.decode import decode_image
from ordinalage.data.records import Record
from ordinalage.errors import UsageError
from ordinalage.groups import AgeGroups

GROUPS = AgeGroups.parse()
OFF = AugmentConfig(hflip_p=0, affine_p=0, color_p=0, gray_p=0, blur_p=0, noise_p=0, jpeg_p=0, occlusion_p=0)
ALWAYS = dataclasses.replace(OFF, hflip_p=0.5, affine_p=1.0, color_p=1.0)
SIZE = 24


def write_face(path: Path, seed: int, h: int = 40, w: int = 32) -> Path:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (h // 4, w // 4, 3), dtype=np.uint8)
    img = cv2.resize(img, (w, h), interpolation=cv2.INTER_NEAREST)
    assert cv2.imwrite(str(path), img, [cv2.IMWRITE_JPEG_QUALITY, 95])
    return path


@pytest.fixture
def faces(tmp_path: Path) -> list[Record]:
    folder = tmp_path / "faces"
    folder.mkdir()
    paths = [write_face(folder / f"{i}.jpg", seed=i) for i in range(7)]
    # a duplicate image under another name shares one row
    dup = folder / "dup.jpg"
    dup.write_bytes(paths[0].read_bytes())
    return [Record(str(p), 5.0 + 8 * i) for i, p in enumerate([*paths, dup])]


def data_cfg(tmp_path: Path, mode: str = "disk", aug: AugmentConfig = OFF, num_workers: int = 0, **kw) -> DataConfig:
    return DataConfig(cache=mode, cache_dir=str(tmp_path / "cache"), augment=aug, num_workers=num_workers, **kw)


def batches(loader) -> list[dict[str, torch.Tensor]]:
    return [b for b in loader if b is not None]


@pytest.mark.parametrize("mode", ["auto", "disk"])
def test_disk_cache_holds_the_decoded_pixels_and_duplicates_share_a_row(tmp_path, faces, mode) -> None:
    cache = prepare_cache(faces, data_cfg(tmp_path, mode), SIZE)
    assert isinstance(cache, ImageCache) and cache.mode == "disk"
    assert isinstance(cache.pixels, np.memmap) and not cache.pixels.flags.writeable
    assert len(cache) == 7  # 8 records, 7 distinct contents
    rows = cache.rows_for([r.path for r in faces])
    assert rows[0] == rows[-1]
    for r, row in zip(faces, rows, strict=True):
        np.testing.assert_array_equal(cache.pixels[row], decode_image(r.path, SIZE, "auto"))
    manifest = json.loads((cache.path.with_suffix(".json")).read_text())
    assert manifest["complete"] is True and manifest["rows"] == 7


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_with_cache_gives_the_same_batches(tmp_path, faces, workers) -> None:
    """Same pixels before augmentation (eval) and the same augmented batches for the same seed (train)."""
    for train, aug in ((False, OFF), (True, ALWAYS)):
        cfg = data_cfg(tmp_path, aug=aug, num_workers=workers)
        cache = prepare_cache(faces, cfg, SIZE)
        assert cache is not None
        kw = dict(batch_size=3, train=train, seed=5)
        plain = batches(build_loader(faces, GROUPS, cfg, SIZE, **kw))
        cached = batches(build_loader(faces, GROUPS, cfg, SIZE, cache=cache, **kw))
        assert len(plain) == len(cached) > 0
        for a, b in zip(plain, cached, strict=True):
            assert a.keys() == b.keys()
            for k in a:
                assert torch.equal(a[k], b[k]), (train, k)


def test_second_open_reuses_the_file_without_decoding(tmp_path, faces, monkeypatch) -> None:
    first = prepare_cache(faces, data_cfg(tmp_path), SIZE)
    mtime = first.path.stat().st_mtime_ns

    def no_decode(*_a, **_k):
        raise AssertionError("a complete cache must not decode again")

    monkeypatch.setattr(cache_mod, "decode_image", no_decode)
    # another run: the records in another order, and a second process-like open of the same cache
    second = prepare_cache(list(reversed(faces)), data_cfg(tmp_path), SIZE)
    assert second.key == first.key and second.path == first.path
    assert second.path.stat().st_mtime_ns == mtime
    assert second.pixels.filename == first.pixels.filename
    # a spawned worker gets the file name, not a pickled copy of the pixels
    clone = pickle.loads(pickle.dumps(second))
    assert len(pickle.dumps(second)) < second.pixels.nbytes
    np.testing.assert_array_equal(clone.pixels, first.pixels)


def test_a_changed_image_gives_a_new_cache(tmp_path, faces) -> None:
    before = prepare_cache(faces, data_cfg(tmp_path), SIZE)
    changed = Path(faces[3].path)
    write_face(changed, seed=99)
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    after = prepare_cache(faces, data_cfg(tmp_path), SIZE)
    assert after.key != before.key
    row = after.rows_for([str(changed)])[0]
    np.testing.assert_array_equal(after.pixels[row], decode_image(changed, SIZE, "auto"))
    # geometry and size are part of the key too
    assert prepare_cache(faces, data_cfg(tmp_path, geometry="resize"), SIZE).key != after.key
    assert prepare_cache(faces, data_cfg(tmp_path), SIZE + 8).key != after.key


def _killed_writer(records: list[Record], cfg: DataConfig) -> None:
    """Child process: start filling the cache and die (SIGKILL) at the third image."""
    seen = []

    def dying_decode(path, size, geometry):
        seen.append(path)
        if len(seen) == 3:
            os.kill(os.getpid(), signal.SIGKILL)
        return decode_image(path, size, geometry)

    cache_mod.decode_image = dying_decode  # this process only: it is a forked child
    prepare_cache(records, cfg, SIZE)


def test_a_killed_writer_leaves_no_complete_cache_and_is_rebuilt(tmp_path, faces, capsys) -> None:
    cfg = data_cfg(tmp_path)
    proc = multiprocessing.get_context("fork").Process(target=_killed_writer, args=(faces, cfg))
    proc.start()
    proc.join(timeout=60)
    assert proc.exitcode == -signal.SIGKILL
    folder = Path(cfg.cache_dir) / "images"
    assert not list(folder.glob("*.json")), "a killed writer must not leave a manifest"
    assert list(folder.glob("*.tmp")), "the killed writer's temporary file is left behind"
    cache = prepare_cache(faces, cfg, SIZE)
    assert "incomplete or stale" in capsys.readouterr().err
    assert not list(folder.glob("*.tmp"))
    for r, row in zip(faces, cache.rows_for([r.path for r in faces]), strict=True):
        np.testing.assert_array_equal(cache.pixels[row], decode_image(r.path, SIZE, "auto"))


def test_partial_data_file_is_never_read(tmp_path, faces, capsys) -> None:
    """A data file cut short, with no manifest or a manifest that does not match it, is rebuilt."""
    cfg = data_cfg(tmp_path)
    good = prepare_cache(faces, cfg, SIZE)
    expected, good_path = np.array(good.pixels), good.path
    data = good_path.read_bytes()
    good_path.write_bytes(data[: len(data) // 2])  # truncated, the manifest still says complete
    again = prepare_cache(faces, cfg, SIZE)
    assert "incomplete or stale" in capsys.readouterr().err
    np.testing.assert_array_equal(again.pixels, expected)
    good_path.with_suffix(".json").unlink()  # data file complete, marker missing
    prepare_cache(faces, cfg, SIZE)
    assert "incomplete or stale" in capsys.readouterr().err


def _build_logged(records: list[Record], cfg: DataConfig, log: str) -> None:
    """Child process: open-or-build the cache, noting in `log` when this process built it."""
    original = cache_mod._build_disk

    def logged(*args, **kwargs):
        with open(log, "a") as fh:
            fh.write(f"{os.getpid()}\n")
        return original(*args, **kwargs)

    cache_mod._build_disk = logged
    prepare_cache(records, cfg, SIZE)


def test_two_processes_at_once_build_one_cache(tmp_path, faces) -> None:
    cfg, log = data_cfg(tmp_path), tmp_path / "builds.log"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_build_logged, args=(faces, cfg, str(log))) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0, 0]
    assert len(log.read_text().split()) == 1
    assert len(list((tmp_path / "cache" / "images").glob("*.npy"))) == 1


def test_one_cache_of_all_records_serves_every_split(tmp_path) -> None:
    """As the trainer uses it: prepare_data, one cache of `data.all`, train and val loaders read from it."""
    from ordinalage.data.prepare import prepare_data

    cfg = DataConfig(cache="disk", cache_dir=str(tmp_path / "cache"), synth_n=60, synth_size=32, num_workers=0,
                     augment=OFF)
    data = prepare_data(cfg)
    cache = prepare_cache(data.all, cfg, SIZE)
    for records in (data.train, data.val):
        plain = batches(build_loader(records, data.groups, cfg, SIZE, batch_size=8, train=False, seed=0))
        cached = batches(build_loader(records, data.groups, cfg, SIZE, batch_size=8, train=False, seed=0, cache=cache))
        assert all(torch.equal(a["image"], b["image"]) for a, b in zip(plain, cached, strict=True))


def test_off_does_nothing(tmp_path, faces, monkeypatch) -> None:
    monkeypatch.setattr(cache_mod, "content_hashes", lambda *a, **k: pytest.fail("off must not hash"))
    assert prepare_cache(faces, data_cfg(tmp_path, "off"), SIZE) is None
    assert not (tmp_path / "cache").exists()


def test_unknown_mode_names_the_key(tmp_path, faces) -> None:
    with pytest.raises(UsageError, match=r"data\.cache.*'fast'.*auto, off, ram, disk"):
        prepare_cache(faces, data_cfg(tmp_path, "fast"), SIZE)


def test_ram_cache_writes_no_files(tmp_path, faces) -> None:
    cache = prepare_cache(faces, data_cfg(tmp_path, "ram"), SIZE)
    assert cache is not None and cache.mode == "ram" and cache.path is None
    assert not isinstance(cache.pixels, np.memmap)
    assert not (tmp_path / "cache" / "images").exists()
    row = cache.rows_for([faces[2].path])[0]
    np.testing.assert_array_equal(cache.pixels[row], decode_image(faces[2].path, SIZE, "auto"))


@pytest.mark.parametrize("mode", ["auto", "disk"])
def test_disk_guard_falls_back_to_off_and_says_so(tmp_path, faces, monkeypatch, capsys, mode) -> None:
    monkeypatch.setattr(cache_mod.shutil, "disk_usage", lambda _p: type("U", (), {"free": 10 * 2**20})())
    assert prepare_cache(faces, data_cfg(tmp_path, mode), SIZE) is None
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"data.cache={mode}" in err[0] and "without a cache" in err[0]
    assert not list((tmp_path / "cache" / "images").glob("*.npy"))


def test_ram_guard_falls_back_to_off_and_says_so(tmp_path, faces, monkeypatch, capsys) -> None:
    monkeypatch.setattr(cache_mod, "available_ram", lambda: 1000)
    assert prepare_cache(faces, data_cfg(tmp_path, "ram"), SIZE) is None
    err = capsys.readouterr().err
    assert "data.cache=ram" in err and "RAM" in err and "without a cache" in err


def test_unreadable_image_is_skipped_or_strict_raises(tmp_path, faces, capsys) -> None:
    bad = Path(faces[1].path).with_name("bad.jpg")
    bad.write_bytes(b"not a jpeg at all")
    records = [*faces, Record(str(bad), 30.0)]
    cfg = data_cfg(tmp_path)
    cache = prepare_cache(records, cfg, SIZE)
    assert list(cache.bad.values()) == ["not a decodable image"]
    got = batches(build_loader(records, GROUPS, cfg, SIZE, batch_size=16, train=False, seed=0, cache=cache))
    assert sum(len(b["index"]) for b in got) == len(faces)
    assert f"skipping {bad}" in capsys.readouterr().err
    strict = dataclasses.replace(cfg, strict=True)
    with pytest.raises(UsageError, match="bad.jpg"):
        batches(build_loader(records, GROUPS, strict, SIZE, batch_size=16, train=False, seed=0, cache=cache))


def test_cache_must_match_the_loader(tmp_path, faces) -> None:
    cfg = data_cfg(tmp_path)
    cache = prepare_cache(faces[:4], cfg, SIZE)
    with pytest.raises(UsageError, match="is not in it"):
        build_loader(faces, GROUPS, cfg, SIZE, batch_size=2, train=False, seed=0, cache=cache)
    with pytest.raises(UsageError, match="holds 24 px"):
        build_loader(faces[:4], GROUPS, cfg, 32, batch_size=2, train=False, seed=0, cache=cache)


def test_key_ignores_order_and_duplicates() -> None:
    assert cache_key(["b", "a", "a"], "auto", 32) == cache_key(["a", "b"], "auto", 32)
    assert cache_key(["a", "b"], "auto", 32) != cache_key(["a", "c"], "auto", 32)


def test_benchmark_script_smoke(tmp_path, faces) -> None:
    """benchmarks/cache.py on a tiny UTKFace-style folder, so the script does not rot."""
    import shutil
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import cache as bench

    folder = tmp_path / "utk"
    folder.mkdir()
    for i, r in enumerate(faces[:6]):
        shutil.copy(r.path, folder / f"{20 + i}_0_0_2017{i:04d}.jpg.chip.jpg")
    out = tmp_path / "cache.json"
    n = torch.get_num_threads()
    try:
        assert bench.main(["--data", str(folder), "--images", "6", "--size", "16", "--batch-size", "2",
                           "--workers", "0", "--repeats", "1", "--json", str(out)]) == 0
    finally:
        torch.set_num_threads(n)
    doc = json.loads(out.read_text())
    assert doc["build"]["rows"] == 6 and set(doc["figures"]) == {"augment_on/workers_0", "augment_off/workers_0"}
    assert doc["figures"]["augment_on/workers_0"]["cached_images_per_s"]["median"] > 0
