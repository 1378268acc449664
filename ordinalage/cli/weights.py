"""`ordinalage weights fetch|list`: pretrained weights into the cache, and what the caches hold."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ordinalage.cli.options import add_json, print_json
from ordinalage.cli.parser import add_command, add_group, tag


def weights(args: argparse.Namespace) -> int:
    from ordinalage.models.weights import fetch, list_cached

    if args.weights_command == "fetch":
        path = fetch(args.name, url=args.url, dest=args.dest, sha256=args.sha256)
        if args.json:
            print_json({"name": args.name, "path": str(path)})
        else:
            print(str(path))
        return 0
    rows = list_cached()
    if args.json:
        print_json({"results": rows})
    else:
        for r in rows:
            print(f"{r['cache']:<10} {r['bytes'] / 2**20:>9.1f} MiB  {r['name']}  {r['path']}")
        if not rows:
            print("no cached weights", file=sys.stderr)
    return 0


def register(sub: Any) -> None:
    from ordinalage.models.weights import KNOWN

    wsub = add_group(sub, "weights", help="fetch pretrained weights into the cache; list what is cached")
    p = add_command(wsub, "fetch", help="download a known weights file (resumable, checked), print its path",
                    example="ordinalage weights fetch vggface")
    p.add_argument("name", choices=tuple(KNOWN), help="vggface (vgg_face_dag.pth) | vggface-keras (keras .h5)")
    tag(p.add_argument("--url", help="download from this URL instead (a mirror)"), "url")
    tag(p.add_argument("--dest", metavar="DIR",
                       help="folder (default: $ORDINALAGE_CACHE/weights or ~/.cache/ordinalage/weights)"), "dest")
    tag(p.add_argument("--sha256", metavar="HEX", help="expected checksum of the file"), "sha256")
    add_json(p, "{name, path}")
    p.set_defaults(func=weights)
    p = add_command(wsub, "list", help="weights in the ordinalage, torch hub and Hugging Face (timm) caches",
                    example="ordinalage weights list --json")
    add_json(p, '{"results": [{cache, name, path, bytes}]}')
    p.set_defaults(func=weights)
