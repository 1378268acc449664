"""The HTML report's sections of one run (or of one evaluation folder without a run): overview,
test metrics, confusion, error by age, reliability, prior, intervals, thresholds, breakdown, data,
training curves and config."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ordinalage.posterior.calibration import apply_temperature, to_logproba
from ordinalage.posterior.metrics import SCALAR_METRICS
from ordinalage.reporting.card import CARD_NAME, first_member, read_config
from ordinalage.reporting.figures import confusion_figure, new_figure
from ordinalage.reporting.formatting import METRIC_TITLES, fmt
from ordinalage.reporting.formatting import with_interval as _ci_text
from ordinalage.reporting.html import (
    BREAKDOWN,
    BUDGET,
    CONFIG,
    CONFUSION,
    DATA,
    ERROR_BY_AGE,
    INTERVALS,
    NOT_EVALUATED,
    OVERVIEW,
    PER_GROUP,
    PRIOR,
    RELIABILITY,
    TEST_METRICS,
    THRESHOLDS,
    TRAINING,
    as_float,
    csv_rows,
    drawn_uri,
    figure_uri,
    figures,
    find_eval_dir,
    headline,
    image,
    kv,
    note,
    pre,
    read_json,
    section,
    table,
    text,
)
from ordinalage.reporting.plots import plot_error_by_age, plot_prior, plot_reliability, plot_threshold_curve
from ordinalage.runs.rundir import member_dirs


@dataclass
class Measured:
    """What the report shows of an evaluation beyond its metrics.json, measured by evaluation: the
    predictions read back, 95% bootstrap intervals of the metrics and per age-group error rows."""

    pred: Mapping[str, Any] | None = None
    cis: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    group_rows: list[dict[str, Any]] = field(default_factory=list)
    head: Any = None  # the head's traits (models.heads.HeadTraits: its title), None: unknown


def _metrics_blocks(metrics: Mapping[str, Any], eval_dir: Path, cis: Mapping[str, Mapping[str, Any]]
                    ) -> list[dict[str, Any]]:
    base = metrics.get("baseline") or {}
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


def run_sections(run: Path | None, eval_dir: Path | None, measured: Measured) -> tuple[str, list[dict[str, Any]]]:
    """Title and sections of one run (or of one evaluation folder of a checkpoint without a run);
    `measured`: what evaluation measured of that evaluation folder (`find_eval_dir` when None)."""
    cfg = read_config(run) if run is not None else {}
    summary = read_json(run / "summary.json") if run is not None else {}
    members = member_dirs(run) if run is not None else []
    if eval_dir is None and run is not None:
        eval_dir = find_eval_dir(run)
    metrics = read_json(eval_dir / "metrics.json") if eval_dir is not None else {}
    title = run.name if run is not None else (eval_dir.name if eval_dir else "evaluation")
    sections = [_overview(run, eval_dir, cfg, summary, members, metrics, measured)]
    if not metrics:
        where = run if run is not None else "RUN"
        sections.append(section(NOT_EVALUATED, note(
            f"This run has no evaluated test split (no eval-test/metrics.json): no test metrics, confusion "
            f"matrices, error by age or reliability to show. Evaluate it with: ordinalage evaluate {where} "
            f"(add --by gender,race for a breakdown on UTKFace, --interval 0.9 for intervals), then rerun "
            f"ordinalage report {where} --out report.html")))
    else:
        assert eval_dir is not None
        intro, metrics_table = _metrics_blocks(metrics, eval_dir, measured.cis)
        sections.append(section(TEST_METRICS, intro, {"kind": "row", "blocks": [metrics_table, _groups_block(metrics)]}))
        for build in (_confusion, _error_by_age, _reliability, _prior, _intervals, _thresholds, _breakdown, _skipped):
            built = build(metrics, measured)
            if built is not None:
                sections.append(built)
    if run is not None:
        sections += _data_sections(run, cfg, summary)
        sections += _training_sections(run, summary, members)
        config_text = (run / "config.yaml").read_text(encoding="utf-8")
        sections.append(section(CONFIG, text(f"{run / 'config.yaml'} (the resolved config the run trained with)"),
                                pre(config_text)))
    return title, sections


def _overview(run: Path | None, eval_dir: Path | None, cfg: Mapping[str, Any], summary: Mapping[str, Any],
              members: Sequence[Path], metrics: Mapping[str, Any], measured: Measured) -> dict[str, Any]:
    model, data = cfg.get("model") or {}, cfg.get("data") or {}
    head = model.get("head")
    if head is not None and measured.head is not None:
        head = f"{head}: {measured.head.title}"
    overview = [("head", head), ("backbone", model.get("backbone")),
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
        ci = measured.cis.get("mae") or {}
        base = metrics.get("baseline") or {}
        ci_text = f"95% CI [{ci['lo']:.2f}, {ci['hi']:.2f}]" if ci.get("lo") is not None else None
        heads = [("test MAE (years)", fmt(metrics.get("mae"), 2), ci_text),
                 ("baseline MAE", fmt(base.get("mae"), 2), "always the median age"),
                 ("accuracy (age group)", fmt(metrics.get("accuracy")), f"baseline {fmt(base.get('accuracy'))}"),
                 ("CA(5)", fmt(metrics.get("ca5")), "share within 5 years"),
                 ("test images", fmt(metrics.get("n")), f"{metrics.get('split', '?')} split")]
        if (metrics.get("calibration") or {}).get("ece") is not None:
            heads.append(("ECE", fmt(metrics["calibration"]["ece"]), "age-group probabilities"))
    return section(OVERVIEW, headline(heads) if heads else None,
                   kv([(k, v) for k, v in overview if v is not None]), text(where_text))


def _labels(metrics: Mapping[str, Any]) -> list[str]:
    return [g["label"] for g in metrics.get("groups", [])]


def _confusion(metrics: Mapping[str, Any], measured: Measured) -> dict[str, Any] | None:
    if not metrics.get("confusion"):
        return None
    n = metrics.get("n")
    return section(CONFUSION, figures(*[
        image(figure_uri(confusion_figure(metrics["confusion"], _labels(metrics), norm, title=t)), t)
        for norm, t in ((False, f"counts (n={n})"), (True, "share of each true group"))]))


def _error_by_age(metrics: Mapping[str, Any], measured: Measured) -> dict[str, Any] | None:
    bd = metrics.get("breakdown") or {}
    blocks: list[dict[str, Any] | None] = []
    if bd.get("by_age"):
        blocks.append(image(drawn_uri(lambda p: plot_error_by_age(p, bd["by_age"])) or "", "error by true age"))
    if measured.pred is not None:
        blocks.append(table(["age group", "n", "signed error [95% CI]", "MAE [95% CI]"],
                            _error_rows(measured.group_rows, "value"),
                            caption="per true age group, 95% bootstrap intervals; signed error = estimate - truth"))
    if len(blocks) == 2:
        blocks = [{"kind": "row", "blocks": blocks}]
    return section(ERROR_BY_AGE, *blocks) if blocks else None


def _reliability(metrics: Mapping[str, Any], measured: Measured) -> dict[str, Any] | None:
    cal, pred = metrics.get("calibration"), measured.pred
    if pred is None or not cal:
        return None
    proba, truth = pred["group_proba"], pred["true_group"]
    after = None if cal.get("T") is None else apply_temperature(to_logproba(proba), cal["T"])
    uri = drawn_uri(lambda p: plot_reliability(p, proba, truth, after))
    ece = f"Top-label ECE {fmt(cal.get('ece'))} ({cal.get('n_bins', 15)} bins)" + (
        f"; after temperature scaling (T = {fmt(cal['T'], 2)}): {fmt(cal.get('ece_after'))}" if cal.get("T") else "")
    return section(RELIABILITY, text(ece + "."), image(uri or "", "reliability diagram"))


def _prior(metrics: Mapping[str, Any], measured: Measured) -> dict[str, Any] | None:
    info, pred = metrics.get("prior"), measured.pred
    if not info:
        return None
    rows = [[name.replace("_", " "), *(fmt((info.get(name) or {}).get(k)) for k in ("mae", "accuracy", "one_off", "ca5"))]
            for name in ("as_trained", "adapted")]
    blocks = [text(f"Mode {info.get('mode')}" + (f" ({info['file']})" if info.get("file") else "")
                   + (f"; EM {info.get('n_iter')} iterations, converged {info.get('converged')}"
                      if info.get("n_iter") is not None else "") + "."),
              table(["predictions", "MAE", "accuracy", "one-off", "CA(5)"], rows)]
    if info.get("label_ages") and info.get("prior"):
        ages = np.asarray(info["label_ages"], float)
        true = None
        if pred is not None and len(ages) > len(_labels(metrics)):
            counts = np.bincount(np.clip(np.round(pred["true_age"]), 0, len(ages) - 1).astype(int), minlength=len(ages))
            true = counts / max(counts.sum(), 1)
        train = np.asarray(info["train_prior"]) if info.get("train_prior") else None
        blocks.append(image(drawn_uri(lambda p: plot_prior(p, ages, np.asarray(info["prior"]), train=train, true=true))
                            or "", "age mix"))
    return section(PRIOR, *blocks)


def _intervals(metrics: Mapping[str, Any], measured: Measured) -> dict[str, Any] | None:
    iv = metrics.get("interval")
    if not iv:
        return None
    rows = [[g.get("label"), fmt(g.get("n")), fmt(g.get("coverage")), fmt(g.get("mean_width"), 2)]
            for g in iv.get("per_group", [])]
    rows.append(["all", fmt(iv.get("n")), fmt(iv.get("coverage")), fmt(iv.get("mean_width"), 2)])
    return section(INTERVALS, text(
        f"{fmt(iv.get('level'), 2)} split-conformal intervals ({iv.get('method')}), calibrated on "
        f"{iv.get('n_cal')} validation images."), table(["group", "n", "coverage", "mean width (years)"], rows))


def _thresholds(metrics: Mapping[str, Any], measured: Measured) -> dict[str, Any] | None:
    thr, pred = metrics.get("threshold"), measured.pred
    if not thr:
        return None
    blocks = [table(["threshold", "challenge", "n under", "n over", "false accept", "false reject"],
                    [[r["threshold"], r["challenge"], r["n_under"], r["n_over"], fmt(r["false_accept"]),
                      fmt(r["false_reject"])] for r in thr],
                    caption="accept when the estimate >= the challenge age")]
    if pred is not None:
        challenges = sorted({int(r["challenge"]) for r in thr})
        blocks.append(figures(*[image(drawn_uri(lambda p, t=t: plot_threshold_curve(
            p, pred["true_age"], pred["pred_age"], t, challenges)), f"threshold {t}")
            for t in sorted({int(r["threshold"]) for r in thr})]))
    return section(THRESHOLDS, *blocks)


def _breakdown(metrics: Mapping[str, Any], measured: Measured) -> dict[str, Any] | None:
    bd = metrics.get("breakdown") or {}
    attrs = {k: v for k, v in bd.items() if k not in ("by_age", "gaps")}
    if not attrs:
        return None
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
                            [[k, _ci_text(g.get("mae_gap"), g.get("mae_gap_lo"), g.get("mae_gap_hi"), 2),
                              f"{g['mae_high']} vs {g['mae_low']}",
                              _ci_text(g.get("bias_gap"), g.get("bias_gap_lo"), g.get("bias_gap_hi"), 2),
                              f"{g['bias_high']} vs {g['bias_low']}"] if g else
                             [k, "-", "fewer than two groups with enough images", "-", ""] for k, g in gaps.items()],
                            caption="largest gap between values (highest minus lowest); an interval "
                                    "containing 0 is within sampling noise"))
    return section(BREAKDOWN, *blocks)


def _skipped(metrics: Mapping[str, Any], measured: Measured) -> dict[str, Any] | None:
    if not metrics.get("skipped"):
        return None
    return section("Skipped images", text(f"{len(metrics['skipped'])} unreadable image(s) skipped."),
                   pre("\n".join(metrics["skipped"][:50])))


def _data_sections(run: Path, cfg: Mapping[str, Any], summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    from ordinalage.reporting.card import training_age_mix

    member = first_member(run)
    msum = read_json(member / "summary.json") if member != run else summary
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
        split_rows = csv_rows(member / "split.csv")
        if split_rows:
            from collections import Counter

            count = Counter((r.get("group"), r.get("split")) for r in split_rows)
            splits = sorted({s for _, s in count})
            groups_seen = sorted({g for g, _ in count}, key=lambda g: as_float(g))
            blocks.append(text("Images per age group index and split (split.csv)."))
            blocks.append(table(["group", *splits], [[g, *(count.get((g, s), 0) for s in splits)] for g in groups_seen]))
    prior = read_json(member / "train_prior.json")
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
    series = [(f.name if members else "", csv_rows(f / "metrics.csv")) for f in folders]
    series = [(name, rows) for name, rows in series if rows]
    out: list[dict[str, Any]] = []
    if series:
        fig = new_figure(11.0, 3.4)
        axes = fig.subplots(1, 3)
        colors = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:gray"]
        for k, (name, rows) in enumerate(series):
            epoch = np.array([as_float(r.get("epoch")) for r in rows])
            color = colors[k % len(colors)]
            prefix = f"{name} " if name else ""
            axes[0].plot(epoch, [as_float(r.get("train_loss")) for r in rows], color=color, marker=".", label=f"{prefix}train")
            axes[0].plot(epoch, [as_float(r.get("val_loss")) for r in rows], color=color, marker=".", linestyle="--",
                         label=f"{prefix}validation")
            axes[1].plot(epoch, [as_float(r.get("val_mae")) for r in rows], color=color, marker=".", label=name or "validation")
            axes[2].plot(epoch, [as_float(r.get("lr")) for r in rows], color=color, marker=".", label=name or None)
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
            best = min((as_float(r.get("val_mae")) for r in rs), default=math.nan)
            rows.append([name or run.name, len(rs), fmt(as_float(last.get("train_loss"))), fmt(as_float(last.get("val_loss"))),
                         fmt(as_float(last.get("val_mae"))), fmt(best), fmt(as_float(last.get("images_per_s")), 1)])
        blocks.append(table(cols, rows, caption="from metrics.csv (one row per epoch)"))
        if summary.get("best_epoch") is not None:
            blocks.append(text(f"Best epoch {summary['best_epoch']} by {summary.get('monitor')} "
                               f"{fmt(summary.get('best_value'))}; stopped early: {summary.get('stopped_early')}."))
        out.append(section(TRAINING, *blocks))
    else:
        out.append(section(TRAINING, note(f"{run} has no metrics.csv: no training curves.")))
    budgets = [(f.name if members else run.name, read_json(f / "summary.json").get("budget") if members else summary.get("budget"))
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
