"""What a backbone expects as input: side length and per-channel RGB normalisation."""

from __future__ import annotations

from dataclasses import dataclass

import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# vgg_face_dag.pth: RGB 0-255 minus (129.1863, 104.7624, 93.5940), no scaling. Canonical VGGFace
# state dicts from read_vggface() are RGB, so keras weights use this too after conversion.
VGGFACE_MEAN = (129.1863 / 255.0, 104.7624 / 255.0, 93.5940 / 255.0)
VGGFACE_STD = (1.0 / 255.0, 1.0 / 255.0, 1.0 / 255.0)


@dataclass(frozen=True)
class InputSpec:
    """Images arrive as uint8 RGB (N, 3, H, W); the model sees (x / 255 - mean) / std."""

    size: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def normalize(self, images: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """uint8 (N,3,H,W) on any device -> normalised float tensor on the same device."""
        mean = torch.tensor(self.mean, device=images.device, dtype=dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=images.device, dtype=dtype).view(1, 3, 1, 1)
        return (images.to(dtype) / 255.0 - mean) / std
