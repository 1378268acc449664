"""`ordinalage prior estimate`: the age mix of a set of images, from the model's predictions alone.

EM (`prior.em_prior`) on the model's label distributions over the images; the mix is stored as a
prior.json (with a PNG against the training mix) for later `--prior FILE` use by `predict` and
`serve`, which see one photo at a time and cannot estimate a mix themselves.

The images need no ages: besides the labelled specs, `photos:PATH` takes any folder of photos, and
every face in them is found and cropped as `predict` does (`predict.predict_photos`, `detector`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ordinalage.errors import UsageError
from ordinalage.posterior.prior import DEFAULT_SMOOTH, PriorEstimate, em_prior
from ordinalage.posterior.prior_files import write_prior
from ordinalage.reporting.plots import plot_prior


def estimate_prior(run: str | Path, data: Sequence[str] | None = None, out: str | Path = "prior.json",
                   split: str = "all", device: str = "auto", show: bool = True,
                   detector: str = "haar") -> dict[str, Any]:
    """Estimate and write the age mix of `data` (or of the run's own `split`); returns a summary.

    `photos:PATH` specs in `data` are photos without ages: each face found by `detector` counts
    once (`n_faces`); other specs are read as labelled data (ages unused)."""
    from ordinalage.data.photos import is_photos_spec
    from ordinalage.evaluation.model_predictions import predict_records, select_records, shipped_model
    from ordinalage.posterior.adapt import check_distribution
    from ordinalage.runs.checkpoint import load_model
    from ordinalage.runs.runtime import select_device

    if not Path(run).exists():
        shipped = shipped_model(run, data)
        if shipped is None:
            raise UsageError(f"{run}: no such run folder or checkpoint")
        run = shipped.path
    out = Path(out)
    if out.suffix.lower() != ".json":
        raise UsageError(f"{out}: the prior is written as JSON; give a path ending in .json")
    photos = [d for d in data or () if is_photos_spec(d)]
    labelled = [d for d in data or () if not is_photos_spec(d)]
    if photos and split != "all":
        raise UsageError(f"photos: specs have no splits; estimate over all their faces (split 'all'), not {split!r}")
    loaded = load_model(run, select_device(device))
    parts: list[np.ndarray] = []
    n_faces = 0
    if labelled or not photos:
        try:
            records, _ = select_records(loaded, loaded.run_dir, labelled or None, split)
        except UsageError as exc:
            hint = [d for d in labelled if d.startswith("folder:")]
            if hint and ("no images" in str(exc) or "must be an age group" in str(exc)):
                raise UsageError(f"{exc}; folder: expects one sub-folder per age group (21-30/, 71+/); "
                                 f"for plain photos without ages use photos:{hint[0][len('folder:'):]}") from None
            raise
        parts.append(predict_records(loaded, records, device=device, show=show).label_proba)
    if photos:
        from ordinalage.inference.detection.registry import make_detector
        from ordinalage.inference.predictor import FacePredictor, predict_photos

        face_detector = make_detector(detector)
        predictor = FacePredictor(run, device, detector=face_detector.name)
        for spec in photos:
            records_p, res = predict_photos(spec, predictor, face_detector, show=show)
            parts.append(res.label_proba)
            n_faces += len(records_p)
    label_proba = np.concatenate(parts) if all(p is not None for p in parts) else None
    check_distribution(label_proba, loaded.train_prior, loaded.head_traits)
    n = int(np.shape(label_proba)[0])
    meta: dict[str, Any] = {"checkpoint": str(loaded.checkpoint_path), "data": list(data or [split])}
    if photos:
        meta.update(n_faces=n_faces, detector=face_detector.name)  # the one used (`auto` resolved)
    est = estimate_prior_for(label_proba, loaded.label_ages, loaded.train_prior, out, out.with_suffix(".png"),
                             meta=meta)
    result = {"out": str(out), "png": str(out.with_suffix(".png")), "n_images": n, "n_iter": est.n_iter,
              "converged": est.converged}
    if photos:
        result.update(n_faces=n_faces, detector=face_detector.name)
    if show:
        from ordinalage.console import stderr_console

        what = f"{n} faces and images" if photos and labelled else (f"{n} faces" if photos else f"{n} images")
        stderr_console().print(f"estimated the age mix of {what} in {est.n_iter} EM iterations"
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
