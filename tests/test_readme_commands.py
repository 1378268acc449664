"""The documentation says what the code does.

- Every `ordinalage ...` line in the fenced code blocks of README.md and docs/commands.md parses with the real CLI parser
  (`ordinalage.cli.parse_args`), so a renamed flag or subcommand fails here, not for a reader.
- No page under docs/ refers to an issue number (those belong in the tracker and CHANGELOG.md).
- docs/results.md stays a results page: under 250 lines, no first person in its prose.

Lines are parsed, never run: nothing is trained or read. Shell placeholders such as `URL`,
`DIR` or `runs/*` are plain arguments to argparse, so every line can be parsed as written and
none is skipped; a line that shlex itself cannot split fails the test with that line.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from ordinalage.cli import parse_args

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
RESULTS = DOCS / "results.md"

FENCE = re.compile(r"^\s*(```|~~~)")


def fenced_lines(text: str) -> list[str]:
    """The lines inside fenced code blocks, with `\\` continuations joined into one line."""
    out: list[str] = []
    inside = False
    pending = ""
    for line in text.splitlines():
        if FENCE.match(line):
            inside = not inside
            pending = ""
            continue
        if not inside:
            continue
        stripped = line.strip()
        if pending:
            stripped = pending + " " + stripped
            pending = ""
        if stripped.endswith("\\"):
            pending = stripped[:-1].rstrip()
            continue
        out.append(stripped)
    return out


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks, with inline code spans removed."""
    out: list[str] = []
    inside = False
    for line in text.splitlines():
        if FENCE.match(line):
            inside = not inside
            continue
        if not inside:
            out.append(re.sub(r"`[^`]*`", "", line))
    return out


COMMAND_PAGES = (README, DOCS / "commands.md")


def readme_commands() -> list[str]:
    """The `ordinalage ...` lines of README.md and the command reference pages."""
    commands = []
    for line in (x for page in COMMAND_PAGES for x in fenced_lines(page.read_text(encoding="utf-8"))):
        if line.startswith("$ "):
            line = line[2:].lstrip()
        if line.startswith("ordinalage "):
            commands.append(line)
    return commands


COMMANDS = readme_commands()


def _id(line: str) -> str:
    return line if len(line) <= 60 else line[:57] + "..."


def test_readme_has_commands() -> None:
    assert len(COMMANDS) >= 10, f"only {len(COMMANDS)} `ordinalage` lines found in README.md's code blocks"


@pytest.mark.parametrize("line", COMMANDS, ids=[_id(c) for c in COMMANDS])
def test_readme_command_parses(line: str, capsys: pytest.CaptureFixture[str]) -> None:
    try:
        argv = shlex.split(line, comments=True)
    except ValueError as exc:
        pytest.fail(f"README.md line cannot be split by shlex ({exc}): {line}")
    assert argv[0] == "ordinalage"
    try:
        args = parse_args(argv[1:])
    except SystemExit as exc:
        err = capsys.readouterr().err.strip()
        pytest.fail(f"README.md line does not parse (exit {exc.code}): {line}\n{err}")
    assert callable(args.func), line


ISSUE = re.compile(r"\bissues? ?#?\d+\b", re.IGNORECASE)
HASH_NUMBER = re.compile(r"(?<= )#\d+")


def test_docs_name_no_issue_numbers() -> None:
    pages = sorted(DOCS.rglob("*.md"))
    assert pages, "no pages under docs/"
    found = []
    for page in pages:
        for n, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
            if ISSUE.search(line) or HASH_NUMBER.search(line):
                found.append(f"{page.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not found, "issue numbers in docs/:\n" + "\n".join(found)


def test_results_page_is_short() -> None:
    n = len(RESULTS.read_text(encoding="utf-8").splitlines())
    assert n < 250, f"docs/results.md has {n} lines (limit: under 250)"


FIRST_PERSON = re.compile(r"\bI\b|\b(?i:we|our|us|my)\b")


def test_results_page_has_no_first_person() -> None:
    prose = prose_lines(RESULTS.read_text(encoding="utf-8"))
    found = [line.strip() for line in prose if FIRST_PERSON.search(line)]
    assert not found, "first person in docs/results.md:\n" + "\n".join(found)
