"""Argument types and choices read lazily from the registries (heads, backbones, data readers, face
detectors), so building the parser imports neither torch nor OpenCV; the registries are read only
to check a value, to word an error or to show `--help`."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

from ordinalage.cli.flags import flag_message
from ordinalage.errors import UsageError


class RegistryChoices:
    """argparse `choices` read from the registry of a config key when first needed (checking a
    given value, an error message, `--help`), so building the parser imports no torch."""

    def __init__(self, key: str) -> None:
        self.key = key

    def _names(self) -> tuple[str, ...]:
        from ordinalage.training.choices import registries

        return tuple(registries()[self.key])

    def __contains__(self, value: object) -> bool:
        from ordinalage.plugins import GROUP_OF_KEY, require_plugin

        names = self._names()  # the registries, installed plugins loaded
        if self.key == "model.backbone":
            from ordinalage.models.backbones import is_known_backbone

            known = isinstance(value, str) and is_known_backbone(value)
        else:
            known = value in names
        if not known and self.key in GROUP_OF_KEY:  # a plugin that failed: its problem, not "invalid choice"
            require_plugin(GROUP_OF_KEY[self.key], value)
        return known

    def __iter__(self) -> Iterator[str]:
        return iter(self._names() + (("timm:NAME",) if self.key == "model.backbone" else ()))


def detector_names(allow_none: bool = False) -> list[str]:
    """The face detectors `--detector` takes: the registry's choices (`auto` and every detector), and
    `none` where a command can take each image as one face."""
    from ordinalage.inference.detection.registry import detector_choices

    return detector_choices() + (["none"] if allow_none else [])


def detector_default() -> str:
    from ordinalage.inference.detection.registry import AUTO

    return AUTO


def resolve_detector(value: str | None) -> str:
    """The detector name to hand the library: the given one, else the default (the library resolves `auto`)."""
    return value or detector_default()


class DetectorChoices:
    """`--detector` choices from the detection registry, read when first needed. An unknown name is
    a UsageError naming the choices (exit 2, as the library words it), not argparse's message."""

    def __init__(self, allow_none: bool = False) -> None:
        self.allow_none = allow_none

    def __contains__(self, value: object) -> bool:
        names = detector_names(self.allow_none)
        if value not in names:
            raise UsageError(f"detector: unknown detector {value!r} (choose from {', '.join(names)})",
                             option="detector")
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(detector_names(self.allow_none))


def data_kinds() -> str:
    """Every data spec kind of the reader registry (installed plugins included), as --data's help lists them."""
    from ordinalage.data.sources import READERS, add_reader
    from ordinalage.plugins import load_plugins

    load_plugins("ordinalage.readers", add_reader, builtin=READERS)
    return " | ".join(kind + (":PATH" if info.takes_path else "") for kind, info in READERS.items())


def level(text: str) -> float:
    """--interval's coverage level."""
    from ordinalage.posterior.intervals import parse_level

    try:
        return parse_level(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(flag_message(exc, {"interval": "--interval"}, option="interval")) from None


def budget_minutes(text: str) -> float:
    """--budget: 30m, 90s, 1.5h or minutes."""
    from ordinalage.training.budget import parse_budget

    try:
        return parse_budget(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(flag_message(exc, {"budget": "--budget"}, option="budget")) from None


def loader_workers(text: str) -> int | str:
    """--workers: `auto` or a count >= 0."""
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto or a number >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected auto or a number >= 0, got {text!r}")
    return value


__all__ = ["DetectorChoices", "RegistryChoices", "budget_minutes", "data_kinds", "detector_default",
           "detector_names", "level", "loader_workers", "resolve_detector"]
