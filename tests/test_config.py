"""Config: defaults < YAML (with base:) < CLI flags < --set; unknown keys and bad types name the key."""

from __future__ import annotations

import pytest

from ordinalage.config import Config, from_dict, load_config, to_dict
from ordinalage.errors import UsageError
from ordinalage.groups import AgeGroups


def test_defaults_are_the_main_job() -> None:
    c = load_config()
    assert c.model.head == "coral" and c.model.backbone == "scratch"
    assert c.data.sources == ("synth",)
    assert AgeGroups.parse(c.data.groups).labels == ["0-10", "11-20", "21-30", "31-40", "41-50", "51-60", "61-70"]


def test_precedence_yaml_then_flags_then_set(tmp_path) -> None:
    base = tmp_path / "base.yaml"
    base.write_text("train:\n  lr: 0.5\n  epochs: 3\nmodel:\n  head: corn\n")
    exp = tmp_path / "exp.yaml"
    exp.write_text("base: base.yaml\ntrain:\n  epochs: 4\n")
    c = load_config(exp)
    assert (c.train.lr, c.train.epochs, c.model.head) == (0.5, 4, "corn")
    c = load_config(exp, overrides={"train.epochs": 7, "model.head": "class"})
    assert (c.train.epochs, c.model.head) == (7, "class")
    c = load_config(exp, overrides={"train.epochs": 7}, sets=["train.epochs=9", "data.augment.hflip_p=0", "train.out_dir=null"])
    assert c.train.epochs == 9 and c.data.augment.hflip_p == 0.0 and c.train.out_dir is None


def test_round_trip_through_dict() -> None:
    c = load_config(sets=["data.sources=[synth, 'utkface:/x']", "train.lr=1e-3"])
    assert from_dict(Config, to_dict(c)) == c
    assert c.data.sources == ("synth", "utkface:/x")


@pytest.mark.parametrize(
    ("sets", "needle"),
    [
        (["train.lrr=1"], "train.lrr"),
        (["bogus.x=1"], "bogus"),
        (["train.epochs=abc"], "train.epochs"),
        (["train.epochs=1.5"], "train.epochs"),
        (["train.compile=3"], "train.compile"),
        (["data.augment.blur_p=[1]"], "data.augment.blur_p"),
        (["train=3"], "train"),
        (["novalue"], "key=value"),
    ],
)
def test_bad_keys_and_types_name_the_key(sets: list[str], needle: str) -> None:
    with pytest.raises(UsageError, match=needle.replace(".", r"\.").replace("[", r"\[")):
        load_config(sets=sets)


def test_yaml_errors_name_the_file(tmp_path) -> None:
    with pytest.raises(UsageError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lr: [1, 2\n")
    with pytest.raises(UsageError, match=r"bad\.yaml.*line"):
        load_config(bad)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("model:\n  haed: coral\n")
    with pytest.raises(UsageError, match=r"model\.haed.*unknown\.yaml"):
        load_config(unknown)


def test_age_groups_parse_and_index() -> None:
    g = AgeGroups.parse("0-10,11-20,21+")
    assert g.indices([0, 10, 10.9, 11, 20, 21, 99]).tolist() == [0, 0, 0, 1, 1, 2, 2]
    d = AgeGroups.parse(None)
    assert d.indices([70, 71, 80]).tolist() == [6, -1, -1]
    assert d.clip_indices([71, -1]).tolist() == [6, 0]
    gaps = AgeGroups.parse("0-10,20-30,40+")
    assert gaps.clip_indices([15, 35, 5, 100, -3]).tolist() == [0, 1, 0, 2, 0]
    for bad in ["", "10-5", "0-10,5-20", "71+,0-10", "a-b"]:
        with pytest.raises(UsageError):
            AgeGroups.parse(bad)
