"""Image parameterizations: the tensors the optimizer changes, and how they become RGB images.

`fourier` stores each image as a random spectrum whose frequencies are scaled by 1/frequency
(preconditioning: every frequency learns at a comparable rate), `pixel` stores pixels directly,
`lowres` and `laplacian` store pixels at lower resolutions that are upsampled and summed. All
optionally decorrelate colours with the square root of ImageNet's colour correlation, then a sigmoid
maps to [0, 1]. Published values (Lucid): spectrum std 0.01, decay power 1, result divided by 4.

With `alpha`, each image has one more plane, its opacity (Lucid's `param.image(alpha=True)`): it
is stored like the colours, never mixed with them, and a sigmoid maps it to [0, 1] too.
`start_from_` inverts the mapping, so that an image starts as a given photo (`--init`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fvcli.regularizers import gaussian_blur

INIT_STD = 0.01
DECAY_POWER = 1.0
FOURIER_DIVISOR = 4.0
# Square root of ImageNet's colour correlation matrix (rows: output R, G, B).
COLOR_CORRELATION_SQRT = ((0.26, 0.09, 0.02), (0.27, 0.00, -0.05), (0.27, -0.09, 0.03))
# A photo an image starts from is clamped to this margin inside [0, 1], where the sigmoid's inverse
# is finite; half a level of 8 bits, so the start still rounds to the photo's own pixels.
PHOTO_MARGIN = 0.5 / 255


def _color_matrix() -> Tensor:
    m = torch.tensor(COLOR_CORRELATION_SQRT)
    return m / m.norm(dim=0).max()  # divided by its largest column norm (about 0.462)


def _init(seeds: list[int], shape: tuple[int, ...]) -> Tensor:
    """One normal draw per image from that image's own seed: independent of the batch."""
    images = [torch.randn(shape, generator=torch.Generator().manual_seed(s)) * INIT_STD for s in seeds]
    return torch.stack(images)


class ImageParam(nn.Module):
    """A batch of images, one per seed, as trainable tensors; calling it returns images in [0, 1].

    `channels`: 3 (RGB) for most models; 1 for grayscale models, 4 or more for models of other
    imagery. Colours are decorrelated for RGB only (the correlation is ImageNet's). `alpha`: one
    more plane, the opacity, last; `planes` counts them all.
    """

    name = "base"

    def __init__(self, size: int, decorrelate: bool, channels: int = 3, alpha: bool = False):
        super().__init__()
        self.size, self.channels, self.decorrelate = size, channels, decorrelate and channels == 3
        self.alpha, self.planes = alpha, channels + int(alpha)
        self.register_buffer("color", _color_matrix(), persistent=False)

    def raw(self) -> Tensor:
        """Unbounded images (N, planes, H, W) before colour mixing and the sigmoid."""
        raise NotImplementedError

    def forward(self) -> Tensor:
        return self.finish(self.raw())

    def finish(self, x: Tensor) -> Tensor:
        """Raw planes to images in [0, 1]: colours mixed (RGB), then the sigmoid; alpha only the sigmoid."""
        if self.decorrelate:
            colours = torch.einsum("ij,njhw->nihw", self.color, x[:, :3])
            x = torch.cat([colours, x[:, 3:]], dim=1) if self.alpha else colours
        return torch.sigmoid(x)

    def describe(self) -> dict:
        described = {"name": self.name, "decorrelate": self.decorrelate, "init_std": INIT_STD}
        if self.alpha:
            described["alpha"] = True
        return described if self.channels == 3 else {**described, "channels": self.channels}

    @torch.no_grad()
    def start_from_(self, photo: Tensor) -> None:
        """Make every image `photo` (channels, H, W) in [0, 1], clamped to PHOTO_MARGIN: the raw
        colour planes become the sigmoid's inverse, unmixed (RGB); an alpha plane keeps its start."""
        raw = torch.logit(photo.to(self.color).clamp(PHOTO_MARGIN, 1 - PHOTO_MARGIN))
        if self.decorrelate:
            unmix = torch.linalg.inv(self.color.double()).to(raw)
            raw = torch.einsum("ij,jhw->ihw", unmix, raw)
        target = self.raw().clone()
        target[:, : self.channels] = raw
        self.set_raw_(target)

    def set_raw_(self, target: Tensor) -> None:
        """Set the parameters so that raw() gives `target` (N, planes, H, W), as far as they can."""
        raise NotImplementedError

    @torch.no_grad()
    def blur_(self, sigma: float) -> None:
        """Blur the images by a Gaussian of `sigma` pixels, in place (the blur step)."""
        raise NotImplementedError


class FourierParam(ImageParam):
    name = "fourier"

    def __init__(self, seeds: list[int], size: int, decorrelate: bool = True, channels: int = 3, alpha: bool = False, decay: float = DECAY_POWER):
        super().__init__(size, decorrelate, channels, alpha)
        self.decay = decay
        fy = torch.fft.fftfreq(size)[:, None]
        fx = torch.fft.rfftfreq(size)[None, :]
        frequency = torch.sqrt(fx * fx + fy * fy)
        scale = 1.0 / frequency.clamp_min(1.0 / size) ** decay
        self.register_buffer("scale", scale[None, None, :, :, None], persistent=False)
        self.register_buffer("frequency", frequency, persistent=False)
        self.spectrum = nn.Parameter(_init(seeds, (self.planes, size, size // 2 + 1, 2)))

    def raw(self) -> Tensor:
        spectrum = torch.view_as_complex((self.scale * self.spectrum).contiguous())
        image = torch.fft.irfft2(spectrum, s=(self.size, self.size), norm="ortho")
        return image / FOURIER_DIVISOR

    def describe(self) -> dict:
        return {**super().describe(), "decay_power": self.decay, "divisor": FOURIER_DIVISOR}

    @torch.no_grad()
    def set_raw_(self, target: Tensor) -> None:
        # raw() inverted: the orthonormal FFT of the image times the divisor, over each frequency's scale.
        spectrum = torch.fft.rfft2(target * FOURIER_DIVISOR, norm="ortho")
        self.spectrum.copy_(torch.view_as_real(spectrum) / self.scale)

    @torch.no_grad()
    def blur_(self, sigma: float) -> None:
        # A Gaussian blur multiplies each frequency f (cycles per pixel) by exp(-2 pi^2 sigma^2 f^2).
        response = torch.exp(-2 * math.pi**2 * sigma**2 * self.frequency**2)
        self.spectrum.mul_(response[None, None, :, :, None])


class PixelParam(ImageParam):
    name = "pixel"

    def __init__(self, seeds: list[int], size: int, decorrelate: bool = True, channels: int = 3, alpha: bool = False):
        super().__init__(size, decorrelate, channels, alpha)
        self.pixels = nn.Parameter(_init(seeds, (self.planes, size, size)))

    def raw(self) -> Tensor:
        return self.pixels

    @torch.no_grad()
    def set_raw_(self, target: Tensor) -> None:
        self.pixels.copy_(target)

    @torch.no_grad()
    def blur_(self, sigma: float) -> None:
        self.pixels.copy_(gaussian_blur(self.pixels, sigma))


class PyramidParam(ImageParam):
    """A sum of pixel images at several resolutions, each upsampled (bilinear) to the full size.

    `lowres`: one level at a quarter of the size (coarse shapes only). `laplacian`: levels at
    the full size, 1/2, 1/4 and 1/8, so coarse structure can move as fast as fine detail.
    """

    def __init__(self, seeds: list[int], size: int, decorrelate: bool = True, channels: int = 3, alpha: bool = False, divisors: tuple[int, ...] = (1, 2, 4, 8), name: str = "laplacian"):
        super().__init__(size, decorrelate, channels, alpha)
        self.name, self.divisors = name, divisors
        self.levels = nn.ParameterList(
            nn.Parameter(_init([(s + i * 7919) % 2**63 for s in seeds], (self.planes, max(1, size // d), max(1, size // d))))
            for i, d in enumerate(divisors)
        )

    def raw(self) -> Tensor:
        total = None
        for level in self.levels:
            up = level if level.shape[-1] == self.size else F.interpolate(level, size=(self.size, self.size), mode="bilinear", align_corners=False)
            total = up if total is None else total + up
        return total

    def describe(self) -> dict:
        return {**super().describe(), "resolutions": [max(1, self.size // d) for d in self.divisors]}

    @torch.no_grad()
    def set_raw_(self, target: Tensor) -> None:
        # All of it in the finest level, the others zero: exact where that level has the full size
        # (laplacian); `lowres` can only hold the image averaged down to its quarter size.
        finest = min(range(len(self.levels)), key=lambda i: self.divisors[i])
        for i, level in enumerate(self.levels):
            level.copy_(F.adaptive_avg_pool2d(target, level.shape[-2:]) if i == finest else torch.zeros_like(level))

    @torch.no_grad()
    def blur_(self, sigma: float) -> None:
        for level, divisor in zip(self.levels, self.divisors):
            if level.shape[-1] > 2:
                level.copy_(gaussian_blur(level, max(sigma / divisor, 0.3)))


class SharedParam(nn.Module):
    """Images of a group share low-resolution images (1/2 to 1/16 of the size, as in the article's
    interpolation figure) added to their own, so that an interpolation's frames keep one layout
    while each frame is free in its details."""

    SHARED_DIVISORS = (2, 4, 8, 16)

    def __init__(self, inner: ImageParam, members: tuple[tuple[int, ...], ...], seeds: list[int]):
        super().__init__()
        self.inner, self.size = inner, inner.size
        index = torch.zeros(sum(len(m) for m in members), dtype=torch.long)
        for g, group in enumerate(members):
            index[list(group)] = g
        self.register_buffer("group_of", index, persistent=False)
        self.shared = nn.ParameterList(
            nn.Parameter(_init([(seeds[group[0]] + 104729 * (i + 1)) % 2**63 for group in members], (inner.planes, side, side)))
            for i, side in enumerate(self.resolutions)
        )

    @property
    def resolutions(self) -> list[int]:
        return [max(1, self.size // d) for d in self.SHARED_DIVISORS]

    def raw(self) -> Tensor:
        x = self.inner.raw()
        for level in self.shared:
            up = F.interpolate(level, size=(self.size, self.size), mode="bilinear", align_corners=False)
            x = x + up[self.group_of]
        return x

    def forward(self) -> Tensor:
        return self.inner.finish(self.raw())

    def describe(self) -> dict:
        return {**self.inner.describe(), "shared_lowres": self.resolutions}

    @torch.no_grad()
    def start_from_(self, photo: Tensor) -> None:
        for level in self.shared:  # the frames start alike, from the photo alone
            level.zero_()
        self.inner.start_from_(photo)

    @torch.no_grad()
    def blur_(self, sigma: float) -> None:
        self.inner.blur_(sigma)


def _lowres(seeds: list[int], size: int, decorrelate: bool = True, channels: int = 3, alpha: bool = False) -> PyramidParam:
    return PyramidParam(seeds, size, decorrelate, channels, alpha, divisors=(4,), name="lowres")


PARAMETERIZATIONS = {"fourier": FourierParam, "pixel": PixelParam, "lowres": _lowres, "laplacian": PyramidParam}
# Those that can start from a photo (start_from_), and where the photo goes; other parameters start at 0.
PHOTO_PLACEMENT = {
    "fourier": "the spectrum",
    "pixel": "the pixels",
    "lowres": "its one level, averaged down to a quarter of the size",
    "laplacian": "the full-size level",
}


def make_param(name: str, seeds: list[int], size: int, decorrelate: bool, channels: int = 3, alpha: bool = False) -> ImageParam:
    return PARAMETERIZATIONS[name](seeds, size, decorrelate=decorrelate, channels=channels, alpha=alpha)
