"""`ordinalage models`: the shipped models, each with its measured test MAE, data and licence."""

from __future__ import annotations

import argparse
from typing import Any

from ordinalage.cli.options import add_json, print_json
from ordinalage.cli.parser import add_command


def shipped_rows() -> list[dict[str, Any]]:
    """One row per shipped model: name, description, data, licence, metrics, the card's path."""
    from ordinalage.zoo import DEFAULT_MODEL, zoo_models

    return [{"name": m.name, "default": m.name == DEFAULT_MODEL, "description": m.description, "data": m.data,
             "license": m.license, "metrics": m.metrics, "card": str(m.path / "MODEL_CARD.md")}
            for m in zoo_models()]


def list_models(args: argparse.Namespace) -> int:
    rows = shipped_rows()
    if args.json:
        print_json({"results": rows})
        return 0
    if not rows:
        print("no model is shipped with this install")
    for r in rows:
        mae = r["metrics"].get("test_mae")
        where = r["metrics"].get("split", "")
        print(f"{r['name']}{' (default)' if r['default'] else ''}: {r['description']}")
        print(f"  test MAE {mae} years ({where})" if mae is not None else "  not evaluated")
        print(f"  data: {r['data']}; licence: {r['license']}")
        print(f"  card: {r['card']}")
    return 0


def register(sub: Any) -> None:
    p = add_command(sub, "models", help="the shipped models: test MAE, data, licence (use one with --model NAME)",
                    example=["ordinalage models", "ordinalage models --json"])
    add_json(p, '{"results": [one object per model]}')
    p.set_defaults(func=list_models)
