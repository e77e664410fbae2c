"""Transparent images (`--alpha`), after "Transparent Neuron Visualizations" in the Distill article
"Differentiable Image Parameterizations" (Mordvintsev et al., 2018) and Lucid's transparency notebook.

An image has one more plane, its opacity. At every step the model sees the image composited over a
new random background, so whatever the unit does not need can turn transparent: no single
background can be relied on. Opacity is penalized, so that it has to earn its place.

Published values (Lucid's notebook): each background is a random Fourier image like the image's own
parameterization (Lucid's `image_sample`), spectrum std 0.2 and decay power 1.5 (smoother than the
image's 1), colours decorrelated, through a sigmoid; the objective is multiplied by
(1 - mean alpha). fv generalizes the product to objective - weight * |objective| * mean alpha: the
same for weight 1 and an objective of 0 or more, and still a penalty on opacity when the objective is
negative (the product would reward opacity there).

Where fv departs from the notebook, so that a unit rises with --alpha about as fast as without it:
images start almost opaque (fvcli.optvis.param.ALPHA_START) and the penalty's weight grows linearly from 0
at the first step to `weight` at the last. At full weight from the start, an image at opacity 0.95
keeps only 5% of its objective, and the cheapest way up is to turn transparent and let the random
backgrounds excite the unit; measured on random GoogLeNet (BENCHMARKS.md), most units then stayed
near 0 for the first 32-64 steps.

The values fv records (activation_start, activation_final) are measured over a fixed grey (0.5), so
that they do not depend on a random background.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fvcli.optvis.param import FOURIER_DIVISOR, color_matrix, falloff
from fvcli.optvis.transforms import Draws

BACKGROUND_STD = 0.2
BACKGROUND_DECAY = 1.5
MEASURED_OVER = 0.5  # the grey background of the recorded values
_SLOT = 1000  # the backgrounds' place in each step's random draws, apart from the transforms'


def composite(image: Tensor, background: Tensor | float) -> Tensor:
    """(N, C + 1, H, W) images, alpha last, over `background` (N, C, H, W) or a grey level."""
    colours, alpha = image[:, :-1], image[:, -1:]
    return colours * alpha + background * (1 - alpha)


def ramped(weight: float, step: int, steps: int) -> float:
    """The penalty's weight at `step` (0-based) of `steps`: growing linearly to `weight` at the last."""
    return weight * (step + 1) / steps


def opacity_penalized(values: Tensor, image: Tensor, weight: float) -> Tensor:
    """Each image's objective less weight * |objective| * its mean alpha."""
    return values - weight * values.abs() * image[:, -1].flatten(1).mean(dim=1)


class Backgrounds:
    """Random backgrounds for a batch, new at every step; image i's at step s comes from its seed
    and s alone (counter-based, see transforms.Draws), so it does not depend on the batch."""

    def __init__(self, draws: Draws, size: int, channels: int):
        self.draws, self.size, self.channels = draws, size, channels
        self.scale = BACKGROUND_STD * falloff(size, BACKGROUND_DECAY, draws.device)
        self.color = color_matrix().to(draws.device) if channels == 3 else None

    def __call__(self, step: int) -> Tensor:
        """(N, channels, size, size) backgrounds in (0, 1) for `step`."""
        n, (h, w) = len(self.draws), self.scale.shape
        noise = self.draws.normals(step, _SLOT, self.channels * h * w * 2).view(n, self.channels, h, w, 2)
        spectrum = torch.view_as_complex(noise * self.scale[..., None])
        image = torch.fft.irfft2(spectrum, s=(self.size, self.size), norm="ortho") / FOURIER_DIVISOR
        if self.color is not None:
            image = torch.einsum("ij,njhw->nihw", self.color, image)
        return torch.sigmoid(image)


def describe(weight: float) -> dict:
    """The sidecar's record of --alpha."""
    return {
        "penalty": "objective - weight * |objective| * mean alpha",
        "weight": weight,
        "weight_schedule": "linear from weight/steps at the first step to weight at the last",
        "backgrounds": {
            "kind": "random Fourier image, new every step",
            "spectrum_std": BACKGROUND_STD,
            "decay_power": BACKGROUND_DECAY,
            "decorrelated": "RGB only",
        },
        "values_measured_over": f"grey {MEASURED_OVER}",
    }
