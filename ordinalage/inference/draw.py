"""Boxes and age labels drawn on images (`predict --annotate`, `live`)."""

from __future__ import annotations

import cv2
import numpy as np

from ordinalage.inference.detection.geometry import Box


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
