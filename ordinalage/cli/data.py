"""`ordinalage data synth|stats|audit`: generate, count and audit face data."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ordinalage.cli.options import (
    add_config,
    add_data,
    add_groups,
    add_json,
    add_out,
    add_seed,
    add_set,
    print_json,
)
from ordinalage.cli.parser import add_command, add_deprecated, add_group, tag


def data_synth(args: argparse.Namespace) -> int:
    from ordinalage.data.synth import write_synth

    paths = write_synth(args.out, n=args.n, seed=args.seed, size=args.size, progress=True)
    print(f"wrote {len(paths)} images to {args.out}", file=sys.stderr)
    if args.json:
        print_json({"out": str(args.out), "images": len(paths), "seed": args.seed, "size": args.size})
    return 0


def data_stats(args: argparse.Namespace) -> int:
    from ordinalage.config import data_config
    from ordinalage.data.stats import data_stats as stats

    result = stats(data_config(args.config, args.data, args.groups, args.set), plot_dir=args.plots, show=not args.json)
    if args.json:
        print_json(result)
    return 0


def data_audit(args: argparse.Namespace) -> int:
    from ordinalage.data.audit import data_audit as audit

    result = audit(args.data or ["synth"], show=not args.json)
    if args.json:
        print_json(result)
    return 0


def register(sub: Any) -> None:
    dsub = add_group(sub, "data", help="generate, count and audit face data")
    p = add_command(dsub, "synth", help="write the embedded synthetic face set (UTKFace-style names)",
                    example="ordinalage data synth --out data/synth --n 3000")
    add_out(p, "folder", "where the images go", required=True)
    tag(p.add_argument("--n", type=int, default=3000, help="number of images"), "synth-n")
    add_seed(p, "of the generated faces", default=0)
    tag(p.add_argument("--size", type=int, default=96, help="image side in pixels"), "synth-size")
    add_json(p, "{out, images, seed, size}")
    p.set_defaults(func=data_synth)

    p = add_command(dsub, "stats", help="counts per age group and split, before and after sampling",
                    example="ordinalage data stats --data utkface:../shared/data/UTKFace --json")
    add_data(p, " (default synth)")
    add_groups(p)
    add_config(p, "data")
    add_set(p, "a config key")
    add_json(p, "the counts")
    tag(p.add_argument("--plots", metavar="DIR", help="folder: write bar charts of the group balance into it"),
        "plots")
    add_deprecated(p, "--plot", "--plots", dest="plots", metavar="DIR")
    p.set_defaults(func=data_stats)

    p = add_command(dsub, "audit", help="unreadable images, byte-identical duplicates and their age conflicts",
                    example="ordinalage data audit --data utkface:../shared/data/UTKFace --json")
    add_data(p, " (default synth)")
    add_json(p, "the audit")
    p.set_defaults(func=data_audit)
