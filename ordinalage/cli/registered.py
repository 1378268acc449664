"""`ordinalage list heads|backbones|readers` (and `ordinalage heads`): what is registered, built in
or from an installed plugin."""

from __future__ import annotations

import argparse
from typing import Any

from ordinalage.cli.options import add_json, print_json
from ordinalage.cli.parser import add_command


def registered(what: str) -> list[dict[str, Any]]:
    """One row per registered name, then one per plugin that cannot be used: {name, kind, source,
    status (ok | broken), reason (broken only), title (heads) or description (others, when known)}."""
    from ordinalage.plugins import GROUPS, KINDS, load_plugins, plugin_of

    group = GROUPS[what]
    if what == "heads":
        from ordinalage.models.heads import HEADS, add_head

        problems = load_plugins(group, add_head, builtin=HEADS)
        entries: dict[str, tuple[str, Any]] = {n: ("title", getattr(c, "title", None)) for n, c in HEADS.items()}
    elif what == "backbones":
        from ordinalage.models.backbones import BACKBONES, add_backbone, backbone_info

        problems = load_plugins(group, add_backbone, builtin=BACKBONES)
        entries = {n: ("description", getattr(backbone_info(n), "description", None)) for n in BACKBONES}
        entries["timm:NAME"] = ("description", "any timm model as a feature extractor")
    else:
        from ordinalage.data.sources import READERS, add_reader

        problems = load_plugins(group, add_reader, builtin=READERS)
        entries = {n: ("description", getattr(r, "description", None)) for n, r in READERS.items()}
    rows: list[dict[str, Any]] = []
    for name, (field, text) in entries.items():
        plugin = plugin_of(group, name)
        row = {"name": name, "kind": KINDS[group], "source": plugin.source() if plugin else "built-in", "status": "ok"}
        if text:
            row[field] = str(text)
        rows.append(row)
    rows += [{"name": p.name, "kind": KINDS[group], "source": p.plugin.source(), "status": "broken",
              "reason": p.reason} for p in problems]
    return rows


def list_registered(args: argparse.Namespace) -> int:
    rows = registered(args.what)
    if args.json:
        print_json({"results": rows})
        return 0
    name_w = max(len(r["name"]) for r in rows)
    source_w = max(len(r["source"]) for r in rows if r["status"] == "ok")
    for r in rows:
        if r["status"] == "ok":
            text = r.get("title") or r.get("description") or ""
            print(f"{r['name']:<{name_w}}  {r['source']:<{source_w}}  {text}".rstrip())
        else:
            print(f"{r['name']:<{name_w}}  BROKEN {r['source']}: {r['reason']}")
    return 0


def register(sub: Any) -> None:
    what = '{"results": [{name, kind, source, status, ...}]}'
    p = add_command(sub, "list", help="what is registered: heads, backbones or data readers, built in or from "
                    "an installed plugin (docs/extending.md)", example="ordinalage list heads --json")
    p.add_argument("what", choices=("heads", "backbones", "readers"), help="which registry")
    add_json(p, what)
    p.set_defaults(func=list_registered)
    p = add_command(sub, "heads", help="the registered heads (same as `list heads`)", example="ordinalage heads")
    add_json(p, what)
    p.set_defaults(func=list_registered, what="heads")
