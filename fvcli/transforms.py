"""Transformation robustness: random pad, jitter, scale and rotation, sampled for each image.

Each transform is configuration plus two pure functions: how it changes the canvas size, and, for
sampled parameters, the affine map from its output pixel to its input pixel. A pipeline multiplies
those maps and resamples each image once (bilinear), so a chain of five transforms costs one
`grid_sample` and blurs once, not four times. Randomness comes from each image's own
`random.Random`, which the engine seeds per unit: a unit's transforms never depend on its batch.

Coordinates are pixel centres measured from the canvas centre; out-of-canvas samples take the
pad fill (grey 0.5), as padding would.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

FILL = 0.5


def _translate(tx: float, ty: float) -> list[list[float]]:
    return [[1.0, 0.0, tx], [0.0, 1.0, ty], [0.0, 0.0, 1.0]]


@dataclass(frozen=True)
class Pad:
    """Grow the canvas by `pixels` on every side, filled with grey (the pipeline's FILL)."""

    pixels: int
    fill: float = FILL

    def canvas(self, h: int, w: int) -> tuple[int, int]:
        return h + 2 * self.pixels, w + 2 * self.pixels

    def sample(self, rng: random.Random) -> list[list[float]]:
        return _translate(0.0, 0.0)  # centred coordinates do not move


@dataclass(frozen=True)
class Jitter:
    """Crop `pixels` from the canvas at a random integer offset (a random shift)."""

    pixels: int

    def canvas(self, h: int, w: int) -> tuple[int, int]:
        return h - self.pixels, w - self.pixels

    def sample(self, rng: random.Random) -> list[list[float]]:
        d = self.pixels
        return _translate(rng.randint(0, d) - d / 2, rng.randint(0, d) - d / 2)


@dataclass(frozen=True)
class Scale:
    """Zoom about the centre by a factor drawn from `factors`; the canvas keeps its size."""

    factors: tuple[float, ...]

    def canvas(self, h: int, w: int) -> tuple[int, int]:
        return h, w

    def sample(self, rng: random.Random) -> list[list[float]]:
        s = rng.choice(self.factors)
        return [[1 / s, 0.0, 0.0], [0.0, 1 / s, 0.0], [0.0, 0.0, 1.0]]


@dataclass(frozen=True)
class Rotate:
    """Rotate about the centre by an angle in degrees drawn from `degrees`."""

    degrees: tuple[float, ...]

    def canvas(self, h: int, w: int) -> tuple[int, int]:
        return h, w

    def sample(self, rng: random.Random) -> list[list[float]]:
        a = math.radians(rng.choice(self.degrees))
        c, s = math.cos(a), math.sin(a)
        return [[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]]  # output -> input: rotate back


Transform = Pad | Jitter | Scale | Rotate

# Lucid's standard transforms: pad 12, jitter 8, scale 0.90..1.10 by 0.02, rotate -10..10 with
# 0 five times more likely, jitter 4.
STANDARD: tuple[Transform, ...] = (
    Pad(12),
    Jitter(8),
    Scale(tuple(round(1 + (i - 5) / 50, 2) for i in range(11))),
    Rotate(tuple(float(d) for d in [*range(-10, 11), 0, 0, 0, 0, 0])),
    Jitter(4),
)
PRESETS: dict[str, tuple[Transform, ...]] = {"standard": STANDARD, "none": ()}


class Pipeline:
    """A list of transforms applied as one resampling per image."""

    def __init__(self, transforms: tuple[Transform, ...]):
        self.transforms = transforms
        self._grids: dict[tuple, Tensor] = {}

    @classmethod
    def preset(cls, name: str) -> Pipeline:
        return cls(PRESETS[name])

    @classmethod
    def from_setting(cls, setting) -> Pipeline:
        """A preset name, or ((name, value), ...) item by item (see settings.transforms)."""
        if isinstance(setting, str):
            return cls.preset(setting)
        makers = {"pad": Pad, "jitter": Jitter, "scale": Scale, "rotate": Rotate}
        return cls(tuple(makers[name](value) for name, value in setting))

    def describe(self) -> list[dict]:
        return [{"name": type(t).__name__.lower(), **asdict(t)} for t in self.transforms]

    def canvas(self, h: int, w: int) -> tuple[int, int]:
        for t in self.transforms:
            h, w = t.canvas(h, w)
        return h, w

    def matrices(self, rngs: list[random.Random]) -> Tensor:
        """Per image, the 3x3 map from an output pixel to its input pixel: (N, 3, 3) float64."""
        total = torch.eye(3, dtype=torch.float64).repeat(len(rngs), 1, 1)
        for t in self.transforms:
            total = total @ torch.tensor([t.sample(rng) for rng in rngs], dtype=torch.float64)
        return total

    def _base_grid(self, h: int, w: int, device: torch.device) -> Tensor:
        key = (h, w, device)
        if key not in self._grids:
            ys = torch.arange(h, dtype=torch.float32, device=device) - (h - 1) / 2
            xs = torch.arange(w, dtype=torch.float32, device=device) - (w - 1) / 2
            y, x = torch.meshgrid(ys, xs, indexing="ij")
            self._grids[key] = torch.stack([x, y, torch.ones_like(x)], dim=-1)  # (H, W, 3)
        return self._grids[key]

    def __call__(self, images: Tensor, rngs: list[random.Random]) -> Tensor:
        if not self.transforms:
            return images
        n, _, h, w = images.shape
        out_h, out_w = self.canvas(h, w)
        maps = self.matrices(rngs)[:, :2, :].float()  # (N, 2, 3), drawn on the host
        if images.is_cuda:  # pinned memory: the copy does not make the host wait for the GPU
            maps = maps.pin_memory().to(images.device, non_blocking=True)
        source = torch.einsum("hwk,njk->nhwj", self._base_grid(out_h, out_w, images.device), maps)
        # grid_sample with align_corners=False: a centred pixel coordinate x is 2x/W in [-1, 1].
        grid = source / torch.tensor([w / 2, h / 2], device=images.device)
        shifted = F.grid_sample(images - FILL, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return shifted + FILL
