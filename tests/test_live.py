"""live: IoU tracking with EMA smoothing (hand-worked), an annotated video from real faces, bad sources."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from ordinalage.cli import main
from ordinalage.errors import UsageError
from ordinalage.inference.detection.geometry import Box
from ordinalage.inference.detection.haar import HaarFaceDetector
from ordinalage.inference.live import FaceTracker, run_live

W, H, N_FRAMES, FACE = 320, 240, 20, 110
GREEN_BGR = (40, 220, 40)


def test_tracker_matches_by_iou_and_smooths() -> None:
    tr = FaceTracker(iou_threshold=0.3, alpha=0.5, max_missed=1)
    p = np.eye(3)
    first = tr.update([Box(0, 0, 10, 10), Box(50, 50, 10, 10)], np.array([20.0, 40.0]), p[[0, 1]])
    assert [t.id for t in first] == [0, 1]
    # both move by one pixel (IoU 0.82); detections come in the other order
    second = tr.update([Box(51, 50, 10, 10), Box(1, 0, 10, 10)], np.array([44.0, 30.0]), p[[2, 0]])
    assert [t.id for t in second] == [1, 0]
    assert second[1].age == pytest.approx(0.5 * 30 + 0.5 * 20)
    assert second[0].age == pytest.approx(42.0)
    np.testing.assert_allclose(second[0].proba, [0, 0.5, 0.5])
    assert second[1].box == Box(1, 0, 10, 10) and second[1].hits == 2
    # a far-away box starts a new track; unmatched tracks live for max_missed frames, then go
    third = tr.update([Box(200, 200, 10, 10)], np.array([5.0]), p[[0]])
    assert [t.id for t in third] == [2] and {t.id for t in tr.tracks} == {0, 1, 2}
    tr.update([], np.zeros(0), np.zeros((0, 3)))
    assert {t.id for t in tr.tracks} == {2}


def _pick_faces(root: Path, n: int = 2) -> list[np.ndarray]:
    """The first `n` adult UTKFace chips that the detector finds alone on a grey canvas, resized to FACE px."""
    det = HaarFaceDetector()
    out = []
    for name in sorted(os.listdir(root)):
        if not name.startswith(("30_", "45_")):
            continue
        face = cv2.resize(cv2.imread(str(root / name)), (FACE, FACE), interpolation=cv2.INTER_AREA)
        canvas = np.full((H, W, 3), 128, np.uint8)
        canvas[60:60 + FACE, 100:100 + FACE] = face
        if len(det.detect(cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB))) == 1:
            out.append(face)
        if len(out) == n:
            return out
    pytest.skip("no detectable faces found in the UTKFace folder")


def _make_video(path: Path, faces: list[np.ndarray]) -> list[np.ndarray]:
    """N_FRAMES frames W x H: two faces drifting slowly towards each other; returns the frames written."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (W, H))
    assert writer.isOpened()
    frames = []
    for t in range(N_FRAMES):
        frame = np.full((H, W, 3), 128, np.uint8)
        frame[40 + t // 2:40 + t // 2 + FACE, 15 + t:15 + t + FACE] = faces[0]
        frame[80 - t:80 - t + FACE, 190 - t:190 - t + FACE] = faces[1]
        writer.write(frame)
        frames.append(frame)
    writer.release()
    return frames


def _read_all(path: Path) -> tuple[int, list[np.ndarray]]:
    cap = cv2.VideoCapture(str(path))
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    frames = []
    ok, frame = cap.read()
    while ok:
        frames.append(frame)
        ok, frame = cap.read()
    cap.release()
    return count, frames


def _green(frame: np.ndarray) -> int:
    """Pixels of the label colour (boxes and label backgrounds)."""
    return int((np.abs(frame.astype(int) - GREEN_BGR).max(axis=2) < 40).sum())


def test_live_writes_every_frame_annotated(tiny_run, utkface_dir: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    run = tiny_run("coral")
    video, out = tmp_path / "faces.mp4", tmp_path / "out" / "annotated.mp4"
    _make_video(video, _pick_faces(utkface_dir))
    _, inputs = _read_all(video)
    assert len(inputs) == N_FRAMES

    assert main(["live", str(run), "--source", str(video), "--out", str(out), "--device", "cpu"]) == 0
    count, outputs = _read_all(out)
    assert count == N_FRAMES and len(outputs) == N_FRAMES
    assert outputs[0].shape == (H, W, 3)
    annotated = [_green(o) - _green(i) for o, i in zip(outputs, inputs, strict=True)]
    print(f"\nlabel-coloured pixels added per frame: min {min(annotated)}, median {int(np.median(annotated))}")
    assert sum(a > 300 for a in annotated) >= N_FRAMES - 3  # boxes and labels on (almost) every frame
    # where a box is drawn the output differs strongly from the input; the fps box covers the corner
    assert np.abs(outputs[0][:8, :8].astype(int) - inputs[0][:8, :8]).mean() > 60

    summary = run_live(run, source=str(video), output=tmp_path / "every3.mp4", every=3, device="cpu", max_frames=8)
    assert summary["frames"] == 8 and summary["processed"] == 3  # frames 0, 3, 6
    assert summary["detections"] >= 5 and summary["tracks"] <= 3  # two faces keep their tracks
    assert _read_all(tmp_path / "every3.mp4")[0] == 8


def test_live_bad_sources_exit_2(tiny_run, tmp_path: Path, capsys) -> None:
    run = str(tiny_run("coral"))
    assert main(["live", run, "--source", str(tmp_path / "missing.mp4"), "--out", str(tmp_path / "o.mp4")]) == 2
    assert f"{tmp_path / 'missing.mp4'}: no such video file" in capsys.readouterr().err
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video" * 10)
    assert main(["live", run, "--source", str(junk), "--out", str(tmp_path / "o.mp4")]) == 2
    assert f"{junk}: OpenCV cannot open this video" in capsys.readouterr().err
    assert main(["live", run, "--source", str(junk), "--every", "0"]) == 2
    assert "must be at least 1, got 0" in capsys.readouterr().err
    assert main(["live", run, "--source", str(junk), "--detector", "mtcnn", "--out", str(tmp_path / "o.mp4")]) == 2
    assert "--detector: unknown detector 'mtcnn' (choose from auto, haar, dlib)" in capsys.readouterr().err
    fake = tmp_path / "fake.pt"
    torch.save([1, 2, 3], fake)
    assert main(["live", str(fake), "--source", str(junk), "--out", str(tmp_path / "o.mp4")]) == 2
    assert f"ordinalage: error: {fake}: not an ordinalage checkpoint (no " in capsys.readouterr().err
    assert not (tmp_path / "o.mp4").exists()


def test_live_without_output_needs_a_gui(tiny_run, tmp_path: Path) -> None:
    try:
        cv2.namedWindow("probe")
        cv2.destroyAllWindows()
        pytest.skip("this OpenCV build has a GUI")
    except cv2.error:
        pass
    video = tmp_path / "v.mp4"
    _make_video(video, [np.full((FACE, FACE, 3), 90, np.uint8)] * 2)
    with pytest.raises(UsageError, match="`output`"):
        run_live(tiny_run("coral"), source=str(video), device="cpu")
