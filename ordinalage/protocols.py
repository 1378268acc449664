"""The names of evaluation protocols (`data.protocol`) and their parsing: plain text, no data.

The splits themselves are made by `data/splits.py`; config checks a protocol's spelling here.
`FAEB_SPLITS` is the folder table of the FAEB benchmark (Paplham et al., CVPR 2024), see docs/datasets.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from ordinalage.errors import UsageError

PROTOCOLS = ("random", "subject", "folds:K", "loso", "source", "faeb", "faeb:K")

Folders = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]  # train, val, test folders
# FAEB's five subject-exclusive splits over the folders 0-9 of a database file (split k: row k)
FAEB_SPLITS: tuple[Folders, ...] = (
    ((0, 1, 2, 3, 4, 5), (6, 7), (8, 9)),
    ((2, 3, 4, 5, 6, 7), (8, 9), (0, 1)),
    ((4, 5, 6, 7, 8, 9), (0, 1), (2, 3)),
    ((5, 6, 7, 8, 9, 0), (1, 2), (3, 4)),
    ((6, 7, 8, 9, 0, 1), (2, 3), (4, 5)),
)
# databases with one split of their own (CLAP2016, CACD2000: folders 0-2 only), the same in every FAEB split
FAEB_ONE_SPLIT: Folders = ((0,), (1,), (2,))


@dataclass(frozen=True)
class Protocol:
    kind: str  # random | subject | folds | loso | source | faeb
    k: int = 0  # folds:K
    split: int | None = None  # faeb:K (None: `faeb`, all five splits as folds)

    @property
    def fixed_folds(self) -> int | None:
        """The number of folds known without reading the data (None: one per subject or source fold)."""
        if self.kind == "faeb":
            return len(FAEB_SPLITS) if self.split is None else 1
        return {"random": 1, "subject": 1, "folds": self.k}.get(self.kind)


def parse_protocol(text: str) -> Protocol:
    """`random`, `subject`, `folds:K` (K >= 2), `loso`, `source`, `faeb` (FAEB's five splits as five
    folds) or `faeb:K` (FAEB's split K, 0-4); errors name the config key."""
    kind, sep, arg = str(text).strip().partition(":")
    if kind == "folds" and sep:
        if arg.isdigit() and int(arg) >= 2:
            return Protocol("folds", int(arg))
        raise UsageError(f"config key 'data.protocol': {text!r} needs a whole number of folds >= 2, e.g. folds:5")
    if kind == "faeb" and sep:
        if arg.isascii() and arg.isdigit() and int(arg) < len(FAEB_SPLITS):
            return Protocol("faeb", split=int(arg))
        raise UsageError(f"config key 'data.protocol': {text!r} needs FAEB's split number 0-{len(FAEB_SPLITS) - 1}, "
                         "e.g. faeb:0 (or faeb for all five splits as folds)")
    if kind in ("random", "subject", "loso", "source", "faeb") and not sep:
        return Protocol(kind)
    raise UsageError(f"config key 'data.protocol': {text!r} is not one of {', '.join(PROTOCOLS)}")
