"""The facts a model card states, measured: metrics.json and predictions.csv of one evaluation,
95% bootstrap intervals of the per-image metrics, and the error per age group and per attribute of
the evaluated images (gender and race from UTKFace names, the data source when there are several,
and any attribute the evaluation was broken down by with `--by`). `reporting.model_card` renders
them as MODEL_CARD.md, written by `evaluate` into its output folder and by `ordinalage report RUN
--card`.

Confidence intervals: `scipy.stats.bootstrap` (percentile, 2000 resamples) over the images of
predictions.csv; the per-group rows use `breakdown.error_stats` with the breakdown's per-cell
generators, so a row's interval depends only on its own images and the seed. Synthetic faces carry
drawn genders and skin tones in their names, not people's: the card gives no attribute sections for
them unless the evaluation was asked for a breakdown.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from ordinalage.atomic import atomic_write_text
from ordinalage.data.records import Record
from ordinalage.evaluation.breakdown import (
    by_attribute,
    cell_rng,
    error_stats,
    largest_gap,
    utkface_attributes,
)
from ordinalage.evaluation.predictions import read_predictions
from ordinalage.reporting.card import (
    CARD_NAME,
    read_config,
)
from ordinalage.reporting.model_card import CardFacts, render_model_card, spec_kind_path
from ordinalage.runs.rundir import read_json_object

#: attributes read from the images' names or records (besides any the evaluation was broken down by)
CARD_ATTRIBUTES = ("gender", "race", "source")
#: source kinds whose file names carry people's gender and race (UTKFace's naming)
NAMED_KINDS = ("utkface",)


# ---------------------------------------------------------------------------------------------
# inputs


def _match_source(path: str, specs: Sequence[str]) -> str | None:
    """The data spec a file came from: its folder (absolute, or the spec folder's name among the
    file's parents); the only spec when there is one."""
    if len(specs) == 1:
        return specs[0]
    file_path = Path(path)
    for spec in specs:
        kind, folder = spec_kind_path(spec)
        if folder is None:
            if kind == "synth" and any(p.startswith("synth-") for p in file_path.parent.parts):
                return spec
            continue
        absolute = os.path.abspath(os.path.expanduser(folder))
        if str(file_path).startswith(absolute.rstrip(os.sep) + os.sep) or Path(folder).name in file_path.parent.parts:
            return spec
    return None


def data_attributes(paths: Sequence[str], specs: Sequence[str], records: Sequence[Record] | None = None,
                    ) -> dict[str, list[Any]]:
    """Attributes of the evaluated images (one value per image, None = unknown) that the card breaks
    the error down by: `source` (the data spec; only when there are several), and `gender`/`race`
    from UTKFace names (utkface sources) or from the records' meta (e.g. Adience, IMDB-WIKI gender).
    Attributes with no known value are left out."""
    by_path = {r.path: r for r in records or ()}
    sources: list[str | None] = []
    out: dict[str, list[Any]] = {"gender": [], "race": []}
    for p in paths:
        rec = by_path.get(p)
        src = rec.source if rec is not None and rec.source not in ("", "split.csv") else _match_source(p, specs)
        sources.append(src)
        kind = spec_kind_path(src)[0] if src else None
        named = utkface_attributes(p) if kind in NAMED_KINDS else {}
        meta = rec.meta if rec is not None and kind != "synth" else {}
        for key in ("gender", "race"):
            value = meta.get(key, named.get(key))
            out[key].append(value)
    result = {k: v for k, v in out.items() if any(x is not None for x in v)}
    if len({s for s in sources if s is not None}) > 1:
        result["source"] = sources
    return result


# ---------------------------------------------------------------------------------------------
# statistics


def metric_intervals(pred: Mapping[str, Any], seed: int = 0, n_resamples: int = 2000,
                     confidence: float = 0.95) -> dict[str, dict[str, float | None]]:
    """{metric: {value, lo, hi}} for the per-image means (MAE, signed error, accuracy, one-off, CA(3),
    CA(5)): `scipy.stats.bootstrap`, percentile method, over the images."""
    err = np.asarray(pred["pred_age"], float) - np.asarray(pred["true_age"], float)
    gap = np.abs(np.asarray(pred["pred_group"]) - np.asarray(pred["true_group"]))
    per_image = {"mae": np.abs(err), "bias": err, "accuracy": (gap == 0).astype(float),
                 "one_off": np.where(gap == 0, 1.0, np.where(gap == 1, 0.5, 0.0)),
                 "ca3": (np.abs(err) <= 3).astype(float), "ca5": (np.abs(err) <= 5).astype(float)}
    names = list(per_image)
    data = np.stack([per_image[k] for k in names])
    values = data.mean(axis=1)
    lo = hi = [None] * len(names)
    if data.shape[1] >= 2:
        batch = min(n_resamples, max(10, 4_000_000 // data.size))  # bounded memory on large test sets
        res = stats.bootstrap((data,), np.mean, axis=-1, n_resamples=n_resamples, confidence_level=confidence,
                              method="percentile", rng=np.random.default_rng(seed), batch=batch)
        lo = [float(v) for v in res.confidence_interval.low]
        hi = [float(v) for v in res.confidence_interval.high]
    return {k: {"value": float(values[i]), "lo": lo[i], "hi": hi[i]} for i, k in enumerate(names)}


def group_rows(pred: Mapping[str, Any], seed: int = 0, n_resamples: int = 2000) -> list[dict[str, Any]]:
    """One row per age group of the truth: {value (label), n, bias(+CI), mae(+CI)}."""
    err = np.asarray(pred["pred_age"], float) - np.asarray(pred["true_age"], float)
    tg = np.asarray(pred["true_group"])
    return [{"value": lab, **error_stats(err[tg == g], cell_rng(seed, f"group={lab}"), n_resamples)}
            for g, lab in enumerate(pred["labels"])]


# ---------------------------------------------------------------------------------------------
# the card


def card_facts(eval_dir: str | Path, run: str | Path | None = None, records: Sequence[Record] | None = None,
               seed: int = 0, n_resamples: int = 2000) -> CardFacts:
    """Everything the card of the evaluation in `eval_dir` (metrics.json, predictions.csv) of the run
    folder `run` (an ensemble's folder too; None: a checkpoint without a run folder) states.
    `records`: the evaluated records when at hand (their sources and meta); else sources come from
    the run's config."""
    eval_dir = Path(eval_dir)
    metrics = read_json_object(eval_dir / "metrics.json")
    pred = read_predictions(eval_dir / "predictions.csv")
    run = Path(run) if run is not None else None
    cfg = read_config(run) if run is not None else {}
    data_specs = metrics.get("data") if isinstance(metrics.get("data"), list) else \
        list((cfg.get("data") or {}).get("sources") or [])
    attrs = data_attributes(pred["paths"], data_specs, records)
    breakdown = metrics.get("breakdown") or {}
    measured = {k: v for k, v in breakdown.items() if k not in ("by_age", "gaps")}
    from ordinalage.models.model import model_traits  # the registries (imports torch): only for a card

    head, backbone = model_traits(cfg.get("model"))
    facts = CardFacts(eval_dir=eval_dir, run=run, metrics=metrics, pred=pred, config=cfg, data_specs=data_specs,
                      cis=metric_intervals(pred, seed, n_resamples), by_group=group_rows(pred, seed, n_resamples),
                      measured=set(measured), head=head, backbone=backbone)
    t, p = pred["true_age"], pred["pred_age"]
    for name in [*CARD_ATTRIBUTES, *measured]:
        if name in facts.attr_rows:
            continue
        if name in measured:
            facts.attr_rows[name], facts.attr_gaps[name] = list(measured[name]), (breakdown.get("gaps") or {}).get(name)
        elif name in attrs:
            values = attrs[name]
            facts.attr_rows[name] = by_attribute(t, p, values, name, seed, n_resamples)
            facts.attr_gaps[name] = largest_gap(t, p, values, facts.attr_rows[name], name, seed, 10, n_resamples)
    return facts


def build_model_card(eval_dir: str | Path, run: str | Path | None = None, records: Sequence[Record] | None = None,
                     seed: int = 0, n_resamples: int = 2000, today: date | None = None) -> str:
    """The Markdown card of the evaluation in `eval_dir`: `card_facts` rendered by `render_model_card`."""
    return render_model_card(card_facts(eval_dir, run, records, seed, n_resamples), today)


def write_model_card(eval_dir: str | Path, run: str | Path | None = None, records: Sequence[Record] | None = None,
                     out: str | Path | None = None, facts: CardFacts | None = None) -> Path:
    """Write the card of the evaluation in `eval_dir` as `out` (default `eval_dir`/MODEL_CARD.md);
    `facts`: its `card_facts` when the caller has them already. Returns the path."""
    path = Path(out) if out is not None else Path(eval_dir) / CARD_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, render_model_card(facts if facts is not None else card_facts(eval_dir, run, records)))
    return path
