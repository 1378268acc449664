"""`FacePredictor`: a run's model (or an ensemble's) over uint8 RGB face crops, and what it returns.

The predictor loads its members from a run folder or checkpoint (`runs.members.load_members`),
the run's crop calibration (`detection.calibration`: face_crop.json or the detector's default), and
cuts each detected face as a training chip (`crop`, in several `VIEWS`). Its model calls go through
the one inference function (`inference.infer.infer`). `load_rgb` reads whole images; `predict_photos`
applies a predictor and a detector to the images of a `photos:PATH` spec. See docs/predict.md.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ordinalage.data.decode import ImageDecodeError
from ordinalage.errors import UsageError
from ordinalage.inference.detection.calibration import (
    Exposure,
    detector_ratio,
    expose,
    load_crop_ratios,
    load_exposure,
)
from ordinalage.inference.detection.geometry import Box, ChipRatio, chip_frame, crop_face, square_corners
from ordinalage.inference.detection.interface import FaceDetector
from ordinalage.inference.detection.registry import resolve_detector_name

# Each detected face is predicted in these framings of its chip square, (scale, dx, dy) in chip
# sides, and the outputs averaged like an ensemble's: the square itself, 5% smaller and larger, 3%
# higher and lower (5x the model time per face; on the UTKFace validation faces pasted into photos
# it took 0.1-0.4 years off the MAE, benchmarks/photo_skew.py, docs/predict.md). A crop with
# `detect=False` is one view.
VIEWS: tuple[tuple[float, float, float], ...] = (
    (1.0, 0.0, 0.0), (0.95, 0.0, 0.0), (1.05, 0.0, 0.0), (1.0, 0.0, -0.03), (1.0, 0.0, 0.03))


def load_rgb(path: str | Path) -> np.ndarray:
    """A whole image as RGB uint8 (H, W, 3) at full resolution (EXIF orientation applied)."""
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        raise ImageDecodeError(path, exc.strerror or str(exc)) from None
    if data.size == 0:
        raise ImageDecodeError(path, "empty file")
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if bgr is None or bgr.size == 0:
        raise ImageDecodeError(path, "not a decodable image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


@dataclass
class FaceResults:
    """Predictions for a batch of faces: age (N,) float, group (N,) int, group_proba (N, G) float."""

    age: np.ndarray
    group: np.ndarray
    group_proba: np.ndarray
    label_proba: np.ndarray | None = None  # (N, L) the head's distribution over its labels
    age_lo: np.ndarray | None = None  # (N,) interval ends, when the predictor has an interval level
    age_hi: np.ndarray | None = None


class FacePredictor:
    """A checkpoint's model applied to uint8 RGB face crops, with the precision used in validation."""

    def __init__(self, checkpoint: str | Path | None, device: str = "auto", ratio: ChipRatio | None = None,
                 tta: bool = False, prior: str | None = None, interval: float | None = None,
                 ensemble: Sequence[str | Path] = (), detector: str = "auto",
                 views: Sequence[tuple[float, float, float]] | None = None) -> None:
        """`prior`: train | uniform | em | a prior file (`em`: the mix of each batch of faces predicted
        together); `interval`: a coverage level, from the run's calibration.json (`evaluate --interval`).
        `ensemble`: more runs or checkpoints averaged with this one (as an ensemble run folder's
        members are: their label distributions, or ages for regression heads). `ratio`: the box-to-chip
        ratio for crops; by default the run's own for `detector` (face_crop.json, written by
        `calibration.measure_crop_ratios`) or the detector's documented default (`crop_source` says which).
        `views`: the (scale, dx, dy) framings of each detected face averaged (test-time jitter;
        default `VIEWS`); ((1, 0, 0),) for the one crop. `checkpoint`: a run folder, a checkpoint, a
        shipped model's name (`ordinalage models`) or None for the default shipped model (`self.model_ref`
        says which)."""
        from ordinalage.runs.members import load_members
        from ordinalage.zoo import resolve_model

        self.model_ref = resolve_model(checkpoint)
        checkpoint = self.model_ref.path
        from ordinalage.runs.runtime import resolve_precision, select_device

        self.device = select_device(device)
        self.loaded, *self.others = load_members(checkpoint, ensemble, self.device)  # others: averaged with `loaded`
        if self.others and interval is not None:
            raise UsageError(f"{checkpoint}: intervals are calibrated per model; give one member "
                             f"({self.loaded.checkpoint_path.parent}) for `interval`", option="interval")
        self.model = self.loaded.model
        self.spec = self.loaded.input_spec
        self.groups = self.loaded.groups
        self.labels: list[str] = list(self.groups.labels)
        self.geometry = self.loaded.config.data.geometry
        self.target = self.loaded.config.model.target
        self.precision = resolve_precision(self.loaded.config.train.precision, self.device)
        run_dir = self.loaded.run_dir or self.loaded.checkpoint_path.parent
        self.crop_ratios, self.crop_source = load_crop_ratios(run_dir)
        self.exposure: Exposure | None = load_exposure(run_dir)  # None: crops as cut
        self.detector = resolve_detector_name(detector)
        self.views = tuple(tuple(float(x) for x in v) for v in (VIEWS if views is None else views))
        if not self.views or any(len(v) != 3 or v[0] <= 0 for v in self.views):
            raise UsageError(f"views: expected (scale > 0, dx, dy) triples, got {views!r}")
        self.ratio = ratio if ratio is not None else self.ratio_for(self.detector)
        if ratio is not None:
            self.crop_source = "given"
        self.tta = tta  # also predict the mirrored crop and average the logits
        self.prior = prior
        if prior is not None:
            from ordinalage.posterior.adapt import check_prior_support

            # refuse at once (regression head, or a checkpoint without a training prior), not per batch
            check_prior_support(self.loaded.train_prior, self.loaded.head_traits)
        self.calibration = None
        if interval is not None:
            from ordinalage.posterior.intervals import Calibration

            cal = Calibration.load(self.loaded.checkpoint_path.parent)
            self.calibration = cal if abs(cal.level - interval) < 1e-9 else cal.at_level(interval)

    @property
    def size(self) -> int:
        return int(self.spec.size)

    def ratio_for(self, detector: str) -> ChipRatio:
        """The box-to-chip ratio for boxes of `detector`: the run's own (face_crop.json) or the default."""
        return self.crop_ratios.get(detector) or detector_ratio(detector)

    def crop(self, rgb: np.ndarray, box: Box, view: tuple[float, float, float] | None = None) -> np.ndarray:
        """The training-chip-like crop of `box`, (size, size, 3) uint8; with several `views` (and no
        `view` given) all of them, (V, size, size, 3), which `__call__` averages. `view`: one
        (scale, dx, dy) framing (geometry.crop_face). A crop from an underexposed photo is brightened to
        the training crops' highlights (calibration.expose, `exposure`)."""
        if view is not None or len(self.views) == 1:
            return expose(crop_face(rgb, box, self.size, self.ratio, view=view or self.views[0]), self.exposure)
        return expose(np.stack([crop_face(rgb, box, self.size, self.ratio, view=v) for v in self.views]),
                      self.exposure)

    def __call__(self, crops: np.ndarray | Sequence[np.ndarray]) -> FaceResults:
        """Predict a batch of (S, S, 3) uint8 RGB crops; an item of (V, S, S, 3) is V views of one face
        (`crop` with several `views`), whose outputs are averaged like an ensemble's."""
        items = None if isinstance(crops, np.ndarray) and crops.ndim == 4 else [np.asarray(c) for c in crops]
        if items is None or all(c.ndim == 3 for c in items):
            res = self._predict(crops if items is None else np.stack(items) if items else
                                np.zeros((0, self.size, self.size, 3), np.uint8))
        else:
            counts = [1 if c.ndim == 3 else c.shape[0] for c in items]
            flat = self._predict(np.concatenate([c.reshape(-1, *c.shape[-3:]) for c in items]))
            res = self._average_views(flat, counts)
        if self.prior is not None and len(res.age):
            from ordinalage.posterior.adapt import adapt_predictions

            a = adapt_predictions(res.label_proba, self.loaded, self.prior)
            res = FaceResults(age=a.age, group=a.group, group_proba=a.group_proba, label_proba=a.label_proba)
        if self.calibration is not None and len(res.age):
            from ordinalage.posterior.intervals import predict_interval

            res.age_lo, res.age_hi = predict_interval(self.calibration, pred_age=res.age, label_proba=res.label_proba,
                                                      label_ages=self.loaded.label_ages)
        return res

    def _average_views(self, flat: FaceResults, counts: Sequence[int]) -> FaceResults:
        from ordinalage.posterior.adapt import average_outputs

        parts, k = [], 0
        for n in counts:
            sl = slice(k, k + n)
            lps = [flat.label_proba[i:i + 1] for i in range(k, k + n)] if flat.label_proba is not None else [None]
            parts.append(average_outputs(lps, [flat.age[i:i + 1] for i in range(k, k + n)],
                                         [flat.group_proba[i:i + 1] for i in range(k, k + n)], self.loaded)
                         if n > 1 else (flat.age[sl], flat.group[sl], flat.group_proba[sl],
                                        None if flat.label_proba is None else flat.label_proba[sl]))
            k += n
        return FaceResults(age=np.concatenate([p[0] for p in parts]), group=np.concatenate([p[1] for p in parts]),
                           group_proba=np.concatenate([p[2] for p in parts]).astype(float),
                           label_proba=None if flat.label_proba is None else np.concatenate([p[3] for p in parts]))

    def _predict(self, crops: np.ndarray) -> FaceResults:
        """The model (and ensemble members, averaged) over (N, S, S, 3) crops; no prior, no interval."""
        import torch

        from ordinalage.inference.infer import infer

        batch = np.ascontiguousarray(crops)
        if batch.ndim != 4 or batch.shape[1:] != (self.size, self.size, 3):
            raise ValueError(f"expected crops of shape (N, {self.size}, {self.size}, 3), got {batch.shape}")
        x = torch.from_numpy(batch).permute(0, 3, 1, 2)
        outs = [infer(m.model, [{"image": x}], input_spec=m.input_spec, device=self.device, precision=self.precision,
                      tta=self.tta) for m in (self.loaded, *self.others)]
        if len(outs) > 1:
            from ordinalage.posterior.adapt import average_outputs

            age, group, group_proba, label_proba = average_outputs(
                [o.label_proba for o in outs], [o.age for o in outs], [o.group_proba for o in outs], self.loaded)
            res = FaceResults(age=age, group=group, group_proba=group_proba.astype(float), label_proba=label_proba)
        else:
            out = outs[0]
            res = FaceResults(age=out.age, group=out.group, group_proba=out.group_proba.astype(float),
                              label_proba=out.label_proba)
        return res

    def group_of(self, age: float, group_proba: np.ndarray) -> int:
        """The group for a (smoothed) age and group distribution, by the head's own rule: the age's
        group for models of single years, the most probable group for models of groups."""
        if self.target == "age":
            return int(self.groups.clip_indices(np.array([age]))[0])
        return int(np.argmax(group_proba))

    def label(self, age: float, group: int) -> str:
        """'31-40 (34 y)'."""
        return f"{self.labels[group]} ({age:.0f} y)"


def predict_photos(spec: str, predictor: FacePredictor, detector: FaceDetector, batch_size: int = 64,
                   show: bool = False) -> tuple[list[Any], FaceResults]:
    """Every face in the images of a `photos:PATH` spec, found and cropped as `ordinalage predict` does:
    one `Record` per face (data/photos.py: age unknown, a face box path, meta with the box), and the
    model's results for them in the same order. Images without a face, or unreadable, are counted and
    reported on stderr; a spec where no face is found at all is a UsageError."""
    from ordinalage.data.photos import photo_records
    from ordinalage.data.records import Skipped

    crops: list[np.ndarray] = []
    results: list[FaceResults] = []

    def find(path: Path) -> list[tuple[np.ndarray, list[int], float]]:
        rgb = load_rgb(path)
        found = []
        for box in detector.detect(rgb):
            crops.append(predictor.crop(rgb, box))
            found.append((square_corners(*chip_frame(box, predictor.ratio)) - 0.5, box.as_list(), box.angle))
        if len(crops) >= batch_size:
            results.append(predictor(crops))
            crops.clear()
        return found

    skipped = Skipped(spec)
    records = photo_records(spec, find, detector=detector.name, skipped=skipped)
    if crops:
        results.append(predictor(crops))
    skipped.report(len(records))
    if not records:
        raise UsageError(f"data spec {spec!r}: no face found in any of its images")
    res = FaceResults(
        age=np.concatenate([r.age for r in results]), group=np.concatenate([r.group for r in results]),
        group_proba=np.concatenate([r.group_proba for r in results]),
        label_proba=None if results[0].label_proba is None else np.concatenate([r.label_proba for r in results]))
    if show:
        print(f"{spec}: {len(records)} faces ({detector.name} detector)", file=sys.stderr)
    return records, res
