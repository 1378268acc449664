"""Image side of the data layer: decoding and geometry, augmentation, FaceDataset and loaders."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from fakes_data import UTKFACE, needs_utkface
from torch.utils.data import DataLoader

from ordinalage.config import AugmentConfig, DataConfig
from ordinalage.data import decode
from ordinalage.data.augment import build_transform, reseed_transform
from ordinalage.data.dataset import FaceDataset, build_loader, collate_skip_none, worker_init_fn
from ordinalage.data.decode import ImageDecodeError, choose_reduction, decode_image, jpeg_size
from ordinalage.data.records import Record
from ordinalage.errors import UsageError
from ordinalage.groups import AgeGroups

GROUPS = AgeGroups.parse()
OFF = AugmentConfig(hflip_p=0, affine_p=0, color_p=0, gray_p=0, blur_p=0, noise_p=0, jpeg_p=0, occlusion_p=0)
# Every image gets a distinct random affine + colour change, so two images never match by chance.
ALWAYS = dataclasses.replace(OFF, affine_p=1.0, color_p=1.0)


def pattern(h: int, w: int, seed: int = 0) -> np.ndarray:
    """An asymmetric RGB test picture: colour gradients plus a few random blocks (edges, detail)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([255 * x / w, 255 * y / h, 128 + 100 * np.sin(x / 5.0)], axis=-1)
    for _ in range(6):
        y0, x0 = rng.integers(0, h - h // 4), rng.integers(0, w - w // 4)
        img[y0 : y0 + h // 5, x0 : x0 + w // 6] = rng.integers(0, 256, 3)
    return img.astype(np.uint8)


def write(path: Path, rgb: np.ndarray, quality: int = 95) -> Path:
    ok = cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return path


def records_for(paths: list[Path], ages: list[float] | None = None) -> list[Record]:
    ages = ages or [5.0 + 9 * i for i in range(len(paths))]
    return [Record(str(p), a) for p, a in zip(paths, ages, strict=True)]


def cfg(aug: AugmentConfig = OFF, **kw) -> DataConfig:
    return DataConfig(augment=aug, **kw)


# ------------------------------------------------------------------------------------------
# decode


def test_jpeg_size_and_reduction_choice(tmp_path):
    p = write(tmp_path / "a.jpg", pattern(90, 120))
    assert jpeg_size(p.read_bytes()) == (90, 120)
    assert jpeg_size(b"\x89PNG....") is None
    assert choose_reduction(256, 256, 32, "resize") == 8
    assert choose_reduction(256, 256, 64, "resize") == 4
    assert choose_reduction(256, 256, 100, "resize") == 2
    assert choose_reduction(256, 256, 200, "resize") == 1
    assert choose_reduction(218, 178, 44, "crop_megaage") == 4  # 178 kept rows: 178 // 4 = 44
    assert choose_reduction(218, 178, 45, "crop_megaage") == 2


@pytest.mark.parametrize(
    "size, flag",
    [(32, cv2.IMREAD_REDUCED_COLOR_8), (100, cv2.IMREAD_REDUCED_COLOR_2), (200, cv2.IMREAD_COLOR)],
)
def test_reduced_decoding_used_and_faithful(tmp_path, monkeypatch, size, flag):
    src = pattern(256, 256)
    p = write(tmp_path / "a.jpg", src, quality=98)
    flags = []
    real = cv2.imdecode
    monkeypatch.setattr(decode.cv2, "imdecode", lambda buf, f: flags.append(f) or real(buf, f))
    out = decode_image(p, size, "resize")
    assert flags == [flag]
    assert out.shape == (size, size, 3) and out.dtype == np.uint8
    # the reduced decode matches a full decode + area resize of the original picture
    ref = cv2.resize(src, (size, size), interpolation=cv2.INTER_AREA)
    assert np.abs(out.astype(int) - ref).mean() < 8


def test_reduced_flags_give_reduced_sizes(tmp_path):
    data = np.frombuffer(write(tmp_path / "a.jpg", pattern(256, 192)).read_bytes(), np.uint8)
    for factor, flag in [
        (2, cv2.IMREAD_REDUCED_COLOR_2),
        (4, cv2.IMREAD_REDUCED_COLOR_4),
        (8, cv2.IMREAD_REDUCED_COLOR_8),
    ]:
        assert cv2.imdecode(data, flag).shape == (256 // factor, 192 // factor, 3)


def bands(h: int, w: int, vertical: bool) -> np.ndarray:
    """Red | green | blue bands: the outer ones 20% of the side each (top/bottom or left/right)."""
    img = np.zeros((h, w, 3), np.uint8)
    n = h if vertical else w
    edge = n // 5
    idx = np.arange(n)
    colour = np.where(idx < edge, 0, np.where(idx >= n - edge, 2, 1))
    for c in range(3):
        if vertical:
            img[:, :, c][colour == c, :] = 255
        else:
            img[:, :, c][:, colour == c] = 255
    return img


@pytest.mark.parametrize("size", [32, 64, 150])
def test_geometries(tmp_path, size):
    wide = write(tmp_path / "wide.jpg", bands(100, 250, vertical=False), quality=100)
    for geometry in ("resize", "center_square", "crop_megaage", "auto"):
        assert decode_image(wide, size, geometry).shape == (size, size, 3)
    # centre square of a 100x250 picture = the green middle only; resize keeps red and blue
    for geometry in ("center_square", "auto"):
        mean = decode_image(wide, size, geometry).reshape(-1, 3).mean(0)
        assert mean[1] > 230 and mean[0] < 25 and mean[2] < 25, geometry
    mean = decode_image(wide, size, "resize").reshape(-1, 3).mean(0)
    assert 35 < mean[0] < 70 and 35 < mean[2] < 70
    # a square picture: auto = resize, everything kept
    square = write(tmp_path / "square.jpg", bands(120, 120, vertical=False), quality=100)
    assert (
        np.abs(decode_image(square, size, "auto").astype(int) - decode_image(square, size, "resize")).max()
        == 0
    )


@pytest.mark.parametrize("size", [32, 44, 100, 178])
def test_crop_megaage_cuts_20px_scaled_by_reduction(tmp_path, size):
    img = np.zeros((218, 178, 3), np.uint8)  # grey levels only: JPEG keeps luma edges sharp
    img[:20] = 255  # white top strip (20 px)
    img[198:] = 255  # white bottom strip
    img[20:198, 60:120] = 128  # the "face"
    p = write(tmp_path / "megaage.jpg", img, quality=100)
    out = decode_image(p, size, "crop_megaage").astype(int)
    assert out.shape == (size, size, 3)
    rows = out.mean(axis=(1, 2))
    assert rows.max() < 70, rows  # no white strip survives, not even one row
    assert abs(out[size // 2, size // 2, 0] - 128) < 10
    # plain resize keeps the strips
    assert decode_image(p, size, "resize")[0].mean() > 200


def test_bad_files_raise_image_decode_error(tmp_path):
    good = write(tmp_path / "good.jpg", pattern(64, 64))
    data = good.read_bytes()
    cases = {
        "truncated.jpg": data[: len(data) * 2 // 3],
        "garbage.jpg": np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes(),
        "fake_jpeg.jpg": b"\xff\xd8\xff\xe0" + b"junk" * 100 + b"\xff\xd9",
        "empty.jpg": b"",
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ImageDecodeError) as info:
            decode_image(tmp_path / name, 32)
        assert name in str(info.value) and info.value.path.endswith(name)
    with pytest.raises(ImageDecodeError, match="missing.jpg.*not found"):
        decode_image(tmp_path / "missing.jpg", 32)


def test_truncation_caught_even_if_opencv_decodes_partially(tmp_path, monkeypatch):
    # some OpenCV builds fill a cut-short JPEG with grey and only warn; the end-marker check catches it
    data = write(tmp_path / "good.jpg", pattern(64, 64)).read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) - 100])
    monkeypatch.setattr(decode.cv2, "imdecode", lambda buf, flag: np.full((64, 64, 3), 128, np.uint8))
    with pytest.raises(ImageDecodeError, match="cut.jpg.*truncated"):
        decode_image(cut, 32)


def test_trailing_bytes_after_eoi_are_fine_and_png_decodes(tmp_path):
    good = write(tmp_path / "good.jpg", pattern(64, 64))
    padded = tmp_path / "padded.jpg"
    padded.write_bytes(good.read_bytes() + b"camera trailer")
    assert np.array_equal(decode_image(padded, 32), decode_image(good, 32))
    png = tmp_path / "a.png"
    cv2.imwrite(str(png), cv2.cvtColor(pattern(40, 40), cv2.COLOR_RGB2BGR))
    assert np.array_equal(decode_image(png, 40, "resize"), pattern(40, 40))  # lossless, RGB order kept


def test_unknown_geometry_names_the_key(tmp_path):
    p = write(tmp_path / "a.jpg", pattern(40, 40))
    with pytest.raises(UsageError, match="data.geometry"):
        decode_image(p, 32, "stretch")


# ------------------------------------------------------------------------------------------
# augment

FIELDS = {
    "hflip_p": "HorizontalFlip",
    "affine_p": "Affine",
    "color_p": "ColorJitter",
    "gray_p": "ToGray",
    "blur_p": "GaussianBlur",
    "noise_p": "GaussNoise",
    "jpeg_p": "ImageCompression",
    "occlusion_p": "CoarseDropout",
}


def names(transform) -> list[str]:
    return [type(t).__name__ for t in transform.transforms] if transform is not None else []


def test_every_probability_field_is_covered():
    p_fields = {f.name for f in dataclasses.fields(AugmentConfig) if f.name.endswith("_p")}
    assert p_fields == set(FIELDS)


@pytest.mark.parametrize("field, cls", FIELDS.items())
def test_each_transform_on_and_off(field, cls):
    img = pattern(48, 48, seed=3)
    only = build_transform(dataclasses.replace(OFF, **{field: 1.0}), 48, train=True)
    assert names(only) == [cls]
    reseed_transform(only, 0)
    for _ in range(3):
        out = only(image=img)["image"]
        assert out.shape == img.shape and out.dtype == np.uint8
        assert not np.array_equal(out, img), f"{cls} at p=1 left the image unchanged"
    everything_but = build_transform(
        dataclasses.replace(AugmentConfig(**{f: 0.5 for f in FIELDS}), **{field: 0.0}), 48, True
    )
    assert cls not in names(everything_but) and len(names(everything_but)) == len(FIELDS) - 1


def test_strengths_reach_the_transforms():
    aug = AugmentConfig(
        shift=0.1,
        scale=0.2,
        rotate=30,
        brightness=0.3,
        contrast=0.4,
        saturation=0.1,
        hue=0.05,
        gray_p=1,
        blur_p=1,
        blur_limit=7,
        noise_p=1,
        noise_std=0.1,
        jpeg_p=1,
        jpeg_quality=30,
        occlusion_p=1,
        occlusion_size=0.4,
    )
    t = {type(x).__name__: x for x in build_transform(aug, 64, True).transforms}
    assert t["Affine"].rotate == (-30, 30)
    assert t["Affine"].scale["x"] == pytest.approx((0.8, 1.2))
    assert t["Affine"].translate_percent["y"] == pytest.approx((-0.1, 0.1))
    assert t["ColorJitter"].brightness == pytest.approx((0.7, 1.3))
    assert t["ColorJitter"].contrast == pytest.approx((0.6, 1.4))
    assert t["ColorJitter"].hue == pytest.approx((-0.05, 0.05))
    assert t["GaussianBlur"].blur_limit == (3, 7)
    assert t["GaussNoise"].std_range == pytest.approx((0.0, 0.1))
    assert t["ImageCompression"].quality_range == (30, 100)
    assert t["CoarseDropout"].hole_width_range == pytest.approx((0.2, 0.4))


def test_disabled_eval_and_all_off_give_none():
    assert build_transform(AugmentConfig(), 32, train=False) is None
    assert build_transform(AugmentConfig(enabled=False), 32, train=True) is None
    assert build_transform(OFF, 32, train=True) is None
    assert names(build_transform(DataConfig(), 32, train=True)) == ["HorizontalFlip", "Affine", "ColorJitter"]


def test_bad_values_name_the_key():
    with pytest.raises(UsageError, match="data.augment.hflip_p"):
        build_transform(AugmentConfig(hflip_p=1.5), 32, True)
    with pytest.raises(UsageError, match="data.augment.blur_limit"):
        build_transform(AugmentConfig(blur_p=0.5, blur_limit=4), 32, True)
    with pytest.raises(UsageError, match="data.augment.jpeg_quality"):
        build_transform(AugmentConfig(jpeg_quality=0), 32, True)


def test_reseed_is_reproducible_and_uncorrelated():
    img = pattern(32, 32)
    t = build_transform(AugmentConfig(), 32, True)

    def run(seed: int, n: int = 5) -> list[np.ndarray]:
        reseed_transform(t, seed)
        return [t(image=img)["image"] for _ in range(n)]

    assert all(np.array_equal(a, b) for a, b in zip(run(1), run(1), strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(run(1), run(2), strict=True))
    # two coins with p=0.5 must be drawn from one stream, not from equal per-transform seeds
    coins = build_transform(dataclasses.replace(OFF, hflip_p=0.5, color_p=0.5), 32, True)
    assert names(coins) == ["HorizontalFlip", "ColorJitter"]
    coins.save_applied_params = True
    reseed_transform(coins, 7)
    agree = 0
    for _ in range(200):
        applied = {n for n, _ in coins(image=img)["applied_transforms"]}
        agree += ("HorizontalFlip" in applied) == ("ColorJitter" in applied)
    assert 60 < agree < 140


# ------------------------------------------------------------------------------------------
# dataset and loaders


def test_face_dataset_item_contract(tmp_path):
    paths = [write(tmp_path / f"{i}.jpg", pattern(80, 60, seed=i)) for i in range(3)]
    ds = FaceDataset(records_for(paths, [3.0, 27.5, 95.0]), GROUPS, 32, "center_square", None, strict=False)
    item = ds[1]
    assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.uint8
    assert np.array_equal(item["image"].permute(1, 2, 0).numpy(), decode_image(paths[1], 32, "center_square"))
    assert item["age"].dtype == torch.float32 and item["age"].item() == 27.5
    assert item["group"].dtype == torch.int64 and item["group"].item() == 2
    assert ds[2]["group"].item() == 6  # above the last group: clipped to it
    assert item["index"].dtype == torch.int64 and item["index"].item() == 1
    batch = collate_skip_none([ds[0], None, ds[2]])
    assert batch["image"].shape == (2, 3, 32, 32) and batch["index"].tolist() == [0, 2]
    assert collate_skip_none([None, None]) is None


def same_image_dataset(tmp_path: Path, n: int) -> list[Record]:
    p = write(tmp_path / "same.jpg", pattern(40, 40))
    return records_for([p] * n, [30.0] * n)


def batches(loader) -> list[dict[str, torch.Tensor]]:
    return [b for b in loader if b is not None]


def test_workers_do_not_repeat_augmentations(tmp_path):
    records = same_image_dataset(tmp_path, 8)
    loader = build_loader(records, GROUPS, cfg(ALWAYS), 32, batch_size=2, train=True, seed=0, num_workers=2)
    images = torch.cat([b["image"] for b in batches(loader)])
    assert len(images) == 8
    flat = images.flatten(1)
    # worker 0 made batches 0 and 2, worker 1 batches 1 and 3: all 8 augmentations differ
    assert all(not torch.equal(flat[i], flat[j]) for i in range(8) for j in range(i + 1, 8))

    # the trap this guards against: without worker_init_fn both workers replay one stream
    ds = loader.dataset
    plain = DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate_skip_none)
    b = batches(plain)
    assert torch.equal(b[0]["image"], b[1]["image"])


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_seed_reproducible(tmp_path, workers):
    paths = [write(tmp_path / f"{i}.jpg", pattern(40, 40, seed=i)) for i in range(8)]
    records = records_for(paths)

    def epochs(seed: int) -> list[list[dict[str, torch.Tensor]]]:
        loader = build_loader(
            records, GROUPS, cfg(ALWAYS), 32, batch_size=3, train=True, seed=seed, num_workers=workers
        )
        return [batches(loader) for _ in range(2)]

    def same(a, b) -> bool:
        return len(a) == len(b) and all(torch.equal(x[k], y[k]) for x, y in zip(a, b, strict=True) for k in x)

    first, again, other = epochs(5), epochs(5), epochs(6)
    assert len(first[0]) == 2  # 8 images, batch 3, drop_last for training
    assert same(first[0], again[0]) and same(first[1], again[1])
    assert not same(first[0], other[0])
    assert not same(first[0], first[1])  # the next epoch draws new augmentations


def test_eval_loader_keeps_order_and_no_augmentation(tmp_path):
    paths = [write(tmp_path / f"{i}.jpg", pattern(40, 40, seed=i)) for i in range(5)]
    loader = build_loader(
        records_for(paths), GROUPS, cfg(AugmentConfig()), 32, batch_size=2, train=False, seed=0, num_workers=0
    )
    got = batches(loader)
    assert torch.cat([b["index"] for b in got]).tolist() == [0, 1, 2, 3, 4]  # no drop_last for eval
    assert np.array_equal(got[0]["image"][1].permute(1, 2, 0).numpy(), decode_image(paths[1], 32))


def test_sampler_weights_and_explicit_sampler(tmp_path):
    paths = [write(tmp_path / f"{i}.jpg", pattern(40, 40, seed=i)) for i in range(4)]
    records = records_for(paths)
    weights = np.array([0.0, 0.0, 1.0, 0.0])
    loader = build_loader(
        records, GROUPS, cfg(), 32, 2, train=True, seed=0, sampler_weights=weights, num_workers=0
    )
    assert torch.cat([b["index"] for b in batches(loader)]).tolist() == [2, 2, 2, 2]
    loader = build_loader(
        records,
        GROUPS,
        cfg(),
        32,
        2,
        train=True,
        seed=0,
        sampler_weights=weights,
        sampler=[3, 1, 0, 2],
        num_workers=0,
    )
    assert torch.cat([b["index"] for b in batches(loader)]).tolist() == [3, 1, 0, 2]
    with pytest.raises(UsageError, match="sampler weights"):
        build_loader(records, GROUPS, cfg(), 32, 2, train=True, seed=0, sampler_weights=weights[:3])


def test_corrupt_images_are_reported_and_skipped(tmp_path, capfd):
    paths = [write(tmp_path / f"{i}.jpg", pattern(40, 40, seed=i)) for i in range(6)]
    data = paths[0].read_bytes()
    bad = tmp_path / "cut_short.jpg"
    bad.write_bytes(data[: len(data) // 2])
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not an image at all")
    records = records_for(paths[:3] + [bad] + paths[3:] + [junk])
    loader = build_loader(records, GROUPS, cfg(), 32, batch_size=2, train=False, seed=0, num_workers=2)
    seen = torch.cat([b["index"] for b in batches(loader)]).tolist()
    assert seen == [0, 1, 2, 4, 5, 6]
    err = capfd.readouterr().err
    assert "cut_short.jpg" in err and "junk.jpg" in err
    assert err.count("junk.jpg") == 1  # once, even though the loader ran to the end

    # a batch made only of bad files comes out as None and is skipped by callers
    only_bad = build_loader(
        records_for([bad, junk]), GROUPS, cfg(), 32, batch_size=2, train=False, seed=0, num_workers=0
    )
    assert list(only_bad) == [None]

    strict = build_loader(
        records, GROUPS, cfg(strict=True), 32, batch_size=2, train=False, seed=0, num_workers=0
    )
    with pytest.raises(UsageError, match="cut_short.jpg: cannot read image"):
        batches(strict)


def test_worker_init_fn_outside_workers_leaves_the_generators_alone():
    """In the main process there is no worker seed: the global random streams must go on untouched."""

    def draws() -> tuple[float, float, float]:
        return random.random(), float(np.random.rand()), float(torch.rand(1))

    random.seed(5), np.random.seed(5), torch.manual_seed(5)
    expected = draws()
    random.seed(5), np.random.seed(5), torch.manual_seed(5)
    assert worker_init_fn(0) is None
    assert draws() == expected


@needs_utkface
def test_real_utkface_images():
    files = sorted(UTKFACE.glob("*.jpg"))[::1000][:8]
    records = [Record(str(f), float(f.name.split("_")[0])) for f in files]
    loader = build_loader(
        records, GROUPS, cfg(AugmentConfig()), 64, batch_size=4, train=True, seed=0, num_workers=0
    )
    got = batches(loader)
    assert sum(len(b["index"]) for b in got) == 8
    for b in got:
        assert b["image"].shape == (4, 3, 64, 64) and b["image"].dtype == torch.uint8
        assert b["image"].float().std() > 10  # real picture content, not blank
        for i, age in zip(b["index"].tolist(), b["age"].tolist(), strict=True):
            assert age == records[i].age


def test_getitems_batch_matches_items_and_skips_bad(tmp_path):
    paths = [write(tmp_path / f"{i}.jpg", pattern(60, 80, seed=i)) for i in range(4)]
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"junk")
    ds = FaceDataset(records_for(paths[:2] + [bad] + paths[2:]), GROUPS, 32, "center_square", None)
    batch = collate_skip_none(ds.__getitems__([4, 2, 0, 1]))
    items = collate_skip_none([ds[4], ds[2], ds[0], ds[1]])
    assert batch["image"].is_contiguous() and batch["image"].shape == (3, 3, 32, 32)
    for key in ("image", "age", "group", "index"):
        assert torch.equal(batch[key], items[key]) and batch[key].dtype == items[key].dtype
    assert batch["index"].tolist() == [4, 0, 1]
    assert ds.__getitems__([2]) is None and collate_skip_none(None) is None
