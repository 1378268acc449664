"""`ordinalage predict`: the age, age group and group probabilities of every face in photos.

With `detect="haar"` each image is searched with the Haar cascade and each face is cropped the way
the training chips were framed (`faces.crop_face`); with `detect="none"` each image is taken as one
aligned face and decoded exactly as in training (`data.decode.decode_image` with the run's
`data.geometry`). Faces from several images are batched. Unreadable images and images without a
face are listed with a `reason` and the rest go on. See docs/predict.md.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ordinalage.data.decode import ImageDecodeError, decode_image
from ordinalage.data.files import IMAGE_EXTENSIONS, list_images
from ordinalage.errors import UsageError
from ordinalage.inference.faces import (
    Box,
    ChipRatio,
    Exposure,
    crop_face,
    expose,
    load_crop_ratios,
    load_exposure,
)

IMAGE_SUFFIXES = frozenset(IMAGE_EXTENSIONS)
DETECTORS = ("haar", "none")  # --detect; --detector names any of detectors.DETECTORS
MAX_HELD_PIXELS = 64_000_000  # images kept for --annotate while their faces wait for a batch
NO_FACE = "no face found"
# Each detected face is predicted in these framings of its chip square, (scale, dx, dy) in chip
# sides, and the outputs averaged like an ensemble's: the square itself, 5% smaller and larger, 3%
# higher and lower (5x the model time per face; on the UTKFace validation faces pasted into photos
# it took 0.1-0.4 years off the MAE, benchmarks/photo_skew.py, docs/predict.md). A crop with
# `detect=False` is one view.
VIEWS: tuple[tuple[float, float, float], ...] = (
    (1.0, 0.0, 0.0), (0.95, 0.0, 0.0), (1.05, 0.0, 0.0), (1.0, 0.0, -0.03), (1.0, 0.0, 0.03))


# ---------------------------------------------------------------------------------------------
# inputs


def collect_images(inputs: Sequence[str | Path]) -> list[Path]:
    """Files as given (in order) and, for each folder, its image files (recursive, sorted by path).

    A path that does not exist, or a folder without images, is a UsageError (raised before any work).
    """
    if not inputs:
        raise UsageError("predict: give at least one image or folder")
    return list_images(inputs, recursive=True, allow_empty=False)


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


# ---------------------------------------------------------------------------------------------
# the model over face crops


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

    def __init__(self, checkpoint: str | Path, device: str = "auto", ratio: ChipRatio | None = None,
                 tta: bool = False, prior: str | None = None, interval: float | None = None,
                 ensemble: Sequence[str | Path] = (), detector: str = "haar",
                 views: Sequence[tuple[float, float, float]] | None = None) -> None:
        """`prior`: train | uniform | em | a prior file (`em`: the mix of each batch of faces predicted
        together); `interval`: a coverage level, from the run's calibration.json (`evaluate --interval`).
        `ensemble`: more runs or checkpoints averaged with this one (as an ensemble run folder's
        members are: their label distributions, or ages for regression heads). `ratio`: the box-to-chip
        ratio for crops; by default the run's own for `detector` (face_crop.json, written by
        `detectors.measure_crop_ratios`) or the detector's documented default (`crop_source` says which).
        `views`: the (scale, dx, dy) framings of each detected face averaged (test-time jitter;
        default `VIEWS`); ((1, 0, 0),) for the one crop."""
        from ordinalage.runs.members import load_members
        from ordinalage.runs.runtime import resolve_precision, select_device

        self.device = select_device(device)
        self.loaded, *self.others = load_members(checkpoint, ensemble, self.device)  # others: averaged with `loaded`
        if self.others and interval is not None:
            raise UsageError(f"{checkpoint}: intervals are calibrated per model; give one member "
                             f"({self.loaded.checkpoint_path.parent}) for --interval")
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
        self.detector = detector
        self.views = tuple(tuple(float(x) for x in v) for v in (VIEWS if views is None else views))
        if not self.views or any(len(v) != 3 or v[0] <= 0 for v in self.views):
            raise UsageError(f"views: expected (scale > 0, dx, dy) triples, got {views!r}")
        self.ratio = ratio if ratio is not None else self.ratio_for(detector)
        if ratio is not None:
            self.crop_source = "given"
        self.tta = tta  # also predict the mirrored crop and average the logits
        self.prior = prior
        if prior is not None:
            from ordinalage.posterior.adapt import check_prior_support

            # refuse at once (regression head, or a checkpoint without a training prior), not per batch
            check_prior_support(self.loaded.train_prior, self.loaded.config.model.head)
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
        from ordinalage.inference.detectors import detector_ratio

        return self.crop_ratios.get(detector) or detector_ratio(detector)

    def crop(self, rgb: np.ndarray, box: Box, view: tuple[float, float, float] | None = None) -> np.ndarray:
        """The training-chip-like crop of `box`, (size, size, 3) uint8; with several `views` (and no
        `view` given) all of them, (V, size, size, 3), which `__call__` averages. `view`: one
        (scale, dx, dy) framing (faces.crop_face). A crop from an underexposed photo is brightened to
        the training crops' highlights (faces.expose, `exposure`)."""
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


# ---------------------------------------------------------------------------------------------
# drawing


def draw_face(bgr: np.ndarray, box: Box, text: str, color: tuple[int, int, int] = (40, 220, 40)) -> None:
    """Draw `box` and a filled label `text` above it (below when there is no room) on a BGR image, in place."""
    h, w = bgr.shape[:2]
    thick = max(1, round(min(h, w) / 300))
    x0, y0 = min(max(box.x, 0), w - 1), min(max(box.y, 0), h - 1)  # a box may reach past the edge
    x1, y1 = min(max(box.x + box.w - 1, 0), w - 1), min(max(box.y + box.h - 1, 0), h - 1)
    cv2.rectangle(bgr, (x0, y0), (x1, y1), color, thick)
    box = Box(x0, y0, x1 - x0 + 1, y1 - y0 + 1)
    scale = max(0.35, min(1.5, box.w / 220))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    top = box.y - th - base - 2 * thick
    if top < 0:
        top = min(box.y + box.h, h - th - base - 2 * thick)
    left = min(max(0, box.x), max(0, w - tw - 2 * thick))
    cv2.rectangle(bgr, (left, top), (left + tw + 2 * thick, top + th + base + 2 * thick), color, -1)
    cv2.putText(bgr, text, (left + thick, top + th + thick), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick,
                cv2.LINE_AA)


def _annotated_path(out_dir: Path, src: Path, used: set[str]) -> Path:
    """`out_dir / src.name`, numbered when two inputs share a name; JPEG for suffixes OpenCV cannot write."""
    suffix = src.suffix.lower() if src.suffix.lower() in IMAGE_SUFFIXES else ".jpg"
    name, k = f"{src.stem}{suffix}", 1
    while name in used:
        name, k = f"{src.stem}_{k}{suffix}", k + 1
    used.add(name)
    return out_dir / name


# ---------------------------------------------------------------------------------------------
# run


@dataclass
class _Pending:
    """Faces waiting for a batch, and the images waiting for their faces (for --annotate)."""

    crops: list[np.ndarray] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)  # record index of each crop
    images: list[tuple[Path, np.ndarray | None, list[int]]] = field(default_factory=list)
    pixels: int = 0


def _record(path: Path, face: int | None = None, box: Box | None = None, reason: str | None = None,
            detector: str = "haar") -> dict[str, Any]:
    rec = {"file": str(path), "face": face, "box": box.as_list() if box else None, "age": None, "group": None,
           "group_proba": None, "reason": reason, "detector": detector}
    if box is not None and box.angle:
        rec["angle"] = round(float(box.angle), 1)
    return rec


def run_predict(
    checkpoint: str | Path,
    inputs: Sequence[str | Path],
    detect: str = "haar",
    csv_path: str | Path | None = None,
    annotate: str | Path | None = None,
    device: str = "auto",
    batch_size: int = 64,
    show: bool = True,
    tta: bool = False,
    prior: str | None = None,
    interval: float | None = None,
    ensemble: Sequence[str | Path] = (),
    detector: str | None = None,
) -> list[dict[str, Any]]:
    """Predict every face in `inputs` (images or folders); return one record per face.

    Record keys: `file`, `face` (index in its image, None when the image gave no face), `box`
    ([x, y, w, h] in image pixels; None for `detect="none"`, where the whole image is the face),
    `age`, `group` (label), `group_proba` ({label: p}), `reason` (None, "no face found", or why
    the image could not be read), `detector` (the detector's name, "none" with `detect="none"`),
    `angle` (the face's roll in degrees, only on a face cropped turned), and `age_lo`/`age_hi` with
    `interval`. `detector` names the face detector (detectors.DETECTORS: haar, dlib); it implies
    `detect="haar"` (detect with it) unless `detect="none"`. `csv_path` writes the same
    as CSV; `annotate` writes copies of the images with boxes and labels into that folder. `tta`
    averages each crop's logits with its mirror's; `prior` adapts to an age mix; `ensemble` averages
    more models with this one (see FacePredictor).
    """
    if detect not in DETECTORS:
        raise UsageError(f"--detect: unknown detector {detect!r} (choose from {', '.join(DETECTORS)})")
    if batch_size < 1:
        raise UsageError(f"--batch-size: must be at least 1, got {batch_size}")
    if detector is not None and detect == "none":
        raise UsageError("--detector: give a detector or --detect none, not both")
    from ordinalage.inference.detectors import make_detector

    face_detector = make_detector(detector or "haar") if detect == "haar" else None  # before the model loads
    det_name = face_detector.name if face_detector is not None else "none"
    paths = collect_images(inputs)
    predictor = FacePredictor(checkpoint, device, tta=tta, prior=prior, interval=interval, ensemble=ensemble,
                              detector=det_name if face_detector is not None else "haar")
    out_dir = Path(annotate) if annotate else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    pending = _Pending()
    used_names: set[str] = set()

    def flush() -> None:
        if pending.crops:
            res = predictor(pending.crops)
            for k, row in enumerate(pending.rows):
                rec = records[row]
                rec["age"] = round(float(res.age[k]), 2)
                rec["group"] = predictor.labels[int(res.group[k])]
                rec["group_proba"] = {lab: round(float(p), 4) for lab, p in zip(predictor.labels, res.group_proba[k], strict=True)}
                if res.age_lo is not None and res.age_hi is not None:
                    rec["age_lo"] = round(float(res.age_lo[k]), 2)
                    rec["age_hi"] = round(float(res.age_hi[k]), 2) if np.isfinite(res.age_hi[k]) else None
        for src, rgb, rows in pending.images:
            _write_annotated(src, rgb, [records[r] for r in rows], _annotated_path(out_dir, src, used_names))
        pending.crops, pending.rows, pending.images, pending.pixels = [], [], [], 0

    for path in paths:
        try:
            if face_detector is None:
                crops, boxes = [decode_image(path, predictor.size, predictor.geometry)], [None]
                rgb = load_rgb(path) if out_dir is not None else None
            else:
                rgb = load_rgb(path)
                boxes = face_detector.detect(rgb)
                crops = [predictor.crop(rgb, b) for b in boxes]
        except ImageDecodeError as exc:
            records.append(_record(path, reason=f"cannot read image ({exc.reason})", detector=det_name))
            print(f"ordinalage: {exc}", file=sys.stderr)
            continue
        if not boxes:
            records.append(_record(path, reason=NO_FACE, detector=det_name))
        rows = []
        for i, (box, crop) in enumerate(zip(boxes, crops, strict=True)):
            rows.append(len(records))
            records.append(_record(path, face=i, box=box, detector=det_name))
            pending.crops.append(crop)
            pending.rows.append(rows[-1])
        if out_dir is not None and rgb is not None:
            pending.images.append((path, rgb, rows))
            pending.pixels += rgb.shape[0] * rgb.shape[1]
        if len(pending.crops) >= batch_size or pending.pixels > MAX_HELD_PIXELS:
            flush()
    flush()

    if csv_path:
        write_predictions_csv(csv_path, records, predictor.labels)
    _summarise(records, len(paths), show)
    return records


def predict_photos(spec: str, predictor: FacePredictor, detector: Any, batch_size: int = 64,
                   show: bool = False) -> tuple[list[Any], FaceResults]:
    """Every face in the images of a `photos:PATH` spec, found and cropped as `run_predict` does:
    one `Record` per face (data/photos.py: age unknown, a face box path, meta with the box), and the
    model's results for them in the same order. Images without a face, or unreadable, are counted and
    reported on stderr; a spec where no face is found at all is a UsageError."""
    from ordinalage.data.photos import photo_records
    from ordinalage.data.records import Skipped
    from ordinalage.inference.faces import chip_frame, square_corners

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


def _write_annotated(src: Path, rgb: np.ndarray, records: list[dict[str, Any]], dest: Path) -> None:
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    h, w = bgr.shape[:2]
    for rec in records:
        box = Box(*rec["box"]) if rec["box"] else Box(0, 0, w, h)
        draw_face(bgr, box, f"{rec['group']} ({rec['age']:.0f} y)")
    ok, buf = cv2.imencode(dest.suffix, bgr)
    if not ok:
        raise UsageError(f"{dest}: OpenCV cannot encode this image format")
    dest.write_bytes(buf.tobytes())


def write_predictions_csv(path: str | Path, records: list[dict[str, Any]], labels: Sequence[str]) -> Path:
    """One row per record: file, face, x, y, w, h, age, group, p_<label> ..., reason."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        interval = any("age_lo" in rec for rec in records)
        writer.writerow(["file", "face", "x", "y", "w", "h", "age", *(["age_lo", "age_hi"] if interval else []),
                         "group", *[f"p_{lab}" for lab in labels], "reason"])
        for rec in records:
            box = rec["box"] or [None] * 4
            proba = rec["group_proba"] or {}
            writer.writerow([rec["file"], rec["face"], *box, rec["age"],
                             *([rec.get("age_lo"), rec.get("age_hi")] if interval else []), rec["group"],
                             *[proba.get(lab) for lab in labels], rec["reason"] or ""])
    return path


def _summarise(records: list[dict[str, Any]], n_images: int, show: bool) -> None:
    from ordinalage.console import stderr_console

    faces = sum(r["face"] is not None for r in records)
    no_face = sum(r["reason"] == NO_FACE for r in records)
    unreadable = sum(bool(r["reason"]) and r["reason"] != NO_FACE for r in records)
    console = stderr_console()
    if show and records:
        from rich.table import Table

        table = Table(title="predictions")
        for col in ("file", "face", "box", "age", "group", "p(group)"):
            table.add_column(col, justify="right" if col in ("face", "age", "p(group)") else "left")
        for rec in records[:200]:
            if rec["face"] is None:
                table.add_row(Path(rec["file"]).name, "-", "", "", f"[yellow]{rec['reason']}[/]", "")
                continue
            box = "" if rec["box"] is None else "{},{} {}x{}".format(*rec["box"])
            table.add_row(Path(rec["file"]).name, str(rec["face"]), box, f"{rec['age']:.1f}", rec["group"],
                          f"{rec['group_proba'][rec['group']]:.2f}")
        console.print(table)
        if len(records) > 200:
            console.print(f"... {len(records) - 200} more rows (use --csv or --json for all)")
    console.print(f"predict: {n_images} images, {faces} faces; {no_face} without a face, {unreadable} unreadable")
