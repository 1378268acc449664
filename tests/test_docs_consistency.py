"""The user docs agree with the code and with themselves.

Read-only checks of README.md, docs/**/*.md, CHANGELOG.md and the comments of configs/**/*.yaml:

- no words that describe past or pending work ("pending", "not yet", "until 2026-", "used to",
  "as before", "so far") in README.md and docs/ (CHANGELOG.md is where history goes), and no dates
  in docs/ or config comments;
- every config key a doc names exists: in YAML examples (training configs, tune files, bake-off
  files), in `--set KEY=VALUE` / `--grid KEY=...`, and in backticked `data.*`, `model.*`, `train.*`;
- every repository path a doc names exists, files listed under a folder are in that folder, and
  every `benchmarks/NAME.py` named in the docs, the changelog or a config comment is a script;
- every relative Markdown link resolves, anchors included (GitHub's heading slugs);
- the exit statuses README.md lists are the ones the command line returns;
- docs/glossary.md defines the listed terms, and a page that uses one of them links to it.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import re
from functools import cache
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
CHANGELOG = ROOT / "CHANGELOG.md"
GLOSSARY = DOCS / "glossary.md"
USER_DOCS = [README, *sorted(DOCS.rglob("*.md"))]
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))

FENCE = re.compile(r"^\s*(```|~~~)")


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


@cache
def lines_of(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def prose_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of the lines outside fenced code blocks."""
    out, inside = [], False
    for n, line in enumerate(lines_of(path), 1):
        if FENCE.match(line):
            inside = not inside
            continue
        if not inside:
            out.append((n, line))
    return out


def fenced_blocks(path: Path) -> list[tuple[int, str, str]]:
    """(first line, info string, text) of every fenced code block."""
    out, current, start, info = [], None, 0, ""
    for n, line in enumerate(lines_of(path), 1):
        m = FENCE.match(line)
        if m and current is None:
            current, start, info = [], n + 1, line.strip()[3:].strip()
        elif m:
            indent = len(line) - len(line.lstrip())
            out.append((start, info, "\n".join(x[indent:] if x[:indent].isspace() else x for x in current)))
            current = None
        elif current is not None:
            current.append(line)
    return out


def config_comments(path: Path) -> list[tuple[int, str]]:
    return [(n, line.split("#", 1)[1]) for n, line in enumerate(lines_of(path), 1) if "#" in line]


# ------------------------------------------------------------------------------------------------
# words about the past or pending work; dates

STALE = re.compile(r"\b(pending|not yet|until 2026-|used to|as before|so far)\b", re.IGNORECASE)
#: (page, a phrase on the flagged line) -> why the words are meant there. Keep it short.
STALE_ALLOWED: dict[tuple[str, str], str] = {
    ("docs/results.md", "never used to choose"): "'used to' as in 'employed to'; benchmarks/improve_utkface.py writes it",
}


def test_user_docs_describe_what_is_not_what_was() -> None:
    found, used = [], set()
    for page in USER_DOCS:
        for n, line in enumerate(lines_of(page), 1):
            if not STALE.search(line):
                continue
            allowed = [k for k in STALE_ALLOWED if k[0] == rel(page) and k[1] in line]
            if allowed:
                used.update(allowed)
                continue
            found.append(f"{rel(page)}:{n}: {line.strip()}")
    assert not found, ("words about past or pending work in the user docs (say what the package does now; "
                       "history belongs in CHANGELOG.md):\n" + "\n".join(found))
    assert used == set(STALE_ALLOWED), f"allowlist entries that no longer match: {set(STALE_ALLOWED) - used}"


DATE = re.compile(r"\b20\d\d-\d\d(-\d\d)?\b")


def test_no_dates_in_docs_or_config_comments() -> None:
    found = []
    for page in USER_DOCS:
        for n, line in enumerate(lines_of(page), 1):
            if DATE.search(line) and not line.startswith("- **Card**: written by ordinalage"):  # a card's own stamp
                found.append(f"{rel(page)}:{n}: {line.strip()}")
    for path in CONFIGS:
        found += [f"{rel(path)}:{n}: #{c}" for n, c in config_comments(path) if DATE.search(c)]
    assert not found, "dates in docs/ or config comments (dated history goes in CHANGELOG.md):\n" + "\n".join(found)


# ------------------------------------------------------------------------------------------------
# config keys


@cache
def config_keys() -> frozenset[str]:
    """Every dotted key of the training config (sections such as `data.augment` included)."""
    from ordinalage.config import Config

    def walk(cls: type, prefix: str) -> set[str]:
        out = set()
        for f in dataclasses.fields(cls):
            key = prefix + f.name
            out.add(key)
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            if dataclasses.is_dataclass(default):
                out |= walk(type(default), key + ".")
        return out

    return frozenset(walk(Config, ""))


def nested_keys(mapping: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in mapping.items():
        key = f"{prefix}{k}"
        out.append(key)
        if isinstance(v, dict) and key in config_keys():
            out += nested_keys(v, key + ".")
    return out


def training_config_problems(doc: dict) -> list[str]:
    return [k for k in nested_keys({k: v for k, v in doc.items() if k != "base"}) if k not in config_keys()]


def yaml_problems(doc: dict) -> list[str]:
    """Unknown keys of a training config, a tune file or a bake-off file (told apart by their keys)."""
    from ordinalage.comparison.spec import SPEC_KEYS
    from ordinalage.tuning.spec import TOP_KEYS

    if {"space", "study_name", "base_config", "objective"} & set(doc):
        problems = [f"tune file: {k}" for k in doc if k not in TOP_KEYS]
        problems += [f"space: {k}" for k in doc.get("space") or {} if k not in config_keys()]
        if isinstance(doc.get("base_config"), dict):
            problems += [f"base_config: {k}" for k in training_config_problems(doc["base_config"])]
        return problems
    if {"run_config", "methods", "grid"} & set(doc):
        problems = [f"bake-off file: {k}" for k in doc if k not in SPEC_KEYS]
        problems += [f"grid: {k}" for k in doc.get("grid") or {} if k not in config_keys()]
        for name, params in (doc.get("methods") or {}).items():
            problems += [f"methods.{name}: {k}" for k in params or {} if k not in config_keys()]
        problems += [f"set: {s}" for s in doc.get("set") or [] if str(s).split("=", 1)[0] not in config_keys()]
        return problems
    return training_config_problems(doc)


def yaml_examples() -> list[tuple[str, str]]:
    out = []
    for page in USER_DOCS:
        for start, info, text in fenced_blocks(page):
            if info.split(" ")[0] in ("yaml", "yml"):
                out.append((f"{rel(page)}:{start}", text))
    return out


YAML_EXAMPLES = yaml_examples()


def test_docs_have_yaml_examples() -> None:
    assert len(YAML_EXAMPLES) >= 2


@pytest.mark.parametrize(("where", "text"), YAML_EXAMPLES, ids=[w for w, _ in YAML_EXAMPLES])
def test_yaml_example_uses_existing_keys(where: str, text: str) -> None:
    doc = yaml.safe_load(text)
    assert isinstance(doc, dict), f"{where}: not a YAML mapping"
    problems = yaml_problems(doc)
    assert not problems, f"{where}: keys that ordinalage.config does not have: {problems}"


SET_FLAG = re.compile(r"--(set|grid)[ =]['\"]?([a-z_]+(?:\.[a-z_]+)+)=")
BACKTICKED_KEY = re.compile(r"`((?:data|model|train)\.[a-z_]+(?:\.[a-z_]+)*)(?:\s*[:=][^`]*)?`")
#: backticked names that look like config keys but are not, with what they are
NOT_CONFIG_KEYS = {
    "data.decode.decode_image": "a function of the data layer (ordinalage/data/decode.py)",
    "data.train": "the prepared data's training records (evaluation.md, effective prior)",
    "data.sampler_weights": "the prepared data's sampler weights (evaluation.md, effective prior)",
    "model.safetensors": "a file name",
    "train.py": "a module file name",
}


def test_flags_and_backticked_keys_name_existing_config_keys() -> None:
    found = []
    texts = [(page, n, line) for page in USER_DOCS for n, line in enumerate(lines_of(page), 1)]
    texts += [(path, n, c) for path in CONFIGS for n, c in config_comments(path)]
    for path, n, line in texts:
        keys = [m.group(2) for m in SET_FLAG.finditer(line)] + [m.group(1) for m in BACKTICKED_KEY.finditer(line)]
        found += [f"{rel(path)}:{n}: {k}" for k in keys if k not in config_keys() and k not in NOT_CONFIG_KEYS]
    assert not found, "config keys that do not exist (ordinalage/config.py):\n" + "\n".join(found)


# ------------------------------------------------------------------------------------------------
# paths, script names and links

REPO_PATH = re.compile(r"(?<![\w./-])((?:configs|benchmarks|docs|tests|ordinalage|\.ci)/[A-Za-z0-9_.\-/]*[A-Za-z0-9_/])")
LOCAL_ONLY = ("benchmarks/runs/",)  # run folders the benchmarks write locally (git-ignored)
#: files a documented command writes, not shipped
WRITTEN_BY_COMMANDS = {"benchmarks/results/gpu.json": "benchmarks/gpu.py on a CUDA machine"}
PLACEHOLDER = re.compile(r"^[A-Z][A-Z_]*(\.\w+)?$")  # configs/bakeoff/X.yaml, runs/NAME


def test_repository_paths_named_in_docs_exist() -> None:
    missing = []
    for page in USER_DOCS:
        for n, line in enumerate(lines_of(page), 1):
            for m in REPO_PATH.finditer(line):
                path = m.group(1).rstrip(".")
                after = line[m.end():m.end() + 1]
                if (after and after in "*{<") or path.startswith(LOCAL_ONLY) or path in WRITTEN_BY_COMMANDS:
                    continue  # a glob or placeholder follows; a local run folder; a command's output
                if any(PLACEHOLDER.match(part) for part in path.split("/")):
                    continue
                if not (ROOT / path).exists():
                    missing.append(f"{rel(page)}:{n}: {path}")
    assert not missing, "paths named in the docs that do not exist:\n" + "\n".join(missing)


FOLDER_LISTING = re.compile(r"`((?:ordinalage|benchmarks|tests)/[\w/]+/)` \(([^)]*)\)")


def test_files_listed_under_a_folder_are_in_it() -> None:
    """`ordinalage/posterior/` (`intervals.py`, `calibration.py`): each file is in that folder."""
    missing = []
    for page in USER_DOCS:
        text = " ".join(lines_of(page))
        for m in FOLDER_LISTING.finditer(text):
            folder = ROOT / m.group(1)
            for name in re.findall(r"`([\w.]+\.py)`", m.group(2)):
                if not (folder / name).is_file():
                    missing.append(f"{rel(page)}: {m.group(1)}{name}")
    assert not missing, "files placed in a folder that does not hold them:\n" + "\n".join(missing)


BENCHMARK_SCRIPT = re.compile(r"benchmarks/([a-z0-9_]+\.py)\b")
#: script names in CHANGELOG.md that name a script as it was then; none so far
BENCHMARKS_GONE: set[str] = set()


def test_benchmark_scripts_named_anywhere_exist() -> None:
    sources = [*USER_DOCS, CHANGELOG, *CONFIGS, *sorted((ROOT / "benchmarks").glob("*.py"))]
    missing = []
    for path in sources:
        for n, line in enumerate(lines_of(path), 1):
            for name in BENCHMARK_SCRIPT.findall(line):
                if not (ROOT / "benchmarks" / name).is_file() and name not in BENCHMARKS_GONE:
                    missing.append(f"{rel(path)}:{n}: benchmarks/{name}")
    assert not missing, "benchmark scripts that do not exist:\n" + "\n".join(missing)


PY_FILE = re.compile(r"(?<![\w/.-])([A-Za-z_]\w*\.py)\b")
#: Python file names the docs use that are not files of this repository, with what they are
NOT_REPO_FILES = {"tune_ddp.py": "the example script a user writes (docs/distributed.md)"}


@cache
def repo_python_files() -> frozenset[str]:
    return frozenset(p.name for d in ("ordinalage", "benchmarks", "tests", "docs") for p in (ROOT / d).rglob("*.py"))


def test_python_files_named_in_docs_exist() -> None:
    missing = []
    for page in USER_DOCS:
        for n, line in enumerate(lines_of(page), 1):
            for name in PY_FILE.findall(line):
                if name not in repo_python_files() and name not in NOT_REPO_FILES:
                    missing.append(f"{rel(page)}:{n}: {name}")
    assert not missing, "Python files named in the docs that the repository does not have:\n" + "\n".join(missing)


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation but `-` and `_` dropped, spaces to `-`."""
    text = re.sub(r"`|\*\*|<[^>]+>", "", heading.strip().lower())
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@cache
def anchors(path: Path) -> frozenset[str]:
    seen: dict[str, int] = {}
    out = set()
    for _, line in prose_lines(path):
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            slug = github_slug(m.group(1))
            out.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
            seen[slug] = seen.get(slug, 0) + 1
    return frozenset(out)


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def doc_links() -> list[tuple[str, Path, str]]:
    out = []
    for page in USER_DOCS:
        for n, line in prose_lines(page):
            for target in LINK.findall(re.sub(r"`[^`]*`", "", line)):
                if not re.match(r"^[a-z]+:", target):
                    out.append((f"{rel(page)}:{n}", page, target))
    return out


LINKS = doc_links()


def test_docs_have_links() -> None:
    assert len(LINKS) > 50


@pytest.mark.parametrize(("where", "page", "target"), LINKS, ids=[f"{w} {t}" for w, _, t in LINKS])
def test_relative_link_resolves(where: str, page: Path, target: str) -> None:
    file_part, _, anchor = target.partition("#")
    dest = (page.parent / file_part).resolve() if file_part else page
    assert dest.exists(), f"{where}: link to {target}: {dest} does not exist"
    if anchor and dest.suffix == ".md":
        assert anchor in anchors(dest), (f"{where}: link to {target}: no heading in {rel(dest)} has the anchor "
                                         f"#{anchor} (it has: {', '.join(sorted(anchors(dest)))})")


BAKEOFF_COMMAND = re.compile(r"ordinalage bakeoff --config (configs/bakeoff/[\w.]+\.yaml)([^`#]*)")


def published_bakeoff_epochs() -> dict[str, set[int | None]]:
    """Config file -> the epochs per cell of every published bake-off run from it (None: a budget)."""
    out: dict[str, set[int | None]] = {}
    for path in sorted((ROOT / "benchmarks" / "results").rglob("bakeoff.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        m = BAKEOFF_COMMAND.search(doc.get("command") or "")
        if m:
            out.setdefault(m.group(1), set()).add((doc.get("spec") or {}).get("epochs"))
    return out


def test_bakeoff_commands_reproduce_the_published_settings() -> None:
    """A documented `ordinalage bakeoff --config F` trains its cells as the published bake-offs of F did:
    with their `--epochs N` when the file itself says `budget:` (or the command takes hours and
    reproduces nothing)."""
    published = published_bakeoff_epochs()
    assert published, "no published bake-off in benchmarks/results/"
    wrong = []
    texts = [(page, n, line) for page in USER_DOCS for n, line in enumerate(lines_of(page), 1)]
    texts += [(path, n, c) for path in CONFIGS for n, c in config_comments(path)]
    for path, n, line in texts:
        for m in BAKEOFF_COMMAND.finditer(line):
            config, rest = m.group(1), m.group(2)
            file_epochs = (yaml.safe_load((ROOT / config).read_text(encoding="utf-8")) or {}).get("epochs")
            flag = re.search(r"--epochs (\d+)", rest)
            epochs = int(flag.group(1)) if flag else file_epochs
            for want in published.get(config, set()):
                if want is not None and epochs != want:
                    wrong.append(f"{rel(path)}:{n}: {config} with {epochs or 'its budget'}; published with --epochs {want}")
    assert not wrong, "bake-off commands that do not reproduce the published tables:\n" + "\n".join(wrong)


# ------------------------------------------------------------------------------------------------
# exit statuses


def exit_codes_in_code() -> dict[int, str]:
    """The statuses the command line returns. `ordinalage.cli.EXIT_CODES` when the CLI declares them;
    until then read from its source: the integer literals it returns (or raises as SystemExit) and the
    names it returns (PREEMPTED_EXIT), plus 1, Python's status for an uncaught exception."""
    import ordinalage.cli as cli

    declared = getattr(cli, "EXIT_CODES", None)
    if declared:
        return {int(k): str(v) for k, v in dict(declared).items()}
    from ordinalage.training.preemption import PREEMPTED_EXIT

    names = {"PREEMPTED_EXIT": PREEMPTED_EXIT}
    sources = [ROOT / "ordinalage" / "cli.py", *sorted((ROOT / "ordinalage" / "cli").rglob("*.py"))]
    codes = {1: "an uncaught exception"}

    def ints(node: ast.AST | None) -> list[int]:
        if isinstance(node, ast.Constant) and isinstance(node.value, int) and not isinstance(node.value, bool):
            return [node.value]
        if isinstance(node, ast.Name) and node.id in names:
            return [names[node.id]]
        if isinstance(node, ast.IfExp):
            return ints(node.body) + ints(node.orelse)
        return []

    for path in sources:
        if not path.is_file():
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            values: list[int] = []
            if isinstance(node, ast.Return):
                values = ints(node.value)
            elif isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) in ("SystemExit", "exit"):
                values = [v for a in node.args for v in ints(a)]
            for v in values:
                codes.setdefault(v, f"{rel(path)}")
    return codes


def exit_codes_in_readme() -> set[int]:
    text = " ".join(lines_of(README))
    m = re.search(r"Exit status: (.*?)\.(?:\s|$)", text)
    assert m, "README.md has no 'Exit status: ...' sentence"
    sentence = re.sub(r"\([^()]*(?:\([^()]*\)[^()]*)*\)", "", m.group(1))  # drop the parentheses
    return {int(c) for c in re.findall(r"(?:^|, )(\d+) ", sentence)}


def test_readme_lists_the_exit_statuses_the_cli_returns() -> None:
    in_code = exit_codes_in_code()
    in_readme = exit_codes_in_readme()
    assert in_readme == set(in_code), (f"README.md lists exit statuses {sorted(in_readme)}, the command line "
                                       f"returns {sorted(in_code)} ({in_code})")


# ------------------------------------------------------------------------------------------------
# the glossary

#: term -> (its anchor in docs/glossary.md, a pattern that finds the term in a page's prose)
GLOSSARY_TERMS = {
    "member": ("member", None),
    "recipe": ("recipe", None),
    "cell": ("cell", None),
    "budget": ("budget", None),
    "one-off": ("one-off", r"\bone-off\b"),
    "adjacent accuracy": ("adjacent-accuracy", r"\badjacent accuracy\b"),
    "CA(n)": ("can-cumulative-accuracy", r"\bCA\([35n]\)"),
    "QWK": ("qwk", r"\bQWK\b"),
    "DLDL": ("dldl", r"\bDLDL\b"),
    "EM prior": ("em-prior", r"--prior em\b|\bEM\b"),
    "ROPE": ("rope", r"\bROPE\b|region of practical equivalence"),
}


def test_glossary_defines_the_terms() -> None:
    have = anchors(GLOSSARY)
    missing = [term for term, (anchor, _) in GLOSSARY_TERMS.items() if anchor not in have]
    assert not missing, f"docs/glossary.md lacks {missing} (headings: {sorted(have)})"
    for _, line in prose_lines(GLOSSARY):  # 1-3 lines per entry: no paragraph runs longer
        assert len(line) < 110, f"docs/glossary.md: overlong line {line!r}"
    entry: list[str] = []
    for _, line in [*prose_lines(GLOSSARY), (0, "## end")]:
        if line.startswith("## "):
            assert len([x for x in entry if x.strip()]) <= 4, f"docs/glossary.md: entry too long: {entry}"
            entry = []
        else:
            entry.append(line)


def test_pages_link_the_glossary_where_they_use_its_terms() -> None:
    """A page whose prose uses a listed term links to its glossary entry (at its first use)."""
    missing = []
    for page in USER_DOCS:
        if page == GLOSSARY or "examples" in page.parts:
            continue  # the glossary itself; example packages
        prose = " ".join(re.sub(r"`[^`]*`", "", line) for _, line in prose_lines(page))
        prefix = "docs/glossary.md" if page == README else "glossary.md"
        for term, (anchor, pattern) in GLOSSARY_TERMS.items():
            if pattern and re.search(pattern, prose) and f"{prefix}#{anchor})" not in page.read_text(encoding="utf-8"):
                missing.append(f"{rel(page)}: uses {term!r} without a link to {prefix}#{anchor}")
    assert not missing, "\n".join(missing)
