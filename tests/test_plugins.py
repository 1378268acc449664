"""Plugins by entry point (ordinalage/plugins.py): loaded once, registered under the entry point's
name; a plugin that fails to import, two plugins of one name, a name that shadows a built-in: each a
problem naming the package and entry point, never an exception; `ordinalage list heads` shows them;
a command that needs a broken plugin exits 2 with its problem, and the other heads keep working.

Distributions are written as dist-info folders on sys.path (tests/plugin_dists.py), no pip."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from plugin_dists import BACKBONE, BROKEN_HEAD, READER, VALID_HEAD, install, plugin_site
from tiny_training import tiny

from ordinalage.cli import main
from ordinalage.groups import AgeGroups
from ordinalage.plugins import PluginError, load_plugins, plugin_of, plugin_problems, require_plugin

GROUP = "ordinalage.test_things"  # a group of these tests' own: no registry of the package is touched


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder on sys.path to install distributions into (registries and caches restored after)."""
    with plugin_site(tmp_path / "site", monkeypatch) as root:
        yield root


def _modules(**sources: str) -> dict[str, str]:
    return sources


# --------------------------------------------------------------------------------------------- the loader


def test_a_plugin_is_loaded_once_and_registered_under_its_entry_point_name(site: Path) -> None:
    install(site, "things-a", {GROUP: {"alpha": "things_a:make"}}, _modules(things_a="def make():\n    return 1\n"))
    registry: dict[str, object] = {}
    calls: list[str] = []

    def register(name: str, obj: object) -> None:
        calls.append(name)
        registry[name] = obj

    assert load_plugins(GROUP, register) == []
    assert load_plugins(GROUP, register) == []  # cached: nothing loaded or registered again
    assert calls == ["alpha"] and callable(registry["alpha"])
    plugin = plugin_of(GROUP, "alpha")
    assert plugin is not None and (plugin.dist, plugin.version, plugin.value) == ("things-a", "0.1", "things_a:make")
    assert plugin.source() == "plugin things-a 0.1 (things_a:make)"
    assert plugin_of(GROUP, "nothing") is None


def test_problems_are_recorded_not_raised_and_name_package_and_entry_point(site: Path) -> None:
    install(site, "things-ok", {GROUP: {"good": "things_ok:make"}}, _modules(things_ok="def make():\n    pass\n"))
    install(site, "things-broken", {GROUP: {"broken": "things_broken:make"}}, _modules(things_broken=BROKEN_HEAD))
    install(site, "things-one", {GROUP: {"twice": "things_one:make"}}, _modules(things_one="def make():\n    pass\n"))
    install(site, "things-two", {GROUP: {"twice": "things_two:make"}}, _modules(things_two="def make():\n    pass\n"))
    install(site, "things-shadow", {GROUP: {"builtin": "things_shadow:make"}}, _modules(things_shadow="raise 1/0\n"))
    install(site, "things-attr", {GROUP: {"noattr": "things_ok:missing"}})
    install(site, "things-value", {GROUP: {"notcallable": "things_value:VALUE"}}, _modules(things_value="VALUE = 3\n"))
    registry: dict[str, object] = {"builtin": "the built-in"}
    problems = load_plugins(GROUP, registry.__setitem__, builtin=registry)
    assert sorted(registry) == ["builtin", "good"] and registry["builtin"] == "the built-in"  # built-ins win
    by_name = {(p.name, p.plugin.dist): p for p in problems}
    assert sorted(by_name) == [("broken", "things-broken"), ("builtin", "things-shadow"), ("noattr", "things-attr"),
                               ("notcallable", "things-value"), ("twice", "things-one"), ("twice", "things-two")]
    broken = str(by_name["broken", "things-broken"])
    assert broken.startswith("package things-broken 0.1, entry point broken = things_broken:make: cannot import it: "
                             "ModuleNotFoundError: No module named 'not_installed_dependency_xyz'"), broken
    assert "things_shadow" not in sys.modules  # a shadowing plugin is not even imported
    assert "is a built-in" in by_name["builtin", "things-shadow"].reason
    assert "AttributeError" in by_name["noattr", "things-attr"].reason
    assert "not callable" in by_name["notcallable", "things-value"].reason
    twice = by_name["twice", "things-one"]
    assert "package things-two 0.1, entry point twice = things_two:make" in twice.reason and "neither" in twice.reason
    assert plugin_problems(GROUP) == problems

    # a command that needs one of them: a UsageError naming the package and entry point
    with pytest.raises(PluginError, match=r"'broken' is an installed plugin that cannot be used: package "
                       r"things-broken 0\.1, entry point broken = things_broken:make: cannot import it"):
        load_plugins(GROUP, registry.__setitem__, need="broken")
    with pytest.raises(PluginError, match="things-one.*things-two"):
        require_plugin(GROUP, "twice")
    for fine in ("good", "builtin", "never-declared"):  # a shadowed built-in still works; unknown names pass
        require_plugin(GROUP, fine)


def test_a_register_that_refuses_is_a_problem(site: Path) -> None:
    install(site, "things-bad", {GROUP: {"bad": "things_bad:make"}}, _modules(things_bad="def make():\n    pass\n"))

    def register(name: str, obj: object) -> None:
        raise ValueError(f"{name}: title must be one non-empty line")

    (problem,) = load_plugins(GROUP, register)
    assert problem.kind == "register" and problem.reason == "cannot register it: ValueError: bad: title must be one non-empty line"


def test_a_head_plugin_must_subclass_head_and_declare_valid_traits(site: Path) -> None:
    from ordinalage.models.heads import HEADS, add_head

    bad_traits = VALID_HEAD + '\nTinyHead.default_decoder = "average"\n'
    install(site, "heads-bad", {"ordinalage.heads": {"notahead": "heads_bad:make", "badtraits": "heads_traits:TinyHead"}},
            _modules(heads_bad="def make():\n    pass\n", heads_traits=bad_traits))
    problems = {p.name: p.reason for p in load_plugins("ordinalage.heads", add_head, builtin=HEADS)}
    assert "not a subclass of ordinalage.models.head_base.Head" in problems["notahead"]
    assert "default_decoder must be one of mean, median, mode, got 'average'" in problems["badtraits"]
    assert "notahead" not in HEADS and "badtraits" not in HEADS


# --------------------------------------------------------------------------------------------- the commands


@pytest.fixture
def broken_site(site: Path) -> Path:
    """A good head plugin (tiny), one that fails to import (broken), two of one name (twin) and one
    named like a built-in head (class)."""
    heads = "ordinalage.heads"
    install(site, "tiny-head", {heads: {"tiny": "tiny_head:TinyHead"}}, _modules(tiny_head=VALID_HEAD))
    install(site, "broken-head", {heads: {"broken": "broken_head:BrokenHead"}}, _modules(broken_head=BROKEN_HEAD))
    install(site, "twin-a", {heads: {"twin": "tiny_head:TinyHead"}})
    install(site, "twin-b", {heads: {"twin": "tiny_head:TinyHead"}}, version="2.0")
    install(site, "my-class", {heads: {"class": "tiny_head:TinyHead"}})
    return site


def test_list_heads_shows_sources_titles_and_broken_plugins(broken_site: Path, capsys) -> None:
    assert main(["list", "heads", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["results"]
    by = {(r["name"], r["source"]): r for r in rows}
    builtin = by["class", "built-in"]
    assert builtin["status"] == "ok" and builtin["kind"] == "head" and builtin["title"].startswith("classification")
    tiny = by["tiny", "plugin tiny-head 0.1 (tiny_head:TinyHead)"]
    assert tiny["status"] == "ok" and tiny["title"] == "tiny: a test head" and "reason" not in tiny
    broken = by["broken", "plugin broken-head 0.1 (broken_head:BrokenHead)"]
    assert broken["status"] == "broken"
    assert broken["reason"] == "cannot import it: ModuleNotFoundError: No module named 'not_installed_dependency_xyz'"
    assert by["twin", "plugin twin-b 2.0 (tiny_head:TinyHead)"]["status"] == "broken"
    assert by["class", "plugin my-class 0.1 (tiny_head:TinyHead)"]["status"] == "broken"
    assert [r["name"] for r in rows].count("twin") == 2
    assert set(rows[0]) >= {"name", "kind", "source", "status"}

    assert main(["heads"]) == 0  # the shortcut, as text
    text = capsys.readouterr().out.splitlines()
    assert any(line.split()[:3] == ["tiny", "plugin", "tiny-head"] and "tiny: a test head" in line for line in text)
    assert any(line.startswith("broken") and "BROKEN plugin broken-head 0.1 (broken_head:BrokenHead): cannot "
               "import it" in line for line in text)


def test_a_command_that_needs_a_broken_plugin_exits_2_with_its_problem(broken_site: Path, tmp_path: Path,
                                                                       capsys) -> None:
    assert main(["train", "--head", "broken", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == ("ordinalage: error: head 'broken' is an installed plugin that cannot be used: package broken-head "
                   "0.1, entry point broken = broken_head:BrokenHead: cannot import it: ModuleNotFoundError: No "
                   "module named 'not_installed_dependency_xyz' (option --head)")
    assert main(["train", "--head", "twin", "--out", str(tmp_path / "run")]) == 2
    assert "twin-a 0.1, entry point twin = tiny_head:TinyHead" in capsys.readouterr().err
    # the same through a config key and a bake-off grid: "unknown value" says why
    assert main(["train", "--set", "model.head=broken", "--out", str(tmp_path / "run")]) == 2
    assert "cannot be used: package broken-head 0.1" in capsys.readouterr().err
    assert main(["bakeoff", "--grid", "model.head=class,broken", "--data", "synth", "--epochs", "1",
                 "--out", str(tmp_path / "bo")]) == 2
    assert "entry point broken = broken_head:BrokenHead" in capsys.readouterr().err
    assert not (tmp_path / "run").exists() and not (tmp_path / "bo").exists()
    with pytest.raises(SystemExit) as exc:  # a name no plugin declares is still argparse's invalid choice
        main(["train", "--head", "nosuch"])
    assert exc.value.code == 2 and "invalid choice: 'nosuch'" in capsys.readouterr().err


def test_other_heads_keep_working_beside_broken_plugins(broken_site: Path, tmp_path: Path, synth_cache_dir: str,
                                                        one_thread: None) -> None:
    from ordinalage.models.heads import HEADS, ClassHead, build_head
    from ordinalage.training.fit import fit

    run = fit(tiny(synth_cache_dir, tmp_path, "model.head=tiny", "train.epochs=1"), quiet=True)
    assert (run / "best.pt").is_file() and HEADS["tiny"].__module__ == "tiny_head"
    assert HEADS["class"] is ClassHead  # the plugin named "class" did not replace it
    config = tiny(synth_cache_dir, tmp_path, "model.head=class").model
    assert isinstance(build_head(config, 8, AgeGroups.parse("0-10,11-20")), ClassHead)


def test_a_backbone_plugin_trains_and_is_listed(site: Path, tmp_path: Path, synth_cache_dir: str, one_thread: None,
                                                capsys) -> None:
    from ordinalage.training.fit import fit

    install(site, "tiny-net", {"ordinalage.backbones": {"tinynet": "tiny_net:tiny_net"}}, _modules(tiny_net=BACKBONE))
    install(site, "broken-net", {"ordinalage.backbones": {"brokennet": "broken_net:make"}},
            _modules(broken_net=BROKEN_HEAD))
    assert main(["list", "backbones", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["results"]}
    assert rows["tinynet"] == {"name": "tinynet", "kind": "backbone", "source": "plugin tiny-net 0.1 (tiny_net:tiny_net)",
                               "status": "ok", "description": "A one-convolution network (a test backbone)."}
    assert rows["brokennet"]["status"] == "broken" and rows["scratch"]["source"] == "built-in"
    run = fit(tiny(synth_cache_dir, tmp_path, "model.head=coral", "model.backbone=tinynet", "train.epochs=1"),
              quiet=True)
    assert (run / "best.pt").is_file()
    assert main(["train", "--backbone", "brokennet", "--out", str(tmp_path / "bad")]) == 2
    assert ("backbone 'brokennet' is an installed plugin that cannot be used: package broken-net 0.1, entry point "
            "brokennet = broken_net:make: cannot import it") in capsys.readouterr().err


def test_a_reader_plugin_reads_its_specs(site: Path, tmp_path: Path, capsys) -> None:
    from fakes_data import write_jpeg

    install(site, "age-reader", {"ordinalage.readers": {"ages": "age_reader:read_ages"}}, _modules(age_reader=READER))
    install(site, "broken-reader", {"ordinalage.readers": {"brokenr": "broken_reader:read"}},
            _modules(broken_reader=BROKEN_HEAD))
    folder = tmp_path / "faces"
    for i in range(40):
        write_jpeg(folder / f"{5 + i}_{i}.jpg", seed=i)
    assert main(["data", "audit", "--data", f"ages:{folder}", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 40
    assert main(["list", "readers", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["results"]}
    assert rows["ages"]["source"] == "plugin age-reader 0.1 (age_reader:read_ages)" and rows["ages"]["status"] == "ok"
    assert rows["brokenr"]["status"] == "broken" and rows["utkface"]["source"] == "built-in"
    assert main(["data", "audit", "--data", f"brokenr:{folder}"]) == 2
    assert ("reader 'brokenr' is an installed plugin that cannot be used: package broken-reader 0.1, entry point "
            "brokenr = broken_reader:read: cannot import it") in capsys.readouterr().err
