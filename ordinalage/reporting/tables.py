"""Rich tables on the console (stderr): metrics beside the baseline, per-group rows, confusion,
runs side by side, and the decision tables (intervals, thresholds, breakdowns, calibration, prior)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from ordinalage.console import stderr_console
from ordinalage.posterior.calibration import N_BINS
from ordinalage.posterior.metrics import SCALAR_METRICS
from ordinalage.reporting.formatting import METHOD_TITLES, METRIC_TITLES, SHORT_TITLES, fmt, row_interval


def metrics_table(result: Mapping[str, Any], title: str = "metrics") -> Table:
    """Every scalar metric beside the baseline (if any)."""
    baseline = result.get("baseline") or {}
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("model", justify="right")
    source = result.get("baseline_source")
    table.add_column(f"baseline ({source})" if source else "baseline", justify="right")
    for key in SCALAR_METRICS:
        table.add_row(METRIC_TITLES.get(key, key), fmt(result.get(key)), fmt(baseline.get(key)))
    return table


def groups_table(result: Mapping[str, Any]) -> Table:
    """One row per age group: true count, precision, recall, F1, MAE."""
    table = Table(title="per age group")
    for name, justify in [("group", "left"), ("n", "right"), ("precision", "right"), ("recall", "right"),
                          ("F1", "right"), ("MAE", "right")]:
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for g in result.get("groups", []):
        table.add_row(g["label"], fmt(g["n"]), fmt(g["precision"]), fmt(g["recall"]), fmt(g["f1"]), fmt(g["mae"]))
    return table


def confusion_table(confusion: Sequence[Sequence[int]], labels: Sequence[str]) -> Table:
    """Counts, rows = true group, columns = predicted group; the diagonal in bold."""
    table = Table(title="confusion (rows: true, columns: predicted)")
    table.add_column("true \\ pred")
    for label in labels:
        table.add_column(label, justify="right")
    for i, row in enumerate(confusion):
        cells = [f"[bold]{v}[/bold]" if i == j else str(v) for j, v in enumerate(row)]
        table.add_row(labels[i], *cells)
    return table


def print_evaluation(result: Mapping[str, Any], console: Console | None = None, title: str = "metrics") -> None:
    """Metrics beside baseline, per-group rows and the confusion matrix, on stderr."""
    console = console or stderr_console()
    console.print(metrics_table(result, title=title))
    console.print(groups_table(result))
    labels = [g["label"] for g in result.get("groups", [])]
    console.print(confusion_table(result.get("confusion", []), labels))
    skipped = result.get("skipped") or []
    if skipped:
        console.print(f"[yellow]{len(skipped)} unreadable image(s) skipped[/yellow]")


def compare_table(rows: Sequence[Mapping[str, Any]], info_columns: Sequence[str], metric_columns: Sequence[str],
                  best_rows: Mapping[str, set[int]]) -> Table:
    """One row per run; the best value of each metric column in bold green with a '*' (short
    metric headers, explained in the caption)."""
    legend = ", ".join(f"{SHORT_TITLES[c]}={c}" for c in metric_columns if c in SHORT_TITLES)
    table = Table(title="runs (best per column marked *)", caption=legend)
    table.add_column("run")
    for c in info_columns:
        table.add_column(c)
    for c in metric_columns:
        table.add_column(SHORT_TITLES.get(c, c), justify="right", no_wrap=True)
    for i, row in enumerate(rows):
        cells = [fmt(row.get(c)) for c in info_columns]
        for c in metric_columns:
            text = fmt(row.get(c))
            cells.append(f"[bold green]{text}*[/bold green]" if i in best_rows.get(c, set()) else text)
        table.add_row(str(row["run"]), *cells)
    return table


def print_wide(table: Table, console: Console | None = None) -> None:
    """Print `table` without squeezing numbers into '…': widen the console to the table if needed."""
    console = console or stderr_console()
    need = Measurement.get(console, console.options.update_width(10_000), table).maximum
    if need > console.width:
        console = Console(stderr=console.stderr, width=need)
    console.print(table)


def interval_table(d: Mapping[str, Any]) -> Table:
    """Coverage and mean width, overall and per true age group."""
    title = (f"{d['level']:.0%} age interval: {METHOD_TITLES.get(d['method'], d['method'])}, "
             f"calibrated on {d['n_cal']} validation images")
    table = Table(title=title, caption=f"target coverage >= {d['level']:.3f}")
    for name in ("group", "n", "coverage", "mean width (years)"):
        table.add_column(name, justify="left" if name == "group" else "right")
    for g in d.get("per_group", []):
        table.add_row(g["label"], fmt(g["n"]), fmt(g["coverage"]), fmt(g["mean_width"], 2))
    table.add_row("[bold]all[/bold]", fmt(d["n"]), f"[bold]{fmt(d['coverage'])}[/bold]",
                  f"[bold]{fmt(d['mean_width'], 2)}[/bold]")
    return table


def threshold_table_rich(rows: Sequence[Mapping[str, Any]]) -> Table:
    """One row per (threshold, challenge): counts and the two error rates."""
    table = Table(title="age threshold: accept when estimate >= challenge age",
                  caption="false accept: true < threshold but accepted; false reject: true >= threshold but rejected")
    for name in ("threshold", "challenge", "n under", "n over", "false accept", "false reject"):
        table.add_column(name, justify="right")
    for r in rows:
        table.add_row(str(r["threshold"]), str(r["challenge"]), str(r["n_under"]), str(r["n_over"]),
                      fmt(r["false_accept"]), fmt(r["false_reject"]))
    return table


def _error_table(title: str, first: str, rows: Sequence[Mapping[str, Any]], key: str, caption: str | None = None
                 ) -> Table:
    table = Table(title=title, caption=caption)
    for name in (first, "n", "signed error [95% CI]", "MAE [95% CI]"):
        table.add_column(name, justify="left" if name == first else "right")
    for r in rows:
        table.add_row(str(r[key]), fmt(r["n"]), row_interval(r, "bias"), row_interval(r, "mae"))
    return table


def breakdown_tables(d: Mapping[str, Any], max_age_rows: int = 25, min_n: int = 10) -> list[Table]:
    """By-age table (all years when few, else the `max_age_rows // 2` years with the highest MAE among
    those with >= min_n images), one table per attribute, and a gaps table."""
    tables = []
    ages = list(d.get("by_age", []))
    if len(ages) <= max_age_rows:
        tables.append(_error_table("error by true age (years)", "age", ages, "age"))
    else:
        k = max_age_rows // 2
        worst = sorted((r for r in ages if r["n"] >= min_n), key=lambda r: -r["mae"])[:k]
        tables.append(_error_table(f"error by true age: the {len(worst)} years with the highest MAE (n >= {min_n})",
                                   "age", sorted(worst, key=lambda r: r["age"]), "age",
                                   caption=f"{len(ages)} years in all: see metrics.json and the error-by-age PNG"))
    for name, rows in d.items():
        if name in ("by_age", "gaps"):
            continue
        tables.append(_error_table(f"error by {name}", name, rows, "value"))
    gaps = d.get("gaps") or {}
    if gaps:
        table = Table(title="largest gap between groups (highest minus lowest, 95% CI)")
        for name in ("attribute", "MAE gap", "between", "signed-error gap", "between"):
            table.add_column(name, justify="left" if name in ("attribute", "between") else "right")
        for name, g in gaps.items():
            if not g:
                table.add_row(name, "-", "fewer than two groups with enough images", "-", "")
                continue
            table.add_row(name, row_interval(g, "mae_gap"), f"{g['mae_high']} vs {g['mae_low']}", row_interval(g, "bias_gap"),
                          f"{g['bias_high']} vs {g['bias_low']}")
        tables.append(table)
    return tables


def calibration_table(d: Mapping[str, Any]) -> Table:
    """ECE before (and after temperature scaling)."""
    table = Table(title=f"age-group probability calibration (top-label ECE, {d.get('n_bins', N_BINS)} bins)")
    for name in ("", "ECE", "temperature"):
        table.add_column(name, justify="left" if not name else "right")
    table.add_row("model", fmt(d["ece"]), "1")
    if d.get("T") is not None:
        table.add_row("temperature-scaled (fitted on val)", fmt(d["ece_after"]), fmt(d["T"]))
    return table


def print_decisions(metrics: Mapping[str, Any], console: Console) -> None:
    """Print every decision table whose key is present in `metrics`."""
    if metrics.get("interval"):
        console.print(interval_table(metrics["interval"]))
    if metrics.get("threshold"):
        console.print(threshold_table_rich(metrics["threshold"]))
    if metrics.get("breakdown"):
        for table in breakdown_tables(metrics["breakdown"]):
            console.print(table)
    if metrics.get("calibration"):
        console.print(calibration_table(metrics["calibration"]))


def print_prior(info: Mapping[str, Any], console: Console) -> None:
    """Both rows, as trained and adapted to the prior, in one small table."""
    mode = info["mode"] + (f" ({info['file']})" if info.get("file") else "")
    table = Table(title=f"age mix: as trained vs adapted ({mode})")
    for col in ("", "MAE", "accuracy", "one-off", "CA(5)"):
        table.add_column(col, justify="right")
    for name in ("as_trained", "adapted"):
        m = info.get(name) or {}
        table.add_row(name.replace("_", " "), *(f"{m[k]:.3f}" if m.get(k) is not None else "-"
                                                 for k in ("mae", "accuracy", "one_off", "ca5")))
    console.print(table)
