"""The one image lister and the one UTKFace name parser."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes_data import IRREGULAR_UTKFACE

from ordinalage.data.files import UTKFaceName, list_images, parse_utkface_name
from ordinalage.errors import UsageError


def _touch(root: Path, names: list[str]) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")


def test_list_images_sorted_recursive_and_flat(tmp_path: Path) -> None:
    _touch(tmp_path, ["b.jpg", "a.PNG", "sub/c.JPG", "sub/deeper/d.webp", "notes.txt", ".hidden.jpg",
                      ".cache/e.jpg", "f.tiff"])
    rel = [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)]
    assert rel == ["a.PNG", "b.jpg", "f.tiff", "sub/c.JPG", "sub/deeper/d.webp"]
    flat = [p.name for p in list_images(str(tmp_path), recursive=False)]
    assert flat == ["a.PNG", "b.jpg", "f.tiff"]


def test_list_images_mixed_inputs_keep_order_and_name_bad_paths(tmp_path: Path) -> None:
    _touch(tmp_path, ["z.jpg", "dir/y.jpg", "dir/x.jpg"])
    got = list_images([tmp_path / "z.jpg", tmp_path / "dir"])
    assert [p.name for p in got] == ["z.jpg", "x.jpg", "y.jpg"]
    with pytest.raises(UsageError, match="missing.jpg: no such file or folder"):
        list_images([tmp_path / "missing.jpg"])
    (tmp_path / "empty").mkdir()
    assert list_images(tmp_path / "empty") == []
    with pytest.raises(UsageError, match="empty: no image files in this folder"):
        list_images([tmp_path / "empty"], allow_empty=False)


@pytest.mark.parametrize(("name", "want"), [
    ("25_0_1_20170116174525125.jpg.chip.jpg", UTKFaceName(25, 0, 1)),
    ("39_1_20170116174525125.jpg.chip.jpg", UTKFaceName(39, 1, None)),  # race missing (real name)
    ("24_0_1_20170116220224657 .jpg.chip.jpg", UTKFaceName(24, 0, 1)),
    ("61_3_20170109150557335.jpg.chip.jpg", UTKFaceName(61, None, None)),  # gender 3 is not a code
    ("7_1_0_000000000000000012.jpg", UTKFaceName(7, 1, 0)),  # the synthetic set's names
    ("/some/folder/80_0_4_x.jpg", UTKFaceName(80, 0, 4)),
    ("abc_0_0_2017.jpg", None), ("-5_0_0_2017.jpg", None), ("4.5_1_0_x.jpg", None), ("", None),
])
def test_parse_utkface_name(name: str, want: UTKFaceName | None) -> None:
    assert parse_utkface_name(name) == want


def test_parse_utkface_irregular_real_names() -> None:
    ages = [parse_utkface_name(n).age for n in IRREGULAR_UTKFACE]  # type: ignore[union-attr]
    assert ages == [int(n.split("_")[0]) for n in IRREGULAR_UTKFACE]
    assert parse_utkface_name(IRREGULAR_UTKFACE[0]).meta() == {"gender": 1}  # type: ignore[union-attr]
