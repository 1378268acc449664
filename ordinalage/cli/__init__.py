"""The `ordinalage` command: parse arguments, build a config, call one function.

One module per command group, each registering its parsers beside its handlers (`register(sub)`):
`data` (data synth|stats|audit), `train` (train, distill), `evaluate` (evaluate, report, compare),
`prior` (prior estimate), `bakeoff` (bakeoff, bakeoff plan), `tune`, `inference` (predict, live,
export, serve), `models` (the shipped models), `weights` (weights fetch|list), `registered` (list, heads). Options that recur are
built in `options`; `parser` holds the help formatter, exit statuses and deprecated spellings;
`flags` maps library option names to each command's flags.

Exit status: 0 success, 1 an unexpected error, 2 bad usage or bad input (the message names the
flag, file, line or key), 3 a bake-off with missing cells, 75 preempted (rerun to continue), 130
interrupted. `--json` output goes to stdout alone; logs and progress go to stderr.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from ordinalage.cli import bakeoff, data, evaluate, inference, models, prior, registered, train, tune, weights
from ordinalage.cli.flags import OPTION_FLAGS, flag_message
from ordinalage.cli.parser import EXIT_CODES, Parser, epilog
from ordinalage.cli.types import RegistryChoices
from ordinalage.errors import UsageError
from ordinalage.version import __version__

#: the command groups, in the order `ordinalage --help` lists them
GROUPS = (data, train, evaluate, prior, bakeoff, tune, inference, models, weights, registered)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="ordinalage",
        description="Facial age estimation: age-group classification, ordinal regression (CORAL, CORN) "
        "and exact-age regression, trained, tuned and judged on one dataset layer.",
        epilog=epilog("ordinalage train --head coral --data synth --epochs 2 --out runs/demo --json",
                      exits=tuple(EXIT_CODES)),
    )
    parser.add_argument("--version", action="version", version=f"ordinalage {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for group in GROUPS:
        group.register(sub)
    return parser


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The command line parsed; `bakeoff plan DIR ...` is the planner's parser (`bakeoff-plan`)."""
    argv = list(argv)
    if argv[:2] == ["bakeoff", "plan"]:
        argv = ["bakeoff-plan", *argv[2:]]
    return build_parser().parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = parse_args(argv)
    except UsageError as exc:  # `--head NAME` of a plugin that cannot be used, an unknown `--detector`
        command = next(iter(argv), "")
        print(f"ordinalage: error: {flag_message(exc, OPTION_FLAGS.get(command, {}))}", file=sys.stderr)
        return 2
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except UsageError as exc:  # in the library's words; its option named by this command's flag
        print(f"ordinalage: error: {flag_message(exc, OPTION_FLAGS.get(args.command, {}))}", file=sys.stderr)
        return 2
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"ordinalage: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ordinalage: interrupted", file=sys.stderr)
        return 130


__all__ = ["OPTION_FLAGS", "RegistryChoices", "build_parser", "flag_message", "main", "parse_args"]
