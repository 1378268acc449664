"""The parser machinery every command shares: the help formatter (defaults shown, lazy lists filled
in), the parser class, subcommands with an exit-status epilog and an example, meaning tags, and
deprecated spellings that still work with a warning on stderr."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

#: every exit status the command line gives, and what it means
EXIT_CODES: dict[int, str] = {
    0: "success",
    1: "an unexpected error (a bug; the traceback says where)",
    2: "bad usage or bad input (the message names the flag, file, line or key)",
    3: "the bake-off finished with missing cells (failed or not run; listed in bakeoff.json)",
    75: "stopped by SIGTERM/SIGUSR1 with its position saved; the same command (train: --resume RUN) continues it",
    130: "interrupted (Ctrl-C)",
}
COMMON_EXITS = (0, 1, 2, 130)

#: help text placeholders filled in only when help is shown (so building the parser imports little)
_LAZY: dict[str, Callable[[], str]] = {}


def lazy_text(token: str, compute: Callable[[], str]) -> str:
    """Register `compute` for `token` (e.g. `{DATA_KINDS}`) and return the token for a help string."""
    _LAZY[token] = compute
    return token


def expand(text: str) -> str:
    """`text` with its lazy placeholders filled in (escaped for argparse's %-formatting)."""
    for token, compute in _LAZY.items():
        if token in text:
            text = text.replace(token, compute().replace("%", "%%"))
    return text


class HelpFormatter(argparse.HelpFormatter):
    """Shows each option's default (unless its help states it, or there is none), fills lazy
    placeholders, and keeps multi-line descriptions and epilogs as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = expand(action.help or "")
        default = action.default
        shown = default not in (None, False, argparse.SUPPRESS) and default != [] and default != ()
        if shown and "default" not in text.lower() and (action.option_strings or action.nargs in ("?", "*")):
            text += " (default: %(default)s)"
        return text

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser with this package's help formatter (its subcommands inherit it)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def epilog(example: str | Sequence[str], exits: Sequence[int] = COMMON_EXITS) -> str:
    """The exit statuses a command gives and an example (or several)."""
    examples = [example] if isinstance(example, str) else list(example)
    lines = ["exit status:"] + [f"  {code:<4} {EXIT_CODES[code]}" for code in sorted(exits)]
    lines += ["", "example:"] + [f"  {e}" for e in examples]
    return "\n".join(lines) + "\n"


def add_command(sub: Any, name: str, *, help: str, example: str | Sequence[str],
                exits: Sequence[int] = COMMON_EXITS, description: str | None = None) -> argparse.ArgumentParser:
    """A subcommand with its one-line help, exit statuses and example."""
    parser: argparse.ArgumentParser = sub.add_parser(name, help=help, description=description or help,
                                                     epilog=epilog(example, exits))
    return parser


def add_group(sub: Any, name: str, *, help: str) -> Any:
    """A command group (`ordinalage NAME SUBCOMMAND`): its parser, and the subparsers its subcommands
    join (one is required; `args.NAME_command` names it)."""
    group = sub.add_parser(name, help=help, description=help)
    return group.add_subparsers(dest=f"{name}_command", required=True, metavar=f"{name.upper()}_COMMAND")


def tag(action: argparse.Action, meaning: str) -> argparse.Action:
    """Mark what an option means, so one name keeps one meaning across commands (tests/test_cli_options.py)."""
    action.meaning = meaning  # type: ignore[attr-defined]
    return action


def warn(text: str) -> None:
    print(f"ordinalage: warning: {text}", file=sys.stderr, flush=True)


class DeprecatedAlias(argparse.Action):
    """An old spelling kept for one release: stores into the new option's `dest` (through `convert`
    when given) and warns on stderr."""

    def __init__(self, option_strings: Sequence[str], dest: str, new: str = "",
                 convert: Callable[[Any], Any] | None = None, **kwargs: Any) -> None:
        self.new = new
        self.convert = convert
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        warn(f"{option_string} is deprecated; use {self.new} (the old spelling goes in the next release)")
        setattr(namespace, self.dest, self.convert(values) if self.convert else values)


def add_deprecated(parser: argparse.ArgumentParser, old: str, new: str, dest: str,
                   convert: Callable[[Any], Any] | None = None, **kwargs: Any) -> argparse.Action:
    """`old` as a deprecated alias of `new` (same `dest`), with help saying so."""
    action = parser.add_argument(old, action=DeprecatedAlias, dest=dest, new=new, convert=convert,
                                 default=argparse.SUPPRESS, help=f"deprecated spelling of {new}", **kwargs)
    return tag(action, f"deprecated:{new}")


__all__ = ["COMMON_EXITS", "EXIT_CODES", "DeprecatedAlias", "HelpFormatter", "Parser", "add_command",
           "add_deprecated", "epilog", "expand", "lazy_text", "tag", "warn"]
