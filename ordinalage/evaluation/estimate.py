"""`ordinalage prior estimate`: the age mix of a set of images, from the model's predictions alone.

EM (`prior.em_prior`) on the model's label distributions over the images; the mix is stored as a
prior.json (with a PNG against the training mix) for later `--prior FILE` use by `predict` and
`serve`, which see one photo at a time and cannot estimate a mix themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ordinalage.errors import UsageError
from ordinalage.evaluation.report import plot_prior
from ordinalage.posterior.prior import DEFAULT_SMOOTH, PriorEstimate, em_prior, write_prior


def estimate_prior(run: str | Path, data: Sequence[str] | None = None, out: str | Path = "prior.json",
                   split: str = "all", device: str = "auto", show: bool = True) -> dict[str, Any]:
    """Estimate and write the age mix of `data` (or of the run's own `split`); returns a summary."""
    from ordinalage.evaluation.evaluate import _select_records, predict_records
    from ordinalage.posterior.adapt import check_distribution
    from ordinalage.runs.checkpoint import load_model
    from ordinalage.runs.runtime import select_device

    if not Path(run).exists():
        raise UsageError(f"{run}: no such run folder or checkpoint")
    loaded = load_model(run, select_device(device))
    records, _ = _select_records(loaded, loaded.run_dir, data, split)
    preds = predict_records(loaded, records, device=device, show=show)
    check_distribution(preds.label_proba, loaded.train_prior, loaded.config.model.head)
    out = Path(out)
    if out.suffix.lower() != ".json":
        raise UsageError(f"{out}: the prior is written as JSON; give a path ending in .json")
    est = estimate_prior_for(preds.label_proba, loaded.label_ages, loaded.train_prior, out, out.with_suffix(".png"),
                             meta={"checkpoint": str(loaded.checkpoint_path), "data": list(data or [split])})
    result = {"out": str(out), "png": str(out.with_suffix(".png")), "n_images": len(preds), "n_iter": est.n_iter,
              "converged": est.converged}
    if show:
        from ordinalage.evaluation.report import stderr_console

        stderr_console().print(f"estimated the age mix of {len(preds)} images in {est.n_iter} EM iterations"
                               f"{'' if est.converged else ' (not converged)'}: wrote {out}")
    return result


def estimate_prior_for(label_proba: np.ndarray, label_ages: np.ndarray | Sequence[float], train_prior: np.ndarray,
                       out_json: str | Path, out_png: str | Path | None = None, smooth: float = DEFAULT_SMOOTH,
                       meta: dict[str, Any] | None = None, **em_kwargs: Any) -> PriorEstimate:
    """`ordinalage prior estimate`: EM on the images' label probabilities, the mix written as JSON
    (`write_prior`; meta holds the EM details and the training prior) and a PNG against the training mix."""
    ages = np.asarray(label_ages, dtype=np.float64)
    est = em_prior(label_proba, train_prior, smooth=smooth, label_ages=ages, **em_kwargs)
    train = np.asarray(train_prior, dtype=np.float64)
    train = train / train.sum()
    info = {"method": "em", "n_images": int(np.shape(label_proba)[0]), "smooth": smooth, "n_iter": est.n_iter,
            "converged": est.converged, "log_likelihood": est.log_likelihood[-1] if est.log_likelihood else None,
            "train_prior": train.tolist(), **(meta or {})}
    write_prior(out_json, est.prior, ages, info)
    if out_png is not None:
        plot_prior(out_png, ages, est.prior, train=train)
    return est
