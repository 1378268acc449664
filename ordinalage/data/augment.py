"""Face-safe albumentations pipelines built from `AugmentConfig` (the config fields are the preset).

Every transform has its own probability (`*_p`; 0 leaves it out) and a strength that is the
largest change drawn: +-shift/scale/rotate, +-colour jitter, blur kernels up to `blur_limit`,
noise std up to `noise_std`, JPEG quality down to `jpeg_quality`, one hole up to
`occlusion_size`. Images stay uint8 HxWx3 of the same size.
"""

from __future__ import annotations

import os
import random
from dataclasses import fields

import cv2
import numpy as np

from ordinalage.config import AugmentConfig, DataConfig
from ordinalage.errors import UsageError

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no network check on import
import albumentations as A  # noqa: E402


def _check(aug: AugmentConfig) -> None:
    """Range checks with messages that name the config key."""
    for f in fields(aug):
        value = getattr(aug, f.name)
        if f.name.endswith("_p") and not 0.0 <= value <= 1.0:
            raise UsageError(
                f"config key 'data.augment.{f.name}': expected a probability in [0, 1], got {value}"
            )
    limits = {
        "shift": (0.0, 1.0),
        "scale": (0.0, 0.99),
        "rotate": (0.0, 180.0),
        "brightness": (0.0, 1.0),
        "contrast": (0.0, 1.0),
        "saturation": (0.0, 1.0),
        "hue": (0.0, 0.5),
        "noise_std": (0.0, 1.0),
        "occlusion_size": (0.0, 1.0),
    }
    for name, (lo, hi) in limits.items():
        value = getattr(aug, name)
        if not lo <= value <= hi:
            raise UsageError(
                f"config key 'data.augment.{name}': expected a value in [{lo}, {hi}], got {value}"
            )
    if aug.blur_p > 0 and (aug.blur_limit < 3 or aug.blur_limit % 2 == 0):
        raise UsageError(
            f"config key 'data.augment.blur_limit': expected an odd kernel size >= 3, got {aug.blur_limit}"
        )
    if not 1 <= aug.jpeg_quality <= 100:
        raise UsageError(f"config key 'data.augment.jpeg_quality': expected 1-100, got {aug.jpeg_quality}")


def build_transforms(aug: AugmentConfig) -> list[A.BasicTransform]:
    """The list of enabled transforms, in order: geometry, colour, degradation, occlusion."""
    _check(aug)
    ts: list[A.BasicTransform] = []
    if aug.hflip_p > 0:
        ts.append(A.HorizontalFlip(p=aug.hflip_p))
    if aug.affine_p > 0 and (aug.shift or aug.scale or aug.rotate):
        ts.append(
            A.Affine(
                translate_percent=(-aug.shift, aug.shift),
                scale=(1.0 - aug.scale, 1.0 + aug.scale),
                rotate=(-aug.rotate, aug.rotate),
                keep_ratio=True,
                border_mode=cv2.BORDER_REFLECT_101,
                p=aug.affine_p,
            )
        )
    if aug.color_p > 0 and (aug.brightness or aug.contrast or aug.saturation or aug.hue):
        ts.append(
            A.ColorJitter(
                brightness=(1.0 - aug.brightness, 1.0 + aug.brightness),
                contrast=(1.0 - aug.contrast, 1.0 + aug.contrast),
                saturation=(1.0 - aug.saturation, 1.0 + aug.saturation),
                hue=(-aug.hue, aug.hue),
                p=aug.color_p,
            )
        )
    if aug.gray_p > 0:
        ts.append(A.ToGray(num_output_channels=3, p=aug.gray_p))
    if aug.blur_p > 0:
        ts.append(A.GaussianBlur(blur_limit=(3, aug.blur_limit), p=aug.blur_p))
    if aug.noise_p > 0 and aug.noise_std > 0:
        ts.append(A.GaussNoise(std_range=(0.0, aug.noise_std), p=aug.noise_p))
    if aug.jpeg_p > 0:
        ts.append(
            A.ImageCompression(compression_type="jpeg", quality_range=(aug.jpeg_quality, 100), p=aug.jpeg_p)
        )
    if aug.occlusion_p > 0 and aug.occlusion_size > 0:
        side = (aug.occlusion_size / 2, aug.occlusion_size)
        ts.append(
            A.CoarseDropout(
                num_holes_range=(1, 1),
                hole_height_range=side,
                hole_width_range=side,
                fill="random_uniform",
                p=aug.occlusion_p,
            )
        )
    return ts


def build_transform(aug: AugmentConfig | DataConfig, size: int, train: bool) -> A.Compose | None:
    """A Compose for training images of side `size`, or None (eval, `enabled: false`, or nothing on).

    `aug` may be the DataConfig itself (its `augment` field is used).
    """
    if isinstance(aug, DataConfig):
        aug = aug.augment
    if size <= 0:
        raise UsageError(f"image size must be positive, got {size}")
    if not train or not aug.enabled:
        return None
    ts = build_transforms(aug)
    return A.Compose(ts, p=1.0) if ts else None


def reseed_transform(transform: A.BaseCompose | None, seed: int) -> None:
    """Give `transform` one fresh random stream from `seed` (no-op for None).

    Uses `set_random_state` with one shared generator rather than `Compose.set_random_seed`,
    which seeds every child with the same seed and so correlates their coin flips
    (hflip applied exactly when affine is, for equal p).
    """
    if transform is None:
        return
    seed = int(seed) % 2**63
    transform.set_random_state(np.random.default_rng(seed), random.Random(seed))
