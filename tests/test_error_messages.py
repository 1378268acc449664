"""Library errors speak the library's words; the command line maps them to its flags.

A UsageError raised outside the CLI names the parameter, config key, value or file at fault (`by`,
`age_mix`, `storage`), never a command-line flag, so a Python caller of `ordinalage.evaluate(by=...)`
is not told about `--by`. `UsageError.option` says which setting it is, and `ordinalage.cli` prints
that setting as the command's flag (`OPTION_FLAGS`, `flag_message`).
"""

from __future__ import annotations

import argparse
import ast
import pickle
import re
from pathlib import Path

import pytest

from ordinalage.cli import OPTION_FLAGS, build_parser, flag_message, main
from ordinalage.errors import UsageError

PACKAGE = Path(__file__).resolve().parents[1] / "ordinalage"
#: a flag: two dashes and a lowercase name, not inside a word or a longer dash run (`a--b`, `---`)
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def _library_files() -> list[Path]:
    """Every module of the package but the command line (the `cli/` package)."""
    return [p for p in sorted(PACKAGE.rglob("*.py")) if p.relative_to(PACKAGE).parts[0] != "cli"]


def _raises(path: Path) -> list[tuple[int, list[str]]]:
    """(line, string constants) of each `raise X(...)` in `path`, f-strings' literal parts included."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return [(node.lineno, [c.value for c in ast.walk(node.exc) if isinstance(c, ast.Constant) and isinstance(c.value, str)])
            for node in ast.walk(tree) if isinstance(node, ast.Raise) and node.exc is not None]


def test_no_library_error_message_quotes_a_command_line_flag() -> None:
    """No raise outside the CLI has `--flag` in its message's strings. There is no exemption: a hint
    that needs a command names it without flags (`ordinalage prior estimate`), and a setting is named
    by its library name, backquoted where it sits mid-sentence (`` `workers` 1 ``), which the CLI
    prints as the flag."""
    found = []
    for path in _library_files():
        for line, texts in _raises(path):
            flags = sorted({f for t in texts for f in FLAG.findall(t)})
            if flags:
                found.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {', '.join(flags)}")
    assert not found, "error messages that quote command-line flags:\n" + "\n".join(found)


def test_every_option_a_library_error_names_is_a_flag_somewhere() -> None:
    """Each `option=` constant and each backquoted setting in a library message is in the CLI's table
    (for at least one command), so the command line can print it as a flag."""
    known = {name for flags in OPTION_FLAGS.values() for name in flags}
    unknown = []
    for path in _library_files():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "UsageError":
                for kw in node.keywords:
                    if kw.arg == "option" and isinstance(kw.value, ast.Constant) and kw.value.value not in known:
                        unknown.append(f"{path.name}:{node.lineno}: option={kw.value.value!r}")
                texts = [c.value for c in ast.walk(node) if isinstance(c, ast.Constant) and isinstance(c.value, str)]
                for name in (m for t in texts for m in re.findall(r"`([A-Za-z_][\w.]*)`", t)):
                    if name not in known:
                        unknown.append(f"{path.name}:{node.lineno}: `{name}`")
    assert not unknown, "\n".join(unknown)


def test_the_table_names_real_flags_of_each_command() -> None:
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices  # noqa: SLF001 - argparse's subparsers

    def flags_of(p: argparse.ArgumentParser) -> set[str]:
        out = {s for a in p._actions for s in a.option_strings}  # noqa: SLF001
        for a in p._actions:  # noqa: SLF001 - nested subcommands (data synth, prior estimate, weights fetch)
            if getattr(a, "choices", None) and isinstance(a.choices, dict):
                for sub in a.choices.values():
                    out |= flags_of(sub)
        return out

    assert set(OPTION_FLAGS) <= set(commands)
    for command, table in OPTION_FLAGS.items():
        missing = sorted(set(table.values()) - flags_of(commands[command]))
        assert not missing, f"{command}: no such flag {missing}"


def test_usage_error_keeps_message_and_option_through_pickle() -> None:
    exc = pickle.loads(pickle.dumps(UsageError("by 'x': unknown attribute", option="by")))
    assert isinstance(exc, UsageError) and str(exc) == "by 'x': unknown attribute" and exc.option == "by"
    plain = pickle.loads(pickle.dumps(UsageError("no option")))
    assert str(plain) == "no option" and plain.option is None


def test_flag_message_maps_the_leading_name_backquoted_names_or_appends_the_flag() -> None:
    flags = {"by": "--by", "age_mix": "--age-mix", "workers": "--workers", "storage": "--storage"}
    assert flag_message(UsageError("by 'x': unknown", option="by"), flags) == "--by 'x': unknown"
    assert flag_message(UsageError("age_mix f.csv: all weights are 0", option="age_mix"), flags) == \
        "--age-mix f.csv: all weights are 0"
    assert flag_message(UsageError("s.db: rerun with `workers` 1 or give `storage` FILE", option="workers"),
                        flags) == "s.db: rerun with --workers 1 or give --storage FILE"
    assert flag_message(UsageError("f.csv: line 3: bad weight", option="age_mix"), flags) == \
        "f.csv: line 3: bad weight (option --age-mix)"
    # only the whole leading name; no option, or one this command has no flag for: the message as it is
    assert flag_message(UsageError("bystander: x", option="by"), flags) == "bystander: x (option --by)"
    assert flag_message(UsageError("by 'x': unknown"), flags) == "by 'x': unknown"
    assert flag_message(UsageError("rope 'x': bad", option="rope"), flags) == "rope 'x': bad"
    assert flag_message(UsageError("keep `unknown_name`", option=None), flags) == "keep `unknown_name`"


def test_library_names_the_option_and_the_cli_prints_its_flag(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from ordinalage.evaluation.breakdown import parse_by

    with pytest.raises(UsageError) as info:
        parse_by("gender,gaps")
    assert info.value.option == "by" and str(info.value).startswith("by 'gaps': ") and "--" not in str(info.value)
    assert main(["evaluate", str(tmp_path / "run"), "--by", "gender,gaps"]) == 2  # refused before any run is read
    assert "ordinalage: error: --by 'gaps': that name is reserved" in capsys.readouterr().err


def test_an_argument_type_error_names_the_flag_once(capsys: pytest.CaptureFixture[str]) -> None:
    from ordinalage.training.budget import parse_budget

    with pytest.raises(UsageError, match=r"^budget 'soon': expected minutes"):
        parse_budget("soon")
    with pytest.raises(SystemExit):
        main(["train", "--budget", "soon"])
    assert "argument --budget: --budget 'soon': expected minutes" in capsys.readouterr().err
