"""`ordinalage live`: a webcam or video file with a box and an age label on every face.

Every `every`-th frame is searched with the Haar cascade and each face predicted; a face that
stays in place keeps its track (boxes matched to the previous tracks by IoU), and its age and
group probabilities are an exponential moving average over the frames, so labels do not flicker.
With `output` the annotated video is written with `cv2.VideoWriter` (mp4v) and no window is
opened (works on a server); without it a window is shown, which needs an OpenCV build with GUI
support (opencv-python, not opencv-python-headless).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ordinalage.errors import UsageError
from ordinalage.inference.detection.geometry import Box
from ordinalage.inference.detection.registry import make_detector
from ordinalage.inference.draw import draw_face
from ordinalage.inference.predictor import FacePredictor

WINDOW = "ordinalage live (q or Esc to quit)"
DEFAULT_FPS = 25.0


@dataclass
class Track:
    """One face followed over frames: its latest box and smoothed age and group probabilities."""

    id: int
    box: Box
    age: float
    proba: np.ndarray
    last_seen: int  # index of the processed frame that last matched this track
    hits: int = 1


class FaceTracker:
    """Greedy IoU matching of detections to tracks (best pairs first) with EMA smoothing.

    `alpha` is the weight of the newest observation; a track unmatched for more than `max_missed`
    processed frames is dropped.
    """

    def __init__(self, iou_threshold: float = 0.3, alpha: float = 0.4, max_missed: int = 5) -> None:
        self.iou_threshold = iou_threshold
        self.alpha = alpha
        self.max_missed = max_missed
        self.tracks: list[Track] = []
        self.next_id = 0
        self.step = -1

    def update(self, boxes: list[Box], ages: np.ndarray, probas: np.ndarray) -> list[Track]:
        """Feed one processed frame's detections; return the tracks seen in it (in detection order)."""
        self.step += 1
        pairs = sorted(((box.iou(t.box), i, j) for i, box in enumerate(boxes) for j, t in enumerate(self.tracks)),
                       reverse=True)
        assigned: dict[int, Track] = {}
        taken: set[int] = set()
        for iou, i, j in pairs:
            if iou < self.iou_threshold:
                break
            if i in assigned or j in taken:
                continue
            t = self.tracks[j]
            t.box, t.last_seen, t.hits = boxes[i], self.step, t.hits + 1
            t.age = self.alpha * float(ages[i]) + (1 - self.alpha) * t.age
            t.proba = self.alpha * np.asarray(probas[i], dtype=float) + (1 - self.alpha) * t.proba
            assigned[i], taken = t, taken | {j}
        for i, box in enumerate(boxes):
            if i not in assigned:
                t = Track(self.next_id, box, float(ages[i]), np.asarray(probas[i], dtype=float), self.step)
                self.next_id += 1
                self.tracks.append(t)
                assigned[i] = t
        self.tracks = [t for t in self.tracks if self.step - t.last_seen <= self.max_missed]
        return [assigned[i] for i in range(len(boxes))]


def open_source(source: str | int) -> cv2.VideoCapture:
    """A camera index ("0", "1", ...) or a video file; a UsageError when it cannot be opened."""
    text = str(source)
    if text.isdigit():
        cap = cv2.VideoCapture(int(text))
        if not cap.isOpened():
            raise UsageError(f"source {text}: cannot open camera {text}", option="source")
        return cap
    path = Path(text)
    if not path.is_file():
        raise UsageError(f"source {path}: no such video file", option="source")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise UsageError(f"source {path}: OpenCV cannot open this video", option="source")
    return cap


def check_gui() -> None:
    """Open the preview window, or explain that this OpenCV build has no GUI."""
    try:
        cv2.namedWindow(WINDOW, cv2.WINDOW_NORMAL)
    except cv2.error:
        raise UsageError("live: this OpenCV build has no GUI (opencv-python-headless), so no window can be shown; "
                         "write the annotated video with `output` OUT.mp4, or install opencv-python "
                         "(a build with GUI support) for a window", option="output") from None


def _writer(output: Path, fps: float, size: tuple[int, int]) -> cv2.VideoWriter:
    output.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(output), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    if not writer.isOpened():
        raise UsageError(f"output {output}: OpenCV cannot write an mp4v video there", option="output")
    return writer


def draw_fps(bgr: np.ndarray, fps: float) -> None:
    """Frames per second in the top-left corner."""
    text = f"{fps:.1f} fps"
    scale = max(0.4, bgr.shape[0] / 600)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    cv2.rectangle(bgr, (0, 0), (tw + 8, th + base + 8), (0, 0, 0), -1)
    cv2.putText(bgr, text, (4, th + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)


def _estimate(frame: np.ndarray, finder: Any, predictor: FacePredictor, tracker: FaceTracker
              ) -> tuple[list[Track], int]:
    """Detect the faces of one BGR frame, estimate their ages and update the tracks: the tracks to
    draw and the number of faces found."""
    rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    boxes = finder.detect(rgb)
    if boxes:
        res = predictor([predictor.crop(rgb, b) for b in boxes])
        return tracker.update(boxes, res.age, res.group_proba), len(boxes)
    return tracker.update([], np.zeros(0), np.zeros((0, len(predictor.labels)))), 0


def _check_stream_options(every: int, max_frames: int | None, prior: str | None = None) -> None:
    if prior == "em":
        raise UsageError("prior em: a stream shows a few faces at a time and cannot estimate an age mix; "
                         "estimate one with `ordinalage prior estimate` (a prior.json) and use that file",
                         option="prior")
    if every < 1:
        raise UsageError(f"every: must be at least 1, got {every}", option="every")
    if max_frames is not None and max_frames < 1:
        raise UsageError(f"max_frames: must be at least 1, got {max_frames}", option="max_frames")


def run_live(
    checkpoint: str | Path,
    source: str | int = "0",
    output: str | Path | None = None,
    every: int = 1,
    device: str = "auto",
    max_frames: int | None = None,
    tta: bool = False,
    ensemble: Sequence[str | Path] = (),
    detector: str = "auto",
    prior: str | None = None,
) -> dict[str, Any]:
    """Annotate a camera or video stream; write it to `output` (mp4v) or show it in a window.
    `tta`, `prior` (not em: a frame holds too few faces) and `ensemble` as in FacePredictor; `detector`
    names the face detector (`detection.registry`), whose boxes are mapped to the training framing by its own ratio.

    Returns a summary: frames read and written, frames run through the model, face detections,
    distinct tracks, mean frames per second, and the output path.
    """
    _check_stream_options(every, max_frames, prior)
    finder = make_detector(detector)
    predictor = FacePredictor(checkpoint, device, tta=tta, prior=prior, ensemble=ensemble, detector=detector)
    cap = open_source(source)
    writer: cv2.VideoWriter | None = None
    window = False
    frames = processed = detections = 0
    fps = 0.0
    started = time.perf_counter()
    tracker = FaceTracker()
    shown: list[Track] = []
    try:
        ok, frame = cap.read()
        if not ok or frame is None:
            raise UsageError(f"source {source}: no frame could be read", option="source")
        height, width = frame.shape[:2]
        if output is not None:
            src_fps = cap.get(cv2.CAP_PROP_FPS)
            rate = src_fps if math.isfinite(src_fps) and 0 < src_fps <= 240 else DEFAULT_FPS
            writer = _writer(Path(output), rate, (width, height))
        else:
            check_gui()
            window = True
        last = time.perf_counter()
        while ok and frame is not None:
            if frame.shape[:2] != (height, width):
                frame = cv2.resize(frame, (width, height))
            if frames % every == 0:
                shown, found = _estimate(frame, finder, predictor, tracker)
                processed += 1
                detections += found
            for t in shown:
                draw_face(frame, t.box, predictor.label(t.age, predictor.group_of(t.age, t.proba)))
            now = time.perf_counter()
            rate_now = 1.0 / max(now - last, 1e-6)
            fps = rate_now if frames == 0 else 0.9 * fps + 0.1 * rate_now
            last = now
            draw_fps(frame, fps)
            frames += 1
            if writer is not None:
                writer.write(frame)
            else:
                cv2.imshow(WINDOW, frame)
                if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                    break
            if max_frames is not None and frames >= max_frames:
                break
            ok, frame = cap.read()
    finally:
        cap.release()
        if writer is not None:
            writer.release()
        if window:
            cv2.destroyAllWindows()
    seconds = time.perf_counter() - started
    summary = {"frames": frames, "processed": processed, "detections": detections, "tracks": tracker.next_id,
               "fps": frames / seconds if seconds > 0 else 0.0, "detector": detector, "output": str(output) if output is not None else None}
    print(f"live: {frames} frames ({processed} through the model), {detections} face detections in "
          f"{tracker.next_id} tracks, {summary['fps']:.1f} frames/s"
          + (f"; wrote {output}" if output is not None else ""), file=sys.stderr)
    return summary
