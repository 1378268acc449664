"""Every subcommand's parser, walked: each option has help, one option name keeps one meaning across
commands, `--json` exists where a result is produced and prints one JSON object, `--help` shows
defaults, exit statuses and an example that parses, old spellings warn and still work, and
`--print-config` prints YAML with the `--set` value in it."""

from __future__ import annotations

import argparse
import json
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from ordinalage.cli import build_parser, main, parse_args
from ordinalage.cli.parser import EXIT_CODES

#: option names that mean one thing per kind, each kind stated in the help (--out: a run folder, a
#: folder or a file; --config: a train, tune or bake-off YAML). Every other name has one meaning.
ALLOWED_MEANINGS = {
    "--out": {"out:run", "out:folder", "out:file"},
    "--config": {"config:train", "config:tune", "config:bakeoff"},
}
#: commands that produce no result to print (a server runs until stopped)
NO_RESULT = {"serve"}
#: commands whose parallel processes are --jobs (and --workers its deprecated spelling)
JOBS_COMMANDS = {"tune", "bakeoff"}


def leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """(command words, parser) of every command that runs something (`data stats`, `train`, ...)."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]  # noqa: SLF001
    if not subs:
        yield " ".join(path), parser
    for action in subs:
        for name, sub in action.choices.items():
            yield from leaves(sub, (*path, name))


LEAVES = dict(leaves(build_parser()))


def options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.option_strings and a.dest != "help"]  # noqa: SLF001


def meaning(action: argparse.Action) -> str:
    return getattr(action, "meaning", None) or str(action.help)


def is_deprecated(action: argparse.Action) -> bool:
    return meaning(action).startswith("deprecated:")


def test_the_walk_sees_every_command() -> None:
    assert {"data synth", "data stats", "data audit", "train", "distill", "evaluate", "report", "compare",
            "prior estimate", "bakeoff", "bakeoff-plan", "tune", "predict", "live", "export", "serve",
            "models", "weights fetch", "weights list", "list", "heads"} == set(LEAVES)


@pytest.mark.parametrize("command", sorted(LEAVES))
def test_every_argument_has_help(command: str) -> None:
    missing = [a.option_strings or a.dest for a in LEAVES[command]._actions  # noqa: SLF001
               if not (a.help and a.help.strip() and a.help != argparse.SUPPRESS)]
    assert not missing, f"{command}: no help for {missing}"


def test_one_meaning_per_option_name() -> None:
    seen: dict[str, dict[str, list[str]]] = {}
    for command, parser in LEAVES.items():
        for action in options(parser):
            if is_deprecated(action):
                continue
            for name in action.option_strings:
                seen.setdefault(name, {}).setdefault(meaning(action), []).append(command)
    clashes = []
    for name, meanings in sorted(seen.items()):
        allowed = ALLOWED_MEANINGS.get(name)
        if allowed is not None:
            if not set(meanings) <= allowed:
                clashes.append(f"{name}: {sorted(set(meanings) - allowed)} not in {sorted(allowed)}")
        elif len(meanings) > 1:
            clashes.append(f"{name}: " + "; ".join(f"{cmds} -> {m!r}" for m, cmds in meanings.items()))
    assert not clashes, "one option name, several meanings:\n" + "\n".join(clashes)


def test_jobs_are_processes_and_workers_are_data_loading() -> None:
    for command, parser in LEAVES.items():
        by_name = {s: a for a in options(parser) for s in a.option_strings}
        assert ("--jobs" in by_name) == (command in JOBS_COMMANDS), command
        workers = by_name.get("--workers")
        if command in JOBS_COMMANDS:
            assert workers is not None and is_deprecated(workers) and workers.dest == "jobs", command
        elif workers is not None:
            assert meaning(workers) == "loader-workers", command


@pytest.mark.parametrize("command", sorted(set(LEAVES) - NO_RESULT))
def test_json_where_a_result_is_produced(command: str) -> None:
    flags = {s for a in options(LEAVES[command]) for s in a.option_strings}
    assert "--json" in flags, f"{command} produces a result but has no --json"


@pytest.mark.parametrize("command", sorted(LEAVES))
def test_out_says_folder_or_file(command: str) -> None:
    for action in options(LEAVES[command]):
        if "--out" in action.option_strings:
            assert str(action.help).startswith(("run folder:", "folder:", "file:")), (command, action.help)


@pytest.mark.parametrize("command", sorted(LEAVES))
def test_epilog_lists_exit_statuses_and_an_example_that_parses(command: str) -> None:
    epilog = LEAVES[command].epilog or ""
    assert "exit status:" in epilog and "example:" in epilog, command
    for code in (0, 1, 2, 130):
        assert f"  {code} " in epilog, (command, code)
    codes = {int(line.split()[0]) for line in epilog.split("example:")[0].splitlines()[1:] if line.strip()}
    assert codes <= set(EXIT_CODES)
    examples = [line.strip() for line in epilog.split("example:")[1].splitlines() if line.strip()]
    assert examples
    for example in examples:
        argv = shlex.split(example)
        assert argv[0] == "ordinalage", example
        words = argv[1:3] if argv[1:3] == ["bakeoff", "plan"] else None
        assert words or " ".join(argv[1:1 + len(command.split())]) == command, example
        assert callable(parse_args(argv[1:]).func), example


def _help(words: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exc:
        main([*words, "--help"])
    assert exc.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # whitespace of the wrapping folded


def test_help_shows_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    text = _help(["serve"], capsys)
    assert "port to listen on (default: 8000)" in text and "(default: 127.0.0.1)" in text
    assert "(default test)" in _help(["evaluate"], capsys)
    assert "(default: 3000)" in _help(["data", "synth"], capsys)


def test_data_help_lists_every_reader_kind(capsys: pytest.CaptureFixture[str]) -> None:
    from ordinalage.data.sources import READERS

    text = _help(["data", "stats"], capsys)
    missing = [kind for kind in READERS if kind not in text]
    assert not missing, f"--data's help leaves out {missing}"
    assert "utkface:PATH" in text and "synth |" in text


def test_detector_help_lists_the_registry(capsys: pytest.CaptureFixture[str]) -> None:
    from ordinalage.inference.detection.registry import DETECTORS

    for words in (["predict"], ["live"], ["serve"], ["prior", "estimate"]):
        text = _help(words, capsys)
        assert all(name in text for name in DETECTORS), words
    assert "none: each image is one face" in _help(["predict"], capsys)


# --------------------------------------------------------------------------------- --json output


def _one_object(capsys: pytest.CaptureFixture[str]) -> dict:
    out = capsys.readouterr().out
    obj = json.loads(out)
    assert isinstance(obj, dict), out[:200]
    return obj


@pytest.fixture()
def _caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORDINALAGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))


@pytest.mark.usefixtures("_caches")
@pytest.mark.parametrize("argv", [["list", "heads", "--json"], ["heads", "--json"], ["list", "readers", "--json"],
                                  ["weights", "list", "--json"]], ids=" ".join)
def test_listing_json_is_one_object_of_results(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 0
    assert isinstance(_one_object(capsys)["results"], list)


@pytest.mark.usefixtures("_caches")
def test_data_synth_and_stats_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    faces = tmp_path / "faces"
    assert main(["data", "synth", "--out", str(faces), "--n", "24", "--size", "32", "--json"]) == 0
    assert _one_object(capsys) == {"out": str(faces), "images": 24, "seed": 0, "size": 32}
    assert main(["data", "stats", "--data", f"utkface:{faces}", "--json"]) == 0
    assert _one_object(capsys)["n"] == 24
    assert main(["data", "audit", "--data", f"utkface:{faces}", "--json"]) == 0
    _one_object(capsys)


def test_evaluate_predictions_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = tmp_path / "preds.csv"
    csv.write_text("true_age,pred_age\n5,7\n25,22\n35,41\n64,60\n15,15\n")
    assert main(["evaluate", "--predictions", str(csv), "--json"]) == 0
    result = _one_object(capsys)
    assert result["n"] == 5 and result["mae"] == pytest.approx((2 + 3 + 6 + 4 + 0) / 5)


# --------------------------------------------------------------------------------- old spellings


@pytest.mark.parametrize("argv, dest, value, new", [
    (["tune", "--config", "t.yaml", "--workers", "3"], "jobs", 3, "--jobs"),
    (["bakeoff", "--grid", "model.head=class,coral", "--workers", "2", "--out", "b"], "jobs", 2, "--jobs"),
    (["predict", "run", "a.jpg", "--detect", "none"], "detector", "none", "--detector"),
    (["live", "run", "--output", "o.mp4"], "out", "o.mp4", "--out"),
    (["data", "stats", "--plot", "plots"], "plots", "plots", "--plots"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_deprecated_spelling_warns_and_still_works(argv: list[str], dest: str, value: object, new: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    args = parse_args(argv)
    assert getattr(args, dest) == value
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ordinalage: warning: ") and "deprecated" in err[0] and new in err[0]


def test_new_spellings_do_not_warn(capsys: pytest.CaptureFixture[str]) -> None:
    assert parse_args(["tune", "--config", "t.yaml", "--jobs", "3"]).jobs == 3
    assert parse_args(["predict", "run", "a.jpg", "--detector", "none"]).detector == "none"
    assert parse_args(["live", "run", "--out", "o.mp4"]).out == "o.mp4"
    assert capsys.readouterr().err == ""


def test_a_deprecated_spelling_runs_the_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    faces, plots = tmp_path / "faces", tmp_path / "plots"
    assert main(["data", "synth", "--out", str(faces), "--n", "12", "--size", "32"]) == 0
    assert main(["data", "stats", "--data", f"utkface:{faces}", "--plot", str(plots), "--json"]) == 0
    captured = capsys.readouterr()
    assert "--plot is deprecated; use --plots" in captured.err
    assert json.loads(captured.out)["n"] == 12 and any(plots.glob("*.png"))


def test_an_unknown_detector_exits_2_naming_the_choices(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", "run", "a.jpg", "--detector", "mtcnn"]) == 2
    err = capsys.readouterr().err
    assert "--detector: unknown detector 'mtcnn' (choose from " in err and "none" in err


# --------------------------------------------------------------------------------- --print-config


def test_train_print_config_is_the_resolved_yaml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = tmp_path / "base.yaml"
    base.write_text("model:\n  head: corn\ntrain:\n  epochs: 3\n")
    child = tmp_path / "child.yaml"
    child.write_text("base: base.yaml\ntrain:\n  batch_size: 16\n")
    out = tmp_path / "never"
    argv = ["train", "--config", str(child), "--set", "train.lr=0.0123", "--epochs", "5", "--out", str(out),
            "--print-config"]
    assert main(argv) == 0
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["train"]["lr"] == 0.0123 and config["train"]["epochs"] == 5
    assert config["train"]["batch_size"] == 16 and config["model"]["head"] == "corn"  # through base:
    assert config["train"]["out_dir"] == str(out) and not out.exists()  # nothing trained


def test_evaluate_print_config_is_the_runs_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ordinalage.config import load_config, save_config

    run = tmp_path / "run"
    run.mkdir()
    save_config(load_config(sets=["train.lr=0.0456", "model.head=class"]), run / "config.yaml")
    assert main(["evaluate", str(run), "--print-config", "--data", "synth"]) == 0
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["train"]["lr"] == 0.0456 and config["model"]["head"] == "class"
    assert config["data"]["sources"] == ["synth"]
    assert not any(p.name.startswith("eval-") for p in run.iterdir())


def test_bakeoff_print_config_is_the_resolved_spec(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bakeoff", "--grid", "model.head=class,coral", "--seeds", "2", "--data", "synth", "--epochs", "1",
            "--set", "train.lr=0.0789", "--print-config"]
    assert main(argv) == 0
    doc = yaml.safe_load(capsys.readouterr().out)
    assert len(doc["methods"]) == 2
    assert doc["seeds"] == 2 and doc["epochs"] == 1 and doc["set"] == ["train.lr=0.0789"]
    assert doc["config"]["train"]["lr"] == 0.0789


# --------------------------------------------------------------------------------- train --json

TINY = ["data.synth_n=120", "data.synth_size=32", "data.image_size=32", "data.num_workers=0", "train.batch_size=32",
        "train.device=cpu", "model.width=8"]


@pytest.mark.usefixtures("one_thread")
def test_train_and_distill_json_print_one_object_and_log_on_stderr(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    sets = [a for s in [*TINY, f"data.cache_dir={tmp_path / 'cache'}"] for a in ("--set", s)]
    run = tmp_path / "run"
    assert main(["train", "--head", "class", "--epochs", "1", "--out", str(run), "--json", *sets]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert result["run"] == str(run) and result["minutes"] >= 0 and result["head"] == "class"
    assert result["test"]["n"] > 0 and "mae" in result["test"]
    assert "run folder:" in captured.err and "run folder:" not in captured.out
    student = tmp_path / "student"
    assert main(["distill", str(run), "--epochs", "1", "--out", str(student), "--json"]) == 0
    result = _one_object(capsys)
    assert result["run"] == str(student) and "mae" in result["test"]
