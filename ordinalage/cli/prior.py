"""`ordinalage prior estimate`: the age mix of a set of images (EM), stored for prior correction."""

from __future__ import annotations

import argparse
from typing import Any

from ordinalage.cli.options import (
    add_data,
    add_detector,
    add_device,
    add_json,
    add_out,
    add_split,
    print_json,
)
from ordinalage.cli.parser import add_command, add_group
from ordinalage.cli.types import resolve_detector


def prior_estimate(args: argparse.Namespace) -> int:
    from ordinalage.evaluation.estimate import estimate_prior

    result = estimate_prior(args.model, data=args.data, out=args.out, split=args.split, device=args.device,
                            show=not args.json, detector=resolve_detector(args.detector))
    if args.json:
        print_json(result)
    return 0


def register(sub: Any) -> None:
    prior_sub = add_group(sub, "prior", help="the age mix of a set of images, for prior correction")
    p = add_command(prior_sub, "estimate", help="estimate the age mix of unlabeled images (EM) and store it",
                    example="ordinalage prior estimate runs/coral30 --data photos:my_photos --out mix.json")
    p.add_argument("model", metavar="MODEL", help="a run folder, a checkpoint file or a shipped model's name (with --data)")
    add_data(p, " (the images whose age mix to estimate; ages in the names are not used)")
    add_split(p, "all", "default all")
    add_out(p, "file", "the prior.json to write (a PNG is written beside it)", required=True, metavar="JSON")
    add_device(p)
    add_detector(p, what=" for photos:PATH specs")
    add_json(p, "the estimate")
    p.set_defaults(func=prior_estimate)
