"""Data specs and their readers: `synth`, `utkface:PATH`, `megaage:PATH`, `folder:PATH`, `csv:PATH`,
and the benchmarks as distributed: `afad:`, `morph:`, `cacd:`, `fgnet:`, `adience:`, `imdbwiki:`,
`appa:`, `agedb:`, and FAEB's database files `faeb:DB.json?root=IMAGES` (see docs/datasets.md). A
spec may end in options, `appa:PATH?target=real`.

Every reader turns a folder or file into `Record`s (absolute path, age, the source's own split or
None, the spec as `source`, small `meta`). Files a benchmark reader leaves out are counted per reason
and reported on stderr. Bad input raises `UsageError` naming the file and line.

Readers are registered by their spec prefix (`READERS`: prefix -> `ReaderInfo`, `register_reader`,
`add_reader`), each with what its records carry in `meta` beyond path and age (`carries`), a one-line
description, the `?key=value` options it takes and the `data.*` config keys it is handed.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ordinalage.data.files import UTKFaceName, list_images, parse_utkface_name
from ordinalage.data.records import Record, Skipped
from ordinalage.errors import UsageError
from ordinalage.groups import AgeGroups
from ordinalage.plugins import load_plugins

if TYPE_CHECKING:
    from ordinalage.config import DataConfig

SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}

# A reader: (PATH, the spec as source, its ?options[, cfg=the DataConfig when `wants_config`]) -> records,
# or (records, Skipped) when it leaves files out and counts why.
Reader = Callable[..., "list[Record] | tuple[list[Record], Skipped]"]


@dataclass(frozen=True)
class ReaderInfo:
    """A data reader and what the rest of the package may ask of it: its spec `prefix` (`utkface` in
    `utkface:PATH`), what its records carry in `meta` beyond path and age (`carries`, e.g. ("gender",
    "race")), a one-line `description`, the `?key=value` `options` it takes (key -> allowed values,
    None: any; a prefix without options takes the whole rest as PATH), whether it is handed the data
    config as the keyword `cfg` (`wants_config`), whether the spec names a path (`takes_path`:
    False for the bare `synth`), and whether its faces are made up (`synthetic`: a model trained on
    them alone is meaningless on photos, and inference says so), and the data's terms of use (`terms`:
a licence name and its link, carried into model cards' metadata)."""

    prefix: str
    read: Reader
    carries: tuple[str, ...] = ()
    description: str = ""
    options: Mapping[str, tuple[str, ...] | None] = field(default_factory=dict)
    wants_config: bool = False
    takes_path: bool = True
    synthetic: bool = False
    terms: tuple[str, str] | None = None  # (licence name, link) of the data's terms of use, when known


READERS: dict[str, ReaderInfo] = {}


def add_reader(prefix: str, read: Reader, *, carries: Sequence[str] | None = None, description: str | None = None,
               options: Mapping[str, tuple[str, ...] | None] | None = None, wants_config: bool | None = None,
               takes_path: bool = True, synthetic: bool | None = None,
               terms: tuple[str, str] | None = None) -> Reader:
    """Register `read` for the data specs `PREFIX:PATH` (ValueError: a prefix taken or not a plain name).
    A trait not given is read from the reader's attribute of that name (a plugin's reader may carry
    `carries`, `description`, `options`, `wants_config`, `synthetic`, `terms`), else its default: nothing carried, the first
    line of the reader's docstring, no options, no config."""
    carries = getattr(read, "carries", ()) if carries is None else carries
    options = getattr(read, "options", None) if options is None else options
    wants_config = bool(getattr(read, "wants_config", False)) if wants_config is None else wants_config
    description = getattr(read, "description", None) if description is None else description
    synthetic = bool(getattr(read, "synthetic", False)) if synthetic is None else synthetic
    terms = getattr(read, "terms", None) if terms is None else terms
    if not callable(read):
        raise ValueError(f"reader {prefix!r}: {read!r} is not callable")
    if isinstance(carries, str):
        raise ValueError(f"reader {prefix!r}: carries is a sequence of meta keys, not one string")
    if prefix in READERS:
        raise ValueError(f"reader {prefix!r} is registered twice")
    if not prefix or not prefix.replace("_", "").isalnum() or prefix != prefix.lower():
        raise ValueError(f"reader prefix {prefix!r}: use lower-case letters, digits and '_'")
    doc = (getattr(read, "__doc__", None) or "").strip().splitlines()
    READERS[prefix] = ReaderInfo(prefix, read, tuple(carries), description if description is not None else
                                 (doc[0] if doc else ""), dict(options or {}), wants_config, takes_path,
                                 synthetic, tuple(terms) if terms else None)
    return read


def register_reader(prefix: str, *, carries: Sequence[str] | None = None, description: str | None = None,
                    options: Mapping[str, tuple[str, ...] | None] | None = None, wants_config: bool | None = None
                    ) -> Callable[[Reader], Reader]:
    """Decorator: register `read(path, source, options[, cfg]) -> records | (records, Skipped)` for the
    data specs `PREFIX:PATH` (see `add_reader`)."""

    def deco(read: Reader) -> Reader:
        return add_reader(prefix, read, carries=carries, description=description, options=options,
                          wants_config=wants_config)

    return deco


def reader_info(prefix: str) -> ReaderInfo:
    """The registered reader of `prefix` (UsageError listing the known prefixes when unknown)."""
    info = READERS.get(prefix)
    if info is None:
        raise UsageError(f"data spec kind {prefix!r}: unknown (known: {', '.join(READERS)})")
    return info


def synthetic_only(specs: Sequence[str]) -> bool:
    """True when every data spec reads made-up faces (a reader with the `synthetic` trait)."""
    try:
        kinds = [parse_spec(spec)[0] for spec in specs]
    except UsageError:  # a reader no longer installed: not known to be synthetic
        return False
    return bool(kinds) and all(READERS[kind].synthetic for kind in kinds)


def parse_spec(spec: str) -> tuple[str, str | None]:
    """Split `kind:PATH` (or a bare kind that takes no path, `synth`) into (kind, path); options stay
    on the path."""
    spec = spec.strip()
    load_plugins("ordinalage.readers", add_reader, builtin=READERS, need=spec.partition(":")[0])  # plugins, once
    bare = READERS.get(spec)
    if bare is not None and not bare.takes_path:
        return spec, None
    kind, sep, path = spec.partition(":")
    info = READERS.get(kind)
    if not sep or info is None or not info.takes_path:
        bare_kinds = [k for k, r in READERS.items() if not r.takes_path]
        raise UsageError(f"data spec {spec!r}: unknown kind (expected {' or '.join(bare_kinds) or 'one'} or one of "
                         f"{', '.join(k + ':PATH' for k, r in READERS.items() if r.takes_path)})")
    if not path or path.startswith("?"):
        raise UsageError(f"data spec {spec!r}: missing PATH after '{kind}:'")
    return kind, path


def parse_options(kind: str, path: str, spec: str) -> tuple[str, dict[str, str]]:
    """`PATH?key=value&key=value` -> (PATH, options) for the kinds that take options (`ReaderInfo.options`)."""
    allowed = READERS[kind].options if kind in READERS else None
    if not allowed or "?" not in path:
        return path, {}
    path, _, query = path.partition("?")
    options: dict[str, str] = {}
    for item in filter(None, query.split("&")):
        key, sep, value = item.partition("=")
        if not sep or key not in allowed:
            raise UsageError(f"data spec {spec!r}: unknown option {item!r} "
                             f"({kind}: takes {', '.join(k + '=' for k in allowed)})")
        choices = allowed[key]
        if choices is not None and value not in choices:
            raise UsageError(f"data spec {spec!r}: {key}={value!r} is not one of {', '.join(choices)}")
        options[key] = value
    return path, options


# ---------------------------------------------------------------------------------------------
# utkface: age is the first "_" token of the file name


def utkface_name(path: Path) -> UTKFaceName:
    """What a UTKFace file name says; a name that does not start with the age in years is a UsageError."""
    parsed = parse_utkface_name(path.name)
    if parsed is None:
        token = path.name.split("_", 1)[0].strip()
        raise UsageError(f"{path}: UTKFace file name must start with the age in years followed by '_' "
                         f"(like 25_0_1_20170116174525125.jpg.chip.jpg), got {token!r}")
    return parsed


def read_utkface(folder: Path, source: str) -> list[Record]:
    """Every image under `folder`, age (and gender, race) from its name."""
    if not folder.is_dir():
        raise UsageError(f"data spec {source!r}: {folder} is not a folder")
    records = []
    for p in list_images(folder):
        name = utkface_name(p)
        records.append(Record(str(p), float(name.age), None, source, name.meta()))
    return records


# ---------------------------------------------------------------------------------------------
# megaage: list/{train,test}_{name,age}.txt, images in train/ and test/


def find_megaage_root(folder: Path) -> Path:
    """The folder that holds `list/` (the path itself or a nested unzip like megaage_asian/megaage_asian/)."""
    for root, dirs, _files in os.walk(folder):
        if "list" in dirs and any((Path(root) / "list" / f"{s}_name.txt").is_file() for s in ("train", "test")):
            return Path(root)
        depth = len(Path(root).relative_to(folder).parts)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if depth < 3 else []
    raise UsageError(f"{folder}: no MegaAge layout found (expected list/train_name.txt or list/test_name.txt "
                     "within three folder levels)")


def _list_lines(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    return [line.strip() for line in lines]


def read_megaage(folder: Path, source: str) -> list[Record]:
    """MegaAge / MegaAge-Asian: line i of list/<split>_name.txt pairs with line i of list/<split>_age.txt."""
    root = find_megaage_root(folder)
    records: list[Record] = []
    for split in ("train", "test"):
        names_file, ages_file = root / "list" / f"{split}_name.txt", root / "list" / f"{split}_age.txt"
        if not names_file.is_file():
            continue
        if not ages_file.is_file():
            raise UsageError(f"{names_file}: the matching age list {ages_file} is missing")
        names, ages = _list_lines(names_file), _list_lines(ages_file)
        if len(names) != len(ages):
            raise UsageError(f"{names_file} has {len(names)} lines but {ages_file} has {len(ages)}: "
                             "line i of the names must pair with line i of the ages")
        for line_no, (name, age_text) in enumerate(zip(names, ages, strict=True), start=1):
            if not name:
                raise UsageError(f"{names_file}:{line_no}: empty image name")
            try:
                age = int(age_text)
            except ValueError:
                raise UsageError(f"{ages_file}:{line_no}: age {age_text!r} is not an integer") from None
            if age < 0:
                raise UsageError(f"{ages_file}:{line_no}: age {age} is negative")
            path = root / split / name
            if not path.is_file() and (root / name).is_file():
                path = root / name
            if not path.is_file():
                raise UsageError(f"{names_file}:{line_no}: image {name!r} not found (looked for {root / split / name})")
            records.append(Record(str(path), float(age), split, source, {}))
    return records


# ---------------------------------------------------------------------------------------------
# folder: one sub-folder per age group (Keras flow_from_directory), optional split folders on top


def _group_records(group_dir: Path, split: str | None, source: str) -> list[Record]:
    try:
        (group,) = AgeGroups.parse(group_dir.name).groups
    except (UsageError, ValueError):
        raise UsageError(f"{group_dir}: folder name must be an age group such as '21-30' or '71+'") from None
    meta = {"group_label": group.label}
    return [Record(str(p), group.midpoint, split, source, dict(meta)) for p in list_images(group_dir)]


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def read_folder(folder: Path, source: str) -> list[Record]:
    """Group folders (`21-30/`, `71+/`); ages are the group midpoints. `train/`, `val/`, `test/` on top set the split."""
    if not folder.is_dir():
        raise UsageError(f"data spec {source!r}: {folder} is not a folder")
    subdirs = _subdirs(folder)
    split_dirs = [d for d in subdirs if d.name.lower() in SPLIT_NAMES]
    records: list[Record] = []
    if split_dirs:
        others = [d.name for d in subdirs if d not in split_dirs]
        if others:
            raise UsageError(f"{folder}: mixes split folders ({', '.join(d.name for d in split_dirs)}) "
                             f"with other folders ({', '.join(others)})")
        for split_dir in split_dirs:
            split = SPLIT_NAMES[split_dir.name.lower()]
            for group_dir in _subdirs(split_dir):
                records.extend(_group_records(group_dir, split, source))
    else:
        for group_dir in subdirs:
            records.extend(_group_records(group_dir, None, source))
    return records


# ---------------------------------------------------------------------------------------------
# csv: columns path, age, optional split


def parse_age(text: str, where: str, column: str = "age") -> float:
    """A non-negative finite age from a CSV cell; errors name `where` (file and line) and the column."""
    try:
        age = float(text)
    except ValueError:
        raise UsageError(f"{where}, column {column!r}: {text!r} is not a number") from None
    if not math.isfinite(age) or age < 0:
        raise UsageError(f"{where}, column {column!r}: {text!r} is not a non-negative age")
    return age


def read_csv(path: Path, source: str) -> list[Record]:
    """Rows of path (relative to the CSV's folder), age (years) and optionally split (train/val/test)."""
    if not path.is_file():
        raise UsageError(f"data spec {source!r}: {path} is not a file")
    records: list[Record] = []
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        columns = {(c or "").strip().lower(): c for c in reader.fieldnames or []}
        for needed in ("path", "age"):
            if needed not in columns:
                raise UsageError(f"{path}:1: missing column {needed!r} (found: {', '.join(columns) or 'nothing'})")
        extra = [c for c in columns if c not in ("path", "age", "split") and c]
        for row in reader:
            where = f"{path}:{reader.line_num}"
            values = {k: (row.get(orig) or "").strip() for k, orig in columns.items()}
            if not any(values.values()):
                continue
            if not values["path"]:
                raise UsageError(f"{where}, column 'path': empty")
            image = Path(values["path"]) if os.path.isabs(values["path"]) else path.parent / values["path"]
            if not image.is_file():
                raise UsageError(f"{where}, column 'path': image not found: {image}")
            split_text = values.get("split", "")
            if split_text and split_text.lower() not in SPLIT_NAMES:
                raise UsageError(f"{where}, column 'split': {split_text!r} is not train, val or test")
            split = SPLIT_NAMES[split_text.lower()] if split_text else None
            meta = {c: values[c] for c in extra}
            records.append(Record(os.path.abspath(image), parse_age(values["age"], where), split, source, meta))
    return records


# ---------------------------------------------------------------------------------------------


def _plain(read: Callable[[Path, str], list[Record]]) -> Reader:
    """A reader that skips nothing (it raises on what it cannot read) in the common signature."""

    def plain(path: Path, source: str, _options: dict[str, str]) -> list[Record]:
        return read(path, source)

    plain.__doc__ = read.__doc__
    return plain


def _lazy(module: str, name: str) -> Reader:
    def read(path: Path, source: str, options: dict[str, str]) -> tuple[list[Record], Skipped]:
        import importlib

        return getattr(importlib.import_module(module), name)(path, source, options)

    return read


def _synth(_path: Path, _source: str, _options: dict[str, str], cfg: DataConfig) -> list[Record]:
    """the embedded synthetic faces (UTKFace-style names; `data.synth_n`, `data.synth_size`)"""
    from ordinalage.data.synth import ensure_default_synth

    return read_utkface(Path(os.path.abspath(ensure_default_synth(cfg))), "synth")


def _faeb(path: Path, source: str, options: dict[str, str], cfg: DataConfig) -> tuple[list[Record], Skipped]:
    """FAEB's database files (`faeb:DB.json?root=IMAGES`); the crops' box extension (`data.bbox_extension`)
    travels in each record's path."""
    from ordinalage.data.faeb import read_faeb

    return read_faeb(path, source, options, extension=cfg.bbox_extension)


_BENCHMARK = "ordinalage.data.age_datasets"
UTKFACE_TERMS = ("utkface-non-commercial-research", "https://susanqq.github.io/UTKFace/")  # research use only
for _prefix, _read, _info in [
    ("synth", _synth, dict(carries=("gender", "race"), wants_config=True, takes_path=False, synthetic=True)),
    ("utkface", _plain(read_utkface), dict(carries=("gender", "race"),
                                           description="UTKFace: age, gender and race from each file name",
                                           terms=UTKFACE_TERMS)),
    ("megaage", _plain(read_megaage), dict(description="MegaAge / MegaAge-Asian: list/<split>_{name,age}.txt")),
    ("folder", _plain(read_folder), dict(carries=("group_label",),
                                         description="one folder per age group (ages: the group midpoints)")),
    ("csv", _plain(read_csv), dict(description="a CSV of path, age and optionally split; other columns go to meta")),
    ("afad", _lazy(_BENCHMARK, "read_afad"), dict(carries=("gender",), description="AFAD's age/gender folders",
                                                  options={"images": None})),
    ("morph", _lazy(_BENCHMARK, "read_morph"), dict(carries=("subject", "gender"), description="MORPH-2 album names",
                                                    options={"images": None})),
    ("cacd", _lazy(_BENCHMARK, "read_cacd"), dict(carries=("subject",), description="CACD2000 names",
                                                  options={"images": None})),
    ("fgnet", _lazy(_BENCHMARK, "read_fgnet"), dict(carries=("subject",), description="FG-NET names")),
    ("agedb", _lazy(_BENCHMARK, "read_agedb"), dict(carries=("subject", "gender"), description="AgeDB names")),
    ("appa", _lazy(_BENCHMARK, "read_appa"), dict(carries=("real_age", "apparent_age", "apparent_std"),
                                                  description="APPA-REAL's CSVs: apparent or real age",
                                                  options={"target": ("apparent", "real")})),
    ("adience", _lazy("ordinalage.data.adience", "read_adience"),
     dict(carries=("subject", "fold", "group_label", "gender"), description="Adience's fold files")),
    ("imdbwiki", _lazy("ordinalage.data.imdbwiki", "read_imdbwiki"),
     dict(carries=("subject", "gender"), description="IMDB-WIKI's .mat files", options={"min_score": None})),
    ("faeb", _faeb, dict(carries=("subject", "gender", "folder", "database", "box", "entry"),
                         options={"root": None}, wants_config=True)),
    # photos: no ages; refused here, read by data/photos.py where no ages are needed
    ("photos", _lazy("ordinalage.data.photos", "read_photos_as_labelled"),
     dict(carries=("file", "face", "box"), description="photos without ages (refused where ages are needed)")),
]:
    add_reader(_prefix, _read, **_info)  # type: ignore[arg-type]


def read_spec(spec: str, cfg: DataConfig, skipped: dict[str, dict[str, int]] | None = None) -> list[Record]:
    """Records of one data spec; what the reader skipped is reported on stderr (and put in `skipped`)."""
    kind, raw_path = parse_spec(spec)
    info = READERS[kind]
    config = {"cfg": cfg} if info.wants_config else {}
    if not info.takes_path:
        path = Path()
        options: dict[str, str] = {}
    else:
        raw_path, options = parse_options(kind, str(raw_path), spec)
        path = Path(raw_path).expanduser()
        if not path.exists():
            raise UsageError(f"data spec {spec!r}: path not found: {path}")
        path = Path(os.path.abspath(path))
    result = info.read(path, spec, options, **config)
    records, skips = result if isinstance(result, tuple) else (result, Skipped(spec))
    skips.report(len(records))
    if skipped is not None and skips.total:
        skipped[spec] = dict(skips.counts)
    return records


def read_sources(specs: Sequence[str], cfg: DataConfig,
                 skipped: dict[str, dict[str, int]] | None = None) -> list[Record]:
    """Records from every data spec, in the order given; each Record's `source` is its spec.
    `skipped` (when given) receives {spec: {reason: count}} of the files the readers left out."""
    if isinstance(specs, str):
        specs = [specs]
    if not specs:
        raise UsageError("no data given (data.sources is empty)")
    records: list[Record] = []
    for spec in specs:
        records.extend(read_spec(spec, cfg, skipped))
    return records
