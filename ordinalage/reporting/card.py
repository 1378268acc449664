"""Model cards of run folders as the server shows them, and the pieces the evaluation's card shares.

`evaluate` writes the full card (`ordinalage.evaluation.model_card`, the sections of Mitchell et
al., *Model Cards for Model Reporting*, FAT* 2019) as `MODEL_CARD.md` into its output folder. A
served checkpoint shows the card of its run's latest `eval-test*` folder (`find_card`), or, for a
run never evaluated, a short card made here from the run's config and summary that says so
(`unevaluated_card`). `model_details` (the "Model details" section) is shared by both, and
`markdown_to_html` renders either for a browser: headings, lists, tables, block quotes and
paragraphs with `code` and **bold**, everything else escaped (no raw HTML passes through).

Only the run folder's plain files are read (config.yaml, summary.json, train_prior.json): no torch.
What the head and backbone are (their titles, input size, ...) is handed in by the caller, which may
look at the model registries: `head` is the head's `models.heads.HeadTraits`, `backbone` the
backbone's `models.backbones.BackboneInfo` (None: unknown, e.g. a plugin not installed here).
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

import yaml

from ordinalage.groups import AgeGroups
from ordinalage.reporting.formatting import fmt
from ordinalage.reporting.hub_metadata import strip_front_matter
from ordinalage.runs.rundir import MEMBER_PREFIX, member_dirs
from ordinalage.version import __version__

CARD_NAME = "MODEL_CARD.md"

# ---------------------------------------------------------------------------------------------
# run folder files (tolerant: describing a model never fails)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read_config(run: Path) -> dict[str, Any]:
    """config.yaml of a run folder as a plain dict ({} when missing or unreadable)."""
    try:
        cfg = yaml.safe_load((Path(run) / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return cfg if isinstance(cfg, dict) else {}


def first_member(run: Path) -> Path:
    """The folder that holds split.csv, metrics.csv and train_prior.json: the run, or an ensemble's
    first member."""
    members = member_dirs(run)
    return members[0] if members else Path(run)


def training_age_mix(run: Path, groups: str | None = None) -> list[dict[str, Any]] | None:
    """The effective training mix (train_prior.json: after caps, sampling and class weights) summed
    into age groups: [{label, share}]; None when the run has no train_prior.json."""
    prior = _read_json(first_member(run) / "train_prior.json")
    ages, weights = prior.get("ages"), prior.get("weight")
    if not isinstance(ages, list) or not isinstance(weights, list) or len(ages) != len(weights) or not ages:
        return None
    total = float(sum(weights)) or 1.0
    meta = prior.get("meta") or {}
    try:
        spec = AgeGroups.parse(groups)
    except Exception:  # noqa: BLE001 - an odd groups string: show no mix rather than fail
        return None
    if meta.get("target") == "group" and len(weights) == len(spec):
        return [{"label": lab, "share": float(w) / total} for lab, w in zip(spec.labels, weights, strict=True)]
    idx = spec.clip_indices([float(a) for a in ages])
    shares = [0.0] * len(spec)
    for i, w in zip(idx, weights, strict=True):
        shares[int(i)] += float(w) / total
    return [{"label": lab, "share": s} for lab, s in zip(spec.labels, shares, strict=True)]


# ---------------------------------------------------------------------------------------------
# the card


def _sources(cfg: dict[str, Any]) -> list[str]:
    sources = (cfg.get("data") or {}).get("sources") or []
    return [str(s) for s in sources] if isinstance(sources, list) else [str(sources)]


def model_details(run: Path, checkpoint: str | Path | None = None, today: date | None = None, *,
                  head: Any = None, backbone: Any = None) -> list[str]:
    """The "Model details" section (Markdown lines) of a run folder (an ensemble's folder too).
    `head`/`backbone`: their traits (see the module docstring), None when unknown."""
    run = Path(run)
    cfg = read_config(run)
    summary = _read_json(run / "summary.json")
    member = first_member(run)
    member_summary = _read_json(member / "summary.json") if member != run else summary
    data, model, train = cfg.get("data") or {}, cfg.get("model") or {}, cfg.get("train") or {}
    options = [f"{k} {model[k]}" for k in getattr(backbone, "options", ()) if model.get(k) is not None]
    width = f" ({', '.join(options)})" if options else ""
    size = data.get("image_size") or getattr(backbone, "input_size", None) or "-"
    target = model.get("target")
    labels = (f"single years 0-{model.get('max_age')}" if target == "age" else f"the age groups {data.get('groups')}")
    lines = ["## Model details", ""]
    lines.append(f"- **Task**: facial age estimation from an aligned face crop: an age in years and an age group "
                 f"({data.get('groups', '-')})")
    lines.append(f"- **Head**: `{model.get('head')}`, {getattr(head, 'title', 'a registered head')}; trained on {labels}; "
                 f"decoder `{model.get('decode', 'auto')}`")
    lines.append(f"- **Backbone**: `{model.get('backbone')}`{width}, pretrained weights: {model.get('weights') or 'none'}"
                 + (f", initialised from `{model.get('init')}`" if model.get("init") else ""))
    lines.append(f"- **Input**: {size} x {size} px RGB face crop "
                 f"(geometry `{data.get('geometry', 'auto')}`)")
    members = member_dirs(run)
    if members:
        lines.append(f"- **Ensemble**: {len(members)} models with their own seeds, their age distributions averaged")
    report = member_summary.get("data_report") or {}
    counts = report.get("after") or report.get("before") or {}
    split_counts = ", ".join(f"{k} {sum(v)}" for k, v in counts.items() if isinstance(v, list))
    lines.append(f"- **Training data**: {', '.join(f'`{s}`' for s in _sources(cfg)) or '-'}; protocol "
                 f"`{data.get('protocol', 'random')}`, split seed {data.get('split_seed', '-')}, validation "
                 f"{data.get('val_fraction', '-')}, test {data.get('test_fraction', '-')}"
                 + (f"; images: {split_counts}" if split_counts else "")
                 + f"; sampling `{data.get('sampling', 'none')}`")
    mix = training_age_mix(run, data.get("groups"))
    if mix:
        lines.append("- **Training age mix** (the effective mix the model learnt, after sampling and weights; "
                     "train_prior.json): " + ", ".join(f"{m['label']} {m['share']:.1%}" for m in mix))
    epochs = summary.get("epochs_done", member_summary.get("epochs_done"))
    if isinstance(epochs, list):  # an ensemble: the epochs of each member
        trained = [f"{', '.join(str(e) for e in epochs)} epochs (one number per member)"]
    else:
        trained = [f"{epochs} epoch(s)" if epochs is not None else "epochs unknown"]
    if member_summary.get("best_epoch") is not None and not members:
        trained.append(f"best epoch {member_summary['best_epoch']} by {member_summary.get('monitor', 'val_mae')} "
                       f"{fmt(member_summary.get('best_value'))}")
    trained.append(f"optimizer {train.get('optimizer', '-')}, lr {train.get('lr', '-')}, batch {train.get('batch_size', '-')}, "
                   f"scheduler {train.get('scheduler', '-')}")
    if train.get("time_budget_min"):
        trained.append(f"time budget {train['time_budget_min']} min")
    if summary.get("finished") is False:
        trained.append("**not finished**")
    lines.append(f"- **Training**: {'; '.join(trained)}; seed {train.get('seed', '-')}")
    lines.append(f"- **Run folder**: `{run}`" + (f"; checkpoint `{checkpoint}`" if checkpoint and not members else ""))
    lines.append(f"- **Card**: written by ordinalage {__version__} on {(today or date.today()).isoformat()}")
    lines.append("")
    return lines


INTENDED_USE = [
    "## Intended use",
    "",
    "- Research and teaching: comparing age-group classification, ordinal regression and regression "
    "on the same faces, and measuring how each errs.",
    "- Aggregate statistics over many faces (an audience's age mix), where single errors average out; "
    "with prior correction when the population's age mix differs from the training mix.",
    "- A first estimate that a person reviews, with the age interval and the error rates of the age "
    "threshold in question measured on data like the one it is used on.",
    "",
    "## Out-of-scope use",
    "",
    "- **Not the sole basis for legal or age-restricted decisions** (sale of alcohol or tobacco, gambling, "
    "adult content, age assessment of migrants, criminal responsibility, school placement): a single "
    "estimate can be off by years, and by more for some groups of people than for others.",
    "- Not for identifying or tracking people, and not for inferring anything but apparent age.",
    "- Not on faces unlike the training data (other cameras, crops, poses, lighting, occlusions, "
    "populations, ages outside the training range) without measuring it there first.",
    "- Not for children's ages at a resolution finer than the error measured for that age group.",
    "",
]


def unevaluated_card(run: Path, checkpoint: str | Path | None = None, *, head: Any = None,
                     backbone: Any = None) -> str:
    """A card for a run that has no evaluated test split: its details, intended use, and no metrics
    (`head`, `backbone`: as for `model_details`)."""
    run = Path(run)
    lines = [f"# Model card: {run.name}", "",
             "> **Not evaluated.** This run has no MODEL_CARD.md from an evaluation of its test split, so "
             "this card holds no metrics and makes no claim about its error. Make the full card with: "
             f"`ordinalage evaluate {run}` (it writes eval-test/MODEL_CARD.md).", ""]
    summary = _read_json(run / "summary.json")
    test = summary.get("test")
    if isinstance(test, dict) and test.get("mae") is not None:
        lines += ["> summary.json records a test MAE of "
                  f"{fmt(test.get('mae'), 2)} years on {test.get('n', '?')} images, without confidence "
                  "intervals or a breakdown.", ""]
    lines += model_details(run, checkpoint, head=head, backbone=backbone)
    lines += INTENDED_USE
    return "\n".join(lines) + "\n"


def find_card(folders: Sequence[Path]) -> Path | None:
    """The newest MODEL_CARD.md among the `eval-test*` folders of the first folder that has one (or
    beside the weights, as a shipped model keeps it)."""
    for folder in folders:
        found = [p for p in Path(folder).glob(f"eval-test*/{CARD_NAME}") if p.is_file()]
        found = found or [p for p in [Path(folder) / CARD_NAME] if p.is_file()]
        if found:
            return max(found, key=lambda p: (p.stat().st_mtime, str(p)))
    return None


def card_for(run: Path, checkpoint: str | Path | None = None, ensemble: bool = False, *, head: Any = None,
             backbone: Any = None) -> tuple[str, Path | None]:
    """(Markdown, the file it came from or None) for a served model: its run's latest evaluated card,
    else `unevaluated_card` (`head`, `backbone`: as for `model_details`). `ensemble`: `run` is a member;
    the ensemble's own folder is looked at first."""
    run = Path(run)
    folders = [run.parent, run] if ensemble and run.name.startswith(MEMBER_PREFIX) else [run]
    path = find_card(folders)
    if path is not None:
        try:
            return path.read_text(encoding="utf-8"), path
        except OSError:
            pass
    return unevaluated_card(folders[0], checkpoint, head=head, backbone=backbone), None


# ---------------------------------------------------------------------------------------------
# Markdown -> HTML (the subset the cards use)

_INLINE = re.compile(r"`([^`]+)`|\*\*([^*]+)\*\*")
_TABLE_RULE = re.compile(r"^\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?$")
_LIST = re.compile(r"^(\s*)([-*]|\d+\.)\s+(.*)$")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*$")


def _inline(text: str) -> str:
    out, pos = [], 0
    for m in _INLINE.finditer(text):
        out.append(html.escape(text[pos:m.start()]))
        out.append(f"<code>{html.escape(m.group(1))}</code>" if m.group(1) is not None
                   else f"<strong>{html.escape(m.group(2))}</strong>")
        pos = m.end()
    out.append(html.escape(text[pos:]))
    return "".join(out)


def _cells(line: str) -> list[str]:
    line = line.strip()
    if line.startswith("|"):
        line = line[1:]
    if line.endswith("|"):
        line = line[:-1]
    return [c.strip() for c in line.split("|")]


def markdown_body(md: str) -> str:
    """The HTML of a Markdown text: headings, lists (- * 1.), tables, > quotes, paragraphs (a card's
    metadata block left out)."""
    lines = strip_front_matter(md).splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        m = _HEADING.match(line)
        if m:
            level = len(m.group(1))
            out.append(f"<h{level}>{_inline(m.group(2))}</h{level}>")
            i += 1
            continue
        if line.lstrip().startswith("|") and i + 1 < len(lines) and _TABLE_RULE.match(lines[i + 1].strip()):
            head = _cells(line)
            rows = []
            i += 2
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                rows.append(_cells(lines[i]))
                i += 1
            out.append("<table><thead><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head) + "</tr></thead><tbody>"
                       + "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in rows)
                       + "</tbody></table>")
            continue
        if _LIST.match(line):
            ordered = _LIST.match(line).group(2)[0].isdigit()  # type: ignore[union-attr]
            items: list[str] = []
            while i < len(lines) and lines[i].strip():
                lm = _LIST.match(lines[i])
                if lm:
                    items.append(lm.group(3))
                elif items:  # a continuation line of the item above
                    items[-1] += " " + lines[i].strip()
                i += 1
            tag = "ol" if ordered else "ul"
            out.append(f"<{tag}>" + "".join(f"<li>{_inline(t)}</li>" for t in items) + f"</{tag}>")
            continue
        if line.lstrip().startswith(">"):
            text = []
            while i < len(lines) and lines[i].lstrip().startswith(">"):
                text.append(lines[i].lstrip()[1:].strip())
                i += 1
            out.append(f"<blockquote><p>{_inline(' '.join(text))}</p></blockquote>")
            continue
        text = []
        while i < len(lines) and lines[i].strip() and not _HEADING.match(lines[i]) and not _LIST.match(lines[i]) \
                and not lines[i].lstrip().startswith(("|", ">")):
            text.append(lines[i].strip())
            i += 1
        out.append(f"<p>{_inline(' '.join(text))}</p>")
    return "\n".join(out)


CARD_CSS = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 1.5rem auto; padding: 0 1rem; color: #222;
  line-height: 1.45; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.2rem; margin-top: 1.6rem; border-bottom: 1px solid #ddd; }
h3 { font-size: 1rem; }
table { border-collapse: collapse; margin: .5rem 0 1rem; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ccc; padding: .2rem .5rem; text-align: left; }
th { background: #f0f0ee; }
code { background: #f3f3f3; padding: 0 .2rem; border-radius: 3px; }
blockquote { margin: .5rem 0; padding: .3rem .8rem; border-left: 4px solid #d9a400; background: #fff8e0; }
"""


def markdown_to_html(md: str, title: str = "Model card") -> str:
    """A whole self-contained HTML page (inline CSS, no script) of a Markdown card."""
    return ("<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{CARD_CSS}</style>\n</head>\n<body>\n"
            f"{markdown_body(md)}\n</body>\n</html>\n")
