"""Frequency penalties: terms that fight high-frequency noise, one value per image.

Each is a mean over pixels (not a sum, as in Lucid), so a weight means the same at every image
size. The engine subtracts weight * penalty from the objective it maximizes.

  l1    mean |x - 0.5|: pulls colours towards grey
  tv    total variation, the mean |difference| between neighbouring pixels
  blur  mean (x - blur(x))^2 with blur(x) held constant: pulls the image towards its blurred self
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

BLUR_SIGMA = 1.0  # pixels, for the blur penalty and the blur step


def l1(images: Tensor) -> Tensor:
    return (images - 0.5).abs().flatten(1).mean(dim=1)


def total_variation(images: Tensor) -> Tensor:
    dy = (images[:, :, 1:, :] - images[:, :, :-1, :]).abs().flatten(1).mean(dim=1)
    dx = (images[:, :, :, 1:] - images[:, :, :, :-1]).abs().flatten(1).mean(dim=1)
    return dx + dy


def gaussian_blur(images: Tensor, sigma: float = BLUR_SIGMA) -> Tensor:
    """A separable Gaussian blur of each channel, reflecting at the borders."""
    radius = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    channels = images.shape[1]
    x = F.pad(images, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels)
    return F.conv2d(x, kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels)


def blur(images: Tensor) -> Tensor:
    return 0.5 * (images - gaussian_blur(images).detach()).pow(2).flatten(1).mean(dim=1)


PENALTIES = {"l1": l1, "tv": total_variation, "blur": blur}


def penalty(images: Tensor, weights: dict[str, float]) -> Tensor | None:
    """The weighted sum of the penalties with a non-zero weight, per image; None when there are none."""
    total = None
    for name, weight in weights.items():
        if weight:
            term = weight * PENALTIES[name](images)
            total = term if total is None else total + term
    return total
