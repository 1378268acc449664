"""The embedded synthetic face set: names, determinism, CLI, learnability, the cached default set."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from ordinalage.cli import main
from ordinalage.config import DataConfig
from ordinalage.data import synth
from ordinalage.data.synth import ensure_default_synth, render_face, write_synth
from ordinalage.errors import UsageError
from ordinalage.groups import AgeGroups

NAME = re.compile(r"^(\d+)_([01])_([0-4])_(\d{17})\.jpg$")


@pytest.fixture(scope="module")
def set500(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_synth(tmp_path_factory.mktemp("synth500"), n=500, seed=1)


def _ages(paths: list[Path]) -> np.ndarray:
    return np.array([int(p.name.split("_")[0]) for p in paths], dtype=float)


def test_writes_utkface_style_names_covering_0_to_70(set500: list[Path]) -> None:
    files = sorted(set500[0].parent.glob("*.jpg"))
    assert len(files) == len(set500) == 500
    assert sorted(set500) == files
    matches = [NAME.match(p.name) for p in files]
    assert all(matches), [p.name for p, m in zip(files, matches, strict=True) if not m][:3]
    assert len({m.group(4) for m in matches if m}) == 500  # ids are unique
    ages = _ages(set500)
    assert 0 <= ages.min() <= 2 and 68 <= ages.max() <= 70
    counts = np.histogram(ages, bins=[0, 11, 21, 31, 41, 51, 61, 71])[0]
    assert counts.min() >= 30, counts  # every default group 0-10 ... 61-70 is well populated
    genders = {m.group(2) for m in matches if m}
    races = {m.group(3) for m in matches if m}
    assert genders == {"0", "1"} and len(races) == 5
    img = cv2.imread(str(files[0]))
    assert img is not None and img.shape == (96, 96, 3)


def test_same_seed_is_byte_identical_other_seed_differs(set500: list[Path], tmp_path: Path) -> None:
    again = write_synth(tmp_path / "again", n=500, seed=1)
    assert [p.name for p in again] == [p.name for p in set500]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(again, set500, strict=True))
    prefix = write_synth(tmp_path / "prefix", n=20, seed=1)  # a smaller n is a prefix of a larger one
    assert [p.read_bytes() for p in prefix] == [p.read_bytes() for p in set500[:20]]
    other = write_synth(tmp_path / "other", n=50, seed=2)
    assert not {p.name for p in other} & {p.name for p in set500}
    assert sum(a.read_bytes() == b.read_bytes() for a, b in zip(other, set500, strict=False)) == 0
    assert not np.array_equal(_ages(other), _ages(set500[:50]))


def test_render_face_shape_and_age_effect() -> None:
    img = render_face(30, np.random.default_rng(0), 64)
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    # same nuisance draws, different ages: the picture changes
    young = render_face(5.0, np.random.default_rng(3), 96).astype(float)
    old = render_face(75.0, np.random.default_rng(3), 96).astype(float)
    assert np.abs(young - old).mean() > 5.0
    with pytest.raises(UsageError, match="size"):
        render_face(30, np.random.default_rng(0), 16)


def test_cli_writes_and_reports_unwritable_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    assert main(["data", "synth", "--out", str(out), "--n", "50", "--seed", "1"]) == 0
    assert len(list(out.glob("*.jpg"))) == 50
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    bad = blocker / "sub"
    capsys.readouterr()
    assert main(["data", "synth", "--out", str(bad), "--n", "5"]) == 2
    err = capsys.readouterr().err
    assert f"ordinalage: error: synth: cannot create output folder {bad}: " in err
    assert not bad.exists() and blocker.read_text() == "not a folder"
    assert main(["data", "synth", "--out", str(tmp_path / "x"), "--n", "0"]) == 2
    assert "must be at least 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def _pixels(paths: list[Path]) -> np.ndarray:
    """Generic features: 24x24 colour and 24x24 grey thumbnails, nothing face-specific."""
    rows = []
    for p in paths:
        img = cv2.imread(str(p))
        small = cv2.resize(img, (24, 24), interpolation=cv2.INTER_AREA)
        grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
        rows.append(np.concatenate([small.ravel(), grey.ravel()]).astype(np.float32) / 255.0)
    return np.stack(rows)


def test_task_is_learnable_but_not_trivial(set500: list[Path]) -> None:
    from sklearn.linear_model import LinearRegression, RidgeCV

    ages = _ages(set500)
    x = _pixels(set500)
    tr, te = slice(0, 350), slice(350, 500)
    mean_mae = np.abs(ages[te] - ages[tr].mean()).mean()
    ridge = RidgeCV(alphas=np.logspace(-1, 4, 11)).fit(x[tr], ages[tr])
    pixel_mae = np.abs(ridge.predict(x[te]) - ages[te]).mean()
    brightness = x[:, :-576].mean(axis=1, keepdims=True)
    bright_mae = np.abs(LinearRegression().fit(brightness[tr], ages[tr]).predict(brightness[te]) - ages[te]).mean()
    print(f"mean predictor MAE {mean_mae:.2f}, ridge on pixels {pixel_mae:.2f} "
          f"({pixel_mae / mean_mae:.2f}x), brightness alone {bright_mae:.2f} ({bright_mae / mean_mae:.2f}x)")
    assert pixel_mae < 0.7 * mean_mae
    assert bright_mae > 0.85 * mean_mae


def test_default_set_is_generated_once_and_reused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = DataConfig(synth_n=30, synth_size=48, cache_dir=str(tmp_path / "cache"))
    folder = ensure_default_synth(cfg)
    assert folder == tmp_path / "cache" / "synth-v2-n30-s48"
    files = sorted(folder.glob("*.jpg"))
    assert len(files) == 30 and cv2.imread(str(files[0])).shape == (48, 48, 3)
    assert "generating" in capsys.readouterr().err
    stamps = {p.name: p.stat().st_mtime_ns for p in files}
    assert ensure_default_synth(cfg) == folder
    assert capsys.readouterr().err == ""
    assert {p.name: p.stat().st_mtime_ns for p in folder.glob("*.jpg")} == stamps
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [folder.name]  # no temp left over


def test_default_set_uses_env_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORDINALAGE_CACHE", str(tmp_path / "env"))
    folder = ensure_default_synth(DataConfig(synth_n=3, synth_size=40))
    assert folder == tmp_path / "env" / "synth-v2-n3-s40" and len(list(folder.glob("*.jpg"))) == 3


def test_losing_a_race_keeps_the_winners_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = DataConfig(synth_n=4, synth_size=40, cache_dir=str(tmp_path))
    target = tmp_path / "synth-v2-n4-s40"
    real = synth.write_synth

    def other_process_finishes_first(out: Path, **kw: int) -> list[Path]:
        paths = real(out, **kw)
        real(target, **kw)  # the winner renames its complete set into place meanwhile
        (target / "winner").touch()
        return paths

    monkeypatch.setattr(synth, "write_synth", other_process_finishes_first)
    assert ensure_default_synth(cfg) == target
    assert (target / "winner").exists() and len(list(target.glob("*.jpg"))) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]  # the loser's temp folder is gone


def test_unwritable_cache_dir_names_the_folder(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UsageError, match=re.escape(str(blocker / "cache"))):
        ensure_default_synth(DataConfig(synth_n=2, cache_dir=str(blocker / "cache")))


def test_default_synth_set_drops_nothing_under_the_default_groups(tmp_path: Path) -> None:
    groups = AgeGroups.parse(DataConfig().groups)
    n = DataConfig().synth_n
    ages = [synth.item_age(0, i) for i in range(n)]  # the cached default set is seed 0
    assert int((groups.indices(ages) < 0).sum()) == 0
    assert min(ages) == 0 and max(ages) == groups.max_age == synth.MAX_AGE  # the whole range is used
    written = write_synth(tmp_path / "head", n=4, seed=0, size=32)
    assert list(_ages(written)) == ages[:4]  # item_age is the age the file name carries
