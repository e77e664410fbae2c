"""Image parameterizations: the tensors the optimizer changes, and how they become RGB images.

`fourier` stores each image as a random spectrum whose frequencies are scaled by 1/frequency
(preconditioning: every frequency learns at a comparable rate), `pixel` stores pixels directly,
`lowres` and `laplacian` store pixels at lower resolutions that are upsampled and summed. All
optionally decorrelate colours with the square root of ImageNet's colour correlation, then a sigmoid
maps to [0, 1]. Published values (Lucid): spectrum std 0.01, decay power 1, result divided by 4.
`maco` optimizes only the phase of a spectrum whose magnitude is fixed (Fel et al. 2023), `cppn`
the weights of a small network of the pixel coordinates (Mordvintsev et al. 2018).

With `alpha`, each image has one more plane, its opacity (Lucid's `param.image(alpha=True)`): it
is stored like the colours, never mixed with them, and a sigmoid maps it to [0, 1] too. It starts
opaque (ALPHA_START): the model first sees the image itself, so a unit rises as fast as without
--alpha, and the opacity penalty (fvcli.optvis.transparency) carves away what the unit does not need.
`start_from_` inverts the mapping, so that an image starts as a given photo (`--init`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fvcli.optvis.regularizers import gaussian_blur

INIT_STD = 0.01
DECAY_POWER = 1.0
FOURIER_DIVISOR = 4.0
# The opacity every image starts with. Lucid starts at 0.5, half the image over random backgrounds
# that change every step: measured on random GoogLeNet's mixed4a:0-7 at 64 px, 32 steps, the units
# then reached a tenth of what they reach opaque and several stayed at 0 (BENCHMARKS.md).
ALPHA_START = 0.95
_ALPHA_SHIFT = math.log(ALPHA_START / (1 - ALPHA_START))  # the sigmoid's inverse of ALPHA_START
# Square root of ImageNet's colour correlation matrix (rows: output R, G, B).
COLOR_CORRELATION_SQRT = ((0.26, 0.09, 0.02), (0.27, 0.00, -0.05), (0.27, -0.09, 0.03))
# A photo an image starts from is clamped to this margin inside [0, 1], where the sigmoid's inverse
# is finite; half a level of 8 bits, so the start still rounds to the photo's own pixels.
PHOTO_MARGIN = 0.5 / 255


def color_matrix() -> Tensor:
    m = torch.tensor(COLOR_CORRELATION_SQRT)
    return m / m.norm(dim=0).max()  # divided by its largest column norm (about 0.462)


def _init(seeds: list[int], shape: tuple[int, ...]) -> Tensor:
    """One normal draw per image from that image's own seed: independent of the batch."""
    images = [torch.randn(shape, generator=torch.Generator().manual_seed(s)) * INIT_STD for s in seeds]
    return torch.stack(images)


def frequencies(size: int, device: torch.device | str | None = None) -> Tensor:
    """(size, size // 2 + 1): the frequency of each entry of a real 2-D FFT, in cycles per pixel."""
    fy = torch.fft.fftfreq(size, device=device)[:, None]
    fx = torch.fft.rfftfreq(size, device=device)[None, :]
    return torch.sqrt(fx * fx + fy * fy)


def falloff(size: int, power: float, device: torch.device | str | None = None) -> Tensor:
    """1 / max(f, 1/size)^power at each frequency f of a real 2-D FFT: natural images' amplitude
    law, which fourier's preconditioning, maco's default magnitude and --alpha's backgrounds use.
    The zero frequency takes the lowest frequency's value."""
    return 1.0 / frequencies(size, device).clamp_min(1.0 / size) ** power


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
        self.register_buffer("color", color_matrix(), persistent=False)

    def raw(self) -> Tensor:
        """Unbounded images (N, planes, H, W) before colour mixing and the sigmoid."""
        raise NotImplementedError

    def forward(self) -> Tensor:
        return self.finish(self.raw())

    def finish(self, x: Tensor) -> Tensor:
        """Raw planes to images in [0, 1]: colours mixed (RGB), then the sigmoid; alpha only the
        sigmoid, shifted so that a raw 0 is ALPHA_START."""
        colours = x[:, : self.channels]
        if self.decorrelate:
            colours = torch.einsum("ij,njhw->nihw", self.color, colours)
        if self.alpha:
            return torch.cat([torch.sigmoid(colours), torch.sigmoid(x[:, self.channels :] + _ALPHA_SHIFT)], dim=1)
        return torch.sigmoid(colours)

    def describe(self) -> dict:
        return self._with_planes({"name": self.name, "decorrelate": self.decorrelate, "init_std": INIT_STD})

    def _with_planes(self, described: dict) -> dict:
        """A description with what every parameterization adds: the alpha plane, other channel counts."""
        if self.alpha:
            described = {**described, "alpha": True, "alpha_start": ALPHA_START}
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
        self.register_buffer("scale", falloff(size, decay)[None, None, :, :, None], persistent=False)
        self.register_buffer("frequency", frequencies(size), persistent=False)
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


# ---- MaCo: Fel et al., "Unlocking Feature Visualization for Deeper Networks with MAgnitude
# Constrained Optimization", NeurIPS 2023 (arXiv 2306.06805) ----

# Natural images have an amplitude spectrum that falls as 1/f^alpha with alpha close to 1 (Field
# 1987, "Relations between the statistics of natural images..."; van der Schaaf and van Hateren
# 1996 measured 1.08 +- 0.14 in power/2). fv cannot ship the authors' ImageNet spectrum, so this
# law is the default magnitude; `fv spectrum` measures one from a folder of images.
POWER_LAW_ALPHA = 1.0
STANDARDIZE_EPS = 1e-4  # added to the standard deviation, as the authors' code does


def power_law(size: int, channels: int, alpha: float = POWER_LAW_ALPHA) -> Tensor:
    """(channels, size, size // 2 + 1): 1 / max(f, 1/size)^alpha at each frequency f of the real
    FFT (cycles per pixel), the same for every channel. The zero frequency takes the lowest
    frequency's value, as fourier's scale does. Its overall scale does not matter: maco
    standardizes each image."""
    return falloff(size, alpha).expand(channels, -1, -1).clone()


def _real_columns(size: int) -> list[int]:
    """The columns of a real FFT whose entries pair up within the column (row k with row -k): the
    zero frequency, and the Nyquist frequency of an even size."""
    return [0, size // 2] if size % 2 == 0 else [0]


class MacoParam(ImageParam):
    """image = irfft2(magnitude * exp(i * phase)): the magnitude is fixed, the phase is optimized.

    Mapping to [0, 1], as the authors' code does up to its last step: each image is standardized
    (mean 0, standard deviation 1 over its channels and pixels), colours are recorrelated for RGB
    (fv's matrix, the one the authors use), and a sigmoid maps to [0, 1] as for fv's other
    parameterizations (the authors' sigmoid maps straight into the model's normalized range, which
    fv's normalization step does after it). The magnitude holds in the image before
    standardization exactly: the phase of the entries of the zero and Nyquist columns is made
    antisymmetric (row k against row -k), so the spectrum is that of a real image. Those entries
    that are their own mirror (the zero frequency) stay real and positive, so each channel's mean
    is fixed by the spectrum. The initial phase is uniform in [-pi, pi) from each image's seed (the
    authors draw a normal phase and standardize it at every step; any phase is an angle, so fv
    keeps it unbounded and unstandardized, as the paper writes it).
    """

    name = "maco"

    def __init__(self, seeds: list[int], size: int, decorrelate: bool = True, channels: int = 3, alpha: bool = False, spectrum=None):
        assert not alpha, "maco has no opacity plane: the runner refuses --alpha with it"
        super().__init__(size, decorrelate, channels)
        self.spectrum = spectrum
        magnitude = power_law(size, channels) if spectrum is None else spectrum.fitted(size, channels)
        assert magnitude.shape == (channels, size, size // 2 + 1)
        mirror = (-torch.arange(size)) % size
        columns = _real_columns(size)
        magnitude = magnitude.clone()
        magnitude[:, :, columns] = (magnitude[:, :, columns] + magnitude[:, mirror][:, :, columns]) / 2
        self.register_buffer("magnitude", magnitude.to(torch.get_default_dtype()), persistent=False)
        self.register_buffer("mirror", mirror, persistent=False)
        self.columns = columns
        shape = (channels, size, size // 2 + 1)
        phases = [(torch.rand(shape, generator=torch.Generator().manual_seed(s)) * 2 - 1) * math.pi for s in seeds]
        self.phase = nn.Parameter(torch.stack(phases))

    def _hermitian_phase(self) -> Tensor:
        """The phase with the entries of the real columns antisymmetric in k and -k."""
        parts, at = [], 0
        for column in self.columns:
            parts.append(self.phase[..., at:column])
            own = self.phase[..., column : column + 1]
            parts.append((own - own[:, :, self.mirror]) / 2)
            at = column + 1
        parts.append(self.phase[..., at:])
        return torch.cat(parts, dim=-1)

    def spatial(self) -> Tensor:
        """The images before standardization: their |rfft2| (orthonormal) is the magnitude."""
        spectrum = torch.polar(self.magnitude.expand_as(self.phase), self._hermitian_phase())
        return torch.fft.irfft2(spectrum, s=(self.size, self.size), norm="ortho")

    def raw(self) -> Tensor:
        x = self.spatial()
        flat = x.flatten(1)
        mean = flat.mean(dim=1).view(-1, 1, 1, 1)
        std = flat.std(dim=1).view(-1, 1, 1, 1)
        return (x - mean) / (std + STANDARDIZE_EPS)

    def describe(self) -> dict:
        magnitude = (
            {"source": "power law", "formula": "1 / max(f, 1/size)^alpha, f in cycles per pixel", "alpha": POWER_LAW_ALPHA}
            if self.spectrum is None else self.spectrum.describe()
        )
        described = {
            "name": self.name,
            "decorrelate": self.decorrelate,
            "optimized": "phase",
            "init": "phase uniform in [-pi, pi)",
            "magnitude": magnitude,
            "fft": "orthonormal inverse real FFT; zero and Nyquist columns made Hermitian",
            "standardize": {"over": "channels and pixels of each image", "eps": STANDARDIZE_EPS},
            "output": "sigmoid",
        }
        return described if self.channels == 3 else {**described, "channels": self.channels}

    @torch.no_grad()
    def blur_(self, sigma: float) -> None:
        raise NotImplementedError("maco keeps its magnitude spectrum fixed: a blur would change it")


# ---- CPPN: Mordvintsev et al., "Differentiable Image Parameterizations", Distill 2018, and Lucid's
# lucid/optvis/param/cppn.py ----

CPPN_LAYERS = 8
CPPN_WIDTH = 24  # hidden units a layer; the composite activation doubles them
CPPN_RANGE = math.sqrt(3.0)  # coordinates span [-sqrt 3, sqrt 3]: standard deviation 1
# The composite activation: atan(x) and atan(x)^2, each divided by its RMS over x ~ N(0, 1), so that
# activations keep unit scale from layer to layer (Lucid's "biased" coefficients).
ATAN_RMS, ATAN_SQUARED_RMS = 0.67, 0.6
CPPN_BIAS_STD = 0.1
CPPN_CHUNK = 1 << 16  # pixels evaluated at once when rendering without gradients (large images)


def _composite(x: Tensor) -> Tensor:
    a = torch.atan(x)
    return torch.cat([a / ATAN_RMS, a * a / ATAN_SQUARED_RMS], dim=1)


def cppn_coordinates(size: int) -> Tensor:
    """(2, size * size): x and y of every pixel's centre, rows then columns, in [-sqrt 3, sqrt 3].
    Pixel centres (not Lucid's linspace, which puts the end pixels on the border) so that a grid K
    times finer samples the same picture: each of its K x K blocks averages to one pixel here."""
    line = CPPN_RANGE * ((2 * torch.arange(size, dtype=torch.get_default_dtype()) + 1) / size - 1)
    y, x = torch.meshgrid(line, line, indexing="ij")
    return torch.stack([x.flatten(), y.flatten()])


class CppnParam(ImageParam):
    """Each image is a compositional pattern-producing network of its pixel coordinates: 8 layers
    of 24 units (1 x 1 convolutions, here one matrix product per image over all pixels), each
    followed by the composite arctan activation, then a linear layer to the image's channels and
    a sigmoid. Weights are normal with std sqrt(1 / fan_in) (the variance of Lucid's variance
    scaling), biases normal with std 0.1, the output layer's weights 0 (so the first image is
    flat), all drawn from each image's own seed. The network is a function of continuous
    coordinates, so it renders at any size (`image_at`). No colour decorrelation: the output
    layer is linear and would absorb any fixed colour mixing (Lucid's CPPN has none either).
    """

    name = "cppn"

    def __init__(self, seeds: list[int], size: int, decorrelate: bool = True, channels: int = 3, alpha: bool = False):
        super().__init__(size, False, channels, alpha)
        shapes = [(CPPN_WIDTH, 2)] + [(CPPN_WIDTH, 2 * CPPN_WIDTH)] * (CPPN_LAYERS - 1) + [(self.planes, 2 * CPPN_WIDTH)]
        per_image = []
        for seed in seeds:
            generator = torch.Generator().manual_seed(seed)
            layers = []
            for k, (out, fan_in) in enumerate(shapes):
                weight = torch.randn(out, fan_in, generator=generator) * math.sqrt(1.0 / fan_in)
                if k == len(shapes) - 1:
                    weight.zero_()
                bias = torch.randn(out, 1, generator=generator) * CPPN_BIAS_STD
                layers.append((weight, bias))
            per_image.append(layers)
        self.weights = nn.ParameterList(nn.Parameter(torch.stack([image[k][0] for image in per_image])) for k in range(len(shapes)))
        self.biases = nn.ParameterList(nn.Parameter(torch.stack([image[k][1] for image in per_image])) for k in range(len(shapes)))
        self.register_buffer("coordinates", cppn_coordinates(size), persistent=False)

    def _network(self, coordinates: Tensor) -> Tensor:
        """(N, planes, P): the networks' outputs before the sigmoid at coordinates (2, P)."""
        x = torch.einsum("noi,ip->nop", self.weights[0], coordinates) + self.biases[0]
        for weight, bias in zip(self.weights[1:], self.biases[1:]):
            x = torch.baddbmm(bias, weight, _composite(x))
        return x

    def raw(self) -> Tensor:
        return self._network(self.coordinates).view(-1, self.planes, self.size, self.size)

    @torch.no_grad()
    def image_at(self, size: int) -> Tensor:
        """The images in [0, 1] rendered by the same networks at `size` px (a grid of that many
        pixel centres over the same square), a chunk of pixels at a time."""
        coordinates = cppn_coordinates(size).to(self.coordinates.device)
        parts = [self._network(chunk) for chunk in coordinates.split(CPPN_CHUNK, dim=1)]
        return self.finish(torch.cat(parts, dim=2).view(-1, self.planes, size, size))

    def describe(self) -> dict:
        described = {
            "name": self.name,
            "decorrelate": False,
            "inputs": "x, y of pixel centres in [-sqrt(3), sqrt(3)]",
            "layers": CPPN_LAYERS,
            "width": CPPN_WIDTH,
            "activation": f"composite arctan: atan(x) / {ATAN_RMS}, atan(x)^2 / {ATAN_SQUARED_RMS}",
            "init": f"weights normal with std sqrt(1/fan_in), biases normal with std {CPPN_BIAS_STD}, output weights 0",
            "output": "sigmoid",
        }
        return self._with_planes(described)

    @torch.no_grad()
    def blur_(self, sigma: float) -> None:
        raise NotImplementedError("a CPPN's image is its network's output: there are no pixels to blur")


def _lowres(seeds: list[int], size: int, decorrelate: bool = True, channels: int = 3, alpha: bool = False) -> PyramidParam:
    return PyramidParam(seeds, size, decorrelate, channels, alpha, divisors=(4,), name="lowres")


PARAMETERIZATIONS = {
    "fourier": FourierParam, "pixel": PixelParam, "lowres": _lowres, "laplacian": PyramidParam,
    "maco": MacoParam, "cppn": CppnParam,
}
# Those that can start from a photo (start_from_), and where the photo goes; other parameters start at 0.
PHOTO_PLACEMENT = {
    "fourier": "the spectrum",
    "pixel": "the pixels",
    "lowres": "its one level, averaged down to a quarter of the size",
    "laplacian": "the full-size level",
}


def make_param(
    name: str, seeds: list[int], size: int, decorrelate: bool, channels: int = 3, alpha: bool = False, spectrum=None
) -> ImageParam:
    """`spectrum`: for maco, the magnitude to hold fixed (fvcli.optvis.spectrum.Spectrum); None: the power law."""
    if name == "maco":
        return MacoParam(seeds, size, decorrelate, channels, alpha, spectrum)
    return PARAMETERIZATIONS[name](seeds, size, decorrelate=decorrelate, channels=channels, alpha=alpha)
