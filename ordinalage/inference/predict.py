"""`ordinalage predict`: the age, age group and group probabilities of every face in photos.

Each image is searched with a face detector (`detector`: auto, haar or dlib; `detection.registry`) and
each face is cropped the way the training chips were framed (`FacePredictor.crop`); with `detector="none"`
each image is taken as one aligned face and decoded exactly as in training (`data.decode.decode_image`
with the run's `data.geometry`). Faces from several images are batched. Unreadable images and images
without a face are listed with a `reason` and the rest go on. See docs/predict.md.
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
from ordinalage.inference.detection.geometry import Box
from ordinalage.inference.detection.interface import FaceDetector
from ordinalage.inference.detection.registry import make_detector
from ordinalage.inference.draw import draw_face
from ordinalage.inference.predictor import FacePredictor, FaceResults, load_rgb

IMAGE_SUFFIXES = frozenset(IMAGE_EXTENSIONS)
DETECT_MODES = ("haar", "none")  # --detect; --detector names any of detection.registry.DETECTORS
MAX_HELD_PIXELS = 64_000_000  # images kept for --annotate while their faces wait for a batch
NO_FACE = "no face found"


# ---------------------------------------------------------------------------------------------
# inputs


def collect_images(inputs: Sequence[str | Path]) -> list[Path]:
    """Files as given (in order) and, for each folder, its image files (recursive, sorted by path).

    A path that does not exist, or a folder without images, is a UsageError (raised before any work).
    """
    if not inputs:
        raise UsageError("predict: give at least one image or folder")
    return list_images(inputs, recursive=True, allow_empty=False)


# ---------------------------------------------------------------------------------------------
# annotated copies


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
            detector: str = "auto") -> dict[str, Any]:
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
    `interval`. `detector` names the face detector (auto: dlib when installed, else haar; haar; dlib) or
    none (each image is one aligned face, as `detect="none"`, the older spelling). `csv_path` writes the same
    as CSV; `annotate` writes copies of the images with boxes and labels into that folder. `tta`
    averages each crop's logits with its mirror's; `prior` adapts to an age mix; `ensemble` averages
    more models with this one (see FacePredictor).
    """
    face_detector = _detector_for(detect, detector, batch_size)  # before the model loads
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
            _fill(records, pending.rows, predictor(pending.crops), predictor.labels)
        for src, rgb, rows in pending.images:
            _write_annotated(src, rgb, [records[r] for r in rows], _annotated_path(out_dir, src, used_names))
        pending.crops, pending.rows, pending.images, pending.pixels = [], [], [], 0

    for path in paths:
        try:
            rgb, boxes, crops = _faces_in(path, predictor, face_detector, keep_image=out_dir is not None)
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
        write_faces_csv(csv_path, records, predictor.labels)
    _summarise(records, len(paths), show)
    return records


def _detector_for(detect: str, detector: str | None, batch_size: int) -> FaceDetector | None:
    """The face detector `run_predict` uses (None: each image is one aligned face); bad options refused."""
    if detect not in DETECT_MODES:
        raise UsageError(f"detect: unknown detector {detect!r} (choose from {', '.join(DETECT_MODES)})",
                         option="detect")
    if batch_size < 1:
        raise UsageError(f"batch_size: must be at least 1, got {batch_size}", option="batch_size")
    if detector == "none":
        detect, detector = "none", None
    if detector is not None and detect == "none":
        raise UsageError("detector: give a detector or `detect` none, not both", option="detector")
    return make_detector(detector or "auto") if detect == "haar" else None


def _faces_in(path: Path, predictor: FacePredictor, face_detector: FaceDetector | None,
              keep_image: bool) -> tuple[np.ndarray | None, list[Box | None], list[np.ndarray]]:
    """The image (when `keep_image` or detecting), its face boxes and their crops; without a detector
    the whole image is one face (box None), decoded as in training. Raises ImageDecodeError."""
    if face_detector is None:
        crop = decode_image(path, predictor.size, predictor.geometry)
        return load_rgb(path) if keep_image else None, [None], [crop]
    rgb = load_rgb(path)
    boxes = face_detector.detect(rgb)
    return rgb, list(boxes), [predictor.crop(rgb, b) for b in boxes]


def _fill(records: list[dict[str, Any]], rows: Sequence[int], res: FaceResults, labels: Sequence[str]) -> None:
    """Write the model's results for a batch of faces into their records (`rows`: record index of each face)."""
    for k, row in enumerate(rows):
        rec = records[row]
        rec["age"] = round(float(res.age[k]), 2)
        rec["group"] = labels[int(res.group[k])]
        rec["group_proba"] = {lab: round(float(p), 4) for lab, p in zip(labels, res.group_proba[k], strict=True)}
        if res.age_lo is not None and res.age_hi is not None:
            rec["age_lo"] = round(float(res.age_lo[k]), 2)
            rec["age_hi"] = round(float(res.age_hi[k]), 2) if np.isfinite(res.age_hi[k]) else None


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


def write_faces_csv(path: str | Path, records: list[dict[str, Any]], labels: Sequence[str]) -> Path:
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
