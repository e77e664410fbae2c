"""Transformation robustness: random pad, jitter, scale and rotation, sampled for each image.

Each transform is configuration plus two pure functions: how it changes the canvas size, and, for
its random parameters, the affine map from its output pixel to its input pixel. A pipeline
multiplies those maps and resamples each image once (bilinear), so a chain of five transforms
costs one `grid_sample` and blurs once, not four times.

Randomness is counter-based (see `Draws`): every random number is a hash of the image's seed, the
step and the number's place in the step. A whole batch's parameters for many steps come from a few
tensor operations on the batch's device, with no Python loop over images, and a unit's transforms
never depend on its batch.

Coordinates are pixel centres measured from the canvas centre; out-of-canvas samples take the
pad fill (grey 0.5), as padding would.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

FILL = 0.5
CHUNK_STEPS = 64  # steps whose transform parameters are drawn together: one draw per 64 steps

_MASK32 = 0xFFFFFFFF
# An integer hash of 32-bit values (Thomas Mueller's); the multiplier is below 2**27, so products
# of 32-bit values stay inside int64 on every device.
_MULTIPLIER = 0x45D9F3B
_GOLDEN = 0x9E3779B9  # 2**32 / golden ratio: offsets that keep zero inputs from hashing to zero


def _mix(x: Tensor) -> Tensor:
    x = x ^ (x >> 16)
    x = (x * _MULTIPLIER) & _MASK32
    x = x ^ (x >> 16)
    x = (x * _MULTIPLIER) & _MASK32
    return x ^ (x >> 16)


class Draws:
    """Counter-based random integers for a batch: image i's number at (step, slot) is a hash of
    its seed, the step and the slot alone, so it is the same in any batch, on any device.

    Each seed is hashed once into a 32-bit key; a number is then one more hash of the key and of
    the (step, slot) counter's own hash, so a draw for a whole batch is a few elementwise ops."""

    def __init__(self, seeds: Sequence[int], device: torch.device | str = "cpu"):
        seeds_ = [int(s) % 2**64 for s in seeds]  # fv's seeds have 63 bits; any integer is taken
        low = torch.tensor([s & _MASK32 for s in seeds_], dtype=torch.int64, device=device)
        high = torch.tensor([s >> 32 for s in seeds_], dtype=torch.int64, device=device)
        self.keys = _mix(((_mix((low + _GOLDEN) & _MASK32)) ^ high))
        self.device = self.keys.device

    def __len__(self) -> int:
        return self.keys.numel()

    def integers(self, steps: Tensor, slot: int, high: int) -> Tensor:
        """(len(steps), N) integers uniform in [0, high), for slot `slot` of each step."""
        counter = (steps.to(self.device) * 4099 + slot + _GOLDEN) & _MASK32  # 4099: a prime above any slot count
        return _mix(_mix(counter)[:, None] ^ self.keys[None, :]) % high

    def normals(self, step: int, slot: int, count: int) -> Tensor:
        """(N, count) standard normal numbers for slot `slot` of a step: number k of image i is a
        hash of its seed, the step, the slot and k alone (Box-Muller on two uniforms)."""
        half = (count + 1) // 2
        counter = _mix(torch.tensor((step * 4099 + slot + _GOLDEN) & _MASK32, device=self.device))
        index = _mix((torch.arange(2 * half, device=self.device) + counter) & _MASK32)
        bits = _mix(index[None, :] ^ self.keys[:, None])
        uniform = ((bits >> 8).float() + 0.5) / 2**24  # 24 bits: exact in float32, never 0 or 1
        radius = torch.sqrt(-2 * torch.log(uniform[:, :half]))
        angle = 2 * math.pi * uniform[:, half:]
        return torch.cat([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1)[:, :count]


@dataclass(frozen=True)
class Affine:
    """Maps x' = a00 x + a01 y + tx, y' = a10 x + a11 y + ty, each entry a number or a tensor of
    shape (steps, N): composing them entry by entry costs a few elementwise operations, where
    batched 3x3 matrix products of tens of thousands of tiny matrices are slow on a CPU."""

    a00: Tensor | float = 1.0
    a01: Tensor | float = 0.0
    a10: Tensor | float = 0.0
    a11: Tensor | float = 1.0
    tx: Tensor | float = 0.0
    ty: Tensor | float = 0.0

    def then(self, inner: Affine) -> Affine:
        """self after inner's output: the map from inner's input... composed as self @ inner."""
        return Affine(
            self.a00 * inner.a00 + self.a01 * inner.a10,
            self.a00 * inner.a01 + self.a01 * inner.a11,
            self.a10 * inner.a00 + self.a11 * inner.a10,
            self.a10 * inner.a01 + self.a11 * inner.a11,
            self.a00 * inner.tx + self.a01 * inner.ty + self.tx,
            self.a10 * inner.tx + self.a11 * inner.ty + self.ty,
        )

    def matrices(self, shape: tuple[int, int], device) -> Tensor:
        """The maps as a (steps, N, 2, 3) float32 tensor."""
        entries = [torch.as_tensor(e, dtype=torch.float32, device=device).expand(shape) for e in
                   (self.a00, self.a01, self.tx, self.a10, self.a11, self.ty)]
        return torch.stack(entries, dim=-1).view(*shape, 2, 3)


@dataclass(frozen=True)
class Pad:
    """Grow the canvas by `pixels` on every side, filled with grey (the pipeline's FILL)."""

    pixels: int
    fill: float = FILL
    slots = 0

    def canvas(self, h: int, w: int) -> tuple[int, int]:
        return h + 2 * self.pixels, w + 2 * self.pixels

    def sample(self, draws: Draws, steps: Tensor, slot: int) -> Affine:
        return Affine()  # centred coordinates do not move


@dataclass(frozen=True)
class Jitter:
    """Crop `pixels` from the canvas at a random integer offset (a random shift)."""

    pixels: int
    slots = 2

    def canvas(self, h: int, w: int) -> tuple[int, int]:
        return h - self.pixels, w - self.pixels

    def sample(self, draws: Draws, steps: Tensor, slot: int) -> Affine:
        d = self.pixels
        tx = draws.integers(steps, slot, d + 1).float() - d / 2
        ty = draws.integers(steps, slot + 1, d + 1).float() - d / 2
        return Affine(tx=tx, ty=ty)


@dataclass(frozen=True)
class Scale:
    """Zoom about the centre by a factor drawn from `factors`; the canvas keeps its size."""

    factors: tuple[float, ...]
    slots = 1

    def canvas(self, h: int, w: int) -> tuple[int, int]:
        return h, w

    def sample(self, draws: Draws, steps: Tensor, slot: int) -> Affine:
        inverse = 1 / torch.tensor(self.factors, device=draws.device)
        s = inverse[draws.integers(steps, slot, len(self.factors))]
        return Affine(a00=s, a11=s)


@dataclass(frozen=True)
class Rotate:
    """Rotate about the centre by an angle in degrees drawn from `degrees`."""

    degrees: tuple[float, ...]
    slots = 1

    def canvas(self, h: int, w: int) -> tuple[int, int]:
        return h, w

    def sample(self, draws: Draws, steps: Tensor, slot: int) -> Affine:
        radians = torch.tensor([math.radians(d) for d in self.degrees], device=draws.device)
        index = draws.integers(steps, slot, len(self.degrees))
        c, s = radians.cos()[index], radians.sin()[index]
        return Affine(a00=c, a01=s, a10=-s, a11=c)  # output -> input: rotate back


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
# Stronger robustness: three times the pad and jitters, zoom 0.50..1.50 by 0.05, rotation -15..15
# by 3 degrees (0 six times as likely). An image must show its class at any of these scales and
# offsets, which is what other networks need to see it: on EfficientNet-Lite0 (50 classes, 128 px,
# 128 steps, one seed, benchmarks/transfer.py) Lite1 and Lite2 named the class of 78% and 66% of its
# class images, against 46% and 26% with STANDARD (and 64% and 50% with pad 16, jitter 16, zoom
# 0.6..1.4, jitter 8), and Lite0 itself 0.999.
ROBUST: tuple[Transform, ...] = (
    Pad(24),
    Jitter(24),
    Scale(tuple(round(0.5 + i * 0.05, 2) for i in range(21))),
    Rotate(tuple(float(d) for d in [*range(-15, 16, 3), 0, 0, 0, 0, 0])),
    Jitter(12),
)
PRESETS: dict[str, tuple[Transform, ...]] = {"standard": STANDARD, "robust": ROBUST, "none": ()}
SIZED = ("auto", "standard", "robust")  # the presets whose pixel amounts follow the network (see sizing())
# `auto` (the default): ROBUST for a network of ImageNet scale; STANDARD for a smaller one, whose
# pictures fill the frame: MTCNN's ONet, started from a photo without a face (--init), drew a face
# that PNet saw at 0.71 with STANDARD and at 0.36 with ROBUST, whose zoom to 0.6 cuts the face.
# The standard transforms' pixel amounts follow the network, not the picture: a network's features
# have a size in pixels that its architecture sets, and rendering it at 48 px does not shrink them.
# Lucid's amounts are for InceptionV1, a network of ImageNet scale fed 128 px images. A network
# that declares a smaller input (MTCNN's ONet 48 px, RNet 24 px) gets them in proportion to
# declared / 128, at least 1 px each: RNet drew a clearer face with pad 3 and jitters 2 and 1 (all
# three MTCNN networks said face: 1.00) than with the full pad 12 and jitter 8 (PNet 0.88). The
# amounts are in the network's input pixels: where images are resized for a fixed-size network,
# they are converted to the rendered image's pixels. A network that declares no size gets the
# amounts scaled with --size below 128 px (the rule before networks declared sizes).
STANDARD_SIZE = 128


@dataclass(frozen=True)
class Sizing:
    """How many rendered pixels one pixel of a preset's amounts is, why, and which preset `auto` means."""

    share: float
    rule: str
    imagenet_scale: bool = True  # the network's features are of ImageNet's scale (what `auto` picks by)

    def describe(self) -> dict:
        return {"share": round(self.share, 4), "rule": self.rule}

    def preset(self, name: str) -> str:
        """The preset `name` means for this network: `auto` resolved, others as they are."""
        return name if name != "auto" else "robust" if self.imagenet_scale else "standard"


FULL = Sizing(1.0, "the preset's amounts")


def sizing(declared: int | None, size: int, input_size: int | None = None) -> Sizing:
    """The standard transforms' scale for a network that declares `declared` px inputs (None: it
    declares none), rendered at `size` px and resized to `input_size` px for the network (None: not)."""
    if declared is None:
        if size >= STANDARD_SIZE:
            return FULL
        return Sizing(size / STANDARD_SIZE, f"the network declares no input size: the preset's amounts x {size}/{STANDARD_SIZE} (--size)", False)
    network = min(1.0, declared / STANDARD_SIZE)
    share = network * size / (input_size or size)
    rule = "the network declares" + f" {declared} px: the preset's amounts" + (f" x {declared}/{STANDARD_SIZE}" if network < 1 else "")
    if input_size and input_size != size:
        rule += f", x {size}/{input_size} for images resized to {input_size} px"
    return Sizing(share, rule, declared >= STANDARD_SIZE)


def sized(preset: tuple[Transform, ...], share: float = 1.0) -> tuple[Transform, ...]:
    """A preset with its pixel amounts (pad, jitter) times `share`, at least 1 px each."""
    if share == 1.0:
        return preset
    scaled = lambda pixels: max(1, math.floor(pixels * share + 0.5))  # noqa: E731
    return tuple(type(t)(scaled(t.pixels)) if isinstance(t, (Pad, Jitter)) else t for t in preset)


class Pipeline:
    """A list of transforms applied as one resampling per image."""

    def __init__(self, transforms: tuple[Transform, ...]):
        self.transforms = transforms
        self._grids: dict[tuple, Tensor] = {}
        self._chunk: tuple[int, Draws, Tensor] | None = None  # (first step, draws, maps of CHUNK_STEPS steps)

    @classmethod
    def preset(cls, name: str, scale: Sizing = FULL) -> Pipeline:
        """A preset by name, its pixel amounts scaled as `scale` says (see sizing())."""
        return cls(sized(PRESETS[scale.preset(name)], scale.share))

    @classmethod
    def from_setting(cls, setting, scale: Sizing = FULL) -> Pipeline:
        """A preset name, or ((name, value), ...) item by item (see settings.transforms): a preset
        is scaled as `scale` says, items are taken as given."""
        if isinstance(setting, str):
            return cls.preset(setting, scale)
        makers = {"pad": Pad, "jitter": Jitter, "scale": Scale, "rotate": Rotate}
        return cls(tuple(makers[name](value) for name, value in setting))

    def describe(self) -> list[dict]:
        return [{"name": type(t).__name__.lower(), **asdict(t)} for t in self.transforms]

    def canvas(self, h: int, w: int) -> tuple[int, int]:
        for t in self.transforms:
            h, w = t.canvas(h, w)
        return h, w

    def transform_maps(self, draws: Draws, steps: Tensor) -> list[Affine]:
        """Each transform's maps from output to input pixel, for every step and image. Transform k
        draws from the slots after those of the transforms before it."""
        maps, slot = [], 0
        for t in self.transforms:
            maps.append(t.sample(draws, steps, slot))
            slot += t.slots
        return maps

    def maps(self, draws: Draws, step: int) -> Tensor:
        """The (N, 2, 3) composed maps of `step`, drawn CHUNK_STEPS steps at a time."""
        first = step - step % CHUNK_STEPS
        if self._chunk is None or self._chunk[0] != first or self._chunk[1] is not draws:
            steps = torch.arange(first, first + CHUNK_STEPS, device=draws.device)
            total = Affine()
            for m in self.transform_maps(draws, steps):
                total = total.then(m)
            self._chunk = (first, draws, total.matrices((CHUNK_STEPS, len(draws)), draws.device))
        return self._chunk[2][step - first]

    def _base_grid(self, h: int, w: int, device: torch.device) -> Tensor:
        key = (h, w, device)
        if key not in self._grids:
            ys = torch.arange(h, dtype=torch.float32, device=device) - (h - 1) / 2
            xs = torch.arange(w, dtype=torch.float32, device=device) - (w - 1) / 2
            y, x = torch.meshgrid(ys, xs, indexing="ij")
            self._grids[key] = torch.stack([x, y, torch.ones_like(x)], dim=-1)  # (H, W, 3)
        return self._grids[key]

    def apply(self, images: Tensor, maps: Tensor) -> Tensor:
        """Resample each image once through its (N, 2, 3) output-to-input map."""
        _, _, h, w = images.shape
        out_h, out_w = self.canvas(h, w)
        source = torch.einsum("hwk,njk->nhwj", self._base_grid(out_h, out_w, images.device), maps.to(images.device))
        if images.is_cuda and torch.are_deterministic_algorithms_enabled():
            return bilinear_gather(images - FILL, source) + FILL  # grid_sample's CUDA backward is not deterministic
        # grid_sample with align_corners=False: a centred pixel coordinate x is 2x/W in [-1, 1].
        grid = source / torch.tensor([w / 2, h / 2], device=images.device)
        shifted = F.grid_sample(images - FILL, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return shifted + FILL

    def __call__(self, images: Tensor, draws: Draws, step: int) -> Tensor:
        """The transformed images of `step`; draws: the batch's Draws (one seed per image)."""
        if not self.transforms:
            return images
        return self.apply(images, self.maps(draws, step))


def bilinear_gather(images: Tensor, source: Tensor) -> Tensor:
    """What grid_sample computes (bilinear, zeros outside, align_corners=False) for `source`, the
    (N, H', W', 2) centred pixel coordinates (x, y) to read, built from gathers: their backward
    is a scatter-add, which CUDA runs deterministically under torch's deterministic algorithms,
    where grid_sample's backward has no deterministic version."""
    n, c, h, w = images.shape
    x = source[..., 0] + (w - 1) / 2
    y = source[..., 1] + (h - 1) / 2
    x0, y0 = x.floor(), y.floor()
    fx, fy = x - x0, y - y0
    flat = images.reshape(n, c, h * w)
    out = None
    for dy, dx, weight in ((0, 0, (1 - fx) * (1 - fy)), (0, 1, fx * (1 - fy)), (1, 0, (1 - fx) * fy), (1, 1, fx * fy)):
        xi, yi = x0 + dx, y0 + dy
        inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
        index = (yi.clamp(0, h - 1) * w + xi.clamp(0, w - 1)).long().view(n, 1, -1).expand(n, c, -1)
        corner = flat.gather(2, index).view(n, c, *x.shape[1:]) * (weight * inside).unsqueeze(1)
        out = corner if out is None else out + corner
    return out
