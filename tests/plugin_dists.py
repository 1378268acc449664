"""Installed distributions for plugin tests, without pip or a network: a `NAME-VERSION.dist-info`
folder (METADATA, entry_points.txt) and the plugin's modules side by side in one folder. With that
folder on sys.path (or PYTHONPATH for a subprocess), `importlib.metadata` finds the distribution
and its entry points as it finds a pip-installed one."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "plugin_head"

BROKEN_HEAD = "import not_installed_dependency_xyz  # noqa: F401\n"  # fails on import, as a missing dependency does

VALID_HEAD = '''
import torch
from torch import nn

from ordinalage.heads import Decoded, Head


class TinyHead(Head):
    """A softmax over the labels (a copy of the class head, for registry tests)."""

    title = "tiny: a test head"
    description = "A softmax over the labels."

    def __init__(self, cfg, in_features, groups):
        super().__init__(cfg, in_features, groups)
        self.fc = nn.Linear(in_features, self.num_classes)

    def forward(self, features):
        return self.fc(features)

    def _loss(self, logits, labels, age, w):
        return (nn.functional.cross_entropy(logits, labels, reduction="none") * w).mean()

    def _decode(self, logits):
        p = logits.softmax(1)
        age = self.age_from(p)
        return Decoded(self.group_of_age(age), age, self.years_to_groups(p), None, p)
'''


BACKBONE = '''
from torch import nn

from ordinalage.models.backbones import Backbone
from ordinalage.models.input_spec import InputSpec


class TinyNet(Backbone):
    def __init__(self, size=32):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                 nn.Flatten())
        self.out_features = 8
        self.input_spec = InputSpec(size)

    def forward(self, x):
        return self.net(x)


def tiny_net(cfg):
    """A one-convolution network (a test backbone)."""
    return TinyNet()
'''

READER = '''
from pathlib import Path

from ordinalage.data.records import Record


def read_ages(path, source, options):
    """Images named AGE_anything.jpg in one folder (a test reader)."""
    return [Record(str(p), float(p.name.split("_")[0]), None, source, {}) for p in sorted(Path(path).glob("*.jpg"))]
'''


def install(root: Path, dist: str, entry_points: dict[str, dict[str, str]], modules: dict[str, str] | None = None,
            version: str = "0.1") -> Path:
    """Write distribution `dist` into `root`: its dist-info folder (entry points by group: {name: value})
    and `modules` ({module name: source}) as top-level modules. Returns `root`."""
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n", encoding="utf-8")
    lines = []
    for group, names in entry_points.items():
        lines += [f"[{group}]", *(f"{name} = {value}" for name, value in names.items()), ""]
    (info / "entry_points.txt").write_text("\n".join(lines), encoding="utf-8")
    for module, source in (modules or {}).items():
        (root / f"{module}.py").write_text(source, encoding="utf-8")
    return root


def install_example(root: Path) -> Path:
    """The worked example of docs/examples/plugin_head (ordinalage-poisson: the `poisson` head), as
    `pip install docs/examples/plugin_head` would install it."""
    import tomllib

    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    modules = {path.stem: path.read_text(encoding="utf-8") for path in EXAMPLE.glob("*.py")}
    return install(root, project["name"], project["entry-points"], modules, version=project["version"])


@contextmanager
def plugin_site(root: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """`root` on sys.path, to install distributions into; the plugin caches and the head, backbone
    and reader registries are as before afterwards (a plugin registered in this process is gone)."""
    from ordinalage.data.sources import READERS
    from ordinalage.models.backbones import BACKBONE_INFO, BACKBONES
    from ordinalage.models.heads import HEADS
    from ordinalage.plugins import reset_plugins

    registries: list[dict] = [HEADS, BACKBONES, BACKBONE_INFO, READERS]
    saved = [dict(r) for r in registries]
    root.mkdir(parents=True, exist_ok=True)
    monkeypatch.syspath_prepend(str(root))
    reset_plugins()
    try:
        yield root
    finally:
        reset_plugins()
        for registry, before in zip(registries, saved, strict=True):
            registry.clear()
            registry.update(before)
