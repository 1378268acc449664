"""`--detector auto`: dlib when it is installed, else Haar with a one-line notice; made-up training faces
are recognised from the reader's `synthetic` trait."""

from __future__ import annotations

import pytest

from ordinalage.data.sources import synthetic_only
from ordinalage.errors import UsageError
from ordinalage.inference.detection import registry


@pytest.mark.parametrize("installed, expected", [(True, "dlib"), (False, "haar")])
def test_auto_picks_dlib_when_installed(monkeypatch, installed: bool, expected: str) -> None:
    monkeypatch.setattr(registry, "dlib_installed", lambda: installed)
    assert registry.resolve_detector_name("auto") == expected
    assert registry.resolve_detector_name("haar") == "haar"  # a named detector stays as named
    notice = registry.auto_notice("auto")
    assert (notice is None) == installed
    if notice:
        assert "pip install 'ordinalage[dlib]'" in notice and "Haar" in notice
    assert registry.auto_notice("haar") is None


def test_auto_without_dlib_makes_haar(monkeypatch) -> None:
    monkeypatch.setattr(registry, "dlib_installed", lambda: False)
    assert registry.make_detector("auto").name == "haar"
    with pytest.raises(UsageError, match=r"unknown detector 'mtcnn' \(choose from auto, haar, dlib\)"):
        registry.make_detector("mtcnn")


def test_synthetic_only_reads_the_reader_trait() -> None:
    assert synthetic_only(["synth"])
    assert not synthetic_only(["synth", "utkface:/data/UTKFace"])  # real faces beside the made-up ones
    assert not synthetic_only(["utkface:/data/UTKFace"]) and not synthetic_only([])
    assert not synthetic_only(["nosuchreader:/x"])  # unknown (a plugin not installed): not claimed synthetic
