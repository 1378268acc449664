"""`ordinalage data stats`: images per age group and split, before and after caps and sampling."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from ordinalage.config import DataConfig
from ordinalage.data.prepare import PreparedData, prepare_data
from ordinalage.data.records import SPLITS
from ordinalage.data.sampling import group_counts


def _split_summary(counts: dict[str, list[int]]) -> dict[str, dict]:
    return {name: {"n": int(sum(c)), "counts": list(c)} for name, c in counts.items()}


def stats_dict(prep: PreparedData) -> dict:
    """The JSON-ready summary of a PreparedData."""
    groups = prep.groups
    all_counts = group_counts(groups.indices([r.age for r in prep.all]), len(groups)) if prep.all else \
        np.zeros(len(groups), dtype=int)
    report = prep.report
    return {
        "n": prep.n_read,
        "n_used": prep.n_read - prep.dropped,
        "groups": [{"label": g.label, "lo": g.lo, "hi": g.hi if math.isfinite(g.hi) else None, "count": int(c)}
                   for g, c in zip(groups.groups, all_counts, strict=True)],
        "dropped": prep.dropped,
        "dropped_ages": {str(k): v for k, v in prep.dropped_ages.items()},
        "splits": _split_summary(report["before"]),
        "sampling": {
            "mode": report["sampling"],
            "caps": report["caps"],
            "after": _split_summary(report["after"]),
            "class_weights": None if prep.class_weights is None else [round(float(w), 6) for w in prep.class_weights],
        },
    }


def stats_table(result: dict) -> Table:
    """Rich table: one row per group, columns for every split (and after sampling where it differs)."""
    before, after = result["splits"], result["sampling"]["after"]
    changed = [s for s in SPLITS if before[s]["counts"] != after[s]["counts"]]
    table = Table(title=f"{result['n']} images read, {result['dropped']} dropped (age outside the groups)")
    table.add_column("group")
    for col in ["all", *SPLITS, *(f"{s} after" for s in changed)]:
        table.add_column(col, justify="right")
    for i, g in enumerate(result["groups"]):
        row = [g["label"], str(g["count"]), *(str(before[s]["counts"][i]) for s in SPLITS),
               *(str(after[s]["counts"][i]) for s in changed)]
        table.add_row(*row)
    table.add_section()
    table.add_row("total", str(result["n_used"]), *(str(before[s]["n"]) for s in SPLITS),
                  *(str(after[s]["n"]) for s in changed))
    if changed or result["sampling"]["mode"] != "none":
        caps = "/".join("-" if c is None else str(c) for c in result["sampling"]["caps"].values())
        table.caption = f"sampling: {result['sampling']['mode']}; per-group caps train/val/test: {caps}"
    return table


def plot_balance(result: dict, plot_dir: str | Path) -> list[str]:
    """PNG bar charts of images per group and split, before and after sampling; returns the file paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(plot_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels = [g["label"] for g in result["groups"]]
    x = np.arange(len(labels))
    width = 0.8 / len(SPLITS)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, (title, counts) in zip(axes, [("before sampling", result["splits"]),
                                          (f"after sampling ({result['sampling']['mode']})",
                                           result["sampling"]["after"])], strict=True):
        for k, split in enumerate(SPLITS):
            ax.bar(x + (k - 1) * width, counts[split]["counts"], width, label=f"{split} ({counts[split]['n']})")
        ax.set_xticks(x, labels)
        ax.set_xlabel("age group (years)")
        ax.set_title(title)
        ax.margins(y=0.18)
        ax.legend(loc="upper center", ncols=len(SPLITS), fontsize="small")
    axes[0].set_ylabel("images")
    fig.suptitle(f"group balance: {result['n_used']} images in groups, {result['dropped']} dropped")
    fig.tight_layout()
    path = out / "group_balance.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return [str(path)]


def data_stats(cfg: DataConfig, plot_dir: str | None, show: bool) -> dict:
    """Counts per age group and split for the data config (built by the CLI: `config.data_config`)."""
    result = stats_dict(prepare_data(cfg, progress=show))
    result["sources"] = list(cfg.sources)
    if plot_dir:
        result["plots"] = plot_balance(result, plot_dir)
    if show:
        console = Console(stderr=True)
        console.print(stats_table(result))
        for path in result.get("plots", []):
            console.print(f"wrote {path}")
    return result
