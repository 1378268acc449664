"""A head is one class: its traits (title, description, `auto` decoder, soft labels, what its output
means for the posterior, distillation) are declared on it, and no module outside the heads' own
files tests a head's name. The same for backbones (input size, weight sources) and data readers
(spec prefix, what their records carry). Run folders written before the traits existed still load,
decode as before, evaluate, predict and show a card."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from ordinalage.config import Config, ModelConfig, config_from_dict, to_dict
from ordinalage.errors import UsageError
from ordinalage.groups import AgeGroups
from ordinalage.models.backbones import BACKBONE_INFO, BACKBONES, WEIGHT_NAMES, backbone_info, build_backbone
from ordinalage.models.head_base import DECODERS, OUTPUTS, trait_problems
from ordinalage.models.heads import HEADS, ClassHead, Head, HeadTraits, add_head, build_head, head_traits
from ordinalage.models.model import build_model, model_traits

pytestmark = pytest.mark.usefixtures("one_thread")

PACKAGE = Path(__file__).resolve().parents[1] / "ordinalage"
DOCS = PACKAGE.parent / "docs"
#: the files that define heads: the only ones that may compare a string with a head's name
HEAD_FILES = {"models/head_base.py", "models/classic_heads.py", "models/field_heads.py"}
TRAITS = ("title", "description", "default_decoder", "soft_labels", "output", "distill_student")

#: what `model.decode: auto` meant for every head before the traits existed (config.age_decoder)
AUTO_DECODER_BEFORE = {"class": "mean", "coral": "median", "corn": "median", "regression": "mean",
                       "mean_variance": "mean", "dldl_v2": "mean", "sord": "mean", "unimodal": "mode",
                       "orcnn": "median"}


# --------------------------------------------------------------------------------------------- (a) no name tests


def _strings(node: ast.AST) -> list[str]:
    """The string constants a comparison operand stands for: "x", or the items of ("x", "y") / ["x"] / {"x"}."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
    return []


def head_name_tests(source: str, names: set[str]) -> list[tuple[int, str]]:
    """(line, code) of every `==`/`!=`/`in`/`not in` comparison with a string constant (or a literal
    tuple/list/set of them) that is a head name, and of every dict literal keyed by two or more head
    names (a table per head, like a title lookup). Defaults, assignments and docstrings are not tests."""
    found = []
    for node in ast.walk(ast.parse(source)):
        hit = False
        if isinstance(node, ast.Compare) and any(isinstance(op, (ast.Eq, ast.NotEq, ast.In, ast.NotIn))
                                                 for op in node.ops):
            hit = any(s in names for operand in [node.left, *node.comparators] for s in _strings(operand))
        elif isinstance(node, ast.Dict):
            keys = [k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)]
            hit = len(set(keys) & names) >= 2
        if hit:
            found.append((node.lineno, ast.get_source_segment(source, node) or ""))
    return found


def test_the_name_test_finder_sees_name_tests_and_ignores_defaults() -> None:
    names = {"class", "coral", "regression"}
    code = '''
"""Docstring: head == "regression" is fine here."""
head: str = "coral"
if cfg.head == "regression":
    pass
ok = head in ("class", "sord")
no = "corn" != head
TITLES = {"class": "a", "coral": "b"}
parser.add_argument("--head", help='e.g. "coral"')
kind = "class" if x else "other"
'''
    assert [line for line, _ in head_name_tests(code, names)] == [4, 6, 8]
    assert head_name_tests('x = {"class": 1, "other": 2}\nif a == "coralx": pass\n', names) == []


def test_no_module_outside_the_heads_tests_a_head_name() -> None:
    names = set(HEADS)
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel in HEAD_FILES:
            continue
        for line, code in head_name_tests(path.read_text(encoding="utf-8"), names):
            found.append(f"ordinalage/{rel}:{line}: {code.splitlines()[0]}")
    assert found == [], ("modules that test a head's name (declare a trait on the head instead, "
                         "models/head_base.py):\n" + "\n".join(found))


def test_no_module_outside_the_backbones_tests_a_backbone_name() -> None:
    names = set(BACKBONES)
    own = {"models/backbones.py", "models/backbone_base.py", "models/weights.py"}
    found = [f"ordinalage/{p.relative_to(PACKAGE).as_posix()}:{line}: {code}"
             for p in sorted(PACKAGE.rglob("*.py")) if p.relative_to(PACKAGE).as_posix() not in own
             for line, code in head_name_tests(p.read_text(encoding="utf-8"), names)]
    assert found == []


# --------------------------------------------------------------------------------------------- (b) the traits


@pytest.mark.parametrize("name", list(HEADS))
def test_every_head_declares_every_trait_with_a_valid_value(name: str) -> None:
    cls = HEADS[name]
    assert cls.name == name and trait_problems(cls) == []
    undeclared = [t for t in TRAITS if t not in vars(cls)]
    assert undeclared == [], f"{cls.__qualname__} inherits {undeclared}: declare them on the class"
    t = head_traits(name)
    assert isinstance(t, HeadTraits) and (t.name, t.title, t.output) == (name, cls.title, cls.output)
    assert t.default_decoder in DECODERS and t.output in OUTPUTS
    assert t.prior_correction == (t.output != "age")
    assert len(t.title) <= 120 and t.description.endswith(".")


def test_titles_and_descriptions_are_distinct() -> None:
    titles = [cls.title for cls in HEADS.values()]
    descriptions = [cls.description for cls in HEADS.values()]
    assert len(set(titles)) == len(titles) and len(set(descriptions)) == len(descriptions)


def test_traits_match_what_the_heads_do() -> None:
    """soft_labels: the head accepts label_sigma; distill_student: its logits are a softmax over the
    years; output ranks: it decodes rank probabilities; output age: the distribution is nominal."""
    groups = AgeGroups.parse(None)
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    for name, cls in HEADS.items():
        if cls.soft_labels:
            build_head(ModelConfig(head=name, label_sigma=2.0, max_age=20), 4, groups)
        else:
            with pytest.raises(UsageError, match="model.label_sigma"):
                build_head(ModelConfig(head=name, label_sigma=2.0, max_age=20), 4, groups)
        head = build_head(ModelConfig(head=name, max_age=20), 4, groups)
        logits = head(x)
        dec = head.decode(logits)
        assert (dec.rank_proba is not None) == (cls.output == "ranks"), name
        if cls.distill_student:
            assert logits.shape == (3, 21) and isinstance(head, ClassHead), name
            torch.testing.assert_close(dec.label_proba, logits.softmax(1))


def test_auto_decodes_as_before_for_every_head() -> None:
    assert {name: head_traits(name).decoder("auto") for name in HEADS} == AUTO_DECODER_BEFORE
    assert head_traits("unimodal").decoder("mean") == "mean"
    with pytest.raises(UsageError, match="model.decode"):
        head_traits("class").decoder("average")
    with pytest.raises(UsageError, match="model.head.*'nope'"):
        head_traits("nope")


def test_a_head_added_with_bad_traits_or_a_taken_name_is_refused() -> None:
    class Bad(Head):
        title = "a bad head"
        description = "Decodes by vibes."
        default_decoder = "vibes"
        output = "age"

    with pytest.raises(ValueError, match="default_decoder"):
        add_head("bad_head_for_test", Bad)
    with pytest.raises(ValueError, match="registered twice"):
        add_head("class", ClassHead)
    with pytest.raises(ValueError, match="not a subclass"):
        add_head("not_a_head_for_test", int)  # type: ignore[arg-type]
    assert "bad_head_for_test" not in HEADS and "not_a_head_for_test" not in HEADS


def test_distillation_students_are_checked_by_the_trait() -> None:
    from ordinalage.training.choices import validate

    for name, cls in HEADS.items():
        cfg = config_from_dict({**to_dict(Config()), "model": {**to_dict(Config())["model"], "head": name},
                                "train": {**to_dict(Config())["train"], "distill_from": "teacher"}})
        if cls.distill_student:
            validate(cfg)
        else:
            with pytest.raises(UsageError, match="model.head 'class'"):
                validate(cfg)


# --------------------------------------------------------------------------------------------- backbones, readers


def test_every_backbone_declares_its_input_size_and_weight_sources() -> None:
    assert set(BACKBONE_INFO) == set(BACKBONES)
    for name, info in BACKBONE_INFO.items():
        assert info.name == name and info.description
        assert isinstance(info.input_size, int) and info.input_size > 0
        assert set(info.weight_sources) <= set(WEIGHT_NAMES)
    assert backbone_info("scratch").input_size == 64 and backbone_info("resnet18").weight_sources == ("imagenet",)
    assert backbone_info("vgg16").weight_sources == ("vggface", "imagenet")
    assert backbone_info("timm:resnet18").input_size is None
    net = build_backbone(ModelConfig(backbone="scratch", width=4))
    assert net.input_spec.size == backbone_info("scratch").input_size
    for name in BACKBONE_INFO:
        for weights in set(WEIGHT_NAMES) - set(BACKBONE_INFO[name].weight_sources):
            with pytest.raises(UsageError, match=f"no '{weights}' weights for backbone '{name}'"):
                build_backbone(ModelConfig(backbone=name, weights=weights))


def test_a_backbone_or_reader_added_twice_or_badly_is_refused() -> None:
    from ordinalage.data.sources import READERS, add_reader
    from ordinalage.models.backbones import add_backbone

    with pytest.raises(ValueError, match="registered twice"):
        add_backbone("scratch", BACKBONES["scratch"])
    with pytest.raises(ValueError, match="unknown weight sources"):
        add_backbone("new_backbone_for_test", BACKBONES["scratch"], weight_sources=("laion",))
    with pytest.raises(ValueError, match="registered twice"):
        add_reader("utkface", READERS["utkface"].read)
    with pytest.raises(ValueError, match="lower-case"):
        add_reader("Bad Prefix", READERS["utkface"].read)
    assert "new_backbone_for_test" not in BACKBONES


def test_every_reader_declares_its_prefix_and_what_its_records_carry() -> None:
    from ordinalage.data.sources import READERS, reader_info

    for prefix, info in READERS.items():
        assert info.prefix == prefix and info.description and all(isinstance(c, str) for c in info.carries)
    assert reader_info("utkface").carries == ("gender", "race")
    assert reader_info("appa").options == {"target": ("apparent", "real")}
    with pytest.raises(UsageError, match="unknown"):
        reader_info("nope")


def test_a_registered_reader_reads_its_specs(tmp_path: Path) -> None:
    from ordinalage.data import sources
    from ordinalage.data.records import Record
    from ordinalage.data.sources import READERS, parse_spec, read_sources, register_reader

    (tmp_path / "a.jpg").write_bytes(b"")

    @register_reader("plain_test_reader", carries=("mood",), options={"mood": ("calm", "tense")})
    def read_plain(path: Path, source: str, options: dict[str, str]) -> list[Record]:
        """A test reader: one record per .jpg, age 30."""
        return [Record(str(p), 30.0, None, source, {"mood": options.get("mood", "calm")})
                for p in sorted(path.glob("*.jpg"))]

    try:
        assert READERS["plain_test_reader"].description == "A test reader: one record per .jpg, age 30."
        assert parse_spec(f"plain_test_reader:{tmp_path}") == ("plain_test_reader", str(tmp_path))
        records = read_sources([f"plain_test_reader:{tmp_path}?mood=tense"], Config().data)
        assert [(r.age, r.meta) for r in records] == [(30.0, {"mood": "tense"})]
        with pytest.raises(UsageError, match="mood="):
            read_sources([f"plain_test_reader:{tmp_path}?mood=odd"], Config().data)
    finally:
        del sources.READERS["plain_test_reader"]


# --------------------------------------------------------------------------------------------- docs/heads.md


def traits_table() -> str:
    """The table of docs/heads.md between the traits markers, from the registry."""
    rows = ["| head | title | `auto` decoder | soft labels (`label_sigma`) | output | distillation student |",
            "| --- | --- | --- | --- | --- | --- |"]
    for name in HEADS:
        t = head_traits(name)
        rows.append(f"| `{name}` | {t.title} | {t.default_decoder} | {'yes' if t.soft_labels else 'no'} | "
                    f"{t.output} | {'yes' if t.distill_student else 'no'} |")
    return "\n".join(rows)


def test_the_traits_table_in_docs_heads_md_is_the_registrys() -> None:
    text = (DOCS / "heads.md").read_text(encoding="utf-8")
    found = re.search(r"<!-- traits:start -->\n(.*?)\n<!-- traits:end -->", text, re.S)
    assert found is not None, "docs/heads.md: no <!-- traits:start --> ... <!-- traits:end --> table"
    assert found.group(1) == traits_table(), "docs/heads.md's traits table is stale; paste:\n" + traits_table()


# --------------------------------------------------------------------------------------------- (c) old run folders

#: the model section of a config.yaml as the layout before the traits wrote it
OLD_MODEL_YAML = """\
backbone: scratch
weights: null
init: null
head: {head}
target: age
max_age: 70
regression_loss: l1
coral_importance: none
label_sigma: 0.0
decode: auto
dropout: 0.0
width: 4
"""


def _old_run(root: Path, head: str, groups: AgeGroups) -> Path:
    """A run folder (best.pt + config.yaml) whose config has the previous layout, untrained weights,
    a training prior when the head has a distribution."""
    from ordinalage.runs.checkpoint import FORMAT, VERSION, atomic_torch_save

    raw = to_dict(Config())
    raw["model"] = yaml.safe_load(OLD_MODEL_YAML.format(head=head))
    raw["data"] = {**raw["data"], "image_size": 32, "num_workers": 0, "groups": ",".join(groups.labels)}
    config = config_from_dict(raw)
    torch.manual_seed(0)
    model = build_model(config.model, groups)
    run = root / f"old-{head}"
    ck = {"format": FORMAT, "version": VERSION, "model": model.state_dict(), "epoch": 1, "step": 1,
          "config": raw, "groups": groups.labels, "reference": {"median_age": 30.0}}
    if head != "regression":
        ck["train_prior"] = np.full(71, 1 / 71).tolist()
    atomic_torch_save(ck, run / "best.pt")
    (run / "config.yaml").write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return run


@pytest.fixture(scope="module")
def faces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ordinalage.data.synth import write_synth

    folder = tmp_path_factory.mktemp("faces")
    write_synth(folder, 12, seed=3, size=40)
    return folder


@pytest.mark.parametrize("head", list(AUTO_DECODER_BEFORE))
def test_an_old_run_folder_loads_decodes_as_before_evaluates_predicts_and_shows_its_card(
        head: str, tmp_path: Path, faces: Path) -> None:
    import ordinalage
    from ordinalage.evaluation.evaluate import evaluate_run
    from ordinalage.inference.serve import estimator_card
    from ordinalage.runs.checkpoint import load_model

    groups = AgeGroups.parse("0-20,21-40,41+")
    run = _old_run(tmp_path, head, groups)
    loaded = load_model(run)
    assert loaded.decoder == AUTO_DECODER_BEFORE[head] == loaded.model.head.decoder
    assert loaded.head_traits == head_traits(head)
    prior = None if head == "regression" else "em"
    metrics = evaluate_run(run, data=[f"utkface:{faces}"], split="all", device="cpu", prior=prior, show=False,
                           out=tmp_path / "eval")
    assert metrics["n"] == 12 and np.isfinite(metrics["mae"])
    card = (tmp_path / "eval" / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert f"- **Head**: `{head}`, {HEADS[head].title};" in card
    assert "- **Backbone**: `scratch` (width 4)" in card and "- **Input**: 32 x 32 px" in card
    if head == "regression":
        assert "does not apply to the regression head" in card
        with pytest.raises(UsageError, match="the regression head gives one age"):
            evaluate_run(run, data=[f"utkface:{faces}"], split="all", device="cpu", prior="em", show=False,
                         out=tmp_path / "eval-em")
    est = ordinalage.load(run, device="cpu")
    image = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(next(faces.glob("*.jpg"))).convert("RGB"))
    (face,) = est.predict(image, detect=False)
    assert 0 <= face.age <= 70
    text, source = estimator_card(est)
    assert source is None and f"`{head}`, {HEADS[head].title}" in text


def test_model_traits_are_tolerant_of_unknown_names() -> None:
    head, backbone = model_traits({"head": "a_plugin_head", "backbone": "a_plugin_backbone"})
    assert head is None and backbone is None
    head, backbone = model_traits({"head": "coral", "backbone": "scratch"})
    assert head == head_traits("coral") and backbone == backbone_info("scratch")
    assert model_traits(None) == (None, None)


def test_a_plugin_object_may_carry_its_own_traits() -> None:
    """Entry points register with `add_X(name, obj)`: traits not given come from the object's attributes."""
    from ordinalage.data import sources
    from ordinalage.models import backbone_base
    from ordinalage.models.backbones import ScratchCNN, add_backbone

    class Small(ScratchCNN):
        """A scratch CNN at 48 px."""

        input_size = 48
        options = ("width",)

        def __init__(self, cfg: ModelConfig) -> None:
            super().__init__(cfg.width, cfg.dropout, size=48)

    def read(path: Path, source: str, options: dict[str, str]) -> list:
        return []

    read.carries = ("mood",)  # type: ignore[attr-defined]
    read.description = "moods"  # type: ignore[attr-defined]
    try:
        add_backbone("small_test_backbone", Small)
        info = backbone_info("small_test_backbone")
        assert (info.input_size, info.weight_sources, info.options, info.description) == \
            (48, (), ("width",), "A scratch CNN at 48 px.")
        sources.add_reader("mood_test_reader", read)
        assert (sources.READERS["mood_test_reader"].carries, sources.READERS["mood_test_reader"].description) == \
            (("mood",), "moods")
    finally:
        for registry in (backbone_base.BACKBONES, backbone_base.BACKBONE_INFO):
            registry.pop("small_test_backbone", None)
        sources.READERS.pop("mood_test_reader", None)
