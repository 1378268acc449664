"""Every shipped training config loads and resolves; the capstone's protocol is what it says."""

from __future__ import annotations

from pathlib import Path

import pytest

from ordinalage.config import load_config
from ordinalage.data.sources import parse_spec
from ordinalage.groups import AgeGroups
from ordinalage.models.backbones import BACKBONES
from ordinalage.models.heads import HEADS

ROOT = Path(__file__).resolve().parents[1]
TRAINING_CONFIGS = sorted(p for p in (ROOT / "configs").rglob("*.yaml") if not {"tune", "bakeoff", "zoo"} & set(p.parts))
BAKEOFF_CONFIGS = sorted((ROOT / "configs" / "bakeoff").glob("*.yaml"))


@pytest.mark.parametrize("path", TRAINING_CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_training_config_resolves(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.model.backbone in BACKBONES and cfg.model.head in HEADS
    AgeGroups.parse(cfg.data.groups)
    for spec in cfg.data.sources:
        parse_spec(spec)


@pytest.mark.parametrize("path", BAKEOFF_CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_bakeoff_config_builds_every_cell(path: Path, monkeypatch) -> None:
    from ordinalage.comparison.spec import build_spec, check_cells

    monkeypatch.chdir(ROOT)  # data specs and run_config paths are relative to the repository
    spec = build_spec(config=path)
    cells = check_cells(spec, ROOT / "bakeoffs" / path.stem)  # every cell's config validates
    assert len(spec.methods) >= 2 and len(cells) == len(spec.methods) * spec.seeds * spec.folds


@pytest.mark.parametrize(("name", "head"), [("capstone_megaage_vgg16face", "class"),
                                            ("capstone_megaage_vgg16face_coral", "coral")])
def test_capstone_protocol(name: str, head: str) -> None:
    cfg = load_config(ROOT / "configs" / "experiments" / f"{name}.yaml")
    assert [parse_spec(s)[0] for s in cfg.data.sources] == ["megaage", "megaage"]
    assert AgeGroups.parse(cfg.data.groups).labels == ["0-10", "11-20", "21-30", "31-40", "41-50", "51-60", "61-70"]
    assert (cfg.data.cap_train, cfg.data.cap_test) == (1500, 500)
    assert (cfg.model.backbone, cfg.model.head, cfg.model.target) == ("vgg16", head, "group")
    assert cfg.model.weights and cfg.train.batch_size == 32 and cfg.data.image_size == 224


def test_the_zoo_recipe_names_a_training_config_and_its_epochs() -> None:
    """configs/zoo/*.yaml (benchmarks/zoo_*.py's settings): the teacher's config loads, epochs are set,
    and the licence is stated."""
    import yaml

    for path in sorted((ROOT / "configs" / "zoo").glob("*.yaml")):
        settings = yaml.safe_load(path.read_text())
        load_config(path.parent / settings["teacher"]["config"])
        assert settings["teacher"]["epochs"] >= 1 and settings["student"]["epochs"] >= 1, path
        assert "non-commercial" in settings["license"], path
