"""The CLI skeleton: every subcommand registered, clear errors with exit status 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ordinalage.cli import build_parser, main

SUBCOMMANDS = ["data", "train", "evaluate", "compare", "tune", "predict", "live", "export"]


def test_help_lists_every_subcommand() -> None:
    text = build_parser().format_help()
    for name in SUBCOMMANDS:
        assert name in text


@pytest.mark.parametrize("argv", [["data", "synth", "--help"], ["data", "stats", "--help"], ["data", "audit", "--help"],
                                  ["train", "--help"], ["evaluate", "--help"], ["compare", "--help"], ["tune", "--help"]])
def test_each_subcommand_has_help(argv: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
    assert "usage: ordinalage" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["nosuch"], ["train", "--nosuchflag"], ["train", "--head", "nosuch"], []])
def test_bad_usage_exits_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2


def test_missing_config_file_exits_2(tmp_path, capsys) -> None:
    assert main(["train", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml" in capsys.readouterr().err


def test_unknown_config_key_and_bad_type_exit_2(tmp_path, capsys) -> None:
    assert main(["train", "--set", "train.nosuch=1"]) == 2
    assert "train.nosuch" in capsys.readouterr().err
    assert main(["train", "--set", "train.epochs=many"]) == 2
    assert "train.epochs" in capsys.readouterr().err


def test_unwritable_output_folder_exits_2(tmp_path, capsys) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["train", "--out", str(blocker / "run"), "--epochs", "1"]) == 2
    assert "file" in capsys.readouterr().err


def test_console_script_entry_point() -> None:
    out = subprocess.run([sys.executable, "-m", "ordinalage", "--help"], capture_output=True, text=True, check=True)
    assert "evaluate" in out.stdout
