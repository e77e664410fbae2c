"""Objectives: what an image is optimized to maximize, as small composable objects.

An objective reads captured activations (a dict from module path to tensor, batch first) and returns
one value per image. Objectives are always maximized; only the engine negates. They combine with
`+ - *` and `/` by numbers, and describe themselves in the target syntax, e.g.
`mixed4a:97 - 0.5*mixed4b:3`, which is what the sidecar records.
"""

from __future__ import annotations

import math
from typing import Mapping

import torch
from torch import Tensor

from fvcli.models.layer_keys import Layout, at_position, channels_first

Activations = Mapping[str, Tensor]


def _number(x: float) -> str:
    return f"{x:g}"


class Objective:
    """Base class: subclasses set `layers` (module paths read) and implement `__call__` and `describe`."""

    layers: tuple[str, ...] = ()
    files: tuple[tuple[str, str], ...] = ()  # (path, sha256) of the files it was made from (photos, directions)
    dead_at_zero = True  # whether ending at exactly 0 means its units are dead (see runner)

    def __call__(self, acts: Activations) -> Tensor:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def __str__(self) -> str:
        return self.describe()

    def __repr__(self) -> str:
        return f"<objective {self.describe()}>"

    def terms(self) -> tuple[tuple[float, Objective], ...]:
        return ((1.0, self),)

    def __add__(self, other: Objective) -> Objective:
        if not isinstance(other, Objective):
            return NotImplemented
        return Weighted(self.terms() + other.terms())

    def __neg__(self) -> Objective:
        return self * -1.0

    def __sub__(self, other: Objective) -> Objective:
        if not isinstance(other, Objective):
            return NotImplemented
        return self + (-other)

    def __mul__(self, factor: float) -> Objective:
        if isinstance(factor, bool) or not isinstance(factor, (int, float)):
            return NotImplemented
        return Weighted(tuple((w * factor, o) for w, o in self.terms()))

    __rmul__ = __mul__

    def __truediv__(self, divisor: float) -> Objective:
        if isinstance(divisor, bool) or not isinstance(divisor, (int, float)):
            return NotImplemented
        return self * (1.0 / divisor)


class Channel(Objective):
    """The mean activation of one channel over space or patch tokens (the entry of a flat output).

    `all_tokens`: on token layers, average every token, class token included.
    """

    def __init__(self, layer: str, channel: int, label: str | None = None, layout: Layout | None = None, all_tokens: bool = False):
        self.layer, self.channel, self.label, self.layout = layer, channel, label or layer, layout
        self.all_tokens = all_tokens
        self.layers = (layer,)

    def positions(self, acts: Activations) -> Tensor:
        """The layer as (N, C, positions...) over the positions this objective averages."""
        return channels_first(acts[self.layer], self.layout, patch_tokens_only=not self.all_tokens)

    def __call__(self, acts: Activations) -> Tensor:
        a = self.positions(acts)
        return a[:, self.channel].reshape(a.shape[0], -1).float().mean(dim=1)

    def describe(self) -> str:
        return f"{self.label}:{self.channel}"


class Neuron(Channel):
    """One channel at one position: (y, x), or the centre of the spatial or patch-token grid."""

    def __init__(self, *args, position: tuple[int, int] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.position = position

    def positions(self, acts: Activations) -> Tensor:
        return at_position(super().positions(acts), self.position)

    def describe(self) -> str:
        where = "" if self.position is None else f", y={self.position[0]}, x={self.position[1]}"
        return f"neuron({self.label}:{self.channel}{where})"


class LayerEnergy(Objective):
    """DeepDream: the mean squared activation of a whole layer."""

    def __init__(self, layer: str, label: str | None = None):
        self.layer, self.label, self.layers = layer, label or layer, (layer,)

    def __call__(self, acts: Activations) -> Tensor:
        a = acts[self.layer]
        return a.float().pow(2).reshape(a.shape[0], -1).mean(dim=1)

    def describe(self) -> str:
        return f"layer({self.label})"


OUTPUT = ""  # the layer key of the model's own output (the root module)


class Logit(Objective):
    """One class logit of the model's output; `probability` takes its softmax instead.
    `element`: the element of a tuple or dict output that holds the logits (None: the output)."""

    def __init__(self, index: int, label: str | int, probability: bool = False, element: str | None = None):
        self.index, self.label, self.probability, self.element = index, label, probability, element
        self.key = OUTPUT if element is None else f"{OUTPUT}@{element}"
        self.layers = (self.key,)

    def __call__(self, acts: Activations) -> Tensor:
        logits = acts[self.key].float()
        if self.probability:
            return logits.softmax(dim=1)[:, self.index]
        return logits[:, self.index]

    def describe(self) -> str:
        kind = "probability" if self.probability else "logit"
        element = "" if self.element is None else f"@{self.element}"
        plain = isinstance(self.label, int) or str(self.label).replace("_", "").isalnum()
        return f"{kind}{element}:{self.label if plain else repr(str(self.label))}"


class Direction(Objective):
    """A direction in a layer's channel space: the dot product with `vector`, averaged over positions
    (patch tokens), or at one position for `direction_neuron`. With `cossim_pow` P > 0, each
    position's dot product is multiplied by max(0.1, cos(a, vector))^P before the mean (Lucid's
    `_dot_cossim`, the activation atlas's icon objective): the image is pushed towards the
    direction itself, not just further along it."""

    def __init__(
        self, layer: str, vector: Tensor, text: str, layout: Layout | None = None, neuron: bool = False,
        files: tuple[tuple[str, str], ...] = (), cossim_pow: float = 0.0,
    ):
        self.layer, self.vector, self.text, self.layout, self.neuron = layer, vector, text, layout, neuron
        self.layers, self.files, self.cossim_pow = (layer,), files, cossim_pow

    def __call__(self, acts: Activations) -> Tensor:
        a = channels_first(acts[self.layer], self.layout).float()
        if self.neuron:
            a = at_position(a, None)
        return _direction_values(a, self.vector.to(a.device).float().view(1, -1), self.cossim_pow)

    def describe(self) -> str:
        return self.text


# Caricatures (Lucid's lucid/recipes/caricature.py, `dot_compare`, the recipe behind OpenAI Microscope's
# caricatures, and notebooks/misc/feature_inversion_caricatures.ipynb) maximize
# dot(a, a_photo) * max(0.1, cossim) ** cossim_pow with cossim_pow = 0.0 by default: a plain dot
# product. Lucid's activation atlas icons use the same form for directions with cossim_pow = 2
# (lucid/recipes/activation_atlas/render.py). `caricature(..., cossim_pow=P)` sets the power.
CARICATURE_COSSIM_POW = 0.0
COSSIM_FLOOR = 0.1  # Lucid's: the cosine factor never drops below this, so a bad start still has a gradient


def _direction_values(a: Tensor, vectors: Tensor, cossim_pow: float) -> Tensor:
    """Per image (N,): the dot product of a (N, C, positions...) with its vector (a row of `vectors`,
    (N, C) or (1, C)) at each position, times max(0.1, cos)^cossim_pow there, averaged over positions."""
    vectors = vectors.expand(a.shape[0], -1)
    dots = torch.einsum("nc...,nc->n...", a, vectors)
    if cossim_pow:
        norms = a.norm(dim=1) * vectors.norm(dim=1).view(-1, *([1] * (a.dim() - 2)))
        dots = dots * (dots / (norms + 1e-6)).clamp_min(COSSIM_FLOOR) ** cossim_pow
    return dots.reshape(a.shape[0], -1).mean(dim=1)


class PhotoComparison(Objective):
    """Base of the objectives that compare a layer's activations with a photo's: `target` is the
    photo's activations at the layer (channels first, one image: (C, positions...)).

    While optimizing, the photo goes through the same transforms as its image at every step (as
    Lucid renders the photo in the image's batch): the engine puts the transformed photo's
    activations under `photo_key`, so that the two stay aligned position by position. Without them
    (the values before and after, measured untransformed) the photo's own `target` is used. The
    image may reach the layer on a larger or smaller grid than the photo (the transforms pad and
    crop the canvas by a few pixels); the two are compared on the centre positions both grids have,
    which keeps the photo's scale (resizing the grids would not)."""

    def __init__(
        self, layer: str, target: Tensor, text: str, layout: Layout | None, files: tuple[tuple[str, str], ...] = (),
        photo: Tensor | None = None,
    ):
        self.layer, self.target, self.text, self.layout = layer, target.float(), text, layout
        self.layers, self.files = (layer,), files
        self.photo = photo  # (C, size, size) in [0, 1]: the photo as the model's images are, untransformed
        self.photo_key = f"photo seen by {text}"

    def pairs(self, acts: Activations) -> tuple[Tensor, Tensor]:
        """The images' activations (N, D) and the photo's (1, D), over the positions both have."""
        a = channels_first(acts[self.layer], self.layout).float()
        seen = acts.get(self.photo_key)
        t = self.target.to(a.device)[None] if seen is None else channels_first(seen, self.layout).float()
        a, t = _common_centre(a, t)
        return a.flatten(1), t.flatten(1)

    def describe(self) -> str:
        return self.text


def _common_centre(a: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """Both (N, C, positions...) cut to the centre positions they share (tokens as square grids)."""
    if a.shape[2:] == t.shape[2:]:
        return a, t
    if a.dim() == 3:  # tokens: crop them as the square patch grids they are, where they are
        ga, gt = math.isqrt(a.shape[2]), math.isqrt(t.shape[2])
        if ga * ga == a.shape[2] and gt * gt == t.shape[2]:
            a, t = a.unflatten(2, (ga, ga)), t.unflatten(2, (gt, gt))
    for axis in range(2, a.dim()):
        n = min(a.shape[axis], t.shape[axis])
        a = a.narrow(axis, (a.shape[axis] - n) // 2, n)
        t = t.narrow(axis, (t.shape[axis] - n) // 2, n)
    return a, t


class Caricature(PhotoComparison):
    """A caricature of a photo: dot(a, a_photo) / |a_photo|^2 * max(0.1, cos(a, a_photo)) ** cossim_pow.

    The dot product is divided by the photo's own (a constant), so that 1 means "as much as the
    photo" and values read the same at every layer; the cosine is the true one (Lucid's
    `dot_compare` divides by |a_photo| only, which makes its floor depend on the layer's scale)."""

    def __init__(self, *args, cossim_pow: float = CARICATURE_COSSIM_POW, **kwargs):
        super().__init__(*args, **kwargs)
        self.cossim_pow = cossim_pow

    def __call__(self, acts: Activations) -> Tensor:
        a, t = self.pairs(acts)
        dot = (a * t).sum(dim=1)
        value = dot / t.pow(2).sum()
        if self.cossim_pow:
            cossim = dot / (a.norm(dim=1) * t.norm() + 1e-6)
            value = value * cossim.clamp_min(COSSIM_FLOOR) ** self.cossim_pow
        return value


class Inversion(PhotoComparison):
    """Feature inversion (Mahendran and Vedaldi, 2015): -|a - a_photo|^2 / |a_photo|^2, the squared
    distance to the photo's activations relative to their own size: 0 is a perfect match, and
    activations of all zeros score -1."""

    dead_at_zero = False  # 0 is the photo matched exactly, not a dead unit

    def __call__(self, acts: Activations) -> Tensor:
        a, t = self.pairs(acts)
        return -(a - t).pow(2).sum(dim=1) / t.pow(2).sum()


class Weighted(Objective):
    """A weighted sum of objectives; built by the arithmetic operators, not by hand."""

    def __init__(self, terms: tuple[tuple[float, Objective], ...]):
        self._terms = terms
        self.layers = tuple(dict.fromkeys(layer for _, o in terms for layer in o.layers))
        self.files = tuple(dict.fromkeys(f for _, o in terms for f in o.files))

    def terms(self) -> tuple[tuple[float, Objective], ...]:
        return self._terms

    def __call__(self, acts: Activations) -> Tensor:
        return sum(w * o(acts) for w, o in self._terms)

    def describe(self) -> str:
        text = ""
        for i, (w, o) in enumerate(self._terms):
            sign = "-" if w < 0 else ("+" if i else "")
            magnitude = abs(w)
            body = o.describe() if magnitude == 1 else f"{_number(magnitude)}*{o.describe()}"
            text += (f" {sign} " if i else sign) + body
        return text


def channel(layer: str, index: int, label: str | None = None, layout: Layout | None = None, all_tokens: bool = False) -> Channel:
    return Channel(layer, index, label, layout, all_tokens)


def neuron(
    layer: str, index: int, label: str | None = None, layout: Layout | None = None, all_tokens: bool = False,
    position: tuple[int, int] | None = None,
) -> Neuron:
    return Neuron(layer, index, label, layout, all_tokens, position=position)


def batch_plan(objectives: list[Objective], device: torch.device) -> Tensor | None:
    """How a batch whose images all read one layer alike is scored in one pass, computed once per
    batch, not per step: for channels (or neurons), each image's channel index (one gather); for
    directions, each image's vector as a (N, C) matrix (one product). None: one objective at a time."""
    first = objectives[0]
    if isinstance(first, Channel) and all(
        type(o) is type(first) and (o.layer, o.layout, o.all_tokens) == (first.layer, first.layout, first.all_tokens)
        for o in objectives
    ):
        return torch.tensor([o.channel for o in objectives], device=device)
    if isinstance(first, Direction) and all(
        type(o) is Direction
        and (o.layer, o.layout, o.neuron, o.vector.numel(), o.cossim_pow) == (first.layer, first.layout, first.neuron, first.vector.numel(), first.cossim_pow)
        for o in objectives
    ):
        return torch.stack([o.vector.float().flatten() for o in objectives]).to(device)
    return None


def batch_values(
    objectives: list[Objective], acts: Activations, plan: Tensor | None = None, extras: dict[int, dict[str, Tensor]] | None = None
) -> Tensor:
    """Score image i of the batch by objectives[i]: a tensor of shape (len(objectives),).

    `plan`: batch_plan(objectives) when it has been computed already. `extras`: more activations
    for image i alone (a photo seen through that image's transforms), by key.
    """
    if plan is None:
        plan = batch_plan(objectives, next(iter(acts.values())).device)
    first = objectives[0]
    if plan is not None and plan.dim() == 1:  # one gather: every image asks for a channel of one layer
        a = first.positions(acts)
        picked = a[torch.arange(len(objectives), device=a.device), plan]
        return picked.reshape(len(objectives), -1).float().mean(dim=1)
    if plan is not None:  # one product: every image asks for a direction in one layer
        a = channels_first(acts[first.layer], first.layout).float()
        if first.neuron:
            a = at_position(a, None)
        return _direction_values(a, plan.to(a.device), first.cossim_pow)
    rows = extras or {}
    return torch.cat([o({**{k: v[i : i + 1] for k, v in acts.items()}, **rows.get(i, {})}) for i, o in enumerate(objectives)])


def photo_terms(objective: Objective) -> list[PhotoComparison]:
    """The terms of an objective that compare with a photo (caricature, inversion)."""
    return [o for _, o in objective.terms() if isinstance(o, PhotoComparison) and o.photo is not None]


def layers_of(objectives: list[Objective]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(layer for o in objectives for layer in o.layers))
