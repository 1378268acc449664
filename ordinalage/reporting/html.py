"""The HTML report's page: blocks of a section (what the template draws), images as data URIs, the
small file readers, and the Jinja2 page (autoescaped, templates/report.html.j2).

CSS inline, every image a base64 `data:image/png` URI drawn by the package's own matplotlib plots (in
memory or a temporary folder), no script, font or image from the network, so the page opens from
disk anywhere. The sections themselves: `html_run` (one run) and `html_compare` (several runs, a
bake-off); `evaluation.reports.write_report` measures what they show and writes the page.
"""

from __future__ import annotations

import base64
import io
import json
import math
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

from ordinalage.errors import UsageError
from ordinalage.reporting.card import read_config
from ordinalage.version import __version__

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# section titles (the page's h2 headings; tests look for them)
OVERVIEW = "Overview"
TEST_METRICS = "Test metrics"
PER_GROUP = "per true age group: precision, recall and F1 of the group, MAE in years"
CONFUSION = "Confusion matrices"
ERROR_BY_AGE = "Error by age"
RELIABILITY = "Reliability"
PRIOR = "Prior correction"
INTERVALS = "Age intervals"
THRESHOLDS = "Age thresholds"
BREAKDOWN = "Breakdown by attribute"
DATA = "Data"
TRAINING = "Training curves"
BUDGET = "Time budget"
CONFIG = "Configuration"
NOT_EVALUATED = "Not evaluated"
COMPARE = "Runs compared"
PAIRED = "Paired differences"
METHODS = "Methods"
VERDICTS = "Paired differences and verdicts"
RANKS = "Ranks"
MAE_BY_GROUP = "MAE by age group"
CELLS = "Cells"
MISSING = "Missing cells"


# ---------------------------------------------------------------------------------------------
# blocks of a section (what the template draws)


def text(value: str) -> dict[str, Any]:
    return {"kind": "p", "text": value}


def note(value: str) -> dict[str, Any]:
    return {"kind": "note", "text": value}


def pre(value: str) -> dict[str, Any]:
    return {"kind": "pre", "text": value}


def kv(items: Sequence[tuple[str, Any]]) -> dict[str, Any]:
    return {"kind": "kv", "items": [(k, "-" if v is None else str(v)) for k, v in items]}


_NUMERIC = re.compile(r"^[-+]?(\d[\d.,/]*(e[-+]?\d+)?%?|nan|inf)( ?(±|\[)[-+\d., \]±]*)?$|^-$|^\[[-+\d., ]+\]$")


def table(columns: Sequence[str], rows: Sequence[Sequence[Any]], caption: str | None = None) -> dict[str, Any]:
    """Cells are text, or {"text", "best": True} to mark the best value of a column. Columns whose
    cells are all numbers (with their intervals) are right-aligned."""
    body = [[{"text": str(c.get("text", "-")), "best": bool(c.get("best"))} if isinstance(c, dict)
             else {"text": "-" if c is None else str(c), "best": False} for c in r] for r in rows]
    numeric = [bool(body) and all(_NUMERIC.match(r[j]["text"].strip()) for r in body if j < len(r))
               for j in range(len(columns))]
    return {"kind": "table", "columns": list(columns), "caption": caption, "numeric": numeric, "rows": body}


def image(uri: str | None, alt: str, caption: str | None = None) -> dict[str, Any]:
    return {"kind": "img", "src": uri or "", "alt": alt, "caption": caption}


def figures(*images: dict[str, Any] | None) -> dict[str, Any]:
    """Images side by side (wrapping on a narrow window)."""
    return {"kind": "figs", "images": [i for i in images if i is not None]}


def headline(items: Sequence[tuple[str, str, str | None]]) -> dict[str, Any]:
    """A row of key numbers: (label, value, detail)."""
    return {"kind": "headline", "items": [{"label": a, "value": b, "detail": c or ""} for a, b, c in items]}


def section(title: str, *blocks: dict[str, Any] | None) -> dict[str, Any]:
    anchor = "".join(ch if ch.isalnum() else "-" for ch in title.lower()).strip("-")
    return {"title": title, "id": anchor, "blocks": [b for b in blocks if b is not None]}


# ---------------------------------------------------------------------------------------------
# images as data URIs


def png_uri(data: bytes) -> str:
    if not data.startswith(PNG_MAGIC):
        raise ValueError("not a PNG")
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def figure_uri(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return png_uri(buf.getvalue())


def drawn_uri(draw: Callable[[Path], Any]) -> str | None:
    """Run a plot function that writes a PNG file (`draw(path)`) in a temporary folder; its data URI
    (None when it drew nothing)."""
    with tempfile.TemporaryDirectory(prefix="ordinalage-report-") as tmp:
        path = Path(tmp) / "plot.png"
        draw(path)
        return png_uri(path.read_bytes()) if path.is_file() else None


def file_uri(path: Path) -> str | None:
    try:
        return png_uri(path.read_bytes())
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------
# small readers


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a JSON object")
    return data


def csv_rows(path: Path) -> list[dict[str, str]]:
    import csv

    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def as_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def find_eval_dir(run: Path) -> Path | None:
    """The run's test evaluation folder: eval-test-tta first when the run evaluates with TTA, else
    eval-test first; None when neither holds a metrics.json."""
    tta = bool((read_config(run).get("train") or {}).get("eval_tta"))
    order = ("eval-test-tta", "eval-test") if tta else ("eval-test", "eval-test-tta")
    for name in order:
        if (run / name / "metrics.json").is_file():
            return run / name
    return None


def target_kind(path: Path) -> str:
    """'bakeoff' (bakeoff.json) or 'run' (config.yaml); a UsageError naming what is missing."""
    if not path.exists():
        raise UsageError(f"{path}: no such folder")
    if not path.is_dir():
        raise UsageError(f"{path}: not a folder (give a run folder or a bake-off folder)")
    if (path / "bakeoff.json").is_file():
        return "bakeoff"
    if (path / "config.yaml").is_file():
        return "run"
    raise UsageError(f"{path}: neither a run folder (no config.yaml) nor a bake-off folder (no bakeoff.json)")


# ---------------------------------------------------------------------------------------------
# a run


# ---------------------------------------------------------------------------------------------
# several runs


# ---------------------------------------------------------------------------------------------
# a bake-off (bakeoff.json, plain JSON)


# ---------------------------------------------------------------------------------------------
# rendering


def render(title: str, subtitle: str, sections: Sequence[Mapping[str, Any]]) -> str:
    """The HTML page (Jinja2, autoescape on) of `sections`."""
    import jinja2

    source = resources.files("ordinalage.reporting").joinpath("templates/report.html.j2").read_text(encoding="utf-8")
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    return env.from_string(source).render(title=title, subtitle=subtitle, sections=sections, version=__version__,
                                          generated=datetime.now().strftime("%Y-%m-%d %H:%M"))


