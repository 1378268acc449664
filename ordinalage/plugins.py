"""Plugins: heads, backbones and data readers from other installed packages, found by entry point.

A package declares its plugins in its pyproject.toml, one entry point per name:

    [project.entry-points."ordinalage.heads"]
    poisson = "ordinalage_poisson:PoissonHead"

Once it is installed, `--head poisson` works wherever a head is named (train, evaluate, export,
serve, distill, bakeoff grids). The groups and what an entry point names:

    ordinalage.heads      a `Head` subclass (models/head_base.py); the entry point's name is the head's
    ordinalage.backbones  a factory `factory(cfg: ModelConfig) -> Backbone` (models/backbones.py)
    ordinalage.readers    a reader `read(path, source, options) -> records` (data/sources.py)

Each registry calls `load_plugins(group, register, ...)` before it is read. The group's entry
points are loaded once per process; each one that loads is passed to `register(name, obj)`. A
plugin that cannot be used is left out and recorded as a `PluginProblem`, never raised: its module
fails to import, two installed packages declare the same name (neither is used), its name is a
built-in's (the built-in is used), or it is not what the group expects. Everything else keeps
working; `load_plugins(..., need=NAME)` raises `PluginError` (a `UsageError`, exit status 2 on the
command line) when NAME is a plugin that cannot be used, naming its package, entry point and why.
`ordinalage list heads|backbones|readers` shows what is registered and where it comes from.

Standard library only: no torch, no registry imported here; the registries pass their own `register`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from importlib import metadata

from ordinalage.errors import UsageError

GROUPS = {"heads": "ordinalage.heads", "backbones": "ordinalage.backbones", "readers": "ordinalage.readers"}
KINDS = {group: what[:-1] for what, group in GROUPS.items()}  # "ordinalage.heads" -> "head"
OPTIONS = {"ordinalage.heads": "model.head", "ordinalage.backbones": "model.backbone"}  # the config key naming one
GROUP_OF_KEY = {key: group for group, key in OPTIONS.items()}


@dataclass(frozen=True)
class Plugin:
    """One entry point: its group, name, value (`module:attr`) and the distribution declaring it."""

    group: str
    name: str
    value: str
    dist: str
    version: str

    @property
    def kind(self) -> str:
        return KINDS.get(self.group, self.group)

    @property
    def entry_point(self) -> str:
        return f"{self.name} = {self.value}"

    def where(self) -> str:
        """`package NAME VERSION, entry point NAME = module:attr`."""
        return f"package {self.dist or '?'} {self.version or '?'}, entry point {self.entry_point}"

    def source(self) -> str:
        """`plugin DIST VERSION (module:attr)`, as `ordinalage list` shows it."""
        return f"plugin {self.dist or '?'} {self.version or '?'} ({self.value})"


@dataclass(frozen=True)
class PluginProblem:
    """A plugin left out, and why. `kind`: import | duplicate | shadows | invalid | register."""

    plugin: Plugin
    kind: str
    reason: str

    @property
    def name(self) -> str:
        return self.plugin.name

    @property
    def blocks(self) -> bool:
        """True when the name is unusable because of it (a shadowing plugin leaves the built-in working)."""
        return self.kind != "shadows"

    def __str__(self) -> str:
        return f"{self.plugin.where()}: {self.reason}"


class PluginError(UsageError):
    """A command needs a plugin that cannot be used; the message names its package and entry point."""

    def __init__(self, group: str, name: str, problems: list[PluginProblem]) -> None:
        kind = KINDS.get(group, group)
        super().__init__(f"{kind} {name!r} is an installed plugin that cannot be used: "
                         + "; ".join(str(p) for p in problems), option=OPTIONS.get(group))
        self.group = group
        self.name = name
        self.problems = problems


@dataclass
class _Loaded:
    builtin: frozenset[str] = frozenset()
    plugins: dict[str, Plugin] = field(default_factory=dict)  # registered name -> its entry point
    problems: list[PluginProblem] = field(default_factory=list)


_LOADED: dict[str, _Loaded] = {}
_LOCK = threading.RLock()


def load_plugins(group: str, register: Callable[[str, object], None], *, builtin: Collection[str] = (),
                 need: str | None = None) -> list[PluginProblem]:
    """Load the entry points of `group` once per process and `register(name, obj)` each usable one.

    `builtin`: the names the registry holds already (a plugin of such a name is left out: built-ins
    win). `register` checks what it is given (a Head subclass, valid traits) and raises to refuse it.
    `need`: a name the caller is about to use: `PluginError` if it is a plugin that cannot be used
    (and not a built-in). Returns the group's problems (also on the calls that load nothing)."""
    with _LOCK:
        state = _LOADED.get(group)
        if state is None:  # stored first: a plugin that reads the registry while it loads sees a partial one
            state = _LOADED[group] = _Loaded(builtin=frozenset(builtin))
            _load(group, register, state)
    if need is not None:
        require_plugin(group, need)
    return list(state.problems)


def require_plugin(group: str, name: object) -> None:
    """`PluginError` when `name` is a plugin of `group` that cannot be used (and nothing of that name
    is registered); nothing otherwise, also for names no plugin declares."""
    state = _LOADED.get(group)
    if state is None or name in state.builtin or name in state.plugins:
        return
    blocking = [p for p in state.problems if p.name == name and p.blocks]
    if blocking:
        raise PluginError(group, str(name), blocking)


def _entry_points(group: str) -> list[Plugin]:
    """The group's entry points, each once (a distribution found twice on sys.path counts once)."""
    seen: set[tuple[str, str, str]] = set()
    out: list[Plugin] = []
    for ep in metadata.entry_points(group=group):
        dist = getattr(ep, "dist", None)
        plugin = Plugin(group, ep.name, ep.value, (dist.name if dist is not None else "") or "",
                        (dist.version if dist is not None else "") or "")
        key = (plugin.name, plugin.value, plugin.dist)
        if key not in seen:
            seen.add(key)
            out.append(plugin)
    return sorted(out, key=lambda p: (p.name, p.dist, p.value))


def _load(group: str, register: Callable[[str, object], None], state: _Loaded) -> None:
    kind = KINDS.get(group, group)
    by_name: dict[str, list[Plugin]] = {}
    for plugin in _entry_points(group):
        by_name.setdefault(plugin.name, []).append(plugin)
    for name, plugins in by_name.items():
        if len(plugins) > 1:
            for p in plugins:
                others = ", ".join(o.where() for o in plugins if o is not p)
                state.problems.append(PluginProblem(p, "duplicate", f"another installed plugin declares {kind} "
                                                    f"{name!r} too ({others}); neither is used: uninstall one"))
            continue
        (plugin,) = plugins
        if name in state.builtin:
            state.problems.append(PluginProblem(plugin, "shadows", f"{name!r} is a built-in {kind}'s name; the "
                                                f"built-in {kind} is used: rename the entry point"))
            continue
        problem = _load_one(plugin, register)
        if problem is None:
            state.plugins[name] = plugin
        else:
            state.problems.append(problem)


def _load_one(plugin: Plugin, register: Callable[[str, object], None]) -> PluginProblem | None:
    try:
        obj = metadata.EntryPoint(plugin.name, plugin.value, plugin.group).load()
    except (Exception, SystemExit) as exc:  # a plugin's import error must not stop the command
        return PluginProblem(plugin, "import", f"cannot import it: {type(exc).__name__}: {exc}")
    if not callable(obj):  # a class or a function, in every group
        return PluginProblem(plugin, "invalid", f"{plugin.value} is not callable")
    try:
        register(plugin.name, obj)
    except Exception as exc:
        return PluginProblem(plugin, "register", f"cannot register it: {type(exc).__name__}: {exc}")
    return None


def plugin_of(group: str, name: str) -> Plugin | None:
    """The entry point that registered `name` in `group`, or None (a built-in, or not loaded yet)."""
    state = _LOADED.get(group)
    return state.plugins.get(name) if state else None


def plugin_problems(group: str) -> list[PluginProblem]:
    """The problems recorded when `group` was loaded (none before it is)."""
    state = _LOADED.get(group)
    return list(state.problems) if state else []


def plugin_note(key: str, name: object) -> str:
    """For an "unknown value" message of config key (or group) `key`: "; " and why the installed
    plugin `name` cannot be used, or "" when no plugin of that name failed."""
    group = GROUP_OF_KEY.get(key, key)
    problems = [p for p in plugin_problems(group) if p.name == name and p.blocks]
    return f"; {PluginError(group, str(name), problems)}" if problems else ""


def reset_plugins(group: str | None = None) -> None:
    """Forget what was loaded (for tests; the registries keep what was registered into them)."""
    with _LOCK:
        if group is None:
            _LOADED.clear()
        else:
            _LOADED.pop(group, None)
