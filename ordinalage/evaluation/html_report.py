"""`ordinalage report`: one self-contained HTML page of a run, several runs, or a bake-off.

The page is rendered with Jinja2 (autoescaped) from templates/report.html.j2: CSS inline, every
image a base64 `data:image/png` URI drawn by the package's own matplotlib plots (in memory or a
temporary folder), no script, font or image from the network, so it opens from disk anywhere.

- a run folder (or an ensemble run folder): overview, test metrics beside the baseline (95%
  bootstrap CIs from predictions.csv), per-group rows, confusion matrices, error by age, reliability,
  and, where the evaluation's metrics.json has them, prior correction, intervals, thresholds and the
  breakdown by attribute; then the data (counts per group and split, the training age mix), the
  training curves (and the time budget), and the resolved config. A run with no evaluated test split
  says so and names the command that makes one.
- several run folders: the `compare_runs` table and the paired differences in test MAE
  (`compare_paired`) of every pair evaluated on the same test images (the others are listed as skipped).
- a bake-off folder (bakeoff.json, read as plain JSON): per-method table, paired differences and
  verdicts, ranks, MAE per age group, cells and missing cells, the CD diagram and MAE-by-group plots.

`write_report(targets, out, card=False)` is the entry point; `evaluate --report` calls it with the
evaluation folder it just wrote.
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

import numpy as np

from ordinalage.atomic import atomic_write_text
from ordinalage.errors import UsageError
from ordinalage.evaluation.report import METRIC_TITLES, fmt
from ordinalage.evaluation.verdicts import HOW_TO_READ
from ordinalage.figures import confusion_figure, new_figure
from ordinalage.inference.card import CARD_NAME, first_member, read_config, unevaluated_card
from ordinalage.posterior.metrics import LOWER_IS_BETTER, SCALAR_METRICS
from ordinalage.runs.rundir import member_dirs
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


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a JSON object")
    return data


def _csv_rows(path: Path) -> list[dict[str, str]]:
    import csv

    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _num(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _ci_text(value: Any, lo: Any, hi: Any, digits: int = 3) -> str:
    t = fmt(value, digits)
    return t if lo is None or hi is None else f"{t} [{lo:.{digits}f}, {hi:.{digits}f}]"


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


def _metrics_blocks(metrics: Mapping[str, Any], eval_dir: Path, pred: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    from ordinalage.evaluation.model_card import metric_intervals

    base = metrics.get("baseline") or {}
    cis = metric_intervals(pred) if pred is not None else {}
    rows = []
    for key in SCALAR_METRICS:
        ci = cis.get(key) or {}
        rows.append([METRIC_TITLES.get(key, key), _ci_text(metrics.get(key), ci.get("lo"), ci.get("hi")),
                     fmt(base.get(key))])
    where = (f"{metrics.get('n')} images of the {metrics.get('split', '?')} split"
             + (" with flip TTA" if metrics.get("tta") == "flip" else "") + f", from {eval_dir}")
    return [text(where + ". Brackets: 95% bootstrap intervals over the images (predictions.csv). The baseline "
                 f"answers the majority group and median age of the {metrics.get('baseline_source', 'training split')}."),
            table(["metric", "model [95% CI]", "baseline"], rows)]


def _groups_block(metrics: Mapping[str, Any]) -> dict[str, Any]:
    return table(["age group", "n", "precision", "recall", "F1", "MAE"],
                 [[g["label"], fmt(g["n"]), fmt(g.get("precision")), fmt(g.get("recall")), fmt(g.get("f1")),
                   fmt(g.get("mae"))] for g in metrics.get("groups", [])], caption=PER_GROUP)


def _error_rows(rows: Sequence[Mapping[str, Any]], key: str) -> list[list[Any]]:
    return [[r[key], fmt(r["n"]), _ci_text(r.get("bias"), r.get("bias_lo"), r.get("bias_hi"), 2),
             _ci_text(r.get("mae"), r.get("mae_lo"), r.get("mae_hi"), 2)] for r in rows]


def _run_sections(run: Path | None, eval_dir: Path | None) -> tuple[str, list[dict[str, Any]]]:
    """Title and sections of one run (or of one evaluation folder of a checkpoint without a run)."""
    from ordinalage.evaluation.breakdown import plot_error_by_age
    from ordinalage.evaluation.model_card import group_rows, read_predictions
    from ordinalage.evaluation.report import plot_prior, plot_reliability
    from ordinalage.evaluation.thresholds import plot_threshold_curve
    from ordinalage.posterior.calibration import apply_temperature, to_logproba

    sections: list[dict[str, Any]] = []
    cfg = read_config(run) if run is not None else {}
    summary = _read_json(run / "summary.json") if run is not None else {}
    members = member_dirs(run) if run is not None else []
    if eval_dir is None and run is not None:
        eval_dir = find_eval_dir(run)
    metrics = _read_json(eval_dir / "metrics.json") if eval_dir is not None else {}
    model, data = cfg.get("model") or {}, cfg.get("data") or {}
    title = run.name if run is not None else (eval_dir.name if eval_dir else "evaluation")

    overview = [("head", model.get("head")), ("backbone", model.get("backbone")),
                ("target", model.get("target")), ("decoder", model.get("decode")),
                ("input size", data.get("image_size")), ("groups", data.get("groups")),
                ("data", ", ".join(str(s) for s in data.get("sources") or []) or None),
                ("epochs", summary.get("epochs_done")), ("finished", summary.get("finished")),
                ("device", summary.get("device")), ("precision", summary.get("precision"))]
    if members:
        overview.insert(1, ("ensemble", f"{len(members)} members: {', '.join(m.name for m in members)}"))
    where = [f"Run folder {run}" if run is not None else None, f"evaluation {eval_dir}" if eval_dir is not None else None,
             f"model card {eval_dir / CARD_NAME}" if eval_dir is not None and (eval_dir / CARD_NAME).is_file() else None]
    where_text = "; ".join(w for w in where if w) + "."
    heads: list[tuple[str, str, str | None]] = []
    if metrics:
        from ordinalage.evaluation.model_card import metric_intervals, read_predictions

        try:
            ci = metric_intervals(read_predictions(eval_dir / "predictions.csv"))["mae"] if eval_dir else {}
        except UsageError:
            ci = {}
        base = metrics.get("baseline") or {}
        ci_text = f"95% CI [{ci['lo']:.2f}, {ci['hi']:.2f}]" if ci.get("lo") is not None else None
        heads = [("test MAE (years)", fmt(metrics.get("mae"), 2), ci_text),
                 ("baseline MAE", fmt(base.get("mae"), 2), "always the median age"),
                 ("accuracy (age group)", fmt(metrics.get("accuracy")), f"baseline {fmt(base.get('accuracy'))}"),
                 ("CA(5)", fmt(metrics.get("ca5")), "share within 5 years"),
                 ("test images", fmt(metrics.get("n")), f"{metrics.get('split', '?')} split")]
        if (metrics.get("calibration") or {}).get("ece") is not None:
            heads.append(("ECE", fmt(metrics["calibration"]["ece"]), "age-group probabilities"))
    sections.append(section(OVERVIEW, headline(heads) if heads else None,
                            kv([(k, v) for k, v in overview if v is not None]), text(where_text)))

    if not metrics:
        where = run if run is not None else "RUN"
        sections.append(section(NOT_EVALUATED, note(
            f"This run has no evaluated test split (no eval-test/metrics.json): no test metrics, confusion "
            f"matrices, error by age or reliability to show. Evaluate it with: ordinalage evaluate {where} "
            f"(add --by gender,race for a breakdown on UTKFace, --interval 0.9 for intervals), then rerun "
            f"ordinalage report {where} --out report.html")))
    else:
        assert eval_dir is not None
        try:
            pred = read_predictions(eval_dir / "predictions.csv")
        except UsageError:
            pred = None
        intro, metrics_table = _metrics_blocks(metrics, eval_dir, pred)
        sections.append(section(TEST_METRICS, intro, {"kind": "row", "blocks": [metrics_table, _groups_block(metrics)]}))
        labels = [g["label"] for g in metrics.get("groups", [])]
        if metrics.get("confusion"):
            n = metrics.get("n")
            sections.append(section(CONFUSION, figures(*[
                image(figure_uri(confusion_figure(metrics["confusion"], labels, norm, title=t)), t)
                for norm, t in ((False, f"counts (n={n})"), (True, "share of each true group"))])))
        bd = metrics.get("breakdown") or {}
        blocks: list[dict[str, Any] | None] = []
        if bd.get("by_age"):
            blocks.append(image(drawn_uri(lambda p: plot_error_by_age(p, bd["by_age"])) or "", "error by true age"))
        if pred is not None:
            blocks.append(table(["age group", "n", "signed error [95% CI]", "MAE [95% CI]"],
                                _error_rows(group_rows(pred), "value"),
                                caption="per true age group, 95% bootstrap intervals; signed error = estimate - truth"))
        if len(blocks) == 2:
            blocks = [{"kind": "row", "blocks": blocks}]
        if blocks:
            sections.append(section(ERROR_BY_AGE, *blocks))
        cal = metrics.get("calibration")
        if pred is not None and cal:
            proba, truth = pred["group_proba"], pred["true_group"]
            after = None if cal.get("T") is None else apply_temperature(to_logproba(proba), cal["T"])
            uri = drawn_uri(lambda p: plot_reliability(p, proba, truth, after))
            ece = f"Top-label ECE {fmt(cal.get('ece'))} ({cal.get('n_bins', 15)} bins)" + (
                f"; after temperature scaling (T = {fmt(cal['T'], 2)}): {fmt(cal.get('ece_after'))}" if cal.get("T") else "")
            sections.append(section(RELIABILITY, text(ece + "."), image(uri or "", "reliability diagram")))
        info = metrics.get("prior")
        if info:
            rows = [[name.replace("_", " "), *(fmt((info.get(name) or {}).get(k)) for k in ("mae", "accuracy", "one_off", "ca5"))]
                    for name in ("as_trained", "adapted")]
            blocks = [text(f"Mode {info.get('mode')}" + (f" ({info['file']})" if info.get("file") else "")
                           + (f"; EM {info.get('n_iter')} iterations, converged {info.get('converged')}"
                              if info.get("n_iter") is not None else "") + "."),
                      table(["predictions", "MAE", "accuracy", "one-off", "CA(5)"], rows)]
            if info.get("label_ages") and info.get("prior"):
                ages = np.asarray(info["label_ages"], float)
                true = None
                if pred is not None and len(ages) > len(labels):
                    counts = np.bincount(np.clip(np.round(pred["true_age"]), 0, len(ages) - 1).astype(int),
                                         minlength=len(ages))
                    true = counts / max(counts.sum(), 1)
                blocks.append(image(drawn_uri(lambda p: plot_prior(p, ages, np.asarray(info["prior"]),
                                                                   train=np.asarray(info.get("train_prior") or []) if info.get("train_prior") else None,
                                                                   true=true)) or "", "age mix"))
            sections.append(section(PRIOR, *blocks))
        iv = metrics.get("interval")
        if iv:
            rows = [[g.get("label"), fmt(g.get("n")), fmt(g.get("coverage")), fmt(g.get("mean_width"), 2)]
                    for g in iv.get("per_group", [])]
            rows.append(["all", fmt(iv.get("n")), fmt(iv.get("coverage")), fmt(iv.get("mean_width"), 2)])
            sections.append(section(INTERVALS, text(
                f"{fmt(iv.get('level'), 2)} split-conformal intervals ({iv.get('method')}), calibrated on "
                f"{iv.get('n_cal')} validation images."), table(["group", "n", "coverage", "mean width (years)"], rows)))
        thr = metrics.get("threshold")
        if thr:
            blocks = [table(["threshold", "challenge", "n under", "n over", "false accept", "false reject"],
                            [[r["threshold"], r["challenge"], r["n_under"], r["n_over"], fmt(r["false_accept"]),
                              fmt(r["false_reject"])] for r in thr],
                            caption="accept when the estimate >= the challenge age")]
            if pred is not None:
                challenges = sorted({int(r["challenge"]) for r in thr})
                blocks.append(figures(*[image(drawn_uri(lambda p, t=t: plot_threshold_curve(
                    p, pred["true_age"], pred["pred_age"], t, challenges)), f"threshold {t}")
                    for t in sorted({int(r["threshold"]) for r in thr})]))
            sections.append(section(THRESHOLDS, *blocks))
        attrs = {k: v for k, v in bd.items() if k not in ("by_age", "gaps")}
        if attrs:
            tables = []
            for name, rows in attrs.items():
                has_code = any(r.get("code") is not None for r in rows)
                cols = [name] + (["code"] if has_code else []) + ["n", "signed error [95% CI]", "MAE [95% CI]"]
                body = [[r["value"]] + ([r.get("code") or "-"] if has_code else []) + _error_rows([r], "value")[0][1:]
                        for r in rows]
                tables.append(table(cols, body, caption=f"error by {name}"))
            blocks = [text("Error per attribute value of the evaluated images (evaluate --by), with 95% bootstrap "
                           "intervals; images without a value are left out."), {"kind": "row", "blocks": tables}]
            gaps = bd.get("gaps") or {}
            if gaps:
                blocks.append(table(["attribute", "MAE gap [95% CI]", "between", "signed-error gap [95% CI]", "between"],
                                    [[k, _ci_text(g.get("mae_gap"), g.get("mae_gap_lo"), g.get("mae_gap_hi"), 2), f"{g['mae_high']} vs {g['mae_low']}",
                                      _ci_text(g.get("bias_gap"), g.get("bias_gap_lo"), g.get("bias_gap_hi"), 2),
                                      f"{g['bias_high']} vs {g['bias_low']}"] if g else
                                     [k, "-", "fewer than two groups with enough images", "-", ""] for k, g in gaps.items()],
                                    caption="largest gap between values (highest minus lowest); an interval "
                                            "containing 0 is within sampling noise"))
            sections.append(section(BREAKDOWN, *blocks))
        if metrics.get("skipped"):
            sections.append(section("Skipped images", text(f"{len(metrics['skipped'])} unreadable image(s) skipped."),
                                    pre("\n".join(metrics["skipped"][:50]))))

    if run is not None:
        sections += _data_sections(run, cfg, summary)
        sections += _training_sections(run, summary, members)
        config_text = (run / "config.yaml").read_text(encoding="utf-8")
        sections.append(section(CONFIG, text(f"{run / 'config.yaml'} (the resolved config the run trained with)"),
                                pre(config_text)))
    return title, sections


def _data_sections(run: Path, cfg: Mapping[str, Any], summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    from ordinalage.inference.card import training_age_mix

    member = first_member(run)
    msum = _read_json(member / "summary.json") if member != run else summary
    report = msum.get("data_report") or {}
    groups = report.get("groups") or []
    blocks: list[dict[str, Any] | None] = []
    if groups:
        cols, per_split = ["age group"], []
        before, after = report.get("before") or {}, report.get("after") or {}
        stages = [("before", before)] if before == after or not after else [("before", before), ("after", after)]
        for stage, counts_by_split in stages:
            for split, counts in counts_by_split.items():
                if isinstance(counts, list) and len(counts) == len(groups):
                    cols.append(split if len(stages) == 1 else f"{split} ({stage} sampling)")
                    per_split.append(counts)
        rows = [[g, *(c[i] for c in per_split)] for i, g in enumerate(groups)]
        rows.append(["all", *(sum(c) for c in per_split)])
        same = " (the same before and after sampling)" if len(stages) == 1 else ""
        blocks.append(text(f"Images per age group and split{same}, from summary.json data_report: protocol "
                           f"{report.get('protocol')}, fold {report.get('fold')}, sampling {report.get('sampling')}, "
                           f"{report.get('unused', 0)} unused."))
        counts_table: dict[str, Any] | None = table(cols, rows)
    else:
        counts_table = None
        split_rows = _csv_rows(member / "split.csv")
        if split_rows:
            from collections import Counter

            count = Counter((r.get("group"), r.get("split")) for r in split_rows)
            splits = sorted({s for _, s in count})
            groups_seen = sorted({g for g, _ in count}, key=lambda g: _num(g))
            blocks.append(text("Images per age group index and split (split.csv)."))
            blocks.append(table(["group", *splits], [[g, *(count.get((g, s), 0) for s in splits)] for g in groups_seen]))
    prior = _read_json(member / "train_prior.json")
    ages, weights = prior.get("ages"), prior.get("weight")
    if isinstance(ages, list) and isinstance(weights, list) and ages and len(ages) == len(weights):
        w = np.asarray(weights, float)
        w = w / max(w.sum(), 1e-12)
        fig = new_figure(8.0, 3.2)
        ax = fig.add_subplot()
        ax.bar(np.asarray(ages, float), w, width=0.9 if len(ages) > 20 else 0.6, color="tab:orange")
        ax.set_xlabel("age label (years)" if (prior.get("meta") or {}).get("target") != "group" else "age group index")
        ax.set_ylabel("share of training weight")
        ax.set_title("effective training age mix (train_prior.json: after sampling and class weights)")
        ax.grid(axis="y", alpha=0.3)
        mix = training_age_mix(run, (cfg.get("data") or {}).get("groups"))
        mix_table = table(["age group", "share of the training mix"], [[m["label"], f"{m['share']:.1%}"] for m in mix],
                          caption="the effective training mix per age group") if mix else None
        side = [b for b in (counts_table, mix_table) if b is not None]
        if side:
            blocks.append({"kind": "row", "blocks": side})
            counts_table = None
        blocks.append(image(figure_uri(fig), "training age mix"))
    if counts_table is not None:
        blocks.append(counts_table)
    if not blocks:
        return [section(DATA, note(f"No data report: {run} has no summary.json data_report, split.csv or train_prior.json."))]
    return [section(DATA, *blocks)]


def _training_sections(run: Path, summary: Mapping[str, Any], members: Sequence[Path]) -> list[dict[str, Any]]:
    folders = list(members) or [run]
    series = [(f.name if members else "", _csv_rows(f / "metrics.csv")) for f in folders]
    series = [(name, rows) for name, rows in series if rows]
    out: list[dict[str, Any]] = []
    if series:
        fig = new_figure(11.0, 3.4)
        axes = fig.subplots(1, 3)
        colors = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:gray"]
        for k, (name, rows) in enumerate(series):
            epoch = np.array([_num(r.get("epoch")) for r in rows])
            color = colors[k % len(colors)]
            prefix = f"{name} " if name else ""
            axes[0].plot(epoch, [_num(r.get("train_loss")) for r in rows], color=color, marker=".", label=f"{prefix}train")
            axes[0].plot(epoch, [_num(r.get("val_loss")) for r in rows], color=color, marker=".", linestyle="--",
                         label=f"{prefix}validation")
            axes[1].plot(epoch, [_num(r.get("val_mae")) for r in rows], color=color, marker=".", label=name or "validation")
            axes[2].plot(epoch, [_num(r.get("lr")) for r in rows], color=color, marker=".", label=name or None)
        from matplotlib.ticker import MaxNLocator

        for ax, ylabel, t in ((axes[0], "loss", "loss"), (axes[1], "MAE (years)", "validation MAE"),
                              (axes[2], "learning rate", "learning rate (end of epoch)")):
            n_epochs = max(len(rs) for _, rs in series)
            if n_epochs <= 12:
                ax.set_xticks(range(1, n_epochs + 1))
            else:
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlim(0.5, n_epochs + 0.5)
            ax.set_xlabel("epoch")
            ax.set_ylabel(ylabel)
            ax.set_title(t)
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=7)
        if members:
            axes[1].legend(fontsize=7)
        last = series[0][1][-1]
        blocks: list[dict[str, Any] | None] = [image(figure_uri(fig), "training curves")]
        cols = ["run", "epochs", "last train loss", "last val loss", "last val MAE", "best val MAE", "images/s"]
        rows = []
        for name, rs in series:
            last = rs[-1]
            best = min((_num(r.get("val_mae")) for r in rs), default=math.nan)
            rows.append([name or run.name, len(rs), fmt(_num(last.get("train_loss"))), fmt(_num(last.get("val_loss"))),
                         fmt(_num(last.get("val_mae"))), fmt(best), fmt(_num(last.get("images_per_s")), 1)])
        blocks.append(table(cols, rows, caption="from metrics.csv (one row per epoch)"))
        if summary.get("best_epoch") is not None:
            blocks.append(text(f"Best epoch {summary['best_epoch']} by {summary.get('monitor')} "
                               f"{fmt(summary.get('best_value'))}; stopped early: {summary.get('stopped_early')}."))
        out.append(section(TRAINING, *blocks))
    else:
        out.append(section(TRAINING, note(f"{run} has no metrics.csv: no training curves.")))
    budgets = [(f.name if members else run.name, _read_json(f / "summary.json").get("budget") if members else summary.get("budget"))
               for f in folders]
    budgets = [(n, b) for n, b in budgets if isinstance(b, dict)]
    if budgets:
        keys = sorted({k for _, b in budgets for k in b if not isinstance(b[k], (list, dict))})
        blocks = [text("The time budget's plan (summary.json budget): the epochs that fit and the measurements they came from."),
                  table(["key", *(n for n, _ in budgets)], [[k, *(fmt(b.get(k)) for _, b in budgets)] for k in keys])]
        for name, b in budgets:
            for key, value in b.items():
                if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):  # e.g. replans
                    cols = sorted({c for v in value for c in v})
                    blocks.append(table(cols, [[fmt(v.get(c)) for c in cols] for v in value], caption=f"{name}: {key}"))
        out.append(section(BUDGET, *blocks))
    return out


# ---------------------------------------------------------------------------------------------
# several runs


def _compare_sections(runs: Sequence[Path]) -> list[dict[str, Any]]:
    from ordinalage.evaluation.compare import (
        DECISION_COLUMNS,
        INFO_COLUMNS,
        best_runs,
        compare_paired,
        compare_runs,
    )
    from ordinalage.evaluation.report import SHORT_TITLES, plot_compare

    result = compare_runs([str(r) for r in runs], show=False)
    rows = result["runs"]
    _, tied = best_runs(rows)
    metrics = [m for m in (*SCALAR_METRICS, *DECISION_COLUMNS) if any(r.get(m) is not None for r in rows)] or ["n"]
    body = []
    for i, r in enumerate(rows):
        cells: list[Any] = [r["run"], *(fmt(r.get(c)) for c in INFO_COLUMNS)]
        for m in metrics:
            cells.append({"text": fmt(r.get(m)), "best": i in tied.get(m, set())})
        body.append(cells)
    legend = ", ".join(f"{SHORT_TITLES[c]} = {METRIC_TITLES.get(c, c)}" for c in metrics if c in SHORT_TITLES)
    blocks: list[dict[str, Any] | None] = [
        text("Test metrics of each run (summary.json test, else eval-test/metrics.json); the best value of each "
             f"column is marked (lower is better for {', '.join(sorted(LOWER_IS_BETTER))} and the decision columns but "
             "coverage)."),
        table(["run", *INFO_COLUMNS, *(SHORT_TITLES.get(m, m) for m in metrics)], body, caption=legend)]
    missing = [r["run"] for r in rows if r.get("metrics_source") is None]
    if missing:
        blocks.append(note(f"No test metrics yet: {', '.join(missing)} (ordinalage evaluate RUN)."))
    blocks.append(image(drawn_uri(lambda p: plot_compare([r["run"] for r in rows], [r.get("mae") for r in rows],
                                                         [r.get("accuracy") for r in rows], p)) or "", "MAE and accuracy per run"))
    out = [section(COMPARE, *blocks)]
    pairs, skipped = [], []
    for i in range(len(runs)):
        for j in range(i + 1, len(runs)):
            try:
                pairs.append(compare_paired(str(runs[i]), str(runs[j]), show=False))
            except UsageError as exc:
                skipped.append(f"{rows[i]['run']} vs {rows[j]['run']}: {exc}")
    pblocks: list[dict[str, Any] | None] = [text(f"Paired differences in test MAE on the same test images. {HOW_TO_READ}")]
    if pairs:
        pblocks.append(_verdict_table(pairs))
    if skipped:
        pblocks.append(note("Pairs skipped (they do not share their test images, or one has none):"))
        pblocks.append({"kind": "list", "items": skipped})
    out.append(section(PAIRED, *pblocks))
    return out


# ---------------------------------------------------------------------------------------------
# a bake-off (bakeoff.json, plain JSON)


def _pm(mean: Any, std: Any, digits: int = 3) -> str:
    if mean is None:
        return "-"
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if isinstance(std, (int, float)) else "")


def _interval(ci: Any) -> str:
    return f"[{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else "-"


def _verdict_table(pairs: list[dict[str, Any]]) -> dict[str, Any]:
    """The pair fields in a few columns: difference, the three intervals, probabilities, Holm p, verdict."""
    return table(["a", "b", "MAE a - b", "interval", "images only", "runs only", "P(a lower / equiv. / b lower)",
                  "Holm p", "images", "runs", "verdict"],
                 [[p["a"], p["b"], f"{p['mae_diff']:+.3f}" if p.get("mae_diff") is not None else "-",
                   _interval(p.get("ci")), _interval(p.get("ci_images")), _interval(p.get("ci_runs")),
                   "-" if p.get("p_a_lower") is None else
                   f"{p['p_a_lower']:.2f} / {p['p_equivalent']:.2f} / {p['p_b_lower']:.2f}",
                   fmt(p.get("p_holm")), p.get("n_images"), p.get("n_runs"),
                   p.get("verdict_text") or p.get("verdict")] for p in pairs])


def _bakeoff_sections(folder: Path) -> tuple[str, list[dict[str, Any]]]:
    from ordinalage.evaluation.cd_diagram import plot_cd_diagram

    result = _read_json(folder / "bakeoff.json")
    spec = result.get("spec") or {}
    out: list[dict[str, Any]] = []
    overview = [("folder", folder), ("datasets", ", ".join(spec.get("data") or []) or None), ("seeds", spec.get("seeds")),
                ("folds", spec.get("folds")), ("epochs per cell", spec.get("epochs")),
                ("budget per cell (min)", spec.get("budget_min")), ("lowest mean MAE", result.get("best")),
                ("written", result.get("written"))]
    out.append(section(OVERVIEW, kv([(k, v) for k, v in overview if v is not None]),
                       text("Command:") if result.get("command") else None,
                       pre(str(result["command"])) if result.get("command") else None))
    methods = result.get("methods") or []
    best = result.get("best")
    out.append(section(METHODS, text("Test metrics per method, mean ± std over seeds, folds and datasets."), table(
        ["method", "runs", "MAE", "accuracy", "one-off", "CA(5)", "minutes"],
        [[{"text": m["method"], "best": m["method"] == best}, f"{m.get('n_cells')}/{m.get('n_expected', '?')}",
          _pm(m.get("mae"), m.get("mae_std")), _pm(m.get("accuracy"), m.get("accuracy_std")),
          _pm(m.get("one_off"), m.get("one_off_std")), _pm(m.get("ca5"), m.get("ca5_std")),
          _pm(m.get("minutes"), m.get("minutes_std"), 2)] for m in methods])))
    pairs = result.get("pairs") or []
    mix = (result.get("age_mix") or {}).get("name", "test")
    vblocks: list[dict[str, Any] | None] = [text(
        f"Paired differences in test MAE (a - b, years) for the age mix '{mix}', rope ±{result.get('rope', 0.1):g} "
        f"years. {HOW_TO_READ}")]
    if result.get("group_disagreement"):
        vblocks.append(note("Verdicts differ between age groups: " + "; ".join(result["group_disagreement"]) + "."))
    if pairs:
        vblocks.append(_verdict_table(pairs))
    else:
        vblocks.append(note("No paired differences (fewer than two methods with finished cells)."))
    for g in result.get("pairs_by_group") or []:
        vblocks.append(text(f"Age group {g['group']} (its test images only; Holm within the group):"))
        vblocks.append(_verdict_table(g["pairs"]))
    fr = result.get("friedman")
    if fr:
        vblocks.append(kv([(f"Friedman {k}", fmt(v) if isinstance(v, float) else v) for k, v in fr.items()
                           if not isinstance(v, (list, dict))]))
    out.append(section(VERDICTS, *vblocks))
    ranks = result.get("ranks")
    rblocks: list[dict[str, Any] | None] = []
    if ranks and ranks.get("methods"):
        rblocks.append(text(", ".join(f"{m} {r:.2f}" for m, r in zip(ranks["methods"], ranks["average_ranks"], strict=False))
                            + f"; critical difference {fmt(ranks.get('cd'))} over {ranks.get('n_blocks')} "
                              f"{ranks.get('blocks')} (rank 1 = lowest MAE)."))
        uri = file_uri(folder / "cd_diagram.png") or drawn_uri(lambda p: plot_cd_diagram(
            ranks["methods"], ranks["average_ranks"], ranks["cd"], p,
            title=f"average ranks over {ranks.get('n_blocks')} {ranks.get('blocks')} (test MAE; Nemenyi CD)"))
        rblocks.append(image(uri or "", "critical-difference diagram"))
    else:
        rblocks.append(note("No ranks (fewer than two methods or blocks)."))
    out.append(section(RANKS, *rblocks))
    by_group = [r for r in result.get("mae_by_group") or [] if r.get("mae")]
    if by_group:
        labels = by_group[0].get("groups") or []
        gblocks: list[dict[str, Any] | None] = [table(["method", *labels], [[r["method"], *(fmt(v, 2) for v in r["mae"])]
                                                                            for r in by_group],
                                                      caption="test MAE per true age group, pooled over runs")]
        uri = file_uri(folder / "mae_by_group.png") or figure_uri(_mae_by_group_figure(by_group))
        gblocks.append(image(uri, "MAE per age group and method"))
        out.append(section(MAE_BY_GROUP, *gblocks))
    cells = result.get("cells") or []
    out.append(section(CELLS, table(
        ["cell", "method", "dataset", "fold", "seed", "status", "MAE", "accuracy", "minutes", "reason"],
        [[c.get("id"), c.get("method"), c.get("dataset"), c.get("fold"), c.get("seed"), c.get("status"),
          fmt((c.get("test") or {}).get("mae")), fmt((c.get("test") or {}).get("accuracy")), fmt(c.get("minutes"), 2),
          c.get("reason") or ""] for c in cells])))
    missing = result.get("missing") or []
    if missing:
        out.append(section(MISSING, note(f"{len(missing)} cell(s) without a finished result: they are not in the "
                                         "averages. Rerun the bake-off command to finish them."),
                           table(["cell", "method", "dataset", "fold", "seed", "status", "reason"],
                                 [[m.get("id"), m.get("method"), m.get("dataset"), m.get("fold"), m.get("seed"),
                                   m.get("status"), m.get("reason") or ""] for m in missing])))
    else:
        out.append(section(MISSING, text("None: every cell finished.")))
    return f"bake-off {folder.name}", out


def _mae_by_group_figure(rows: Sequence[Mapping[str, Any]]) -> Any:
    labels = rows[0].get("groups") or []
    x = np.arange(len(labels))
    width = 0.8 / len(rows)
    fig = new_figure(max(6.0, 0.9 * len(labels) + 2.0), 4.2)
    ax = fig.add_subplot()
    for i, row in enumerate(rows):
        ax.bar(x + (i - (len(rows) - 1) / 2) * width, [np.nan if v is None else v for v in row["mae"]], width=width,
               label=row["method"])
    ax.set_xticks(x, labels=labels)
    ax.set_xlabel("true age group")
    ax.set_ylabel("test MAE (years)")
    ax.set_title("test MAE per age group")
    ax.legend(fontsize=8)
    return fig


# ---------------------------------------------------------------------------------------------
# rendering


def render(title: str, subtitle: str, sections: Sequence[Mapping[str, Any]]) -> str:
    """The HTML page (Jinja2, autoescape on) of `sections`."""
    import jinja2

    source = resources.files("ordinalage.evaluation").joinpath("templates/report.html.j2").read_text(encoding="utf-8")
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    return env.from_string(source).render(title=title, subtitle=subtitle, sections=sections, version=__version__,
                                          generated=datetime.now().strftime("%Y-%m-%d %H:%M"))


def write_report(targets: Sequence[str | Path], out: str | Path, card: bool = False,
                 eval_dir: str | Path | None = None, show: bool = True) -> dict[str, Any]:
    """Write the HTML report of `targets` (one run or ensemble folder, one bake-off folder, or several
    run folders) to `out`; with `card`, MODEL_CARD.md beside it (one run only). `eval_dir`: the
    evaluation folder to show for a single run (default: its eval-test folder); with no run folder
    (`targets` empty) the page shows that evaluation alone. Returns {out, kind, card?}."""
    paths = [Path(t) for t in targets]
    out = Path(out)
    if not paths and eval_dir is None:
        raise UsageError("report: give a run folder, several run folders, or a bake-off folder")
    kinds = [target_kind(p) for p in paths]
    if len(paths) > 1 and "bakeoff" in kinds:
        bad = [str(p) for p, k in zip(paths, kinds, strict=True) if k == "bakeoff"]
        raise UsageError(f"report: a bake-off folder ({', '.join(bad)}) is reported alone; compare run folders together")
    if card and (len(paths) > 1 or kinds == ["bakeoff"]):
        raise UsageError("report --card: give one run folder (a model card describes one model)")
    if kinds == ["bakeoff"]:
        kind = "bakeoff"
        title, sections = _bakeoff_sections(paths[0])
        subtitle = f"bake-off folder {paths[0]}"
    elif len(paths) > 1:
        kind = "compare"
        title = f"{len(paths)} runs compared"
        sections = _compare_sections(paths)
        subtitle = ", ".join(str(p) for p in paths)
    else:
        kind = "run"
        run = paths[0] if paths else None
        title, sections = _run_sections(run, Path(eval_dir) if eval_dir is not None else None)
        subtitle = f"run folder {run}" if run is not None else f"evaluation {eval_dir}"
        if run is not None and member_dirs(run):
            subtitle = f"ensemble run folder {run}"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, render(title, subtitle, sections))
    result: dict[str, Any] = {"out": str(out), "kind": kind, "sections": [s["title"] for s in sections]}
    if card:
        run = paths[0]
        card_path = out.parent / CARD_NAME
        folder = Path(eval_dir) if eval_dir is not None else find_eval_dir(run)
        if folder is not None and (folder / "predictions.csv").is_file():
            from ordinalage.evaluation.model_card import write_model_card

            write_model_card(folder, run, out=card_path)
        else:
            atomic_write_text(card_path, unevaluated_card(run))
        result["card"] = str(card_path)
    if show:
        from ordinalage.console import stderr_console

        stderr_console().print(f"wrote {out}" + (f" and {result['card']}" if card else ""), highlight=False)
    return result
