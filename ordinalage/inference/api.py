"""The Python API: `ordinalage.load(path) -> AgeEstimator`, `.predict(image) -> list[Face]`.

An `AgeEstimator` wraps a checkpoint's `FacePredictor` (the model over face crops) and a face
detector (`detector="auto"`, the default: the optional `dlib` when it is installed, else OpenCV's Haar
cascade; or one of `detection.registry.DETECTORS` by name). `predict` takes a path, a PIL image or an RGB uint8 array;
with `detect=True` every face found is cropped like a training chip, with `detect=False` the whole
image is the face chip (decoded with the run's `data.geometry`, as `ordinalage predict --detect none`).
`predict_batch` sends the crops of all its images through one model call. The model call holds a
lock, so one estimator can be shared by threads (the HTTP server does). See docs/predict.md.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ordinalage.errors import UsageError
from ordinalage.inference.detection.geometry import Box
from ordinalage.inference.detection.interface import FaceDetector
from ordinalage.inference.detection.registry import make_detector
from ordinalage.inference.predictor import FacePredictor, FaceResults, load_rgb

ImageInput = Any  # str | Path | PIL.Image.Image | np.ndarray (H, W, 3) uint8 RGB
MAX_BATCH = 64  # crops per model call in predict_batch


@dataclass
class Face:
    """One face: its box (x, y, w, h) in image pixels (None when the whole image is the face), the
    estimated age, its group label and index, the group probabilities, and an optional age interval."""

    box: tuple[int, int, int, int] | None
    age: float
    group: str
    group_index: int
    group_proba: dict[str, float] = field(default_factory=dict)
    age_lo: float | None = None
    age_hi: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: box as a list (or None), rounded numbers; `age_lo`/`age_hi` only when set."""
        out: dict[str, Any] = {
            "box": list(self.box) if self.box is not None else None,
            "age": round(float(self.age), 2),
            "group": self.group,
            "group_index": int(self.group_index),
            "group_proba": {k: round(float(v), 4) for k, v in self.group_proba.items()},
        }
        if self.age_lo is not None:
            out["age_lo"] = round(float(self.age_lo), 2)
        if self.age_hi is not None:
            out["age_hi"] = round(float(self.age_hi), 2)
        return out


def to_rgb(image: ImageInput) -> np.ndarray:
    """A path, PIL image or array as an RGB uint8 (H, W, 3) array; a UsageError for anything else.

    Arrays: (H, W, 3) uint8 RGB is taken as is, (H, W) uint8 grey is repeated into three channels.
    """
    if isinstance(image, str | Path):
        return load_rgb(image)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise UsageError(f"image array: expected dtype uint8 (RGB 0-255), got {image.dtype}")
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
            raise UsageError(f"image array: expected shape (H, W, 3) RGB, got {image.shape}")
        return np.ascontiguousarray(image)
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a dependency
        Image = None  # type: ignore[assignment]
    if Image is not None and isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    raise UsageError(f"image: expected a path, a PIL image or a uint8 RGB array, got {type(image).__name__}")


class AgeEstimator:
    """Age, age group and group probabilities of the faces in images, from one checkpoint."""

    def __init__(self, predictor: FacePredictor, detector: FaceDetector | None = None,
                 detector_name: str | None = None) -> None:
        """`detector`: one detector shared by every thread; else one `detector_name` detector per thread
        (default: the predictor's detector, "haar")."""
        self.predictor = predictor
        self._detector = detector
        self.detector_name = detector.name if detector is not None else (detector_name or predictor.detector)
        if detector is None:
            make_detector(self.detector_name)  # a missing optional package fails here, not on the first photo
        self._local = threading.local()  # one detector per thread (OpenCV's classifier keeps state)
        self._lock = threading.Lock()  # around the model

    # -- public ----------------------------------------------------------------------------

    @property
    def labels(self) -> list[str]:
        """The age-group labels, in order."""
        return list(self.predictor.labels)

    def predict(self, image: ImageInput, detect: bool = True) -> list[Face]:
        """The faces in one image (a path, a PIL image or an RGB uint8 array), left to right.

        With `detect=False` the whole image is taken as one aligned face (box None).
        """
        return self.predict_batch([image], detect=detect)[0]

    def predict_batch(self, images: Sequence[ImageInput], detect: bool = True) -> list[list[Face]]:
        """`predict` for several images; all their faces go through the model together."""
        crops, boxes = self._prepare(images, detect)
        flat = [c for per_image in crops for c in per_image]
        results = [self._infer(flat[i:i + MAX_BATCH]) for i in range(0, len(flat), MAX_BATCH)]
        return self._split(results, boxes)

    def info(self) -> dict[str, Any]:
        """What the model is: head, backbone, target, groups, input size, training data, test metrics."""
        loaded = self.predictor.loaded
        cfg = loaded.config
        out: dict[str, Any] = {
            "checkpoint": str(loaded.checkpoint_path),
            "run_dir": str(loaded.run_dir) if loaded.run_dir else None,
            "epoch": loaded.epoch,
            "head": cfg.model.head,
            "backbone": cfg.model.backbone,
            "target": cfg.model.target,
            "groups": self.labels,
            "input_size": self.predictor.size,
            "geometry": cfg.data.geometry,
            "data": list(cfg.data.sources),
            "device": str(self.predictor.device),
            "tta": bool(self.predictor.tta),
            "detector": self.detector_name,
            "crop": {"ratio": dataclasses.asdict(self.predictor.ratio), "source": self.predictor.crop_source},
        }
        summary = self._summary()
        if summary:
            test = summary.get("test")
            if isinstance(test, dict):
                out["test_metrics"] = {k: v for k, v in test.items() if isinstance(v, int | float) and not isinstance(v, bool)}
            if "best_epoch" in summary:
                out["best_epoch"] = summary["best_epoch"]
        return out

    # -- stages (the server calls these separately to batch requests) ------------------------

    def _prepare(self, images: Sequence[ImageInput], detect: bool) -> tuple[list[list[np.ndarray]], list[list[Box | None]]]:
        """Decode each image and cut its face crops; returns the crops and boxes per image."""
        if isinstance(images, str | Path | np.ndarray):
            raise UsageError("predict_batch: expected a sequence of images (use predict for one image)")
        crops: list[list[np.ndarray]] = []
        boxes: list[list[Box | None]] = []
        for image in images:
            c, b = self._crops_of(image, detect)
            crops.append(c)
            boxes.append(b)
        return crops, boxes

    def _crops_of(self, image: ImageInput, detect: bool) -> tuple[list[np.ndarray], list[Box | None]]:
        p = self.predictor
        if not detect:
            if isinstance(image, str | Path):  # exactly as in training and `predict --detect none`
                from ordinalage.data.decode import decode_image

                return [decode_image(image, p.size, p.geometry)], [None]
            from ordinalage.data.decode import to_square

            return [to_square(to_rgb(image), p.size, p.geometry)], [None]
        rgb = to_rgb(image)
        found = self._face_detector().detect(rgb)
        return [p.crop(rgb, b) for b in found], list(found)

    def _infer(self, crops: Sequence[np.ndarray]) -> FaceResults:
        """The model over a batch of crops (under the lock; may be empty)."""
        if not crops:
            g = len(self.predictor.labels)
            return FaceResults(np.zeros(0), np.zeros(0, np.int64), np.zeros((0, g)))
        with self._lock:
            return self.predictor(crops)

    def _split(self, results: Sequence[FaceResults], boxes: list[list[Box | None]]) -> list[list[Face]]:
        """Model outputs (in crop order, possibly in several chunks) -> one list of Faces per image."""
        faces = [f for res in results for f in self._faces_from_results(res)]
        out, k = [], 0
        for per_image in boxes:
            chunk = faces[k:k + len(per_image)]
            for face, box in zip(chunk, per_image, strict=True):
                face.box = (box.x, box.y, box.w, box.h) if box is not None else None
            out.append(chunk)
            k += len(per_image)
        return out

    def _faces_from_results(self, res: FaceResults) -> list[Face]:
        """The one place where model output becomes Face objects (boxes are set by the caller)."""
        labels = self.predictor.labels
        faces = []
        for i in range(len(res.age)):
            g = int(res.group[i])
            face = Face(box=None, age=float(res.age[i]), group=labels[g], group_index=g,
                        group_proba={lab: float(p) for lab, p in zip(labels, res.group_proba[i], strict=True)})
            if res.age_lo is not None and res.age_hi is not None:
                face.age_lo = float(res.age_lo[i])
                face.age_hi = float(res.age_hi[i]) if np.isfinite(res.age_hi[i]) else None
            faces.append(face)
        return faces

    def _face_detector(self) -> FaceDetector:
        if self._detector is not None:
            return self._detector
        det = getattr(self._local, "detector", None)
        if det is None:
            det = self._local.detector = make_detector(self.detector_name)
        return det

    def _summary(self) -> dict[str, Any]:
        """The run's summary.json ({} when missing or unreadable: describing a model never fails)."""
        from ordinalage.runs.rundir import RunDir

        return RunDir(self.predictor.loaded.run_dir or self.predictor.loaded.checkpoint_path.parent
                      ).read_summary(tolerant=True)

    def __repr__(self) -> str:
        i = self.predictor.loaded
        return (f"AgeEstimator({i.config.model.head}/{i.config.model.backbone}, target={i.config.model.target}, "
                f"groups={len(self.labels)}, checkpoint={str(i.checkpoint_path)!r})")


def load(path: str | Path | None = None, device: str = "auto", tta: bool = False, prior: str | None = None,
         interval: float | None = None, detector: str = "auto") -> AgeEstimator:
    """An AgeEstimator from a run folder (best.pt preferred), a checkpoint file, an ensemble run folder
    (`train --members N`: its members averaged) or a shipped model by name (`ordinalage models`); with
    no `path`, the shipped `utkface-small` (UTKFace's terms: non-commercial research only).

    `prior`: adapt to an age mix (train | uniform | a prior file; em: the mix of each batch);
    `interval`: add age_lo/age_hi at this coverage (needs the run's calibration.json); `detector`:
    the face detector by name (auto: dlib when installed, else haar; haar; dlib; a missing optional
    package is a UsageError naming the pip command)."""
    make_detector(detector)  # before the model loads
    return AgeEstimator(FacePredictor(path, device, tta=tta, prior=prior, interval=interval, detector=detector))
