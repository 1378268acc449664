"""The embedded default dataset: procedurally drawn faces whose appearance depends on age.

Each face is drawn with OpenCV primitives from an *apparent age* (true age + N(0, 3) years) and
a set of per-face onset offsets, so age is learnable but no single cue gives it exactly:
head proportions and eye size change up to ~18, the nasolabial folds deepen from ~30, forehead
wrinkles, crow's feet and eye bags from ~35-40, hair greys from ~40 and recedes or thins from ~45
(mostly men), age spots and sagging jowls from ~50. Nuisance factors independent of age: gender,
skin and hair tone, clothes, background, lighting, pose (shift, rotation, scale), blur and noise.

Files are named like UTKFace, `{age}_{gender}_{race}_{id}.jpg` (gender 0 male, 1 female;
race 0 White, 1 Black, 2 Asian, 3 Indian, 4 Others), and are byte-identical for one seed.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from ordinalage.errors import UsageError
from ordinalage.groups import DEFAULT_GROUPS, AgeGroups

if TYPE_CHECKING:
    from rich.progress import Progress

    from ordinalage.config import DataConfig

MAX_AGE = int(AgeGroups.parse(DEFAULT_GROUPS).max_age)  # 70: the default groups keep every face
JPEG_QUALITY = 92
SYNTH_VERSION = "v2"  # v2: ages 0-70 (v1 drew 0-80, and the default groups dropped the 71-80 year olds)
_SHIFT = 4  # sub-pixel bits for OpenCV drawing calls
_ONE = 1 << _SHIFT
_AA = cv2.LINE_AA

# RGB base colours per race (UTKFace codes 0-4) and hair colours per race (with weights).
_SKIN = np.array([(232, 196, 172), (118, 78, 58), (226, 192, 152), (176, 126, 92), (200, 158, 122)], float)
_HAIR = np.array([(28, 24, 22), (62, 42, 30), (108, 74, 46), (196, 164, 108), (146, 70, 38)], float)
_HAIR_P = np.array([
    [0.20, 0.30, 0.25, 0.17, 0.08],  # White
    [0.80, 0.20, 0.00, 0.00, 0.00],  # Black
    [0.75, 0.25, 0.00, 0.00, 0.00],  # Asian
    [0.70, 0.30, 0.00, 0.00, 0.00],  # Indian
    [0.45, 0.35, 0.15, 0.05, 0.00],  # Others
])
_IRIS = np.array([(70, 45, 30), (40, 28, 20), (80, 110, 150), (90, 110, 70)], float)


def _ramp(x: float, start: float, span: float) -> float:
    """0 before `start`, rising linearly to 1 over `span` years, then 1."""
    return float(min(max((x - start) / span, 0.0), 1.0))


@dataclass
class _Face:
    """Latent traits and geometry of one face, in pixel units of the (square) canvas."""

    age: float  # apparent age driving the features
    gender: int
    race: int
    skin: np.ndarray
    hair: np.ndarray
    cx: float
    top: float  # top of the skull
    eye_y: float
    chin: float
    half_w: float  # half width of the skull at the cheeks
    jaw: float  # jaw width / skull width at the chin end
    eye_w: float
    eye_dx: float  # half distance between the eye centres
    nose_len: float
    mouth_y: float
    growth: float  # 0 newborn .. 1 adult


def _traits(age: float, rng: np.random.Generator, size: int) -> _Face:
    """Draw the per-face traits; geometry depends on apparent age and individual variation."""
    apparent = float(np.clip(age + rng.normal(0.0, 3.0), 0.0, 90.0))
    gender = int(rng.integers(0, 2))
    race = int(rng.choice(5, p=[0.42, 0.19, 0.15, 0.17, 0.07]))
    skin = np.clip(_SKIN[race] * rng.uniform(0.88, 1.1) + rng.normal(0, 6, 3), 0, 255)
    hair = np.clip(_HAIR[rng.choice(5, p=_HAIR_P[race])] * rng.uniform(0.8, 1.2) + rng.normal(0, 6, 3), 0, 255)
    growth = _ramp(apparent + rng.normal(0, 1.5), 0.0, 18.0) ** 0.8
    u = size / 96.0
    half_w = u * (31.5 - 3.5 * growth + rng.normal(0, 0.8) - 0.8 * gender)
    height = u * (64.0 + 14.0 * growth + rng.normal(0, 1.5))  # skull top to chin
    top = u * 10.0 + (76.0 * u - height) * 0.5 + rng.normal(0, 0.8) * u
    eye_frac = 0.60 - 0.13 * growth + rng.normal(0, 0.01)  # a child's eyes sit low in a big skull
    eye_y = top + eye_frac * height
    chin = top + height
    nose_len = (chin - eye_y) * (0.34 + 0.06 * growth + rng.normal(0, 0.02))
    return _Face(
        age=apparent, gender=gender, race=race, skin=skin, hair=hair,
        cx=u * 48.0 + rng.normal(0, 0.5) * u, top=top, eye_y=eye_y, chin=chin, half_w=half_w,
        jaw=0.92 - 0.22 * growth + 0.07 * (1 - gender) * growth + rng.normal(0, 0.03),
        eye_w=u * (12.0 - 3.6 * growth + rng.normal(0, 0.4)),
        eye_dx=half_w * (0.40 + rng.normal(0, 0.02)),
        nose_len=nose_len,
        mouth_y=eye_y + nose_len + (chin - eye_y - nose_len) * (0.36 + rng.normal(0, 0.03)),
        growth=growth,
    )


def _pts(xy: np.ndarray) -> np.ndarray:
    """Float pixel coordinates -> int32 fixed-point points for OpenCV's `shift` argument."""
    return np.round(np.asarray(xy) * _ONE).astype(np.int32).reshape(-1, 1, 2)


def _c(x: float, y: float) -> tuple[int, int]:
    return round(x * _ONE), round(y * _ONE)


def _col(rgb: np.ndarray | tuple[float, ...]) -> tuple[float, float, float]:
    return tuple(float(v) for v in np.clip(rgb, 0, 255))  # type: ignore[return-value]


def _head_outline(f: _Face, sag: float, n: int = 48) -> np.ndarray:
    """Skull (upper half-ellipse) joined to a tapering jaw; `sag` widens the lower cheeks (jowls)."""
    t = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    sin, cos = np.sin(t), np.cos(t)
    low = sin > 0
    ry = np.where(low, f.chin - f.eye_y, f.eye_y - f.top)
    taper = np.where(low, 1 - (1 - f.jaw) * sin**2 + sag * sin * (1 - sin) * 0.5, 1.0)
    return np.stack([f.cx + f.half_w * taper * cos, f.eye_y + ry * sin], axis=1)


def _background(img: np.ndarray, rng: np.random.Generator) -> None:
    """A flat colour or a linear gradient between two random colours, in place."""
    size = img.shape[0]
    a, b = rng.uniform(20, 235, 3), rng.uniform(20, 235, 3)
    if rng.random() < 0.35:
        b = a
    ang = rng.uniform(0, 2 * np.pi)
    ramp = np.linspace(-1, 1, size, dtype=np.float32)
    g = (math.cos(ang) * ramp[None, :] + math.sin(ang) * ramp[:, None]) * 0.5 + 0.5
    img[:] = (a[None, None, :] * (1 - g[..., None]) + b[None, None, :] * g[..., None]).astype(np.uint8)


def _blend(img: np.ndarray, layer: np.ndarray, alpha: float) -> None:
    """img = (1 - alpha) img + alpha layer, in place."""
    if alpha > 0:
        cv2.addWeighted(layer, alpha, img, 1.0 - alpha, 0.0, dst=img)


def _grey_level(f: _Face, rng: np.random.Generator) -> float:
    onset = 40.0 + rng.normal(0, 6)
    return _ramp(f.age, onset, rng.uniform(22, 40)) ** 0.9


def _draw_body_and_back_hair(img: np.ndarray, f: _Face, hair: np.ndarray, long_hair: bool,
                             rng: np.random.Generator) -> None:
    """Long hair behind the head, neck, shoulders in a random colour, ears."""
    size = img.shape[0]
    u = size / 96.0
    skin_dark = _col(f.skin * 0.85)
    if long_hair:
        back = np.array([[f.cx - f.half_w * 1.12, f.eye_y - 4 * u], [f.cx + f.half_w * 1.12, f.eye_y - 4 * u],
                         [f.cx + f.half_w * rng.uniform(1.0, 1.25), f.chin + rng.uniform(0, 14) * u],
                         [f.cx - f.half_w * rng.uniform(1.0, 1.25), f.chin + rng.uniform(0, 14) * u]])
        cv2.fillPoly(img, [_pts(back)], _col(hair), _AA, _SHIFT)
    neck_w = f.half_w * (0.42 + 0.1 * f.growth)
    cv2.rectangle(img, _c(f.cx - neck_w, f.eye_y), _c(f.cx + neck_w, size + 1), skin_dark, -1, _AA, _SHIFT)
    clothes = _col(rng.uniform(15, 240, 3))
    cv2.ellipse(img, _c(f.cx, size + f.half_w * 0.25), _c(f.half_w * 1.9, (size - f.chin) + 6 * u),
                0, 180, 360, clothes, -1, _AA, _SHIFT)
    cv2.rectangle(img, _c(f.cx - neck_w, f.chin - 2 * u), _c(f.cx + neck_w, f.chin + 3 * u),
                  skin_dark, -1, _AA, _SHIFT)
    ear_y, ear_h = f.eye_y + f.nose_len * 0.4, f.nose_len * 0.5 + 4 * u
    for side in (-1, 1):
        cv2.ellipse(img, _c(f.cx + side * f.half_w * 0.98, ear_y), _c(f.half_w * 0.16, ear_h), 0, 0, 360,
                    _col(f.skin * 0.92), -1, _AA, _SHIFT)


def _draw_head(img: np.ndarray, f: _Face, sag: float) -> np.ndarray:
    """Fill the head in skin colour; return the outline (for masking skin effects)."""
    outline = _head_outline(f, sag)
    cv2.fillPoly(img, [_pts(outline)], _col(f.skin), _AA, _SHIFT)
    return outline


def _draw_hair(img: np.ndarray, f: _Face, hair: np.ndarray, rng: np.random.Generator,
               recede: float, thin: float) -> None:
    """Hair cap above a hairline; `recede` lifts the hairline (temples first), `thin` fades the crown."""
    u = img.shape[0] / 96.0
    forehead = f.eye_y - f.top
    line_y = f.top + forehead * (0.38 + rng.normal(0, 0.04) - 0.25 * recede)
    temple_y = line_y - forehead * 0.22 * recede
    w = f.half_w * 1.06
    t = np.linspace(np.pi, 2 * np.pi, 20)
    cap = np.stack([f.cx + w * np.cos(t), f.eye_y + (forehead + 3 * u) * 1.05 * np.sin(t)], axis=1)
    side_y = f.eye_y - forehead * rng.uniform(0.0, 0.25)
    front = np.array([[f.cx + w, side_y], [f.cx + w * 0.82, side_y],
                      [f.cx + f.half_w * 0.62, temple_y], [f.cx + f.half_w * 0.2, line_y + 0.5 * u],
                      [f.cx - f.half_w * 0.2, line_y + 0.5 * u], [f.cx - f.half_w * 0.62, temple_y],
                      [f.cx - w * 0.82, side_y], [f.cx - w, side_y]])
    poly = np.concatenate([cap, front], axis=0)
    layer = img.copy()
    cv2.fillPoly(layer, [_pts(poly)], _col(hair), _AA, _SHIFT)
    if thin > 0:  # bald crown: draw skin back in over the top of the skull
        cv2.ellipse(layer, _c(f.cx, f.top + forehead * 0.45), _c(f.half_w * 0.78, forehead * 0.5),
                    0, 0, 360, _col(f.skin * 1.02), -1, _AA, _SHIFT)
        layer2 = img.copy()
        cv2.fillPoly(layer2, [_pts(poly)], _col(hair), _AA, _SHIFT)
        _blend(layer, layer2, 1.0 - thin)
    img[:] = layer


def _draw_features(img: np.ndarray, f: _Face, rng: np.random.Generator, grey: float) -> None:
    """Eyes, brows, nose, mouth and (children's) rosy cheeks."""
    u = img.shape[0] / 96.0
    lw = max(1, round(u))
    dark = _col(f.skin * 0.55)
    iris = _IRIS[rng.integers(0, 4 if f.race in (0, 4) else 2)]
    eh = f.eye_w * (0.46 + rng.normal(0, 0.03))
    brow_col = (f.hair * (1 - 0.6 * grey) + 190 * 0.6 * grey) * 0.8
    brow_col = brow_col * f.growth ** 0.3 + f.skin * 0.8 * (1 - f.growth ** 0.3)  # faint in babies
    brow_thick = max(1, round(lw * (1.0 + (1 - f.gender) * 0.8 * f.growth + rng.uniform(0, 0.6))))
    brow_gap = f.eye_w * rng.uniform(0.2, 0.4) + 1.5 * u
    for side in (-1, 1):
        ex = f.cx + side * f.eye_dx
        cv2.ellipse(img, _c(ex, f.eye_y), _c(f.eye_w / 2, eh / 2), 0, 0, 360, (236, 232, 226), -1, _AA, _SHIFT)
        r = f.eye_w * 0.22 + 0.9 * u
        cv2.circle(img, _c(ex, f.eye_y), round(r * _ONE), _col(iris), -1, _AA, _SHIFT)
        cv2.circle(img, _c(ex, f.eye_y), round(r * 0.45 * _ONE), (12, 10, 10), -1, _AA, _SHIFT)
        cv2.ellipse(img, _c(ex, f.eye_y), _c(f.eye_w / 2, eh / 2), 0, 180, 360, dark, lw, _AA, _SHIFT)
        by = f.eye_y - eh / 2 - brow_gap
        brow = np.array([[ex - side * f.eye_w * 0.6, by + 1.2 * u], [ex, by - 1.0 * u],
                         [ex + side * f.eye_w * 0.7, by + 0.8 * u]])
        cv2.polylines(img, [_pts(brow)], False, _col(brow_col), brow_thick, _AA, _SHIFT)
    ny = f.eye_y + f.nose_len
    nw = f.half_w * (0.12 + 0.10 * f.growth)
    layer = img.copy()
    nose = np.array([[f.cx - 1.0 * u, f.eye_y + 2 * u], [f.cx - nw * 0.45, ny - f.nose_len * 0.25], [f.cx - nw, ny]])
    cv2.polylines(layer, [_pts(nose)], False, _col(f.skin * 0.7), lw, _AA, _SHIFT)
    _blend(img, layer, 0.3 + 0.7 * f.growth)  # a child's nose is a small button
    for side in (-1, 1):
        cv2.ellipse(img, _c(f.cx + side * nw * 0.45, ny), _c(nw * 0.28, nw * 0.15), 0, 0, 360,
                    _col(f.skin * 0.5), -1, _AA, _SHIFT)
    mw = f.half_w * (0.24 + 0.14 * f.growth + rng.normal(0, 0.03))
    lip_h = (f.chin - f.eye_y) * (0.07 - 0.025 * _ramp(f.age, 40, 40)) * (1.15 if f.gender else 1.0)
    lip = np.array([0.62, 0.38, 0.36]) * f.skin + (np.array([70, 20, 30]) if f.gender else np.array([40, 10, 10]))
    if f.gender and f.age > 14 and rng.random() < 0.4:
        lip = np.array([175, 50, 65]) + rng.normal(0, 12, 3)
    cv2.ellipse(img, _c(f.cx, f.mouth_y), _c(mw, lip_h), 0, 0, 360, _col(lip), -1, _AA, _SHIFT)
    cv2.line(img, _c(f.cx - mw, f.mouth_y), _c(f.cx + mw, f.mouth_y), _col(lip * 0.55), lw, _AA, _SHIFT)
    blush = 1.0 - _ramp(f.age, 3, 15)
    if blush > 0:
        layer = img.copy()
        for side in (-1, 1):
            cv2.circle(layer, _c(f.cx + side * f.half_w * 0.55, f.eye_y + f.nose_len * 0.9),
                       round(f.half_w * 0.2 * _ONE), (235, 120, 120), -1, _AA, _SHIFT)
        _blend(img, layer, 0.22 * blush)


def _draw_beard(img: np.ndarray, f: _Face, outline: np.ndarray, colour: np.ndarray, full: bool,
                rng: np.random.Generator) -> None:
    """A band along the jaw with a chin patch (full beard) and a moustache, partly see-through."""
    u = img.shape[0] / 96.0
    layer = img.copy()
    col = _col(colour)
    lip_gap = f.mouth_y - f.eye_y - f.nose_len
    if full:
        jaw = outline[outline[:, 1] > f.eye_y + f.nose_len * 0.6]
        jaw = jaw[np.argsort(np.arctan2(jaw[:, 1] - f.eye_y, jaw[:, 0] - f.cx))]
        thick = max(2, round((f.chin - f.mouth_y) * rng.uniform(0.6, 0.9)))
        cv2.polylines(layer, [_pts(jaw)], False, col, thick, _AA, _SHIFT)
        cv2.ellipse(layer, _c(f.cx, (f.mouth_y + f.chin) / 2 + 1.5 * u), _c(f.half_w * 0.42, (f.chin - f.mouth_y) * 0.5),
                    0, 0, 360, col, -1, _AA, _SHIFT)
    mw = f.half_w * 0.4
    my = f.eye_y + f.nose_len + lip_gap * 0.55
    cv2.ellipse(layer, _c(f.cx, my), _c(mw, lip_gap * 0.35), 0, 0, 360, col, -1, _AA, _SHIFT)
    _blend(img, layer, rng.uniform(0.6, 0.9))
    mouth_w = f.half_w * 0.3
    cv2.line(img, _c(f.cx - mouth_w, f.mouth_y + 0.5 * u), _c(f.cx + mouth_w, f.mouth_y + 0.5 * u),
             _col(f.skin * 0.4), max(1, round(u)), _AA, _SHIFT)


def _draw_ageing(img: np.ndarray, f: _Face, rng: np.random.Generator) -> None:
    """Folds, wrinkles, eye bags and spots; each cue with its own onset and individual offset."""
    s = img.shape[0] / 96.0
    lw = max(1, round(s))
    line = _col(f.skin * 0.62)
    layer = img.copy()
    naso = _ramp(f.age, 28 + rng.normal(0, 5), 35)
    forehead = _ramp(f.age, 35 + rng.normal(0, 6), 30)
    crow = _ramp(f.age, 40 + rng.normal(0, 5), 25)
    bags = _ramp(f.age, 42 + rng.normal(0, 6), 30)
    ny = f.eye_y + f.nose_len
    nw = f.half_w * 0.22
    if naso > 0:
        for side in (-1, 1):
            fold = np.array([[f.cx + side * nw * 1.3, ny - 1.5 * s],
                             [f.cx + side * nw * 1.9, (ny + f.mouth_y) / 2],
                             [f.cx + side * (f.half_w * 0.42 + 1.5 * s), f.mouth_y + 3 * s * naso]])
            cv2.polylines(layer, [_pts(fold)], False, line, lw, _AA, _SHIFT)
        _blend(img, layer, 0.75 * naso)
        layer = img.copy()
    if forehead > 0:
        top = f.eye_y - (f.eye_y - f.top) * 0.55
        n_lines = 1 + int(rng.integers(1, 4) * forehead + 0.5)
        for k in range(n_lines):
            y = top + k * 3.2 * s + rng.normal(0, 0.4) * s
            half = f.half_w * rng.uniform(0.35, 0.6)
            cv2.ellipse(layer, _c(f.cx + rng.normal(0, 2) * s, y + 4 * s), _c(half, 4 * s), 0, 200, 340,
                        line, lw, _AA, _SHIFT)
        _blend(img, layer, 0.7 * forehead)
        layer = img.copy()
    if crow > 0:
        for side in (-1, 1):
            x0 = f.cx + side * (f.eye_dx + f.eye_w * 0.6)
            for k in (-1, 0, 1):
                cv2.line(layer, _c(x0, f.eye_y + k * 1.6 * s),
                         _c(x0 + side * 4.5 * s, f.eye_y + k * 3.0 * s), line, lw, _AA, _SHIFT)
        _blend(img, layer, 0.75 * crow)
        layer = img.copy()
    if bags > 0:
        for side in (-1, 1):
            cv2.ellipse(layer, _c(f.cx + side * f.eye_dx, f.eye_y + f.eye_w * 0.35), _c(f.eye_w * 0.5, f.eye_w * 0.35),
                        0, 20, 160, _col(f.skin * 0.55), lw, _AA, _SHIFT)
        _blend(img, layer, 0.7 * bags)
    spots = rng.poisson(7.0 * _ramp(f.age, 50 + rng.normal(0, 6), 30))
    for _ in range(int(spots)):
        x = f.cx + rng.uniform(-0.75, 0.75) * f.half_w
        y = rng.uniform(f.top + (f.eye_y - f.top) * 0.45, f.chin - 6 * s)
        if abs(y - f.eye_y) < f.eye_w * 0.5 and abs(abs(x - f.cx) - f.eye_dx) < f.eye_w * 0.7:
            continue
        cv2.circle(img, _c(x, y), round(rng.uniform(0.6, 1.4) * s * _ONE), _col(f.skin * 0.68), -1, _AA, _SHIFT)


def _finish(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Lighting, pose, blur and sensor noise: the nuisance factors independent of age."""
    size = img.shape[0]
    ang = rng.uniform(0, 2 * np.pi)
    ramp = np.linspace(-1, 1, size, dtype=np.float32)
    light = (1.0 + rng.uniform(0.0, 0.3) * (math.cos(ang) * ramp[None, :] + math.sin(ang) * ramp[:, None]))
    gain = rng.uniform(0.7, 1.25) * rng.uniform(0.93, 1.07, 3).astype(np.float32)
    out = img.astype(np.float32) * light[..., None] * gain[None, None, :]
    m = cv2.getRotationMatrix2D((size / 2, size / 2), rng.uniform(-10, 10), rng.uniform(0.9, 1.1))
    m[:, 2] += rng.uniform(-0.05, 0.05, 2) * size
    out = cv2.warpAffine(out, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.35, 0.9))
    out += rng.normal(0, rng.uniform(1.0, 5.0), out.shape).astype(np.float32)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def render_face(age: float, rng: np.random.Generator, size: int = 96) -> np.ndarray:
    """Draw one synthetic face of `age` years; returns a (size, size, 3) uint8 RGB image."""
    return _render(age, rng, size)[0]


def _render(age: float, rng: np.random.Generator, size: int) -> tuple[np.ndarray, _Face]:
    """The image and the traits it was drawn from (gender and race go into the file name)."""
    if size < 32:
        raise UsageError(f"synth: size must be at least 32 pixels, got {size}")
    f = _traits(float(age), rng, size)
    img = np.empty((size, size, 3), np.uint8)
    _background(img, rng)
    grey = _grey_level(f, rng)
    grey_col = np.array([205.0, 203.0, 200.0]) + rng.normal(0, 10)
    hair = f.hair * (1 - grey) + grey_col * grey
    recede_onset = 45 + rng.normal(0, 8) if (f.gender == 0 and rng.random() < 0.6) else 1e9
    recede = _ramp(f.age, recede_onset, 25)
    thin = _ramp(f.age, recede_onset + 10, 25) * (rng.random() < 0.6)
    long_hair = bool(rng.random() < (0.8 if f.gender else 0.1)) and f.age > 2
    hair_amount = min(1.0, 0.35 + f.age / 3.0)  # babies have little hair
    if hair_amount < 1:
        hair = hair * hair_amount + f.skin * (1 - hair_amount)
    _draw_body_and_back_hair(img, f, hair, long_hair, rng)
    sag = _ramp(f.age, 50 + rng.normal(0, 6), 30) * 0.35
    outline = _draw_head(img, f, sag)
    _draw_ageing(img, f, rng)
    _draw_hair(img, f, hair, rng, recede, thin)
    _draw_features(img, f, rng, grey)
    if f.gender == 0 and f.age > 17 and rng.random() < 0.35:
        beard = f.hair * (1 - grey) + grey_col * grey
        _draw_beard(img, f, outline, beard, full=bool(rng.random() < 0.6), rng=rng)
    return _finish(img, rng), f


def _synth_name(age: int, gender: int, race: int, seed: int, index: int) -> str:
    """UTKFace-style name; the 17-digit id packs the seed (8 digits) and the index (9 digits)."""
    return f"{age}_{gender}_{race}_{(seed % 10**8) * 10**9 + index:017d}.jpg"


def _draw_age(rng: np.random.Generator) -> int:
    return int(rng.integers(0, MAX_AGE + 1))


def item_age(seed: int, index: int) -> int:
    """The age of image `index` of the set drawn with `seed` (without drawing the face)."""
    return _draw_age(np.random.default_rng([seed, index]))


def _render_item(seed: int, index: int, size: int) -> tuple[str, bytes]:
    """File name and JPEG bytes of image `index`; its age is the first draw of its own generator."""
    rng = np.random.default_rng([seed, index])
    age = _draw_age(rng)
    img, face = _render(age, rng, size)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:  # pragma: no cover - OpenCV always encodes a uint8 image
        raise RuntimeError("cv2.imencode failed")
    return _synth_name(age, face.gender, face.race, seed, index), buf.tobytes()


def write_synth(out: str | Path, n: int, seed: int = 0, size: int = 96, progress: bool = False) -> list[Path]:
    """Write `n` synthetic faces (ages 0-MAX_AGE = 0-70, roughly uniform) as JPEGs into `out`; returns their paths.

    Image i is drawn from `np.random.default_rng([seed, i])`, so one seed gives byte-identical files
    and a smaller `n` gives a prefix of a larger one.
    """
    if n < 1:
        raise UsageError(f"synth: the number of images must be at least 1, got {n}")
    if seed < 0:
        raise UsageError(f"synth: the seed must be >= 0, got {seed}")
    if size < 32:
        raise UsageError(f"synth: the image size must be at least 32 pixels, got {size}")
    folder = Path(out)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"synth: cannot create output folder {folder}: {exc.strerror or exc}") from exc
    paths: list[Path] = []
    bar = _progress_bar(progress)
    with bar:
        task = bar.add_task(f"drawing faces into {folder}", total=n)
        for i in range(n):
            name, data = _render_item(seed, i, size)
            path = folder / name
            try:
                path.write_bytes(data)
            except OSError as exc:
                raise UsageError(f"synth: cannot write {path}: {exc.strerror or exc}") from exc
            paths.append(path)
            bar.advance(task)
    return paths


def _progress_bar(enabled: bool) -> Progress:
    """A rich progress bar on stderr (a no-op when not `enabled`)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=Console(stderr=True), disable=not enabled, transient=False)


def cache_root(cache_dir: str | None) -> Path:
    """`cache_dir`, else `$ORDINALAGE_CACHE`, else `~/.cache/ordinalage`."""
    from ordinalage.data.hashing import default_cache_dir

    return default_cache_dir(cache_dir)


def ensure_default_synth(cfg: DataConfig) -> Path:
    """The cached default synthetic set (`cfg.synth_n` faces at `cfg.synth_size` px, seed 0).

    Generated once into a temporary sibling folder and renamed into place, so a reader never sees
    a half-written set and two racing processes both end up using one complete folder.
    """
    n, size = int(cfg.synth_n), int(cfg.synth_size)
    root = cache_root(cfg.cache_dir)
    target = root / f"synth-{SYNTH_VERSION}-n{n}-s{size}"
    if target.is_dir():
        return target
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"synth: cannot create cache folder {root} (data.cache_dir / $ORDINALAGE_CACHE): "
                         f"{exc.strerror or exc}") from exc
    tmp = root / f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    print(f"ordinalage: generating the default synthetic face set ({n} images, {size} px) in {target}",
          file=sys.stderr)
    try:
        write_synth(tmp, n=n, seed=0, size=size)
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():  # not a lost race: a real failure
                raise
    except OSError as exc:
        raise UsageError(f"synth: cannot write the cache folder {target}: {exc.strerror or exc}") from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
