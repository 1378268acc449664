"""Critical-difference diagram (Demsar 2006, JMLR 7:1-30, Fig. 1-2) with matplotlib's object API.

No pyplot global state: a :class:`matplotlib.figure.Figure` on a ``FigureCanvasAgg``, safe in
servers, threads and headless runs. The critical difference comes from
``ordinalage.evaluation.paired.nemenyi_cd`` and the average ranks from ``average_ranks``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def _rank_vector(average_ranks: Sequence[float]) -> np.ndarray:
    """``average_ranks`` as a finite 1-D float array, else ValueError."""
    ranks = np.asarray(average_ranks, dtype=float).ravel()
    if not np.all(np.isfinite(ranks)):
        raise ValueError("average ranks hold NaN or infinite values")
    return ranks


def cliques(average_ranks: Sequence[float], cd: float) -> list[tuple[int, ...]]:
    """Maximal groups of methods whose average ranks all differ by less than ``cd``.

    Methods are sorted by average rank (stable, so ties keep their input order); a group is a run of
    consecutive methods in that order whose highest and lowest ranks differ by less than ``cd``.
    Returns the maximal groups with at least 2 members, as tuples of *input* indices listed in rank
    order, the groups ordered by their best (lowest) rank. Groups may overlap.
    """
    ranks = _rank_vector(average_ranks)
    if not cd >= 0:
        raise ValueError(f"the critical difference must be >= 0, got {cd}")
    order = np.argsort(ranks, kind="stable")
    sorted_ranks = ranks[order]
    groups: list[tuple[int, ...]] = []
    last_end = -1
    for start in range(len(order)):
        end = start
        while end + 1 < len(order) and sorted_ranks[end + 1] - sorted_ranks[start] < cd:
            end += 1
        # the run's end never moves left as start moves right: a run ending where the previous one
        # ended is inside it, so only a run reaching further is maximal
        if end > start and end > last_end:
            groups.append(tuple(int(i) for i in order[start : end + 1]))
        last_end = max(last_end, end)
    return groups


def plot_cd_diagram(
    names: Sequence[str],
    average_ranks: Sequence[float],
    cd: float,
    path: str | Path,
    title: str | None = None,
) -> Path:
    """Draw a Demsar-style critical-difference diagram and save it as a PNG at ``path``.

    An axis of average ranks 1..k at the top (rank 1 = best, on the left), the critical difference as
    a labelled bar above it, each method's name (with its average rank) joined to its rank by an
    elbow line (the better half on the left, the rest on the right), and a thick bar under the axis
    for each maximal group of methods whose ranks differ by less than ``cd`` (:func:`cliques`):
    methods joined by a bar are not shown to differ. Returns the path written.
    """
    ranks = _rank_vector(average_ranks)
    k = len(ranks)
    if len(names) != k:
        raise ValueError(f"{len(names)} names but {k} average ranks")
    if k < 2:
        raise ValueError(f"a critical-difference diagram needs at least 2 methods, got {k}")
    if not (math.isfinite(cd) and cd >= 0):
        raise ValueError(f"the critical difference must be a finite number >= 0, got {cd}")
    groups = cliques(ranks, cd)
    order = np.argsort(ranks, kind="stable")
    n_left = math.ceil(k / 2)

    # layout in data units: x is the rank, y grows downwards from the rank axis at y = 0
    hi_rank = max(float(k), float(ranks.max()))
    group_y0, group_step = 0.35, 0.25
    label_y0 = group_y0 + group_step * len(groups) + 0.25
    label_step = 0.45
    bottom = label_y0 + label_step * (max(n_left, k - n_left) - 1) + 0.4
    margin = max(0.6, 0.15 * (hi_rank - 1))
    x_left, x_right = 1.0 - margin, hi_rank + margin

    fig = Figure(figsize=(max(6.0, 1.1 * k + 3.0), 1.6 + 0.42 * bottom))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.set_xlim(x_left - 0.05, x_right + 0.05)
    ax.set_ylim(bottom, -1.35)
    ax.set_axis_off()

    _draw_axis(ax, hi_rank, cd)

    # method names joined to their ranks
    for position, index in enumerate(order):
        rank = float(ranks[index])
        label = f"{names[index]} ({rank:.2f})"
        if position < n_left:
            y = label_y0 + label_step * position
            ax.plot([rank, rank, x_left], [0.0, y, y], color="black", lw=0.9)
            ax.text(x_left - 0.05, y, label, ha="right", va="center", fontsize=10)
        else:
            y = label_y0 + label_step * (k - 1 - position)
            ax.plot([rank, rank, x_right], [0.0, y, y], color="black", lw=0.9)
            ax.text(x_right + 0.05, y, label, ha="left", va="center", fontsize=10)
        ax.plot([rank], [0.0], marker="o", markersize=4, color="black")

    # thick bars joining the groups not shown to differ
    for g, group in enumerate(groups):
        y = group_y0 + group_step * g
        lo, hi = float(ranks[group[0]]), float(ranks[group[-1]])
        ax.plot([lo - 0.04, hi + 0.04], [y, y], color="black", lw=4.0, solid_capstyle="round")

    if title:
        fig.suptitle(title, fontsize=11)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=120, bbox_inches="tight")
    return out


def _draw_axis(ax: Any, hi_rank: float, cd: float) -> None:
    """The rank axis with its ticks and labels, and the critical-difference bar above it from rank 1."""
    ax.plot([1.0, hi_rank], [0.0, 0.0], color="black", lw=1.2)
    for tick in range(1, math.floor(hi_rank) + 1):
        ax.plot([tick, tick], [0.0, -0.12], color="black", lw=1.2)
        ax.text(tick, -0.18, str(tick), ha="center", va="bottom", fontsize=10)
    for half in np.arange(1.5, hi_rank, 1.0):
        ax.plot([half, half], [0.0, -0.06], color="black", lw=0.8)
    ax.text((1.0 + hi_rank) / 2, -0.55, "average rank (1 = best)", ha="center", va="bottom", fontsize=9)
    cd_y = -1.0
    ax.plot([1.0, 1.0 + cd], [cd_y, cd_y], color="black", lw=1.5)
    for end in (1.0, 1.0 + cd):
        ax.plot([end, end], [cd_y - 0.07, cd_y + 0.07], color="black", lw=1.5)
    ax.text(1.0 + cd / 2, cd_y - 0.1, f"CD = {cd:.2f}", ha="center", va="bottom", fontsize=9)
