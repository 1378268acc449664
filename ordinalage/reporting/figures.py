"""Figures that more than one layer draws (evaluation's reports, training's TensorBoard images):
matplotlib on Agg canvases, no pyplot state."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def new_figure(width: float, height: float) -> Figure:
    """A matplotlib figure on its own Agg canvas (no pyplot state; safe in threads and servers)."""
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def confusion_figure(confusion: Sequence[Sequence[int]], labels: Sequence[str], normalize: bool = False,
                     title: str = "confusion matrix") -> Figure:
    """A confusion-matrix figure (Agg canvas): counts, or shares of each true group (rows sum to 1;
    '-' in a row whose group has no true image)."""
    cm = np.asarray(confusion, dtype=float)
    totals = cm.sum(axis=1, keepdims=True)
    values = np.divide(cm, totals, out=np.zeros_like(cm), where=totals > 0) if normalize else cm
    k = len(labels)
    side = max(4.0, 0.7 * k + 2.0)
    fig = new_figure(side + 1.0, side)
    ax = fig.add_subplot()
    vmax = 1.0 if normalize else max(float(values.max()), 1.0)
    im = ax.imshow(values, cmap="Blues", vmin=0.0, vmax=vmax)
    fig.colorbar(im, ax=ax, label="share of true group" if normalize else "images")
    ax.set_xticks(range(k), labels=list(labels), rotation=45, ha="right")
    ax.set_yticks(range(k), labels=list(labels))
    ax.set_xlabel("predicted age group")
    ax.set_ylabel("true age group")
    ax.set_title(title)
    for i in range(k):
        for j in range(k):
            v = values[i, j]
            text = str(int(v)) if not normalize else f"{v:.2f}" if totals[i, 0] > 0 else "-"
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    color="white" if v > 0.6 * vmax else "black")
    return fig
