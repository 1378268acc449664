"""Cross-dataset results: one metrics row per data source (and the combined row) for an evaluation
over several `--data` specs, and a runs x datasets MAE matrix with a heat-map PNG for `compare`.

Every Record carries the spec it was read from (`Record.source`), so the rows need only the records
and their predictions in the same order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ordinalage.data.records import Record
from ordinalage.groups import AgeGroups
from ordinalage.posterior.metrics import SCALAR_METRICS, compute_metrics

ALL = "all"


def per_source_rows(records: Sequence[Record], pred_age: Sequence[float] | np.ndarray, groups: AgeGroups,
                    true_age: Sequence[float] | np.ndarray | None = None,
                    pred_group: Sequence[int] | np.ndarray | None = None) -> list[dict[str, Any]]:
    """One row of scalar metrics per source (in first-seen order), then the combined row (`source`
    = "all"). `true_age` defaults to the records' ages; `pred_group` to the predicted ages binned
    into `groups` (ages outside go to the nearest group). Records outside every group are the
    caller's to drop first (prepare_data's drop-and-count rule)."""
    n = len(records)
    pred = np.asarray(pred_age, dtype=float)
    truth = np.asarray([r.age for r in records] if true_age is None else true_age, dtype=float)
    if not len(pred) == len(truth) == n:
        raise ValueError(f"per_source_rows: {n} records, {len(pred)} predictions, {len(truth)} true ages")
    true_group = groups.indices(truth)
    if (true_group < 0).any():
        raise ValueError("per_source_rows: some true ages lie outside the age groups (drop them first)")
    pg = groups.clip_indices(pred) if pred_group is None else np.asarray(pred_group, dtype=np.int64)
    sources = np.array([r.source for r in records], dtype=object)
    rows = []
    for name in [*dict.fromkeys(sources.tolist()), ALL]:
        mask = np.ones(n, dtype=bool) if name == ALL else sources == name
        metrics = compute_metrics(truth[mask], pred[mask], true_group[mask], pg[mask], len(groups), groups.labels)
        rows.append({"source": name, **{k: metrics[k] for k in SCALAR_METRICS if k in metrics}})
    return rows


def mae_matrix(results: Mapping[str, Sequence[Mapping[str, Any]]], metric: str = "mae"
               ) -> tuple[list[str], list[str], np.ndarray]:
    """(runs, datasets, values[run, dataset]) from {run: per_source_rows(...)}; NaN where a run has no
    row for a dataset. Datasets keep first-seen order, with the combined row last."""
    runs = list(results)
    datasets = list(dict.fromkeys(row["source"] for rows in results.values() for row in rows if row["source"] != ALL))
    if any(row["source"] == ALL for rows in results.values() for row in rows):
        datasets.append(ALL)
    values = np.full((len(runs), len(datasets)), np.nan)
    for i, run in enumerate(runs):
        for row in results[run]:
            value = row.get(metric)
            if value is not None and math.isfinite(float(value)):
                values[i, datasets.index(row["source"])] = float(value)
    return runs, datasets, values


