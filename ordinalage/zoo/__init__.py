"""Shipped models (`--model NAME`, `ordinalage models`): the manifest, checksums, packaging."""

from ordinalage.zoo.catalog import (
    DEFAULT_MODEL,
    ResolvedModel,
    ZooModel,
    resolve_model,
    verify,
    zoo_model,
    zoo_models,
)

__all__ = ["DEFAULT_MODEL", "ResolvedModel", "ZooModel", "resolve_model", "verify", "zoo_model",
           "zoo_models"]
