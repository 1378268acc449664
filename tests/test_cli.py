"""The CLI skeleton: every subcommand registered with its own help, exact exit codes and messages."""

from __future__ import annotations

import argparse
import dataclasses
import errno
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from ordinalage import __version__
from ordinalage.cli import build_parser, main
from ordinalage.config import TrainConfig

REPO = Path(__file__).resolve().parents[1]
SUBCOMMANDS = ["data", "train", "distill", "evaluate", "compare", "bakeoff", "bakeoff-plan", "report", "tune", "predict", "live", "export", "prior",
               "serve", "models", "weights", "list", "heads"]
HELP = [["data", "synth"], ["data", "stats"], ["data", "audit"], *[[name] for name in SUBCOMMANDS]]


def _subcommands(parser: argparse.ArgumentParser) -> list[str]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return list(action.choices)


def test_exactly_these_subcommands_are_registered() -> None:
    parser = build_parser()
    assert sorted(_subcommands(parser)) == sorted(SUBCOMMANDS)
    (data_parser,) = [a.choices["data"] for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert sorted(_subcommands(data_parser)) == ["audit", "stats", "synth"]


@pytest.mark.parametrize("words", HELP, ids=" ".join)
def test_each_subcommand_has_its_own_help(words: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main([*words, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: ordinalage {' '.join(words)} ")  # this subcommand's usage, not the top one


@pytest.mark.parametrize("argv, message", [
    (["nosuch"], "ordinalage: error: argument COMMAND: invalid choice: 'nosuch'"),
    (["train", "--nosuchflag"], "ordinalage: error: unrecognized arguments: --nosuchflag"),
    (["train", "--head", "nosuch"], "ordinalage train: error: argument --head: invalid choice: 'nosuch'"),
    (["train", "--epochs", "two"], "ordinalage train: error: argument --epochs: invalid int value: 'two'"),
    ([], "ordinalage: error: the following arguments are required: COMMAND"),
])
def test_bad_usage_exits_2_naming_the_argument(argv: list[str], message: str, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith(message)


def _last_error_line(capsys) -> str:
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_missing_config_file_exits_2(tmp_path, capsys) -> None:
    missing = tmp_path / "nope.yaml"
    assert main(["train", "--config", str(missing)]) == 2
    assert _last_error_line(capsys) == f"ordinalage: error: config file not found: {missing}"


def test_unknown_config_key_lists_the_known_ones(capsys) -> None:
    assert main(["train", "--set", "train.nosuch=1"]) == 2
    known = ", ".join(sorted(f.name for f in dataclasses.fields(TrainConfig)))
    assert _last_error_line(capsys) == f"ordinalage: error: unknown config key 'train.nosuch' (known: {known})"


def test_bad_value_type_names_the_key(capsys) -> None:
    assert main(["train", "--set", "train.epochs=many"]) == 2
    assert _last_error_line(capsys) == "ordinalage: error: config key 'train.epochs': expected an integer, got 'many'"


def test_unwritable_output_folder_exits_2(tmp_path, capsys) -> None:
    blocker = tmp_path / "blocker.txt"  # a file where the run folder's parent should be
    blocker.write_text("x")
    run = blocker / "run"
    assert main(["train", "--out", str(run), "--epochs", "1"]) == 2
    assert _last_error_line(capsys) == f"ordinalage: error: {run}: cannot write the run folder ({os.strerror(errno.ENOTDIR)})"
    assert blocker.read_text() == "x"


def test_console_script_points_at_main() -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"ordinalage": "ordinalage.cli:main"}


def test_python_m_exit_codes_and_version() -> None:
    """`python -m ordinalage` turns main's return value into the process exit status."""
    env_cmd = [sys.executable, "-m", "ordinalage"]
    ok = subprocess.run([*env_cmd, "--version"], capture_output=True, text=True, cwd=REPO)
    assert (ok.returncode, ok.stdout) == (0, f"ordinalage {__version__}\n")
    bad = subprocess.run([*env_cmd, "train", "--set", "train.epochs=many"], capture_output=True, text=True, cwd=REPO)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.strip().splitlines()[-1].endswith("config key 'train.epochs': expected an integer, got 'many'")
